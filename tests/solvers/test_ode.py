"""Fixed-step RK solvers: closed forms, convergence order, reversibility, gradients, dtypes."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from flowforge.solvers.ode import (
    NFE_PER_STEP,
    TABLEAUS,
    sample_euler,
    sample_heun,
    sample_midpoint,
    sample_ode,
    sample_rk4,
)

ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
# Step counts in the asymptotic regime (rk4 on riccati at 4 steps is not: slope 3.3) and above
# the float64 floor (rk4's error at 64 steps is ~1e-11).
STEPS = {"euler": [16, 32, 64, 128], "midpoint": [8, 16, 32, 64], "heun": [8, 16, 32, 64]}
STEPS["rk4"] = [8, 16, 32, 64]


def decay(x, t, cond=None):
    return -x  # x(1) = x(0) / e


def growth_in_time(x, t, cond=None):
    return t[:, None] * x  # dx/dt = t x, x(1) = x(0) e^(1/2): stage times matter


def riccati(x, t, cond=None):
    return -x.square()  # nonlinear, x(1) = x(0) / (1 + x(0)): Heun and midpoint differ


FIELDS = {
    "decay": (decay, lambda x_0: x_0 / math.e),
    "growth_in_time": (growth_in_time, lambda x_0: x_0 * math.exp(0.5)),
    "riccati": (riccati, lambda x_0: x_0 / (1 + x_0)),
}


def grid(n):
    return torch.linspace(0, 1, n + 1, dtype=torch.float64)


@pytest.mark.parametrize("backward", [False, True], ids=["0->1", "1->0"])
@pytest.mark.parametrize("field_name", sorted(FIELDS))
@pytest.mark.parametrize("method", sorted(ORDERS))
def test_convergence_order(method, field_name, backward):
    field, exact = FIELDS[field_name]
    x_0 = torch.linspace(0.5, 2.0, 4, dtype=torch.float64)[:, None]
    start, end = (exact(x_0), x_0) if backward else (x_0, exact(x_0))
    steps = STEPS[method]
    errors = []
    for n in steps:
        time_grid = grid(n).flip(0) if backward else grid(n)
        errors.append((sample_ode(field, start, time_grid, method) - end).abs().max().item())
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - ORDERS[method]) < 0.3, (slope, errors)


@pytest.mark.parametrize("name, tableau", sorted(TABLEAUS.items()))
def test_tableau_order_conditions(name, tableau):
    s = tableau.stages
    a = np.zeros((s, s))
    for i, row in enumerate(tableau.a):
        a[i, : len(row)] = row
    b, c = np.array(tableau.b), np.array(tableau.c)
    np.testing.assert_allclose(a.sum(1), c, atol=1e-15)  # row-sum condition
    conditions = [(b.sum(), 1.0)]
    if tableau.order >= 2:
        conditions += [(b @ c, 1 / 2)]
    if tableau.order >= 4:  # Butcher's conditions for orders 3 and 4
        conditions += [(b @ c**2, 1 / 3), (b @ a @ c, 1 / 6), (b @ c**3, 1 / 4)]
        conditions += [(b @ (c * (a @ c)), 1 / 8), (b @ a @ c**2, 1 / 12), (b @ a @ a @ c, 1 / 24)]
    for got, want in conditions:
        assert math.isclose(got, want, abs_tol=1e-15)
    assert NFE_PER_STEP[name] == s and tableau.order == ORDERS[name]


def test_named_samplers_match_generic():
    x_0 = torch.randn(3, 2)
    for method, sampler in [
        ("euler", sample_euler),
        ("midpoint", sample_midpoint),
        ("heun", sample_heun),
        ("rk4", sample_rk4),
    ]:
        torch.testing.assert_close(
            sampler(growth_in_time, x_0, grid(5)), sample_ode(growth_in_time, x_0, grid(5), method)
        )


@pytest.mark.parametrize("method", sorted(ORDERS))
def test_round_trip_error_vanishes_at_least_at_the_order(method):
    x_0 = torch.linspace(0.5, 2.0, 4, dtype=torch.float64)[:, None]
    steps = STEPS[method]
    errors = []
    for n in steps:
        x_1 = sample_ode(growth_in_time, x_0, grid(n), method)
        errors.append((sample_ode(growth_in_time, x_1, grid(n).flip(0), method) - x_0).abs().max())
    # Measured slopes: euler 0.98, midpoint/heun 3.0, rk4 5.0 (the leading terms cancel).
    slope = -np.polyfit(np.log(steps), np.log(torch.stack(errors).numpy()), 1)[0]
    assert slope > ORDERS[method] - 0.3, (slope, errors)


def test_backward_decay_recovers_start():
    x_0 = torch.randn(5, 3)
    x_back = sample_rk4(decay, x_0 / math.e, grid(32).flip(0))
    torch.testing.assert_close(x_back, x_0, atol=1e-7, rtol=0)


def test_trajectory_matches_euler_closed_form():
    x_0 = torch.randn(3, 2, 2)
    n = 8
    x, traj = sample_euler(decay, x_0, grid(n), return_trajectory=True)
    assert traj.shape == (n + 1, 3, 2, 2)
    factors = (1 - 1 / n) ** torch.arange(n + 1, dtype=torch.float64)  # x_k = (1 - h)^k x_0
    torch.testing.assert_close(traj, factors[:, None, None, None] * x_0)
    torch.testing.assert_close(traj[-1], x)


def test_cond_and_time_shape_reach_field():
    x_0, cond = torch.randn(4, 2, 3), torch.randn(4, 2, 3)

    def field(x, t, c):
        assert t.shape == (4,) and x.shape == (4, 2, 3)
        return c  # constant velocity: x(1) = x(0) + cond exactly

    torch.testing.assert_close(sample_heun(field, x_0, grid(3), cond=cond), x_0 + cond)


def test_gradient_matches_closed_form_through_heun():
    a = nn.Parameter(torch.tensor(-0.7))
    x_0 = torch.randn(6, 2)
    n, h = 5, 0.2
    x = sample_heun(lambda x, t, cond=None: a * x, x_0, grid(n))
    x.sum().backward()
    # Heun on dx/dt = a x multiplies by g = 1 + h a + (h a)^2 / 2 each step.
    g = 1 + h * a.item() + (h * a.item()) ** 2 / 2
    expected = x_0.sum().item() * n * g ** (n - 1) * (h + h * h * a.item())
    assert math.isclose(a.grad.item(), expected, rel_tol=1e-10)


def test_gradient_reaches_every_parameter_and_x0():
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))
    x_0 = torch.randn(5, 2, requires_grad=True)
    x = sample_heun(lambda x, t, cond=None: net(torch.cat([x, t[:, None]], 1)), x_0, grid(4))
    x.square().sum().backward()
    for p in [*net.parameters(), x_0]:
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_integrates_in_float32(dtype):
    seen = []

    def field(x, t, cond=None):
        seen.append((x.dtype, t.dtype))
        return -x

    x = sample_rk4(field, torch.ones(2, 3, dtype=dtype), torch.linspace(0, 1, 5))
    assert x.dtype == torch.float32 and set(seen) == {(torch.float32, torch.float32)}
    h = 0.25  # RK4 on dx/dt = -x multiplies by the degree-4 Taylor polynomial of e^-h per step
    g = 1 - h + h**2 / 2 - h**3 / 6 + h**4 / 24
    assert abs(x[0, 0].item() - g**4) < 1e-6  # float32 rounding only


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="rk5"), "method='rk5'.*rk4"),
        (dict(time_grid=torch.tensor([0.0])), "time_grid"),
        (dict(time_grid=torch.tensor([0.0, 0.7, 0.3, 1.0])), "monotone"),
        (dict(cond=torch.zeros(3, 2)), "cond has shape"),
        (dict(x_0=torch.tensor(1.0)), "x_0"),
    ],
)
def test_bad_inputs_raise(kwargs, match):
    args = dict(field=decay, x_0=torch.zeros(4, 2), time_grid=grid(4), method="euler")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        sample_ode(**args)
