"""FlowMatchingLoss: the excess loss of a perturbed field equals its squared distance."""

import pytest
import torch

from flowforge.losses.fm import FlowMatchingLoss
from flowforge.losses.time_samplers import LogitNormalTime
from flowforge.paths.affine import CosinePath
from flowforge.paths.couplings import ExactOTCoupling

S2 = 0.25  # data variance: x_1 ~ N(0, S2 I)


def v_exact(x, t, cond=None):
    """Marginal velocity of the straight path for Gaussian data (d/dt log std_t times x)."""
    var = t**2 * S2 + (1 - t) ** 2
    return x * ((t * S2 - (1 - t)) / var)[:, None]


def test_excess_loss_equals_field_error():
    """FM loss = E||v - u||^2 + const, so adding delta costs exactly |delta|^2 / D in expectation.

    With common random numbers the cross term 2 delta (v - dx_t) averages to zero only if dx_t
    is the right conditional target; a wrong sign or path would leave a bias of order |delta|.
    """
    loss = FlowMatchingLoss()
    x_1 = S2**0.5 * torch.randn(200_000, 2)
    delta = torch.tensor([0.3, -0.2])
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    base = loss(v_exact, x_1, generator=g()).mean()
    shifted = loss(lambda x, t, c=None: v_exact(x, t) + delta, x_1, generator=g()).mean()
    expected = delta.square().mean().item()  # per-dim mean
    assert (shifted - base).item() == pytest.approx(expected, rel=0.03)


def test_weighting_distance_and_coupling_are_used():
    field = lambda x, t, cond=None: torch.zeros_like(x)  # noqa: E731
    x_1 = torch.randn(64, 2)  # global seed 0: the loss generator must use another seed
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    plain = FlowMatchingLoss(time_sampler=LogitNormalTime())(field, x_1, generator=g())
    weighted = FlowMatchingLoss(time_sampler=LogitNormalTime(), weighting=lambda t: 2 * t)(
        field, x_1, generator=g()
    )
    t = LogitNormalTime()(64, generator=g(), dtype=x_1.dtype)
    # The time draw comes after the noise draw inside the loss; recompute it from the same stream.
    gen = g()
    torch.randn(x_1.shape, generator=gen, dtype=x_1.dtype)
    t = LogitNormalTime()(64, generator=gen, dtype=x_1.dtype)
    torch.testing.assert_close(weighted, 2 * t * plain)
    huber = FlowMatchingLoss(distance="pseudo_huber")(field, x_1, generator=g())
    sq_norm = 2 * FlowMatchingLoss()(field, x_1, generator=g())  # ||dx_t||^2, same stream
    c = 0.00054 * 2
    torch.testing.assert_close(huber, ((sq_norm + c**2).sqrt() - c) / 2)
    # An OT coupling shortens pairs, so the zero field's loss (E||x_1 - x_0||^2 / D) drops.
    ot = FlowMatchingLoss(coupling=ExactOTCoupling())(field, x_1, generator=g()).mean()
    ind = FlowMatchingLoss()(field, x_1, generator=g()).mean()
    assert ot < 0.5 * ind


def test_other_paths_and_explicit_source():
    loss = FlowMatchingLoss(path=CosinePath())
    x_0, x_1 = torch.randn(8, 3), torch.randn(8, 3)
    out = loss(lambda x, t, c=None: x, x_1, x_0=x_0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (8,) and torch.isfinite(out).all()


def test_bad_input():
    with pytest.raises(ValueError, match="distance='l1' is not valid"):
        FlowMatchingLoss(distance="l1")
    with pytest.raises(ValueError, match="huber_c=0.1 is only used"):
        FlowMatchingLoss(huber_c=0.1)
    loss = FlowMatchingLoss(debug=True)
    field = lambda x, t, cond=None: x  # noqa: E731
    with pytest.raises(ValueError, match="cond has shape"):
        loss(field, torch.zeros(4, 2), cond=torch.zeros(3))
    with pytest.raises(ValueError, match="x_1 contains non-finite"):
        loss(field, torch.tensor([[0.0, float("nan")]]))
