"""EMA: closed-form convergence, buffers, warm-up, state round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowforge.train.ema import EMA


@pytest.mark.parametrize("decay", [0.9, 0.99])
def test_shadow_follows_closed_form(decay):
    """Constant weights theta = 1 from a shadow at 0: after n updates the shadow is 1 - d^n."""
    net = nn.Linear(3, 2)
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    ema = EMA(net, decay)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1.0)
    for n in range(1, 51):
        ema.update(net)
        for s in ema.module.parameters():
            torch.testing.assert_close(s, torch.full_like(s, 1 - decay**n), rtol=0, atol=1e-12)
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert not ema.module.training


def test_float_buffers_are_averaged_and_integer_buffers_copied():
    net = nn.BatchNorm1d(2)
    ema = EMA(net, 0.5)
    net.train()
    net(torch.tensor([[0.0, 4.0], [2.0, 8.0]]))  # running_mean = 0.9 * 0 + 0.1 * [1, 6]
    ema.update(net)
    torch.testing.assert_close(ema.module.running_mean, 0.5 * torch.tensor([0.1, 0.6]))
    assert ema.module.num_batches_tracked.item() == 1


def test_warmup_decay_schedule():
    ema = EMA(nn.Linear(1, 1), 0.999, warmup=True)
    decays = []
    for _ in range(3):
        decays.append(ema.current_decay())
        ema.update(ema.module)
    assert decays == pytest.approx([1 / 10, 2 / 11, 3 / 12])  # (1 + n) / (10 + n) < 0.999


def test_state_dict_round_trip_and_bad_decay():
    net = nn.Linear(2, 2)
    ema = EMA(net, 0.9)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    other = EMA(nn.Linear(2, 2), 0.9)
    other.load_state_dict(ema.state_dict(), num_updates=ema.num_updates)
    x = torch.randn(4, 2)
    assert torch.equal(other.module(x), ema.module(x)) and other.num_updates == 1
    with pytest.raises(ValueError, match=r"decay=1\.0 is out of range"):
        EMA(net, 1.0)
