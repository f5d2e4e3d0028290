"""A Diffusion Transformer (DiT) velocity field with adaLN-Zero blocks.

Full definition in one file, like nanoGPT's ``model.py`` (Peebles & Xie, 2023):

    z_0 = Patchify([x, m]) + P                       p x p patches as tokens, (B, L, D), fixed
                                                     2-D sin-cos positions P
    c   = MLP(e(t)) + c(y)                           time and class embedding, (B, D)
    z_l = z + g_1 * Attn(LN(z) (1 + s_1) + b_1)      adaLN-Zero block, (s, b, g) = Linear(SiLU(c))
        + g_2 * MLP(...)                             with the modulation Linear zero-initialised
    v   = Unpatchify(Linear(LN(z) (1 + s) + b))      final layer, zero-initialised

Because every gate g and the final linear start at zero, the initial output is exactly 0 and
each block starts as the identity (the paper's adaLN-Zero, Sec. 3.2). ``cond`` is read as in
``UNetField``: None, integer labels (B,) in [0, K] (K the null class), float channels
(B, cond_channels, H, W) concatenated to x, or an ``ImageCond`` with both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.models.layers import ImageCond, SinusoidalEmbedding, check_image, parse_image_cond

__all__ = ["DiTConfig", "DiTField", "sincos_pos_embed_2d"]


def sincos_pos_embed_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sin-cos positional embedding of a grid x grid patch layout (MAE/DiT).

    Half of the features encode the row, half the column, each as [sin(p w_i), cos(p w_i)]
    with w_i = 10000^(-i / (dim / 4)), i = 0..dim/4 - 1; tokens are in row-major order.

    Args:
        dim: D, features per token (a multiple of 4).
        grid: patches per side.

    Returns:
        (grid * grid, D) embedding in float64.

    References:
        Masked Autoencoders Are Scalable Vision Learners (He et al., 2022), arXiv:2111.06377.

    Example:
        >>> sincos_pos_embed_2d(8, 2).shape
        torch.Size([4, 8])
    """
    if dim % 4:
        raise ValueError(f"dim={dim!r} must be a multiple of 4 for a 2-D sin-cos embedding.")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # (D/4,)
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")

    def embed(p: Tensor) -> Tensor:
        a = p.reshape(-1, 1) * omega  # (L, D/4)
        return torch.cat([torch.sin(a), torch.cos(a)], dim=1)  # (L, D/2)

    # MAE's get_2d_sincos_pos_embed: grid[0] is the column (w) index, embedded first
    return torch.cat([embed(cols), embed(rows)], dim=1)  # (L, D)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]  # (B, L, D)


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.qkv, self.proj = nn.Linear(hidden, 3 * hidden), nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, width), nn.GELU(approximate="tanh"), nn.Linear(width, hidden)
        )
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(c).chunk(6, dim=1)
        B, L, D = z.shape
        qkv = self.qkv(_modulate(self.norm1(z), shift1, scale1))  # (B, L, 3D)
        q, k, v = qkv.reshape(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, D)
        z = z + gate1[:, None] * self.proj(a)
        return z + gate2[:, None] * self.mlp(_modulate(self.norm2(z), shift2, scale2))


@dataclass
class DiTConfig:
    """Hyperparameters of ``DiTField``.

    Args:
        in_channels: C, channels of x.
        cond_channels: channels concatenated to x (masks, masked images); 0 for none.
        input_size: H = W, the image side the model is built for.
        patch_size: p, side of a patch; must divide ``input_size``.
        hidden: D, token width (a multiple of 4 and of ``heads``).
        depth: number of adaLN-Zero blocks.
        heads: attention heads.
        mlp_ratio: MLP width / D.
        num_classes: K labels for class conditioning; 0 builds a model without labels.
        learn_sigma: also output C extra channels (DiT's learned variance); the output then
            has 2C channels, the first C being the field.
        n_times: times per example; t is (B,) for 1, else (B, n_times) (a flow map's (s, t)),
            each time with its own sinusoidal features, concatenated before the time MLP.
        time_scale: factor on t before the sinusoids (1000: diffusion-step frequencies); a
            small value (e.g. 1) gives smooth features, which methods differentiating the
            network in t (MeanFlow's JVP target) need.

    Example:
        >>> cfg = DiTConfig(input_size=8, hidden=32, depth=1, num_classes=10)
        >>> DiTField(cfg)(torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 10])).shape
        torch.Size([2, 1, 8, 8])
    """

    in_channels: int = 1
    cond_channels: int = 0
    input_size: int = 16
    patch_size: int = 2
    hidden: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 0
    learn_sigma: bool = False
    n_times: int = 1
    time_scale: float = 1000.0


