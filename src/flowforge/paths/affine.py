"""Affine Gaussian paths x_t = alpha_t x_1 + sigma_t x_0 and conversions between parameterisations.

Every affine path is defined by two scalar schedules with alpha_0 = 0, alpha_1 = 1 (data weight)
and sigma_0 = 1, sigma_1 = 0 (noise weight), and their time derivatives. With a standard Gaussian
source, a network may predict any one of four equivalent quantities at (x_t, t):

* ``velocity``  u = d alpha x_1_hat + d sigma x_0_hat (marginal velocity, Lipman et al. Eq. 13)
* ``x1``        x_1_hat = E[x_1 | x_t]
* ``epsilon``   x_0_hat = E[x_0 | x_t]
* ``score``     grad log p_t(x_t) = -x_0_hat / sigma_t (Tweedie)

``AffinePath.convert`` maps any one to any other through the pair (x_1_hat, x_0_hat).
"""

from __future__ import annotations

import abc
import math
from typing import Literal

import torch
from torch import Tensor

from flowforge.paths.base import PathSample, ProbPath
from flowforge.utils import check_choice, expand_like

__all__ = [
    "AffinePath",
    "CondOTPath",
    "CosinePath",
    "PolynomialPath",
    "VPPath",
    "Parameterization",
    "PARAMETERIZATIONS",
]

Parameterization = Literal["velocity", "x1", "epsilon", "score"]
PARAMETERIZATIONS: tuple[str, ...] = ("velocity", "x1", "epsilon", "score")


class AffinePath(ProbPath):
    """Abstract affine path x_t = alpha_t x_1 + sigma_t x_0, velocity d alpha x_1 + d sigma x_0.

    Subclasses define the schedule ``alpha(t)``, ``sigma(t)`` and its derivatives.

    References:
        Flow Matching for Generative Modeling (Lipman et al., 2023), arXiv:2210.02747.
        Flow Matching Guide and Code (Lipman et al., 2024), arXiv:2412.06264, Sec. 4.8.
    """

    @abc.abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """Data coefficient alpha_t, (B,) -> (B,)."""

    @abc.abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """Noise coefficient sigma_t, (B,) -> (B,)."""

    @abc.abstractmethod
    def d_alpha(self, t: Tensor) -> Tensor:
        """d alpha_t / dt, (B,) -> (B,)."""

    @abc.abstractmethod
    def d_sigma(self, t: Tensor) -> Tensor:
        """d sigma_t / dt, (B,) -> (B,)."""

    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor, validate: bool = True) -> PathSample:
        """Args: x_0, x_1: (B, ...); t: (B,). Returns: PathSample with x_t, dx_t of (B, ...)."""
        if validate:
            self._check(x_0, x_1, t)
        alpha_t, sigma_t = expand_like(self.alpha(t), x_1), expand_like(self.sigma(t), x_1)
        d_alpha, d_sigma = expand_like(self.d_alpha(t), x_1), expand_like(self.d_sigma(t), x_1)
        x_t = alpha_t * x_1 + sigma_t * x_0
        dx_t = d_alpha * x_1 + d_sigma * x_0
        return PathSample(x_t=x_t, dx_t=dx_t, t=t, x_0=x_0, x_1=x_1)

    def convert(
        self,
        pred: Tensor,
        x_t: Tensor,
        t: Tensor,
        source: Parameterization,
        target: Parameterization,
    ) -> Tensor:
        """Convert a prediction at (x_t, t) from one parameterisation to another.

        Singular points: ``x1`` from ``epsilon`` needs alpha_t > 0 (not t = 0); ``epsilon`` from
        ``x1`` and anything from ``score`` need sigma_t > 0 (not t = 1).

        Args:
            pred: (B, ...) the prediction in the ``source`` parameterisation.
            x_t: (B, ...) the state it was made at.
            t: (B,) times.
            source, target: one of ``"velocity"``, ``"x1"``, ``"epsilon"``, ``"score"``.

        Returns:
            (B, ...) the prediction in the ``target`` parameterisation.

        Example:
            >>> path = CondOTPath()
            >>> x_t, t, v = torch.randn(4, 2), torch.rand(4) * 0.9 + 0.05, torch.randn(4, 2)
            >>> x1 = path.convert(v, x_t, t, "velocity", "x1")
            >>> torch.allclose(path.convert(x1, x_t, t, "x1", "velocity"), v, atol=1e-5)
            True
        """
        check_choice("source", source, PARAMETERIZATIONS)
        check_choice("target", target, PARAMETERIZATIONS)
        if source == target:
            return pred
        alpha_t, sigma_t = expand_like(self.alpha(t), x_t), expand_like(self.sigma(t), x_t)
        d_alpha, d_sigma = expand_like(self.d_alpha(t), x_t), expand_like(self.d_sigma(t), x_t)
        # Recover the posterior-mean pair (x_1_hat, x_0_hat) from the source.
        if source == "velocity":
            # Solve [d_alpha d_sigma; alpha sigma] [x1; x0] = [u; x_t].
            det = d_alpha * sigma_t - d_sigma * alpha_t
            x_1 = (sigma_t * pred - d_sigma * x_t) / det
            x_0 = (d_alpha * x_t - alpha_t * pred) / det
        elif source == "x1":
            x_1 = pred
            x_0 = (x_t - alpha_t * x_1) / sigma_t
        else:
            # Tweedie: score = -x0_hat / sigma
            x_0 = pred if source == "epsilon" else -sigma_t * pred
            x_1 = (x_t - sigma_t * x_0) / alpha_t
        if target == "velocity":
            return d_alpha * x_1 + d_sigma * x_0
        if target == "x1":
            return x_1
        if target == "epsilon":
            return x_0
        return -x_0 / sigma_t


