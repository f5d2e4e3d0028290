"""Card 08 checks 1-3: TwinFlow on 2-D 8-gaussians (radius 4, std 0.5).

Network: MLPField(dim=2, hidden=128, depth=3, n_times=2) taking (x, (t, s)), float32, batch 256,
Adam lr 1e-3 (the MNIST tutorial uses 2e-4; at 1k steps 1e-3 gave 1-NFE SWD 0.40 vs 1.17).

1. Sign check. Phase A trains the positive branch on all 8 modes (L_real), the one-step jump
   G(z, (0, 1)) by regression onto a map T(z) that sends z into the 4 adjacent modes 0-3 (by the
   quadrant of z's angle, T(z) = mu_k + std z), and the negative branch on the jump's fakes
   (L_adv), jointly until converged. Phase B: only L_rect for 500 steps at Adam lr 1e-4 (card),
   from the phase-A weights, once with Delta_v and once with -Delta_v (a control). Criterion:
   the fraction of 10k one-step samples within 3 std of the 4 missing modes rises by >= 5
   points with Delta_v and does not rise with -Delta_v. The negative branch's FM loss (L_adv on
   fresh fakes) is re-measured after phase B, so a drifting fake flow is visible.
2. One-step quality. Full TwinFlowLoss() vs RCGM-only (L_base) at equal steps per seed. Card:
   1-NFE SWD <= 1.5 x the 100-step positive-branch (s = t, Euler) SWD of the same model, and
   1-NFE SWD below RCGM-only's, on 3/3 seeds. The card's 3 seeds x 20k steps do not fit the
   10-minute budget here (one full TwinFlow step is about 15 ms on this shared core, 200-step
   timing below), so full mode runs 3 seeds x 6000 steps at batch 256 (equal steps for both).
3. Mode coverage. Every mode receives 12.5 % +- 3 % of 10k one-step samples (nearest mean).

SWD: sliced W2 with 512 fixed directions, 10k samples vs 10k fresh data; floor = data vs data.

Run: python benchmarks/twinflow_2d.py [--quick]   (full about 8 minutes on one core)
Exits with status 1 if a card criterion fails.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from flowforge.data.toy2d import eight_gaussians, eight_gaussians_params
from flowforge.distill.twinflow import TwinFlowLoss
from flowforge.distill.twinflow_sampling import twinflow_sample
from flowforge.losses.distances import mse
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.models.mlp import MLPConfig, MLPField

MEANS, STD = eight_gaussians_params()
N_EVAL = 10_000


def make_net(args: argparse.Namespace, seed: int) -> MLPField:
    torch.manual_seed(seed)
    return MLPField(MLPConfig(dim=2, hidden=args.hidden, depth=3, n_times=2))


def times(a: Tensor, b: Tensor) -> Tensor:
    return torch.stack([a, b], dim=-1)


def four_mode_map(z: Tensor) -> Tensor:
    """T(z) = mu_k + std z, k = quadrant of z's angle (modes 0-3: a half circle)."""
    k = (torch.atan2(z[:, 1], z[:, 0]) % (2 * math.pi) // (math.pi / 2)).long().clamp(0, 3)
    return MEANS[k] + STD * z


def missing_fraction(x: Tensor) -> float:
    """Fraction of samples within 3 std of modes 4-7."""
    d = torch.cdist(x, MEANS[4:])  # (n, 4)
    return (d.min(1).values < 3 * STD).float().mean().item()


def mode_shares(x: Tensor) -> Tensor:
    """(8,) fraction of samples whose nearest mean is mode k."""
    k = torch.cdist(x, MEANS).argmin(1)
    return torch.bincount(k, minlength=8).float() / len(x)


@torch.no_grad()
def one_step(net: nn.Module, seed: int = 123) -> Tensor:
    z = torch.randn(N_EVAL, 2, generator=torch.Generator().manual_seed(seed))
    return twinflow_sample(net, z, 1)


@torch.no_grad()
def adv_loss(net: nn.Module, loss_fn: TwinFlowLoss, seed: int = 7) -> float:
    """Negative-branch FM loss on fresh fakes (mean over 8 batches of 1024)."""
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(8):
        z = torch.randn(1024, 2, generator=g)
        x_fake = z + net(z, times(torch.zeros(1024), torch.ones(1024)))
        vals.append(loss_fn.adversarial(net, x_fake, torch.rand(1024, generator=g), generator=g))
    return torch.cat(vals).mean().item()


class Negated(nn.Module):
    """The same network with both time inputs negated: swaps branches, so Delta_v -> -Delta_v."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, tt: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.net(x, -tt, cond)


def check1(args: argparse.Namespace) -> tuple[list[str], bool]:
    net = make_net(args, 0)
    loss_fn = TwinFlowLoss()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(100)
    for _ in range(args.pretrain_steps):  # phase A
        x_1, _ = eight_gaussians(args.batch, g)
        B = len(x_1)
        x_0 = torch.randn(B, 2, generator=g)
        t = torch.rand(B, generator=g)
        x_t = t[:, None] * x_1 + (1 - t[:, None]) * x_0
        real = mse(net(x_t, times(t, t)), x_1 - x_0)
        z = torch.randn(B, 2, generator=g)
        pred_fake = net(z, times(torch.zeros(B), torch.ones(B)))
        gen = mse(pred_fake, four_mode_map(z) - z)
        adv = loss_fn.adversarial(net, z + pred_fake, torch.rand(B, generator=g), generator=g)
        loss = (real + gen + adv).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    before, adv_before = missing_fraction(one_step(net)), adv_loss(net, loss_fn)
    rows, ok = [], True
    for sign in (+1, -1):
        net.load_state_dict(state)
        opt = torch.optim.Adam(net.parameters(), lr=args.rect_lr)
        delta_net = net if sign > 0 else Negated(net)
        g = torch.Generator().manual_seed(200)
        for step in range(args.rect_steps):  # phase B: L_rect only
            z = torch.randn(args.batch, 2, generator=g)
            pred_fake = net(z, times(torch.zeros(args.batch), torch.ones(args.batch)))
            loss = loss_fn.rectify(delta_net, pred_fake, z + pred_fake, generator=g).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if args.verbose and (step + 1) % 50 == 0:
                frac = 100 * missing_fraction(one_step(net))
                print(f"  sign {sign:+d} step {step + 1}: missing {frac:.2f} %", flush=True)
        after, adv_after = missing_fraction(one_step(net)), adv_loss(net, loss_fn)
        gain = 100 * (after - before)
        passed = gain >= 5 if sign > 0 else gain <= 0
        ok &= passed
        rows.append(
            f"| {'+Delta_v' if sign > 0 else '-Delta_v (control)'} | {100 * before:.2f} | "
            f"{100 * after:.2f} | {gain:+.2f} | {'>= +5' if sign > 0 else '<= 0'} | "
            f"{adv_before:.3f} -> {adv_after:.3f} | {'pass' if passed else 'FAIL'} |"
        )
    return rows, ok


def train(args: argparse.Namespace, loss_fn: TwinFlowLoss, seed: int) -> tuple[nn.Module, float]:
    net = make_net(args, seed)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(1000 + seed)
    start = time.perf_counter()
    for _ in range(args.steps):
        x_1, _ = eight_gaussians(args.batch, g)
        loss = loss_fn(net, x_1, generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net, time.perf_counter() - start


def swd(x: Tensor, ref: Tensor) -> float:
    g = torch.Generator().manual_seed(3)
    return sliced_wasserstein(x.double(), ref.double(), generator=g).item()


def time_200(args: argparse.Namespace) -> tuple[float, float]:
    out = []
    for loss_fn in (TwinFlowLoss(), TwinFlowLoss(1, 0, 0, 0, 0)):
        net, sec = train(argparse.Namespace(**{**vars(args), "steps": 200}), loss_fn, 99)
        out.append(1000 * sec / 200)
    return out[0], out[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 seed, short runs (under a minute)")
    p.add_argument("--steps", type=int, default=None, help="steps per run (6000; quick 600)")
    p.add_argument("--seeds", type=int, default=None, help="seeds for check 2/3 (3; quick 1)")
    p.add_argument("--batch", type=int, default=256, help="batch size (256)")
    p.add_argument("--hidden", type=int, default=128, help="MLP width (128)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam lr (1e-3)")
    p.add_argument("--pretrain-steps", type=int, default=None, help="check 1 phase A (3000)")
    p.add_argument("--rect-steps", type=int, default=500, help="check 1 phase B steps (500)")
    p.add_argument("--rect-lr", type=float, default=1e-4, help="check 1 phase B lr (1e-4)")
    p.add_argument("--verbose", action="store_true", help="print check-1 progress")
    p.add_argument("--check1-only", action="store_true", help="run only check 1")
    p.add_argument(
        "--out", default="benchmarks/results/twinflow_2d.md", help="markdown output path"
    )
    args = p.parse_args()
    args.steps = args.steps or (600 if args.quick else 6000)
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.pretrain_steps = args.pretrain_steps or (400 if args.quick else 3000)
    torch.set_num_threads(1)
    t_all = time.perf_counter()

    ms_twin, ms_rcgm = time_200(args)
    print(f"200-step timing: TwinFlow {ms_twin:.1f} ms/step, RCGM-only {ms_rcgm:.1f} ms/step")

    rows1, ok1 = check1(args)
    print("\n".join(rows1), flush=True)
    if args.check1_only:
        return 0 if ok1 else 1

    ref, _ = eight_gaussians(N_EVAL, torch.Generator().manual_seed(11))
    ref2, _ = eight_gaussians(N_EVAL, torch.Generator().manual_seed(12))
    floor = swd(ref2, ref)
    rows2, rows3, ok2, ok3 = [], [], True, True
    for seed in range(args.seeds):
        twin, sec_t = train(args, TwinFlowLoss(), seed)
        rcgm, sec_r = train(args, TwinFlowLoss(1, 0, 0, 0, 0), seed)
        with torch.no_grad():
            z = torch.randn(N_EVAL, 2, generator=torch.Generator().manual_seed(50 + seed))
            x1 = twinflow_sample(twin, z, 1)
            s1, s100 = swd(x1, ref), swd(twinflow_sample(twin, z, 100, style="mul"), ref)
            r1 = swd(twinflow_sample(rcgm, z, 1), ref)
        pass2 = s1 <= 1.5 * s100 and s1 < r1
        ok2 &= pass2
        rows2.append(
            f"| {seed} | {s1:.3f} | {s100:.3f} | {s1 / s100:.2f} | {r1:.3f} | {floor:.3f} | "
            f"{sec_t:.0f} / {sec_r:.0f} | {'pass' if pass2 else 'FAIL'} |"
        )
        shares = mode_shares(x1)
        pass3 = bool(((shares - 0.125).abs() <= 0.03).all())
        ok3 &= pass3
        rows3.append(
            f"| {seed} | "
            + " | ".join(f"{100 * v:.1f}" for v in shares)
            + f" | {'pass' if pass3 else 'FAIL'} |"
        )
        print(rows2[-1], "\n" + rows3[-1], flush=True)

    cmd = "python " + " ".join(sys.argv)
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}"
    lines = [
        "# TwinFlow on 2-D 8-gaussians (card 08 checks 1-3)",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {machine}, 1 thread; total {time.perf_counter() - t_all:.0f} s  ",
        f"MLP 3 x {args.hidden} SiLU, n_times=2; batch {args.batch}; Adam lr {args.lr}; "
        f"{args.steps} steps per run, {args.seeds} seed(s). 200-step timing: TwinFlow "
        f"{ms_twin:.1f} ms/step, RCGM-only {ms_rcgm:.1f} ms/step.",
        "",
        f"## 1. Sign check ({args.pretrain_steps} phase-A steps, {args.rect_steps} L_rect steps "
        f"at lr {args.rect_lr})",
        "",
        "| Delta_v | missing-mode % before | after | change (pts) | criterion "
        "| L_adv before -> after | result |",
        "|---|---|---|---|---|---|---|",
        *rows1,
        "",
        "## 2. One-step quality (sliced W2, 10k samples)",
        "",
        "| seed | TwinFlow 1 NFE | positive branch 100 NFE | ratio (<= 1.5) "
        "| RCGM-only 1 NFE | floor | train s (twin / rcgm) | result |",
        "|---|---|---|---|---|---|---|---|",
        *rows2,
        "",
        "## 3. Mode coverage of 10k one-step samples (% per mode, 12.5 +- 3)",
        "",
        "| seed | " + " | ".join(f"m{k}" for k in range(8)) + " | result |",
        "|---" * 10 + "|",
        *rows3,
        "",
        f"Overall: check 1 {'pass' if ok1 else 'FAIL'}, check 2 {'pass' if ok2 else 'FAIL'}, "
        f"check 3 {'pass' if ok3 else 'FAIL'}.",
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0 if (ok1 and ok2 and ok3) else 1


if __name__ == "__main__":
    sys.exit(main())
