"""Small networks for blockwise flow matching on vectors: segment velocity nets and feature nets.

``SegmentMLP`` is one segment's velocity net V_k(x, t, y; h), the guidance features h entering
through adaLN (scale and shift of every hidden layer); ``FeatureMLP`` is the shared guidance net
G(x, t, y) -> h (and the feature residual network); ``random_feature_target`` is a fixed random
network standing in for a pretrained encoder's features in the alignment loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.models.layers import (
    ACTIVATIONS,
    Activation,
    SinusoidalEmbedding,
    make_activation,
)
from flowforge.utils import check_choice

__all__ = [
    "FeatureMLP",
    "FeatureMLPConfig",
    "SegmentMLP",
    "SegmentMLPConfig",
    "random_feature_target",
]


def _class_embedding(num_classes: int, width: int) -> nn.Embedding | None:
    return nn.Embedding(num_classes + 1, width) if num_classes > 0 else None  # row K: null class


def _labels(cond: Tensor | None, batch: int, num_classes: int, device: torch.device) -> Tensor:
    if cond is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    if cond.is_floating_point() or cond.shape != (batch,):
        raise ValueError(
            f"cond has shape {tuple(cond.shape)} and dtype {cond.dtype}; pass integer class "
            f"labels of shape ({batch},) in [0, {num_classes}] ({num_classes} is the null class)."
        )
    return cond.long()


@dataclass
class FeatureMLPConfig:
    """Hyperparameters of ``FeatureMLP`` (the guidance net G and the FRN on flat data).

    Args:
        dim: D, features of one example of x.
        out_dim: F, number of output features.
        hidden: width of each hidden layer.
        depth: number of hidden layers.
        time_embed_dim: sinusoidal time features (>= 1).
        num_classes: K labels (0: unconditional).
        class_embed_dim: width of the class embedding.
        activation: ``"silu"``, ``"relu"``, ``"gelu"`` or ``"selu"``.

    Example:
        >>> FeatureMLP(FeatureMLPConfig(dim=2, out_dim=8))(torch.randn(3, 2), torch.rand(3)).shape
        torch.Size([3, 8])
    """

    dim: int = 2
    out_dim: int = 16
    hidden: int = 128
    depth: int = 2
    time_embed_dim: int = 64
    num_classes: int = 0
    class_embed_dim: int = 32
    activation: Activation = "silu"


class FeatureMLP(nn.Module):
    """Features h = MLP([flatten(x), e(t), c(y)]) of shape (B, F): the guidance net G or the FRN.

    Args:
        config: the ``FeatureMLPConfig``.

    References:
        Blockwise Flow Matching (Park et al., NeurIPS 2025), arXiv:2510.21167 (G and FRN).

    Example:
        >>> net = FeatureMLP(FeatureMLPConfig(dim=4, out_dim=3, num_classes=2))
        >>> net(torch.randn(5, 2, 2), torch.rand(5), torch.tensor([0, 1, 2, 0, 1])).shape
        torch.Size([5, 3])
    """

    def __init__(self, config: FeatureMLPConfig) -> None:
        super().__init__()
        c = config
        for name in ("dim", "out_dim", "hidden", "depth", "time_embed_dim"):
            if getattr(c, name) < 1:
                raise ValueError(f"FeatureMLPConfig.{name}={getattr(c, name)!r} must be >= 1.")
        check_choice("FeatureMLPConfig.activation", c.activation, ACTIVATIONS)
        self.config = c
        self.time_embed = SinusoidalEmbedding(c.time_embed_dim)
        self.class_embed = _class_embedding(c.num_classes, c.class_embed_dim)
        n_in = c.dim + c.time_embed_dim + (c.class_embed_dim if c.num_classes > 0 else 0)
        layers: list[nn.Module] = []
        for i in range(c.depth):
            layers += [
                nn.Linear(n_in if i == 0 else c.hidden, c.hidden),
                make_activation(c.activation),
            ]
        layers.append(nn.Linear(c.hidden, c.out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args: x (B, ...) with D features; t (B,); cond (B,) labels or None. Returns: (B, F)."""
        B = x.shape[0]
        h = [x.reshape(B, -1), self.time_embed(t.to(x.dtype))]
        if self.class_embed is not None:
            h.append(self.class_embed(_labels(cond, B, self.config.num_classes, x.device)))
        elif cond is not None:
            raise ValueError(
                "cond was given but FeatureMLPConfig.num_classes=0; pass cond=None or build the "
                "net with num_classes > 0."
            )
        return self.net(torch.cat(h, dim=-1).to(x.dtype))


@dataclass
class SegmentMLPConfig:
    """Hyperparameters of ``SegmentMLP`` (one segment's velocity net V_k on flat data).

    Args:
        dim: D, features of one example.
        hidden: width H.
        depth: number of adaLN-modulated hidden layers.
        time_embed_dim: sinusoidal time features (>= 1).
        feature_dim: F, width of the guidance features h; 0 for a net without guidance.
        num_classes: K labels (0: unconditional).
        class_embed_dim: width of the class embedding.
        activation: ``"silu"``, ``"relu"``, ``"gelu"`` or ``"selu"``.

    Example:
        >>> net = SegmentMLP(SegmentMLPConfig(dim=2, hidden=32, feature_dim=4))
        >>> net(torch.randn(3, 2), torch.rand(3), None, torch.randn(3, 4)).shape
        torch.Size([3, 2])
    """

    dim: int = 2
    hidden: int = 128
    depth: int = 2
    time_embed_dim: int = 64
    feature_dim: int = 0
    num_classes: int = 0
    class_embed_dim: int = 32
    activation: Activation = "silu"


