"""Small tensor helpers used across the package."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["expand_like", "per_example", "randn_like_gen", "wider_float"]


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


def per_example(name: str, value: Tensor | float, x: Tensor) -> Tensor:
    """A scalar or per-example coefficient as a ``(B,)`` tensor in x's dtype and device.

    Args:
        name: the argument's name, for the error message.
        value: a Python number, a 0-d tensor or a ``(B,)`` tensor.
        x: the ``(B, ...)`` batch it applies to.

    Returns:
        (B,) tensor.

    Example:
        >>> per_example("sigma", 0.5, torch.zeros(3, 2)).tolist()
        [0.5, 0.5, 0.5]
    """
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if value.dim() == 0:
        value = value.expand(x.shape[0])
    if value.shape != (x.shape[0],):
        raise ValueError(
            f"{name} has shape {tuple(value.shape)} but x has batch size {x.shape[0]}; pass a "
            f"scalar or one value per example, shape ({x.shape[0]},)."
        )
    return value
