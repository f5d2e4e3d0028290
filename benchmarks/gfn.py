"""flowforge vs torchgfn on the 4 x 8 hypergrid (ndim 4, height 8, R0 1e-3): exact L1 and speed.

The benchmark: the same environment, network, batch, learning rates and seeds in both
libraries, repeats interleaved; TB, DB and SubTB; the exact L1 of each policy's terminal
distribution to R / Z against the trajectories seen (every ``--eval-every`` trajectories, up to
``--trajectories``), and trajectories/s of the training loop (sampling, loss, backward, Adam
step; the L1 checks are not timed), median over repeats.

* Environment: flowforge's ``HyperGrid(ndim=4, height=8, R0=1e-3)`` and torchgfn's
  ``HyperGrid(ndim=4, height=8, reward_fn_kwargs={"R0": 1e-3, "R1": 0.5, "R2": 2.0})`` (the
  script checks that the 4096 rewards agree).
* Network: one 2 x 256 ReLU MLP trunk on the one-hot encoding of each coordinate (torchgfn's
  ``KHotPreprocessor`` is the same encoding) with linear heads for P_F, P_B (learned, or
  uniform) and log F (DB, SubTB); torchgfn gets the same trunk shared by its ``pf``, ``pb`` and
  ``logF`` estimators (``MLP(trunk=...)``) and both start from the same initial weights (copied).
* Optimisation: Adam, the same learning rate for the network, ``--log-z-lr`` for TB's log Z,
  no exploration; torchgfn samples with ``save_logprobs=True`` and reuses them
  (``recalculate_all_logprobs=False``, its fastest on-policy path); flowforge re-evaluates.
* Exact L1: flowforge's dynamic program over the state DAG (``terminal_distribution``) on each
  library's forward policy (torchgfn's ``pf`` module on the same encoding and masks). The run
  also reports the L1 of the empirical distribution of the objects of all trajectories seen in
  training (its floor for that many exact draws is given), and, once, checks the program
  against torchgfn's own samples.

torchgfn is a peer for benchmarks only, installed by ``scripts/bench_setup.sh`` (its 2.4.1
wheel pins numpy < 2, so the script installs it without dependencies and never lets pip touch
torch or numpy).

Run (13 minutes on 2 CPU cores shared with other jobs, for the committed results):

    python benchmarks/gfn.py                       # writes benchmarks/results/gfn.md and .png
    python benchmarks/gfn.py --repeats 1 --trajectories 2000 --out runs/gfn_quick  # smoke run

``--op`` runs the OP-GFN comparison instead (flowforge only, no torchgfn): on Branin-Currin
over a 2-D hypergrid (``--op-height``), OP-GFN (Pareto order of the two objectives, no clamp)
against TB trained on the scalarised reward R(x) = (u_1 + u_2) / 2 (the mean of the two
normalised objectives, ``BraninCurrin``), from the same initial MLP (learned P_B), the same
batches, epsilon, learning rate and seeds, interleaved; after ``--op-trajectories`` it reports
the exact mass of P_T on the Pareto front (dynamic program), and the hypervolume (reference 0)
and IGD against the exact front of sets of ``--op-set`` samples (distinct objects, averaged
over ``--op-samples`` draws), median over repeats; it writes benchmarks/results/gfn_op.md:

    python benchmarks/gfn.py --op --repeats 5      # 1.5 minutes
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from flowforge.gfn import (
    BraninCurrin,
    DetailedBalance,
    HyperGrid,
    MLPPolicy,
    OrderPreservingTB,
    Policy,
    PolicyConfig,
    PolicyOutput,
    StateDAG,
    SubTrajectoryBalance,
    TrajectoryBalance,
    empirical_distribution,
    hypervolume,
    igd,
    l1_distance,
    non_dominated,
    sample_trajectories,
    terminal_distribution,
)
from flowforge.recipes import plots

# This file is gfn.py, so its folder on sys.path would shadow torchgfn's package `gfn`.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]
LOSSES = ("tb", "db", "subtb")


@dataclass
class Run:
    """One training run: the L1 curve, the seen objects' L1, log Z and speed."""

    library: str
    loss: str
    seed: int
    trajectories: list[int] = field(default_factory=list)
    exact_l1: list[float] = field(default_factory=list)
    seen_l1: float = float("nan")
    log_z_error: float = float("nan")
    seconds: float = 0.0

    @property
    def per_s(self) -> float:
        return self.trajectories[-1] / self.seconds


