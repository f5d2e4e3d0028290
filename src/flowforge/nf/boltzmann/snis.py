"""Self-normalised importance sampling with any normalizing flow as the proposal.

    x_i ~ q,  log w_i = -E(x_i) - log q(x_i),  filtered, then E_p[f] ~= sum_i w̄_i f(x_i)

``proposal`` is anything with ``sample(n, cond, generator)`` and ``log_prob(x, cond)`` (every
``NormalizingFlow`` of ``flowforge.nf``, the zuko adapters included; ``DiagonalGaussian`` for a
fixed proposal).

References:
    Amortized Sampling with Transferable Normalizing Flows (Tan et al., 2025), arXiv:2508.18175.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowforge.nf.base import NormalizingFlow
from flowforge.nf.boltzmann.energies import Energy
from flowforge.nf.boltzmann.weights import Weights, importance_weights, multinomial_resample

__all__ = ["DiagonalGaussian", "ImportanceSamples", "StandardizedFlow", "proposal_samples", "snis"]


class DiagonalGaussian(NormalizingFlow):
    """N(mean, diag(std^2)) as a flow: z = (x - mean) / std (a fixed or trainable proposal).

    Example:
        >>> q = DiagonalGaussian(torch.zeros(2), torch.full((2,), 3.0))
        >>> round(q.log_prob(torch.zeros(1, 2)).item(), 4)  # -log(2 pi 9)
        -4.0351
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        if (std <= 0).any():
            raise ValueError(f"std={std.tolist()} must be positive.")
        dtype = torch.get_default_dtype()
        self.mean = nn.Parameter(mean.to(dtype).clone())
        self.log_std = nn.Parameter(std.to(dtype).log())
        self.event_shape = tuple(mean.shape)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z = (x - self.mean) * torch.exp(-self.log_std)
        return z, -self.log_std.sum().expand(len(x))

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.mean + z * torch.exp(self.log_std)


class StandardizedFlow(NormalizingFlow):
    """A flow on standardised coordinates: x = mean + std * f^-1(z), so a flow initialised
    near the identity starts at the target's scale (GMM-40 spans [-40, 40]).

    log q(x) = log q_f((x - mean) / std) - sum log std.

    Args:
        flow: the flow on (D,) standardised vectors.
        mean, std: (D,) the affine map (buffers: saved with the weights).
    """

    def __init__(self, flow: NormalizingFlow, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.flow = flow
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())
        self.event_shape = tuple(flow.event_shape)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, logdet = self.flow((x - self.mean) / self.std, cond)
        return z, logdet - self.std.log().sum()

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.mean + self.std * self.flow.inverse(z, cond)

    def rsample(
        self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        return self.mean + self.std * self.flow.rsample(n, cond, generator)


@dataclass
class ImportanceSamples:
    """Proposal samples with their importance weights.

    Attributes:
        x: (n, D) samples of the proposal.
        weights: their filtered log-weights (``Weights``: ESS, log Z, expectations).
        energy: (n,) target energies E(x).
        log_q: (n,) proposal log-densities.
        evaluations: target energy evaluations spent (n).
    """

    x: Tensor
    weights: Weights
    energy: Tensor
    log_q: Tensor
    evaluations: int

    def resample(self, n: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """(n, D) samples drawn with the normalised weights (for buffers and plots)."""
        self.weights.check()
        return self.x[multinomial_resample(self.weights.log_w, n, generator)]


@torch.no_grad()
def proposal_samples(
    proposal,
    n: int,
    cond: Tensor | None = None,
    generator: torch.Generator | None = None,
    batch: int = 4096,
) -> tuple[Tensor, Tensor]:
    """``(x (n, D), log q(x) (n,))`` drawn in batches of ``batch`` (``cond``: one condition
    for all, shape (1, ...), or None)."""
    xs, log_qs = [], []
    for start in range(0, n, batch):
        m = min(batch, n - start)
        c = None if cond is None else cond.expand(m, *cond.shape[1:])
        x = proposal.sample(m, c, generator=generator)
        xs.append(x)
        log_qs.append(proposal.log_prob(x, c).double())
    return torch.cat(xs).flatten(1), torch.cat(log_qs)


def snis(
    proposal,
    target: Energy,
    n: int,
    cond: Tensor | None = None,
    energy_cutoff: float | None = None,
    quantile: float = 0.0,
    generator: torch.Generator | None = None,
    batch: int = 4096,
) -> ImportanceSamples:
    """Self-normalised importance sampling of ``target`` with ``n`` draws of ``proposal``.

    Args:
        proposal: a flow (``sample``, ``log_prob``) on (D,) vectors.
        target: the energy.
        n: proposal samples (= target energy evaluations).
        cond: (1, ...) the proposal's condition (a transferable flow's system), or None.
        energy_cutoff: drop samples with E above it.
        quantile: drop the top fraction of log-weights (the card's 0.002).
        generator: random source.
        batch: samples drawn per pass.

    Returns:
        ``ImportanceSamples``; NaN/inf energies get weight zero and are counted.

    Example:
        >>> from flowforge.nf.boltzmann.energies import GaussianMixture
        >>> gmm = GaussianMixture(modes=2, scale=1.0)
        >>> q = DiagonalGaussian(torch.zeros(2), torch.full((2,), 3.0))
        >>> out = snis(q, gmm, 20000, generator=torch.Generator().manual_seed(0))
        >>> abs(out.weights.log_z()[0] - gmm.log_z) < 0.05  # log Z = 0
        True
    """
    x, log_q = proposal_samples(proposal, n, cond, generator, batch)
    with torch.no_grad():
        e = torch.cat([target.energy(x[i : i + batch]) for i in range(0, n, batch)]).double()
    weights = importance_weights(-e, log_q, energy_cutoff, quantile)
    weights.history.append(weights.ess)
    return ImportanceSamples(x, weights, e, log_q, n)
