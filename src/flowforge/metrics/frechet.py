"""Fréchet distance between Gaussian fits of two feature sets (FID without Inception).

Fit N(mu_a, C_a) and N(mu_b, C_b) to two feature matrices and return the squared 2-Wasserstein
distance between those Gaussians (Dowson & Landau 1982):

    FD = ||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2}).

The usual recipe takes ``scipy.linalg.sqrtm(C_a @ C_b)``, a square root of a non-symmetric
matrix that turns complex and inaccurate when the covariances are singular (fewer samples than
features). Here only symmetric PSD matrices are rooted, with ``torch.linalg.eigh``: first
C_a^{1/2}, then the eigenvalues of the PSD product M = C_a^{1/2} C_b C_a^{1/2}, whose square roots
sum to tr M^{1/2}. Rounding makes zero eigenvalues slightly positive or negative; eigenvalues
within rounding error of 0 (|w| <= D eps max|w|) are set to 0 before the square root.
The features come from the caller (flowforge uses a classifier trained on the same data, see
``flowforge.models.classifier.ImageClassifier.features``), so the metric is any-feature-space.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["gaussian_stats", "frechet_distance_from_stats", "frechet_distance"]

# Eigenvalues of a covariance below -PSD_RTOL * (its largest |eigenvalue|) are not rounding
# errors (a float32-accumulated covariance is off by ~1e-7 relative); such input is rejected.
PSD_RTOL = 1e-4


def as_feature_matrix(name: str, features: Tensor | np.ndarray, min_samples: int = 1) -> Tensor:
    """Validate a feature matrix (N, D) (tensor or array) and return it as a detached tensor."""
    x = torch.as_tensor(features).detach()
    if x.dim() != 2:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}; expected a feature matrix (N, D), one row per "
            f"sample (flatten per-sample features with {name}.flatten(1))."
        )
    if x.shape[0] < min_samples:
        raise ValueError(
            f"{name} has {x.shape[0]} samples; this metric needs at least {min_samples} rows."
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; drop or fix those rows first.")
    return x


def gaussian_stats(features: Tensor | np.ndarray) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance of a feature matrix, in float64.

    mu = (1/N) sum_i x_i,    C = 1/(N - 1) sum_i (x_i - mu)(x_i - mu)^T.

    Args:
        features: (N, D) features, N >= 2 (tensor or NumPy array).

    Returns:
        ``(mu, C)``: (D,) mean and (D, D) covariance, float64, on the input's device, detached.

    Example:
        >>> mu, cov = gaussian_stats(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
        >>> mu.tolist(), cov.tolist()
        ([1.0, 1.0], [[2.0, 0.0], [0.0, 0.0]])
    """
    x = as_feature_matrix("features", features, min_samples=2).to(torch.float64)  # (N, D)
    mu = x.mean(dim=0)  # (D,)
    x_c = x - mu  # (N, D)
    cov = x_c.T @ x_c / (x.shape[0] - 1)  # (D, D)
    return mu, cov


def _psd_eigh(name: str, c: Tensor) -> tuple[Tensor, Tensor]:
    """Eigendecomposition of a symmetric PSD matrix, rounding-level eigenvalues set to 0."""
    c = 0.5 * (c + c.T)  # exact symmetry for eigh; rounding leaves C and C^T a few ulps apart
    w, v = torch.linalg.eigh(c)  # (D,), (D, D)
    scale = w.abs().max().clamp_min(torch.finfo(w.dtype).tiny)
    if w.min() < -PSD_RTOL * scale:
        raise ValueError(
            f"{name} has eigenvalue {w.min().item():.4g} (largest {scale.item():.4g}); a "
            "covariance must be positive semi-definite: pass the output of gaussian_stats."
        )
    return _drop_rounding(w), v


def _drop_rounding(w: Tensor) -> Tensor:
    """Set eigenvalues within rounding error of 0 (|w| <= D eps max|w|) to exactly 0.

    Their square roots (~1e-8 max|w|^{1/2} in float64) would otherwise add up over the null space
    of a singular covariance and bias the trace term by ~D 1e-8.
    """
    cutoff = w.shape[0] * torch.finfo(w.dtype).eps * w.abs().max()
    return torch.where(w > cutoff, w, torch.zeros_like(w))


