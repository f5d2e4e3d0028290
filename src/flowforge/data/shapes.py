"""Procedural shapes: RGB images of circles, squares and triangles with per-pixel class masks.

For mask conditioning, inpainting, segmentation and joint image/mask flows. Every image has a
plain background colour and 1..3 shapes painted one after another, so later shapes occlude
earlier ones. Shapes are drawn without anti-aliasing: a pixel belongs to a shape when its centre
lies inside it, so the mask is exactly the set of pixels painted in that shape's colour (the
topmost shape where shapes overlap). Background channels are drawn in [-1, -0.6] and shape
channels in [-0.2, 1], so every shape differs from the background by at least 0.4 in every
channel.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["SHAPE_CLASSES", "make_shapes", "rasterise_shapes"]

SHAPE_CLASSES: tuple[str, ...] = ("background", "circle", "square", "triangle")


def rasterise_shapes(
    kinds: Tensor, centres: Tensor, radii: Tensor, colours: Tensor, background: Tensor, size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Paint S shapes per image, in order, onto a plain background (vectorised over images).

    Pixel (i, j) has centre (x, y) = (j + 0.5, i + 0.5). With centre (c_x, c_y) and radius r:
    circle (x - c_x)^2 + (y - c_y)^2 <= r^2 (area pi r^2); square max(|x - c_x|, |y - c_y|) <= r
    (side 2r, area 4 r^2); triangle with apex (c_x, c_y - r) and base from (c_x - r, c_y + r) to
    (c_x + r, c_y + r), i.e. 2 |x - c_x| <= y - c_y + r <= 2r (area 2 r^2). A slot with kind 0 is
    empty and paints nothing.

    Args:
        kinds: (N, S) long, 0 (empty slot) or a class in 1..3 (see ``SHAPE_CLASSES``).
        centres: (N, S, 2) shape centres (x, y) in pixel units.
        radii: (N, S) half-sizes in pixel units.
        colours: (N, S, 3) shape colours.
        background: (N, 3) background colours.
        size: image height and width H = W.

    Returns:
        ``(images, masks, instances)``: images (N, 3, size, size); masks (N, size, size) long
        class of the topmost shape (0: background); instances (N, size, size) long slot index
        of the topmost shape, -1 on the background.

    Example:
        >>> k, c, r = torch.tensor([[1]]), torch.tensor([[[4.0, 4.0]]]), torch.tensor([[2.0]])
        >>> img, mask, inst = rasterise_shapes(k, c, r, torch.ones(1, 1, 3), -torch.ones(1, 3), 8)
        >>> int(mask.sum()), int((img[:, 0] == 1).sum())
        (12, 12)
    """
    N, S = kinds.shape
    coords = torch.arange(size, dtype=centres.dtype, device=centres.device) + 0.5  # (W,)
    y, x = coords.view(1, size, 1), coords.view(1, 1, size)  # (1, H, 1), (1, 1, W)
    images = background.view(N, 3, 1, 1).expand(N, 3, size, size).clone()  # (N, 3, H, W)
    masks = torch.zeros(N, size, size, dtype=torch.long, device=kinds.device)
    instances = torch.full((N, size, size), -1, dtype=torch.long, device=kinds.device)
    for s in range(S):
        c_x = centres[:, s, 0].view(N, 1, 1)
        c_y = centres[:, s, 1].view(N, 1, 1)
        r = radii[:, s].view(N, 1, 1)
        dx, dy = x - c_x, y - c_y  # (N, 1, W), (N, H, 1)
        circle = dx.square() + dy.square() <= r.square()  # (N, H, W)
        square = (dx.abs() <= r) & (dy.abs() <= r)
        triangle = (2 * dx.abs() <= dy + r) & (dy <= r)
        k = kinds[:, s].view(N, 1, 1)
        inside = ((k == 1) & circle) | ((k == 2) & square) | ((k == 3) & triangle)  # (N, H, W)
        images = torch.where(inside.unsqueeze(1), colours[:, s].view(N, 3, 1, 1), images)
        masks = torch.where(inside, k, masks)
        instances = torch.where(inside, torch.full_like(instances, s), instances)
    return images, masks, instances


def make_shapes(
    n: int,
    size: int = 32,
    generator: torch.Generator | None = None,
    num_shapes: tuple[int, int] = (1, 3),
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``n`` images of random shapes with their segmentation masks and a class label.

    Per image: a shape count uniform in ``num_shapes`` (inclusive), then per shape a class
    uniform in {circle, square, triangle}, a radius uniform in [size / 10, size / 4], a centre
    uniform over positions that keep the shape inside the image, and a colour uniform in
    [-0.2, 1]^3 on a background uniform in [-1, -0.6]^3; shapes are painted in order by
    ``rasterise_shapes``. The label is the class of the shape with the most visible pixels (the
    earliest one on a tie), which for a single shape is its class.

    Args:
        n: number of images.
        size: height and width in pixels, >= 8.
        generator: random generator (CPU); the same seed gives the same images.
        num_shapes: (min, max) shapes per image, 1 <= min <= max.

    Returns:
        ``(images, masks, labels)``: images (n, 3, size, size) float32 in [-1, 1]; masks
        (n, size, size) int64 in 0..3 indexing ``SHAPE_CLASSES``; labels (n,) int64 in 1..3.

    Example:
        >>> x, m, y = make_shapes(4, generator=torch.Generator().manual_seed(0))
        >>> tuple(x.shape), tuple(m.shape), bool(((m == y.view(4, 1, 1)).flatten(1).any(1)).all())
        ((4, 3, 32, 32), (4, 32, 32), True)
    """
    lo, hi = num_shapes
    if not 1 <= lo <= hi:
        raise ValueError(f"num_shapes={num_shapes!r} must satisfy 1 <= min <= max, e.g. (1, 3).")
    if size < 8:
        raise ValueError(f"size={size!r} is too small to draw shapes on; pass size >= 8.")
    if n < 1:
        raise ValueError(f"n={n!r} must be a positive number of images.")
    f32 = torch.float32

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, dtype=f32)

    count = torch.randint(lo, hi + 1, (n,), generator=generator)  # (n,)
    kinds = torch.randint(1, 4, (n, hi), generator=generator)  # (n, S)
    kinds = torch.where(torch.arange(hi) < count.view(n, 1), kinds, 0)  # empty slots -> 0
    radii = size / 10 + (size / 4 - size / 10) * rand(n, hi)  # (n, S)
    centres = radii.unsqueeze(-1) + (size - 2 * radii.unsqueeze(-1)) * rand(n, hi, 2)  # (n,S,2)
    colours = -0.2 + 1.2 * rand(n, hi, 3)  # (n, S, 3)
    background = -1.0 + 0.4 * rand(n, 3)  # (n, 3)
    images, masks, instances = rasterise_shapes(kinds, centres, radii, colours, background, size)
    # Visible area of each slot; the label is the class of the largest visible shape.
    area = torch.stack([(instances == s).flatten(1).sum(1) for s in range(hi)], 1)  # (n, S)
    largest = area.argmax(1)  # first maximum on ties
    labels = kinds.gather(1, largest.view(n, 1)).squeeze(1)  # (n,)
    return images, masks, labels
