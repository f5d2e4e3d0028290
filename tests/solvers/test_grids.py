"""Grids: endpoints, monotonicity, the shift and EDM formulas, and argument errors."""

import math

import pytest
import torch

from flowforge.solvers.grids import (
    check_time_grid,
    edm_sigmas,
    edm_time_grid,
    shifted_grid,
    uniform_grid,
)


@pytest.mark.parametrize("n_steps", [1, 7, 64])
def test_uniform_grid_endpoints_and_spacing(n_steps):
    grid = uniform_grid(n_steps, dtype=torch.float64)
    assert grid.shape == (n_steps + 1,)
    assert grid[0].item() == 0.0 and grid[-1].item() == 1.0
    torch.testing.assert_close(
        grid.diff(), torch.full((n_steps,), 1 / n_steps), rtol=0, atol=1e-15
    )


def test_uniform_grid_decreasing_and_dtype():
    grid = uniform_grid(5, t_start=1.0, t_end=0.0)
    assert grid.dtype == torch.float32
    assert grid[0].item() == 1.0 and grid[-1].item() == 0.0
    assert (grid.diff() < 0).all()


def test_shifted_grid_shift_one_is_uniform():
    torch.testing.assert_close(
        shifted_grid(16, 1.0, dtype=torch.float64), uniform_grid(16, dtype=torch.float64)
    )


@pytest.mark.parametrize("shift", [0.5, 3.0])
def test_shifted_grid_formula(shift):
    u = uniform_grid(10, dtype=torch.float64)
    grid = shifted_grid(10, shift, dtype=torch.float64)
    torch.testing.assert_close(grid, u / (shift - (shift - 1) * u))  # SD3 Eq. 23 in t = 1 - sigma
    assert grid[0].item() == 0.0 and grid[-1].item() == 1.0
    assert (grid.diff() > 0).all()
    # shift > 1 makes the first (noise-end) step shorter than uniform; shift < 1 longer.
    assert (grid[1] < u[1]).item() == (shift > 1)


@pytest.mark.parametrize("n_steps", [2, 5, 18])
def test_edm_sigmas_formula(n_steps):
    s_min, s_max, rho = 0.002, 80.0, 7.0
    sigmas = edm_sigmas(n_steps, s_min, s_max, rho, dtype=torch.float64)
    assert sigmas.shape == (n_steps + 1,)
    expected = [
        (s_max ** (1 / rho) + i / (n_steps - 1) * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        for i in range(n_steps)
    ] + [0.0]
    torch.testing.assert_close(sigmas, torch.tensor(expected), rtol=1e-12, atol=0)
    assert math.isclose(sigmas[0].item(), s_max) and math.isclose(sigmas[-2].item(), s_min)
    assert sigmas[-1].item() == 0.0 and (sigmas.diff() < 0).all()


def test_edm_sigmas_single_step():
    assert edm_sigmas(1, dtype=torch.float64).tolist() == [80.0, 0.0]


def test_edm_time_grid_maps_sigma_to_condot_time():
    sigmas = edm_sigmas(10, 0.002, 80.0, 7.0, dtype=torch.float64)
    grid = edm_time_grid(10, 0.002, 80.0, 7.0, dtype=torch.float64)
    assert grid[-1].item() == 1.0 and (grid.diff() > 0).all()
    assert math.isclose(grid[0].item(), 1 / 81)
    # On CondOT, EDM's sigma = sigma_t / alpha_t = (1 - t) / t.
    torch.testing.assert_close((1 - grid) / grid, sigmas, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: uniform_grid(0), "n_steps=0"),
        (lambda: uniform_grid(2.5), "n_steps=2.5"),
        (lambda: uniform_grid(True), "n_steps=True"),
        (lambda: uniform_grid(4, 0.5, 0.5), "t_start=0.5"),
        (lambda: shifted_grid(4, 0.0), "shift=0.0"),
        (lambda: shifted_grid(4, -2.0), "shift=-2.0"),
        (lambda: edm_sigmas(4, sigma_min=0.0), "sigma_min=0.0"),
        (lambda: edm_sigmas(4, sigma_min=5.0, sigma_max=1.0), "sigma_min=5.0"),
        (lambda: edm_sigmas(4, rho=0.0), "rho=0.0"),
        (lambda: edm_time_grid(0), "n_steps=0"),
    ],
)
def test_bad_arguments_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "grid, error",
    [
        (torch.tensor([0.0]), ValueError),
        (torch.zeros(2, 2), ValueError),
        (torch.tensor([0.0, 0.5, 0.5, 1.0]), ValueError),
        (torch.tensor([0.0, 0.6, 0.4, 1.0]), ValueError),
        (torch.tensor([0.0, float("nan"), 1.0]), ValueError),
        ([0.0, 1.0], TypeError),
    ],
)
def test_check_time_grid_rejects(grid, error):
    with pytest.raises(error, match="time_grid"):
        check_time_grid(grid)
