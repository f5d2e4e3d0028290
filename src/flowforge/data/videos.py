"""Procedural videos: one grey shape moving in a straight line, with its motion as the label.

Each video has F frames of size x size pixels in [-1, 1]: a black background (-1) and one
circle, square or triangle (``SHAPE_CLASSES`` 1..3, drawn by ``rasterise_shapes``) of a grey
level in [0.2, 1], moving by ``speed`` pixels per frame to the right, left, down or up (the
label, ``MOTIONS``). The start is drawn so that the shape stays inside the frame for the whole
video, so the true per-frame displacement is the label's velocity exactly: a check of temporal
consistency for generated videos (``motion_error``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flowforge.data.shapes import rasterise_shapes

__all__ = ["MOTIONS", "MovingShapes", "centroids", "motion_error", "moving_shapes"]

MOTIONS: tuple[str, ...] = ("right", "left", "down", "up")
_VELOCITY = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # (x, y) per frame


@dataclass
class MovingShapes:
    """A batch of videos (``moving_shapes``).

    Attributes:
        videos: (n, F, 1, size, size) in [-1, 1].
        labels: (n,) motion classes (index of ``MOTIONS``).
        kinds: (n,) shape classes in 1..3 (``SHAPE_CLASSES``).
        centres: (n, F, 2) the shape's centre (x, y) per frame, in pixels.
    """

    videos: Tensor
    labels: Tensor
    kinds: Tensor
    centres: Tensor


def moving_shapes(
    n: int,
    generator: torch.Generator | None = None,
    frames: int = 8,
    size: int = 16,
    speed: float = 1.0,
    radius: tuple[float, float] | None = None,
) -> MovingShapes:
    """``n`` seeded videos of one shape moving at constant velocity.

    Args:
        n: number of videos.
        generator: random source (the same seed gives the same videos).
        frames: F frames per video.
        size: frame height and width.
        speed: pixels per frame.
        radius: range of the shapes' half-size in pixels (default: 5/32 to 7/32 of the size,
            2.5 to 3.5 pixels at 16).

    Returns:
        ``MovingShapes`` (videos, motion labels, shape kinds, true centres).

    Example:
        >>> v = moving_shapes(4, torch.Generator().manual_seed(0))
        >>> v.videos.shape, v.labels.shape
        (torch.Size([4, 8, 1, 16, 16]), torch.Size([4]))
        >>> bool((v.centres[:, 1:] - v.centres[:, :-1]).abs().sum(-1).eq(1.0).all())
        True
    """
    if n < 1 or frames < 2:
        raise ValueError(f"n={n} and frames={frames} must be >= 1 and >= 2.")
    r_lo, r_hi = radius if radius is not None else (size * 5 / 32, size * 7 / 32)
    travel = speed * (frames - 1)
    if size - 2 * r_hi - travel < 0:
        raise ValueError(
            f"a shape of radius {r_hi} moving {travel:g} pixels does not fit a {size}-pixel "
            "frame; lower frames, speed or radius, or raise size."
        )

    def rand(*shape):
        return torch.rand(shape, generator=generator, dtype=torch.float32)

    labels = torch.randint(len(MOTIONS), (n,), generator=generator)
    kinds = torch.randint(1, 4, (n,), generator=generator)
    r = r_lo + (r_hi - r_lo) * rand(n)
    grey = 0.2 + 0.8 * rand(n)
    velocity = _VELOCITY[labels] * speed  # (n, 2)
    # start so that start + f v stays in [r, size - r] for every frame
    lo = r[:, None] - torch.minimum(velocity * (frames - 1), torch.zeros(n, 2, dtype=r.dtype))
    hi = (
        size
        - r[:, None]
        - torch.maximum(velocity * (frames - 1), torch.zeros(n, 2, dtype=r.dtype))
    )
    start = lo + (hi - lo) * rand(n, 2)
    f = torch.arange(frames, dtype=torch.float32)
    centres = start[:, None] + f[None, :, None] * velocity[:, None]  # (n, F, 2)
    N = n * frames
    images, _, _ = rasterise_shapes(
        kinds.repeat_interleave(frames)[:, None],
        centres.reshape(N, 1, 2),
        r.repeat_interleave(frames)[:, None],
        grey.repeat_interleave(frames)[:, None, None].expand(N, 1, 3),
        -torch.ones(N, 3, dtype=torch.float32),
        size,
    )
    videos = images[:, :1].reshape(n, frames, 1, size, size)
    return MovingShapes(videos, labels, kinds, centres)


def centroids(videos: Tensor) -> Tensor:
    """(n, F, 2) intensity-weighted centre (x, y) of each frame's bright pixels (above -1,
    weights x + 1), in pixels; the frame centre where a frame is empty."""
    n, F, _, H, W = videos.shape
    w = (videos[:, :, 0].clamp(-1, 1) + 1).double()  # (n, F, H, W)
    ys = torch.arange(H, dtype=torch.float64) + 0.5
    xs = torch.arange(W, dtype=torch.float64) + 0.5
    mass = w.sum((-1, -2)).clamp_min(1e-9)
    cx = (w * xs).sum((-1, -2)) / mass
    cy = (w * ys[:, None]).sum((-1, -2)) / mass
    empty = w.sum((-1, -2)) < 1e-6
    cx, cy = cx.masked_fill(empty, W / 2), cy.masked_fill(empty, H / 2)
    return torch.stack([cx, cy], -1)


def motion_error(
    videos: Tensor, labels: Tensor | None = None, speed: float = 1.0
) -> dict[str, float]:
    """How well videos follow their labels' motion: the mean distance (pixels) between each
    frame-to-frame centroid displacement and the label's velocity, and the share of videos whose
    mean displacement points the label's way (the largest projection). Without labels, each
    video is measured against the motion it follows best (and no direction is reported).

    Example:
        >>> v = moving_shapes(64, torch.Generator().manual_seed(0))
        >>> m = motion_error(v.videos, v.labels)
        >>> m["direction_accuracy"], m["displacement_error"] < 0.3
        (1.0, True)
    """
    c = centroids(videos)
    d = c[:, 1:] - c[:, :-1]  # (n, F - 1, 2)
    velocities = (_VELOCITY * speed).double()  # (4, 2)
    errors = (d[:, None] - velocities[None, :, None]).norm(dim=-1).mean(-1)  # (n, 4)
    if labels is None:
        return {"displacement_error": errors.min(1).values.mean().item()}
    err = errors.gather(1, labels.long()[:, None]).mean().item()
    scores = d.mean(1) @ velocities.T  # (n, 4): projection on each motion
    right = (scores.argmax(1) == labels).double().mean().item()
    return {"displacement_error": err, "direction_accuracy": right}
