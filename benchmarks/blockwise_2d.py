"""Card 10 checks 2 and 3: blockwise flow matching (BFM) on 2-D 8-gaussians.

Models (float32, one core):
* BFM: M = 4 segment nets ``SegmentMLP`` (2 x 128, adaLN on [e(t), h]) + a shared guidance net G
  (``FeatureMLP`` 2 x 128 -> 16 features), trained with ``BlockwiseLoss`` (even split, alignment
  lambda = 0.05 of a projector P(h) to a fixed random 2-layer MLP of x_1: the toy stand-in for
  DINOv2). P is training-only and not counted.
* Single: one ``MLPField`` (3 hidden SiLU layers) whose width makes its parameters equal to
  G + sum_k V_k, trained with ``FlowMatchingLoss`` on the same data stream and recipe
  (Adam, cosine lr decay from 1e-3, batch 256).
* FRN (stage 2, G and V_k frozen): ``FeatureMLP`` 2 x 64 trained with ``FeatureResidualLoss``.

Per-step cost is counted honestly as parameters touched per sample and step (= multiply-adds of
an MLP up to biases): single = all its parameters; BFM = G + V_k; BFM + FRN = FRN + V_k on the
steps that skip G (G + V_k on the first step of each segment).

Card criteria:
2. SWD(BFM, 8 Euler steps per segment) <= 1.1 x SWD(single, same 32 Euler steps); feeding the
   segment index reversed (k <-> M-1-k) makes SWD >= 2 x worse (routing is exercised).
3. FRN: relative feature error ||h_hat - h|| / ||h|| < 0.1 at segment midpoints, SWD with FRN
   within 10 % of SWD without, while G runs M times instead of M x steps.

SWD: sliced W2 (512 directions) of 4096 samples against 4096 fresh data, mean over 3 seeds,
same noise and directions for paired comparisons; floor = fresh data vs fresh data.

Run: python benchmarks/blockwise_2d.py [--quick]     (full: a few minutes on one core)
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

from flowforge.data.toy2d import eight_gaussians
from flowforge.distill.blockwise import (
    BlockwiseField,
    BlockwiseLoss,
    FeatureResidualLoss,
    blockwise_sample,
    segment_boundaries,
)
from flowforge.distill.blockwise_nets import (
    FeatureMLP,
    FeatureMLPConfig,
    SegmentMLP,
    SegmentMLPConfig,
    random_feature_target,
)
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.solvers.ode import sample_euler

M, F_DIM, STEPS_PER_SEG = 4, 16, 8


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_bfm() -> BlockwiseField:
    seg = lambda: SegmentMLP(SegmentMLPConfig(hidden=128, depth=2, feature_dim=F_DIM))  # noqa: E731
    guidance = FeatureMLP(FeatureMLPConfig(out_dim=F_DIM, hidden=128, depth=2))
    projector = nn.Sequential(nn.Linear(F_DIM, 64), nn.SiLU(), nn.Linear(64, 32))
    return BlockwiseField(seg, M, guidance=guidance, projector=projector)


def build_single(target_params: int) -> MLPField:
    best = min(
        range(64, 1024),
        key=lambda h: abs(n_params(MLPField(MLPConfig(hidden=h, depth=3))) - target_params),
    )
    return MLPField(MLPConfig(hidden=best, depth=3))


def train(model: nn.Module, objective, steps: int, batch: int, seed: int, lr: float) -> float:
    """Adam with cosine decay to 0 on a fixed 8-gaussians stream; returns seconds."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps))
    )
    start = time.perf_counter()
    for _ in range(steps):
        x_1, _ = eight_gaussians(batch, generator=g)
        loss = objective(model, x_1, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return time.perf_counter() - start


def swd(samples: list[Tensor], seed: int) -> float:
    """Mean over evaluation seeds of SW2 against fresh data (same directions per seed)."""
    values = []
    for i, x in enumerate(samples):
        data, _ = eight_gaussians(len(x), generator=torch.Generator().manual_seed(10_000 + i))
        dirs = torch.Generator().manual_seed(seed + i)
        values.append(sliced_wasserstein(x, data, 512, generator=dirs).item())
    return sum(values) / len(values)


def relative_feature_error(field: BlockwiseField, frn: nn.Module, noises: list[Tensor]) -> dict:
    """||h_hat - h|| / ||h|| at each segment midpoint, on the training path and on the sampler's
    trajectory (8 Euler steps per segment, h_start = G at the segment's first state)."""
    tau = segment_boundaries(M)
    path_err, traj_err = [0.0] * M, [0.0] * M
    with torch.no_grad():
        for z in noises:
            x_1, _ = eight_gaussians(len(z), generator=torch.Generator().manual_seed(7))
            for k in range(M):  # on path: x_{t_s}, x_t from the same (x_0, x_1)
                t_s, t = tau[k].expand(len(z)), (tau[k] + 0.5 / M).expand(len(z))
                x_ts = t_s[:, None] * x_1 + (1 - t_s[:, None]) * z
                x_t = t[:, None] * x_1 + (1 - t[:, None]) * z
                h = field.features(x_t, t)
                h_hat = field.features(x_ts, t_s) + 0.5 * frn(x_t, t)
                path_err[k] += ((h_hat - h).norm() / h.norm()).item() / len(noises)
            x = z.clone()
            for k in range(M):  # along the sampler's own trajectory
                grid = torch.linspace(tau[k].item(), tau[k + 1].item(), STEPS_PER_SEG + 1)
                for n in range(STEPS_PER_SEG):
                    t = grid[n].expand(len(x))
                    h = field.features(x, t)
                    if n == 0:
                        h_start = h
                    if n == STEPS_PER_SEG // 2:  # t = segment midpoint
                        h_hat = h_start + 0.5 * frn(x, t)
                        traj_err[k] += ((h_hat - h).norm() / h.norm()).item() / len(noises)
                    x = x + (grid[n + 1] - grid[n]) * field.velocity(x, t, segment=k, features=h)
    return {"path": path_err, "trajectory": traj_err}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 1 min)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (8000; quick 800)")
    parser.add_argument("--frn-steps", type=int, default=None, help="FRN steps (3000; quick 400)")
    parser.add_argument("--frn-hidden", type=int, default=64, help="FRN width (2 layers)")
    parser.add_argument("--batch", type=int, default=256, help="batch size")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--n-eval", type=int, default=None, help="samples per seed (4096)")
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "blockwise_2d.md"), help="table"
    )
    args = parser.parse_args()
    steps = args.steps or (800 if args.quick else 8000)
    frn_steps = args.frn_steps or (400 if args.quick else 3000)
    n_eval = args.n_eval or (2048 if args.quick else 4096)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)

    torch.manual_seed(args.seed)
    bfm = build_bfm()
    n_g, n_v = n_params(bfm.guidance), n_params(bfm.segments[0])
    n_bfm = n_g + M * n_v
    single = build_single(n_bfm)
    n_single = n_params(single)
    target = random_feature_target(2, 32, 64, seed=args.seed)
    t_bfm = train(
        bfm, BlockwiseLoss(align_weight=0.05, align_target=target), steps, args.batch, 1, args.lr
    )
    t_single = train(single, FlowMatchingLoss(), steps, args.batch, 1, args.lr)
    bfm.eval().requires_grad_(False)
    single.eval().requires_grad_(False)

    # diagnostic (no criterion): the same segment nets without G, to see how much the shared
    # guidance features carry and so how strongly the reversed-segment falsifier can bite
    plain = BlockwiseField(lambda: SegmentMLP(SegmentMLPConfig(hidden=128, depth=2)), M)
    t_plain = train(plain, BlockwiseLoss(), steps, args.batch, 1, args.lr)
    plain.eval().requires_grad_(False)

    frn = FeatureMLP(FeatureMLPConfig(out_dim=F_DIM, hidden=args.frn_hidden, depth=2))
    n_frn = n_params(frn)
    t_frn = train(frn, FeatureResidualLoss(bfm), frn_steps, args.batch, 2, args.lr)
    frn.eval().requires_grad_(False)

    noises = [
        torch.randn(n_eval, 2, generator=torch.Generator().manual_seed(100 + i)) for i in range(3)
    ]
    floor = swd(
        [
            eight_gaussians(n_eval, generator=torch.Generator().manual_seed(500 + i))[0]
            for i in range(3)
        ],
        0,
    )
    calls = []
    bfm.guidance.register_forward_hook(lambda *a: calls.append(1))
    rows, results = [], {}
    with torch.no_grad():
        for n in (1, 2, 4, 8):
            total = M * n
            grid = torch.linspace(0, 1, total + 1)
            s_single = swd([sample_euler(single, z, grid) for z in noises], 0)
            calls.clear()
            s_bfm = swd([blockwise_sample(bfm, z, n) for z in noises], 0)
            g_plain = len(calls) // len(noises)
            calls.clear()
            s_frn = swd([blockwise_sample(bfm, z, n, frn=frn) for z in noises], 0)
            g_frn = len(calls) // len(noises)
            s_rev = swd(
                [blockwise_sample(bfm, z, n, segment_map=range(M - 1, -1, -1)) for z in noises], 0
            )
            cost_frn = M * (n_g + n_v) + M * (n - 1) * (n_frn + n_v)
            rows.append(
                f"| {n} | {total} | {s_single:.4f} | {s_bfm:.4f} | {s_bfm / s_single:.3f} | "
                f"{s_rev:.4f} | {s_rev / s_bfm:.2f} | {s_frn:.4f} | "
                f"{100 * (s_frn - s_bfm) / s_bfm:+.1f} % | {g_plain} / {g_frn} | "
                f"{total * n_single / 1e6:.2f} / {total * (n_g + n_v) / 1e6:.2f} / "
                f"{cost_frn / 1e6:.2f} |"
            )
            results[n] = (s_single, s_bfm, s_rev, s_frn, g_plain, g_frn)
    err = relative_feature_error(bfm, frn, noises)
    with torch.no_grad():
        n = STEPS_PER_SEG
        s_plain = swd([blockwise_sample(plain, z, n) for z in noises], 0)
        rev = range(M - 1, -1, -1)
        s_plain_rev = swd([blockwise_sample(plain, z, n, segment_map=rev) for z in noises], 0)

    s_single, s_bfm, s_rev, s_frn, g_plain, g_frn = results[STEPS_PER_SEG]
    checks = [
        (
            "2. SWD(BFM) / SWD(single) at 8 steps/segment <= 1.1",
            s_bfm / s_single,
            s_bfm / s_single <= 1.1,
        ),
        ("2. falsifier: SWD(reversed) / SWD(BFM) >= 2", s_rev / s_bfm, s_rev / s_bfm >= 2),
        (
            "3. FRN relative feature error < 0.1 (max over segment midpoints, sampler trajectory)",
            max(err["trajectory"]),
            max(err["trajectory"]) < 0.1,
        ),
        (
            "3. FRN relative feature error < 0.1 (max over segment midpoints, training path)",
            max(err["path"]),
            max(err["path"]) < 0.1,
        ),
        (
            "3. |SWD(FRN) - SWD(BFM)| / SWD(BFM) < 10 %",
            abs(s_frn - s_bfm) / s_bfm,
            abs(s_frn - s_bfm) / s_bfm < 0.1,
        ),
        (
            f"3. G calls with FRN = M ({M}), without = M x steps ({M * STEPS_PER_SEG})",
            g_frn,
            g_frn == M and g_plain == M * STEPS_PER_SEG,
        ),
    ]
    command = "python " + " ".join(sys.argv)
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}"
    machine += ", 1 thread"
    lines = [
        "# Blockwise flow matching on 8 gaussians (card 10, checks 2 and 3)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}  ",
        f"Training: {steps} steps, batch {args.batch}, Adam lr {args.lr} cosine decay; "
        f"FRN {frn_steps} steps. "
        f"Wall clock: BFM {t_bfm:.0f} s, single {t_single:.0f} s, FRN {t_frn:.0f} s.",
        "",
        "| net | parameters |",
        "|---|---|",
        f"| single MLPField 3 x {single.config.hidden} | {n_single} |",
        f"| BFM guidance G (FeatureMLP 2 x 128 -> {F_DIM}) | {n_g} |",
        f"| BFM segment net V_k (SegmentMLP 2 x 128, adaLN) | {n_v} (x {M}) |",
        f"| BFM total G + sum V_k (projector P, training only, not counted) | {n_bfm} |",
        f"| FRN (FeatureMLP 2 x {args.frn_hidden}) | {n_frn} |",
        "",
        f"Sliced W2 (512 directions, {n_eval} samples, mean of 3 seeds); "
        f"floor (data vs data) {floor:.4f}.",
        "Cost = parameters touched per sample over the whole sampling run, in millions "
        "(single / BFM: G + V_k per step / BFM+FRN: G + V_k at each segment start, "
        "FRN + V_k after).",
        "",
        "| steps/seg | total Euler steps | single | BFM | BFM / single | BFM reversed "
        "| reversed / BFM | BFM + FRN | FRN change | G calls (no FRN / FRN) "
        "| cost (M) single / BFM / BFM+FRN |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Diagnostic, BFM without guidance net ({M} x {n_params(plain.segments[0])} parameters, "
        f"{t_plain:.0f} s), 8 steps/segment: SWD {s_plain:.4f}, reversed {s_plain_rev:.4f} "
        f"(ratio {s_plain_rev / s_plain:.2f}).",
        "",
        "FRN relative feature error ||h_hat - h|| / ||h|| at segment midpoints (k = 0 noisiest):",
        "",
        "| where | " + " | ".join(f"k = {k}" for k in range(M)) + " |",
        "|---|" + "---|" * M,
        "| sampler trajectory (8 steps/seg) | "
        + " | ".join(f"{e:.4f}" for e in err["trajectory"])
        + " |",
        "| training path (same x_0, x_1) | " + " | ".join(f"{e:.4f}" for e in err["path"]) + " |",
        "",
        "| card criterion | measured | pass |",
        "|---|---|---|",
        *[f"| {name} | {value:.4g} | {'yes' if ok else 'NO'} |" for name, value, ok in checks],
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    return 0 if all(ok for _, _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
