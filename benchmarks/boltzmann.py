"""Boltzmann sampling: flowforge's TARFlow proposal with SNIS / SMC against zuko's NSF with
SNIS, both trained the same way, at equal target-energy evaluations.

Each target (GMM-40: log Z = 0; ManyWell-32: log Z by quadrature; DW-4 and LJ-13: MALA
references) gets two proposals trained by maximum likelihood on the same exact (or reference)
batches for ``--steps`` AdamW steps (lr 1e-3, cosine decay, clipping at 1) in coordinates
standardised by the training samples, then, for each budget B of energy evaluations
(``--budgets``):

    snis   B proposals, SNIS (top 0.2 % of log w dropped): ESS / n, |log Z - log Z_true|,
           energy W2 and sliced W2 of B resampled points against 20 000 reference samples
    smc    (TARFlow only) B / 2 evaluations: B / (2 (S + 1)) particles, S annealing steps
           with MALA: ESS / n before the final resampling, log Z error, W2s of the particles

Targets: higher ESS / n and lower log Z error than zuko's NSF on every target;
SMC at half the evaluations matching SNIS's ESS / n.

    python benchmarks/boltzmann.py --targets gmm40                       # ~10 min on 2 cores
    python benchmarks/boltzmann.py --targets manywell32 dw4 --steps 1500 --budgets 100000
    python benchmarks/boltzmann.py --targets lj13 --steps 1500 --budgets 100000 \
        --out benchmarks/results/boltzmann_lj13.md
    python benchmarks/boltzmann.py --quick                               # smoke run

On CPU a budget of 1e6 with the 32-D ManyWell costs about an hour for the TARFlow alone
(16-token sequential decoding and SMC's gradients through the flow), hence the second line.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from flowforge.metrics.sliced import sliced_wasserstein, wasserstein2_1d
from flowforge.nf import FlowNLLLoss, TransformerFlow, TransformerFlowConfig
from flowforge.nf.boltzmann import StandardizedFlow, kish_ess, smc, snis
from flowforge.nf.zuko import zuko_flow
from flowforge.recipes.energies import target, target_samples


def train(flow, data, steps: int, batch: int, seed: int) -> float:
    """Maximum likelihood on ``data(n, g)`` batches; returns seconds."""
    opt = torch.optim.AdamW(flow.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=steps, pct_start=0.05)
    loss, g = FlowNLLLoss("gaussian", 0.0), torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(steps):
        value = loss(flow, data(batch, g)).mean()
        opt.zero_grad(set_to_none=True)
        value.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
        opt.step()
        sched.step()
    return time.perf_counter() - t0


def scores(x, log_w, energy, ref, e_ref, log_z) -> dict:
    ok = torch.isfinite(energy.energy(x.double()))
    row = {"ess": float("nan") if log_w is None else kish_ess(log_w).item() / len(log_w)}
    row["log_z_err"] = abs(log_z - energy.log_z) if energy.log_z is not None else float("nan")
    row["energy_w2"] = float(wasserstein2_1d(energy.energy(x[ok].double()), e_ref))
    g = torch.Generator().manual_seed(0)
    row["sliced_w2"] = float(sliced_wasserstein(x[ok].float(), ref, generator=g))
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--targets", nargs="+", default=["gmm40", "manywell32", "dw4"])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--budgets", nargs="+", type=int, default=[100_000, 1_000_000])
    p.add_argument("--smc-steps", type=int, default=20)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/boltzmann.md"))
    a = p.parse_args()
    if a.quick:
        a.steps, a.budgets, a.targets = 50, [2000], ["gmm40"]
    torch.set_num_threads(1)
    lines = [
        "# Boltzmann sampling: TARFlow + SNIS/SMC vs zuko NSF + SNIS",
        "",
        f"`python benchmarks/boltzmann.py {' '.join(sys.argv[1:])}` "
        f"({platform.processor() or 'cpu'}, torch {torch.__version__}, 1 thread): "
        f"{a.steps} ML steps of batch {a.batch}; SMC "
        f"{a.smc_steps} steps of MALA at half the budget.",
        "",
        "| target | proposal | sampler | energy evals | ESS/n | log Z error | energy W2 "
        "| sliced W2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in a.targets:
        energy = target(name)
        train_x = target_samples(name, energy, 20_000, seed=0)
        mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-3)
        if energy.exact:
            data = lambda n, g, e=energy: e.sample(n, g).float()  # noqa: E731
        else:
            data = lambda n, g, x=train_x: x[torch.randint(len(x), (n,), generator=g)]  # noqa: E731
        ref = target_samples(name, energy, 20_000, seed=7)
        e_ref = energy.energy(ref.double())
        D = energy.dim
        torch.manual_seed(0)
        patch = 1 if D <= 8 else next(k for k in (2, 3, 1) if D % k == 0)  # LJ-13: one atom
        flows = {
            "TARFlow": StandardizedFlow(TransformerFlow(TransformerFlowConfig(
                shape=(D,), patch_size=patch, width=64, head_dim=32,
                layers_per_block=(1,) * 8)), mean, std),
            "zuko NSF": StandardizedFlow(zuko_flow("nsf", D, 0, 5, (128, 128), 8), mean, std),
        }  # fmt: skip
        for label, flow in flows.items():
            seconds = train(flow, data, a.steps, a.batch, seed=1)
            params = sum(p.numel() for p in flow.parameters())
            print(f"{name} {label}: trained in {seconds:.0f} s ({params} parameters)", flush=True)
            flow.eval()
            for budget in a.budgets:
                g = torch.Generator().manual_seed(budget)
                out = snis(flow, energy, budget, quantile=0.002, generator=g)
                x = out.resample(20_000, g)
                row = scores(x, out.weights.log_w, energy, ref, e_ref, out.weights.log_z()[0])
                rows = [("SNIS", budget, row)]
                if label == "TARFlow":
                    n = budget // (2 * (a.smc_steps + 1))
                    res = smc(flow, energy, n, steps=a.smc_steps, step_size=0.05, generator=g)
                    row = scores(res.x, None, energy, ref, e_ref, res.log_z)
                    row["ess"] = res.ess_history[-1]
                    rows.append(("SMC", res.evaluations, row))
                for sampler, evals, r in rows:
                    lines.append(
                        f"| {name} | {label} | {sampler} | {evals:.0e} | {r['ess']:.3f} | "
                        f"{r['log_z_err']:.4f} | {r['energy_w2']:.4f} | {r['sliced_w2']:.4f} |"
                    )
                    print(lines[-1], flush=True)
        g = torch.Generator().manual_seed(3)
        floor = scores(target_samples(name, energy, 20_000, seed=8), None, energy, ref, e_ref, 0.0)
        lines.append(f"| {name} | reference | floor | - | - | - | {floor['energy_w2']:.4f} | "
                     f"{floor['sliced_w2']:.4f} |")  # fmt: skip
        if not a.quick:  # after every target: a long run that is stopped keeps what it did
            a.out.write_text("\n".join(lines) + "\n")
    text = "\n".join(lines) + "\n"
    print(text)
    if not a.quick:
        a.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
