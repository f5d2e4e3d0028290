"""Every objective plugs into ``flowforge.train.train`` (argument order model, x, cond, generator)
and lowers its loss on a toy."""

import pytest
import torch

from flowforge.data.toy2d import eight_gaussians
from flowforge.losses.edm import EDMLoss
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.losses.interpolant import InterpolantLoss
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.paths.edm import EDMPrecond
from flowforge.paths.interpolant import BrownianGamma, StochasticInterpolant
from flowforge.train import TrainConfig, train


def _data(n, generator):
    x, _ = eight_gaussians(n, generator=generator)
    return x / 4, None  # unit-scale data, unconditional


@pytest.mark.parametrize(
    "name, objective",
    [
        ("fm", FlowMatchingLoss()),
        ("interpolant", InterpolantLoss(StochasticInterpolant(gamma=BrownianGamma()), "drift")),
        ("edm", EDMLoss()),
    ],
)
def test_objective_trains_through_train(name, objective):
    net = MLPField(MLPConfig(dim=2, hidden=64, depth=2))
    model = EDMPrecond(net) if name == "edm" else net
    x_eval = _data(8192, torch.Generator().manual_seed(1))[0].to(torch.get_default_dtype())

    def held_out() -> float:  # same samples, times and noise before and after training
        with torch.no_grad():
            return objective(model, x_eval, None, torch.Generator().manual_seed(2)).mean().item()

    before = held_out()
    config = TrainConfig(steps=200, batch_size=256, lr=3e-3, ema_decay=0, progress=False)
    train(model, objective, _data, config)
    after = held_out()
    # A learning signal, not a quality bar: the held-out loss drops by more than 5 % of its size.
    assert after < before - 0.05 * abs(before), (name, before, after)
