import math

import pytest
import torch

from flowforge.metrics.wasserstein import wasserstein2


def test_translation_is_exact():
    # y = x + c: every coupling costs its (x, x) cost + ||c||^2 (the cross term vanishes for
    # uniform marginals), minimised by the identity, so W2 = ||c|| exactly.
    x = torch.randn(300, 3)
    c = torch.tensor([1.0, -2.0, 0.5])
    assert wasserstein2(x, x + c).item() == pytest.approx(c.norm().item(), rel=1e-12)


def test_unequal_sizes_duplicated_support():
    # y = two copies of x, shifted: W2 >= ||mean(x) - mean(y)|| = ||c|| (Jensen) and the coupling
    # sending x_i to both of its copies attains it.
    x = torch.randn(120, 2)
    c = torch.tensor([0.3, 0.4])
    assert wasserstein2(x, torch.cat([x, x]) + c).item() == pytest.approx(0.5, rel=1e-12)
    assert wasserstein2(x, torch.cat([x, x])).item() == pytest.approx(0.0, abs=1e-7)


def test_translation_covariance_of_independent_samples():
    # For uniform marginals sum_ij P_ij (x_i - y_j) = mean(x) - mean(y) for every coupling P, so
    # W2(x, y + d)^2 = W2(x, y)^2 - 2 d.(mean(x) - mean(y)) + ||d||^2 exactly.
    x, y = torch.randn(200, 2), torch.randn(150, 2)
    d = torch.tensor([2.0, -1.0])
    lhs = wasserstein2(x, y + d).item() ** 2
    rhs = wasserstein2(x, y).item() ** 2 - 2 * d @ (x.mean(0) - y.mean(0)) + d @ d
    assert lhs == pytest.approx(rhs.item(), rel=1e-10)


def test_one_dimensional_sorted_closed_form():
    # In 1-D the monotone (sorted) coupling is optimal: W2^2 = mean_i (x_(i) - y_(i))^2.
    x, y = torch.randn(257, 1), 2 * torch.randn(257, 1) + 1
    expected = (x.flatten().sort().values - y.flatten().sort().values).square().mean().sqrt()
    assert wasserstein2(x, y).item() == pytest.approx(expected.item(), rel=1e-10)


def test_gaussian_samples_approach_mean_gap():
    # N(m1, I) vs N(m2, I): W2 = ||m1 - m2|| = 3 in the population; at n = 500 in 2-D the
    # finite-sample excess is W2^2 - 9 ~ floor^2 ~ 0.2 (measured), i.e. W2 ~ 3.03.
    m = torch.tensor([3.0, 0.0])
    x, y = torch.randn(500, 2), torch.randn(500, 2) + m
    w = wasserstein2(x, y).item()
    assert (x.mean(0) - y.mean(0)).norm().item() <= w  # Jensen lower bound
    assert abs(w - 3.0) < 0.1


def test_flattens_and_keeps_dtype_device():
    x = torch.randn(10, 2, 2, dtype=torch.float32)
    w = wasserstein2(x, x + 1.0)
    assert w.shape == () and w.dtype == torch.float32 and w.device == x.device
    assert w.item() == pytest.approx(2.0, rel=1e-6)  # ||1_4|| = 2


@pytest.mark.parametrize(
    "x, y, match",
    [
        (torch.randn(5), torch.randn(5, 1), "reshape"),
        (torch.randn(5, 2), torch.randn(5, 3), "same space"),
        (torch.randn(0, 2), torch.randn(5, 2), "at least 1"),
        (torch.tensor([[0.0, math.nan]]), torch.randn(5, 2), "NaN"),
    ],
)
def test_rejects_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        wasserstein2(x, y)