class DiTField(nn.Module):
    """A DiT velocity field ``v(x, t, cond)`` for images (B, C, H, W) of a fixed size.

    Args:
        config: the ``DiTConfig``.

    References:
        Scalable Diffusion Models with Transformers (Peebles & Xie, 2023), arXiv:2212.09748.
        Classifier-Free Diffusion Guidance (Ho & Salimans, 2022), arXiv:2207.12598 (null class).

    Example:
        >>> net = DiTField(DiTConfig(input_size=8, hidden=32, depth=2, cond_channels=1))
        >>> x, m = torch.randn(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
        >>> net(x, torch.rand(2), m).abs().max().item()  # adaLN-Zero: exactly 0 at init
        0.0
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        c = config
        for name in (
            "in_channels",
            "input_size",
            "patch_size",
            "hidden",
            "depth",
            "heads",
            "n_times",
        ):
            if getattr(c, name) < 1:
                raise ValueError(f"DiTConfig.{name}={getattr(c, name)!r} must be >= 1.")
        for name in ("cond_channels", "num_classes"):
            if getattr(c, name) < 0:
                raise ValueError(
                    f"DiTConfig.{name}={getattr(c, name)!r} must be >= 0 (0 disables it)."
                )
        if c.input_size % c.patch_size:
            raise ValueError(
                f"DiTConfig.patch_size={c.patch_size} does not divide input_size="
                f"{c.input_size}; choose a patch size that divides the image side."
            )
        lcm = math.lcm(4, c.heads)
        if c.hidden % lcm:
            raise ValueError(
                f"DiTConfig.hidden={c.hidden} must be a multiple of 4 (2-D sin-cos positions) "
                f"and of heads={c.heads}; e.g. hidden={lcm * math.ceil(c.hidden / lcm)}."
            )
        if c.mlp_ratio <= 0:
            raise ValueError(f"DiTConfig.mlp_ratio={c.mlp_ratio!r} must be > 0.")
        self.config = c
        D, p = c.hidden, c.patch_size
        self.out_channels = c.in_channels * (2 if c.learn_sigma else 1)
        self.patch_embed = nn.Conv2d(c.in_channels + c.cond_channels, D, p, stride=p)
        pos = sincos_pos_embed_2d(D, c.input_size // p)[None]  # (1, L, D), fixed
        self.register_buffer("pos_embed", pos.to(torch.get_default_dtype()), persistent=False)
        self.time_embed = nn.Sequential(
            SinusoidalEmbedding(256, scale=c.time_scale),
            nn.Linear(c.n_times * 256, D),
            nn.SiLU(),
            nn.Linear(D, D),
        )
        self.class_embed = nn.Embedding(c.num_classes + 1, D) if c.num_classes > 0 else None
        self.blocks = nn.ModuleList([_Block(D, c.heads, c.mlp_ratio) for _ in range(c.depth)])
        self.norm_out = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.adaLN_out = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
        self.linear_out = nn.Linear(D, p * p * self.out_channels)
        self._init_weights()

    def _init_weights(self) -> None:
        # DiT's initialize_weights: Xavier linears, zero biases, N(0, 0.02) embeddings,
        # zero adaLN modulations and output layer (adaLN-Zero).
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.time_embed[1].weight, std=0.02)
        nn.init.normal_(self.time_embed[3].weight, std=0.02)
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)
        for layer in [b.adaLN[1] for b in self.blocks] + [self.adaLN_out[1], self.linear_out]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def null_class(self) -> int:
        """The label of the null (unconditional) class, ``num_classes``."""
        return self.config.num_classes

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | ImageCond | None = None) -> Tensor:
        """Args: x: (B, C, H, W) with H = W = input_size; t: (B,); cond: labels (B,), channels
        (B, C_c, H, W), ``ImageCond`` or None.

        Returns: (B, C, H, W) velocity ((B, 2C, H, W) with ``learn_sigma``).
        """
        c = self.config
        check_image(x, t, c.in_channels, "DiTConfig", c.n_times)
        if tuple(x.shape[2:]) != (c.input_size, c.input_size):
            raise ValueError(
                f"x has spatial size {tuple(x.shape[2:])} but the model was built with "
                f"DiTConfig.input_size={c.input_size}; pass {c.input_size}x{c.input_size} "
                f"images or rebuild the model with input_size={x.shape[2]} (square images)."
            )
        labels, channels = parse_image_cond(cond, x, c.num_classes, c.cond_channels, "DiTConfig")
        B, p, g = x.shape[0], c.patch_size, c.input_size // c.patch_size
        h = self.patch_embed(x if channels is None else torch.cat([x, channels], dim=1))
        z = h.flatten(2).transpose(1, 2)  # (B, L, D), row-major patches
        z = z + self.pos_embed.to(z.dtype)
        emb = self.time_embed(t.to(x.dtype))  # (B, D)
        if self.class_embed is not None:
            emb = emb + self.class_embed(labels).to(x.dtype)
        for block in self.blocks:
            z = block(z, emb)
        shift, scale = self.adaLN_out(emb).chunk(2, dim=1)
        z = self.linear_out(_modulate(self.norm_out(z), shift, scale))  # (B, L, p p C)
        z = z.reshape(B, g, g, p, p, self.out_channels)
        return torch.einsum("bhwpqc->bchpwq", z).reshape(B, self.out_channels, g * p, g * p)
