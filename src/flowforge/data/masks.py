"""Known-pixel masks for inpainting and the channel condition built from them.

A mask is (B, 1, H, W) float with 1 where a pixel is known and 0 in the hole; the network sees
the masked image and the mask as extra channels, ``cat(x * m, 2 m - 1)`` (masked image in
[-1, 1], mask in {-1, +1}, the LFM convention), and the final sample pastes the known pixels
back so they are kept exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_masks", "inpainting_condition", "paste_known"]


def box_masks(
    n: int,
    size: int,
    generator: torch.Generator | None = None,
    min_side: float = 0.3,
    max_side: float = 0.7,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw ``n`` masks with one rectangular hole each (1 = known, 0 = hole).

    Per mask the hole's height and width are uniform integers in
    [round(min_side * size), round(max_side * size)] and its top-left corner is uniform over the
    positions that keep the hole inside the image.

    Args:
        n: number of masks.
        size: image side H = W.
        generator: random generator; masks are drawn on its device, and the same seed gives
            the same masks.
        min_side, max_side: hole side range as fractions of ``size``, 0 < min <= max <= 1.
        device: device of the returned masks (default: the generator's).

    Returns:
        (n, 1, size, size) float32 masks in {0, 1}.

    Example:
        >>> m = box_masks(2, 8, generator=torch.Generator().manual_seed(0))
        >>> tuple(m.shape), m.unique().tolist(), (m == 0).flatten(1).any(1).tolist()
        ((2, 1, 8, 8), [0.0, 1.0], [True, True])
    """
    if not 0 < min_side <= max_side <= 1:
        raise ValueError(
            f"min_side={min_side!r}, max_side={max_side!r} must satisfy 0 < min_side <= "
            "max_side <= 1 (fractions of the image side), e.g. 0.3 and 0.7."
        )
    if n < 1 or size < 2:
        raise ValueError(f"n={n!r} and size={size!r} must be >= 1 and >= 2.")
    lo, hi = max(1, round(min_side * size)), max(1, round(max_side * size))
    dev = generator.device if generator is not None else torch.device("cpu")
    h = torch.randint(lo, hi + 1, (n,), generator=generator, device=dev)  # (n,)
    w = torch.randint(lo, hi + 1, (n,), generator=generator, device=dev)
    top = (torch.rand(n, generator=generator, device=dev) * (size - h + 1)).long()  # 0..size-h
    left = (torch.rand(n, generator=generator, device=dev) * (size - w + 1)).long()
    rows = torch.arange(size, device=dev).view(1, size, 1)
    cols = torch.arange(size, device=dev).view(1, 1, size)
    hole = (
        (rows >= top.view(n, 1, 1))
        & (rows < (top + h).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < (left + w).view(n, 1, 1))
    )  # (n, H, W)
    return (~hole).float().unsqueeze(1).to(device if device is not None else dev)


def _check_known(x: Tensor, known: Tensor) -> None:
    if x.dim() != 4 or known.dim() != 4 or known.shape[1] != 1:
        raise ValueError(
            f"x has shape {tuple(x.shape)} and known {tuple(known.shape)}; pass images "
            "(B, C, H, W) and masks (B, 1, H, W) with 1 = known pixel."
        )
    if known.shape[0] != x.shape[0] or known.shape[2:] != x.shape[2:]:
        raise ValueError(
            f"known has shape {tuple(known.shape)} but the images have shape {tuple(x.shape)}; "
            f"pass one mask per image of shape ({x.shape[0]}, 1, {x.shape[2]}, {x.shape[3]})."
        )


def inpainting_condition(x: Tensor, known: Tensor) -> Tensor:
    """The channels an inpainting field is conditioned on: ``cat(x * m, 2 m - 1)``.

    Args:
        x: (B, C, H, W) images in [-1, 1] (only the known pixels are read).
        known: (B, 1, H, W) masks, 1 = known.

    Returns:
        (B, C + 1, H, W) condition channels.

    References:
        Flow Matching in Latent Space (Dao et al., 2023), arXiv:2307.08698, Sec. 3.3.

    Example:
        >>> c = inpainting_condition(torch.ones(1, 1, 2, 2), torch.tensor([[[[1.0, 0], [0, 1]]]]))
        >>> c[0, 0].tolist(), c[0, 1].tolist()
        ([[1.0, 0.0], [0.0, 1.0]], [[1.0, -1.0], [-1.0, 1.0]])
    """
    _check_known(x, known)
    known = known.to(x.dtype)
    return torch.cat([x * known, 2 * known - 1], dim=1)


def paste_known(x: Tensor, reference: Tensor, known: Tensor) -> Tensor:
    """``m * reference + (1 - m) * x``: generated pixels in the hole, reference ones elsewhere.

    Example:
        >>> m = torch.tensor([[[[1.0, 0.0]]]])
        >>> paste_known(torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2), m).tolist()
        [[[[1.0, 0.0]]]]
    """
    _check_known(x, known)
    if reference.shape != x.shape:
        raise ValueError(
            f"reference has shape {tuple(reference.shape)} but x has {tuple(x.shape)}; pass the "
            "known images at the samples' shape."
        )
    known = known.to(x.dtype)
    return torch.where(known > 0, reference.to(x.dtype), x)
