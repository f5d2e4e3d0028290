"""Small tensor helpers used across the package."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["expand_like", "randn_like_gen", "wider_float"]


def expand_like(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-example tensor ``t`` of shape ``(B,)`` to ``(B, 1, ..., 1)`` matching ``x``.

    Example:
        >>> expand_like(torch.ones(3), torch.zeros(3, 4, 5)).shape
        torch.Size([3, 1, 1])
    """
    return t.reshape(-1, *([1] * (x.dim() - 1)))


def randn_like_gen(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``torch.randn_like`` that accepts a generator.

    Example:
        >>> randn_like_gen(torch.zeros(2, 3)).shape
        torch.Size([2, 3])
    """
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def wider_float(dtype: torch.dtype) -> torch.dtype:
    """The integration dtype for a model dtype: float32 or wider, never half.

    Example:
        >>> wider_float(torch.bfloat16)
        torch.float32
    """
    return torch.promote_types(dtype, torch.float32)
