"""A user's own folder of images (PNG/JPEG/BMP via Pillow) as an (N, C, H, W) tensor in [-1, 1].

Two layouts: a flat folder of images (no labels), or one subfolder per class (labels 0..K-1 in
the sorted order of the subfolder names). Errors name the offending files and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFolder",
    "check_masks",
    "folder_has_classes",
    "load_image_folder",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp")
_MODES = {"1": 1, "L": 1, "LA": 1, "P": 3, "RGB": 3, "RGBA": 3}  # 8-bit modes -> channels


class ImageFolder(NamedTuple):
    """What ``load_image_folder`` returns: images (N, C, H, W) float32 in [-1, 1], labels (N,)
    int64 (None for a flat folder) and the class names (subfolder names; empty when flat)."""

    images: Tensor
    labels: Tensor | None
    classes: tuple[str, ...]


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def folder_has_classes(path: str | os.PathLike) -> bool:
    """Whether an image folder holds one subfolder of images per class (else it is flat).

    Example:
        >>> import tempfile, pathlib
        >>> folder_has_classes(tempfile.mkdtemp())
        False
    """
    folder = Path(path)
    return any(
        p.is_dir() and not p.name.startswith(".") and _image_files(p) for p in folder.iterdir()
    )


def _read(path: Path, size: int | None, channels: int | None) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in _MODES:
                raise ValueError(
                    f"{path}: image mode {im.mode!r} is not supported; save it as 8-bit "
                    "grayscale or RGB."
                )
            c = channels if channels is not None else _MODES[im.mode]
            im = im.convert("L" if c == 1 else "RGB")  # alpha is dropped
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(
            f"{path}: cannot be read as an image ({type(e).__name__}: {e}); the file is corrupt "
            "or not an image; delete or re-export it."
        ) from e
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W)


def load_image_folder(
    path: str | os.PathLike,
    size: int | None = None,
    channels: Literal[1, 3] | None = None,
    option_names: Mapping[str, str] | None = None,
) -> ImageFolder:
    """Load every image in a folder (flat, or one subfolder per class) as a tensor in [-1, 1].

    8-bit values v map to x = v / 127.5 - 1. Files are read in sorted name order; hidden files
    and files without an image extension are ignored. Class subfolders are sorted by name and
    numbered 0..K-1; a folder holding both images and class subfolders is an error.

    Args:
        path: the folder.
        size: if given, every image is resized to (size, size) with bilinear filtering (the
            aspect ratio is not kept); if None, all images must already share one size.
        channels: 1 (grayscale) or 3 (RGB) to convert every image; if None, images keep their
            own channel count (alpha dropped) and must all agree.
        option_names: how errors name ``size`` and ``channels`` (a command line passes its
            keys, e.g. ``{"size": "data.image_size"}``); default: the argument names.

    Returns:
        ``ImageFolder(images, labels, classes)``: images (N, C, H, W) float32 in [-1, 1];
        labels (N,) int64 or None for a flat folder; classes, the subfolder names.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: no images, mixed layout, mixed sizes or channel counts, unreadable file.

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> Image.new("L", (4, 4), 255).save(d / "a.png")
        >>> x, labels, classes = load_image_folder(d)
        >>> tuple(x.shape), x.max().item(), labels
        ((1, 1, 4, 4), 1.0, None)
    """
    names = {"size": "size", "channels": "channels", **(option_names or {})}
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"path={str(path)!r}: no such folder (absolute: {folder.resolve()})."
        )
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ValueError(f"size={size!r} must be a positive integer or None (keep sizes).")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels={channels!r} must be 1 (grayscale), 3 (RGB) or None.")
    top = _image_files(folder)
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_files = [(d.name, _image_files(d)) for d in subdirs]
    class_files = [(name, files) for name, files in class_files if files]
    if top and class_files:
        raise ValueError(
            f"{folder}: holds both images (e.g. {top[0].name}) and class subfolders with images "
            f"(e.g. {class_files[0][0]}/); put every image in a class subfolder, or none."
        )
    if not top and not class_files:
        raise ValueError(
            f"{folder}: no images found at the top level or in its subfolders; accepted "
            f"extensions: {', '.join(IMAGE_SUFFIXES)} (any case)."
        )
    if top:
        files, labels, classes = top, None, ()
    else:
        files = [f for _, fs in class_files for f in fs]
        counts = [len(fs) for _, fs in class_files]
        labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        classes = tuple(name for name, _ in class_files)
    arrays = [_read(f, size, channels) for f in files]
    first = arrays[0]
    for f, a in zip(files, arrays, strict=True):
        if a.shape[0] != first.shape[0]:
            raise ValueError(
                f"images have different channel counts: {files[0]} has {first.shape[0]} and "
                f"{f} has {a.shape[0]}; set {names['channels']}=1 (grayscale) or "
                f"{names['channels']}=3 (RGB) to convert them all."
            )
        if a.shape[1:] != first.shape[1:]:
            h0, w0 = first.shape[1:]
            h, w = a.shape[1:]
            raise ValueError(
                f"images have different sizes: {files[0]} is {w0}x{h0} (WxH) and {f} is {w}x{h}; "
                f"set {names['size']}=N (e.g. {names['size']}={min(h0, w0, h, w)}) to resize them "
                "all to a square."
            )
    x = torch.from_numpy(np.stack(arrays)) / 127.5 - 1.0  # (N, C, H, W) in [-1, 1]
    return ImageFolder(x, labels, classes)


def check_masks(images: Tensor, masks: Tensor, num_classes: int | None = None) -> None:
    """Raise ``ValueError`` unless ``masks`` (N, H, W) fits ``images`` (N, C, H, W).

    Args:
        images: (N, C, H, W) images.
        masks: (N, H, W) integer class masks.
        num_classes: if given, every mask value must lie in 0..num_classes - 1.

    Example:
        >>> check_masks(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long), 4)
    """
    if images.dim() != 4:
        raise ValueError(f"images has shape {tuple(images.shape)}; expected (N, C, H, W).")
    n, _, h, w = images.shape
    if tuple(masks.shape) != (n, h, w):
        raise ValueError(
            f"masks has shape {tuple(masks.shape)} but images has shape {tuple(images.shape)}; "
            f"masks must be (N, H, W) = {(n, h, w)}, one class index per pixel."
        )
    if masks.dtype.is_floating_point or masks.dtype == torch.bool:
        raise ValueError(f"masks has dtype {masks.dtype}; pass integer class indices (long).")
    if num_classes is not None and masks.numel():
        lo, hi = int(masks.min()), int(masks.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"masks hold class values in [{lo}, {hi}] but num_classes={num_classes}; values "
                f"must lie in 0..{num_classes - 1}."
            )
