"""Condition dropout: the training half of classifier-free guidance."""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.guidance.cfg import null_like
from flowforge.utils.tensor import expand_like

__all__ = ["drop_condition"]


def drop_condition(
    cond: Tensor,
    p: float,
    null_value: int | Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Replace each example's condition by the null condition with probability ``p``.

    c_i' = null if u_i < p else c_i,  u_i ~ U[0, 1) independently per example,

    so one network learns both v(x, t, c) and v(x, t, null) (Ho & Salimans, Alg. 1, line 3;
    they use p_uncond = 0.1 or 0.2). One uniform is drawn per example whatever ``p``, so the
    generator advances the same way for every ``p``.

    Args:
        cond: (B, ...) labels or condition tensor.
        p: drop probability in [0, 1].
        null_value: an int label or a tensor broadcastable to ``cond`` (see ``null_like``).
        generator: the random generator (on ``cond``'s device), or None for the global one.

    Returns:
        (B, ...) a new tensor with dropped examples set to the null condition.

    References:
        Classifier-Free Diffusion Guidance (Ho & Salimans, 2022), arXiv:2207.12598.

    Example:
        >>> drop_condition(torch.tensor([0, 1, 2]), p=1.0, null_value=10).tolist()
        [10, 10, 10]
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p={p!r} is a probability; pass a value in [0, 1] (0.1-0.2 is usual).")
    if cond.dim() == 0:
        raise ValueError(
            f"cond has shape {tuple(cond.shape)}; pass one condition per example, (B, ...)."
        )
    u = torch.rand(cond.shape[0], generator=generator, device=cond.device)  # (B,)
    drop = expand_like(u < p, cond)  # (B, 1, ..., 1)
    return torch.where(drop, null_like(null_value, cond), cond)
