"""Stochastic-interpolant objectives: minimisers, values at exact fields, antithetic variance."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flowforge.losses.interpolant import InterpolantLoss
from flowforge.paths.interpolant import BrownianGamma, BSquaredGamma, StochasticInterpolant

TARGETS = ["velocity", "drift", "score", "denoiser"]
INTERPOLANTS = {
    "one_sided_linear": StochasticInterpolant("linear", one_sided=True),
    "one_sided_trig": StochasticInterpolant("trig", one_sided=True),
    "trig_brownian": StochasticInterpolant("trig", BrownianGamma()),
    "linear_bsquared": StochasticInterpolant("linear", BSquaredGamma()),
}


class FreeField(nn.Module):
    """A free tensor per example and per call (ignores x, t); records the inputs it was given."""

    def __init__(self, *values: torch.Tensor) -> None:
        super().__init__()
        self.values = nn.ParameterList([nn.Parameter(v.clone()) for v in values])
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x, t, cond=None):
        self.inputs.append((x.detach(), t.detach()))
        return self.values[len(self.inputs) - 1]


def card_target(si, target, x_0, x_1, x_t, t):
    """The card's regression target, recomputed from (x_0, x_1, x_t, t) alone."""
    a, b = si.alpha(t)[:, None], si.beta(t)[:, None]
    I_dot = si.d_alpha(t)[:, None] * x_0 + si.d_beta(t)[:, None] * x_1
    if si.one_sided:
        noise, scale, z_dot = x_0, a, 0.0
    else:
        g = si.gamma.value(t)[:, None]
        noise = (x_t - a * x_0 - b * x_1) / g  # the z that produced x_t
        scale, z_dot = g, si.gamma.derivative(t)[:, None] * noise
    return {
        "velocity": I_dot,  # L_v = 1/2 |v|^2 - I_dot . v
        "drift": I_dot + z_dot,  # L_b = 1/2 |b|^2 - (I_dot + gamma' z) . b
        "denoiser": -noise,  # L_eta = 1/2 |eta|^2 + z . eta
        "score": -noise / scale,  # L_s = 1/2 |s|^2 + z . s / gamma (one-sided: x_0 / alpha)
    }[target]


def grad_at(loss, values, x_0, x_1):
    model = FreeField(*values)
    out = loss(model, x_1, x_0=x_0, generator=torch.Generator().manual_seed(0))
    grads = torch.autograd.grad(out.sum(), list(model.values))
    return out.detach(), grads, model.inputs


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", INTERPOLANTS)
def test_minimiser_is_card_target(name, target):
    # For a free per-example f the loss is 1/2 |f|^2 - y . f: gradient f - y, zero exactly at the
    # card's target y, with value -1/2 |y|^2 (summed over dimensions).
    si = INTERPOLANTS[name]
    loss = InterpolantLoss(si, target, t_min=0.1, t_max=0.9)
    B, D = 64, 3
    x_0, x_1, f = torch.randn(B, D), torch.randn(B, D), torch.randn(B, D)
    _, (grad,), inputs = grad_at(loss, [f], x_0, x_1)
    x_t, t = inputs[0]
    y = card_target(si, target, x_0, x_1, x_t, t)
    torch.testing.assert_close(grad, f - y)
    value, (grad,), _ = grad_at(loss, [y], x_0, x_1)
    torch.testing.assert_close(grad, torch.zeros_like(y), rtol=0, atol=1e-12)
    torch.testing.assert_close(value, -0.5 * y.square().sum(1))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", INTERPOLANTS)
def test_antithetic_pair_flips_the_noise(name, target):
    # The second call sees x_t^- = I - noise_scale * noise with its own target; the loss is the
    # mean of the two, so each free tensor gets gradient (f - y) / 2.
    si = INTERPOLANTS[name]
    loss = InterpolantLoss(si, target, antithetic=True, t_min=0.1, t_max=0.9)
    B, D = 32, 2
    x_0, x_1 = torch.randn(B, D), torch.randn(B, D)
    f_plus, f_minus = torch.randn(B, D), torch.randn(B, D)
    _, grads, inputs = grad_at(loss, [f_plus, f_minus], x_0, x_1)
    (x_plus, t), (x_minus, t_minus) = inputs
    assert torch.equal(t, t_minus)
    a, b = si.alpha(t)[:, None], si.beta(t)[:, None]
    center = b * x_1 if si.one_sided else a * x_0 + b * x_1
    torch.testing.assert_close(0.5 * (x_plus + x_minus), center)
    assert (x_plus - x_minus).abs().min() > 0
    # One-sided, the partner's base sample is -x_0.
    x_0_minus = -x_0 if si.one_sided else x_0
    y_plus = card_target(si, target, x_0, x_1, x_plus, t)
    y_minus = card_target(si, target, x_0_minus, x_1, x_minus, t)
    torch.testing.assert_close(grads[0], 0.5 * (f_plus - y_plus))
    torch.testing.assert_close(grads[1], 0.5 * (f_minus - y_minus))