def frechet_distance_from_stats(
    mu1: Tensor | np.ndarray,
    cov1: Tensor | np.ndarray,
    mu2: Tensor | np.ndarray,
    cov2: Tensor | np.ndarray,
) -> float:
    """Fréchet (squared 2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2).

    FD = ||mu1 - mu2||^2 + tr C1 + tr C2 - 2 tr (C1^{1/2} C2 C1^{1/2})^{1/2},
    with C1^{1/2} = V diag(sqrt(w)) V^T from the eigendecomposition C1 = V diag(w) V^T and the
    last trace the sum of square roots of the eigenvalues of the symmetric PSD matrix
    C1^{1/2} C2 C1^{1/2}; eigenvalues within rounding error of 0 (|w| <= D eps max|w|, so also
    slightly negative ones) count as 0. Computed in float64; the result is clamped at 0 (a
    squared distance; rounding alone can push identical Gaussians to -1e-15).

    Args:
        mu1, mu2: (D,) means.
        cov1, cov2: (D, D) symmetric positive semi-definite covariances (singular is fine).

    Returns:
        The distance, a Python float >= 0 (squared units of the features, like FID).

    References:
        The Fréchet distance between multivariate normal distributions (Dowson & Landau, 1982),
        J. Multivariate Anal. 12(3).
        GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium
        (Heusel et al., 2017), arXiv:1706.08500, Eq. 6 (FID).

    Example:
        >>> mu1, mu2 = torch.zeros(2), torch.tensor([3.0, 4.0])
        >>> cov1, cov2 = torch.diag(torch.tensor([1.0, 4.0])), torch.diag(torch.tensor([4.0, 1.0]))
        >>> frechet_distance_from_stats(mu1, cov1, mu2, cov2)  # 25 + (1 - 2)^2 + (2 - 1)^2
        27.0
    """
    names = ("mu1", "cov1", "mu2", "cov2")
    mu1, cov1, mu2, cov2 = (
        torch.as_tensor(a).detach().to(torch.float64) for a in (mu1, cov1, mu2, cov2)
    )
    d = mu1.shape[0] if mu1.dim() == 1 else -1
    for name, a, want in zip(names, (mu1, cov1, mu2, cov2), ((d,), (d, d)) * 2, strict=True):
        if d < 1 or tuple(a.shape) != want:
            raise ValueError(
                f"{name} has shape {tuple(a.shape)} but mu1 has shape {tuple(mu1.shape)}; pass "
                "means of shape (D,) and covariances of shape (D, D) for the same D."
            )
        if not torch.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite values; recompute the statistics.")
    cov2 = cov2.to(cov1.device)
    mean_term = (mu1 - mu2.to(mu1.device)).square().sum()

    w1, v1 = _psd_eigh("cov1", cov1)
    sqrt_c1 = (v1 * w1.sqrt()) @ v1.T  # C1^{1/2} = V diag(sqrt w) V^T, (D, D)
    _psd_eigh("cov2", cov2)  # validation only: C2 must be PSD for M to be
    m = sqrt_c1 @ cov2 @ sqrt_c1  # PSD, (D, D)
    lam = _drop_rounding(torch.linalg.eigvalsh(0.5 * (m + m.T)))  # (D,)
    trace_term = torch.trace(cov1) + torch.trace(cov2) - 2.0 * lam.sqrt().sum()
    return max((mean_term + trace_term).item(), 0.0)


def frechet_distance(features_a: Tensor | np.ndarray, features_b: Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (FID in a chosen feature space).

    FD = ||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2}), with mean and
    unbiased covariance from :func:`gaussian_stats`. The estimate is biased upward by O(D / N):
    compare values only at equal sample sizes, beside the floor of two fresh real sets.

    Args:
        features_a: (N, D) features, N >= 2 (e.g. of real images).
        features_b: (M, D) features, M >= 2, same D (e.g. of generated images).

    Returns:
        The distance, a Python float >= 0.

    References:
        GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium
        (Heusel et al., 2017), arXiv:1706.08500.

    Example:
        >>> a = torch.randn(100, 3, dtype=torch.float64)
        >>> round(frechet_distance(a, a + torch.tensor([1.0, 2.0, 2.0])), 8)  # a shift by 3
        9.0
    """
    a = as_feature_matrix("features_a", features_a, min_samples=2)
    b = as_feature_matrix("features_b", features_b, min_samples=2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"features_a has {a.shape[1]} features per row but features_b has {b.shape[1]}; "
            "extract both with the same feature network."
        )
    return frechet_distance_from_stats(*gaussian_stats(a), *gaussian_stats(b))
