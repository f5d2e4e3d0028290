"""Flow matching on 8 gaussians with the Python API: train, sample, score (the README snippet).

python examples/quickstart.py                       # 2000 steps, ~15 s on a laptop CPU
QUICKSTART_STEPS=200 python examples/quickstart.py  # a quicker, rougher run
"""

import os

import torch

from flowforge.data import eight_gaussians
from flowforge.losses import FlowMatchingLoss
from flowforge.metrics import finite_sample_floor, sliced_wasserstein
from flowforge.models import MLPConfig, MLPField
from flowforge.solvers import sample_ode, uniform_grid

torch.manual_seed(0)
model = MLPField(MLPConfig(dim=2, hidden=256, depth=3))  # v(x, t): 3 x 256 SiLU MLP
loss_fn = FlowMatchingLoss()  # straight paths x_t = t x_1 + (1 - t) x_0, t ~ U(0, 1)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for _ in range(int(os.environ.get("QUICKSTART_STEPS", 2000))):
    x_1, _ = eight_gaussians(256)  # a batch of data (labels unused)
    loss = loss_fn(model, x_1).mean()  # per-example losses (B,) -> mean
    opt.zero_grad()
    loss.backward()
    opt.step()

with torch.no_grad():  # integrate noise (t = 0) to data (t = 1): 4 Heun steps = 8 evaluations
    x = sample_ode(model, torch.randn(2000, 2), uniform_grid(4), method="heun")
sw2 = sliced_wasserstein(x, eight_gaussians(2000)[0])
floor = finite_sample_floor(sliced_wasserstein, eight_gaussians, 2000)  # fresh data vs fresh data
print(f"sliced W2 to fresh data: {sw2:.3f} (finite-sample floor {floor:.3f})")
