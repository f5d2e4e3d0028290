"""The EDM denoising objective, with the Gaussian or the PFGM++ perturbation kernel."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from flowforge.paths.pfgmpp import PFGMPPKernel
from flowforge.utils import check_batch

__all__ = ["EDMLoss"]


class EDMLoss:
    """EDM denoiser regression, one value per example.

        ln sigma ~ N(p_mean, p_std^2),   y ~ p_sigma(y | x_1),
        L = lambda(sigma) mean_dims (D(y, sigma, c) - x_1)^2,
        lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2

    (Karras et al., Eq. 2 and Sec. 5). With the Gaussian kernel y = x_1 + sigma n this is EDM;
    with ``PFGMPPKernel(D)`` it is PFGM++ (Xu et al., Sec. 4: the network is still conditioned
    on sigma, r = sigma sqrt(D) only shapes the perturbation). lambda(sigma) makes the loss of
    the ideal denoiser on data N(0, sd^2 I) equal to 1 at every sigma (Gaussian kernel).

    Args:
        kernel: the perturbation kernel; None (default) is the Gaussian, ``PFGMPPKernel(inf)``.
        p_mean, p_std: the log-normal density of sigma (EDM: -1.2 and 1.2; p_std = 0 fixes
            sigma = exp(p_mean)).
        sigma_data: sd, the data standard deviation in lambda (use the denoiser's).

    References:
        Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022),
        arXiv:2206.00364 (code: NVlabs/edm ``training/loss.py``, ``EDMLoss``).
        PFGM++: Unlocking the Potential of Physics-Inspired Generative Models (Xu et al., 2023),
        arXiv:2302.04265 (code: Newbeeer/pfgmpp ``training/loss.py``).

    Example:
        >>> loss = EDMLoss(kernel=PFGMPPKernel(aug_dim=16))
        >>> denoiser = lambda y, sigma, cond=None: torch.zeros_like(y)
        >>> loss(denoiser, torch.randn(8, 2), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([8])
    """

    def __init__(
        self,
        kernel: PFGMPPKernel | None = None,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        sigma_data: float = 0.5,
    ) -> None:
        if not p_std >= 0:
            raise ValueError(f"p_std={p_std!r} must be >= 0 (EDM uses 1.2).")
        if not sigma_data > 0:
            raise ValueError(f"sigma_data={sigma_data!r} must be positive (EDM uses 0.5).")
        self.kernel = PFGMPPKernel(math.inf) if kernel is None else kernel
        self.p_mean, self.p_std, self.sigma_data = float(p_mean), float(p_std), float(sigma_data)

    def __call__(
        self,
        denoiser: Callable[[Tensor, Tensor, Tensor | None], Tensor],
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Args: denoiser: D(y, sigma, cond), e.g. an ``EDMPrecond``; x_1: (B, ...) data;
        cond: (B, ...) or None; generator: for sigma and the perturbation.

        Returns: (B,) the weighted per-example loss.
        """
        check_batch("cond", cond, x_1.shape[0], ref="x_1")
        B, sd = x_1.shape[0], self.sigma_data
        rnd_normal = torch.randn(B, generator=generator, dtype=x_1.dtype, device=x_1.device)
        sigma = (rnd_normal * self.p_std + self.p_mean).exp()  # (B,)
        weight = (sigma**2 + sd**2) / (sigma * sd) ** 2  # lambda(sigma), (B,)
        y = self.kernel.perturb(x_1, sigma, generator=generator)  # (B, ...)
        D_y = denoiser(y, sigma, cond)
        return weight * (D_y - x_1).square().flatten(1).mean(1)  # (B,)
