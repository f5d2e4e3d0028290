"""Pareto utilities for multi-objective GFlowNets (maximisation): dominance, fronts, HV, IGD.

    y' dominates y  <=>  y'_k >= y_k for every objective k and y'_k > y_k for some k
    Pareto set of Y = the points of Y that no point of Y dominates
    HV(Y; r)        = Lebesgue measure of the union of the boxes [r, y], y in Y
    IGD(S; P)       = (1 / |P|) sum_{p in P} min_{s in S} ||p - s||_2

The hypervolume is exact for any number of objectives K by slicing along the last objective
(Fonseca et al.'s dimension-sweep), with a vectorised sweep for K = 2; its cost grows like
N^(K-1), which is fine for the fronts of enumerable environments. IGD of a sample set against
the true front is 0 exactly when every front point was sampled.

References:
    Multi-Objective GFlowNets (Jain et al., 2023), arXiv:2210.12765 (HV and IGD of GFlowNets).
    An Improved Dimension-Sweep Algorithm for the Hypervolume Indicator (Fonseca, Paquete and
    Lopez-Ibanez, 2006), IEEE CEC.
    Order-Preserving GFlowNets (Chen and Mauch, 2024), arXiv:2310.00386.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowforge.gfn.env import Env

__all__ = ["hypervolume", "igd", "non_dominated", "objective_values", "pareto_front"]


def _as_points(name: str, y: Tensor) -> Tensor:
    """(N, K) float64 points from (N,) or (N, K)."""
    if y.dim() == 1:
        y = y[:, None]
    if y.dim() != 2:
        raise ValueError(f"{name} has shape {tuple(y.shape)}; expected (N, K) objective values.")
    if not torch.isfinite(y).all():
        raise ValueError(f"{name} has non-finite objective values; they must be finite.")
    return y.double()


def non_dominated(y: Tensor) -> Tensor:
    """(N,) bool: the points of ``y`` (N, K) that no other point dominates (maximisation).

    Duplicated points are all kept (none dominates the other). Costs O(N^2 K) memory-light
    comparisons, in chunks of rows.

    Args:
        y: (N, K) objective values, or (N,) for one objective (the maxima are non-dominated).

    Returns:
        (N,) bool mask of the Pareto set.

    Example:
        >>> y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.4, 0.4], [1.0, 0.0]])
        >>> non_dominated(y).tolist()
        [True, True, True, False, True]
    """
    y = _as_points("y", y)
    mask = torch.ones(len(y), dtype=torch.bool, device=y.device)
    for start in range(0, len(y), 1024):
        block = y[start : start + 1024]  # (b, K): is some row of y dominating each of these?
        geq = (y[None] >= block[:, None]).all(-1)  # (b, N)
        gt = (y[None] > block[:, None]).any(-1)
        mask[start : start + 1024] = ~(geq & gt).any(-1)
    return mask


def objective_values(objective: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """(B, K) values of a user objective ``objective(x) -> (B,) or (B, K)``, checked.

    Raises:
        TypeError: when the objective does not return a tensor.
        ValueError: on a wrong shape or non-finite values.

    Example:
        >>> objective_values(lambda x: x.sum(1), torch.ones(3, 2)).shape
        torch.Size([3, 1])
    """
    u = objective(x)
    if not isinstance(u, Tensor):
        raise TypeError(f"objective returned {type(u).__name__}; return a (B,) or (B, K) tensor.")
    B, shape = x.shape[0], tuple(u.shape)
    if u.dim() == 1:
        u = u[:, None]
    if u.dim() != 2 or u.shape[0] != B:
        raise ValueError(
            f"objective returned shape {shape} for {B} objects; expected "
            f"({B},) or ({B}, K), one value per object and objective."
        )
    if not torch.isfinite(u).all():
        raise ValueError("objective returned non-finite values; objectives must be finite.")
    return u


def pareto_front(env: Env, objective: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
    """The exact Pareto set of an enumerable environment by enumerating its objects.

    Args:
        env: an environment with ``all_terminal_states``.
        objective: ``objective(x) -> (B, K)`` (or (B,)) to maximise.

    Returns:
        ``(states (P, *state_shape), values (P, K))`` of the non-dominated objects.

    Example:
        >>> from flowforge.gfn.envs import HyperGrid
        >>> env = HyperGrid(ndim=2, height=3)
        >>> states, values = pareto_front(env, lambda x: torch.stack([x[:, 0], -x[:, 1]], 1))
        >>> states.tolist()  # largest first coordinate, smallest second
        [[2, 0]]
    """
    x = env.all_terminal_states()
    u = objective_values(objective, x)
    mask = non_dominated(u)
    return x[mask], u[mask]


def _hypervolume_2d(y: Tensor, ref: Tensor) -> Tensor:
    """Exact 2-D hypervolume of points (N, 2) already clipped to >= ref (a vectorised sweep)."""
    order = torch.argsort(y[:, 1], descending=True)
    y = y[order]
    width = torch.cummax(y[:, 0], 0).values - ref[0]  # (N,) best first objective so far
    height = y[:, 1] - torch.cat([y[1:, 1], ref[1:]])  # slab between consecutive levels
    return (width * height).sum()


def _hypervolume(y: Tensor, ref: Tensor) -> Tensor:
    K = y.shape[1]
    if len(y) == 0:
        return y.new_zeros(())
    if K == 1:
        return (y[:, 0].max() - ref[0]).clamp(min=0)
    if K == 2:
        return _hypervolume_2d(y, ref)
    order = torch.argsort(y[:, -1], descending=True)
    y = y[order]
    levels = torch.cat([y[:, -1], ref[-1:]])
    total = y.new_zeros(())
    for i in range(len(y)):  # slab levels[i + 1] .. levels[i] is covered by the first i + 1
        thickness = levels[i] - levels[i + 1]
        if thickness > 0:
            total = total + thickness * _hypervolume(y[: i + 1, :-1], ref[:-1])
    return total


def hypervolume(points: Tensor, ref: Tensor | list[float]) -> float:
    """Exact hypervolume dominated by ``points`` (N, K) above the reference point (maximisation).

    Points below the reference in some objective contribute nothing. K = 2 is a sort and a
    cumulative max; K > 2 slices along the last objective and recurses (cost ~N^(K-1)).

    Args:
        points: (N, K) objective values (or (N,) for K = 1).
        ref: (K,) the reference point, worse than every point of interest.

    Returns:
        HV(points; ref) as a float.

    Example:
        >>> hypervolume(torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]), [0.0, 0.0])
        6.0
    """
    y = _as_points("points", points)
    r = torch.as_tensor(ref, dtype=torch.float64, device=y.device).reshape(-1)
    if r.shape != (y.shape[1],):
        raise ValueError(
            f"ref has shape {tuple(r.shape)} but points have K = {y.shape[1]} objectives; pass "
            "one reference value per objective."
        )
    y = torch.maximum(y, r)  # clipped points span empty boxes
    y = y[non_dominated(y)]  # dominated points add no volume
    return _hypervolume(y, r).item()


def igd(points: Tensor, front: Tensor) -> float:
    """Inverted generational distance of a sample set against a reference front.

        IGD(S; P) = (1 / |P|) sum_{p in P} min_{s in S} ||p - s||_2

    Small when every part of the true front has a sample nearby; 0 when the samples contain
    the front.

    Args:
        points: (M, K) objective values of the samples S.
        front: (P, K) the true Pareto front P (``pareto_front(...)[1]``).

    Returns:
        IGD as a float.

    Example:
        >>> front = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
        >>> igd(front, front), igd(torch.tensor([[0.0, 1.0]]), front)
        (0.0, 0.7071067811865476)
    """
    s, p = _as_points("points", points), _as_points("front", front)
    if s.shape[1] != p.shape[1] or len(s) == 0 or len(p) == 0:
        raise ValueError(
            f"points {tuple(s.shape)} and front {tuple(p.shape)} need the same number of "
            "objectives K and at least one row each."
        )
    return torch.cdist(p, s).min(1).values.mean().item()  # (P, M) -> (P,)
