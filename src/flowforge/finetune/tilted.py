"""The reward-tilted target p(x) exp(r(x) / beta) / Z of a 2-D density, by quadrature on a grid.

KL-regularised reward maximisation, max_q E_q[r] - beta KL(q || p), is solved by the tilted
density q*(x) = p(x) exp(r(x) / beta) / Z (the Gibbs variational principle). In two
dimensions it is computed exactly enough on a grid: the log-weights log p + r / beta at the cell
centres, normalised by logsumexp. Samples are drawn by picking cells with those probabilities
and a uniform position inside the cell; expectations (the tilted mean reward, KL(q* || p) =
E_q*[r] / beta - log Z) are sums over the cells.

References:
    Fine-tuning Flow Matching Generative Models with Intermediate Feedback (Fan et al., 2025),
    arXiv:2510.18072 (the tilted target of reward-weighted flow matching).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TiltedGrid", "tilted_grid"]


@dataclass
class TiltedGrid:
    """The tilted density on a grid.

    Attributes:
        centres: (M, 2) cell centres.
        probs: (M,) q*(cell), summing to 1.
        base_probs: (M,) p(cell), summing to 1.
        rewards: (M,) r at the centres.
        cell: the cell side.
        beta: the temperature.
    """

    centres: Tensor
    probs: Tensor
    base_probs: Tensor
    rewards: Tensor
    cell: float
    beta: float

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, 2) float32 draws from q*: a cell by its probability, uniform inside it."""
        idx = torch.multinomial(self.probs, n, replacement=True, generator=generator)
        jitter = (torch.rand(n, 2, generator=generator, dtype=torch.float64) - 0.5) * self.cell
        return (self.centres[idx] + jitter).float()

    def mean_reward(self) -> float:
        """E_q*[r]."""
        return float((self.probs * self.rewards).sum())

    def base_mean_reward(self) -> float:
        """E_p[r]."""
        return float((self.base_probs * self.rewards).sum())

    def kl_to_base(self) -> float:
        """KL(q* || p) = sum q* log(q* / p) over the cells."""
        keep = self.probs > 0
        q, p = self.probs[keep], self.base_probs[keep]
        return float((q * (q.log() - p.log())).sum())


def tilted_grid(
    log_p: Callable[[Tensor], Tensor],
    reward: Callable[[Tensor], Tensor],
    beta: float,
    lo: float = -7.0,
    hi: float = 7.0,
    n_grid: int = 400,
) -> TiltedGrid:
    """q*(x) proportional to p(x) exp(r(x) / beta) on an ``n_grid`` x ``n_grid`` grid of
    [lo, hi]^2.

    Args:
        log_p: (N, 2) -> (N,) log density of the base (up to a constant).
        reward: (N, 2) -> (N,) the reward.
        beta: temperature, > 0 (small: the reward dominates).
        lo, hi: the square the grid covers (the densities must be negligible outside).
        n_grid: cells per side.

    Example:
        >>> g = tilted_grid(lambda x: -0.5 * x.square().sum(1), lambda x: x[:, 0], beta=1.0,
        ...                 lo=-8, hi=8, n_grid=200)
        >>> round(g.mean_reward(), 3), round(g.kl_to_base(), 3)  # N(1, I): mean 1, KL 1/2
        (1.0, 0.5)
    """
    if not beta > 0:
        raise ValueError(f"beta={beta!r} must be > 0 (the tilt exp(r / beta)).")
    if not hi > lo or n_grid < 2:
        raise ValueError(f"need hi > lo and n_grid >= 2, got lo={lo}, hi={hi}, n_grid={n_grid}.")
    cell = (hi - lo) / n_grid
    axis = lo + cell * (torch.arange(n_grid, dtype=torch.float64) + 0.5)
    centres = torch.cartesian_prod(axis, axis)
    lp = log_p(centres).double()
    r = reward(centres.float()).double()
    base = (lp - torch.logsumexp(lp, 0)).exp()
    logits = lp + r / beta
    probs = (logits - torch.logsumexp(logits, 0)).exp()
    return TiltedGrid(centres, probs, base, r, cell, beta)
