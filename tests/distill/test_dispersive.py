"""Dispersive regularisers (card 06, check 3; Wang & He Table 1; DM1's reference form)."""

import itertools
import math

import pytest
import torch

from flowforge.distill.dispersive import (
    capture_features,
    dispersive_covariance,
    dispersive_hinge,
    dispersive_infonce_cos,
    dispersive_infonce_l2,
    dispersive_infonce_l2_dm1,
    pairwise_sq_dist,
)


def _features(B=32, D=16, seed=0):
    return torch.randn(B, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("include_diagonal", [True, False])
def test_infonce_l2_scale_and_translation(include_diagonal):
    """Card check 3: decreases when the features are scaled by 2; unchanged under adding the
    same vector to every row, to rounding even for a shift of 1e3 (measured 5e-15; the
    Gram-matrix form without centring is off by 2e-11 here)."""
    h = _features()
    base = dispersive_infonce_l2(h, tau=8.0, include_diagonal=include_diagonal)
    scaled = dispersive_infonce_l2(2 * h, tau=8.0, include_diagonal=include_diagonal)
    assert scaled < base - 0.1
    shift = 1e3 * torch.randn(1, 16, generator=torch.Generator().manual_seed(1))
    moved = dispersive_infonce_l2(h + shift, tau=8.0, include_diagonal=include_diagonal)
    assert abs(moved.item() - base.item()) < 1e-13


@pytest.mark.parametrize("include_diagonal", [True, False])
def test_infonce_l2_equals_double_loop(include_diagonal):
    """Reference equality with the paper formula written as an explicit double loop."""
    h, tau = _features(B=7, D=3), 0.5
    pairs = [
        (i, j) for i, j in itertools.product(range(7), repeat=2) if include_diagonal or i != j
    ]
    terms = [math.exp(-((h[i] - h[j]) ** 2).sum().item() / tau) for i, j in pairs]
    expect = math.log(sum(terms) / len(terms))
    got = dispersive_infonce_l2(h, tau, include_diagonal=include_diagonal).item()
    assert abs(got - expect) < 1e-12


def test_pairwise_sq_dist_matches_cdist():
    h = _features(B=9, D=5)
    torch.testing.assert_close(pairwise_sq_dist(h), torch.cdist(h, h) ** 2)
    assert bool((pairwise_sq_dist(h).diagonal() == 0).all())


def test_infonce_cos_scale_invariant_and_spreads():
    h = _features()
    scales = torch.rand(32, 1, generator=torch.Generator().manual_seed(2)) * 5 + 0.1
    torch.testing.assert_close(dispersive_infonce_cos(h * scales), dispersive_infonce_cos(h))
    collapsed = h[:1].expand(32, -1) + 0.01 * h  # nearly one direction
    assert dispersive_infonce_cos(collapsed) > dispersive_infonce_cos(h) + 0.5


def test_hinge_zero_beyond_margin_and_value():
    far = 10 * torch.eye(4)  # pairwise distances 10 sqrt(2) > margin
    assert dispersive_hinge(far, margin=1.0).item() == 0.0
    h = torch.tensor([[0.0], [0.25], [2.0]])  # one pair inside the margin: d = 0.25
    assert abs(dispersive_hinge(h).item() - 2 * 0.75**2 / 6) < 1e-12
    assert abs(dispersive_hinge(h, squared=False).item() - 2 * 0.75 / 6) < 1e-12  # DM1 code


def test_covariance_zero_when_decorrelated():
    h = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3)))  # 2^3 design
    assert dispersive_covariance(h, normalize="none").item() < 1e-14
    assert dispersive_covariance(h, normalize="standardize").item() < 1e-14
    correlated = torch.cat([h[:, :1], h[:, :1] + 0.1 * h[:, 1:2]], 1)
    assert dispersive_covariance(correlated, normalize="standardize") > 0.9  # corr ~ 0.995
    # DM1's variance hinge: 8 / 7 variance per column for the design: no penalty
    assert dispersive_covariance(h, normalize="none", variance_hinge=True).item() < 1e-14
    assert dispersive_covariance(0.1 * h, normalize="none", variance_hinge=True) > 0.9


def test_dm1_reference_clamp_kills_the_gradient():
    """DM1's code: the masked diagonal becomes the constant exp(10) after the clamp; pairs
    farther than 10 tau give no gradient at all, while the paper formula still pushes."""
    h = (10 * torch.eye(6)).requires_grad_()  # distances 14.1 > 10 tau = 5
    loss = dispersive_infonce_l2_dm1(h, tau=0.5)
    assert abs(loss.item() + math.log(6 * math.exp(10)) / 1) < 1e-9  # -log(B e^10) per row
    (grad,) = torch.autograd.grad(loss, h)
    assert grad.abs().max() == 0
    near = (0.3 * torch.eye(6)).requires_grad_()
    (g_paper,) = torch.autograd.grad(dispersive_infonce_l2(near, tau=0.5), near)
    assert g_paper.abs().max() > 1e-3


def test_capture_features_hook_and_cleanup():
    net = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.ReLU(), torch.nn.Linear(5, 1))
    x = torch.randn(4, 2)
    with capture_features(net, ["0", "1"]) as feats:
        net(x)
        torch.testing.assert_close(feats["1"], torch.relu(net[0](x)))
    assert len(feats) == 0 and not net[0]._forward_hooks
    with pytest.raises(ValueError, match="not a submodule"):
        with capture_features(net, ["3"]):
            pass


def test_errors():
    with pytest.raises(ValueError, match="B >= 2"):
        dispersive_infonce_l2(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="tau"):
        dispersive_infonce_l2(torch.zeros(3, 3), tau=0.0)
    with pytest.raises(ValueError, match="normalize"):
        dispersive_covariance(torch.zeros(3, 3), normalize="bn")