class SegmentMLP(nn.Module):
    """A velocity MLP whose time, class and guidance features enter by adaLN modulation.

    c = [e(t), c(y), h],  u_0 = W_in flatten(x),
    u_l = act(W_l (LN(u_{l-1}) (1 + s_l(c)) + b_l(c))),  l = 1..depth,  v = W_out u_depth,

    with (s_l, b_l) = A_l(SiLU(c)) (the card's pitfall: h is conditioning, not an extra input).

    Args:
        config: the ``SegmentMLPConfig``.

    References:
        Blockwise Flow Matching (Park et al., NeurIPS 2025), arXiv:2510.21167 (V_k, adaLN on
        concat(c, h)).
        Scalable Diffusion Models with Transformers (Peebles & Xie, 2023), arXiv:2212.09748.

    Example:
        >>> net = SegmentMLP(SegmentMLPConfig(dim=2, hidden=16))
        >>> net(torch.randn(4, 2), torch.rand(4)).shape
        torch.Size([4, 2])
    """

    def __init__(self, config: SegmentMLPConfig) -> None:
        super().__init__()
        c = config
        for name in ("dim", "hidden", "depth", "time_embed_dim"):
            if getattr(c, name) < 1:
                raise ValueError(f"SegmentMLPConfig.{name}={getattr(c, name)!r} must be >= 1.")
        if c.feature_dim < 0:
            raise ValueError(f"SegmentMLPConfig.feature_dim={c.feature_dim!r} must be >= 0.")
        check_choice("SegmentMLPConfig.activation", c.activation, ACTIVATIONS)
        self.config = c
        self.time_embed = SinusoidalEmbedding(c.time_embed_dim)
        self.class_embed = _class_embedding(c.num_classes, c.class_embed_dim)
        n_cond = c.time_embed_dim + c.feature_dim + (c.class_embed_dim if c.num_classes else 0)
        self.inp = nn.Linear(c.dim, c.hidden)
        self.norms = nn.ModuleList(
            nn.LayerNorm(c.hidden, elementwise_affine=False) for _ in range(c.depth)
        )
        self.mods = nn.ModuleList(nn.Linear(n_cond, 2 * c.hidden) for _ in range(c.depth))
        self.layers = nn.ModuleList(nn.Linear(c.hidden, c.hidden) for _ in range(c.depth))
        self.act = make_activation(c.activation)
        self.out = nn.Linear(c.hidden, c.dim)

    def forward(
        self, x: Tensor, t: Tensor, cond: Tensor | None = None, features: Tensor | None = None
    ) -> Tensor:
        """Args: x (B, ...) with D features; t (B,); cond (B,) labels or None; features (B, F)
        guidance features (None iff feature_dim = 0).

        Returns: (B, ...) velocity, the shape of x.
        """
        c, B = self.config, x.shape[0]
        if (features is None) != (c.feature_dim == 0):
            raise ValueError(
                f"features is {'None' if features is None else tuple(features.shape)} but "
                f"SegmentMLPConfig.feature_dim={c.feature_dim}; pass (B, F) features exactly "
                "when the net was built with feature_dim = F > 0."
            )
        cs = [self.time_embed(t.to(x.dtype))]  # (B, E_t)
        if self.class_embed is not None:
            cs.append(self.class_embed(_labels(cond, B, c.num_classes, x.device)))
        elif cond is not None:
            raise ValueError(
                "cond was given but SegmentMLPConfig.num_classes=0; pass cond=None or build the "
                "net with num_classes > 0."
            )
        if features is not None:
            cs.append(features.reshape(B, -1))
        z = F.silu(torch.cat(cs, dim=-1).to(x.dtype))  # (B, E)
        u = self.inp(x.reshape(B, -1))  # (B, H)
        for norm, mod, layer in zip(self.norms, self.mods, self.layers, strict=True):
            scale, shift = mod(z).chunk(2, dim=-1)  # adaLN
            u = self.act(layer(norm(u) * (1 + scale) + shift))
        return self.out(u).reshape(x.shape)


def random_feature_target(
    dim: int, out_dim: int = 32, hidden: int = 64, seed: int = 0
) -> nn.Module:
    """A fixed random 2-layer MLP T(x_1) -> (B, out_dim): the toy stand-in for DINOv2 features.

    Args:
        dim: D, features of one example (x is flattened).
        out_dim: width of the target features.
        hidden: hidden width.
        seed: seed of its weights (the global RNG is not touched).

    Returns:
        A frozen module in eval mode.

    Example:
        >>> random_feature_target(2, 8)(torch.randn(5, 2)).shape
        torch.Size([5, 8])
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Flatten(), nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, out_dim)
        )
    return net.eval().requires_grad_(False)
