"""Learning check: flow matching on 8 gaussians beats a stated W2 threshold in 500 steps."""

import torch

from flowforge.data.toy2d import eight_gaussians
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.metrics.floor import finite_sample_floor
from flowforge.metrics.wasserstein import wasserstein2
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.solvers.grids import uniform_grid
from flowforge.solvers.ode import sample_heun

N_EVAL = 1000


def _train(steps: int, seed: int = 0) -> MLPField:
    torch.manual_seed(seed)
    model = MLPField(MLPConfig(dim=2, hidden=128, depth=3)).float()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    loss_fn = FlowMatchingLoss()
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x_1, _ = eight_gaussians(256, generator=g)
        loss = loss_fn(model, x_1, generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


def _w2(model: MLPField) -> float:
    g = torch.Generator().manual_seed(123)
    x_0 = torch.randn(N_EVAL, 2, generator=g, dtype=torch.float32)
    with torch.no_grad():
        x_1 = sample_heun(model, x_0, uniform_grid(16, dtype=torch.float32))
    target, _ = eight_gaussians(N_EVAL, generator=g)
    return wasserstein2(x_1, target).item()


def test_fm_learns_eight_gaussians():
    floor = finite_sample_floor(
        wasserstein2, eight_gaussians, N_EVAL, generator=torch.Generator().manual_seed(7)
    ).item()
    untrained, trained = _w2(_train(0)), _w2(_train(500))
    # Measured on CPU (seed 0, 500 steps, Heun NFE 16): trained 0.85, floor 0.49 (exact W2
    # between two 1000-point draws), untrained 2.83. The 2.0x floor threshold leaves margin for
    # platform noise while an untrained or mis-signed field fails it by a wide margin.
    assert untrained > 3 * floor
    assert trained < 2.0 * floor
