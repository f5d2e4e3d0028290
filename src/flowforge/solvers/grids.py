"""Time grids for the solvers: uniform, SD3-shifted, and EDM's rho schedule in flowforge time.

Every grid is a 1-D tensor of ``n_steps + 1`` times; a solver takes one step per consecutive pair.
Sampling grids run from the noise end t = 0 to the data end t = 1; a decreasing grid integrates
data -> noise (likelihood, inversion).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from flowforge.paths.time import shift_time

__all__ = [
    "check_time_grid",
    "edm_sigmas",
    "edm_time_grid",
    "shifted_grid",
    "uniform_grid",
]


def _check_n_steps(n_steps: int) -> None:
    if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 1:
        raise ValueError(
            f"n_steps={n_steps!r} must be an integer >= 1 (the number of solver steps); "
            "pass e.g. n_steps=32."
        )


def _check_edm_args(sigma_min: float, sigma_max: float, rho: float) -> None:
    if not 0 < sigma_min < sigma_max:
        raise ValueError(
            f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r} must satisfy "
            "0 < sigma_min < sigma_max; EDM uses sigma_min=0.002, sigma_max=80."
        )
    if not rho > 0:
        raise ValueError(f"rho={rho!r} must be positive; EDM uses rho=7 (rho=1 is uniform).")


def check_time_grid(time_grid: Tensor, name: str = "time_grid") -> None:
    """Raise unless ``time_grid`` is a finite, strictly monotone 1-D tensor of >= 2 times.

    Args:
        time_grid: the grid to validate.
        name: the argument name used in error messages.

    Example:
        >>> check_time_grid(torch.tensor([1.0, 0.5, 0.0]))
    """
    if not isinstance(time_grid, Tensor):
        raise TypeError(
            f"{name} is a {type(time_grid).__name__}; pass a 1-D tensor, e.g. uniform_grid(32)."
        )
    if time_grid.dim() != 1 or time_grid.shape[0] < 2:
        raise ValueError(
            f"{name} has shape {tuple(time_grid.shape)}; pass a 1-D tensor of at least 2 times "
            "(n_steps + 1 points), e.g. uniform_grid(32)."
        )
    times = time_grid.tolist()  # a few dozen numbers: checked on the host, one copy
    if not all(math.isfinite(t) for t in times):
        raise ValueError(f"{name}={times} holds non-finite times; pass finite times.")
    pairs = list(zip(times[:-1], times[1:], strict=True))
    if not (all(b > a for a, b in pairs) or all(b < a for a, b in pairs)):
        raise ValueError(
            f"{name}={time_grid.tolist()} is not strictly monotone; pass strictly increasing "
            "times (noise -> data) or strictly decreasing ones (data -> noise)."
        )


def uniform_grid(
    n_steps: int,
    t_start: float = 0.0,
    t_end: float = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Evenly spaced times t_i = t_start + i (t_end - t_start) / n_steps, i = 0..n_steps.

    Args:
        n_steps: number of solver steps (>= 1).
        t_start, t_end: first and last time; t_end < t_start gives a decreasing grid.
        device, dtype: of the result.

    Returns:
        (n_steps + 1,) times with exact endpoints.

    Example:
        >>> uniform_grid(4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    _check_n_steps(n_steps)
    if t_start == t_end:
        raise ValueError(
            f"t_start={t_start!r} equals t_end={t_end!r}; pass two different times, "
            "e.g. t_start=0.0, t_end=1.0."
        )
    grid = torch.linspace(t_start, t_end, n_steps + 1, dtype=torch.float64)
    grid[0], grid[-1] = t_start, t_end
    return grid.to(device=device, dtype=dtype)


def shifted_grid(
    n_steps: int,
    shift: float,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """A uniform grid on [0, 1] warped by SD3's time shift, t_i = u_i / (shift - (shift - 1) u_i).

    shift > 1 packs steps near the noise end t = 0 (where high-resolution images need them);
    shift = 1 is the uniform grid.

    Args:
        n_steps: number of solver steps (>= 1).
        shift: the factor alpha > 0 of ``flowforge.paths.time.shift_time``.
        device, dtype: of the result.

    Returns:
        (n_steps + 1,) increasing times from 0 to 1.

    References:
        Scaling Rectified Flow Transformers (Esser et al., 2024), arXiv:2403.03206, Sec. 5.3.2.

    Example:
        >>> shifted_grid(2, shift=3.0).tolist()
        [0.0, 0.25, 1.0]
    """
    _check_n_steps(n_steps)
    if isinstance(shift, bool) or not isinstance(shift, numbers.Real) or not shift > 0:
        raise ValueError(
            f"shift={shift!r} must be a positive number; shift > 1 spends more steps near "
            "t = 0 (noise), shift = 1 is uniform."
        )
    grid = shift_time(uniform_grid(n_steps, dtype=torch.float64), float(shift))
    return grid.to(device=device, dtype=dtype)


def edm_sigmas(
    n_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Karras et al.'s noise levels, decreasing from sigma_max to sigma_min, then 0.

    sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho for
    i < n (Eq. 5), and sigma_n = 0. With n_steps = 1 the single level is sigma_max.

    Args:
        n_steps: number of solver steps n (>= 1).
        sigma_min, sigma_max: the smallest and largest nonzero noise level, 0 < min < max.
        rho: the schedule's curvature; larger rho spends more steps at small sigma.
        device, dtype: of the result.

    Returns:
        (n_steps + 1,) noise levels, strictly decreasing, ending at exactly 0.

    References:
        Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022),
        arXiv:2206.00364, Eq. 5.

    Example:
        >>> [round(s, 3) for s in edm_sigmas(3).tolist()]
        [80.0, 2.515, 0.002, 0.0]
    """
    _check_n_steps(n_steps)
    _check_edm_args(sigma_min, sigma_max, rho)
    i = torch.arange(n_steps, dtype=torch.float64)
    frac = i / (n_steps - 1) if n_steps > 1 else i
    s_max, s_min = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (s_max + frac * (s_min - s_max)) ** rho  # Eq. 5
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas.to(device=device, dtype=dtype)


def edm_time_grid(
    n_steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """EDM's noise levels as flowforge times on the straight path, t_i = 1 / (1 + sigma_i).

    On CondOT, x_t = t x_1 + (1 - t) x_0, so x_t / t = x_1 + sigma x_0 with EDM's
    sigma = (1 - t) / t; inverting gives t = 1 / (1 + sigma). The grid starts at
    t_0 = 1 / (1 + sigma_max) > 0 (about 0.0123 for sigma_max = 80), where x_t is noise up to a
    relative error t_0, and ends at exactly t = 1 (sigma = 0).

    Args:
        n_steps: number of solver steps (>= 1).
        sigma_min, sigma_max, rho: as in :func:`edm_sigmas`.
        device, dtype: of the result.

    Returns:
        (n_steps + 1,) strictly increasing times ending at 1.0.

    References:
        Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022),
        arXiv:2206.00364, Eq. 5.

    Example:
        >>> grid = edm_time_grid(3, sigma_max=1.0)
        >>> grid[0].item(), grid[-1].item()
        (0.5, 1.0)
    """
    sigmas = edm_sigmas(n_steps, sigma_min, sigma_max, rho, dtype=torch.float64)
    return (1 / (1 + sigmas)).to(device=device, dtype=dtype)
