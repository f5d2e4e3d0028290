"""Classifier-free guidance (CFG) with an optional guidance interval."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowforge.protocols import Field
from flowforge.utils.checks import check_batch
from flowforge.utils.tensor import expand_like

__all__ = ["ClassifierFreeGuidance", "check_null_type", "null_like", "predict_cond_uncond"]


def check_null_type(null_cond: object) -> None:
    """Raise ``TypeError`` unless ``null_cond`` is an int label or a Tensor."""
    if isinstance(null_cond, bool) or not isinstance(null_cond, (int, Tensor)):
        raise TypeError(
            f"null_cond={null_cond!r} must be an int label or a Tensor (e.g. the model's "
            "null-class index, MLPConfig.num_classes)."
        )


def null_like(null_cond: int | Tensor, cond: Tensor) -> Tensor:
    """The null condition broadcast to the shape, dtype and device of ``cond``.

    Args:
        null_cond: an int label (e.g. ``num_classes`` for ``MLPField``) or a tensor of shape
            ``cond.shape`` or broadcastable to it (a null embedding ``(E,)`` for ``(B, E)``).
        cond: (B, ...) the condition it stands in for.

    Returns:
        (B, ...) null condition.

    Example:
        >>> null_like(10, torch.tensor([3, 4])).tolist()
        [10, 10]
    """
    check_null_type(null_cond)
    if isinstance(null_cond, int):
        return torch.full_like(cond, null_cond)
    try:
        return null_cond.to(device=cond.device, dtype=cond.dtype).expand(cond.shape)
    except RuntimeError as err:
        raise ValueError(
            f"null_cond has shape {tuple(null_cond.shape)}, which does not broadcast to cond's "
            f"shape {tuple(cond.shape)}; pass a scalar, one null condition of shape "
            f"{tuple(cond.shape[1:])}, or one per example."
        ) from err


def _check_cond(cond: Tensor | None, batch: int) -> None:
    if cond is None:
        raise ValueError(
            "cond=None: guidance needs a condition to contrast with the null one; pass cond, "
            "or call the model directly for unconditional samples."
        )
    check_batch("cond", cond, batch)


def predict_cond_uncond(
    model: Field, x: Tensor, t: Tensor, cond: Tensor, null_cond: int | Tensor
) -> tuple[Tensor, Tensor]:
    """Conditional and unconditional predictions from ONE batched call of ``model``.

    [v_c; v_u] = model([x; x], [t; t], [c; null]), split along the batch dimension.

    Args:
        model: a field ``model(x, t, cond) -> (B, ...)``.
        x: (B, ...) state.
        t: (B,) times.
        cond: (B, ...) condition.
        null_cond: the null condition (see ``null_like``).

    Returns:
        ``(v_c, v_u)``, each (B, ...).

    Example:
        >>> model = lambda x, t, cond: x * cond.to(x.dtype)[:, None]
        >>> v_c, v_u = predict_cond_uncond(model, torch.ones(2, 1), torch.zeros(2),
        ...                                torch.tensor([2, 3]), 0)
        >>> v_c.tolist(), v_u.tolist()
        ([[2.0], [3.0]], [[0.0], [0.0]])
    """
    _check_cond(cond, x.shape[0])
    out = model(
        torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null_like(null_cond, cond)])
    )
    v_c, v_u = out.chunk(2)  # (B, ...) each
    return v_c, v_u


class ClassifierFreeGuidance(nn.Module):
    """Classifier-free guidance as a field wrapper, optionally limited to a time interval.

    v(x, t, c) = v_u + w(t) (v_c - v_u),  w(t) = scale if t_lo <= t <= t_hi else 1

    (Ho & Salimans, Eq. 6, written for velocities, with their w = scale - 1; the interval is
    Kynkäänniemi et al.'s noise-level interval mapped to flowforge time, t = 0 noise). ``w`` is
    chosen per example from its own ``t``; outside the interval the result is the plain
    conditional prediction. Both predictions come from one batched forward on ``[x; x]``;
    ``scale = 1``, or a batch wholly outside the interval, takes one conditional forward instead.

    Args:
        model: a conditional field ``model(x, t, cond) -> (B, ...)`` trained with condition
            dropout (see ``drop_condition``).
        scale: the guidance weight w (0 = unconditional, 1 = conditional, > 1 = guided).
        null_cond: the null condition, an int label or a tensor (see ``null_like``).
        interval: ``(t_lo, t_hi)`` in [0, 1] where guidance applies (closed on both ends).

    References:
        Classifier-Free Diffusion Guidance (Ho & Salimans, 2022), arXiv:2207.12598.
        Applying Guidance in a Limited Interval Improves Sample and Distribution Quality in
        Diffusion Models (Kynkäänniemi et al., 2024), arXiv:2404.07724.

    Example:
        >>> model = lambda x, t, cond: x * cond.to(x.dtype)[:, None]  # v_c = c x, v_u = 0
        >>> cfg = ClassifierFreeGuidance(model, scale=3.0, null_cond=0)
        >>> cfg(torch.ones(1, 1), torch.full((1,), 0.5), torch.tensor([2])).tolist()
        [[6.0]]
    """

    def __init__(
        self,
        model: Field,
        scale: float,
        null_cond: int | Tensor,
        interval: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        super().__init__()
        t_lo, t_hi = interval
        if not 0.0 <= t_lo <= t_hi <= 1.0:
            raise ValueError(
                f"interval={interval!r} must satisfy 0 <= t_lo <= t_hi <= 1 (t = 0 noise, "
                "t = 1 data); e.g. (0.0, 0.7) skips guidance near the data end."
            )
        check_null_type(null_cond)
        self.model = model
        self.scale = float(scale)
        self.null_cond = null_cond
        self.interval = (float(t_lo), float(t_hi))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args: x: (B, ...); t: (B,); cond: (B, ...). Returns: (B, ...) guided prediction."""
        _check_cond(cond, x.shape[0])
        if self.scale == 1.0:
            return self.model(x, t, cond)  # w = 1 everywhere: v_u + (v_c - v_u) = v_c
        t_lo, t_hi = self.interval
        inside = (t >= t_lo) & (t <= t_hi)  # (B,)
        if self.interval != (0.0, 1.0) and not inside.any():
            return self.model(x, t, cond)
        v_c, v_u = predict_cond_uncond(self.model, x, t, cond, self.null_cond)
        guided = v_u + self.scale * (v_c - v_u)  # Ho & Salimans, Eq. 6
        return torch.where(expand_like(inside, x), guided, v_c)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, null_cond={self.null_cond!r}, interval={self.interval}"
