"""Fixed-step explicit Runge-Kutta solvers for dx/dt = v(x, t): one integrator, four tableaus.

A tableau (a, b, c) with s stages advances y by one step of size h = t_{n+1} - t_n:

    k_i = f(t_n + c_i h, y_n + h sum_{j<i} a_ij k_j),   y_{n+1} = y_n + h sum_i b_i k_i,

costing s field evaluations (NFE) per step. Grids may decrease (h < 0): that integrates
data -> noise for likelihoods and inversion.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from flowforge.protocols import Field
from flowforge.solvers.grids import check_time_grid
from flowforge.utils.checks import check_batch, check_choice
from flowforge.utils.tensor import wider_float

__all__ = [
    "EULER",
    "HEUN",
    "MIDPOINT",
    "NFE_PER_STEP",
    "RK4",
    "TABLEAUS",
    "ButcherTableau",
    "ODEMethod",
    "integrate_rk",
    "sample_euler",
    "sample_heun",
    "sample_midpoint",
    "sample_ode",
    "sample_rk4",
]

ODEMethod = Literal["euler", "midpoint", "heun", "rk4"]


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge-Kutta scheme: row i of ``a`` holds a_i0..a_i(i-1); ``order`` is its order.

    References:
        Solving Ordinary Differential Equations I (Hairer, Norsett, Wanner, 1993), Sec. II.1.

    Example:
        >>> HEUN.stages, HEUN.order
        (2, 2)
    """

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]
    order: int

    @property
    def stages(self) -> int:
        """Number of stages s, i.e. field evaluations per step."""
        return len(self.b)