# One-sided linear interpolant, data x_1 ~ N(m, diag(S^2)): x_t ~ N(t m, C), C = (1-t)^2 + t^2 S^2,
#   s* = -(x - t m) / C,   v* = m + (t S^2 - (1 - t)) (x - t m) / C,
# and at the minimiser E[L] = -1/2 E|f*|^2: -1/2 sum 1/C for the score,
# -1/2 (|m|^2 + sum (t S^2 - (1 - t))^2 / C) for the velocity.
M, S = (
    torch.tensor([1.0, -2.0], dtype=torch.float64),
    torch.tensor([0.5, 1.5], dtype=torch.float64),
)


def exact_gaussian(target, t0):
    C = (1 - t0) ** 2 + t0**2 * S**2
    k = t0 * S**2 - (1 - t0)

    def field(x, t, cond=None):
        r = (x - t[:, None] * M) / C
        return -r if target == "score" else M + k * r

    expected = (
        -0.5 * (1 / C).sum() if target == "score" else -0.5 * (M.square().sum() + (k**2 / C).sum())
    )
    return field, expected.item()


@pytest.mark.parametrize("antithetic", [False, True])
@pytest.mark.parametrize("target", ["score", "velocity"])
def test_value_at_exact_field(target, antithetic):
    # The loss is the card's functional itself (not a mean over dims): its Monte-Carlo mean at
    # the exact field equals -1/2 E|f*|^2 within 4 standard errors.
    t0, n = 0.8, 50_000
    field, expected = exact_gaussian(target, t0)
    constant_t = lambda n, generator=None, device=None, dtype=None: torch.zeros(n, dtype=dtype)  # noqa: E731
    loss = InterpolantLoss(StochasticInterpolant("linear", one_sided=True), target, antithetic,
                           t_min=t0, time_sampler=constant_t)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    x_1 = M + S * torch.randn(n, 2, generator=g)
    values = loss(field, x_1, generator=g)
    se = values.std() / math.sqrt(n)
    assert abs(values.mean().item() - expected) < 4 * se.item(), (values.mean().item(), expected)


def test_antithetic_reduces_score_gradient_variance():
    # Card 02 check 3: at t in [0.98, 1) the 1/alpha term dominates L_s; the variance over 100
    # batches of the gradient norm must drop >= 5x with antithetic pairs (measured: ~1e9x, as
    # E[1/alpha^2] diverges at t -> 1 while the pair cancels the 1/alpha term).
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(3, 32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 2)
    )

    def field(x, t, cond=None):
        return net(torch.cat([x, t[:, None]], 1))

    si = StochasticInterpolant("linear", one_sided=True)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    variances = {}
    for antithetic in (False, True):
        loss = InterpolantLoss(si, "score", antithetic=antithetic, t_min=0.98, t_max=1.0)
        g = torch.Generator().manual_seed(1)
        norms = []
        for _ in range(100):
            x_1 = centers[torch.randint(2, (64,), generator=g)] + 0.3 * torch.randn(
                64, 2, generator=g
            )
            grads = torch.autograd.grad(
                loss(field, x_1, generator=g).mean(), list(net.parameters())
            )
            norms.append(torch.sqrt(sum(gr.square().sum() for gr in grads)))
        variances[antithetic] = torch.stack(norms).var().item()
    assert variances[False] >= 5 * variances[True], variances


def test_time_sampler_and_range():
    si = StochasticInterpolant("linear", BrownianGamma())
    half = lambda n, generator=None, device=None, dtype=None: torch.full((n,), 0.5, dtype=dtype)  # noqa: E731
    model = FreeField(torch.zeros(4, 2))
    InterpolantLoss(si, "drift", t_min=0.2, t_max=0.6, time_sampler=half)(model, torch.randn(4, 2))
    torch.testing.assert_close(model.inputs[0][1], torch.full((4,), 0.4))


def test_bad_arguments():
    si = StochasticInterpolant("linear", one_sided=True)
    with pytest.raises(ValueError, match="target"):
        InterpolantLoss(si, "flow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="t_min"):
        InterpolantLoss(si, "score", t_min=0.5, t_max=0.5)
    loss, zero = InterpolantLoss(si, "velocity"), lambda x, t, cond=None: x
    with pytest.raises(ValueError, match="cond"):
        loss(zero, torch.zeros(4, 2), cond=torch.zeros(3))
    with pytest.raises(ValueError, match="x_0"):
        loss(zero, torch.zeros(4, 2), x_0=torch.zeros(4, 3))
