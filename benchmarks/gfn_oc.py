"""OC-GFN pre-training and fine-tuning vs TB from scratch on the 7 x 7 hypergrid: exact L1 against
the reward queries.

The question: after reward-free pre-training of an outcome-conditioned GFlowNet (OC-GFN), how
many trajectories (reward queries) does fine-tuning to a new reward R need to reach the exact
L1 that torchgfn's trajectory balance (TB) reaches from scratch with N trajectories, and is that
at most N / 5?

* Environment: flowforge's ``HyperGrid(ndim=2, height=7, R0=1e-3)`` (49 objects) and torchgfn's
  ``HyperGrid`` with the same reward (the script checks the 49 rewards agree). R is the "new
  reward": only TB and the fine-tuning see it.
* Pre-training (once per seed, reward-free): ``OutcomeConditionedBalance`` (SubTB, lambda 5,
  log R(x | y) = -10 on failures) on rollouts to outcomes y uniform over the grid, half of each
  batch relabelled in hindsight (y := x). The rollouts are drawn on a copy of the grid whose
  reward is the constant 1, so R is never evaluated; the cost is reported in trajectories and
  seconds, apart from the reward queries. The run reports the exact success rate P_T(y | y)
  (``outcome_terminal_distributions``).
* Fine-tuning: ``MarginalDistillation`` of the R-weighted mixture of the frozen OC policies
  into an unconditional policy. Each update draws ``--batch`` outcomes y uniform over the grid,
  one OC rollout to each, and queries R(y) once per rollout: one fine-tuning trajectory is one
  reward query. Two variants: "replay" (``--replay-updates`` Adam steps per new batch, each on
  ``--replay-batch`` rollouts drawn from all the fine-tuning rollouts so far; no new queries)
  and "fresh" (one step on the new batch, as ``tests/gfn/test_oc.py`` trains).
* TB from scratch on R, torchgfn and flowforge: the training loops of ``benchmarks/gfn.py``
  (loaded from that file): on-policy, no exploration, ``save_logprobs`` reused in torchgfn.
* All four policies: the same 2 x ``--hidden`` ReLU MLP on the one-hot encoding with uniform
  P_B, the same initial weights per seed (the fine-tuned policy starts from TB's initial
  network), the same batch and learning rate (TB's log Z: ``--log-z-lr``); seeds interleaved.
* Exact L1: sum_x |P_T(x) - R(x) / Z| by flowforge's dynamic program over the state DAG
  (``terminal_distribution``; on torchgfn's ``pf`` module for torchgfn), every
  ``--eval-every`` trajectories. L1_ref(N) is torchgfn TB's median over seeds at N
  trajectories; "queries to reach" is the first checkpoint at which the median curve of a
  method is <= L1_ref(N).
* The bound of fine-tuning: the distillation's fixed point is the mixture
  sum_y w_y P_T(. | y) with w_y proportional to R(y) F(s_0 | y), so its exact L1 to R / Z (the
  "mixture floor", from the OC model's exact conditional distributions) is where fine-tuning a
  given pre-trained model converges with unlimited queries; the OC model's failures (and the
  error of its learned F(s_0 | y)) set it.

torchgfn is a peer for benchmarks only (``scripts/bench_setup.sh`` installs it).

Run (3 to 5 minutes at 1 thread on 2 shared CPU cores, for the committed results):

    python benchmarks/gfn_oc.py            # writes benchmarks/results/gfn_oc.md and .png
    python benchmarks/gfn_oc.py --quick    # smoke run, under a minute: runs/gfn_oc_quick/
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from flowforge.gfn import (
    HyperGrid,
    MarginalDistillation,
    MLPPolicy,
    OutcomeConditionedBalance,
    PolicyConfig,
    StateDAG,
    hindsight_relabel,
    l1_distance,
    outcome_terminal_distributions,
    sample_trajectories,
    terminal_distribution,
)
from flowforge.gfn.policy import log_probs
from flowforge.gfn.trajectories import Trajectories
from flowforge.recipes import plots

HERE = Path(__file__).resolve().parent
# benchmarks/gfn.py would shadow torchgfn's package `gfn`: keep this folder off the path and
# load that file under another name.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE]
METHODS = ("torchgfn-tb", "flowforge-tb", "oc-replay", "oc-fresh")
LABELS = {
    "torchgfn-tb": "torchgfn TB from scratch",
    "flowforge-tb": "flowforge TB from scratch",
    "oc-replay": "OC-GFN fine-tuning, replay",
    "oc-fresh": "OC-GFN fine-tuning, fresh batches",
}


def load_gfn_benchmark() -> ModuleType:
    """benchmarks/gfn.py as the module ``ff_gfn_bench`` (its TB loops and initial weights)."""
    spec = importlib.util.spec_from_file_location("ff_gfn_bench", HERE / "gfn.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = load_gfn_benchmark()


@dataclass
class Curve:
    """Exact L1 of one method and seed against the trajectories (reward queries) it used."""

    method: str
    seed: int
    trajectories: list[int]
    exact_l1: list[float]
    seconds: float

    def at(self, n: int) -> float:
        return self.exact_l1[self.trajectories.index(n)]


@dataclass
class Pretrained:
    """A pre-trained OC-GFN and its exact evaluation."""

    policy: MLPPolicy
    seed: int
    trajectories: int
    seconds: float
    success_mean: float
    success_min: float
    floor: float  # exact L1 of the mixture with w_y ~ R(y) F(s_0 | y): the distillation's optimum
    floor_r: float  # the same with w_y ~ R(y) alone


def constant_reward(x: Tensor) -> Tensor:
    return torch.ones(len(x), dtype=torch.float64)


def oc_policy(env: HyperGrid, hidden: int) -> MLPPolicy:
    config = PolicyConfig(env.encoding_dim, env.n_actions, hidden=hidden, depth=2,
                          cond_dim=env.encoding_dim)  # fmt: skip
    return MLPPolicy(config)


def pretrain(env: HyperGrid, blank: HyperGrid, dag: StateDAG, args, seed: int) -> Pretrained:
    """Reward-free OC-GFN pre-training on ``blank`` (R = 1), then its exact success and floor."""
    torch.manual_seed(seed)
    policy = oc_policy(env, args.hidden)
    opt = torch.optim.Adam(policy.parameters(), lr=args.pretrain_lr)
    loss = OutcomeConditionedBalance(blank, lam=args.oc_lam)
    X = dag.terminal_states
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(args.pretrain_steps):
        y = X[torch.randint(len(X), (args.pretrain_batch,), generator=g)]
        traj = sample_trajectories(blank, policy, args.pretrain_batch, cond=env.encode(y),
                                   generator=g)  # fmt: skip
        value = loss(policy, hindsight_relabel(blank, traj, args.relabel, generator=g)).mean()
        opt.zero_grad()
        value.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    policy.requires_grad_(False)
    p = outcome_terminal_distributions(dag, policy, X)  # (M, N) P_T(x | y), rows y = X
    with torch.no_grad():
        log_f0 = log_probs(env, policy, env.initial_states(len(X)), env.encode(X))[2].double()
    r = env.log_reward(X).double().exp()

    def mixture_l1(w: Tensor) -> float:
        return l1_distance((w[:, None] * p).sum(0) / w.sum(), dag.target())

    success = p.diagonal()
    return Pretrained(policy, seed, args.pretrain_steps * args.pretrain_batch, seconds,
                      success.mean().item(), success.min().item(),
                      mixture_l1(r * log_f0.exp()), mixture_l1(r))  # fmt: skip


def fine_tune(
    env: HyperGrid, blank: HyperGrid, dag: StateDAG, pre: Pretrained, args, seed: int, replay: bool
) -> Curve:
    """MarginalDistillation of the pre-trained OC-GFN to R; one reward query per rollout."""
    student = bench.initial_policy(env, args, seed)  # TB's initial network
    net = [p for name, p in student.named_parameters() if name != "log_z"]
    opt = torch.optim.Adam(net, lr=args.lr)
    objective = MarginalDistillation(blank, pre.policy)
    X = dag.terminal_states
    log_m = math.log(len(X))  # q(y) = 1 / M
    g = torch.Generator().manual_seed(10_000 + seed)
    seen: Trajectories | None = None
    seen_log_w = torch.empty(0)
    curve = Curve(f"oc-{'replay' if replay else 'fresh'}", seed, [], [], 0.0)
    steps = args.trajectories // args.batch
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        y = X[torch.randint(len(X), (args.batch,), generator=g)]
        traj = sample_trajectories(blank, pre.policy, args.batch, cond=env.encode(y),
                                   generator=g)  # fmt: skip
        log_w = env.log_reward(y) + log_m  # the reward queries: R(y_b), one per rollout
        if replay:
            seen = traj if seen is None else Trajectories.cat([seen, traj])
            seen_log_w = torch.cat([seen_log_w, log_w])
            batches = []
            for _ in range(args.replay_updates):
                idx = torch.randint(len(seen), (args.replay_batch,), generator=g)
                batches.append((seen.index(idx), seen_log_w[idx]))
        else:
            batches = [(traj, log_w)]
        for b_traj, b_log_w in batches:
            value = objective(student, b_traj, b_log_w).mean()
            opt.zero_grad()
            value.backward()
            opt.step()
        curve.seconds += time.perf_counter() - t0
        if (step * args.batch) % args.eval_every == 0 or step == steps:
            curve.trajectories.append(step * args.batch)
            curve.exact_l1.append(l1_distance(terminal_distribution(dag, student), dag.target()))
    return curve


def tb_curve(env_tg, env: HyperGrid, dag: StateDAG, library: str, args, seed: int) -> Curve:
    if library == "torchgfn":
        run = bench.train_torchgfn(env_tg, env, dag, "tb", args, seed)
        del run.check
    else:
        run = bench.train_flowforge(env, dag, "tb", args, seed)
    return Curve(f"{library}-tb", seed, run.trajectories, run.exact_l1, run.seconds)


def median_curve(curves: list[Curve]) -> tuple[list[int], np.ndarray]:
    return curves[0].trajectories, np.median([c.exact_l1 for c in curves], axis=0)


def first_reach(x: list[int], y, level: float) -> int | None:
    """The first checkpoint at which the curve y(x) is <= level, or None."""
    return next((n for n, v in zip(x, y, strict=True) if v <= level), None)


def stats(values: list[float], digits: int = 3) -> str:
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def reach_text(n: int | None) -> str:
    return "not reached" if n is None else str(n)


def stuck_text(by: dict[str, list[Curve]], n: int) -> str:
    """A sentence naming the TB seeds still above L1 1 after n trajectories, if any."""
    parts = []
    for method in ("torchgfn-tb", "flowforge-tb"):
        seeds = [str(c.seed) for c in by[method] if c.at(n) > 1.0]
        if seeds:
            parts.append(f"{LABELS[method]} at seed {', '.join(seeds)}")
    if not parts:
        return ""
    return (
        f" Stuck above exact L1 1 after {n} trajectories at this learning rate (and counted "
        f"in the medians and ranges): {'; '.join(parts)}."
    )


def budgets(args) -> list[int]:
    """The N of the budget table: N <= --trajectories with N / 5 a checkpoint."""
    step = 5 * args.eval_every
    return [n for n in args.budgets if n <= args.trajectories and n % step == 0]


def write_results(
    curves: list[Curve], pre: list[Pretrained], dag: StateDAG, args, seconds: float
) -> None:
    import gfn as torchgfn

    by = {m: [c for c in curves if c.method == m] for m in METHODS}
    N = args.trajectories
    x_ref, y_ref = median_curve(by["torchgfn-tb"])
    l1_ref = float(y_ref[x_ref.index(N)])
    fifth = N // 5
    m = args.height**2
    floors = [p.floor for p in pre]
    lines = [
        f"# GFlowNets: OC-GFN fine-tuning vs TB from scratch on the {args.height} x "
        f"{args.height} hypergrid",
        "",
        f"`python benchmarks/gfn_oc.py {' '.join(args.argv)}`".replace(" `", "`"),
        "",
        f"{platform.machine()} CPU, torch {torch.__version__}, torchgfn {torchgfn.__version__}, "
        f"{args.threads} thread, {seconds / 60:.1f} min. HyperGrid ndim 2, height {args.height} "
        f"({m} objects), new reward R: R0 1e-3, R1 0.5, R2 2. All policies: 2 x {args.hidden} "
        f"ReLU MLP on the one-hot encoding, uniform P_B, the same initial weights per seed; "
        f"batch {args.batch}, Adam lr {args.lr:g} (TB log Z: {args.log_z_lr:g}), no "
        f"exploration; {N} trajectories per method; {len(pre)} interleaved seeds "
        f"({', '.join(str(p.seed) for p in pre)}). Figures: median [min, max] over the seeds.",
        "",
        f"Pre-training (reward-free, once per seed): {args.pretrain_steps} updates of "
        f"{args.pretrain_batch} rollouts ({pre[0].trajectories} trajectories, none of them "
        f"evaluated by R), Adam lr {args.pretrain_lr:g}, SubTB lambda {args.oc_lam:g}, "
        f"{args.relabel:.0%} relabelled; {stats([p.seconds for p in pre], 1)} s. Exact success "
        f"rate P_T(y | y): mean over the {m} outcomes {stats([p.success_mean for p in pre])}, "
        f"worst outcome {stats([p.success_min for p in pre])}. Mixture floor (the exact L1 of "
        f"the distillation's optimum, where fine-tuning these models converges with unlimited "
        f"queries): {stats(floors)}; with weights R(y) alone, without the learned "
        f"F(s_0 | y): {stats([p.floor_r for p in pre])}.",
        "",
        f"Fine-tuning: outcomes uniform over the {m} objects, one OC rollout and one reward "
        f"query R(y) per trajectory; replay: {args.replay_updates} Adam steps per batch of "
        f"{args.batch} new rollouts, each on {args.replay_batch} rollouts drawn from all the "
        "fine-tuning rollouts so far; fresh: one step per new batch. TB: one step per batch "
        "(on-policy).",
        "",
        f"L1_ref = torchgfn TB's exact L1 after N = {N} trajectories (median) = {l1_ref:.3f}.",
        "",
        "| method | reward queries | exact L1 | queries to reach L1_ref (median curve) | "
        "per seed | training s |",
        "|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        cs = by[method]
        x, y = median_curve(cs)
        per_seed = ", ".join(reach_text(first_reach(c.trajectories, c.exact_l1, l1_ref))
                             for c in cs)  # fmt: skip
        reach = reach_text(first_reach(x, y, l1_ref))
        points = (fifth, N) if method.startswith("oc") else (N,)
        for n in points:
            lines.append(
                f"| {LABELS[method]} | {n} | {stats([c.at(n) for c in cs])} | "
                f"{reach if n == N else '-'} | {per_seed if n == N else '-'} | "
                f"{stats([c.seconds for c in cs], 1) if n == N else '-'} |"
            )
    x_oc, y_oc = median_curve(by["oc-replay"])
    reach = first_reach(x_oc, y_oc, l1_ref)
    verdict = (
        f"met: OC-GFN fine-tuning (replay) reaches it after {reach} reward queries, "
        f"{reach / N:.3f} of TB's {N} trajectories"
        if reach is not None and reach <= fifth
        else (
            f"missed: OC-GFN fine-tuning (replay) reaches it only after {reach} reward queries, "
            f"{reach / N:.3f} of TB's {N} trajectories"
            if reach is not None
            else f"missed: OC-GFN fine-tuning (replay) does not reach it within {N} reward "
            f"queries (its median L1 is {y_oc[-1]:.3f} there, {y_oc[x_oc.index(fifth)]:.3f} "
            f"at N / 5 = {fifth})"
        )
    )
    lines += [
        "",
        f"Target (reach torchgfn TB's from-scratch L1 after N = {N} trajectories, "
        f"{l1_ref:.3f}, with <= N / 5 = {fifth} trajectories): {verdict}.",
        "",
        "By budget N: L1_ref(N) is torchgfn TB's median exact L1 after N trajectories; OC at "
        "N / 5 is the median exact L1 of the fine-tuning after N / 5 reward queries; queries "
        "to reach: the first checkpoint of the median OC curve at or below L1_ref(N), and its "
        "ratio to N.",
        "",
        "| N | L1_ref(N) | OC replay at N / 5 | queries to reach (replay) | ratio | <= N / 5 | "
        "OC fresh at N / 5 | queries to reach (fresh) | <= N / 5 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    x_fr, y_fr = median_curve(by["oc-fresh"])
    held = []
    for n in budgets(args):
        ref = float(y_ref[x_ref.index(n)])
        r_rep, r_fr = first_reach(x_oc, y_oc, ref), first_reach(x_fr, y_fr, ref)
        ok_rep = r_rep is not None and r_rep <= n // 5
        ok_fr = r_fr is not None and r_fr <= n // 5
        held.append((n, ok_rep))
        ratio = "-" if r_rep is None else f"{r_rep / n:.3f}"
        lines.append(
            f"| {n} | {ref:.3f} | {y_oc[x_oc.index(n // 5)]:.3f} | {reach_text(r_rep)} | "
            f"{ratio} | {'yes' if ok_rep else 'no'} | {y_fr[x_fr.index(n // 5)]:.3f} | "
            f"{reach_text(r_fr)} | {'yes' if ok_fr else 'no'} |"
        )
    yes = [n for n, ok in held if ok]
    no = [n for n, ok in held if not ok]
    if yes and no:
        summary = (
            f"The 1/5 criterion (replay) holds at N = {', '.join(map(str, yes))} and fails at "
            f"N = {', '.join(map(str, no))}."
        )
    elif yes:
        summary = "The 1/5 criterion (replay) holds at every N of the table."
    else:
        summary = "The 1/5 criterion (replay) fails at every N of the table."
    target = dag.target()
    modes = target >= target.max() * (1 - 1e-9)
    ess = 1.0 / (m * target.square().sum().item())  # (E w)^2 / E w^2 of w = R(y) / q(y)
    lines += [
        "",
        summary + f" The lowest point of the median fine-tuning curve within {N} queries is "
        f"{min(y_oc):.3f} (replay; fresh: {min(y_fr):.3f}), the mixture floor is "
        f"{statistics.median(floors):.3f} and torchgfn TB's median curve gets down to "
        f"{min(y_ref):.3f}; where TB's L1 is below what fine-tuning reaches, no number of "
        f"queries meets the criterion. With outcomes drawn uniformly, the {int(modes.sum())} "
        f"modes carry {target[modes].sum().item():.0%} of R / Z and the importance weights "
        f"R(y) / q(y) have an effective sample size of {ess:.2f} per query, so the Monte Carlo "
        "estimate of the mixture is noisy long before it gets near the floor.",
        "",
        f"Checkpoints are every {args.eval_every} trajectories, so a reach at the first one "
        f"({args.eval_every}) is an upper bound on the queries needed.{stuck_text(by, N)}",
        "",
        "![exact L1 against reward queries](gfn_oc.png)",
        "",
    ]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "gfn_oc.md").write_text("\n".join(lines))
    draw(by, floors, args, out / "gfn_oc.png")
    print("\n".join(lines))


def draw(by: dict[str, list[Curve]], floors: list[float], args, path: Path) -> None:
    fig, axes = plots.figure(6.5, 4.2)
    ax = axes[0, 0]
    for i, method in enumerate(METHODS):
        x, y = median_curve(by[method])
        values = np.array([c.exact_l1 for c in by[method]])
        ax.plot(x, y, color=f"C{i}", lw=1.3, label=LABELS[method])
        ax.fill_between(x, values.min(0), values.max(0), color=f"C{i}", alpha=0.12, lw=0)
        if method == "oc-replay":
            ax.plot(5 * np.asarray(x), y, ":", color=f"C{i}", lw=1.3,
                    label="OC-GFN replay, queries x 5")  # fmt: skip
    ax.axhline(statistics.median(floors), ls="--", color="gray", lw=1, label="mixture floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(args.eval_every, args.trajectories)
    ax.set_xlabel("trajectories (reward queries)")
    ax.set_ylabel("exact L1 to R / Z (median, band: min-max)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(f"{args.height} x {args.height} hypergrid, R0 1e-3; pre-training is "
                 "reward-free", fontsize=9)  # fmt: skip
    plots.save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=7)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trajectories", type=int, default=16000, help="per method")
    parser.add_argument("--eval-every", type=int, default=80, help="trajectories per L1 check")
    parser.add_argument("--budgets", type=int, nargs="+",
                        default=[400, 800, 1200, 1600, 2400, 3200, 4800, 6400, 9600, 12800, 16000],
                        help="the N of the budget table")  # fmt: skip
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--log-z-lr", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--pretrain-steps", type=int, default=1000)
    parser.add_argument("--pretrain-batch", type=int, default=64)
    parser.add_argument("--pretrain-lr", type=float, default=3e-3)
    parser.add_argument("--relabel", type=float, default=0.5, help="hindsight fraction")
    parser.add_argument("--oc-lam", type=float, default=5.0, help="pre-training SubTB lambda")
    parser.add_argument("--replay-updates", type=int, default=4)
    parser.add_argument("--replay-batch", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="smoke run: runs/gfn_oc_quick")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    if args.quick:
        args.seeds, args.trajectories, args.pretrain_steps = 2, 1600, 200
    if args.out is None:
        args.out = Path("runs/gfn_oc_quick") if args.quick else HERE / "results"
    if args.trajectories % args.eval_every or args.eval_every % args.batch:
        parser.error("--trajectories must be a multiple of --eval-every, itself of --batch.")
    if (args.trajectories // 5) % args.eval_every:
        parser.error("--trajectories / 5 must be a multiple of --eval-every.")
    args.backward, args.lam = "uniform", 0.9  # what benchmarks/gfn.py's loops read
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from gfn.gym import HyperGrid as TorchgfnHyperGrid

    env = HyperGrid(ndim=2, height=args.height, R0=1e-3)
    blank = HyperGrid(ndim=2, height=args.height, reward_fn=constant_reward)
    kwargs = {"R0": 1e-3, "R1": 0.5, "R2": 2.0}
    env_tg = TorchgfnHyperGrid(ndim=2, height=args.height, reward_fn_kwargs=kwargs)
    dag = StateDAG(env)
    x = dag.terminal_states
    theirs = env_tg.reward_fn(x).double().log()
    assert torch.allclose(env.log_reward(x).double(), theirs), "the rewards differ"
    curves, pre, start = [], [], time.perf_counter()
    for seed in range(args.seeds):
        jobs = ["torchgfn", "flowforge", "oc"]
        jobs = jobs[seed % 3 :] + jobs[: seed % 3]  # rotate the order over the seeds
        for job in jobs:
            if job == "oc":
                p = pretrain(env, blank, dag, args, seed)
                pre.append(p)
                print(f"pre-training seed {seed}: success {p.success_mean:.3f} (worst "
                      f"{p.success_min:.3f}), floor {p.floor:.3f}, {p.seconds:.1f} s",
                      flush=True)  # fmt: skip
                new = [
                    fine_tune(env, blank, dag, p, args, seed, replay) for replay in (True, False)
                ]
            else:
                new = [tb_curve(env_tg, env, dag, job, args, seed)]
            for c in new:
                print(f"{c.method:12s} seed {seed}: exact L1 {c.at(args.trajectories // 5):.3f} "
                      f"after {args.trajectories // 5}, {c.exact_l1[-1]:.3f} after "
                      f"{args.trajectories}, {c.seconds:.1f} s", flush=True)  # fmt: skip
            curves += new
    write_results(curves, pre, dag, args, time.perf_counter() - start)


if __name__ == "__main__":
    main()
