"""Branin-Currin: the standard two-objective task on a 2-D hypergrid (both maximised).

A grid state (i, j) of side H maps to z = (i, j) / (H - 1) in [0, 1]^2 and scores

    u_1(z) = 1 - branin(15 z_1 - 5, 15 z_2) / 308.13
    u_2(z) = currin(z) / 13.77
    branin(a, b) = (b - 5.1 a^2 / (4 pi^2) + 5 a / pi - 6)^2 + 10 (1 - 1 / (8 pi)) cos(a) + 10
    currin(z)    = (1 - exp(-1 / (2 z_2))) (2300 z_1^3 + 1900 z_1^2 + 2092 z_1 + 60)
                   / (100 z_1^3 + 500 z_1^2 + 4 z_1 + 20)

(the divisors are about the maxima over [0, 1]^2, as in the Multi-Objective GFlowNets and
Order-Preserving GFlowNets grids; the factor 1 - exp(-1 / (2 z_2)) is 1 at z_2 = 0). Both
objectives lie in about [0, 1] and conflict, so the Pareto front of the H^2 states has several
points (6 at H = 8, 16 at H = 16, 36 at H = 32).

References:
    Multi-Objective GFlowNets (Jain et al., 2023), arXiv:2210.12765.
    Order-Preserving GFlowNets (Chen and Mauch, 2024), arXiv:2310.00386.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BraninCurrin"]


class BraninCurrin:
    """The two objectives (B, 2) of 2-D hypergrid states (B, 2) of side ``height``.

    Args:
        height: H, the side of the grid (>= 2).

    Example:
        >>> from flowforge.gfn.envs import HyperGrid
        >>> from flowforge.gfn.pareto import pareto_front
        >>> u = BraninCurrin(height=8)
        >>> u(torch.tensor([[0, 0], [7, 7]])).round(decimals=3).tolist()
        [[0.0, 0.218], [0.527, 0.291]]
        >>> pareto_front(HyperGrid(ndim=2, height=8), u)[0].tolist()
        [[2, 0], [2, 1], [3, 0], [3, 1], [4, 0], [4, 1]]
    """

    def __init__(self, height: int) -> None:
        if height < 2:
            raise ValueError(f"height={height!r} must be >= 2.")
        self.height = height

    def __call__(self, x: Tensor) -> Tensor:
        """Args: x: (B, 2) grid coordinates in [0, H - 1]. Returns: (B, 2) float64."""
        if x.dim() != 2 or x.shape[1] != 2:
            raise ValueError(f"x has shape {tuple(x.shape)}; expected (B, 2) grid states.")
        z = x.double() / (self.height - 1)  # (B, 2) in [0, 1]
        a, b = 15 * z[:, 0] - 5, 15 * z[:, 1]
        t = b - 5.1 / (4 * math.pi**2) * a**2 + 5 / math.pi * a - 6
        branin = t**2 + 10 * (1 - 1 / (8 * math.pi)) * torch.cos(a) + 10
        z1, z2 = z[:, 0], z[:, 1]
        decay = 1 - torch.exp(-0.5 / z2)  # -> 1 as z_2 -> 0 (exp(-inf) = 0)
        numer = 2300 * z1**3 + 1900 * z1**2 + 2092 * z1 + 60
        denom = 100 * z1**3 + 500 * z1**2 + 4 * z1 + 20
        return torch.stack([1 - branin / 308.13, decay * numer / denom / 13.77], 1)
