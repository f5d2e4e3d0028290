"""TARFlow / STARFlow vs zuko's NSF and MAF on 2-D densities with a known optimum.

Every flow trains with the same loop (AdamW with foreach updates, lr ``--lr`` with a 5% warm-up
and cosine decay, gradient clipping at 1) on the same fresh batches of ``--batch`` clean
examples for ``--steps`` steps, and is scored by its NLL (nats per example) on 20 000 fresh test
examples, beside the optimum, the data's entropy H = -E log p(x):

    moons         scikit-learn's make_moons(noise=0.05) (zuko's training tutorial), shifted to
                  the origin: p(x) = 1/2 sum_k 1/pi int_0^pi N(x; c_k(s), 0.05^2 I) ds, the
                  integral by the trapezoid rule on 4097 nodes (exact to << 1e-4 here);
    checkerboard  uniform on the 8 dark cells of the 4 x 4 board on [-4, 4]^2: H = log 32.

Reported: test NLL, its gap to H, training steps/s and samples/s (medians of interleaved
repeats after training, the flows in rotating order), parameters. ``--card`` runs card 18's
check 2 at full size instead (8-gaussians, sigma_n = 0.05, 8 blocks x 2 layers, width 64, 10k
steps: within 0.15 nats of the noised mixture's cross-entropy, 0.5 better than a Gaussian).

    python benchmarks/nf_2d.py                  # both datasets, all flows, ~15 min on 2 cores
    python benchmarks/nf_2d.py --quick          # smoke run
    python benchmarks/nf_2d.py --card           # card 18 check 2, full size
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from flowforge.data.toy2d import checkerboard, eight_gaussians, eight_gaussians_log_prob, moons
from flowforge.nf import FlowNLLLoss, TransformerFlow, TransformerFlowConfig, flow_log_prob
from flowforge.nf.zuko import zuko_flow

MOONS_NOISE = 0.05


def moons_data(n: int, g: torch.Generator) -> Tensor:
    return moons(n, g, noise=MOONS_NOISE, scale=1.0)[0]


def moons_log_prob(x: Tensor, nodes: int = 4097) -> Tensor:
    """log p(x) of ``moons_data`` by the trapezoid rule over the arc parameter s in [0, pi]."""
    x = x.double()
    s = torch.linspace(0, math.pi, nodes, dtype=torch.float64)
    w = torch.full((nodes,), math.pi / (nodes - 1), dtype=torch.float64)
    w[0] = w[-1] = w[0] / 2
    shift = torch.tensor([0.5, 0.25], dtype=torch.float64)
    outer = torch.stack([s.cos(), s.sin()], 1) - shift
    inner = torch.stack([1 - s.cos(), 0.5 - s.sin()], 1) - shift
    centres = torch.cat([outer, inner])  # (2 nodes, 2)
    logw = torch.cat([w, w]).log() - math.log(2 * math.pi)  # mixture 1/2 and uniform 1/pi
    var = MOONS_NOISE**2
    out = []
    for chunk in x.split(2048):
        d2 = (chunk[:, None, :] - centres[None]).square().sum(-1)
        out.append(torch.logsumexp(logw - d2 / (2 * var), 1) - math.log(2 * math.pi * var))
    return torch.cat(out)


def checker_data(n: int, g: torch.Generator) -> Tensor:
    return checkerboard(n, g)[0]


DATASETS: dict[str, tuple[Callable, float | None]] = {
    "moons": (moons_data, None),  # entropy estimated from moons_log_prob
    "checkerboard": (checker_data, math.log(32.0)),
}


def flows(args) -> dict[str, Callable[[], nn.Module]]:
    def tarflow(**kw):
        c = TransformerFlowConfig(
            shape=(2,), width=args.width, layers_per_block=(args.layers,) * args.blocks,
            head_dim=min(32, args.width), **kw,
        )  # fmt: skip
        return lambda: TransformerFlow(c)

    return {
        "tarflow": tarflow(),
        "starflow": tarflow(sos=True, scale="softplus", soft_clip=4.0),
        "zuko NSF": lambda: zuko_flow("nsf", 2, transforms=3, hidden=(64, 64)),
        "zuko MAF": lambda: zuko_flow("maf", 2, transforms=3, hidden=(64, 64)),
    }


def train(flow: nn.Module, data: Callable, steps: int, batch: int, lr: float, seed: int,
          noise_std: float = 0.0) -> list[float]:  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(
        flow.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=1e-4, foreach=True
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.05)
    loss_fn = FlowNLLLoss("gaussian", noise_std)
    losses = []
    for _ in range(steps):
        loss = loss_fn(flow, data(batch, g), generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def speeds(models: dict[str, nn.Module], data: Callable, batch: int, repeats: int = 5):
    """Median steps/s and samples/s, flows interleaved in rotating order."""
    g = torch.Generator().manual_seed(123)
    x = data(batch, g)
    step_t = {k: [] for k in models}
    sample_t = {k: [] for k in models}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-6, foreach=True) for k, m in models.items()}
    names = list(models)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            m = models[name]
            t = time.perf_counter()
            for _ in range(10):
                loss = -flow_log_prob(m, x).mean()
                opts[name].zero_grad()
                loss.backward()
                opts[name].step()
            step_t[name].append((time.perf_counter() - t) / 10)
            with torch.no_grad():
                t = time.perf_counter()
                m.sample(4096, generator=torch.Generator().manual_seed(r))
                sample_t[name].append((time.perf_counter() - t) / 4096)
    return (
        {k: 1 / statistics.median(v) for k, v in step_t.items()},
        {k: 1 / statistics.median(v) for k, v in sample_t.items()},
    )


def run_datasets(args) -> str:
    lines = [
        f"steps {args.steps}, batch {args.batch}, lr {args.lr}; TarFlow/STARFlow {args.blocks} "
        f"blocks x {args.layers} layers, width {args.width}; zuko NSF/MAF 3 transforms of "
        f"(64, 64); torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{platform.processor() or platform.machine()}",
        "",
        "| data | flow | params | test NLL | optimum | gap | target | steps/s | samples/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    targets = {"moons": 0.03, "checkerboard": 0.10}
    ratios = {}
    for name, (data, entropy) in DATASETS.items():
        test = data(20000, torch.Generator().manual_seed(2024))
        if entropy is None:
            entropy = -moons_log_prob(test).mean().item()
        models = {}
        for fname, make in flows(args).items():
            torch.manual_seed(0)
            model = make()
            t = time.perf_counter()
            train(model, data, args.steps, args.batch, args.lr, seed=1)
            with torch.no_grad():
                nll = -flow_log_prob(model, test).double().mean().item()
            models[fname] = (model, nll, time.perf_counter() - t)
            print(f"{name} {fname}: NLL {nll:.4f} (optimum {entropy:.4f}), "
                  f"{models[fname][2]:.0f} s", flush=True)  # fmt: skip
        steps_s, samples_s = speeds({k: v[0] for k, v in models.items()}, data, args.batch)
        ratios[name] = steps_s["tarflow"] / steps_s["zuko NSF"]
        for fname, (model, nll, _) in models.items():
            gap = nll - entropy
            verdict = "-"
            if fname in ("tarflow", "starflow"):
                verdict = f"<= {targets[name]} " + ("PASS" if gap <= targets[name] else "FAIL")
            params = sum(p.numel() for p in model.parameters())
            lines.append(
                f"| {name} | {fname} | {params} | {nll:.4f} | {entropy:.4f} | {gap:.4f} | "
                f"{verdict} | {steps_s[fname]:.0f} | {samples_s[fname]:.0f} |"
            )
    lines.append("")
    for name, ratio in ratios.items():
        lines.append(
            f"{name}: tarflow trains at {ratio:.2f}x zuko NSF's steps/s (target >= 1: "
            f"{'PASS' if ratio >= 1 else 'FAIL'})"
        )
    return "\n".join(lines)


def run_card(args) -> str:
    """Card 18 check 2 at full size."""
    sn = 0.05
    torch.manual_seed(0)
    flow = TransformerFlow(TransformerFlowConfig(shape=(2,), width=64, head_dim=32,
                                                 layers_per_block=(2,) * 8))  # fmt: skip
    t = time.perf_counter()
    train(flow, lambda n, g: eight_gaussians(n, g)[0], args.card_steps, 256, 1e-3, 1, sn)
    g = torch.Generator().manual_seed(99)
    x = eight_gaussians(20000, g)[0].double()
    x = x + sn * torch.randn(x.shape, generator=g, dtype=x.dtype)
    optimum = -eight_gaussians_log_prob(x, sn).mean()
    gaussian = math.log(2 * math.pi * math.e) + 0.5 * torch.logdet(torch.cov(x.T)).item()
    with torch.no_grad():
        nll = -flow_log_prob(flow, x.float()).double().mean().item()
    gap, margin = nll - optimum.item(), gaussian - nll
    return "\n".join([
        f"card 18 check 2: 8-gaussians, sigma_n {sn}, 8 blocks x 2 layers, width 64, "
        f"{args.card_steps} steps ({time.perf_counter() - t:.0f} s)",
        f"test NLL {nll:.4f}, cross-entropy optimum {optimum:.4f}: gap {gap:.4f} (<= 0.15 "
        f"{'PASS' if gap <= 0.15 else 'FAIL'}); Gaussian {gaussian:.4f}: better by {margin:.3f} "
        f"(> 0.5 {'PASS' if margin > 0.5 else 'FAIL'})",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="200 steps: a smoke run")
    p.add_argument("--card", action="store_true", help="card 18 check 2 at full size")
    p.add_argument("--card-steps", type=int, default=10000)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.card_steps = 200, 200
    text = run_card(args) if args.card else run_datasets(args)
    print(text)
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        name = "nf_2d_card.md" if args.card else "nf_2d.md"
        cmd = "python benchmarks/nf_2d.py " + " ".join(sys.argv[1:] if argv is None else argv)
        (args.out / name).write_text(f"# {cmd.strip()}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
