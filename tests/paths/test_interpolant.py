"""Stochastic interpolants: boundary values, autograd derivatives, closed-form Gaussian targets."""

from __future__ import annotations

import math

import pytest
import torch

from flowforge.paths.affine import CondOTPath, CosinePath
from flowforge.paths.interpolant import (
    BrownianGamma,
    BSquaredGamma,
    SineSquaredGamma,
    StochasticInterpolant,
    ZeroGamma,
)

GAMMAS = [ZeroGamma(), BrownianGamma(), BrownianGamma(2.0), BSquaredGamma(), SineSquaredGamma()]
TRIG_GAMMAS = GAMMAS[:-1]  # sin^2(pi t) reaches 1, where sqrt(1 - gamma^2) has a kink
INTERPOLANTS = (
    [StochasticInterpolant("linear", gamma) for gamma in GAMMAS]
    + [StochasticInterpolant("trig", gamma) for gamma in TRIG_GAMMAS]
    + [StochasticInterpolant(kind, one_sided=True) for kind in ("linear", "trig")]
)
IDS = [f"{si.interpolant}-{type(si.gamma).__name__}-{si.one_sided}" for si in INTERPOLANTS]


@pytest.mark.parametrize("si", INTERPOLANTS, ids=IDS)
def test_endpoints(si):
    x_0, x_1 = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    s = si.sample(x_0, x_1, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(s.x_t[0], x_0[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(s.x_t[1], x_1[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("si", INTERPOLANTS, ids=IDS)
def test_targets_are_time_derivatives(si):
    # dx_t = d/dt x_t at fixed (x_0, x_1, z); d_interp = the same with z = 0.
    B, D = 16, 3
    x_0, x_1, z = torch.randn(B, D), torch.randn(B, D), torch.randn(B, D)
    t = torch.linspace(0.02, 0.98, B, requires_grad=True)
    s = si.sample(x_0, x_1, t, z=z)
    s_0 = si.sample(x_0, x_1, t, z=torch.zeros_like(z))
    for d in range(D):
        (dx,) = torch.autograd.grad(s.x_t[:, d].sum(), t, retain_graph=True)
        (di,) = torch.autograd.grad(s_0.x_t[:, d].sum(), t, retain_graph=True)
        torch.testing.assert_close(s.dx_t[:, d], dx)
        torch.testing.assert_close(s.d_interp[:, d], di)


@pytest.mark.parametrize(
    "gamma", GAMMAS, ids=lambda g: type(g).__name__ + str(getattr(g, "a", ""))
)
def test_gamma_schedule_derivative_and_product(gamma):
    t = torch.linspace(0.01, 0.99, 50, requires_grad=True)
    (dg,) = torch.autograd.grad((gamma.value(t) + 0 * t).sum(), t)  # + 0 t: ZeroGamma
    t = t.detach()
    torch.testing.assert_close(gamma.derivative(t), dg)
    torch.testing.assert_close(gamma.gamma_d_gamma(t), gamma.value(t) * gamma.derivative(t))
    ends = torch.tensor([0.0, 1.0])
    assert gamma.value(ends).abs().max() < 1e-15
    assert torch.isfinite(gamma.gamma_d_gamma(ends)).all()


def test_brownian_product_at_endpoints():
    # The analytic product is finite where gamma' is infinite (card: gamma gamma' = (1 - 2t) / 2).
    g = BrownianGamma()
    t = torch.tensor([0.0, 1.0])
    assert torch.isinf(g.derivative(t)).all()
    torch.testing.assert_close(g.gamma_d_gamma(t), torch.tensor([0.5, -0.5]))


@pytest.mark.parametrize(
    "gamma", TRIG_GAMMAS, ids=lambda g: type(g).__name__ + str(getattr(g, "a", ""))
)
def test_trig_is_variance_preserving(gamma):
    si = StochasticInterpolant("trig", gamma)
    t = torch.linspace(0, 1, 101)
    torch.testing.assert_close(si.alpha(t) ** 2 + si.beta(t) ** 2 + gamma.value(t) ** 2, 1 + 0 * t)


@pytest.mark.parametrize(
    "si, path",
    [
        (StochasticInterpolant("linear", one_sided=True), CondOTPath()),
        (StochasticInterpolant("trig", one_sided=True), CosinePath()),
    ],
)
def test_one_sided_equals_affine_path(si, path):
    x_0, x_1, t = torch.randn(8, 2), torch.randn(8, 2), torch.rand(8)
    a, b = si.sample(x_0, x_1, t), path.sample(x_0, x_1, t)
    torch.testing.assert_close(a.x_t, b.x_t)
    torch.testing.assert_close(a.dx_t, b.dx_t)
    torch.testing.assert_close(a.d_interp, b.dx_t)
    assert torch.equal(a.noise, x_0) and torch.equal(a.noise_scale, si.alpha(t))


# Gaussian endpoints rho_0 = N(m_0, S_0^2), rho_1 = N(m_1, S_1^2) (diagonal): x_t ~ N(mu, C) with
# C = alpha^2 S_0^2 + beta^2 S_1^2 + gamma^2, and every target is linear in x - mu:
#   v = mu' + (alpha alpha' S_0^2 + beta beta' S_1^2) (x - mu) / C,
#   b = mu' + (C' / 2) (x - mu) / C,
#   E[z | x] = gamma (x - mu) / C,  s = -(x - mu) / C.
M0, S0 = torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.7])
M1, S1 = torch.tensor([-1.0, 2.0]), torch.tensor([0.6, 1.2])


def gaussian_targets(si, x, t):
    a, b, g = si.alpha(t)[:, None], si.beta(t)[:, None], si.gamma.value(t)[:, None]
    da, db, gdg = si.d_alpha(t)[:, None], si.d_beta(t)[:, None], si.gamma.gamma_d_gamma(t)[:, None]
    S0_, S1_ = S0.to(x) ** 2, S1.to(x) ** 2
    mu, dmu = a * M0.to(x) + b * M1.to(x), da * M0.to(x) + db * M1.to(x)
    C = a**2 * S0_ + b**2 * S1_ + g**2
    r = (x - mu) / C
    v = dmu + (a * da * S0_ + b * db * S1_) * r
    b_ = dmu + (a * da * S0_ + b * db * S1_ + gdg) * r
    return v, b_, -r, -g * r  # velocity, drift, score, denoiser (two-sided)


@pytest.mark.parametrize("kind", ["linear", "trig"])
def test_gaussian_drift_matches_regression_of_dx_t(kind):
    # E[dx_t | x_t] is linear for Gaussian endpoints; least squares of dx_t on (1, x_t) over many
    # draws recovers it. Tolerance 0.02 is ~5 standard errors at n = 200k.
    si, t0, n = StochasticInterpolant(kind, BrownianGamma()), 0.3, 200_000
    g = torch.Generator().manual_seed(0)
    x_0 = M0 + S0 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x_1 = M1 + S1 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    t = torch.full((n,), t0, dtype=torch.float64)
    s = si.sample(x_0, x_1, t, generator=g)
    design = torch.cat([torch.ones(n, 1, dtype=torch.float64), s.x_t], 1)
    for target, exact in ((s.dx_t, 1), (s.d_interp, 0), (-s.z, 3)):
        coef = torch.linalg.lstsq(design, target).solution  # (3, 2)
        fitted = design[:8] @ coef
        torch.testing.assert_close(fitted, gaussian_targets(si, s.x_t[:8], t[:8])[exact],
                                   rtol=0, atol=0.02)  # fmt: skip


@pytest.mark.parametrize("kind", ["linear", "trig"])
@pytest.mark.parametrize("gamma", [BrownianGamma(), BSquaredGamma()], ids=["brownian", "bsquared"])
def test_conversions_on_gaussian(kind, gamma):
    si = StochasticInterpolant(kind, gamma)
    x, t = torch.randn(32, 2), torch.linspace(0.01, 0.99, 32)
    v, b, s, eta = gaussian_targets(si, x, t)
    torch.testing.assert_close(si.drift_from_velocity_score(v, s, t), b)
    torch.testing.assert_close(si.velocity_from_drift_score(b, s, t), v)
    torch.testing.assert_close(si.score_from_denoiser(eta, t), s)
    torch.testing.assert_close(si.denoiser_from_score(s, t), eta)


def test_one_sided_conversions_use_alpha():
    # One-sided linear, x_1 ~ N(m_1, S_1^2): E[x_0 | x] = alpha (x - mu) / C, eta = -E[x_0 | x],
    # s = eta / alpha = -(x - mu) / C, and b = v.
    si = StochasticInterpolant("linear", one_sided=True)
    x, t = torch.randn(16, 2), torch.linspace(0.0, 0.95, 16)
    a, b = si.alpha(t)[:, None], si.beta(t)[:, None]
    C = a**2 + b**2 * S1**2
    r = (x - b * M1) / C
    torch.testing.assert_close(si.score_from_denoiser(-a * r, t), -r)
    v = torch.randn(16, 2)
    torch.testing.assert_close(si.drift_from_velocity_score(v, -r, t), v)


def test_sample_uses_generator_and_z():
    si = StochasticInterpolant("linear", BrownianGamma())
    x_0, x_1, t = torch.randn(4, 2), torch.randn(4, 2), torch.rand(4)
    a = si.sample(x_0, x_1, t, generator=torch.Generator().manual_seed(5))
    b = si.sample(x_0, x_1, t, generator=torch.Generator().manual_seed(5))
    c = si.sample(x_0, x_1, t, z=a.z)
    assert torch.equal(a.x_t, b.x_t) and torch.equal(a.x_t, c.x_t)
    expected = (1 - t)[:, None] * x_0 + t[:, None] * x_1 + torch.sqrt(t * (1 - t))[:, None] * a.z
    torch.testing.assert_close(a.x_t, expected)


def test_bad_arguments():
    with pytest.raises(ValueError, match="one_sided"):
        StochasticInterpolant("linear", BrownianGamma(), one_sided=True)
    with pytest.raises(ValueError, match="gamma"):
        StochasticInterpolant("trig", BrownianGamma(a=5.0))
    with pytest.raises(ValueError, match="gamma"):
        StochasticInterpolant("trig", SineSquaredGamma())
    with pytest.raises(ValueError, match="interpolant"):
        StochasticInterpolant("cosine")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="GammaSchedule"):
        StochasticInterpolant("linear", math.sqrt)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a="):
        BrownianGamma(0.0)
    si = StochasticInterpolant("linear", BrownianGamma())
    with pytest.raises(ValueError, match="t has values"):
        si.sample(torch.zeros(2, 2), torch.zeros(2, 2), torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match="z has shape"):
        si.sample(torch.zeros(2, 2), torch.zeros(2, 2), torch.rand(2), z=torch.zeros(2, 3))
