"""RAAG: ratio-aware adaptive guidance (method card 11)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from flowforge.guidance.cfg import check_null_type, predict_cond_uncond
from flowforge.protocols import Field
from flowforge.utils.tensor import expand_like

__all__ = ["RAAG"]


class RAAG(nn.Module):
    """Ratio-aware adaptive guidance: a CFG weight damped where the correction is large.

    delta = v_c - v_u
    RATIO = (||delta|| / max(||v_u||, eps))^p      per example, norms over all non-batch dims
    w     = 1 + (w_max - 1) exp(-alpha RATIO)      in (1, w_max] for w_max > 1
    v     = v_u + w delta

    RATIO spikes in the first (noise-side) steps, where a large constant weight amplifies errors
    through the ODE; there ``w`` falls back to about 1 (plain conditional), and reaches ``w_max``
    once the ratio has decayed. ``power=1`` is the public ComfyUI node's ratio; ``power=2`` the
    squared-norm ratio of secondary summaries of the paper (a different schedule, tune ``alpha``
    for each). Both predictions come from one batched forward. The weights used in the latest call
    are kept in ``last_weight`` ((B,), detached) for diagnostics.

    Args:
        model: a conditional field ``model(x, t, cond) -> (B, ...)`` trained with condition
            dropout.
        w_max: the guidance weight once the ratio is small (plays the role of the CFG scale).
        alpha: decay rate of the weight in RATIO (>= 0; 0 gives constant CFG with w_max).
        power: 1 (ratio of norms) or 2 (ratio of squared norms).
        null_cond: the null condition, an int label or a tensor (see ``null_like``); keyword-only
            and required, so a real class is never taken for the null one by default.
        eps: floor on ||v_u|| guarding the division.

    References:
        RAAG: Ratio Aware Adaptive Guidance (Zhu et al., 2025), arXiv:2508.03442.

    Example:
        >>> model = lambda x, t, cond: x * cond.to(x.dtype)[:, None]  # v_c = c x, v_u = x
        >>> raag = RAAG(model, w_max=5.0, alpha=1.0, null_cond=1)
        >>> v = raag(torch.ones(1, 2), torch.zeros(1), torch.tensor([2]))  # RATIO = 1
        >>> round(raag.last_weight.item(), 4), round(v[0, 0].item(), 4)  # 1 + 4 / e
        (2.4715, 3.4715)
    """

    def __init__(
        self,
        model: Field,
        w_max: float,
        alpha: float,
        power: Literal[1, 2] = 1,
        *,
        null_cond: int | Tensor,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if power not in (1, 2):
            raise ValueError(
                f"power={power!r} must be 1 (||delta|| / ||v_u||) or 2 (squared norms)."
            )
        if not alpha >= 0:
            raise ValueError(f"alpha={alpha!r} must be >= 0 (card 11 uses 2 on toys, 12 on SD).")
        if not eps > 0:
            raise ValueError(f"eps={eps!r} must be > 0; it guards the division by ||v_u||.")
        check_null_type(null_cond)
        self.model = model
        self.w_max, self.alpha, self.power = float(w_max), float(alpha), power
        self.null_cond = null_cond
        self.eps = float(eps)
        self.last_weight: Tensor | None = None

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args: x: (B, ...); t: (B,); cond: (B, ...). Returns: (B, ...) guided prediction."""
        v_c, v_u = predict_cond_uncond(self.model, x, t, cond, self.null_cond)
        delta = v_c - v_u  # (B, ...)
        norm_delta = delta.flatten(1).norm(dim=1)  # (B,)
        norm_u = v_u.flatten(1).norm(dim=1).clamp_min(self.eps)  # (B,)
        ratio = (norm_delta / norm_u) ** self.power  # (B,)
        w = 1 + (self.w_max - 1) * torch.exp(-self.alpha * ratio)  # (B,)
        self.last_weight = w.detach()
        return v_u + expand_like(w, delta) * delta

    def extra_repr(self) -> str:
        return (
            f"w_max={self.w_max}, alpha={self.alpha}, power={self.power}, "
            f"null_cond={self.null_cond!r}, eps={self.eps}"
        )
