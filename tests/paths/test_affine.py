"""Affine paths: endpoints, derivatives against autograd, conversion round trips."""

import pytest
import torch
from torch.autograd.functional import jvp

from flowforge.paths.affine import (
    PARAMETERIZATIONS,
    CondOTPath,
    CosinePath,
    PolynomialPath,
    VPPath,
)

PATHS = [CondOTPath(), CosinePath(), PolynomialPath(2.0), PolynomialPath(0.7), VPPath()]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
def test_endpoints(path):
    t0, t1 = torch.zeros(1), torch.ones(1)
    assert path.alpha(t1).item() == pytest.approx(1.0, abs=1e-12)
    assert path.sigma(t1).item() == pytest.approx(0.0, abs=1e-12)
    # The VP path never reaches pure noise: alpha_0 = exp(-T(1)/2) (Song et al.).
    alpha_0 = torch.exp(torch.tensor(-0.5 * (0.1 + 0.5 * 19.9))).item()
    expected = alpha_0 if isinstance(path, VPPath) else 0.0
    assert path.alpha(t0).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
def test_derivatives_match_autograd(path):
    t = torch.linspace(0.02, 0.98, 25)
    for f, df in [(path.alpha, path.d_alpha), (path.sigma, path.d_sigma)]:
        _, grad = jvp(f, t, torch.ones_like(t))
        torch.testing.assert_close(df(t), grad, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
def test_sample_velocity_is_time_derivative(path):
    x_0, x_1 = torch.randn(6, 3, 2), torch.randn(6, 3, 2)
    t = torch.rand(6) * 0.9 + 0.05
    s = path.sample(x_0, x_1, t)
    _, dx = jvp(lambda tt: path.sample(x_0, x_1, tt).x_t, t, torch.ones_like(t))
    torch.testing.assert_close(s.dx_t, dx)
    # Endpoints of the conditional path (only exact where alpha_0 = 0).
    if not isinstance(path, VPPath):
        torch.testing.assert_close(path.sample(x_0, x_1, torch.zeros(6)).x_t, x_0)
    torch.testing.assert_close(path.sample(x_0, x_1, torch.ones(6)).x_t, x_1)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("source", PARAMETERIZATIONS)
@pytest.mark.parametrize("target", PARAMETERIZATIONS)
def test_conversion_round_trip(path, source, target):
    x_t, pred = torch.randn(5, 4), torch.randn(5, 4)
    t = torch.rand(5) * 0.9 + 0.05
    there = path.convert(pred, x_t, t, source, target)
    back = path.convert(there, x_t, t, target, source)
    torch.testing.assert_close(back, pred)


def test_conversions_agree_with_posterior_means():
    """For a point-mass data distribution every parameterisation has a closed form."""
    path = CosinePath()
    x_1 = torch.tensor([[1.5, -2.0]]).expand(7, 2)  # data = delta at x_1
    x_0 = torch.randn(7, 2)
    t = torch.rand(7) * 0.9 + 0.05
    s = path.sample(x_0, x_1, t)
    # With a point-mass target, E[x_1 | x_t] = x_1 and E[x_0 | x_t] = x_0 exactly.
    sig = path.sigma(t)[:, None]
    want = {"x1": x_1, "epsilon": x_0, "velocity": s.dx_t, "score": -x_0 / sig}
    for src in PARAMETERIZATIONS:
        for dst in PARAMETERIZATIONS:
            got = path.convert(want[src], s.x_t, t, src, dst)
            torch.testing.assert_close(got, want[dst], msg=f"{src} -> {dst}")


def test_bad_input_errors():
    path = CondOTPath()
    with pytest.raises(ValueError, match="x_0 has shape"):
        path.sample(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2))
    with pytest.raises(ValueError, match=r"t has values in .*\[0, 1\]"):
        path.sample(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError, match=r"expected \(2,\)"):
        path.sample(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="Did you mean 'velocity'"):
        path.convert(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), "velocty", "x1")
    with pytest.raises(ValueError, match="positive exponent"):
        PolynomialPath(0.0)


def test_straight_path_fast_sample_equals_generic_formula():
    from flowforge.paths.affine import AffinePath

    path = CondOTPath()
    x_0, x_1, t = torch.randn(5, 3, 2), torch.randn(5, 3, 2), torch.rand(5)
    fast, generic = path.sample(x_0, x_1, t), AffinePath.sample(path, x_0, x_1, t)
    torch.testing.assert_close(fast.x_t, generic.x_t)
    torch.testing.assert_close(fast.dx_t, generic.dx_t)


def test_validation_can_be_skipped():
    path = CondOTPath()
    # Out-of-range t is accepted (and extrapolates) only when the caller opts out of checks.
    s = path.sample(torch.zeros(1, 1), torch.ones(1, 1), torch.tensor([2.0]), validate=False)
    assert s.x_t.item() == 2.0
