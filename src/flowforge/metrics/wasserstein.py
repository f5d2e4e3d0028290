"""Exact 2-Wasserstein distance between two empirical measures (network simplex, via POT).

For samples x_1..x_n and y_1..y_m with uniform weights 1/n and 1/m,

    W_2(mu_n, nu_m)^2 = min_{P in U(1/n, 1/m)} sum_ij P_ij ||x_i - y_j||^2,

a linear program over the transport polytope U (couplings with those marginals), solved exactly
by ``ot.emd2``. Cost O(n^2 m) time-ish and O(n m) memory: fine up to a few thousand points.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_sample_matrices", "wasserstein2"]


def as_sample_matrices(
    x: Tensor, y: Tensor, min_samples: int = 1, names: tuple[str, str] = ("x", "y")
) -> tuple[Tensor, Tensor]:
    """Validate two sample sets and flatten them to ``(n, D)`` and ``(m, D)``.

    Shared by every metric in this package: both inputs are tensors of at least 2 dims with the
    same per-sample shape size, at least ``min_samples`` samples each and finite values.
    """
    for name, a in zip(names, (x, y), strict=True):
        if not isinstance(a, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(a).__name__}.")
        if a.dim() < 2:
            raise ValueError(
                f"{name} has shape {tuple(a.shape)}; expected (B, ...) samples, one per row "
                f"(reshape a 1-D array of scalars with {name}.reshape(-1, 1))."
            )
        if a.shape[0] < min_samples:
            raise ValueError(
                f"{name} has {a.shape[0]} samples; this metric needs at least {min_samples}."
            )
        if not torch.isfinite(a).all():
            raise ValueError(
                f"{name} contains NaN or infinite values; drop or fix those samples first."
            )
    x, y = x.flatten(1), y.flatten(1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names[0]} has {x.shape[1]} features per sample but {names[1]} has {y.shape[1]}; "
            "both sample sets must live in the same space."
        )
    return x, y


def wasserstein2(x: Tensor, y: Tensor) -> Tensor:
    """Exact W_2 (not squared) between the empirical measures of ``x`` and ``y``.

    W_2^2 = min_P sum_ij P_ij ||x_i - y_j||^2 over couplings P with row sums 1/n and column sums
    1/m, solved exactly with POT's network simplex in float64. The sizes n and m may differ.
    The result is not differentiable (it is computed in NumPy); use
    :func:`flowforge.metrics.sliced.sliced_wasserstein` as a loss.

    Args:
        x: (n, ...) samples, flattened to (n, D).
        y: (m, ...) samples with the same number of features D.

    Returns:
        () the distance, in ``x``'s floating dtype (float32 at least) on ``x``'s device.

    References:
        Computational Optimal Transport (Peyre & Cuturi, 2019), arXiv:1803.00567, Sec. 3.
        POT: Python Optimal Transport (Flamary et al., JMLR 2021).

    Example:
        >>> x = torch.randn(64, 2)
        >>> round(wasserstein2(x, x + torch.tensor([3.0, 4.0])).item(), 4)  # translation
        5.0
    """
    x, y = as_sample_matrices(x, y)
    out_dtype = torch.promote_types(x.dtype, torch.float32)
    xa = x.detach().cpu().double().numpy()
    ya = y.detach().cpu().double().numpy()
    n, m = len(xa), len(ya)
    import ot  # POT and scipy load slowly: import on first use
    import scipy.spatial.distance

    # cdist avoids the cancellation of ||a||^2 + ||b||^2 - 2ab, so W_2 of a translation is exact.
    cost = scipy.spatial.distance.cdist(xa, ya, metric="sqeuclidean")  # (n, m)
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    # The simplex needs O(n m) pivots on large problems; POT's default cap (1e5) is too small.
    w2_sq = float(ot.emd2(a, b, cost, numItermax=max(100_000, 50 * n * m)))
    return torch.tensor(math.sqrt(max(w2_sq, 0.0)), dtype=out_dtype, device=x.device)
