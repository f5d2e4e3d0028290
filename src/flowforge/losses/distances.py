"""Per-example regression distances between a prediction and its target."""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["mse", "pseudo_huber"]


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per example, mean over all non-batch dims.

    Args:
        pred, target: (B, ...).

    Returns:
        (B,) losses.

    Example:
        >>> import torch
        >>> mse(torch.ones(2, 3), torch.zeros(2, 3)).tolist()
        [1.0, 1.0]
    """
    return (pred - target).square().flatten(1).mean(1)


def pseudo_huber(pred: Tensor, target: Tensor, c: float | None = None) -> Tensor:
    """Pseudo-Huber distance per example, (sqrt(||pred - target||^2 + c^2) - c) / d.

    Quadratic for small errors and linear for large ones, so outlier pairs do not dominate.

    Args:
        pred, target: (B, ...) with d = numel of one example.
        c: the transition scale; None uses rf++'s code default 0.00054 d (the paper writes
            0.00054 sqrt(d)).

    Returns:
        (B,) losses.

    References:
        Improving the Training of Rectified Flows (Lee et al., 2024), arXiv:2405.20320, Sec. 3.2.
        Improved Techniques for Training Consistency Models (Song & Dhariwal, 2023),
        arXiv:2310.14189.

    Example:
        >>> import torch
        >>> round(pseudo_huber(torch.full((1, 4), 3.0), torch.zeros(1, 4), c=0.0).item(), 6)
        1.5
    """
    diff = (pred - target).flatten(1)
    d = diff.shape[1]
    c = 0.00054 * d if c is None else float(c)
    if not math.isfinite(c) or c < 0:
        raise ValueError(f"c={c!r} must be a finite non-negative scale (None uses 0.00054 * d).")
    return ((diff.square().sum(1) + c**2).sqrt() - c) / d
