"""dopri5: closed forms, tolerance control, exact NFE reporting, gradients."""

import math

import pytest
import torch
from torch import nn

from flowforge.solvers.adaptive import sample_dopri5
from flowforge.solvers.counting import CountingField


def decay(x, t, cond=None):
    return -x  # x(1) = x(0) / e


def spiral(x, t, cond=None):
    # Rotation at angular speed 1 + 2t with decay rate t: angle(t) = t + t^2, radius e^{-t^2/2}.
    J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=x.dtype)
    return (1 + 2 * t)[:, None] * x @ J.T - t[:, None] * x


def spiral_solution(x_0, t):
    angle, radius = t + t**2, math.exp(-(t**2) / 2)
    c, s = math.cos(angle), math.sin(angle)
    R = torch.tensor([[c, -s], [s, c]], dtype=x_0.dtype)
    return radius * x_0 @ R.T


@pytest.mark.parametrize("tol", [1e-5, 1e-9])
def test_decay_closed_form(tol):
    x_0 = torch.randn(8, 3)
    x = sample_dopri5(decay, x_0, atol=tol, rtol=tol)
    # The global error tracks the tolerance (measured 9.2e-6 at 1e-5 and 5.1e-10 at 1e-9).
    assert (x - x_0 / math.e).abs().max().item() < 10 * tol


def test_time_dependent_spiral_and_trajectory():
    x_0 = torch.randn(5, 2)
    times = torch.linspace(0, 1, 5)
    x, traj = sample_dopri5(spiral, x_0, times, atol=1e-9, rtol=1e-9, return_trajectory=True)
    assert traj.shape == (5, 5, 2)
    for k, t in enumerate(times.tolist()):
        torch.testing.assert_close(traj[k], spiral_solution(x_0, t), atol=1e-7, rtol=0)
    torch.testing.assert_close(x, traj[-1])


def test_backward_grid_recovers_start():
    x_0 = torch.randn(5, 2)
    x_1 = spiral_solution(x_0, 1.0)
    x_back = sample_dopri5(spiral, x_1, torch.tensor([1.0, 0.0]), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(x_back, x_0, atol=1e-7, rtol=0)


def test_reported_nfe_equals_field_calls():
    nfes = []
    for tol in [1e-3, 1e-6, 1e-9]:
        field = CountingField(spiral)
        x, nfe = sample_dopri5(field, torch.randn(4, 2), atol=tol, rtol=tol, return_nfe=True)
        assert nfe == field.nfe > 0
        nfes.append(nfe)
    # Tighter tolerances need more steps: dopri5's step size scales like tol^(1/5).
    assert nfes[0] < nfes[1] < nfes[2], nfes


def test_tuple_order_with_both_flags():
    x, traj, nfe = sample_dopri5(
        decay,
        torch.ones(2, 1),
        torch.tensor([0.0, 0.5, 1.0]),
        return_trajectory=True,
        return_nfe=True,
    )
    assert isinstance(nfe, int) and traj.shape == (3, 2, 1)
    torch.testing.assert_close(traj[1], torch.full((2, 1), math.exp(-0.5)), atol=1e-5, rtol=0)


def test_gradient_matches_closed_form():
    a = nn.Parameter(torch.tensor(-0.7))
    x_0 = torch.randn(6, 2)
    x = sample_dopri5(lambda x, t, cond=None: a * x, x_0, atol=1e-10, rtol=1e-10)
    x.sum().backward()
    # x(1) = x_0 e^a, so d/da sum x(1) = sum x_0 e^a.
    assert math.isclose(a.grad.item(), x_0.sum().item() * math.exp(-0.7), rel_tol=1e-6)


def test_cond_reaches_field_and_half_state_integrates_in_float32():
    cond = torch.randn(3, 2)
    seen = set()

    def field(x, t, c):
        seen.add(x.dtype)
        return c.to(x.dtype)  # constant velocity: x(1) = x(0) + cond

    x = sample_dopri5(field, torch.zeros(3, 2, dtype=torch.float16), cond=cond)
    assert x.dtype == torch.float32 and seen == {torch.float32}
    torch.testing.assert_close(x, cond.float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(atol=0.0), "atol=0.0"),
        (dict(time_grid=torch.tensor([0.0, 0.0])), "monotone"),
        (dict(cond=torch.zeros(2, 1)), "cond has shape"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_dopri5(decay, torch.zeros(3, 1), **kwargs)
