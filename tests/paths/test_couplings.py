"""Couplings: exact OT optimality by brute force, Sinkhorn marginals, label preservation."""

import itertools

import pytest
import torch

from flowforge.paths.couplings import ExactOTCoupling, IndependentCoupling, SinkhornCoupling


def _cost(x_0, x_1):
    return (x_0 - x_1).square().sum().item()


def test_exact_ot_is_optimal_permutation():
    x_0, x_1 = torch.randn(6, 2), torch.randn(6, 2)
    best = min(_cost(x_0[list(p)], x_1) for p in itertools.permutations(range(6)))
    y_0, y_1, _ = ExactOTCoupling()(x_0, x_1)
    assert _cost(y_0, y_1) == pytest.approx(best, rel=1e-12)
    assert torch.equal(y_1, x_1)  # data order kept
    assert sorted(y_0[:, 0].tolist()) == sorted(x_0[:, 0].tolist())  # a permutation of x_0


def test_ot_keeps_labels_with_their_data():
    x_0, x_1 = torch.randn(32, 2), torch.randn(32, 2)
    labels = torch.arange(32)
    for coupling in [IndependentCoupling(), ExactOTCoupling(), SinkhornCoupling(0.05)]:
        _, y_1, c = coupling(x_0, x_1, labels, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(y_1, x_1[c])


def test_sinkhorn_plan_marginals_and_limit():
    x_0, x_1 = torch.randn(24, 2), torch.randn(24, 2)
    plan = SinkhornCoupling(reg=0.01, num_iter=20_000).plan(x_0, x_1)
    torch.testing.assert_close(plan.sum(0), torch.full((24,), 1 / 24), atol=1e-6, rtol=0)
    torch.testing.assert_close(plan.sum(1), torch.full((24,), 1 / 24), atol=1e-6, rtol=0)
    # Small regularisation approaches the exact OT cost from above.
    cost = torch.cdist(x_0, x_1).square()
    y_0, y_1, _ = ExactOTCoupling()(x_0, x_1)
    exact = _cost(y_0, y_1) / 24
    entropic = (plan * cost).sum().item()
    independent = cost.mean().item()
    assert exact <= entropic + 1e-9
    assert entropic - exact < 0.1 * (independent - exact)


def test_ot_shortens_pairs_on_average():
    g = torch.Generator().manual_seed(1)
    x_0, x_1 = torch.randn(256, 2, generator=g), torch.randn(256, 2, generator=g) + 3
    y_0, y_1, _ = ExactOTCoupling()(x_0, x_1)
    # W2^2(N(0, I), N(3, I)) = 18: OT pairs come close to it, independent pairs pay 18 + 4.
    ot, ind = _cost(y_0, y_1) / 256, _cost(x_0, x_1) / 256
    assert ot - 18 < 0.3 * (ind - 18)


def test_bad_input():
    with pytest.raises(ValueError, match="equal-sized"):
        ExactOTCoupling()(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="cond has shape"):
        ExactOTCoupling()(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="reg=0"):
        SinkhornCoupling(0)
