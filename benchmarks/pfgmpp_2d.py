"""Card 03 check 3: PFGM++ (D = 16) against EDM (D = inf) on 2-D 8-gaussians.

Same code, data stream, network, optimiser and seeds for both; only the perturbation kernel
(training) and the prior (sampling) differ. Data: flowforge's 8-gaussians scaled to a
per-coordinate standard deviation sigma_data = 0.5. Model: EDMPrecond(MLPField) (c_noise in the
time slot), EDMLoss with ln sigma ~ N(-1.2, 1.2^2), Adam, EMA. Sampling: EDM Heun with 18 levels
(35 NFE) from sigma_max = 80 down to 0 (sigma_min = 0.002, rho = 7), started from
``PFGMPPKernel(D).sample_prior`` (a Gaussian times 80 only for D = inf). Quality: sliced W2
(512 directions) between n model samples and n fresh target samples, median over 3 target
draws, beside the finite-sample floor (median over 5 pairs of fresh target sets).

Pass criteria (card 03): SWD(D = 16) <= 2.5 x floor, and SWD(D = 16) <= 1.2 x SWD(D = inf).
A 64-level Heun run (127 NFE) is reported too, to separate the sampler's discretisation error
from the model's error; it is not part of the criteria.

Run: python benchmarks/pfgmpp_2d.py [--steps 20000]   (a few minutes per model on one CPU core)
Exits with status 1 if a criterion fails.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

from flowforge.data.toy2d import eight_gaussians
from flowforge.losses.edm import EDMLoss
from flowforge.metrics.floor import finite_sample_floor
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.paths.edm import EDMPrecond
from flowforge.paths.pfgmpp import PFGMPPKernel
from flowforge.solvers.edm import sample_edm_heun
from flowforge.solvers.grids import edm_sigmas
from flowforge.train.ema import EMA

SIGMA_DATA = 0.5
SCALE = SIGMA_DATA / math.sqrt(4.0**2 / 2 + 0.5**2)  # default 8-gaussians: per-coord var 8.25


def sample_data(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """8-gaussians scaled to per-coordinate std 0.5 (radius 0.70, component std 0.087)."""
    return eight_gaussians(n, generator)[0] * SCALE


def swd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sliced W2 with 512 fixed directions (the same directions for every comparison)."""
    return sliced_wasserstein(
        x, y, num_projections=512, generator=torch.Generator().manual_seed(7)
    )


def train(aug_dim: float, args: argparse.Namespace) -> tuple[torch.nn.Module, float, float]:
    """Train one EDMPrecond(MLPField); returns (EMA denoiser, seconds, mean loss of last 1k)."""
    torch.manual_seed(args.seed)  # identical initial weights for every D
    net = MLPField(MLPConfig(dim=2, hidden=args.hidden, depth=args.depth, time_embed_dim=64))
    denoiser = EDMPrecond(net, sigma_data=SIGMA_DATA)
    ema = EMA(denoiser, decay=args.ema, warmup=True)
    loss_fn = EDMLoss(kernel=PFGMPPKernel(aug_dim), sigma_data=SIGMA_DATA)
    opt = torch.optim.Adam(denoiser.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr / 20)
    g_data = torch.Generator().manual_seed(args.seed + 1)
    g_loss = torch.Generator().manual_seed(args.seed + 2)
    recent: list[float] = []
    start = time.perf_counter()
    for step in range(args.steps):
        x_1 = sample_data(args.batch, g_data)
        loss = loss_fn(denoiser, x_1, generator=g_loss).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update(denoiser)
        if step >= args.steps - 1000:
            recent.append(loss.item())
        if args.log_every and (step + 1) % args.log_every == 0:
            print(f"  D={aug_dim:g} step {step + 1}: loss {loss.item():.4f}", flush=True)
    return ema.module, time.perf_counter() - start, sum(recent) / max(len(recent), 1)


@torch.no_grad()
def evaluate(denoiser: torch.nn.Module, aug_dim: float, n: int, levels: int, seed: int) -> float:
    """Median SWD over 3 fresh target sets of n model samples from ``levels`` Heun levels."""
    g = torch.Generator().manual_seed(seed)
    x_init = PFGMPPKernel(aug_dim).sample_prior((n, 2), sigma_max=80.0, generator=g)
    x = sample_edm_heun(denoiser, x_init, edm_sigmas(levels))
    assert torch.isfinite(x).all(), "non-finite samples"
    values = [swd(x, sample_data(n, g)).item() for _ in range(3)]
    return sorted(values)[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20_000, help="training steps per model (20000)")
    p.add_argument("--batch", type=int, default=512, help="batch size (512)")
    p.add_argument(
        "--lr", type=float, default=1e-3, help="Adam learning rate, cosine decay (1e-3)"
    )
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay (0.999)")
    p.add_argument("--hidden", type=int, default=128, help="MLP width (128)")
    p.add_argument("--depth", type=int, default=3, help="MLP hidden layers (3)")
    p.add_argument("--n-eval", type=int, default=10_000, help="samples for SWD (10000)")
    p.add_argument("--seed", type=int, default=0, help="seed (0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--log-every", type=int, default=5000, help="print the loss every k steps")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    floor = finite_sample_floor(
        swd, sample_data, args.n_eval, repeats=5, generator=torch.Generator().manual_seed(123)
    ).item()
    rows, sw18 = [], {}
    for aug_dim in (16.0, math.inf):
        model, seconds, final_loss = train(aug_dim, args)
        sw18[aug_dim] = evaluate(model, aug_dim, args.n_eval, 18, seed=1000)
        sw64 = evaluate(model, aug_dim, args.n_eval, 64, seed=1000)
        rows.append((aug_dim, seconds, final_loss, sw18[aug_dim], sw64))

    setup = f"{args.steps} steps, batch {args.batch}, MLP {args.depth}x{args.hidden}"
    print(f"\n8-gaussians (sigma_data 0.5), {setup}, n = {args.n_eval}; floor = {floor:.4f}\n")
    print(
        "| D | train s | loss (last 1k) | SWD Heun 18 (35 NFE) | / floor | SWD Heun 64 | / floor |"
    )
    print("|---|---|---|---|---|---|---|")
    for aug_dim, seconds, loss, s18, s64 in rows:
        print(
            f"| {aug_dim:g} | {seconds:.0f} | {loss:.4f} | {s18:.4f} | {s18 / floor:.2f} | "
            f"{s64:.4f} | {s64 / floor:.2f} |"
        )
    checks = [
        ("SWD(D=16) <= 2.5 x floor", sw18[16.0] <= 2.5 * floor, sw18[16.0] / floor, 2.5),
        ("SWD(D=16) <= 1.2 x SWD(D=inf)", sw18[16.0] <= 1.2 * sw18[math.inf],
         sw18[16.0] / sw18[math.inf], 1.2),
    ]  # fmt: skip
    print()
    for name, ok, value, threshold in checks:
        print(f"{'PASS' if ok else 'FAIL'}: {name} (measured ratio {value:.2f}, threshold "
              f"{threshold})")  # fmt: skip
    return 0 if all(ok for _, ok, _, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