class CondOTPath(AffinePath):
    """Straight-line path x_t = t x_1 + (1 - t) x_0 (conditional OT / rectified flow).

    References:
        Flow Matching for Generative Modeling (Lipman et al., 2023), arXiv:2210.02747.
        Flow Straight and Fast (Liu et al., 2023), arXiv:2209.03003.

    Example:
        >>> s = CondOTPath().sample(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([0.25, 1.0]))
        >>> s.x_t[:, 0].tolist(), s.dx_t[0, 0].item()
        ([0.25, 1.0], 1.0)
    """

    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor, validate: bool = True) -> PathSample:
        """Args: x_0, x_1: (B, ...); t: (B,). Returns: PathSample with x_t, dx_t of (B, ...)."""
        if validate:
            self._check(x_0, x_1, t)
        dx_t = x_1 - x_0  # constant velocity: the generic alpha/sigma arithmetic is not needed
        x_t = torch.addcmul(x_0, expand_like(t, x_1), dx_t)  # x_0 + t (x_1 - x_0)
        return PathSample(x_t=x_t, dx_t=dx_t, t=t, x_0=x_0, x_1=x_1)

    def alpha(self, t: Tensor) -> Tensor:
        return t

    def sigma(self, t: Tensor) -> Tensor:
        return 1 - t

    def d_alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)


class CosinePath(AffinePath):
    """Trigonometric path alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2) (variance preserving).

    References:
        Improved Denoising Diffusion Probabilistic Models (Nichol & Dhariwal, 2021),
        arXiv:2102.09672.
        Stochastic Interpolants (Albergo et al., 2023), arXiv:2303.08797, trig interpolant.

    Example:
        >>> p = CosinePath(); t = torch.rand(5)
        >>> torch.allclose(p.alpha(t) ** 2 + p.sigma(t) ** 2, torch.ones(5))
        True
    """

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sin(0.5 * math.pi * t)

    def sigma(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def d_alpha(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * torch.cos(0.5 * math.pi * t)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)


class PolynomialPath(AffinePath):
    """Polynomial convex path alpha_t = t^n, sigma_t = 1 - t^n.

    Args:
        n: the exponent, > 0; n = 1 is the straight-line path.

    References:
        Flow Matching Guide and Code (Lipman et al., 2024), arXiv:2412.06264.

    Example:
        >>> PolynomialPath(2.0).alpha(torch.tensor([0.5])).item()
        0.25
    """

    def __init__(self, n: float = 2.0) -> None:
        if not n > 0:
            raise ValueError(f"n={n!r} must be a positive exponent (n = 1 is the straight path).")
        self.n = float(n)

    def alpha(self, t: Tensor) -> Tensor:
        return t**self.n

    def sigma(self, t: Tensor) -> Tensor:
        return 1 - t**self.n

    def d_alpha(self, t: Tensor) -> Tensor:
        return self.n * t ** (self.n - 1)

    def d_sigma(self, t: Tensor) -> Tensor:
        return -self.n * t ** (self.n - 1)


class VPPath(AffinePath):
    """Variance-preserving diffusion path with a linear noise rate beta(s), run with t = 0 noise.

    With s = 1 - t the diffusion time and T(s) = beta_min s + (beta_max - beta_min) s^2 / 2,
    alpha_t = exp(-T(1 - t) / 2) and sigma_t = sqrt(1 - alpha_t^2). As in score-based diffusion,
    alpha_0 = exp(-T(1)/2) is small but not exactly zero (about 6.6e-3 for the defaults).

    Args:
        beta_min, beta_max: the VP-SDE noise rates (0.1 and 20 in Song et al.).

    References:
        Score-Based Generative Modeling through SDEs (Song et al., 2021), arXiv:2011.13456.
        Flow Matching for Generative Modeling (Lipman et al., 2023), arXiv:2210.02747, Eq. 19.

    Example:
        >>> p = VPPath(); t = torch.rand(5)
        >>> torch.allclose(p.alpha(t) ** 2 + p.sigma(t) ** 2, torch.ones(5))
        True
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 <= beta_min <= beta_max:
            raise ValueError(
                f"beta_min={beta_min!r}, beta_max={beta_max!r}: need 0 <= beta_min <= beta_max."
            )
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def _T(self, s: Tensor) -> Tensor:
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2

    def _beta(self, s: Tensor) -> Tensor:
        return self.beta_min + (self.beta_max - self.beta_min) * s

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self._T(1 - t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(-self._T(1 - t)))

    def d_alpha(self, t: Tensor) -> Tensor:
        # d/dt exp(-T(1-t)/2) = beta(1-t)/2 * alpha_t
        return 0.5 * self._beta(1 - t) * self.alpha(t)

    def d_sigma(self, t: Tensor) -> Tensor:
        # sigma^2 = 1 - alpha^2  =>  d sigma = -alpha d alpha / sigma
        alpha_t = self.alpha(t)
        return -alpha_t * self.d_alpha(t) / self.sigma(t)
