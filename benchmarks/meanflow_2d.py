"""Card 06, check 2: one-step MeanFlow on 8 gaussians against flow matching of the same size.

Trains, from scratch and with the same recipe (3 x 256 SiLU MLP on raw times, batch 512, Adam
1e-3 with cosine decay, EMA 0.999, evaluation of the EMA weights):

    FM      plain conditional flow matching (n_times = 1), sampled with 1 and 100 Euler steps
    MF      MeanFlowLoss() with the card's defaults (logit-normal(-0.4, 1) in the card's time,
            25 % r != t, p = 1, c = 0.01), network inputs (x, t, r - t), 1, 2 and 4 NFE
    MF+disp MF plus DM1's dispersive term: InfoNCE-L2 (tau = 0.5, diagonal included) on the
            second hidden activation (``net.3``), lambda = 0.5

and reports sliced W2 (512 directions, 4096 samples against 4096 fresh data points) beside the
finite-sample floor (fresh data against fresh data). Pass (card): SWD(MF, 1 NFE) <= 3 x
SWD(FM, 100 Euler) and <= 0.2 x SWD(FM, 1 Euler step). Exits 1 if a criterion fails.

    python benchmarks/meanflow_2d.py            # full: 10k steps per model
    python benchmarks/meanflow_2d.py --quick    # 1k steps (EMA with warm-up), about 50 s

Full mode takes about 8 CPU-minutes on one thread (FM 70 s, MF 140 s, MF+disp 260 s).
"""

from __future__ import annotations

import argparse
import functools
import platform
import sys
import time
from pathlib import Path

import torch

from flowforge.data.toy2d import eight_gaussians
from flowforge.distill.dispersive import dispersive_infonce_l2
from flowforge.distill.meanflow import MeanFlowLoss, meanflow_sample
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.solvers.ode import sample_euler
from flowforge.train.ema import EMA

N_EVAL = 4096


def train(objective, n_times: int, steps: int, seed: int, warmup: bool) -> tuple[MLPField, float]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = MLPField(MLPConfig(dim=2, hidden=256, depth=3, time_embed_dim=0, n_times=n_times))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    ema = EMA(net, decay=0.999, warmup=warmup)  # warm-up only in --quick
    start = time.perf_counter()
    for _ in range(steps):
        x_1, _ = eight_gaussians(512, generator=g)
        loss = objective(net, x_1, generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update(net)
    return ema.module, time.perf_counter() - start


def swd(x: torch.Tensor, y: torch.Tensor) -> float:
    return sliced_wasserstein(x, y, 512, generator=torch.Generator().manual_seed(123)).item()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1k steps per model (default 10k)")
    ap.add_argument("--steps", type=int, default=None, help="override the training steps")
    ap.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    ap.add_argument(
        "--out",
        default=str(Path(__file__).parent / "results" / "meanflow_2d.md"),
        help="markdown output path",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps = args.steps or (1000 if args.quick else 10_000)

    ge = torch.Generator().manual_seed(10_000 + args.seed)
    y, _ = eight_gaussians(N_EVAL, generator=ge)
    y2, _ = eight_gaussians(N_EVAL, generator=ge)
    x_0 = torch.randn(N_EVAL, 2, generator=ge)
    rows: list[tuple[str, int, float, float]] = [("data (floor)", 0, swd(y2, y), 0.0)]

    fm, fm_time = train(FlowMatchingLoss(), 1, steps, args.seed, args.quick)
    with torch.no_grad():
        for n in (1, 100):
            x = sample_euler(fm, x_0, torch.linspace(0, 1, n + 1))
            rows.append((f"FM, Euler {n}", n, swd(x, y), fm_time))

    disp = functools.partial(dispersive_infonce_l2, tau=0.5)
    runs = {
        "MeanFlow": MeanFlowLoss(),
        "MeanFlow + dispersive": MeanFlowLoss(
            dispersive=disp, dispersive_weight=0.5, feature_modules=("net.3",)
        ),
    }
    results: dict[tuple[str, int], float] = {}
    for name, objective in runs.items():
        net, seconds = train(objective, 2, steps, args.seed, args.quick)
        with torch.no_grad():
            for n in (1, 2, 4):
                results[name, n] = swd(meanflow_sample(net, x_0, n_steps=n), y)
                rows.append((name, n, results[name, n], seconds))

    fm1, fm100, mf1 = rows[1][2], rows[2][2], results["MeanFlow", 1]
    checks = [
        ("SWD(MF, 1) <= 3 x SWD(FM, 100)", mf1, 3 * fm100),
        ("SWD(MF, 1) <= 0.2 x SWD(FM, 1)", mf1, 0.2 * fm1),
    ]
    cmd = "python benchmarks/meanflow_2d.py" + (" --quick" if args.quick else "")
    if args.steps:
        cmd += f" --steps {args.steps}"
    if args.seed:
        cmd += f" --seed {args.seed}"
    lines = [
        "# MeanFlow on 8 gaussians (card 06, check 2)",
        "",
        f"Command: `{cmd}`  ",
        f"Machine: {platform.machine()} {platform.processor() or ''}, "
        f"{platform.system()}, torch {torch.__version__}, 1 thread  ",
        f"Training: {steps} steps per model, 3 x 256 SiLU MLP on raw times, batch 512, Adam 1e-3 "
        "cosine, EMA 0.999 (evaluated). Sliced W2, 512 directions, 4096 vs 4096 samples.",
        "",
        "| model | NFE | sliced W2 | train time (s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {m} | {n} | {v:.3f} | {s:.0f} |" for m, n, v, s in rows]
    lines += [
        "",
        "| criterion (card) | measured | threshold | pass |",
        "| --- | ---: | ---: | --- |",
    ]
    ok = True
    for text, value, limit in checks:
        ok &= value <= limit
        lines.append(
            f"| {text} | {value:.3f} | {limit:.3f} | {'yes' if value <= limit else 'NO'} |"
        )
    lines += [
        "",
        f"Ratios: MF-1 / FM-100 = {mf1 / fm100:.2f} (<= 3), MF-1 / FM-1 = {mf1 / fm1:.3f} "
        f"(<= 0.2). Dispersive on: 1 NFE {results['MeanFlow + dispersive', 1]:.3f} vs "
        f"{mf1:.3f} off.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
