"""The normalizing-flow contract: an invertible map from data to a standard-normal latent.

    z, logdet = flow(x, cond)          # data -> latent, log|det dz/dx| per example (B,)
    x = flow.inverse(z, cond)          # latent -> data
    log p(x) = log N(z; 0, I) + logdet  # flow.log_prob(x, cond), nats per example
    x = flow.sample(n, cond, generator)
    x = flow.rsample(n, cond, generator)   # the same with gradients (reverse KL)

Every flow of this package (and the zuko adapters of ``flowforge.nf.zuko``) keeps it, so the
Boltzmann samplers and the recipes take any of them.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor, nn

__all__ = ["NormalizingFlow", "standard_normal_log_prob"]


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over all but the batch dimension: (B,).

    Example:
        >>> round(standard_normal_log_prob(torch.zeros(1, 2)).item(), 4)  # -log(2 pi)
        -1.8379
    """
    z = z.flatten(1)
    return -0.5 * z.square().sum(1) - 0.5 * z.shape[1] * math.log(2 * math.pi)


class NormalizingFlow(nn.Module, abc.ABC):
    """A bijection ``x <-> z`` with a standard-normal prior on ``z`` of shape ``event_shape``.

    Attributes:
        event_shape: the shape of one example (x and z alike).
    """

    event_shape: tuple[int, ...]

    @abc.abstractmethod
    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data (B, *event_shape) -> (z of the same shape, log|det dz/dx| of shape (B,))."""

    @abc.abstractmethod
    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        """Latent (B, *event_shape) -> data of the same shape."""

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """log p(x) in nats per example, (B,)."""
        z, logdet = self(x, cond)
        return standard_normal_log_prob(z) + logdet

    def sample(
        self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` samples: prior noise through ``inverse`` (B, *event_shape)."""
        param = next(self.parameters())
        z = torch.randn((n, *self.event_shape), generator=generator, dtype=param.dtype)
        return self.inverse(z.to(param.device), cond)

    def rsample(
        self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` reparameterised samples (gradients reach the weights; reverse KL): ``sample``
        when ``inverse`` is differentiable, as here; a flow whose decoder is not overrides it."""
        return self.sample(n, cond, generator)