EULER = ButcherTableau(a=((),), b=(1.0,), c=(0.0,), order=1)
MIDPOINT = ButcherTableau(a=((), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.5), order=2)
HEUN = ButcherTableau(a=((), (1.0,)), b=(0.5, 0.5), c=(0.0, 1.0), order=2)  # explicit trapezoid
RK4 = ButcherTableau(
    a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
    b=(1 / 6, 1 / 3, 1 / 3, 1 / 6),
    c=(0.0, 0.5, 0.5, 1.0),
    order=4,
)
TABLEAUS: dict[str, ButcherTableau] = {
    "euler": EULER,
    "midpoint": MIDPOINT,
    "heun": HEUN,
    "rk4": RK4,
}
NFE_PER_STEP: dict[str, int] = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def integrate_rk(
    func: Callable[[Tensor, Tensor], Tensor],
    y_0: Tensor,
    time_grid: Tensor,
    tableau: ButcherTableau,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Integrate dy/dt = func(t, y) over ``time_grid`` with an explicit Runge-Kutta tableau.

    The low-level loop behind :func:`sample_ode` and the likelihood solver: ``func`` takes a
    scalar time first, like ``torchdiffeq.odeint``, and any tensor state. No input checks.

    Args:
        func: the right-hand side, (0-dim t, y) -> dy/dt of y's shape.
        y_0: the initial state at ``time_grid[0]``.
        time_grid: (N + 1,) strictly monotone times, same dtype and device as ``y_0``.
        tableau: the scheme, e.g. ``RK4``.
        return_trajectory: also return every grid state.

    Returns:
        y at ``time_grid[-1]``; with ``return_trajectory`` the tuple (y, trajectory) where
        trajectory is (N + 1, ...) with trajectory[0] = y_0.

    Example:
        >>> import torch
        >>> y = integrate_rk(lambda t, y: -y, torch.ones(1), torch.linspace(0, 1, 9), RK4)
        >>> round(y.item(), 5)
        0.36788
    """
    # The scheme's structure, read once: per stage its time fraction and nonzero a_ij, and the
    # nonzero weights b_i; coefficients of 1 cost no multiply (Euler is x + h v, a plain loop).
    stages = [
        (c_i, [(a_ij, j) for j, a_ij in enumerate(a_i) if a_ij != 0])
        for a_i, c_i in zip(tableau.a, tableau.c, strict=True)
    ]
    weights = [(b_i, i) for i, b_i in enumerate(tableau.b) if b_i != 0]
    # equal weights that are a power of two factor out exactly: b k_0 + b k_1 == b (k_0 + k_1)
    equal_weight = weights[0][0] if len({b for b, _ in weights}) == 1 else None
    if equal_weight is not None and math.frexp(equal_weight)[0] != 0.5:
        equal_weight = None
    times = time_grid.unbind()
    steps = (time_grid[1:] - time_grid[:-1]).unbind()  # h of every step, one subtraction
    y = y_0
    trajectory = [y] if return_trajectory else None
    for n, h in enumerate(steps):
        t_cur, t_next = times[n], times[n + 1]
        k: list[Tensor] = []
        for c_i, a_i in stages:
            y_i = y
            for a_ij, j in a_i:
                y_i = y_i + (h if a_ij == 1 else a_ij * h) * k[j]
            # Stage times c = 0 and c = 1 are the grid points themselves, not t_cur + h rounded.
            t_i = t_cur if c_i == 0 else t_next if c_i == 1 else t_cur + c_i * h
            k.append(func(t_i, y_i))
        if equal_weight is not None:  # y + (b h) sum_i k_i: exact, b being a power of two
            total = k[weights[0][1]]
            for _, i in weights[1:]:
                total = total + k[i]
            y = y + (h if equal_weight == 1 else equal_weight * h) * total
        else:
            dy = None
            for b_i, i in weights:
                dy = b_i * k[i] if dy is None else dy + b_i * k[i]
            y = y + h * dy
        if trajectory is not None:
            trajectory.append(y)
    if trajectory is not None:
        return y, torch.stack(trajectory)
    return y


def prepare_state(x_0: Tensor, time_grid: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
    """Validate solver inputs; return the state in float32 or wider and the grid in its dtype.

    Shared by every sampler in this package (ODE, SDE, adaptive, likelihood).

    Example:
        >>> x_0 = torch.ones(2, 3, dtype=torch.float16)
        >>> x, grid = prepare_state(x_0, torch.linspace(0, 1, 3), None)
        >>> x.dtype, grid.dtype
        (torch.float32, torch.float32)
    """
    if not isinstance(x_0, Tensor) or x_0.dim() == 0:
        shape = tuple(x_0.shape) if isinstance(x_0, Tensor) else type(x_0).__name__
        raise ValueError(f"x_0 is {shape}; pass a (B, ...) tensor with a leading batch dimension.")
    check_time_grid(time_grid)
    check_batch("cond", cond, x_0.shape[0], ref="x_0")
    x = x_0.to(wider_float(x_0.dtype))  # never integrate in half precision
    return x, time_grid.to(device=x.device, dtype=x.dtype)


def sample_ode(
    field: Field,
    x_0: Tensor,
    time_grid: Tensor,
    method: ODEMethod = "euler",
    cond: Tensor | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Integrate dx/dt = field(x, t, cond) along ``time_grid`` with a fixed-step RK method.

    Each step costs ``NFE_PER_STEP[method]`` field calls, each with t of shape (B,). The state is
    kept in float32 or wider (x_0's dtype promoted), and the field is called with that state; a
    half-precision model autocasts itself. Not wrapped in ``no_grad``: gradients reach the field's
    parameters and x_0 (wrap the call in ``torch.no_grad()`` to sample cheaply).

    Args:
        field: the velocity ``field(x, t, cond) -> (B, ...)``.
        x_0: (B, ...) the state at ``time_grid[0]`` (noise when sampling 0 -> 1).
        time_grid: (N + 1,) strictly increasing (noise -> data) or decreasing (data -> noise).
        method: ``"euler"`` (order 1), ``"midpoint"``, ``"heun"`` (order 2) or ``"rk4"`` (order 4).
        cond: optional (B, ...) conditioning passed to every field call.
        return_trajectory: also return the states at every grid time.

    Returns:
        (B, ...) the state at ``time_grid[-1]`` in float32 or wider; with ``return_trajectory``
        the tuple (x, trajectory) with trajectory (N + 1, B, ...), trajectory[0] = x_0.

    References:
        Solving Ordinary Differential Equations I (Hairer, Norsett, Wanner, 1993), Sec. II.1.
        Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022),
        arXiv:2206.00364, Alg. 1 (Heun).

    Example:
        >>> field = lambda x, t, cond=None: -x  # x(1) = x(0) / e
        >>> x = sample_ode(field, torch.ones(2, 1), torch.linspace(0, 1, 9), method="rk4")
        >>> round(x[0, 0].item(), 5)
        0.36788
    """
    check_choice("method", method, TABLEAUS)
    x, time_grid = prepare_state(x_0, time_grid, cond)
    B = x.shape[0]
    if method in _LOOPS:  # the low-order schemes as plain loops: no per-call bookkeeping
        return _LOOPS[method](field, x, time_grid, cond, return_trajectory)

    def velocity(t: Tensor, x_t: Tensor) -> Tensor:
        return field(x_t, t.expand(B), cond)  # scalar grid time -> (B,)

    return integrate_rk(velocity, x, time_grid, TABLEAUS[method], return_trajectory)


# The loops below compute exactly what integrate_rk does with their tableaus (same operations in
# the same order, so the results are bit-identical), as the explicit steps of the papers.


def _euler(field, x, grid, cond, keep):
    B, out = x.shape[0], [x] if keep else None
    times = grid.unbind()
    for n in range(len(times) - 1):
        h = times[n + 1] - times[n]
        x = x + h * field(x, times[n].expand(B), cond)
        if keep:
            out.append(x)
    return (x, torch.stack(out)) if keep else x


def _midpoint(field, x, grid, cond, keep):
    B, out = x.shape[0], [x] if keep else None
    times = grid.unbind()
    for n in range(len(times) - 1):
        h = times[n + 1] - times[n]
        half = 0.5 * h
        v = field(x, times[n].expand(B), cond)
        x = x + h * field(x + half * v, (times[n] + half).expand(B), cond)  # slope at midpoint
        if keep:
            out.append(x)
    return (x, torch.stack(out)) if keep else x


def _heun(field, x, grid, cond, keep):
    B, out = x.shape[0], [x] if keep else None
    times = grid.unbind()
    for n in range(len(times) - 1):
        h = times[n + 1] - times[n]
        v = field(x, times[n].expand(B), cond)
        v_next = field(x + h * v, times[n + 1].expand(B), cond)  # Euler predictor
        x = x + (0.5 * h) * (v + v_next)  # trapezoidal corrector
        if keep:
            out.append(x)
    return (x, torch.stack(out)) if keep else x


_LOOPS = {"euler": _euler, "midpoint": _midpoint, "heun": _heun}


def sample_euler(
    field: Field,
    x_0: Tensor,
    time_grid: Tensor,
    cond: Tensor | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Euler's method, x_{n+1} = x_n + h v(x_n, t_n): 1 NFE per step, order 1.

    Args and Returns as in :func:`sample_ode`.

    Example:
        >>> sample_euler(lambda x, t, c=None: -x, torch.ones(1, 1), torch.linspace(0, 1, 3)).item()
        0.25
    """
    return sample_ode(field, x_0, time_grid, "euler", cond, return_trajectory)


def sample_midpoint(
    field: Field,
    x_0: Tensor,
    time_grid: Tensor,
    cond: Tensor | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Explicit midpoint, x_{n+1} = x_n + h v(x_n + h/2 v(x_n, t_n), t_n + h/2): 2 NFE, order 2.

    Args and Returns as in :func:`sample_ode`.

    Example:
        >>> decay = lambda x, t, cond=None: -x
        >>> sample_midpoint(decay, torch.ones(1, 1), torch.tensor([0.0, 1.0])).item()
        0.5
    """
    return sample_ode(field, x_0, time_grid, "midpoint", cond, return_trajectory)


def sample_heun(
    field: Field,
    x_0: Tensor,
    time_grid: Tensor,
    cond: Tensor | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Heun's method (explicit trapezoid): an Euler predictor then the average of the two slopes.

    x' = x_n + h v(x_n, t_n);  x_{n+1} = x_n + h/2 (v(x_n, t_n) + v(x', t_{n+1})): 2 NFE, order 2.

    Args and Returns as in :func:`sample_ode`.

    References:
        Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022),
        arXiv:2206.00364, Alg. 1.

    Example:
        >>> sample_heun(lambda x, t, c=None: -x, torch.ones(1, 1), torch.tensor([0.0, 1.0])).item()
        0.5
    """
    return sample_ode(field, x_0, time_grid, "heun", cond, return_trajectory)


def sample_rk4(
    field: Field,
    x_0: Tensor,
    time_grid: Tensor,
    cond: Tensor | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Classical fourth-order Runge-Kutta: 4 NFE per step, order 4.

    Args and Returns as in :func:`sample_ode`.

    Example:
        >>> x = sample_rk4(lambda x, t, c=None: -x, torch.ones(1, 1), torch.tensor([0.0, 1.0]))
        >>> round(x.item(), 6)  # 1 - 1 + 1/2 - 1/6 + 1/24
        0.375
    """
    return sample_ode(field, x_0, time_grid, "rk4", cond, return_trajectory)