class PFOnly(Policy):
    """A forward-policy module (logits of the encoded states) seen as a flowforge policy."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.log_z = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> PolicyOutput:
        logits = self.module(x)
        return PolicyOutput(logits, None, logits.new_zeros(len(x)))


def initial_policy(env: HyperGrid, args, seed: int) -> MLPPolicy:
    torch.manual_seed(seed)
    config = PolicyConfig(env.encoding_dim, env.n_actions, hidden=args.hidden, depth=2,
                          backward=args.backward)  # fmt: skip
    return MLPPolicy(config)


def train_flowforge(env, dag, loss_name, args, seed) -> Run:
    policy = initial_policy(env, args, seed)
    loss = {"tb": TrajectoryBalance(env), "db": DetailedBalance(env),
            "subtb": SubTrajectoryBalance(env, args.lam)}[loss_name]  # fmt: skip
    net = [p for name, p in policy.named_parameters() if name != "log_z"]
    groups = [{"params": net, "lr": args.lr}]
    if loss_name == "tb":
        groups.append({"params": [policy.log_z], "lr": args.log_z_lr})
    opt = torch.optim.Adam(groups)
    g = torch.Generator().manual_seed(seed)
    run, seen = Run("flowforge", loss_name, seed), []
    steps = args.trajectories // args.batch
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        traj = sample_trajectories(env, policy, args.batch, generator=g)
        value = loss(policy, traj).mean()
        opt.zero_grad()
        value.backward()
        opt.step()
        run.seconds += time.perf_counter() - t0
        seen.append(traj.last_states)
        if (step * args.batch) % args.eval_every == 0 or step == steps:
            run.trajectories.append(step * args.batch)
            run.exact_l1.append(l1_distance(terminal_distribution(dag, policy), dag.target()))
    _finish(run, env, dag, torch.cat(seen), _log_z(policy, env, loss_name))
    return run


def _log_z(policy: MLPPolicy, env: HyperGrid, loss_name: str) -> float:
    if loss_name == "tb":
        return policy.log_z.item()
    with torch.no_grad():
        return policy(env.encode(env.initial_states(1))).log_flow.item()


def _finish(run: Run, env, dag, seen: Tensor, log_z: float) -> None:
    run.seen_l1 = l1_distance(empirical_distribution(env, seen), dag.target())
    run.log_z_error = abs(log_z - env.log_partition())


def torchgfn_modules(env_ff: HyperGrid, args, seed: int, loss_name: str):
    """torchgfn's pf, pb and logF on one trunk, with flowforge's initial weights copied in."""
    from gfn.estimators import DiscretePolicyEstimator, ScalarEstimator
    from gfn.preprocessors import KHotPreprocessor
    from gfn.utils.modules import MLP

    ref = initial_policy(env_ff, args, seed)
    A = env_ff.n_actions
    pre = KHotPreprocessor(env_ff.height, env_ff.ndim)
    pf_mod = MLP(pre.output_dim, A, hidden_dim=args.hidden, n_hidden_layers=2)
    with torch.no_grad():
        for mine, theirs in zip(ref.trunk, pf_mod.trunk, strict=True):
            if isinstance(mine, nn.Linear):
                theirs.weight.copy_(mine.weight)
                theirs.bias.copy_(mine.bias)
        pf_mod.last_layer.weight.copy_(ref.head.weight[:A])
        pf_mod.last_layer.bias.copy_(ref.head.bias[:A])
    pf = DiscretePolicyEstimator(pf_mod, A, preprocessor=pre)
    if args.backward == "learned":
        pb_mod = MLP(pre.output_dim, A - 1, trunk=pf_mod.trunk)
        with torch.no_grad():
            pb_mod.last_layer.weight.copy_(ref.head.weight[A : 2 * A - 1])
            pb_mod.last_layer.bias.copy_(ref.head.bias[A : 2 * A - 1])
        pb = DiscretePolicyEstimator(pb_mod, A, preprocessor=pre, is_backward=True)
    else:
        pb = DiscretePolicyEstimator.uniform(A, preprocessor=pre)
    log_f = None
    if loss_name != "tb":
        f_mod = MLP(pre.output_dim, 1, trunk=pf_mod.trunk)
        with torch.no_grad():
            f_mod.last_layer.weight.copy_(ref.head.weight[-1:])
            f_mod.last_layer.bias.copy_(ref.head.bias[-1:])
        log_f = ScalarEstimator(f_mod, preprocessor=pre)
    return pf, pb, log_f, pf_mod


def train_torchgfn(env_tg, env_ff, dag, loss_name, args, seed) -> Run:
    from gfn.gflownet import DBGFlowNet, SubTBGFlowNet, TBGFlowNet

    pf, pb, log_f, pf_mod = torchgfn_modules(env_ff, args, seed, loss_name)
    if loss_name == "tb":
        gfn = TBGFlowNet(pf, pb)
        net = [p for name, p in gfn.named_parameters() if name != "logZ"]  # shared: once
        groups = [{"params": net, "lr": args.lr}, {"params": [gfn.logZ], "lr": args.log_z_lr}]
    elif loss_name == "db":
        gfn = DBGFlowNet(pf, pb, log_f)
        groups = [{"params": list(gfn.parameters()), "lr": args.lr}]
    else:
        gfn = SubTBGFlowNet(pf, pb, log_f, lamda=args.lam)
        groups = [{"params": list(gfn.parameters()), "lr": args.lr}]
    opt = torch.optim.Adam(groups)
    torch.manual_seed(seed)  # torchgfn samples from the global generator
    run, seen = Run("torchgfn", loss_name, seed), []
    steps = args.trajectories // args.batch
    adapter = PFOnly(pf_mod)
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        traj = gfn.sample_trajectories(env_tg, n=args.batch, save_logprobs=True)
        samples = gfn.to_training_samples(traj)
        value = gfn.loss(env_tg, samples, recalculate_all_logprobs=False)
        opt.zero_grad()
        value.backward()
        opt.step()
        run.seconds += time.perf_counter() - t0
        seen.append(traj.terminating_states.tensor)
        if (step * args.batch) % args.eval_every == 0 or step == steps:
            run.trajectories.append(step * args.batch)
            run.exact_l1.append(l1_distance(terminal_distribution(dag, adapter), dag.target()))
    if loss_name == "tb":
        log_z = gfn.logZ.item()
    else:
        with torch.no_grad():
            log_z = pf_mod.trunk(env_ff.encode(env_ff.initial_states(1)))
            log_z = log_f.module.last_layer(log_z).item()
    _finish(run, env_ff, dag, torch.cat(seen), log_z)
    run.check = (gfn, adapter)  # for the one-off check of the dynamic program
    return run


def check_program(env_tg, env_ff, dag, run: Run, n: int) -> tuple[float, float]:
    """L1 between torchgfn's own samples of a trained policy and flowforge's exact terminal
    distribution of the same policy, beside the floor of n exact draws."""
    gfn, adapter = run.check
    with torch.no_grad():
        x = gfn.sample_terminating_states(env_tg, n).tensor
    p = terminal_distribution(dag, adapter)
    g = torch.Generator().manual_seed(0)
    exact = dag.terminal_states[torch.multinomial(p, n, replacement=True, generator=g)]
    return (
        l1_distance(empirical_distribution(env_ff, x), p),
        l1_distance(empirical_distribution(env_ff, exact), p),
    )


def seen_floor(dag: StateDAG, env: HyperGrid, n: int, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    x = dag.terminal_states[torch.multinomial(dag.target(), n, replacement=True, generator=g)]
    return l1_distance(empirical_distribution(env, x), dag.target())


def _stats(values: list[float], digits: int = 3) -> str:
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def write_results(runs: list[Run], args, floor: float, check, out: Path, seconds: float) -> None:
    import gfn as torchgfn

    out.mkdir(parents=True, exist_ok=True)
    speed = {(r.library, r.loss): [] for r in runs}
    for r in runs:
        speed[(r.library, r.loss)].append(r.per_s)
    ref = statistics.median(speed[("torchgfn", "db")]) if ("torchgfn", "db") in speed else None
    lines = [
        "# GFlowNets: flowforge vs torchgfn on the 4 x 8 hypergrid",
        "",
        f"`python benchmarks/gfn.py {' '.join(args.argv)}`".replace(" `", "`"),
        "",
        f"{platform.machine()} CPU, torch {torch.__version__}, torchgfn {torchgfn.__version__}, "
        f"1 thread, {seconds / 60:.1f} min. HyperGrid ndim 4, height 8 (4096 objects), "
        f"R0 1e-3, R1 0.5, R2 2; 2 x {args.hidden} ReLU MLP, one trunk, {args.backward} P_B; "
        f"batch {args.batch}, Adam lr {args.lr:g} (TB log Z: {args.log_z_lr:g}), no "
        f"exploration, SubTB lambda {args.lam:g}; {args.trajectories} trajectories; "
        f"{args.repeats} interleaved repeats (seeds 0..{args.repeats - 1}, the same initial "
        "weights in both libraries). Figures: median [min, max] over the repeats.",
        "",
        f"| loss | library | exact L1 after {args.trajectories} | L1 of the objects seen | "
        "log Z error | trajectories/s | vs torchgfn DB |",
        "|---|---|---|---|---|---|---|",
    ]
    for loss in LOSSES:
        for lib in ("flowforge", "torchgfn"):
            rs = [r for r in runs if r.loss == loss and r.library == lib]
            if not rs:
                continue
            per_s = statistics.median(speed[(lib, loss)])
            ratio = f"{per_s / ref:.2f}x" if ref else "-"
            lines.append(
                f"| {loss.upper() if loss != 'subtb' else 'SubTB'} | {lib} | "
                f"{_stats([r.exact_l1[-1] for r in rs])} | {_stats([r.seen_l1 for r in rs])} | "
                f"{_stats([r.log_z_error for r in rs])} | {per_s:.0f} | {ratio} |"
            )
    best = min((statistics.median([r.exact_l1[-1] for r in runs if r.loss == loss
                                   and r.library == "flowforge"]), loss)
               for loss in {r.loss for r in runs if r.library == "flowforge"})  # fmt: skip
    lines += ["", f"Targets: flowforge's best loss ({best[1]}) reaches exact L1 "
              f"{best[0]:.3f} after {args.trajectories} trajectories (target <= 0.15: "
              f"{'met' if best[0] <= 0.15 else 'missed'})."]  # fmt: skip
    if ref and ("flowforge", "db") in speed:
        ratio = statistics.median(speed[("flowforge", "db")]) / ref
        lines[-1] += (f" flowforge DB runs {ratio:.2f}x torchgfn DB's trajectories/s (target "
                      f">= 2.5x: {'met' if ratio >= 2.5 else 'missed'}).")  # fmt: skip
    lines += [
        "",
        "Exact L1: sum_x |P_T(x) - R(x) / Z| of the policy's terminal distribution, computed by "
        "a dynamic program over the state DAG (flowforge's `terminal_distribution`, applied to "
        "torchgfn's `pf` module on the same encoding and masks). L1 of the objects seen: the "
        f"empirical distribution of the {args.trajectories} objects sampled during training "
        f"against R / Z; {args.trajectories} exact draws from R / Z give {floor:.3f}, so it "
        "cannot show an L1 below about that. log Z error: TB's learned log Z, else the flow at "
        "s_0.",
    ]
    if check is not None:
        lines += [
            "",
            f"Check of the dynamic program: {check[2]} of torchgfn's own samples of its trained "
            f"{check[3]} policy are {check[0]:.3f} (L1) from the program's distribution of that "
            f"policy; {check[2]} exact draws from it are {check[1]:.3f} away.",
        ]
    lines += ["", "![exact L1 against trajectories seen](gfn_l1.png)", ""]
    (out / "gfn.md").write_text("\n".join(lines))
    fig, axes = plots.figure(6.5, 4.2)
    ax = axes[0, 0]
    for i, loss in enumerate(LOSSES):
        for lib, style in (("flowforge", "-"), ("torchgfn", "--")):
            rs = [r for r in runs if r.loss == loss and r.library == lib]
            if rs:
                curve = np.median([r.exact_l1 for r in rs], axis=0)
                ax.plot(rs[0].trajectories, curve, style, color=f"C{i}", label=f"{lib} {loss}")
    ax.set_xlabel("trajectories seen")
    ax.set_ylabel("exact L1 to R / Z (median over repeats)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("4 x 8 hypergrid, R0 1e-3", fontsize=9)
    plots.save_figure(fig, out / "gfn_l1.png")
    print("\n".join(lines))


@dataclass
class OPRun:
    """One run of the OP-GFN comparison: the front mass curve and the final set metrics."""

    loss: str
    seed: int
    trajectories: list[int] = field(default_factory=list)
    pareto_mass: list[float] = field(default_factory=list)
    hypervolume: float = float("nan")
    igd: float = float("nan")
    exact_l1: float = float("nan")  # to the scalarised R / Z
    seconds: float = 0.0


def train_op_comparison(env, dag, u, loss_name: str, args, seed: int) -> OPRun:
    """OP-GFN (Pareto order of u) or TB on the scalarised reward env.log_reward, same set-up."""
    torch.manual_seed(seed)
    config = PolicyConfig(env.encoding_dim, env.n_actions, hidden=args.op_hidden, depth=2,
                          backward="learned")  # fmt: skip
    policy = MLPPolicy(config)
    net = [p for name, p in policy.named_parameters() if name != "log_z"]
    groups = [{"params": net, "lr": args.op_lr}]
    if loss_name == "tb":
        loss = TrajectoryBalance(env)
        groups.append({"params": [policy.log_z], "lr": args.log_z_lr})
    else:  # log Z gets no gradient from the order loss
        loss = OrderPreservingTB(env, u, order="pareto", max_loss=None)
    opt = torch.optim.Adam(groups)
    g = torch.Generator().manual_seed(seed)
    front = non_dominated(u(dag.terminal_states))  # (N,) the exact Pareto set
    run, steps = OPRun(loss_name, seed), args.op_trajectories // args.op_batch
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        traj = sample_trajectories(env, policy, args.op_batch, epsilon=args.op_epsilon,
                                   generator=g)  # fmt: skip
        value = (loss(policy, traj) if loss_name == "tb" else loss(policy, traj, g)).mean()
        opt.zero_grad()
        value.backward()
        opt.step()
        run.seconds += time.perf_counter() - t0
        if step % max(1, steps // 8) == 0 or step == steps:
            run.trajectories.append(step * args.op_batch)
            run.pareto_mass.append(terminal_distribution(dag, policy)[front].sum().item())
    p = terminal_distribution(dag, policy)
    run.exact_l1 = l1_distance(p, dag.target())
    with torch.no_grad():
        sample_g = torch.Generator().manual_seed(10_000 + seed)
        x = sample_trajectories(env, policy, args.op_samples, generator=sample_g).last_states
    run.hypervolume, run.igd = set_metrics(x, u, u(dag.terminal_states[front]), args.op_set)
    return run


def set_metrics(x: Tensor, u, front: Tensor, k: int) -> tuple[float, float]:
    """Mean hypervolume (reference 0) and IGD of the distinct objects of sets of k samples."""
    hv, distance = [], []
    for group in x[: len(x) // k * k].split(k):
        values = u(torch.unique(group, dim=0))
        hv.append(hypervolume(values, [0.0, 0.0]))
        distance.append(igd(values, front))
    return float(np.mean(hv)), float(np.mean(distance))


def run_op(args) -> None:
    """The OP-GFN vs scalarised-TB comparison; writes gfn_op.md and gfn_op.png."""
    u = BraninCurrin(args.op_height)
    env = HyperGrid(ndim=2, height=args.op_height, reward_fn=lambda x: u(x).mean(1))
    dag = StateDAG(env)
    front_x = dag.terminal_states[non_dominated(u(dag.terminal_states))]
    front = u(front_x)
    start, runs = time.perf_counter(), []
    for rep in range(args.repeats):
        for loss_name in ("op", "tb") if rep % 2 == 0 else ("tb", "op"):
            run = train_op_comparison(env, dag, u, loss_name, args, rep)
            print(f"{loss_name} seed {rep}: front mass {run.pareto_mass[-1]:.3f}, HV "
                  f"{run.hypervolume:.4f}, IGD {run.igd:.4f}", flush=True)  # fmt: skip
            runs.append(run)
    seconds = time.perf_counter() - start
    n = env.height**2
    uniform_hv, uniform_igd = set_metrics(
        dag.terminal_states[torch.randint(n, (args.op_samples,),
                                          generator=torch.Generator().manual_seed(0))],
        u, front, args.op_set,
    )  # fmt: skip
    lines = [
        f"# GFlowNets: OP-GFN vs TB on the scalarised reward, Branin-Currin on the "
        f"{args.op_height} x {args.op_height} hypergrid",
        "",
        f"`python benchmarks/gfn.py {' '.join(args.argv)}`".replace(" `", "`"),
        "",
        f"{platform.machine()} CPU, torch {torch.__version__}, 1 thread, {seconds / 60:.1f} min. "
        f"HyperGrid ndim 2, height {args.op_height} ({n} objects), objectives u = Branin-Currin "
        f"(both in about [0, 1], maximised), exact Pareto front of {len(front)} objects "
        f"(hypervolume {hypervolume(front, [0.0, 0.0]):.4f} with reference 0). OP-GFN: the set "
        "(Pareto) order loss on the TB-implied reward, no clamp. TB: trajectory balance on "
        "R(x) = (u_1 + u_2) / 2. Both: the same initial 2 x "
        f"{args.op_hidden} ReLU MLP (learned P_B), batch {args.op_batch}, Adam lr "
        f"{args.op_lr:g} (TB log Z: {args.log_z_lr:g}), epsilon {args.op_epsilon:g}, "
        f"{args.op_trajectories} trajectories; {args.repeats} interleaved repeats (seeds 0.."
        f"{args.repeats - 1}, the same seed for both losses). Figures: median [min, max].",
        "",
        f"| loss | mass on the front (exact) | hypervolume (sets of {args.op_set}) | IGD (sets of "
        f"{args.op_set}) | exact L1 to (u_1 + u_2) / 2 / Z | trajectories/s |",
        "|---|---|---|---|---|---|",
    ]
    for loss_name, label in (("op", "OP-GFN (Pareto)"), ("tb", "TB, scalarised")):
        rs = [r for r in runs if r.loss == loss_name]
        per_s = statistics.median([r.trajectories[-1] / r.seconds for r in rs])
        lines.append(
            f"| {label} | {_stats([r.pareto_mass[-1] for r in rs])} | "
            f"{_stats([r.hypervolume for r in rs], 4)} | {_stats([r.igd for r in rs], 4)} | "
            f"{_stats([r.exact_l1 for r in rs])} | {per_s:.0f} |"
        )
    lines += [
        f"| uniform over the grid | {len(front) / n:.3f} | {uniform_hv:.4f} | "
        f"{uniform_igd:.4f} | - | - |",
        "",
        "Mass on the front: sum of the policy's exact terminal distribution P_T (dynamic program "
        "over the state DAG) over the Pareto set. Hypervolume and IGD: of the distinct objects' "
        f"u in disjoint sets of {args.op_set} of {args.op_samples} samples of the trained policy "
        "(no exploration), against the exact front, averaged over the sets (the front's own "
        "hypervolume is the ceiling, IGD 0 the floor); the uniform row draws the sets uniformly "
        "from the grid.",
        "",
        "![exact mass on the Pareto front against trajectories seen](gfn_op.png)",
        "",
    ]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "gfn_op.md").write_text("\n".join(lines))
    fig, axes = plots.figure(6.0, 4.0)
    ax = axes[0, 0]
    for i, loss_name in enumerate(("op", "tb")):
        rs = [r for r in runs if r.loss == loss_name]
        curve = np.median([r.pareto_mass for r in rs], axis=0)
        ax.plot(rs[0].trajectories, curve, marker="o", ms=3, color=f"C{i}",
                label="OP-GFN (Pareto)" if loss_name == "op" else "TB, scalarised")  # fmt: skip
    ax.axhline(len(front) / n, ls="--", color="gray", lw=1, label="uniform")
    ax.set_xlabel("trajectories seen")
    ax.set_ylabel("exact P_T on the Pareto front (median)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Branin-Currin, {args.op_height} x {args.op_height} hypergrid", fontsize=9)
    plots.save_figure(fig, out / "gfn_op.png")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=8000)
    parser.add_argument("--eval-every", type=int, default=1000, help="trajectories per L1 check")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--log-z-lr", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lam", type=float, default=0.9, help="SubTB lambda")
    parser.add_argument("--backward", choices=["uniform", "learned"], default="learned")
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    parser.add_argument("--libraries", nargs="+", default=["flowforge", "torchgfn"])
    parser.add_argument("--check-samples", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--op", action="store_true", help="the OP-GFN comparison instead")
    parser.add_argument("--op-height", type=int, default=16)
    parser.add_argument("--op-trajectories", type=int, default=25600)
    parser.add_argument("--op-batch", type=int, default=64)
    parser.add_argument("--op-lr", type=float, default=1e-3)
    parser.add_argument("--op-hidden", type=int, default=64)
    parser.add_argument("--op-epsilon", type=float, default=0.1)
    parser.add_argument("--op-samples", type=int, default=6400, help="draws for HV and IGD")
    parser.add_argument("--op-set", type=int, default=64, help="samples per set of HV and IGD")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.op:
        run_op(args)
        return
    from gfn.gym import HyperGrid as TorchgfnHyperGrid

    env_ff = HyperGrid(ndim=4, height=8, R0=1e-3)
    kwargs = {"R0": 1e-3, "R1": 0.5, "R2": 2.0}
    env_tg = TorchgfnHyperGrid(ndim=4, height=8, reward_fn_kwargs=kwargs)
    dag = StateDAG(env_ff)
    x = dag.terminal_states
    theirs = env_tg.reward_fn(x).double().log()
    assert torch.allclose(env_ff.log_reward(x).double(), theirs), "the rewards differ"
    floor = seen_floor(dag, env_ff, args.trajectories)
    runs, check, start = [], None, time.perf_counter()
    for rep in range(args.repeats):
        for i, loss in enumerate(args.losses):
            order = args.libraries if (rep + i) % 2 == 0 else args.libraries[::-1]
            for lib in order:
                if lib == "flowforge":
                    run = train_flowforge(env_ff, dag, loss, args, rep)
                else:
                    run = train_torchgfn(env_tg, env_ff, dag, loss, args, rep)
                    if check is None and args.check_samples:
                        check = (*check_program(env_tg, env_ff, dag, run, args.check_samples),
                                 args.check_samples, loss.upper())  # fmt: skip
                    del run.check
                print(f"{lib:9s} {loss:5s} seed {rep}: exact L1 {run.exact_l1[-1]:.3f}, "
                      f"{run.per_s:.0f} trajectories/s", flush=True)  # fmt: skip
                runs.append(run)
    write_results(runs, args, floor, check, args.out, time.perf_counter() - start)


if __name__ == "__main__":
    main()
