"""Fixed-step samplers for the interpolant SDE dX = [b + eps(t) s] dt + sqrt(2 eps(t)) dW."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from flowforge.protocols import Field
from flowforge.solvers.ode import prepare_state
from flowforge.utils.checks import check_choice
from flowforge.utils.tensor import expand_like, per_example, randn_like_gen

__all__ = ["sample_sde", "SDEMethod", "DiffusionCoefficient"]

SDEMethod = Literal["euler_maruyama", "heun"]
DiffusionCoefficient = float | Callable[[Tensor], Tensor | float]


def _eps_at(eps: DiffusionCoefficient, t: Tensor, x: Tensor) -> Tensor:
    """eps(t) as a (B, 1, ..., 1) tensor in the state dtype."""
    value = per_example("eps(t)", eps(t) if callable(eps) else eps, x)
    if (value < 0).any():
        raise ValueError(f"eps(t) has negative values (min {value.min().item():.4g}); need >= 0.")
    return expand_like(value, x)


def sample_sde(
    drift: Field,
    score: Field,
    x_0: Tensor,
    time_grid: Tensor,
    eps: DiffusionCoefficient,
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
    method: SDEMethod = "euler_maruyama",
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Integrate dX = [b(X, t) + eps(t) s(X, t)] dt + sqrt(2 eps(t)) dW along ``time_grid``.

    For any eps(t) >= 0 this SDE has the same time marginals rho_t as the probability-flow ODE
    dX = b dt (eps = 0), so it carries x_0 ~ rho_0 to rho_1 when run 0 -> 1. On a decreasing grid
    it integrates the reverse-time SDE dX = [b - eps s] dt + sqrt(2 eps) dW (1 -> 0). With
    h = t_next - t (negative when reversing) both read, per step,

        euler_maruyama:  x <- x + h b(x, t) + |h| eps(t) s(x, t) + sqrt(2 eps(t) |h|) xi
        heun:            x_hat = x + sqrt(2 eps(t) |h|) xi                       (noise first)
                         k_1 = F(x_hat, t),  k_2 = F(x_hat + h k_1, t_next)
                         x <- x_hat + h (k_1 + k_2) / 2                           (trapezoid)

    with F = b + sign(h) eps s and xi ~ N(0, I). The Heun step evaluates its first drift at t and
    its second at t_next (the standard trapezoid); the reference code evaluates both at t + h.
    With eps = 0, ``"heun"`` is exactly Heun's ODE method and ``"euler_maruyama"`` Euler's.

    The score is not evaluated at a time where eps(t) = 0 for the whole batch, so an eps(t) that
    vanishes at t = 1 (where a one-sided score -E[x_0 | x_t] / (1 - t) can be 0/0 or unreliable)
    never calls it there; Euler-Maruyama never evaluates any field at the last grid time.

    Stiffness: near the data the term eps s contracts at a rate about eps / var, with var the
    local variance of rho_t (about (1 - t)^2 plus the data's own spread); explicit steps are
    stable only while |h| eps(t) / var < 2, so either take eps(t) -> 0 near t = 1 (e.g.
    eps_0 min(1, ((1 - t) / 0.1)^2)) or use enough steps. The final sample keeps the last step's
    noise sqrt(2 eps |h|); an eps(t) vanishing at the end removes it.

    Args:
        drift: b(x, t, cond) -> (B, ...), the probability-flow velocity.
        score: s(x, t, cond) -> (B, ...), grad log rho_t at the same (x, t). For an affine
            one-sided path a velocity network gives it through
            ``ConvertedField(v_net, path, "velocity", "score")``.
        x_0: (B, ...) initial states at ``time_grid[0]``.
        time_grid: (N + 1,) strictly monotone times in [0, 1].
        eps: the diffusion coefficient eps(t) >= 0: a float, or a callable of t (B,) returning a
            scalar or (B,).
        cond: (B, ...) conditioning passed to both fields, or None.
        generator: the random generator for the Brownian increments.
        method: ``"euler_maruyama"`` (1 field pair per step) or ``"heun"`` (2 pairs per step).
        return_trajectory: also return every intermediate state.

    Returns:
        (B, ...) the states at ``time_grid[-1]`` (float32 or wider); with ``return_trajectory``
        the tuple (x, trajectory), trajectory (N + 1, B, ...) with trajectory[0] = x_0 (as
        ``flowforge.solvers.ode.sample_ode``).

    References:
        Stochastic Interpolants: A Unifying Framework for Flows and Diffusions (Albergo, Boffi &
        Vanden-Eijnden, 2023), arXiv:2303.08797 (forward and backward SDEs; reference code
        malbergo/stochastic-interpolants, ``SDEIntegrator``).
        Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022),
        arXiv:2206.00364, Alg. 2 (noise first, then a Heun step).

    Example:
        Data N(0, I) on the straight path x_t = t x_1 + (1 - t) x_0; the exact velocity is
        (2t - 1) x / (t^2 + (1 - t)^2), and the score comes from it by conversion.

        >>> from flowforge.paths.affine import CondOTPath
        >>> from flowforge.paths.conversions import ConvertedField
        >>> v = lambda x, t, cond=None: ((2 * t - 1) / (t**2 + (1 - t) ** 2))[:, None] * x
        >>> s = ConvertedField(v, CondOTPath(), "velocity", "score")
        >>> g = torch.Generator().manual_seed(0)
        >>> x_0 = torch.randn(4000, 2, generator=g)
        >>> x_1 = sample_sde(v, s, x_0, torch.linspace(0, 1, 101), eps=0.5, generator=g)
        >>> bool((x_1.std(0) - 1).abs().max() < 0.05)
        True
    """
    check_choice("method", method, ("euler_maruyama", "heun"))
    if not callable(eps) and not eps >= 0:
        raise ValueError(f"eps={eps!r} must be >= 0 (0 gives the probability-flow ODE).")
    x, grid = prepare_state(x_0, time_grid, cond)
    if grid.min() < 0 or grid.max() > 1:
        raise ValueError(
            f"time_grid spans [{grid.min().item():.4g}, {grid.max().item():.4g}]; keep it within "
            "[0, 1] (increasing samples rho_1, decreasing encodes to rho_0)."
        )
    B = x.shape[0]

    def F(x: Tensor, t: Tensor, eps_t: Tensor, sign: float) -> Tensor:
        """b + sign eps s at (x, t); skips the score where eps vanishes for the whole batch."""
        b = drift(x, t, cond)
        if not bool((eps_t > 0).any()):
            return b
        return b + sign * eps_t * score(x, t, cond)

    trajectory = [x] if return_trajectory else None
    for t_cur, t_next in zip(grid[:-1], grid[1:], strict=True):
        h = t_next - t_cur
        sign = 1.0 if h > 0 else -1.0
        t = t_cur.expand(B)
        eps_t = _eps_at(eps, t, x)  # (B, 1, ..., 1)
        xi = randn_like_gen(x, generator)
        dW = torch.sqrt(2 * eps_t * h.abs()) * xi  # sqrt(2 eps) dW
        if method == "euler_maruyama":
            x = x + h * F(x, t, eps_t, sign) + dW
        else:
            x_hat = x + dW  # noise first (EDM Alg. 2 ordering)
            k_1 = F(x_hat, t, eps_t, sign)
            t_n = t_next.expand(B)
            k_2 = F(x_hat + h * k_1, t_n, _eps_at(eps, t_n, x), sign)
            x = x_hat + 0.5 * h * (k_1 + k_2)  # trapezoid on the drift
        if trajectory is not None:
            trajectory.append(x)
    return x if trajectory is None else (x, torch.stack(trajectory))
