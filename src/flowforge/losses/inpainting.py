"""Inpainting by channel concatenation: train a field conditioned on ``cat(x * m, 2 m - 1)``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowforge.data.masks import box_masks, inpainting_condition
from flowforge.protocols import Field

__all__ = ["InpaintingLoss"]


class InpaintingLoss:
    """Draw a known-pixel mask per example and train ``loss`` on the masked-image condition.

    c = cat(x_1 * m, 2 m - 1),  m ~ masks(B),  L = loss(model, x_1, c)

    The field ``model(x_t, t, c)`` learns p(x_1 | known pixels); sampling passes the same
    condition for the image to complete and pastes the known pixels back
    (``flowforge.data.masks.paste_known``). With probability ``p_full`` the whole image is a hole
    (m = 0), which trains the unconditional field on the same network.

    Args:
        loss: an objective ``loss(model, x_1, cond, generator) -> (B,)``, e.g.
            ``FlowMatchingLoss()``.
        masks: ``masks(n, size, generator) -> (n, 1, size, size)`` in {0, 1}; default
            ``box_masks`` (one rectangular hole, 30-70% of the side).
        p_full: share of examples trained with no known pixel at all.

    References:
        Flow Matching in Latent Space (Dao et al., 2023), arXiv:2307.08698, Sec. 3.3.

    Example:
        >>> from flowforge.losses.fm import FlowMatchingLoss
        >>> loss = InpaintingLoss(FlowMatchingLoss())
        >>> field = lambda x, t, cond: torch.zeros_like(x) + cond[:, :1]
        >>> loss(field, torch.randn(4, 1, 8, 8), None, torch.Generator().manual_seed(0)).shape
        torch.Size([4])
    """

    def __init__(
        self,
        loss: Callable[..., Tensor],
        masks: Callable[[int, int, torch.Generator | None], Tensor] | None = None,
        p_full: float = 0.0,
    ) -> None:
        if not 0.0 <= p_full <= 1.0:
            raise ValueError(f"p_full={p_full!r} must be a probability in [0, 1].")
        self.loss = loss
        self.masks = box_masks if masks is None else masks
        self.p_full = float(p_full)

    def __call__(
        self,
        model: Field,
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Args: x_1: (B, C, H, W) images; cond: must be None (the masks are the condition)."""
        if cond is not None:
            raise ValueError(
                "InpaintingLoss builds the condition from the images; the data must not carry "
                f"one (got cond of type {type(cond).__name__}); drop the labels from the data."
            )
        if x_1.dim() != 4 or x_1.shape[-1] != x_1.shape[-2]:
            raise ValueError(
                f"x_1 has shape {tuple(x_1.shape)}; inpainting needs square images (B, C, H, W)."
            )
        B = x_1.shape[0]
        m = self.masks(B, x_1.shape[-1], generator)  # (B, 1, H, W), on the generator's device
        full = torch.rand(B, generator=generator, device=m.device) < self.p_full  # (B,)
        m = torch.where(full.view(B, 1, 1, 1), torch.zeros_like(m), m).to(x_1.device)
        return self.loss(model, x_1, inpainting_condition(x_1, m), generator)
