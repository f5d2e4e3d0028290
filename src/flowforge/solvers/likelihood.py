"""Log-likelihoods of a flow by the instantaneous change of variables (continuous NFs).

Along a solution of dx/dt = v(x, t), the continuity equation d_t p + div(p v) = 0 gives

    d/dt log p_t(x_t) = -div v(x_t, t)                               (Chen et al., 2018, Thm. 1)

so log p_1(x_1) = log p_0(x_0) - int_0^1 div v(x_t, t) dt. Both directions integrate the same
augmented state [x, delta] with d delta/dt = -div v and delta = 0 at the start, so that
delta_end = log p_{t_end}(x_end) - log p_{t_start}(x_start):

* ``log_likelihood`` runs 1 -> 0 from data: log p_1(x_1) = log p_0(x_0) - delta(0);
* ``sample_with_log_prob`` runs 0 -> 1 from noise: log p_1(x_1) = log p_0(x_0) + delta(1).

The divergence is exact (D vector-Jacobian products, for small D) or Hutchinson's unbiased
estimate eps^T (dv/dx) eps with probes drawn once per integration (FFJORD).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from flowforge.protocols import Field
from flowforge.solvers.adaptive import check_tolerances, integrate_dopri5
from flowforge.solvers.ode import TABLEAUS, integrate_rk, prepare_state
from flowforge.utils.checks import check_choice

__all__ = [
    "DivergenceMethod",
    "LikelihoodMethod",
    "ProbeKind",
    "exact_divergence",
    "hutchinson_divergence",
    "log_likelihood",
    "sample_with_log_prob",
    "standard_normal_log_prob",
]

DivergenceMethod = Literal["exact", "hutchinson"]
ProbeKind = Literal["rademacher", "gaussian"]
LikelihoodMethod = Literal["euler", "midpoint", "heun", "rk4", "dopri5"]
_METHODS = ("euler", "midpoint", "heun", "rk4", "dopri5")


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """log N(x; 0, I) = -|x|^2 / 2 - D/2 log(2 pi), summed over all non-batch dimensions.

    Args:
        x: (B, ...) points.

    Returns:
        (B,) log-densities.

    Example:
        >>> round(standard_normal_log_prob(torch.zeros(1, 2)).item(), 4)  # -log(2 pi)
        -1.8379
    """
    D = x[0].numel()
    return -0.5 * x.flatten(1).square().sum(1) - 0.5 * D * math.log(2 * math.pi)


def exact_divergence(v: Tensor, x: Tensor, create_graph: bool = False) -> Tensor:
    """div v = sum_i d v_i / d x_i by one vector-Jacobian product per flattened dimension.

    Costs D backward passes; each example's output must depend on its own input only (no
    batch-mixing layers), since the products are summed over the batch.

    Args:
        v: (B, ...) the field's output, computed from ``x`` with grad enabled.
        x: (B, ...) the input, requiring grad.
        create_graph: keep the graph so the divergence itself is differentiable.

    Returns:
        (B,) the divergence; zero where ``v`` does not depend on ``x``.

    Example:
        >>> x = torch.randn(3, 2, requires_grad=True)
        >>> exact_divergence(2 * x, x).tolist()  # trace of 2 I
        [4.0, 4.0, 4.0]
    """
    div = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    if not v.requires_grad:
        return div
    v_flat = v.flatten(1)  # (B, D)
    for i in range(v_flat.shape[1]):
        (g,) = torch.autograd.grad(
            v_flat[:, i].sum(), x, create_graph=create_graph, retain_graph=True, allow_unused=True
        )
        if g is not None:
            div = div + g.flatten(1)[:, i]
    return div


def hutchinson_divergence(
    v: Tensor, x: Tensor, probes: Tensor, create_graph: bool = False
) -> Tensor:
    """Hutchinson's estimate div v ~ 1/K sum_k eps_k^T (dv/dx) eps_k, unbiased if E[eps eps^T] = I.

    Args:
        v: (B, ...) the field's output, computed from ``x`` with grad enabled.
        x: (B, ...) the input, requiring grad.
        probes: (K, B, ...) probe vectors eps_k (Rademacher or standard normal).
        create_graph: keep the graph so the estimate itself is differentiable.

    Returns:
        (B,) the estimate, one vector-Jacobian product per probe.

    References:
        A stochastic estimator of the trace of the influence matrix (Hutchinson, 1989).
        FFJORD (Grathwohl et al., 2019), arXiv:1810.01367, Sec. 3.1.

    Example:
        >>> x = torch.randn(3, 2, requires_grad=True)
        >>> probes = torch.ones(1, 3, 2)
        >>> hutchinson_divergence(2 * x, x, probes).tolist()
        [4.0, 4.0, 4.0]
    """
    est = torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)
    if not v.requires_grad:
        return est
    for eps in probes:
        (g,) = torch.autograd.grad(
            v, x, grad_outputs=eps, create_graph=create_graph, retain_graph=True, allow_unused=True
        )
        if g is not None:
            est = est + (g * eps).flatten(1).sum(1)  # eps^T J eps
    return est / probes.shape[0]


def _augmented_dynamics(
    field: Field, shape: torch.Size, cond: Tensor | None, probes: Tensor | None
) -> Callable[[Tensor, Tensor], Tensor]:
    """d/dt [x, delta] = [v(x, t), -div v(x, t)] on the flat state y = [x.flatten(1), delta]."""
    B, D = shape[0], math.prod(shape[1:])

    def dynamics(t: Tensor, y: Tensor) -> Tensor:
        grad_mode = torch.is_grad_enabled()
        x = y[:, :D].reshape(shape)  # (B, ...)
        with torch.enable_grad():  # the divergence needs dv/dx even under no_grad
            if not (grad_mode and x.requires_grad):
                x = x.detach().requires_grad_(True)
            v = field(x, t.to(y.dtype).expand(B), cond)
            if probes is None:
                div = exact_divergence(v, x, create_graph=grad_mode)
            else:
                div = hutchinson_divergence(v, x, probes, create_graph=grad_mode)
        if not grad_mode:
            v, div = v.detach(), div.detach()
        return torch.cat([v.flatten(1), -div[:, None]], dim=1)  # (B, D + 1), Thm. 1

    return dynamics


def _integrate_augmented(
    field: Field,
    x: Tensor,
    time_grid: Tensor,
    method: str,
    divergence: str,
    n_probes: int,
    probe: str,
    cond: Tensor | None,
    generator: torch.Generator | None,
    atol: float,
    rtol: float,
) -> tuple[Tensor, Tensor]:
    """Carry x from time_grid[0] to time_grid[-1]; return (x_end, delta) with
    delta = log p_{t_end}(x_end) - log p_{t_start}(x_start)."""
    probes = None
    if divergence == "hutchinson":  # fixed for the whole integration (FFJORD, Sec. 3.1)
        size = (n_probes, *x.shape)
        if probe == "rademacher":
            bits = torch.randint(0, 2, size, generator=generator, device=x.device)
            probes = (2 * bits - 1).to(x.dtype)
        else:
            probes = torch.randn(size, generator=generator, device=x.device, dtype=x.dtype)
    dynamics = _augmented_dynamics(field, x.shape, cond, probes)
    D = x[0].numel()
    y = torch.cat([x.flatten(1), x.new_zeros(x.shape[0], 1)], dim=1)  # (B, D + 1), delta = 0
    if method == "dopri5":
        y = integrate_dopri5(dynamics, y, time_grid, atol=atol, rtol=rtol)[-1]
    else:
        y = integrate_rk(dynamics, y, time_grid, TABLEAUS[method])
    return y[:, :D].reshape(x.shape), y[:, D]


def _check_args(
    method: str,
    divergence: str,
    n_probes: int,
    probe: str,
    atol: float,
    rtol: float,
    time_grid: Tensor | None,
    direction: str,
) -> Tensor:
    """Validate the shared arguments; return the grid (the endpoints when None)."""
    check_choice("method", method, _METHODS)
    check_choice("divergence", divergence, ("exact", "hutchinson"))
    check_choice("probe", probe, ("rademacher", "gaussian"))
    if isinstance(n_probes, bool) or not isinstance(n_probes, numbers.Integral) or n_probes < 1:
        raise ValueError(f"n_probes={n_probes!r} must be an integer >= 1; e.g. n_probes=1.")
    check_tolerances(atol, rtol)
    decreasing = direction == "decreasing"
    if time_grid is None:
        if method != "dopri5":
            grid = "uniform_grid(100, 1.0, 0.0)" if decreasing else "uniform_grid(100)"
            raise ValueError(
                f"time_grid=None needs method='dopri5'; with method={method!r} pass a grid, "
                f"e.g. time_grid={grid}."
            )
        return torch.tensor([1.0, 0.0] if decreasing else [0.0, 1.0])
    if isinstance(time_grid, Tensor) and time_grid.dim() == 1 and len(time_grid) >= 2:
        if bool(time_grid[-1] < time_grid[0]) != decreasing:
            raise ValueError(
                f"time_grid runs from {time_grid[0].item():.4g} to {time_grid[-1].item():.4g} "
                f"but must be {direction} here (data at t = 1, noise at t = 0); "
                "pass time_grid.flip(0)."
            )
    return time_grid


def _log_p0(log_p0: Callable[[Tensor], Tensor], x_0: Tensor) -> Tensor:
    out = log_p0(x_0)
    if out.shape != (x_0.shape[0],):
        raise ValueError(
            f"log_p0 returned shape {tuple(out.shape)}; it must return one log-density per "
            f"example, shape ({x_0.shape[0]},), e.g. standard_normal_log_prob."
        )
    return out


def log_likelihood(
    field: Field,
    x_1: Tensor,
    log_p0: Callable[[Tensor], Tensor] = standard_normal_log_prob,
    time_grid: Tensor | None = None,
    method: LikelihoodMethod = "dopri5",
    divergence: DivergenceMethod = "exact",
    n_probes: int = 1,
    probe: ProbeKind = "rademacher",
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
    return_x0: bool = False,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> Tensor | tuple[Tensor, Tensor]:
    """log p_1(x_1) of the flow dx/dt = field(x, t, cond) pushed from the source density p_0.

    Integrates [x, delta] from t = 1 (data) to t = 0 (noise) with d delta/dt = -div v, then
    log p_1(x_1) = log p_0(x_0) - delta(0) = log p_0(x_0) - int_0^1 div v(x_t, t) dt.
    Differentiable in the field's parameters and in x_1 (the divergence keeps its graph when grad
    is enabled); under ``torch.no_grad()`` the divergence is still computed, without graphs.

    Args:
        field: the velocity ``field(x, t, cond) -> (B, ...)``.
        x_1: (B, ...) data points.
        log_p0: the source log-density, (B, ...) -> (B,).
        time_grid: (N + 1,) strictly decreasing times from 1 to 0; None means [1, 0] and needs
            ``method="dopri5"``.
        method: a fixed-step RK method of ``flowforge.solvers.ode`` or adaptive ``"dopri5"``.
        divergence: ``"exact"`` (D backward passes per call) or ``"hutchinson"`` (n_probes).
        n_probes: Hutchinson probes per example, drawn once per integration.
        probe: ``"rademacher"`` (lower variance) or ``"gaussian"`` probes.
        cond: optional (B, ...) conditioning.
        generator: random source for the probes.
        return_x0: also return the noise x_0 that x_1 maps to.
        atol, rtol: dopri5 tolerances (used only when ``method="dopri5"``).

    Returns:
        (B,) log p_1(x_1) in float32 or wider; with ``return_x0`` the tuple (log_p1, x_0).

    References:
        Neural Ordinary Differential Equations (Chen et al., 2018), arXiv:1806.07366, Thm. 1.
        FFJORD (Grathwohl et al., 2019), arXiv:1810.01367.

    Example:
        >>> shift = lambda x, t, cond=None: torch.ones_like(x)  # x_1 = x_0 + 1
        >>> x_1 = torch.ones(1, 2)
        >>> log_likelihood(shift, x_1) - standard_normal_log_prob(x_1 - 1)
        tensor([0.])
    """
    time_grid = _check_args(
        method, divergence, n_probes, probe, atol, rtol, time_grid, "decreasing"
    )
    x, time_grid = prepare_state(x_1, time_grid, cond)
    x_0, delta = _integrate_augmented(
        field, x, time_grid, method, divergence, n_probes, probe, cond, generator, atol, rtol
    )
    log_p1 = _log_p0(log_p0, x_0) - delta  # delta = log p_0(x_0) - log p_1(x_1)
    return (log_p1, x_0) if return_x0 else log_p1


def sample_with_log_prob(
    field: Field,
    x_0: Tensor,
    log_p0: Callable[[Tensor], Tensor] = standard_normal_log_prob,
    time_grid: Tensor | None = None,
    method: LikelihoodMethod = "dopri5",
    divergence: DivergenceMethod = "exact",
    n_probes: int = 1,
    probe: ProbeKind = "rademacher",
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> tuple[Tensor, Tensor]:
    """Sample x_1 from noise x_0 and its log-density log p_1(x_1) in the same integration.

    Integrates [x, delta] from t = 0 to t = 1 with d delta/dt = -div v, so
    log p_1(x_1) = log p_0(x_0) + delta(1).

    Args:
        field: the velocity ``field(x, t, cond) -> (B, ...)``.
        x_0: (B, ...) source samples.
        log_p0: the source log-density, (B, ...) -> (B,).
        time_grid: (N + 1,) strictly increasing times from 0 to 1; None means [0, 1] and needs
            ``method="dopri5"``.
        method, divergence, n_probes, probe, cond, generator, atol, rtol: as in
            :func:`log_likelihood`.

    Returns:
        (x_1, log_p1): the (B, ...) samples and their (B,) log-densities, float32 or wider.

    References:
        Neural Ordinary Differential Equations (Chen et al., 2018), arXiv:1806.07366, Thm. 1.

    Example:
        >>> double = lambda x, t, cond=None: x  # x_1 = e x_0, log p_1 = log p_0 - D
        >>> x_1, log_p1 = sample_with_log_prob(double, torch.zeros(1, 2), atol=1e-8, rtol=1e-8)
        >>> round((log_p1 - standard_normal_log_prob(torch.zeros(1, 2))).item(), 6)
        -2.0
    """
    time_grid = _check_args(
        method, divergence, n_probes, probe, atol, rtol, time_grid, "increasing"
    )
    x, time_grid = prepare_state(x_0, time_grid, cond)
    x_1, delta = _integrate_augmented(
        field, x, time_grid, method, divergence, n_probes, probe, cond, generator, atol, rtol
    )
    return x_1, _log_p0(log_p0, x) + delta  # delta = log p_1(x_1) - log p_0(x_0)
