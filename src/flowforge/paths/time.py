"""Time reparameterisations shared by training-time samplers and solver grids."""

from __future__ import annotations

from torch import Tensor

__all__ = ["shift_time"]


def shift_time(t: Tensor, shift: float) -> Tensor:
    """Resolution-dependent time shift, t' = t / (shift - (shift - 1) t).

    This is SD3's sigma' = shift sigma / (1 + (shift - 1) sigma) written for t = 1 - sigma
    (t = 0 noise): shift > 1 moves mass toward the noise end, shift = sqrt(m / n) when moving a
    schedule tuned for n pixels to m pixels. Fixed points 0 and 1; shift(1/a) inverts shift(a).

    Args:
        t: times in [0, 1], any shape.
        shift: the factor alpha > 0.

    Returns:
        shifted times, same shape.

    References:
        Scaling Rectified Flow Transformers (Esser et al., 2024), arXiv:2403.03206, Sec. 5.3.2.

    Example:
        >>> import torch
        >>> shift_time(torch.tensor([0.0, 0.5, 1.0]), 3.0).tolist()
        [0.0, 0.25, 1.0]
    """
    if not shift > 0:
        raise ValueError(f"shift={shift!r} must be positive (1 leaves times unchanged).")
    return t / (shift - (shift - 1) * t)
