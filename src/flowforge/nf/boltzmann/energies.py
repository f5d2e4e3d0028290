"""Target energies with known answers: p(x) = exp(-E(x)) / Z, E in units of kT.

    GaussianMixture    40 modes in 2-D (FAB's GMM-40): log Z = 0 exactly, exact samples
    ManyWell           D/2 independent double wells (x1^4 - b x1^2 - a x1 + x2^2 / 2): log Z by
                       1-D quadrature, exact samples by the quadrature's inverse CDF; (a, b) vary
                       for the transfer experiments
    DoubleWellParticles  DW-4: 4 particles in 2-D, a double-well pair potential
    LennardJones       LJ-13: 13 particles in 3-D, Lennard-Jones plus a harmonic pull to the
                       centre of mass

The particle energies are translation invariant; ``com_std`` adds a Gaussian on the centre of mass
so that the density is proper in Cartesian coordinates (the internal distribution is unchanged:
it factorises), which lets any flow on R^D be the proposal. Their references are long MALA runs
(``reference_samples``), seeded and cached.

References:
    Flow Annealed Importance Sampling Bootstrap (Midgley et al., 2023), arXiv:2208.01893 (GMM-40,
    ManyWell). Equivariant Flows: Exact Likelihood Generative Learning for Symmetric Densities
    (Köhler et al., 2020), arXiv:2006.02425 (DW-4, LJ-13).
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DoubleWellParticles",
    "Energy",
    "GaussianMixture",
    "LennardJones",
    "ManyWell",
    "energy_and_grad",
]

_F64 = torch.float64


class Energy(abc.ABC):
    """A target p(x) ∝ exp(-E(x)) on R^dim.

    Attributes:
        dim: D, coordinates per sample.
        log_z: log ∫ exp(-E(x)) dx when known (None: estimate it).
        exact: whether ``sample`` draws exact samples (else the reference is a long MCMC run).
        name: a short name for tables.
    """

    dim: int
    log_z: float | None = None
    exact: bool = False
    name: str = "energy"

    @abc.abstractmethod
    def energy(self, x: Tensor) -> Tensor:
        """E(x) of (B, D) samples: (B,), in kT, in x's dtype (non-finite where undefined)."""

    def settings(self) -> dict:
        """Keyword arguments that rebuild this energy where its defaults do not (saved with a
        run: e.g. a molecule's torsion cuts); {} by default."""
        return {}

    def log_prob(self, x: Tensor) -> Tensor:
        """Unnormalised log-density -E(x) (B,) (normalised when ``log_z`` is 0)."""
        return -self.energy(x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` exact samples (n, D); only for energies with ``exact``."""
        raise TypeError(
            f"{type(self).__name__} has no exact sampler; use reference_samples(energy, n) for "
            "a long MCMC reference."
        )


def energy_and_grad(energy, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(E(x) (B,), dE/dx (B, D))`` of any ``energy(x)`` callable, by autograd (no graph kept).

    Example:
        >>> e, g = energy_and_grad(lambda x: 0.5 * x.square().sum(1), torch.ones(2, 3))
        >>> e.tolist(), g[0].tolist()
        ([1.5, 1.5], [1.0, 1.0, 1.0])
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy(x)
        (grad,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), grad.detach()


class GaussianMixture(Energy):
    """Equal mixture of ``modes`` isotropic Gaussians with means uniform in [-scale, scale]^dim.

    The defaults are FAB's GMM-40 (40 modes in 2-D, means from seed 0, component std
    softplus(1) = 1.3133); E = -log p exactly, so log Z = 0. ``means`` (K, D) gives the
    centres instead (``eight_gaussians``: 8 on a circle of radius 4, std 0.5).

    Example:
        >>> gmm = GaussianMixture()
        >>> x = gmm.sample(50000, torch.Generator().manual_seed(0))
        >>> gmm.log_z, x.shape, round(gmm.energy(x).mean().item(), 1)  # the entropy, nats
        (0.0, torch.Size([50000, 2]), 6.9)
    """

    exact = True

    def __init__(
        self,
        modes: int = 40,
        dim: int = 2,
        scale: float = 40.0,
        std: float | None = None,
        seed: int = 0,
        means: Tensor | None = None,
    ) -> None:
        if means is None:
            g = torch.Generator().manual_seed(seed)
            means = (torch.rand((modes, dim), generator=g) - 0.5) * 2 * scale  # (K, D)
        self.means = means.to(torch.get_default_dtype())
        self.dim, self.log_z, self.name = self.means.shape[1], 0.0, f"gmm{len(self.means)}"
        self.std = F.softplus(torch.tensor(1.0)).item() if std is None else std

    def energy(self, x: Tensor) -> Tensor:
        means = self.means.to(x)
        d2 = (x[:, None, :] - means[None]).square().sum(-1)  # (B, K)
        log_norm = math.log(len(means)) + 0.5 * self.dim * math.log(2 * math.pi * self.std**2)
        return -(torch.logsumexp(-d2 / (2 * self.std**2), 1) - log_norm)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        k = torch.randint(len(self.means), (n,), generator=generator)
        return self.means[k] + self.std * torch.randn((n, self.dim), generator=generator)


class ManyWell(Energy):
    """``dim / 2`` independent copies of the 2-D double well (FAB's ManyWell-32 by default):

        E(x) = sum_pairs  x1^4 - b x1^2 - a x1 + x2^2 / 2,     a = 0.5, b = 6  (2^(dim/2) modes)

    log Z = (dim / 2) (log Z_1 + log sqrt(2 pi)) with Z_1 = ∫ exp(-x^4 + b x^2 + a x) dx by the
    trapezoid rule on 200001 points of [-8, 8] in float64; exact samples invert its CDF.

    Example:
        >>> well = ManyWell(dim=4)
        >>> round(well.log_z, 4)  # 2 * (log Z_1 + log sqrt(2 pi))
        20.587
    """

    exact = True

    def __init__(self, dim: int = 32, a: float = 0.5, b: float = 6.0) -> None:
        if dim < 2 or dim % 2:
            raise ValueError(f"dim={dim!r} must be an even number >= 2 (pairs of coordinates).")
        self.dim, self.a, self.b, self.name = dim, a, b, f"manywell{dim}"
        self._grid = torch.linspace(-8.0, 8.0, 200001, dtype=_F64)
        log_p = -(self._grid**4) + b * self._grid**2 + a * self._grid
        shift = log_p.max()
        p = torch.exp(log_p - shift)
        z_1 = torch.trapezoid(p, self._grid)
        self._cdf = torch.cumulative_trapezoid(p, self._grid) / z_1  # (G - 1,)
        log_z_1 = (torch.log(z_1) + shift).item()
        self.log_z = (dim // 2) * (log_z_1 + 0.5 * math.log(2 * math.pi))

    def energy(self, x: Tensor) -> Tensor:
        x_1, x_2 = x[:, 0::2], x[:, 1::2]  # (B, D/2) each
        return (x_1**4 - self.b * x_1**2 - self.a * x_1 + 0.5 * x_2**2).sum(1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        pairs = self.dim // 2
        u = torch.rand((n, pairs), generator=generator, dtype=_F64)
        i = torch.searchsorted(self._cdf, u).clamp_(1, len(self._cdf) - 1)
        lo, hi = self._cdf[i - 1], self._cdf[i]
        frac = ((u - lo) / (hi - lo).clamp_min(1e-300)).clamp_(0, 1)
        x_1 = self._grid[i] + frac * (self._grid[i + 1] - self._grid[i])
        x_2 = torch.randn((n, pairs), generator=generator, dtype=_F64)
        return torch.stack([x_1, x_2], -1).flatten(1).to(torch.get_default_dtype())


def _pair_distances(x: Tensor, particles: int, spatial: int) -> Tensor:
    """(B, P (P - 1) / 2) distances between the particles of flat (B, P * spatial) samples."""
    pos = x.view(len(x), particles, spatial)
    i, j = torch.triu_indices(particles, particles, 1, device=x.device)
    return (pos[:, i] - pos[:, j]).square().sum(-1).clamp_min(1e-12).sqrt()


def _com_energy(x: Tensor, particles: int, spatial: int, com_std: float) -> Tensor:
    """||centre of mass||^2 / (2 com_std^2): a proper Gaussian on the translation mode."""
    com = x.view(len(x), particles, spatial).mean(1)
    return com.square().sum(-1) / (2 * com_std**2)


class DoubleWellParticles(Energy):
    """DW-4: ``particles`` points in ``spatial``-D with the double-well pair potential

        E(x) = 1/(2 tau) sum_{i<j} a (d_ij - d0) + b (d_ij - d0)^2 + c (d_ij - d0)^4

    (a = 0, b = -4, c = 0.9, d0 = 4, tau = 1), plus the centre-of-mass Gaussian of ``com_std``.

    Example:
        >>> dw = DoubleWellParticles()
        >>> square = torch.tensor([[-2.0, -2.0, 2.0, -2.0, 2.0, 2.0, -2.0, 2.0]])  # side d0
        >>> round(dw.energy(square).item(), 3)  # only the diagonals are off d0
        -4.198
    """

    def __init__(
        self,
        particles: int = 4,
        spatial: int = 2,
        a: float = 0.0,
        b: float = -4.0,
        c: float = 0.9,
        d0: float = 4.0,
        tau: float = 1.0,
        com_std: float = 1.0,
    ) -> None:
        self.particles, self.spatial, self.dim = particles, spatial, particles * spatial
        self.a, self.b, self.c, self.d0, self.tau, self.com_std = a, b, c, d0, tau, com_std
        self.name = f"dw{particles}"

    def energy(self, x: Tensor) -> Tensor:
        r = _pair_distances(x, self.particles, self.spatial) - self.d0
        pair = self.a * r + self.b * r**2 + self.c * r**4
        com = _com_energy(x, self.particles, self.spatial, self.com_std)
        return pair.sum(1) / (2 * self.tau) + com


class LennardJones(Energy):
    """LJ-13: ``particles`` atoms in 3-D with the Lennard-Jones potential and a harmonic pull to
    the centre of mass (Köhler et al.), plus the centre-of-mass Gaussian of ``com_std``:

        E(x) = eps/tau sum_{i<j} ((r_m / d_ij)^12 - 2 (r_m / d_ij)^6)
               + oscillator/2 sum_i ||x_i - x_com||^2

    Example:
        >>> lj = LennardJones(particles=2)
        >>> pair = torch.tensor([[0.5, 0.0, 0.0, -0.5, 0.0, 0.0]])  # at r_m: the well depth
        >>> round(lj.energy(pair).item(), 4)  # -1 + 0.5 * (0.25 + 0.25)
        -0.75
    """

    def __init__(
        self,
        particles: int = 13,
        eps: float = 1.0,
        r_m: float = 1.0,
        tau: float = 1.0,
        oscillator: float = 1.0,
        com_std: float = 1.0,
    ) -> None:
        self.particles, self.spatial, self.dim = particles, 3, particles * 3
        self.eps, self.r_m, self.tau, self.oscillator, self.com_std = (
            eps,
            r_m,
            tau,
            oscillator,
            com_std,
        )
        self.name = f"lj{particles}"

    def energy(self, x: Tensor) -> Tensor:
        s6 = (self.r_m / _pair_distances(x, self.particles, 3)) ** 6
        lj = self.eps / self.tau * (s6**2 - 2 * s6).sum(1)
        pos = x.view(len(x), self.particles, 3)
        spread = (pos - pos.mean(1, keepdim=True)).square().sum((1, 2))
        com = _com_energy(x, self.particles, 3, self.com_std)
        return lj + 0.5 * self.oscillator * spread + com
