"""The causal transformer inside each autoregressive flow block, with a key/value cache.

Pre-norm blocks (LayerNorm, multi-head causal self-attention, LayerNorm, GELU MLP), as in the
reference TARFlow code. ``forward(h, cache)`` runs L new positions after the P positions held in
``cache`` (their keys and values, one pair per layer): the new queries attend to the cached
prefix and causally to each other. With an empty cache it is the plain causal pass over the
whole sequence; with one new position it is one step of sequential decoding. ``group=G`` makes
the attention block-causal: positions come in groups of G (a video's frames) that see their
own group in full and every earlier group.

References:
    Normalizing Flows are Capable Generative Models (Zhai et al., 2024), arXiv:2412.06329.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CausalTransformer", "KVCache"]


@dataclass
class KVCache:
    """Keys and values of the positions decoded so far, per layer: (B, heads, P, head_dim).

    Example:
        >>> cache = KVCache()
        >>> cache.length
        0
    """

    keys: list[Tensor] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list)

    @property
    def length(self) -> int:
        """P, the cached positions."""
        return 0 if not self.keys else self.keys[0].shape[2]

    def prefix(self, length: int) -> KVCache:
        """The cache of the first ``length`` positions (views)."""
        return KVCache(
            [k[:, :, :length] for k in self.keys], [v[:, :, :length] for v in self.values]
        )


class _Attention(nn.Module):
    def __init__(self, width: int, head_dim: int) -> None:
        super().__init__()
        if width % head_dim:
            raise ValueError(f"width={width} is not a multiple of head_dim={head_dim}.")
        self.heads = width // head_dim
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(
        self, h: Tensor, past: tuple[Tensor, Tensor] | None, group: int = 1
    ) -> tuple[Tensor, ...]:
        B, L, W = h.shape
        q, k, v = self.qkv(self.norm(h)).view(B, L, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        if past is not None:  # (B, heads, P, d) before the L new positions
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        P = k.shape[2] - L
        if P + L <= group:  # one group attends to itself only (a softmax of one score is 1)
            if P + L == 1:
                out = v.transpose(1, 2).reshape(B, L, W)
                return self.proj(out), k, v
            mask = None
        elif group > 1:  # block-causal: a group sees itself and the groups before it
            q_group = torch.arange(P, P + L, device=h.device) // group
            k_group = torch.arange(P + L, device=h.device) // group
            mask = k_group[None, :] <= q_group[:, None]
        elif L == 1:
            mask = None  # one new query sees every position so far
        elif P == 0:
            mask = "causal"
        else:  # the prefix in full, the new positions causally
            mask = torch.ones(L, P + L, dtype=torch.bool, device=h.device).tril(P)
        if mask == "causal":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(B, L, W)  # (B, L, W)
        return self.proj(out), k, v


class _Layer(nn.Module):
    def __init__(self, width: int, head_dim: int, expansion: int) -> None:
        super().__init__()
        self.attention = _Attention(width, head_dim)
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, expansion * width), nn.GELU(), nn.Linear(expansion * width, width)
        )

    def forward(self, h: Tensor, past, group: int = 1):
        a, k, v = self.attention(h, past, group)
        h = h + a
        return h + self.mlp(self.norm(h)), k, v


class CausalTransformer(nn.Module):
    """``layers`` pre-norm causal attention layers of ``width`` channels.

    Args:
        width: the token width.
        layers: how many layers.
        head_dim: channels per attention head.
        expansion: MLP hidden width as a multiple of ``width``.

    Example:
        >>> net = CausalTransformer(16, layers=2, head_dim=8)
        >>> h = torch.randn(3, 5, 16)
        >>> full, _ = net(h)
        >>> first, cache = net(h[:, :4])
        >>> last, _ = net(h[:, 4:], cache)  # the fifth position after a cached prefix of four
        >>> torch.allclose(full[:, 4:], last, atol=1e-6)
        True
    """

    def __init__(self, width: int, layers: int, head_dim: int = 32, expansion: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Layer(width, head_dim, expansion) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(
        self, h: Tensor, cache: KVCache | None = None, group: int = 1
    ) -> tuple[Tensor, KVCache]:
        """Run the positions ``h`` (B, L, W) after those in ``cache``; returns the outputs
        (B, L, W) and the cache extended by these positions. ``group`` > 1: block-causal
        attention over groups of that many positions (the cache and L whole groups)."""
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            past = None if cache is None or cache.length == 0 else (cache.keys[i], cache.values[i])
            h, k, v = layer(h, past, group)
            keys.append(k)
            values.append(v)
        return self.norm(h), KVCache(keys, values)
