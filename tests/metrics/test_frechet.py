import numpy as np
import pytest
import scipy.linalg
import torch

from flowforge.metrics.frechet import (
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
)


def random_psd(d: int, g: torch.Generator, rank: int | None = None) -> torch.Tensor:
    a = torch.randn(d, rank or d, generator=g, dtype=torch.float64)
    return a @ a.T / d + (0.1 * torch.eye(d, dtype=torch.float64) if rank is None else 0)


def random_orthogonal(d: int, g: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


def scipy_fd(mu1, cov1, mu2, cov2) -> float:
    # The usual FID formula (Heusel et al.'s TTUR code): sqrtm of the non-symmetric product.
    covmean = scipy.linalg.sqrtm(cov1.numpy() @ cov2.numpy()).real
    mean = ((mu1 - mu2) ** 2).sum().item()
    return mean + np.trace(cov1.numpy()) + np.trace(cov2.numpy()) - 2 * np.trace(covmean)


def test_gaussian_stats_match_numpy():
    x = torch.randn(50, 4, dtype=torch.float32)
    mu, cov = gaussian_stats(x)
    assert mu.dtype == cov.dtype == torch.float64
    ref = x.double().numpy()
    np.testing.assert_allclose(mu.numpy(), ref.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(ref, rowvar=False), rtol=0, atol=1e-12)
    # NumPy input gives the same statistics.
    mu_np, cov_np = gaussian_stats(ref)
    assert torch.equal(mu_np, mu) and torch.equal(cov_np, cov)


def test_equal_gaussians_give_zero():
    g = torch.Generator().manual_seed(1)
    mu, cov = torch.randn(6, generator=g, dtype=torch.float64), random_psd(6, g)
    assert frechet_distance_from_stats(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-12)
    x = torch.randn(40, 6, generator=g)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-12)


def test_diagonal_closed_form():
    # Diagonal covariances: FD = ||mu1 - mu2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    a = torch.tensor([0.5, 1.0, 4.0, 9.0], dtype=torch.float64)
    b = torch.tensor([2.0, 1.0, 0.25, 16.0], dtype=torch.float64)
    mu1 = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    mu2 = torch.tensor([1.0, -1.0, 2.0, 0.0], dtype=torch.float64)
    expected = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    got = frechet_distance_from_stats(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(expected.item(), rel=1e-13)


def test_commuting_covariances_closed_form():
    # C1 = Q diag(a) Q^T and C2 = Q diag(b) Q^T commute, so the trace term is the diagonal one.
    g = torch.Generator().manual_seed(2)
    q = random_orthogonal(5, g)
    a = torch.rand(5, generator=g, dtype=torch.float64) * 3
    b = torch.rand(5, generator=g, dtype=torch.float64) * 3
    mu1, mu2 = torch.randn(2, 5, generator=g, dtype=torch.float64)
    cov1, cov2 = q @ torch.diag(a) @ q.T, q @ torch.diag(b) @ q.T
    expected = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    got = frechet_distance_from_stats(mu1, cov1, mu2, cov2)
    assert got == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("d", [2, 7, 32])
def test_agrees_with_scipy_sqrtm_formula(d):
    g = torch.Generator().manual_seed(d)
    for _ in range(3):
        mu1, mu2 = torch.randn(2, d, generator=g, dtype=torch.float64)
        cov1, cov2 = random_psd(d, g), random_psd(d, g)
        got = frechet_distance_from_stats(mu1, cov1, mu2, cov2)
        assert got == pytest.approx(scipy_fd(mu1, cov1, mu2, cov2), rel=1e-8, abs=1e-8)


def test_symmetric_and_rotation_invariant():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(200, 8, generator=g, dtype=torch.float64)
    a = a @ torch.randn(8, 8, generator=g, dtype=torch.float64)
    b = torch.randn(150, 8, generator=g, dtype=torch.float64) * 2 + 1
    fd = frechet_distance(a, b)
    assert fd > 1  # far from 0, so the relative checks below are meaningful
    assert frechet_distance(b, a) == pytest.approx(fd, rel=1e-12)
    q = random_orthogonal(8, g)
    assert frechet_distance(a @ q, b @ q) == pytest.approx(fd, rel=1e-10)


def test_rank_deficient_covariances_match_nuclear_norm():
    # With N < D the covariances X^T X / (n - 1) are singular. tr (C1^1/2 C2 C1^1/2)^1/2 is then
    # the nuclear norm of X_c Y_c^T / sqrt((n - 1)(m - 1)) (same nonzero eigenvalues as C1 C2),
    # an independent reference from a small SVD.
    g = torch.Generator().manual_seed(4)
    n, m, d = 10, 12, 30
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 3
    y = torch.randn(m, d, generator=g, dtype=torch.float64) + 1
    x_c, y_c = x - x.mean(0), y - y.mean(0)
    nuclear = torch.linalg.svdvals(x_c @ y_c.T).sum() / ((n - 1) * (m - 1)) ** 0.5
    tr1, tr2 = x_c.square().sum() / (n - 1), y_c.square().sum() / (m - 1)
    expected = ((x.mean(0) - y.mean(0)) ** 2).sum() + tr1 + tr2 - 2 * nuclear
    got = frechet_distance(x, y)
    assert np.isfinite(got) and got >= 0
    assert got == pytest.approx(expected.item(), rel=1e-10)
    # A Gaussian against itself with singular covariance is still 0.
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-10)


def test_errors():
    x = torch.randn(20, 3)
    with pytest.raises(ValueError, match="features_b has 4"):
        frechet_distance(x, torch.randn(20, 4))
    with pytest.raises(ValueError, match="NaN or infinite"):
        frechet_distance(x, torch.full((20, 3), float("nan")))
    with pytest.raises(ValueError, match="NaN or infinite"):
        gaussian_stats(torch.tensor([[0.0, float("inf")], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"expected a feature matrix \(N, D\)"):
        gaussian_stats(torch.randn(5, 2, 2))
    mu, cov = gaussian_stats(x)
    with pytest.raises(ValueError, match="cov2 has shape"):
        frechet_distance_from_stats(mu, cov, mu, torch.eye(4))
    with pytest.raises(ValueError, match="mu2 has shape"):
        frechet_distance_from_stats(mu, cov, torch.zeros(4), cov)
    with pytest.raises(ValueError, match="positive semi-definite"):
        frechet_distance_from_stats(mu, cov, mu, -torch.eye(3))
