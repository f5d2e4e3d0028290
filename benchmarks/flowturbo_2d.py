"""Card 09 checks 2 and 3: FlowTurbo's velocity refiner and H2P6R4 schedule on 2-D 8-gaussians.

Predictor: flow-matching MLPField 3 x 256 SiLU on 8-gaussians (radius 4, std 0.5), Adam 1e-3 with
cosine decay, batch 256 (card: "2-D FM predictor on 8-gaussians (MLP 3x256)"). Refiner: MLPRefiner
1 x 64 on (x, t, v), trained for 5k steps with RefinerLoss (Delta ~ U(0, 0.12)), Adam 1e-2 with
cosine decay, batch 256.

Card criteria:
2. after 5k steps, the refiner's velocity-change prediction has relative error < 20 % on
   held-out (x, t, Delta): sqrt(sum ||r - dv||^2 / sum ||dv||^2), dv = v(x_+, t + Delta) - v_t,
   over fresh x_1, x_0, t ~ U(0, 1 - Delta), Delta ~ U(0, 0.12) per example (r = 0 scores 1);
3. with K = 12, H2P6R4 (10 predictor NFE) gives sliced W2 to the data within 10 % of 12-step
   Heun (24 NFE), and replacing the refiner by "reuse the last velocity" (r = 0) raises the
   sliced W2 by > 10 %.

All samplers start from the same noise; sliced W2 uses the same 1024 directions for every row and
is reported beside the finite-sample floor (two fresh data sets) and beside the distance to the
predictor's own 200-step RK4 samples from the same noise (the pure solver error).

Run: python benchmarks/flowturbo_2d.py [--quick]   (full: about 2 min on one core)
Writes benchmarks/results/flowturbo_2d.md; exits with status 1 if a card criterion fails.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from flowforge.data.toy2d import eight_gaussians
from flowforge.distill.flowturbo import (
    MLPRefiner,
    MLPRefinerConfig,
    RefinerLoss,
    flowturbo_nfe,
    flowturbo_sample,
)
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.metrics.floor import finite_sample_floor
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.solvers.counting import CountingField
from flowforge.solvers.ode import sample_euler, sample_heun, sample_rk4

RESULTS = Path(__file__).parent / "results" / "flowturbo_2d.md"


def train_predictor(args: argparse.Namespace) -> tuple[MLPField, float]:
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    net = MLPField(MLPConfig(dim=2, hidden=256, depth=3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.predictor_steps)
    loss_fn = FlowMatchingLoss()
    start = time.perf_counter()
    for _ in range(args.predictor_steps):
        x_1, _ = eight_gaussians(args.batch, generator=g)
        loss = loss_fn(net, x_1, generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval().requires_grad_(False), time.perf_counter() - start


def held_out(n: int, seed: int, max_delta: float = 0.12) -> tuple[Tensor, Tensor, Tensor]:
    """Fresh (x_t, t, Delta): x_1 ~ data, x_0 ~ N(0, I), Delta ~ U(0, max_delta),
    t ~ U(0, 1 - Delta) (the training distribution, one Delta per example)."""
    g = torch.Generator().manual_seed(seed)
    x_1, _ = eight_gaussians(n, generator=g)
    x_0 = torch.randn(n, 2, generator=g)
    delta = max_delta * torch.rand(n, generator=g)
    t = torch.rand(n, generator=g) * (1 - delta)
    return t[:, None] * x_1 + (1 - t[:, None]) * x_0, t, delta


@torch.no_grad()
def relative_error(refiner, predictor, x_t: Tensor, t: Tensor, delta: Tensor) -> float:
    """sqrt(sum ||r(x_+, t + Delta, v_t) - dv||^2 / sum ||dv||^2) (r = 0 gives 1)."""
    v_t = predictor(x_t, t)
    x_plus = x_t + delta[:, None] * v_t
    dv = predictor(x_plus, t + delta) - v_t
    err = refiner(x_plus, t + delta, v_t) - dv
    return (err.square().sum() / dv.square().sum()).sqrt().item()


def late_time(n, generator=None, device=None, dtype=torch.float32) -> Tensor:
    """u ~ U(2/3, 1): the ablation's training times, H2P6R4's refinement window."""
    return 2 / 3 + torch.rand(n, generator=generator, device=device, dtype=dtype) / 3


def train_refiner(
    args, predictor, x_t, t, delta, time_sampler=None
) -> tuple[MLPRefiner, float, list[str]]:
    torch.manual_seed(args.seed + 1)
    g = torch.Generator().manual_seed(args.seed + 1)
    refiner = MLPRefiner(MLPRefinerConfig(dim=2, hidden=64, depth=1))
    opt = torch.optim.Adam(refiner.parameters(), lr=args.refiner_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.refiner_steps)
    loss_fn = RefinerLoss(predictor, max_delta=0.12, time_sampler=time_sampler)
    log, start = [], time.perf_counter()
    for step in range(args.refiner_steps):
        x_1, _ = eight_gaussians(args.batch, generator=g)
        loss = loss_fn(refiner, x_1, generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % max(1, args.refiner_steps // 5) == 0:
            err = relative_error(refiner, predictor, x_t, t, delta)
            log.append(f"step {step + 1}: loss {loss.item():.5f}, held-out rel. error {err:.3f}")
            print("  refiner " + log[-1], flush=True)
    return refiner.eval().requires_grad_(False), time.perf_counter() - start, log


class ZeroRefiner(torch.nn.Module):
    """r = 0: "reuse the last velocity" (card check 3's control)."""

    def forward(self, x: Tensor, t: Tensor, v: Tensor, cond: Tensor | None = None) -> Tensor:
        return torch.zeros_like(x)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short run (< 1 min), not card-grade")
    p.add_argument("--predictor-steps", type=int, default=10_000, help="predictor steps (10000)")
    p.add_argument("--refiner-steps", type=int, default=5_000, help="refiner steps (card: 5000)")
    p.add_argument("--refiner-lr", type=float, default=1e-2, help="refiner Adam lr (1e-2)")
    p.add_argument("--batch", type=int, default=256, help="batch size (256)")
    p.add_argument("--n-eval", type=int, default=50_000, help="samples per sliced W2 (50000)")
    p.add_argument("--seed", type=int, default=0, help="seed (0)")
    args = p.parse_args()
    if args.quick:
        args.predictor_steps, args.refiner_steps, args.n_eval = 2000, 1000, 5000
    torch.set_num_threads(1)
    command = "python benchmarks/flowturbo_2d.py" + (" --quick" if args.quick else "")

    predictor, pred_s = train_predictor(args)
    print(f"predictor: {args.predictor_steps} steps in {pred_s:.0f} s", flush=True)
    x_t, t, delta = held_out(16_384, seed=1234)
    refiner, ref_s, log = train_refiner(args, predictor, x_t, t, delta)
    rel_err = relative_error(refiner, predictor, x_t, t, delta)
    late = t >= 2 / 3  # where H2P6R4 uses the refiner
    rel_err_late = relative_error(refiner, predictor, x_t[late], t[late], delta[late])
    print("ablation: refiner trained on t >= 2/3 only", flush=True)
    late_refiner, _, _ = train_refiner(
        args, predictor, x_t[late], t[late], delta[late], time_sampler=late_time
    )
    late_err = relative_error(late_refiner, predictor, x_t[late], t[late], delta[late])
    n_ref = sum(p.numel() for p in refiner.parameters())
    n_pred = sum(p.numel() for p in predictor.parameters())

    # Check 3: samplers from the same noise, sliced W2 with fixed directions.
    g = torch.Generator().manual_seed(777)
    x_0 = torch.randn(args.n_eval, 2, generator=g)
    data, _ = eight_gaussians(args.n_eval, generator=g)

    def swd(a: Tensor, b: Tensor) -> float:
        gen = torch.Generator().manual_seed(4321)
        return sliced_wasserstein(a, b, num_projections=1024, generator=gen).item()

    floor = finite_sample_floor(
        lambda a, b: torch.tensor(swd(a, b)), eight_gaussians, args.n_eval, 3, g
    ).item()
    with torch.no_grad():
        reference = sample_rk4(predictor, x_0, torch.linspace(0, 1, 201))
    grid12 = torch.linspace(0, 1, 13)
    zero = ZeroRefiner()
    rows: list[tuple[str, tuple[int, int]]] = []
    samples: dict[str, Tensor] = {}
    runs = [
        ("Heun, 12 steps", lambda f: sample_heun(f, x_0, grid12), None),
        ("Heun, 5 steps", lambda f: sample_heun(f, x_0, torch.linspace(0, 1, 6)), None),
        ("Euler, 10 steps", lambda f: sample_euler(f, x_0, torch.linspace(0, 1, 11)), None),
        ("H2P10 (no refiner)", lambda f: flowturbo_sample(f, None, x_0, "H2P10R0"), None),
        ("H2P6R4, refiner", lambda f: flowturbo_sample(f, refiner, x_0, "H2P6R4"), refiner),
        ("H2P6R4, r = 0 (reuse v)", lambda f: flowturbo_sample(f, zero, x_0, "H2P6R4"), zero),
        (
            "H2P6R4, refiner trained on t >= 2/3 (ablation)",
            lambda f: flowturbo_sample(f, late_refiner, x_0, "H2P6R4"),
            late_refiner,
        ),
    ]
    for name, run, _ in runs:
        field = CountingField(predictor)
        with torch.no_grad():
            samples[name] = run(field)
        refiner_nfe = flowturbo_nfe("H2P6R4").refiner if name.startswith("H2P6R4") else 0
        rows.append((name, (field.nfe, refiner_nfe)))
    sw = {name: swd(x, data) for name, x in samples.items()}
    sw_ref = {name: swd(x, reference) for name, x in samples.items()}

    lines = [
        "# FlowTurbo on 2-D 8-gaussians (card 09, checks 2 and 3)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {platform.processor() or platform.system()}, "
        f"torch {torch.__version__}, 1 thread",
        "",
        f"Predictor MLP 3x256 ({n_pred} params), {args.predictor_steps} steps ({pred_s:.0f} s); "
        f"refiner MLP 1x64 on (x, t, v) ({n_ref} params, {100 * n_ref / n_pred:.1f} % of the "
        f"predictor), {args.refiner_steps} steps, lr {args.refiner_lr:g} ({ref_s:.0f} s).",
        "",
        "## Check 2: refiner fit (held-out, 16384 triples (x, t, Delta))",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| relative error of the velocity change, all t | {rel_err:.3f} |",
        f"| relative error, t >= 2/3 (where H2P6R4 refines) | {rel_err_late:.3f} |",
        "| relative error of r = 0 (reuse the last velocity) | 1.000 |",
        f"| ablation: refiner trained on t >= 2/3 only, error on t >= 2/3 | {late_err:.3f} |",
        "",
        "Refiner training log: " + "; ".join(log),
        "",
        f"## Check 3: samplers, K = 12 (n = {args.n_eval}, 1024 directions)",
        "",
        f"Finite-sample floor of sliced W2 (data vs data): {floor:.4f}",
        "",
        "| sampler | predictor NFE | refiner NFE | sliced W2 to data | sliced W2 to RK4-200 |",
        "|---|---|---|---|---|",
    ]
    for name, (nfe, r_nfe) in rows:
        lines.append(f"| {name} | {nfe} | {r_nfe} | {sw[name]:.4f} | {sw_ref[name]:.4f} |")
    heun, turbo, ctrl = sw["Heun, 12 steps"], sw["H2P6R4, refiner"], sw["H2P6R4, r = 0 (reuse v)"]
    turbo_nfe = dict(rows)["H2P6R4, refiner"][0]
    checks = [
        (f"refiner relative error {rel_err:.3f} < 0.20", rel_err < 0.20),
        (
            f"H2P6R4 sliced W2 {turbo:.4f} within 10 % of 12-step Heun {heun:.4f} "
            f"(ratio {turbo / heun:.3f} <= 1.10)",
            turbo <= 1.10 * heun,
        ),
        (f"H2P6R4 uses {turbo_nfe} predictor NFE (card: 10)", turbo_nfe == 10),
        (
            f"r = 0 control worse by > 10 %: {ctrl:.4f} vs {turbo:.4f} "
            f"(ratio {ctrl / turbo:.3f} > 1.10)",
            ctrl > 1.10 * turbo,
        ),
    ]
    lines += ["", "## Card criteria", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks]
    if args.quick:
        lines += ["", "(quick mode: shortened training; the card's figures need the full run)"]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
