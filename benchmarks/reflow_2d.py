"""Card 04 check 2: one round of reflow (2-rectified flow, rf++ recipe) straightens an FM teacher.

Teacher: conditional-OT flow matching on 8 gaussians (radius 4, std 0.5), the cards' baseline MLP
(3 x 256 SiLU, sinusoidal time features), float32, AdamW lr 1e-3 with a cosine schedule, batch
256, 6k steps. Pairs: 50k x_0 ~ N(0, I) pushed through the teacher's 100-step Euler ODE. Student:
initialised from the teacher, trained 6k steps on the pairs with ReflowLoss (L2 distance, the
U-shaped t density a = 4), lr 1e-4 constant, batch 256, no EMA; all training runs through
``flowforge.train.train`` (the pairs reach the loss packed, via ``ReflowPairs.dataset()``).

Evaluation on 10k fresh noises: straightness S = E sum_i dt ||v(x_{t_i}) - (x_1 - x_0)||^2 along
100-step Euler trajectories, and sliced W2 (512 directions, fixed) against 10k fresh data points,
beside the finite-sample floor (fresh data vs fresh data).

Card criteria: straightness drops >= 100x from teacher to student; the 1-step student SWD is
<= 1.2x the 100-step teacher SWD. (Card reference run: straightness 2.75 -> 0.0021; SWD teacher-100
0.201, teacher-1 2.71, student-1 0.204, student-2 0.201.)

Run: python benchmarks/reflow_2d.py [--quick]   (full: about 2 min on one core; quick < 1 min)
Writes benchmarks/results/reflow_2d.md (full mode only; --quick just prints) and exits with
status 1 if a card criterion fails.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from flowforge.data.toy2d import eight_gaussians
from flowforge.distill.reflow import (
    ReflowLoss,
    init_from_teacher,
    make_reflow_pairs,
    reflow_sample,
    straightness,
)
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.metrics.floor import finite_sample_floor
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.solvers.grids import uniform_grid
from flowforge.solvers.ode import sample_euler
from flowforge.train.config import TrainConfig
from flowforge.train.loop import train

RESULTS = Path(__file__).parent / "results"


def data_sampler(n: int, generator: torch.Generator) -> tuple[torch.Tensor, None]:
    return eight_gaussians(n, generator)[0], None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 1 min)")
    parser.add_argument(
        "--teacher-steps", type=int, default=None, help="default 6000 (quick 1500)"
    )
    parser.add_argument(
        "--student-steps", type=int, default=None, help="default 6000 (quick 1500)"
    )
    parser.add_argument("--pairs", type=int, default=None, help="default 50000 (quick 10000)")
    parser.add_argument("--n-eval", type=int, default=None, help="default 10000 (quick 4000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random stream")
    args = parser.parse_args()
    torch.set_num_threads(1)
    q = args.quick
    teacher_steps = args.teacher_steps or (1500 if q else 6000)
    student_steps = args.student_steps or (1500 if q else 6000)
    n_pairs = args.pairs or (10_000 if q else 50_000)
    n_eval = args.n_eval or (4000 if q else 10_000)
    seed = args.seed
    torch.manual_seed(seed)
    timings = {}

    # Teacher: flow matching on 8 gaussians.
    t0 = time.perf_counter()
    teacher = MLPField(MLPConfig(dim=2, hidden=256, depth=3))
    cfg = TrainConfig(steps=teacher_steps, batch_size=256, lr=1e-3, schedule="cosine",
                      ema_decay=0.0, progress=False, device="cpu", seed=seed)  # fmt: skip
    teacher = train(teacher, FlowMatchingLoss(), data_sampler, cfg).model
    teacher.eval().requires_grad_(False)
    timings["teacher"] = time.perf_counter() - t0

    # Pairs from the deterministic 100-step Euler teacher ODE.
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed + 1)
    pairs = make_reflow_pairs(teacher, n_pairs, (2,), n_steps=100, solver="euler", generator=g)
    timings["pairs"] = time.perf_counter() - t0

    # Student: initialised from the teacher, trained on the pairs (L2, U-shaped t, lr 1e-4).
    t0 = time.perf_counter()
    student = init_from_teacher(MLPField(MLPConfig(dim=2, hidden=256, depth=3)), teacher)
    cfg = TrainConfig(steps=student_steps, batch_size=256, lr=1e-4, schedule="constant",
                      ema_decay=0.0, progress=False, device="cpu", seed=seed + 2)  # fmt: skip
    student = train(student, ReflowLoss(distance="mse"), pairs.dataset(), cfg).model
    student.eval().requires_grad_(False)
    timings["student"] = time.perf_counter() - t0

    # Evaluation.
    t0 = time.perf_counter()
    x_0 = torch.randn(n_eval, 2, generator=torch.Generator().manual_seed(seed + 3))
    target = eight_gaussians(n_eval, torch.Generator().manual_seed(seed + 4))[0]

    def swd(x: torch.Tensor) -> float:
        g = torch.Generator().manual_seed(seed + 5)
        return sliced_wasserstein(x, target, 512, generator=g).item()

    with torch.no_grad():
        s_teacher = straightness(teacher, x_0, 100).mean().item()
        s_student = straightness(student, x_0, 100).mean().item()
        grid = uniform_grid(100)
        rows = [
            ("teacher", "Euler", 100, s_teacher, swd(sample_euler(teacher, x_0, grid))),
            ("teacher", "Euler", 1, None, swd(reflow_sample(teacher, x_0, 1, sampler="euler"))),
            ("teacher", "Euler", 2, None, swd(reflow_sample(teacher, x_0, 2, sampler="euler"))),
            ("student", "new = Euler", 1, None, swd(reflow_sample(student, x_0, 1))),
            ("student", "new", 2, None, swd(reflow_sample(student, x_0, 2, sampler="new"))),
            ("student", "Euler", 2, None, swd(reflow_sample(student, x_0, 2, sampler="euler"))),
            ("student", "new", 4, None, swd(reflow_sample(student, x_0, 4, sampler="new"))),
            ("student", "Euler", 100, s_student, swd(sample_euler(student, x_0, grid))),
        ]
        g = torch.Generator().manual_seed(seed + 6)
        floor = finite_sample_floor(
            lambda a, b: sliced_wasserstein(a, b, 512, generator=torch.Generator().manual_seed(0)),
            eight_gaussians, n_eval, repeats=3, generator=g,
        ).item()  # fmt: skip
    timings["eval"] = time.perf_counter() - t0

    ratio = s_teacher / s_student
    swd_teacher_100, swd_student_1 = rows[0][4], rows[3][4]
    swd_ratio = swd_student_1 / swd_teacher_100
    checks = [
        (f"straightness drop teacher/student >= 100x: {ratio:.0f}x", ratio >= 100),
        (f"1-step student SWD <= 1.2 x 100-step teacher SWD: {swd_ratio:.3f}x", swd_ratio <= 1.2),
    ]
    command = "python benchmarks/reflow_2d.py" + (" --quick" if q else "")
    if any(v is not None for v in (args.teacher_steps, args.student_steps, args.pairs,
                                   args.n_eval)) or seed:  # fmt: skip
        command = "python " + " ".join(sys.argv)
    lines = [
        "# Reflow (2-rectified flow, rf++) on 8 gaussians: card 04 check 2",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"torch {torch.__version__}, 1 thread  ",
        f"Teacher {teacher_steps} steps, {n_pairs} pairs (100-step Euler), student "
        f"{student_steps} steps (L2, U-shaped t, lr 1e-4, init from teacher); "
        f"{n_eval} evaluation samples.  ",
        "Time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        "",
        "| model | sampler | NFE | straightness | sliced W2 |",
        "|---|---|---:|---:|---:|",
    ]
    for model, sampler, nfe, s, w in rows:
        s_txt = f"{s:.4g}" if s is not None else ""
        lines.append(f"| {model} | {sampler} | {nfe} | {s_txt} | {w:.3f} |")
    lines.append(f"| data vs data (floor) | | | | {floor:.3f} |")
    lines += ["", "Card criteria:", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks]
    report = "\n".join(lines) + "\n"
    print(report)
    if not q:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "reflow_2d.md").write_text(report)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
