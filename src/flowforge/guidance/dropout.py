"""Condition dropout: the training half of classifier-free guidance."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowforge.guidance.cfg import null_like
from flowforge.utils.tensor import expand_like

__all__ = ["ConditionDropout", "drop_condition"]


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


class ConditionDropout:
    """An objective that drops each label with probability ``p`` before calling ``loss``.

    Trains the conditional and the null-class field together, as classifier-free guidance needs.

    Args:
        loss: an objective ``loss(model, x_1, cond, generator) -> (B,)``.
        p: drop probability in [0, 1].
        null_value: the null label (``num_classes`` for ``MLPField``).

    References:
        Classifier-Free Diffusion Guidance (Ho & Salimans, 2022), arXiv:2207.12598, Alg. 1.

    Example:
        >>> seen = []
        >>> loss = lambda model, x, cond, generator: seen.append(cond) or x.sum(1)
        >>> _ = ConditionDropout(loss, p=1.0, null_value=8)(None, torch.ones(3, 2), torch.zeros(3))
        >>> seen[0].tolist()
        [8.0, 8.0, 8.0]
    """

    def __init__(self, loss: Callable[..., Tensor], p: float, null_value: int | Tensor) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p={p!r} must be a probability in [0, 1] (0.1 is common).")
        self.loss, self.p, self.null_value = loss, p, null_value
        if callable(getattr(loss, "state_dict", None)):  # a stateful objective stays resumable
            self.state_dict = loss.state_dict
            self.load_state_dict = loss.load_state_dict

    def __call__(
        self,
        model: Callable[..., Tensor],
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        if cond is not None:
            cond = drop_condition(cond, self.p, self.null_value, generator)
        return self.loss(model, x_1, cond, generator)
