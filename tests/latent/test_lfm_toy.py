"""Card 01 (LFM) checks 1 and 2 at test scale: flow matching on a codec's latents of 8 gaussians.

Check 1: identity autoencoder, s = 1. Check 2: a random-orthogonal linear 2 -> 2 autoencoder with
s = 0.5, decoded by D(z / s); the "forgot / s" control decodes D(z) and must fail by a wide
margin. flowforge's time convention (t = 0 noise, t = 1 data) replaces the card's. The card's
full budget (10k steps at batch 1024, 3 x 256 MLP) runs in ``benchmarks/lfm_toy.py``.
"""

import pytest
import torch
from torch import nn

from flowforge.data.toy2d import eight_gaussians
from flowforge.latent.codec import LatentCodec
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.metrics.floor import finite_sample_floor
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.solvers.grids import uniform_grid
from flowforge.solvers.ode import sample_euler

N_EVAL = 2000


class LinearAutoencoder(nn.Module):
    """E(x) = Q x, D(z) = Q^T z for an orthogonal Q (the identity for check 1)."""

    def __init__(self, Q: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("Q", Q)

    def encode(self, x):
        return x @ self.Q.T

    def decode(self, z):
        return z @ self.Q


def _swd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # 512 fixed directions, the same for every comparison.
    return sliced_wasserstein(a, b, 512, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def floor() -> float:
    # Median SWD between 5 pairs of fresh 2000-point target draws: 0.122 measured.
    g = torch.Generator().manual_seed(3)
    return finite_sample_floor(_swd, eight_gaussians, N_EVAL, repeats=5, generator=g).item()


def _codec(check: int) -> LatentCodec:
    if check == 1:
        Q, s = torch.eye(2), 1.0
    else:
        Q, _ = torch.linalg.qr(torch.randn(2, 2, generator=torch.Generator().manual_seed(1)))
        s = 0.5
    ae = LinearAutoencoder(Q.float())
    return LatentCodec(ae, torch.zeros(2), torch.full((2,), s))


def _train(codec: LatentCodec, steps: int) -> MLPField:
    torch.manual_seed(0)
    model = MLPField(MLPConfig(dim=2, hidden=128, depth=3)).float()
    # The card's constant 1e-3 needs its 10k steps; at 1500 steps a linear decay from 3e-3
    # reaches the same bar (measured median SWD / floor at 1500 steps: 2.31 constant 1e-3 with a
    # 3 x 256 MLP, 1.18 with this schedule and 3 x 128, check 1).
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / max(steps, 1))
    loss_fn = FlowMatchingLoss()
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, _ = eight_gaussians(512, g)
        with torch.no_grad():
            z_1 = codec.encode(x)  # the flow only ever sees latents
        loss = loss_fn(model, z_1, generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        decay.step()
    return model


def _sample_latents(model: MLPField) -> torch.Tensor:
    z_0 = torch.randn(N_EVAL, 2, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        return sample_euler(model, z_0.float(), uniform_grid(100))  # noise (t=0) -> data (t=1)


def _ratio(x: torch.Tensor, floor: float) -> float:
    """Median SWD over 3 fresh held-out draws, divided by the floor (like the floor, a median:
    one 2000-point pair's SWD ranges over 0.06..0.22 from draw to draw)."""
    g = torch.Generator().manual_seed(12)
    values = [_swd(x, eight_gaussians(N_EVAL, g)[0]).item() for _ in range(3)]
    return sorted(values)[1] / floor


@pytest.mark.parametrize("check", [1, 2])
def test_latent_flow_matching_passes_card_bar(check, floor):
    codec = _codec(check)
    z = _sample_latents(_train(codec, 1500))
    ratio = _ratio(codec.decode(z), floor)
    # Measured on CPU (1500 steps at batch 512, 3 x 128 SiLU MLP, Adam 3e-3 decayed linearly,
    # Euler 100 steps, 2000 samples, median of 3 held-out draws): SWD / floor = 1.28 (check 1)
    # and 1.58 (check 2) with training seed 0; 1.18 / 1.34 (seed 1) and 1.12 / 1.30 (seed 2).
    # The bar is the card's, 2.5x the floor.
    assert ratio < 2.5
    if check == 2:
        # Forgetting / s decodes the ring at half its radius: SWD / floor measured 11.9 (SWD
        # 1.45; the card's direct computation gives about 1.4, > 10x the floor, its bound).
        forgot = _ratio(codec.autoencoder.decode(z), floor)
        assert forgot > 10.0


def test_untrained_field_fails_card_bar(floor):
    # The same bar must reject a field that learned nothing: its samples stay a blob around
    # the origin. Measured SWD / floor 8.8 (SWD 1.07); asserting > 5 keeps a wide margin.
    codec = _codec(2)
    z = _sample_latents(_train(codec, 0))
    assert _ratio(codec.decode(z), floor) > 5.0
