"""Card 16 checks 1 and 2: SymmFlow generation and segmentation on 2-D 8-gaussians.

x in R^2 from flowforge's 8-gaussians (radius 4, std 0.5), y = one-hot of the mode index scaled to
[-1, 1] (8 channels). Model: MLPField on concat(x_t, y_t, e(t)), 3 x 256 SiLU, trained 10k steps
with SymmFlowLoss (image weight 0.9, beta 15, sigma_min 1e-4) and MedSymmFlow's recipe: AdamW
(lr 1e-3, wd 1e-7), one-cycle cosine schedule from 1e-6, batch 256, EMA 0.999 for sampling.

Card criteria (20 Euler steps unless stated):
1. generation from [eps_x, y_k]: >= 95 % of samples within 3 std (Euclidean) of mode k, every k;
2. segmentation backward from [x, eps_y], x from mode k: argmax = k for >= 95 % with 20 steps
   and >= 85 % with one Euler step.

Beside the trained model the table reports the exact field (the loss minimiser for undequantised
masks: the posterior mixture over modes of the Gaussian conditional velocities), i.e. the best
any network can do, and the same two models on the 8-gaussians scaled by 2 (radius 8, std 1),
which shows how much the 20-step segmentation depends on the data scale. Pass/fail is judged on
the card's data (radius 4) with the trained model.

Run: python benchmarks/symmflow_2d.py [--steps 10000]   (about a minute per model on one core)
Exits with status 1 if a card criterion fails.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor

from flowforge.data.toy2d import eight_gaussians, eight_gaussians_params
from flowforge.losses.symmflow import SymmFlowLoss, masks_to_channels
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.solvers.symmflow import symmflow_generate, symmflow_segment
from flowforge.train.ema import EMA

SIGMA_MIN = 1e-4


def exact_field(radius: float, std: float) -> Callable[[Tensor, Tensor], Tensor]:
    """E[u | x_t, y_t] for x ~ 8-gaussians paired with one-hot y_k (no dequantisation).

    Given k: x_t ~ N(t mu_k, (t^2 std^2 + a^2) I), y_t ~ N(a y_k, t^2 I), a = 1 - (1 - s) t;
    E[u_x | x_t, k] = mu_k + (t std^2 - (1 - s) a) (x_t - t mu_k) / (t^2 std^2 + a^2) and
    E[u_y | y_t, k] = (y_t - a y_k) / t - (1 - s) y_k, mixed by the posterior over k.
    """
    means, _ = eight_gaussians_params(radius, std)
    means, Y = means.double(), 2 * torch.eye(8, dtype=torch.float64) - 1  # (8, 2), (8, 8)
    s = SIGMA_MIN

    def field(state: Tensor, t: Tensor) -> Tensor:
        x, y = state[:, None, :2], state[:, None, 2:]  # (B, 1, 2), (B, 1, 8)
        t = t.clamp(1e-9, 1)[:, None, None]  # (B, 1, 1)
        a = 1 - (1 - s) * t
        var_x = t**2 * std**2 + a**2
        dx, dy = x - t * means, y - a * Y  # (B, 8, 2), (B, 8, 8)
        log_w = (
            -dx.square().sum(-1) / (2 * var_x[..., 0])
            - torch.log(var_x[..., 0])
            - dy.square().sum(-1) / (2 * t[..., 0] ** 2)
        )
        w = torch.softmax(log_w, dim=1)[..., None]  # (B, 8, 1)
        u_x = means + (t * std**2 - (1 - s) * a) / var_x * dx
        u_y = dy / t - (1 - s) * Y
        return torch.cat([(w * u_x).sum(1), (w * u_y).sum(1)], dim=1)

    return field


def train(args: argparse.Namespace, radius: float, std: float) -> tuple[torch.nn.Module, float]:
    """Train MLPField with SymmFlowLoss; returns (EMA model, seconds)."""
    torch.manual_seed(args.seed)
    cfg = MLPConfig(dim=2 + 8, hidden=args.hidden, depth=args.depth)
    model = MLPField(cfg)
    ema = EMA(model, decay=args.ema)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-7)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05, div_factor=args.lr / 1e-6
    )
    loss_fn = SymmFlowLoss(x_channels=2, image_weight=0.9, dequant_beta=15.0)
    g = torch.Generator().manual_seed(args.seed + 1)
    start = time.perf_counter()
    for step in range(args.steps):
        x, k = eight_gaussians(args.batch, g, radius=radius, std=std)
        loss = loss_fn(model, x, masks_to_channels(k, 8, x.dtype), generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update(model)
        if args.log_every and (step + 1) % args.log_every == 0:
            print(f"  radius {radius:g} step {step + 1}: loss {loss.item():.4f}", flush=True)
    return ema.module, time.perf_counter() - start


@torch.no_grad()
def evaluate(
    field: Callable, radius: float, std: float, n: int, seed: int, dtype: torch.dtype
) -> dict[str, Tensor]:
    """Per-mode rates (8,): generation hits (20 steps), segmentation with 20 and 1 steps."""
    means = eight_gaussians_params(radius, std)[0].to(dtype)
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(n) % 8  # n / 8 per mode
    x = symmflow_generate(field, masks_to_channels(k, 8, dtype), 2, n_steps=20, generator=g)
    hit = ((x - means[k]).norm(dim=1) < 3 * std).double()
    out = {"gen": torch.stack([hit[k == j].mean() for j in range(8)])}
    x = means[k] + std * torch.randn(n, 2, generator=g, dtype=dtype)  # x from mode k
    for m in (20, 1):
        y = symmflow_segment(field, x, 8, n_steps=m, generator=g)
        ok = (y.argmax(1) == k).double()
        out[f"seg{m}"] = torch.stack([ok[k == j].mean() for j in range(8)])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10_000, help="training steps (10000)")
    p.add_argument("--batch", type=int, default=256, help="batch size (256)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (1e-3)")
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay used to sample (0.999)")
    p.add_argument("--hidden", type=int, default=256, help="MLP width (256)")
    p.add_argument("--depth", type=int, default=3, help="MLP hidden layers (3)")
    p.add_argument("--n-eval", type=int, default=8000, help="evaluation samples, n/8 per mode")
    p.add_argument("--seed", type=int, default=0, help="seed (0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--log-every", type=int, default=2500, help="print the loss every k steps")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    rows, card = [], None
    for radius, std in ((4.0, 0.5), (8.0, 1.0)):
        model, seconds = train(args, radius, std)
        for name, field, secs, dtype in (
            ("exact field", exact_field(radius, std), None, torch.float64),
            (f"MLP {args.depth}x{args.hidden}", model, seconds, torch.float32),
        ):
            res = evaluate(field, radius, std, args.n_eval, seed=1000, dtype=dtype)
            rows.append((radius, std, name, secs, res))
            if radius == 4.0 and secs is not None:
                card = res

    print(
        f"\n8-gaussians + one-hot map, {args.steps} steps, batch {args.batch}, n = {args.n_eval}"
    )
    print("rates: mean over modes (worst mode)\n")
    print("| data | field | train s | generation, 20 steps | segmentation, 20 | segmentation, 1 |")
    print("|---|---|---|---|---|---|")
    for radius, std, name, secs, res in rows:
        cells = " | ".join(f"{res[c].mean():.3f} ({res[c].min():.3f})" for c in res)
        train_s = "-" if secs is None else f"{secs:.0f}"
        print(f"| r={radius:g}, std={std:g} | {name} | {train_s} | {cells} |")

    checks = [
        ("generation >= 0.95 for every mode", card["gen"].min().item(), 0.95),
        ("segmentation, 20 steps >= 0.95", card["seg20"].mean().item(), 0.95),
        ("segmentation, 1 step >= 0.85", card["seg1"].mean().item(), 0.85),
    ]
    print("\nCard criteria (trained MLP, radius 4, std 0.5):")
    for name, value, threshold in checks:
        print(f"{'PASS' if value >= threshold else 'FAIL'}: {name} (measured {value:.3f})")
    return 0 if all(value >= threshold for _, value, threshold in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
