"""Building blocks shared by the model files: time embeddings and activations."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from flowforge.utils.checks import check_choice
from flowforge.utils.tensor import wider_float

__all__ = ["Activation", "ACTIVATIONS", "SinusoidalEmbedding", "make_activation"]

Activation = Literal["silu", "relu", "gelu", "selu"]
ACTIVATIONS: tuple[str, ...] = ("silu", "relu", "gelu", "selu")


def make_activation(name: Activation) -> nn.Module:
    """A fresh activation module for one of the ``Activation`` choices.

    ``"selu"`` is there so an ``MLPField`` can equal torchcfm's ``MLP`` layer for layer.

    Args:
        name: ``"silu"``, ``"relu"``, ``"gelu"`` or ``"selu"``.

    Returns:
        The matching ``nn.Module`` (parameter-free).

    Example:
        >>> make_activation("silu")
        SiLU()
    """
    check_choice("activation", name, ACTIVATIONS)
    if name == "silu":
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    return nn.SELU()


class SinusoidalEmbedding(nn.Module):
    """Transformer sinusoidal features of a time t in [0, 1].

    emb(t) = [cos(s t f_0), ..., cos(s t f_{h-1}), sin(s t f_0), ..., sin(s t f_{h-1})],
    f_i = max_period^(-i / h),  h = dim // 2,  s = ``scale`` (1000 by default),

    with one zero column appended when ``dim`` is odd. Times in [0, 1] are multiplied by ``scale``
    first so that the fastest frequency (f_0 = 1) turns through about 160 periods over [0, 1],
    as with the integer diffusion steps in [0, 1000) these features were designed for; without
    the scale every feature would be nearly linear in t. The layer has no parameters or buffers
    (frequencies are recomputed in float32 or wider on each call, so ``model.half()`` cannot
    round them), and adds nothing to a ``state_dict``.

    Args:
        dim: number of output features (>= 1).
        max_period: the slowest period, in units of scaled time.
        scale: the factor applied to t before the sinusoids.

    References:
        Attention Is All You Need (Vaswani et al., 2017), arXiv:1706.03762, Sec. 3.5.
        Denoising Diffusion Probabilistic Models (Ho et al., 2020), arXiv:2006.11239.

    Example:
        >>> emb = SinusoidalEmbedding(4)
        >>> emb(torch.zeros(3)).tolist()[0]  # cos(0) = 1, sin(0) = 0
        [1.0, 1.0, 0.0, 0.0]
    """

    def __init__(self, dim: int, max_period: float = 10000.0, scale: float = 1000.0) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim={dim!r} must be a positive number of features; pass dim >= 1.")
        if max_period <= 1:
            raise ValueError(
                f"max_period={max_period!r} must be > 1 (10000.0 is the usual value)."
            )
        self.dim, self.max_period, self.scale = dim, max_period, scale

    def forward(self, t: Tensor) -> Tensor:
        """Args: t: (B,) times in [0, 1]. Returns: (B, dim) features in t's float dtype."""
        dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
        wide = wider_float(dtype)
        half = self.dim // 2
        i = torch.arange(half, device=t.device, dtype=wide)
        freqs = torch.exp(-math.log(self.max_period) * i / half)  # (h,)
        args = self.scale * t.to(wide)[:, None] * freqs  # (B, h)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2h)
        if self.dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)  # (B, dim)
        return emb.to(dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period}, scale={self.scale}"
