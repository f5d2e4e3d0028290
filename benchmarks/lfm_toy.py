"""Card 01 (LFM) checks 1 and 2 at the card's full budget, with its two falsification controls.

Flow matching on the latents of a LatentCodec, 2-D 8-gaussians (radius 4, std 0.5):

  check 1   identity autoencoder, s = 1
  check 2   random-orthogonal linear 2 -> 2 autoencoder E(x) = Q x, D(z) = Q^T z, s = 0.5;
            samples decoded by D(z / s)

Training (card): MLP velocity 3 x 256 SiLU (``MLPField``), 10k steps, batch 1024, Adam 1e-3,
``FlowMatchingLoss`` on the codec's latents. Sampling: Euler, 100 uniform steps from noise at
t = 0 to data at t = 1 (flowforge's convention; the card integrates its t = 1 -> 0). Quality:
sliced W2 (512 fixed directions) between n decoded samples and n fresh held-out points, median
over 3 held-out draws, divided by the finite-sample floor (median over 5 pairs of fresh target
sets of the same size).

Criteria: both checks SWD <= 2.5 x floor; the controls must fail by a wide margin (> 10 x floor):
"forgot / s" decodes check 2's latents with D(z) instead of D(z / s) (ring at half radius), and
"sign error" trains check 1 with the target negated (u_t = x_0 - x_1, samples run away).

Run: python benchmarks/lfm_toy.py [--steps 10000] [--batch 1024]   (minutes on one CPU core)
Exits with status 1 if a criterion fails.
"""

from __future__ import annotations

import argparse
import sys
import time

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


class LinearAutoencoder(nn.Module):
    """E(x) = Q x, D(z) = Q^T z for an orthogonal Q."""

    def __init__(self, Q: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("Q", Q)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.Q.T

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.Q


def swd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sliced W2 with 512 fixed directions (the same for every comparison)."""
    return sliced_wasserstein(a, b, 512, generator=torch.Generator().manual_seed(7))


def make_codec(check: int) -> LatentCodec:
    if check == 1:
        Q, s = torch.eye(2), 1.0
    else:
        Q, _ = torch.linalg.qr(torch.randn(2, 2, generator=torch.Generator().manual_seed(1)))
        s = 0.5
    return LatentCodec(LinearAutoencoder(Q), torch.zeros(2), torch.full((2,), s))


def train(codec: LatentCodec, args: argparse.Namespace, sign: float = 1.0) -> MLPField:
    """The card's training run; ``sign=-1`` regresses on the negated target (the control)."""
    torch.manual_seed(args.seed)
    model = MLPField(MLPConfig(dim=2, hidden=args.hidden, depth=3, activation="silu"))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = FlowMatchingLoss()
    g = torch.Generator().manual_seed(args.seed)

    def field(x, t, cond=None):
        return sign * model(x, t, cond)  # sign = -1: v is fitted to x_0 - x_1

    for _ in range(args.steps):
        x, _ = eight_gaussians(args.batch, g)
        with torch.no_grad():
            z_1 = codec.encode(x)
        loss = loss_fn(field, z_1, generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


def ratio(x: torch.Tensor, floor: float, n: int) -> tuple[float, float]:
    """(median SWD over 3 fresh held-out draws, that median / floor)."""
    g = torch.Generator().manual_seed(12)
    values = sorted(swd(x, eight_gaussians(n, g)[0]).item() for _ in range(3))
    return values[1], values[1] / floor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10000, help="training steps (10000)")
    parser.add_argument("--batch", type=int, default=1024, help="batch size (1024)")
    parser.add_argument("--hidden", type=int, default=256, help="MLP width (256)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    parser.add_argument("--n-eval", type=int, default=2000, help="samples per SWD set (2000)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (0)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    n = args.n_eval
    floor = finite_sample_floor(
        swd, eight_gaussians, n, repeats=5, generator=torch.Generator().manual_seed(3)
    ).item()
    z_0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(11))
    grid = uniform_grid(100)
    rows, ok = [], True

    def report(name: str, x: torch.Tensor, seconds: float, want_pass: bool) -> None:
        nonlocal ok
        value, r = ratio(x, floor, n)
        passed = r <= 2.5 if want_pass else r > 10.0
        ok &= passed
        bar = "<= 2.5" if want_pass else "> 10 (control)"
        rows.append(f"| {name} | {seconds:.0f} | {value:.4f} | {r:.2f} | {bar} | {passed} |")

    for check in (1, 2):
        codec = make_codec(check)
        start = time.perf_counter()
        model = train(codec, args)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            z = sample_euler(model, z_0, grid)
            report(f"check {check}: D(z / s)", codec.decode(z), seconds, True)
            if check == 2:
                report("control: forgot / s, D(z)", codec.autoencoder.decode(z), 0.0, False)
    codec = make_codec(1)
    start = time.perf_counter()
    model = train(codec, args, sign=-1.0)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        report(
            "control: sign error in u_t",
            codec.decode(sample_euler(model, z_0, grid)),
            seconds,
            False,
        )

    print(
        f"LFM toy (card 01): {args.steps} steps, batch {args.batch}, MLP 3 x {args.hidden} SiLU, "
        f"Adam {args.lr}, Euler 100 steps (NFE 100), n = {n}, SWD floor {floor:.4f}\n"
    )
    print("| run | train s | SWD | SWD / floor | bar | pass |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nall criteria: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
