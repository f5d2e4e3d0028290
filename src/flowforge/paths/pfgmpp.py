"""PFGM++: the perturbation kernel of a Poisson field in N + D dimensions.

Data x in R^N is augmented with D extra dimensions. The electric field of the augmented data
gives the perturbation kernel (Xu et al., 2023, Eq. 4)

    p_r(y | x)  proportional to  1 / (||y - x||^2 + r^2)^((N + D) / 2),

which is a multivariate Student-t with D degrees of freedom and scale sigma once the radius is
aligned with the EDM noise level by r = sigma sqrt(D) (Sec. 4). Its radius R = ||y - x|| obeys
R^2 / r^2 = b / (1 - b) with b ~ Beta(N/2, D/2) (a Beta-prime variable), so

    E ||y - x||^2 = r^2 N / (D - 2)  (D > 2; infinite for D <= 2),

and each coordinate of y - x has kurtosis 3 + 6 / (D - 4) (D > 4). D = 1 is PFGM; D -> inf recovers
the Gaussian kernel N(x, sigma^2 I) of EDM, so every EDM schedule, preconditioner, loss and
sampler transfers unchanged: only the perturbation in training and the prior at sigma_max change.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowforge.utils import expand_like

__all__ = ["PFGMPPKernel"]


def _log_standard_gamma(
    alpha: float, n: int, generator: torch.Generator | None, device: torch.device | str | None
) -> Tensor:
    """log G for n draws G ~ Gamma(alpha, 1), float64, reproducible from ``generator``.

    torch's Gamma/Beta samplers take no generator, so this is Marsaglia & Tsang's squeeze-free
    rejection method (acceptance >= 95 % for alpha >= 1, valid for any real alpha, including
    the huge alpha = D/2 of the near-Gaussian limit), with the boost G(a) = G(a + 1) U^(1/a) for
    a < 1. Returning logs lets the caller form the Beta-prime ratio b / (1 - b) = G_a / G_b
    directly, without computing 1 - b (which rounds to 0 once b is within 1e-16 of 1) and
    without underflow of G for small alpha.

    References:
        A Simple Method for Generating Gamma Variables (Marsaglia & Tsang, 2000), ACM TOMS 26(3).
    """
    kw = {"dtype": torch.float64, "device": device}
    a = alpha + 1 if alpha < 1 else alpha
    d = a - 1 / 3
    c = 1 / math.sqrt(9 * d)

    def propose(m: int) -> tuple[Tensor, Tensor]:
        """m proposals log(d v) and their acceptance flags."""
        z = torch.randn(m, generator=generator, **kw)
        log_u = torch.log1p(-torch.rand(m, generator=generator, **kw))  # log U, finite
        v = (1 + c * z) ** 3
        v_pos = torch.where(v > 0, v, torch.ones_like(v))  # v <= 0 is rejected below
        log_v = v_pos.log()
        ok = (v > 0) & (log_u < 0.5 * z**2 + d - d * v_pos + d * log_v)
        return math.log(d) + log_v, ok

    log_g, ok = propose(n)  # (n,), first pass over everything
    todo = (~ok).nonzero().squeeze(1)  # indices still to fill (about 5 % for alpha >= 1)
    while todo.numel() > 0:
        value, ok = propose(todo.numel())
        log_g[todo[ok]] = value[ok]
        todo = todo[~ok]
    if alpha < 1:
        log_u = torch.log1p(-torch.rand(n, generator=generator, **kw))
        log_g = log_g + log_u / alpha
    return log_g


class PFGMPPKernel:
    """The PFGM++ perturbation kernel with D = ``aug_dim`` augmented dimensions.

    Sampling y ~ p_r(. | x) follows the paper's recipe (Xu et al., Sec. 4; card 03):

        r = sigma sqrt(D),   b ~ Beta(N/2, D/2) clipped to [clip, 1 - clip],
        R = r sqrt(b / (1 - b)),   u = g / ||g||, g ~ N(0, I_N),   y = x + R u,

    where N is the number of features of one example (the flattened image, not a channel), and
    b / (1 - b) is drawn directly as the ratio G_N / G_D of two Gamma(N/2, 1), Gamma(D/2, 1)
    variables in float64 (``_log_standard_gamma``), reproducible from a ``torch.Generator`` and
    fast for any real D, 1 or 1e5 alike. ``aug_dim = math.inf`` is the Gaussian limit
    y = x + sigma n of EDM, sampled directly.

    Clipping: ``clip = 1e-3`` is the official training recipe; it bounds R <= 31.6 r. Its lower
    side also raises every radius to at least r sqrt(clip / (1 - clip)) = 0.032 r, which is
    harmless when Beta(N/2, D/2) lives well above clip (images: N = 3072, b ~ 0.6 for D = 2048),
    but replaces the kernel by a thin shell when N / (N + D) is below about 1e-2 (e.g. N = 8,
    D = 1e5, where E[b] = 8e-5), and makes the second moment finite for D <= 2. Pass
    ``clip=0.0`` for the exact law.

    Args:
        aug_dim: D > 0, the number of augmented dimensions (``math.inf`` for the Gaussian).
        clip: b is clipped to [clip, 1 - clip], 0 <= clip < 0.5 (unused when D = inf).

    References:
        PFGM++: Unlocking the Potential of Physics-Inspired Generative Models (Xu, Liu, Tian,
        Tong, Tegmark & Jaakkola, 2023), arXiv:2302.04265 (code: Newbeeer/pfgmpp,
        ``training/loss.py`` and ``generate.py``).

    Example:
        >>> kernel = PFGMPPKernel(aug_dim=128)
        >>> g = torch.Generator().manual_seed(0)
        >>> y = kernel.perturb(torch.zeros(4, 3, 8, 8), 1.0, generator=g)
        >>> y.shape, kernel.sample_prior((2, 3, 8, 8), sigma_max=80.0, generator=g).shape
        (torch.Size([4, 3, 8, 8]), torch.Size([2, 3, 8, 8]))
    """

    def __init__(self, aug_dim: float, clip: float = 1e-3) -> None:
        if not aug_dim > 0:
            raise ValueError(
                f"aug_dim={aug_dim!r} must be > 0: the number of augmented dimensions D "
                "(1 is PFGM, 128 or 2048 are the paper's choices, math.inf is EDM)."
            )
        if not 0 <= clip < 0.5:
            raise ValueError(
                f"clip={clip!r} must lie in [0, 0.5): b is clipped to [clip, 1 - clip] "
                "(1e-3 in the official code, 0 for the exact law)."
            )
        self.aug_dim = float(aug_dim)
        self.clip = float(clip)

    @property
    def is_gaussian(self) -> bool:
        """True for D = inf, the Gaussian kernel of EDM."""
        return math.isinf(self.aug_dim)

    def __repr__(self) -> str:
        return f"PFGMPPKernel(aug_dim={self.aug_dim}, clip={self.clip})"

    def sample_radius(
        self,
        sigma: Tensor | float,
        n: int,
        N: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw n radii R = ||y - x|| of the kernel at noise level sigma in dimension N.

        R = sigma sqrt(D) sqrt(b / (1 - b)), b ~ Beta(N/2, D/2) clipped; for D = inf,
        R = sigma chi_N = sigma sqrt(2 G), G ~ Gamma(N/2, 1). Only the radius is drawn, so
        radii of CIFAR-size kernels (N = 3072) cost n draws, not n N.

        Args:
            sigma: a scalar or (n,) noise levels >= 0.
            n: number of radii.
            N: the data dimension (features of one example, flattened).
            generator: random generator (its device must match ``device``).
            device: device of the result (default: the generator's device, else CPU).

        Returns:
            (n,) float64 radii.
        """
        if not (isinstance(N, int) and N >= 1):
            raise ValueError(f"N={N!r} must be a positive int: the flattened data dimension.")
        if device is None and generator is not None:
            device = generator.device
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=device)
        log_g_N = _log_standard_gamma(N / 2, n, generator, device)  # (n,)
        if self.is_gaussian:
            return sigma * (2 * log_g_N.exp()).sqrt()  # chi_N
        r = sigma * math.sqrt(self.aug_dim)
        log_q = log_g_N - _log_standard_gamma(self.aug_dim / 2, n, generator, device)
        if self.clip > 0:  # b in [clip, 1 - clip]  <=>  b / (1 - b) in [q_lo, 1 / q_lo]
            q_lo = math.log(self.clip / (1 - self.clip))
            log_q = log_q.clamp(q_lo, -q_lo)
        return r * (0.5 * log_q).exp()  # R = r sqrt(b / (1 - b))

    def _perturbation(
        self,
        shape: tuple[int, ...],
        sigma: Tensor | float,
        generator: torch.Generator | None,
        device: torch.device | str | None,
    ) -> Tensor:
        """R u with u uniform on the sphere of the flattened data dimension, float64 (B, ...)."""
        B, N = shape[0], math.prod(shape[1:])
        R = self.sample_radius(sigma, B, N, generator=generator, device=device)  # (B,)
        g = torch.randn(B, N, generator=generator, dtype=torch.float64, device=device)
        u = g / g.norm(dim=1, keepdim=True)  # (B, N) uniform direction on S^(N-1)
        return (R[:, None] * u).reshape(shape)

    def perturb(
        self, x: Tensor, sigma: Tensor | float, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw y ~ p_r(y | x) with r = sigma sqrt(D).

        Args:
            x: (B, ...) clean data.
            sigma: (B,) noise levels >= 0, or a scalar.
            generator: random generator.

        Returns:
            (B, ...) perturbed data y, in the dtype of x.
        """
        sigma = torch.as_tensor(sigma, device=x.device)
        if sigma.dim() not in (0, 1) or (sigma.dim() == 1 and sigma.shape[0] != x.shape[0]):
            raise ValueError(
                f"sigma has shape {tuple(sigma.shape)} but x has batch size {x.shape[0]}; pass "
                f"a scalar or one noise level per example, shape ({x.shape[0]},)."
            )
        if self.is_gaussian:  # EDM: y = x + sigma n
            n = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            sigma_ = sigma.to(x.dtype)
            return x + (expand_like(sigma_, x) if sigma_.dim() else sigma_) * n
        sigma = sigma.to(torch.float64)
        return x + self._perturbation(tuple(x.shape), sigma, generator, x.device).to(x.dtype)

    def sample_prior(
        self,
        shape: tuple[int, ...] | torch.Size,
        sigma_max: float,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw the initial state of the sampler: y = R u at r_max = sigma_max sqrt(D).

        This is the kernel around x = 0 (the data are negligible at sigma_max); it is NOT a
        Gaussian times sigma_max, except for D = inf. For finite D its radii are heavier-tailed
        (Xu et al., Sec. 4: "only the prior changes").

        Args:
            shape: (B, ...) the shape of the batch.
            sigma_max: the first noise level of the sampler's grid (EDM: 80).
            generator: random generator.
            device: device of the result (default: the generator's, else CPU).
            dtype: dtype of the result (default: torch's default dtype).

        Returns:
            (B, ...) initial states x at noise level sigma_max.
        """
        shape = tuple(shape)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if device is None and generator is not None:
            device = generator.device
        if self.is_gaussian:
            n = torch.randn(shape, generator=generator, dtype=dtype, device=device)
            return sigma_max * n
        return self._perturbation(shape, sigma_max, generator, device).to(dtype)
