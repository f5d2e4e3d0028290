"""Seeding helpers."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["seed_everything", "make_generator"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator | None:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``, or None when ``seed`` is None.

    Example:
        >>> g = make_generator(0)
        >>> torch.rand(1, generator=g).item() == torch.rand(1, generator=make_generator(0)).item()
        True
    """
    if seed is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
