"""The baseline MLP velocity field for 2-D toys and flat tabular data.

Full definition in one file, like nanoGPT's ``model.py``:

    h_0 = [x, e(t), c(y)]                        input, time and class features concatenated
    h_l = act(W_l h_{l-1} + b_l), l = 1..depth   ``depth`` hidden layers of width ``hidden``
    v   = W_out h_depth + b_out                  output, reshaped to the shape of x

``e(t)`` is a ``SinusoidalEmbedding`` of ``time_embed_dim`` features, or the raw time as one extra
input when ``time_embed_dim = 0``; with ``num_classes = 0`` and ``activation = "selu"`` the latter
is exactly torchcfm's ``MLP(dim, w=hidden, time_varying=True)`` (same layers, same ``state_dict``
keys ``net.0.weight`` ...), so weights can be copied between the two. ``c(y)`` is a learned table
of ``num_classes + 1`` rows; row ``num_classes`` is the null class of classifier-free guidance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowforge.models.layers import (
    ACTIVATIONS,
    Activation,
    SinusoidalEmbedding,
    check_times,
    make_activation,
)
from flowforge.utils.checks import check_choice

__all__ = ["MLPConfig", "MLPField"]


@dataclass
class MLPConfig:
    """Hyperparameters of ``MLPField``.

    Args:
        dim: number of features D of one example (``x[0].numel()``).
        hidden: width of each hidden layer.
        depth: number of hidden layers (3 x 256 SiLU is "the baseline MLP" of the method cards).
        time_embed_dim: sinusoidal time features; 0 feeds the raw t as one extra input.
        num_classes: K labels for class conditioning; 0 builds an unconditional field.
        class_embed_dim: width of the learned class embedding (used only when num_classes > 0).
        activation: ``"silu"``, ``"relu"``, ``"gelu"`` or ``"selu"`` (torchcfm's choice).
        n_times: times per example; t is (B,) for 1, else (B, n_times) (a flow map's (s, t),
            MeanFlow's (r, t)), each time with its own features.

    Example:
        >>> cfg = MLPConfig(dim=2, hidden=64, time_embed_dim=0, activation="selu")  # torchcfm MLP
        >>> sum(p.numel() for p in MLPField(cfg).parameters())  # (3+1)64 + 2(64+1)64 + (64+1)2
        8706
    """

    dim: int = 2
    hidden: int = 256
    depth: int = 3
    time_embed_dim: int = 64
    num_classes: int = 0
    class_embed_dim: int = 32
    activation: Activation = "silu"
    n_times: int = 1


class MLPField(nn.Module):
    """A fully connected velocity field ``v(x, t, cond)`` with time and class inputs concatenated.

    v(x, t, y) = MLP([flatten(x), e(t), c(y)]), reshaped back to the shape of x. ``cond`` holds
    integer labels in [0, K]; label K (and ``cond=None``) is the null class, so the same network
    gives the conditional and the unconditional prediction for classifier-free guidance.

    Args:
        config: the ``MLPConfig``.

    References:
        Flow Matching for Generative Modeling (Lipman et al., 2023), arXiv:2210.02747.
        Improving and Generalizing Flow-Based Generative Models with Minibatch Optimal Transport
        (Tong et al., 2024), arXiv:2302.00482 (torchcfm's ``MLP``: the ``time_embed_dim=0`` case).
        Classifier-Free Diffusion Guidance (Ho & Salimans, 2022), arXiv:2207.12598 (null class).

    Example:
        >>> net = MLPField(MLPConfig(dim=2, hidden=32, num_classes=3))
        >>> x, t = torch.randn(5, 2), torch.rand(5)
        >>> net(x, t, torch.tensor([0, 1, 2, 3, 0])).shape  # label 3 is the null class
        torch.Size([5, 2])
    """

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        c = config
        for name in ("dim", "hidden", "depth", "n_times"):
            if getattr(c, name) < 1:
                raise ValueError(f"MLPConfig.{name}={getattr(c, name)!r} must be >= 1.")
        for name in ("time_embed_dim", "num_classes", "class_embed_dim"):
            if getattr(c, name) < 0:
                raise ValueError(
                    f"MLPConfig.{name}={getattr(c, name)!r} must be >= 0 (0 disables it)."
                )
        check_choice("MLPConfig.activation", c.activation, ACTIVATIONS)
        if c.num_classes > 0 and c.class_embed_dim < 1:
            raise ValueError(
                f"MLPConfig.class_embed_dim={c.class_embed_dim!r} with num_classes="
                f"{c.num_classes}; a conditional model needs class_embed_dim >= 1."
            )
        self.config = c
        self.time_embed = SinusoidalEmbedding(c.time_embed_dim) if c.time_embed_dim > 0 else None
        self.class_embed = (
            nn.Embedding(c.num_classes + 1, c.class_embed_dim) if c.num_classes > 0 else None
        )
        n_in = (
            c.dim
            + c.n_times * (c.time_embed_dim or 1)
            + (c.class_embed_dim if c.num_classes > 0 else 0)
        )
        layers: list[nn.Module] = [nn.Linear(n_in, c.hidden), make_activation(c.activation)]
        for _ in range(c.depth - 1):
            layers += [nn.Linear(c.hidden, c.hidden), make_activation(c.activation)]
        layers.append(nn.Linear(c.hidden, c.dim))
        self.net = nn.Sequential(*layers)

    @property
    def null_class(self) -> int:
        """The label of the null (unconditional) class, ``num_classes``."""
        return self.config.num_classes

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args: x: (B, ...) with D features; t: (B,) or (B, n_times); cond: (B,) labels in
        [0, K] or None.

        Returns: (B, ...) velocity, the shape of x.
        """
        c = self.config
        if x.dim() < 2:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; pass a batch of shape (B, ...) with "
                f"{c.dim} features per example (use x[None] for a single example)."
            )
        B, D = x.shape[0], x[0].numel()
        if D != c.dim:
            raise ValueError(
                f"x has shape {tuple(x.shape)} ({D} features per example) but the model was "
                f"built with MLPConfig.dim={c.dim}; pass {c.dim} features per example or "
                f"rebuild the model with dim={D}."
            )
        check_times(t, B, c.n_times, "MLPConfig")
        h = [x.reshape(B, c.dim)]  # (B, D)
        t = t.to(x.dtype)
        t_in = t.reshape(B, -1) if self.time_embed is None else self.time_embed(t)
        h.append(t_in)  # (B, n_times * E_t)
        if self.class_embed is not None:
            h.append(self.class_embed(self._labels(cond, B, x.device)).to(x.dtype))  # (B, E_c)
        elif cond is not None:
            raise ValueError(
                "cond was given but the model is unconditional (MLPConfig.num_classes=0); pass "
                "cond=None or build the model with num_classes > 0."
            )
        return self.net(torch.cat(h, dim=-1)).reshape(x.shape)

    def _labels(self, cond: Tensor | None, B: int, device: torch.device) -> Tensor:
        """Validated (B,) long labels; None means the null class for every example."""
        K = self.config.num_classes
        if cond is None:
            return torch.full((B,), K, dtype=torch.long, device=device)
        if cond.is_floating_point() or cond.is_complex() or cond.dtype == torch.bool:
            raise TypeError(
                f"cond has dtype {cond.dtype}; pass integer class labels (torch.long) in [0, {K}]."
            )
        if cond.shape != (B,):
            raise ValueError(
                f"cond has shape {tuple(cond.shape)}; pass one label per example, shape ({B},)."
            )
        bad = (cond < 0) | (cond > K)
        if bad.any():
            value = cond[bad][0].item()
            raise ValueError(
                f"cond contains label {value}, outside the valid range [0, {K}] (labels "
                f"0..{K - 1} are classes, {K} is the null class); remap the labels into it."
            )
        return cond.long()
