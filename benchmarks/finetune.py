"""Reward fine-tuning on 8 gaussians against the exact tilted target, at equal reward calls.

The base is a flow-matching MLP on 8 gaussians (3 x ``--hidden`` SiLU, ``--base-steps`` Adam
steps of batch 256 at lr 1e-3, as the test suite's teacher), trained once per seed. The reward
is r(x) = 1[x_2 > 0] (``HalfPlane()``) and the temperature beta (``--beta``). The optimum of
KL-regularised reward maximisation, max_q E_q[r] - beta KL(q || p), is the tilted target

    q*(x) = p(x) exp(r(x) / beta) / Z,

computed exactly by quadrature on a 420 x 420 grid of [-7, 7]^2 (``tilted_grid`` with the exact
mixture density ``eight_gaussians_log_prob``): the modes above the x_1 axis are up-weighted by
exp(1 / beta), those below kept, so the target is still multi-modal, and the two modes on the
axis are cut in half.

Methods, each from its seed's base, through its library objective in a plain loop (loss =
objective(model, x, None, generator).mean(), backward, gradient norm clipped to 1, AdamW without
weight decay), all scoring ``--batch`` samples per update, so updates and reward calls are
proportional and every method gets the same ``--calls`` reward calls:

* GRPO (``GRPOObjective``, DanceGRPO): batch / ``--group-size`` groups of one noise each, the
  ``--sample-steps``-step SDE of noise scale ``--eta`` on a uniform grid, 60 % of the steps
  trained, the last ignored, KL to the frozen base with kl_weight = beta and
  advantage_norm="none" (the KL-regularised objective at the same beta).
* ORW-CFM-W2 (``ORWObjective``): weights softmax(``--orw-beta`` r) on the lagged policy's
  ``--sample-steps``-step Euler samples, plus ``--alpha`` times the W2 bound to the base. Its
  fixed point is not the tilted target; ``--orw-beta`` was chosen so that it lands near it.
* AC-Flow (``ACFlowObjective``, a 2 x ``--critic-hidden`` ``ValueMLP`` critic, Adam
  ``--critic-lr``): ORW on batch-normalised rewards with critic advantages clipped to 2,
  weights softmax(``--ac-beta`` A), the same alpha, ``--ac-warmup`` critic warm-up updates.
* RWR, the baseline (``ORWConfig(alpha=0)``): ORW-CFM-W2's setting without the W2 term.

Hyperparameters were chosen on pilot runs (base seed 0, fine-tuning seed 100; not reported):
GRPO lr 1e-4, 3e-4, 1e-3 at eta 0.7, 3e-4 and 1e-3 at eta 1.5, 3e-4 at eta 1.0 and 2.0; ORW
orw-beta 1, 2, 4 at alpha 1 and lr 2e-4 to 1e-3; AC-Flow ac-beta 1, 2 at lr 2e-4 and 1e-3; RWR
orw-beta 0.5 to 4 at lr 5e-5 to 1e-3 (ORW's setting gave it the lowest transient MMD).

Evaluation, at checkpoints of reward calls (dense early, where RWR peaks): ``--kl-samples``
samples of the ODE (Euler, ``--sample-steps`` uniform steps, the same noise for every method and
checkpoint of a seed); GRPO, and the base for reference, also through GRPO's own SDE sampler.

* Tilted MMD: unbiased MMD^2 of the first ``--eval-samples`` samples to as many tilted-target
  draws (fixed per seed), Gaussian kernels at ``BANDWIDTH_SCALES`` times the median distance of
  a tilted-target draw, fixed once for all rows (``build_metrics``). Exact W2 (POT) on the same
  samples at the budget.
* Reward E[r] and a KL estimate: KL(q_hat || p) of the samples' histogram on ``--kl-bins`` x
  ``--kl-bins`` bins of [-7, 7]^2 (samples outside go to the edge bins) against the exact bin
  probabilities of p, a plug-in estimate (``--kl-pseudo`` adds that count to every bin; the
  default 0, since a uniform pseudo-count puts mass where p is near e^-60 and dominates the
  estimate). The exact KL of a flow's samples is not available; the estimate is biased upwards,
  by an amount measured with exact draws of p and of q*. The frontier's optimum at this beta is
  the tilted target's exact (KL, reward); other betas trace the exact frontier.

Floors: the same statistics between fresh tilted-target draws and each seed's fixed draw.
Verdicts: (1) every method's tilted MMD at the budget below the base's (median over seeds;
the tuned methods, and the baseline counted too);
(2) the best method reaches RWR's best tilted MMD (the minimum of its median curve, at any
checkpoint) with at most half RWR's reward calls to it, and RWR's MMD at the budget with at
most half the budget. Ratios are read at the checkpoints. Seeds are interleaved (the methods'
order rotated); figures are median [min, max] over the seeds.

Run (about 7 minutes on 2 CPU cores shared with other jobs, at 1 thread):

    python benchmarks/finetune.py            # writes benchmarks/results/finetune.md and .png
    python benchmarks/finetune.py --quick    # smoke run, under a minute: runs/finetune_quick/
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from flowforge.data.toy2d import eight_gaussians, eight_gaussians_log_prob
from flowforge.finetune import (
    ACFlowConfig,
    ACFlowObjective,
    GRPOConfig,
    GRPOObjective,
    HalfPlane,
    ORWConfig,
    ORWObjective,
    TiltedGrid,
    ValueMLP,
    sde_sample,
    tilted_grid,
)
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.metrics import wasserstein2
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.recipes import plots
from flowforge.recipes.vector_eval import build_metrics
from flowforge.solvers.grids import uniform_grid
from flowforge.solvers.ode import sample_ode

REWARD = HalfPlane()  # r(x) = 1[x_2 > 0]
LO, HI, N_GRID = -7.0, 7.0, 420  # the quadrature grid (60 x 60 bins of 7 x 7 cells)
METHODS = ("grpo", "orw", "acflow", "rwr")
LABELS = {
    "base": "base (no tuning)",
    "base_sde": "base, SDE sampler",
    "grpo": "GRPO",
    "grpo_sde": "GRPO, SDE sampler",
    "orw": "ORW-CFM-W2",
    "acflow": "AC-Flow",
    "rwr": "RWR (baseline)",
}
TUNED = ("grpo", "grpo_sde", "orw", "acflow", "rwr")  # the rows with a curve
COLOURS = {"grpo": "C0", "grpo_sde": "C0", "orw": "C1", "acflow": "C2", "rwr": "C3"}


@dataclass
class Curve:
    """One row of one seed: the metrics at the checkpoints (reward calls), W2 at the last."""

    row: str
    seed: int
    calls: list[int] = field(default_factory=list)
    mmd: list[float] = field(default_factory=list)
    reward: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    w2: float = math.nan
    seconds: float = 0.0

    def add(self, calls: int, values: dict[str, float]) -> None:
        self.calls.append(calls)
        self.mmd.append(values["mmd"])
        self.reward.append(values["reward"])
        self.kl.append(values["kl"])
        if "w2" in values:
            self.w2 = values["w2"]


class BinnedKL:
    """KL(q_hat || p) of a sample's histogram on bins x bins bins against p's exact bins."""

    def __init__(self, grid: TiltedGrid, bins: int, pseudo: float) -> None:
        k = N_GRID // bins
        if k * bins != N_GRID:
            raise ValueError(f"--kl-bins {bins} must divide the {N_GRID} grid cells per side")
        # cartesian_prod order: cell (i, j) at i * N_GRID + j, i along x_1
        self.p = grid.base_probs.reshape(bins, k, bins, k).sum((1, 3)).flatten()
        self.bins, self.pseudo, self.width = bins, pseudo, (HI - LO) / bins

    def __call__(self, x: Tensor) -> float:
        idx = ((x.double() - LO) / self.width).floor().long().clamp(0, self.bins - 1)
        counts = torch.bincount(idx[:, 0] * self.bins + idx[:, 1], minlength=self.bins**2)
        counts = counts.double() + self.pseudo
        q = counts / counts.sum()
        keep = q > 0  # 0 log 0 = 0
        return float((q[keep] * (q[keep].log() - self.p[keep].log())).sum())


class Evaluator:
    """The metrics of a model's samples for one seed: fixed noise, fixed target draws."""

    def __init__(self, grid: TiltedGrid, mmd, kl: BinnedKL, seed: int, args) -> None:
        self.mmd, self.kl, self.seed, self.args = mmd, kl, seed, args
        self.noise = torch.randn(args.kl_samples, 2, generator=torch.Generator().manual_seed(
            10_000 + seed))  # fmt: skip
        self.target = grid.sample(args.eval_samples, torch.Generator().manual_seed(20_000 + seed))
        self.time_grid = uniform_grid(args.sample_steps)

    @torch.no_grad()
    def samples(self, model: nn.Module, sde: bool) -> Tensor:
        if sde:  # GRPO's policy: the same SDE and step noise at every checkpoint
            g = torch.Generator().manual_seed(30_000 + self.seed)
            return sde_sample(model, self.noise, self.time_grid, self.args.eta, generator=g)
        return sample_ode(model, self.noise, self.time_grid)

    def metrics(self, x: Tensor, w2: bool = False) -> dict[str, float]:
        y = x[: self.args.eval_samples]
        out = {
            "mmd": float(self.mmd(y, self.target)),
            "reward": float(REWARD(x).mean()),
            "kl": self.kl(x),
        }
        return out | ({"w2": float(wasserstein2(y, self.target))} if w2 else {})

    def __call__(self, model: nn.Module, sde: bool, w2: bool = False) -> dict[str, float]:
        return self.metrics(self.samples(model, sde), w2)


def train_base(seed: int, args) -> MLPField:
    """The flow-matching MLP on 8 gaussians of one seed (eval mode, frozen)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = MLPField(MLPConfig(dim=2, hidden=args.hidden, depth=3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = FlowMatchingLoss()
    for _ in range(args.base_steps):
        x_1, _ = eight_gaussians(256, generator=g)
        loss = loss_fn(net, x_1, generator=g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval().requires_grad_(False)


def make_objective(key: str, base: MLPField, args):
    """The library objective of a method, scoring ``args.batch`` samples per call."""
    if key == "grpo":
        config = GRPOConfig(group_size=args.group_size, n_steps=args.sample_steps, eta=args.eta,
                            timestep_fraction=0.6, clip_range=0.2, kl_weight=args.beta,
                            shift=1.0, advantage_norm="none")  # fmt: skip
        objective = GRPOObjective(base, REWARD, config, args.batch // args.group_size, (2,))
        assert objective.batch_size == args.batch
        return objective
    if key == "acflow":
        critic = ValueMLP(MLPConfig(dim=2, hidden=args.critic_hidden, depth=2))
        config = ACFlowConfig(beta=args.ac_beta, alpha=args.alpha, batch_size=args.batch,
                              sample_steps=args.sample_steps,
                              warmup_updates=args.ac_warmup)  # fmt: skip
        return ACFlowObjective((2,), REWARD, critic, config, base, critic_lr=args.critic_lr)
    alpha = args.alpha if key == "orw" else 0.0  # RWR: no W2 term, no reference
    config = ORWConfig(beta=args.orw_beta, alpha=alpha, batch_size=args.batch,
                       sample_steps=args.sample_steps)  # fmt: skip
    return ORWObjective((2,), REWARD, config, reference=base if alpha > 0 else None)


def checkpoints(args) -> list[int]:
    """Reward calls at each evaluation: every batch up to 8 batches, then about sqrt(2) apart."""
    b, out = args.batch, []
    out += [b * i for i in range(1, 9)]
    k = 8
    while out[-1] < args.calls:
        k = k * 3 // 2 if k & (k - 1) == 0 else k * 4 // 3  # 8, 12, 16, 24, 32, ...
        out.append(min(b * k, args.calls))
    return out


def fine_tune(key: str, base: MLPField, ev: Evaluator, seed: int, args) -> list[Curve]:
    """One run of ``key`` from ``base``; GRPO is also evaluated through its SDE sampler."""
    torch.manual_seed(seed)  # the critic's initial weights
    model = copy.deepcopy(base).requires_grad_(True).train()
    objective = make_objective(key, base, args)
    lr = getattr(args, f"lr_{key}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    rows = [key, f"{key}_sde"] if key == "grpo" else [key]
    curves = [Curve(row, seed) for row in rows]
    marks, calls, seconds = set(checkpoints(args)), 0, 0.0
    placeholder = torch.zeros(1, 2)  # the objectives draw their own samples
    while calls < args.calls:
        t0 = time.perf_counter()
        loss = objective(model, placeholder, None, g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seconds += time.perf_counter() - t0
        calls += args.batch
        if calls in marks:
            model.eval()
            for curve in curves:
                curve.add(calls, ev(model, curve.row.endswith("_sde"), calls >= args.calls))
            model.train()
    for curve in curves:
        curve.seconds = seconds
    return curves


@torch.no_grad()
def grpo_fixed_point(base: MLPField, eta: float, seed: int, args) -> dict[str, float]:
    """E[r] of the base's SDE, of its x_0-conditional tilt and of its full tilt, Monte Carlo.

    GRPO's policy starts every path from x_0 ~ N(0, I), which it cannot change, so the best
    path law of E[r] - beta KL(path || base path) is P_base(path | x_0) exp(r / beta) / Z(x_0),
    not the full tilt; the two agree only when the base SDE forgets x_0.
    """
    n, m = args.fp_noises, args.fp_draws
    g = torch.Generator().manual_seed(40_000 + seed)
    x_0 = torch.randn(n, 2, generator=g).repeat_interleave(m, 0)
    x = sde_sample(base, x_0, uniform_grid(args.sample_steps), eta, generator=g)
    r = REWARD(x).double()
    cond = (torch.softmax(r.view(n, m) / args.beta, 1) * r.view(n, m)).sum(1).mean()
    full = (torch.softmax(r / args.beta, 0) * r).sum()
    return {"sde": float(r.mean()), "conditional": float(cond), "full": float(full)}


def first_reach(ts: list[int], curve: list[float], target: float) -> int | None:
    """The first checkpoint at which ``curve`` is at or below ``target`` (None: never)."""
    return next((t for t, v in zip(ts, curve, strict=True) if v <= target), None)


def _g(v: float) -> str:
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _stats(values: list[float]) -> str:
    return f"{_g(statistics.median(values))} [{_g(min(values))}, {_g(max(values))}]"


def _median(curves: list[Curve], name: str) -> np.ndarray:
    return np.median([getattr(c, name) for c in curves], axis=0)


def write_results(curves: list[Curve], extras: dict, args, seconds: float) -> None:
    """The markdown tables, the verdicts and the plot."""
    by = {row: [c for c in curves if c.row == row] for row in LABELS}
    ts = by["rwr"][0].calls
    N = ts[-1]
    seeds = sorted({c.seed for c in curves})
    beta, fl, grid = args.beta, extras["floors"], extras["grid"]
    med = {row: _median(by[row], "mmd") for row in TUNED}
    base_final = statistics.median(c.mmd[-1] for c in by["base"])
    kl_p, kl_q = extras["kl_exact_p"], extras["kl_exact_q"]
    fps = extras["fixed_points"]
    lines = [
        "# Reward fine-tuning on 8 gaussians: GRPO, ORW-CFM-W2 and AC-Flow against RWR, "
        "measured on the exact tilted target",
        "",
        f"`python benchmarks/finetune.py {' '.join(args.argv)}`".replace(" `", "`"),
        "",
        f"{platform.machine()} CPU, torch {torch.__version__}, 1 thread, {seconds / 60:.1f} min. "
        f"Base: flow-matching MLP 3 x {args.hidden} on 8 gaussians, {args.base_steps} Adam steps, "
        f"one per seed; sampled with {args.sample_steps} Euler steps. Reward r(x) = 1[x_2 > 0], "
        f"beta = {beta:g}; tilted target q* = p exp(r / beta) / Z by quadrature ({N_GRID} x "
        f"{N_GRID} cells of [{LO:g}, {HI:g}]^2). Every method scores {args.batch} samples per "
        f"update, {N} reward calls per run ({N // args.batch} updates), AdamW without weight "
        "decay, gradient norm clipped to 1. "
        f"GRPO: {args.batch // args.group_size} groups of {args.group_size}, eta {args.eta:g}, "
        f"kl_weight = beta = {beta:g}, advantage_norm none, lr {args.lr_grpo:g}. ORW-CFM-W2: "
        f"weight beta {args.orw_beta:g}, alpha {args.alpha:g}, lr {args.lr_orw:g}. AC-Flow: "
        f"weight beta {args.ac_beta:g}, alpha {args.alpha:g}, critic 2 x {args.critic_hidden} "
        f"(Adam {args.critic_lr:g}), {args.ac_warmup} warm-up updates, lr {args.lr_acflow:g}. "
        f"RWR: ORW-CFM-W2's setting without the W2 term, lr {args.lr_rwr:g}. "
        f"{len(seeds)} interleaved seeds ({seeds[0]}..{seeds[-1]}: base, fine-tuning and "
        "evaluation noise); figures are median [min, max] over the seeds.",
        "",
        "## The target and the estimators",
        "",
        f"Tilted MMD: unbiased MMD^2 of {args.eval_samples} samples to {args.eval_samples} "
        "tilted-target draws (fixed per seed), kernels at the median-heuristic bandwidth of a "
        "tilted-target draw times (1/4, 1/2, 1, 2, 4), fixed for all rows; W2: exact, the same "
        f"samples. Reward and KL estimate from {args.kl_samples} samples; the KL estimate is "
        f"KL(q_hat || p) of their histogram on {args.kl_bins} x {args.kl_bins} bins against "
        f"the exact bin probabilities of p (pseudo-count {args.kl_pseudo:g} per bin).",
        "",
        "| distribution | E[r] | KL to p, exact | KL estimate from samples | tilted MMD | W2 |",
        "|---|---|---|---|---|---|",
        f"| p, the data (exact draws) | {grid.base_mean_reward():.3f} | 0 | {_stats(kl_p)} | | |",
        f"| tilted target q* (exact draws) | {grid.mean_reward():.3f} | {grid.kl_to_base():.3f} | "
        f"{_stats(kl_q)} | {_stats(fl['mmd'])} (floor) | {_stats(fl['w2'])} (floor) |",
    ]
    for row in ("base", "base_sde"):
        cs = by[row]
        lines.append(
            f"| {LABELS[row]} | {_stats([c.reward[0] for c in cs])} | | "
            f"{_stats([c.kl[0] for c in cs])} | {_stats([c.mmd[0] for c in cs])} | "
            f"{_stats([c.w2 for c in cs])} |"
        )
    lines += [
        "",
        f"The KL estimate of exact draws measures its bias: {_stats(kl_p)} for p (exact 0), "
        f"{_stats(kl_q)} for q* (exact {grid.kl_to_base():.3f}). The frontier's optimum at "
        f"beta = {beta:g} is q*: E[r] = {grid.mean_reward():.3f} at KL {grid.kl_to_base():.3f}, "
        f"E[r] - beta KL = beta log Z = {grid.mean_reward() - beta * grid.kl_to_base():.3f}.",
        "",
        "GRPO's own optimum. Its policy starts every path from x_0 ~ N(0, I), which it cannot "
        "change, so the maximiser of E[r] - beta KL(path || base path) is the x_0-conditional "
        "tilt P_base(path | x_0) exp(r / beta) / Z(x_0), whose samples are the tilted target "
        "only if the base SDE forgets x_0. Monte Carlo over the seeds' base SDEs "
        f"({args.fp_noises} noises x {args.fp_draws} paths; E[r] of the SDE base, of its "
        "x_0-conditional tilt and of its full tilt):",
        "",
        "| SDE eta | base SDE E[r] | x_0-conditional tilt E[r] (GRPO's optimum) | "
        "full tilt E[r] |",
        "|---|---|---|---|",
    ]
    for eta, rows in fps.items():
        lines.append(
            f"| {eta:g}{' (this run)' if eta == args.eta else ''} | "
            f"{_stats([r['sde'] for r in rows])} | {_stats([r['conditional'] for r in rows])} | "
            f"{_stats([r['full'] for r in rows])} |"
        )
    lines += [
        "",
        f"## At the budget ({N} reward calls)",
        "",
        f"| method | tilted MMD | W2 | E[r] | KL estimate | E[r] - {beta:g} KL estimate | "
        "best tilted MMD (median curve), at calls | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    q_j = [grid.mean_reward() - beta * v for v in kl_q]
    lines.append(
        f"| tilted target q* (exact draws) | {_stats(fl['mmd'])} | {_stats(fl['w2'])} | "
        f"{grid.mean_reward():.3f} | {_stats(kl_q)} | {_stats(q_j)} | | |"
    )
    for row in ("base", *TUNED):
        cs = by[row]
        j = [c.reward[-1] - beta * c.kl[-1] for c in cs]
        best = ""
        if row in med:
            i = int(np.argmin(med[row]))
            best = f"{_g(float(med[row][i]))} at {ts[i]}"
        lines.append(
            f"| {LABELS[row]} | {_stats([c.mmd[-1] for c in cs])} | "
            f"{_stats([c.w2 for c in cs])} | {_stats([c.reward[-1] for c in cs])} | "
            f"{_stats([c.kl[-1] for c in cs])} | {_stats(j)} | {best} | "
            + (f"{statistics.median(c.seconds for c in cs):.0f} |" if row in TUNED else "|")
        )
    lines += [
        "",
        "## Tilted MMD against reward calls",
        "",
        "Median over the seeds; the base's is "
        f"{_g(base_final)} and the floor {_g(statistics.median(fl['mmd']))}.",
        "",
        "| reward calls | " + " | ".join(LABELS[r] for r in TUNED) + " |",
        "|---|" + "---|" * len(TUNED),
    ]
    for i, t in enumerate(ts):
        lines.append(f"| {t} | " + " | ".join(_g(float(med[r][i])) for r in TUNED) + " |")
    # verdict 1: every method's final tilted MMD below the base's
    lines += ["", "## Verdicts", ""]
    v1, all1 = [], True
    for row in TUNED:
        final = statistics.median(c.mmd[-1] for c in by[row])
        n_below = sum(c.mmd[-1] < b.mmd[0] for c, b in zip(by[row], by["base"], strict=True))
        ok = final < base_final
        all1 &= ok or row == "rwr"
        v1.append(f"{LABELS[row]} {_g(final)} ({'met' if ok else 'missed'}; below its seed's "
                  f"base on {n_below} of {len(seeds)} seeds)")  # fmt: skip
    rwr_ok = all1 and statistics.median(c.mmd[-1] for c in by["rwr"]) < base_final
    lines.append(
        f"1. Every method closer to the tilted target than the base: base {_g(base_final)}; "
        + "; ".join(v1)
        + f" (tilted MMD after {N} calls, median). All the tuned methods (GRPO, ORW-CFM-W2, "
        f"AC-Flow): **{'met' if all1 else 'missed'}**; the baseline RWR counted as well: "
        f"**{'met' if rwr_ok else 'missed'}**."
    )
    # verdict 2: reach RWR's best and RWR's final with at most half its calls
    rwr = med["rwr"]
    i_best = int(np.argmin(rwr))
    target_best, n_best, target_final = float(rwr[i_best]), ts[i_best], float(rwr[-1])
    reach = {}
    for row in TUNED[:-1]:
        t_b, t_f = first_reach(ts, list(med[row]), target_best), first_reach(
            ts, list(med[row]), target_final)  # fmt: skip
        reach[row] = (n_best / t_b if t_b else 0.0, t_b, N / t_f if t_f else 0.0, t_f)
    winner = max(reach, key=lambda r: (reach[r][0], reach[r][2]))
    parts = [
        f"{LABELS[r]} " + (f"after {b} calls ({x:.2f}x fewer)" if b else f"not within {N}")
        for r, (x, b, _, _) in reach.items()
    ]
    per_seed = []
    for s in seeds:
        (c_rwr,) = [c for c in by["rwr"] if c.seed == s]
        (c_win,) = [c for c in by[winner] if c.seed == s]
        j = int(np.argmin(c_rwr.mmd))
        t = first_reach(ts, c_win.mmd, c_rwr.mmd[j])
        per_seed.append(f"seed {s}: {ts[j] / t:.2f}x" if t else f"seed {s}: not within {N}")
    x_best, b_best, x_final, b_final = reach[winner]
    met2a, met2b = x_best >= 2, x_final >= 2
    lines.append(
        f"2. RWR's best tilted MMD is {_g(target_best)} (its median curve's minimum, after "
        f"{n_best} calls; {_g(target_final)} after {N}). First reached by: "
        + "; ".join(parts)
        + f". The best method, {LABELS[winner]}, reaches RWR's best "
        + (f"with {x_best:.2f}x fewer calls" if b_best else "never")
        + f" (target >= 2x: **{'met' if met2a else 'missed'}**; per seed, against the same "
        f"seed's RWR minimum: {', '.join(per_seed)}), and RWR's MMD after {N} calls "
        + (f"after {b_final} calls, {x_final:.2f}x fewer" if b_final else "never")
        + f" (target >= 2x: **{'met' if met2b else 'missed'}**)."
    )
    lines += [
        "",
        "Notes: the ratios are read at the checkpoints (about sqrt(2) apart after the first "
        f"{8 * args.batch} calls), so a crossing between two of them counts at the later one. "
        "RWR's best is a transient: with no anchor it keeps tilting (and drifts: it regresses "
        f"on its own {args.sample_steps}-step Euler samples) past the target, so reaching it "
        "takes stopping at the right checkpoint, which needs the exact target. ORW-CFM-W2's and "
        "AC-Flow's fixed points are set by their weight beta and alpha, not by beta; GRPO's by "
        "beta, but x_0-conditionally (table above). The KL estimates are biased upwards (see "
        "the exact draws), so the reward-vs-KL points lie right of the exact frontier.",
        "",
        "![tilted MMD against reward calls, and reward against the KL estimate](finetune.png)",
        "",
    ]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "finetune.md").write_text("\n".join(lines))
    plot(by, extras, args, out / "finetune.png")
    print("\n".join(lines))


def plot(by: dict[str, list[Curve]], extras: dict, args, path: Path) -> None:
    """Left: tilted MMD against reward calls; right: the reward-vs-KL-estimate plane."""
    grid, fl = extras["grid"], extras["floors"]
    fig, axes = plots.figure(11.5, 4.3, 1, 2)
    ax, bx = axes[0]
    for row in TUNED:
        cs = by[row]
        ts = cs[0].calls
        values = np.array([c.mmd for c in cs])
        ls = "--" if row.endswith("_sde") else "-"
        ax.plot(ts, np.median(values, 0), ls, marker="o", ms=2.5, color=COLOURS[row],
                label=LABELS[row])  # fmt: skip
        ax.fill_between(ts, values.min(0), values.max(0), color=COLOURS[row], alpha=0.12, lw=0)
    ax.axhline(statistics.median(c.mmd[0] for c in by["base"]), color="k", lw=1,
               label=LABELS["base"])  # fmt: skip
    ax.axhline(statistics.median(c.mmd[0] for c in by["base_sde"]), color="k", ls="--", lw=1,
               label=LABELS["base_sde"])  # fmt: skip
    ax.axhline(statistics.median(abs(v) for v in fl["mmd"]), color="gray", ls=":", lw=1,
               label=f"floor, |MMD^2| of {args.eval_samples} exact draws")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("reward calls")
    ax.set_ylabel("tilted MMD^2 (median, [min, max] shaded)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title(f"r = 1[x_2 > 0], beta = {args.beta:g}", fontsize=9)
    front = extras["frontier"]
    bx.plot([f["kl"] for f in front], [f["reward"] for f in front], "k-", lw=1,
            label="exact frontier (q* over beta)")  # fmt: skip
    bx.plot([f["kl_hat"] for f in front], [f["reward"] for f in front], "k--", lw=1,
            label="its KL estimate (exact draws)")  # fmt: skip
    bx.plot([grid.kl_to_base()], [grid.mean_reward()], "k*", ms=10,
            label=f"q* at beta {args.beta:g}")  # fmt: skip
    base = by["base"]
    bx.plot([statistics.median(c.kl[0] for c in base)],
            [statistics.median(c.reward[0] for c in base)], "ks", ms=5,
            label=LABELS["base"])  # fmt: skip
    base = by["base_sde"]
    bx.plot([statistics.median(c.kl[0] for c in base)],
            [statistics.median(c.reward[0] for c in base)], "ks", ms=5, mfc="none",
            label=LABELS["base_sde"])  # fmt: skip
    for row in TUNED:
        cs = by[row]
        ls = "--" if row.endswith("_sde") else "-"
        kl, r = _median(cs, "kl"), _median(cs, "reward")
        bx.plot(kl, r, ls, marker="o", ms=2, lw=0.8, color=COLOURS[row], label=LABELS[row])
        bx.plot(kl[-1:], r[-1:], "o", ms=6, mfc="none", color=COLOURS[row])
    bx.set_xscale("log")
    bx.set_xlabel("KL(q || p), estimate from samples (exact for the frontier line)")
    bx.set_ylabel("E[r]")
    bx.grid(alpha=0.3, which="both")
    bx.legend(fontsize=7)
    bx.set_title("reward against KL, median over seeds (ring: the budget)", fontsize=9)
    plots.save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beta", type=float, default=0.5, help="tilt temperature")
    parser.add_argument("--calls", type=int, default=65536, help="reward calls per run")
    parser.add_argument("--batch", type=int, default=64, help="reward calls per update")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--base-steps", type=int, default=3000)
    parser.add_argument("--sample-steps", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=16)
    parser.add_argument("--eta", type=float, default=1.5, help="GRPO's SDE noise scale")
    parser.add_argument("--lr-grpo", type=float, default=3e-4)
    parser.add_argument("--orw-beta", type=float, default=4.0, help="ORW and RWR weight beta")
    parser.add_argument("--alpha", type=float, default=1.0, help="W2 weight (ORW, AC-Flow)")
    parser.add_argument("--lr-orw", type=float, default=1e-3)
    parser.add_argument("--ac-beta", type=float, default=1.0)
    parser.add_argument("--ac-warmup", type=int, default=50)
    parser.add_argument("--critic-hidden", type=int, default=64)
    parser.add_argument("--critic-lr", type=float, default=1e-3)
    parser.add_argument("--lr-acflow", type=float, default=1e-3)
    parser.add_argument("--lr-rwr", type=float, default=1e-3)
    parser.add_argument("--eval-samples", type=int, default=2000, help="for MMD and W2")
    parser.add_argument("--kl-samples", type=int, default=20000, help="for reward and KL")
    parser.add_argument("--kl-bins", type=int, default=60)
    parser.add_argument("--kl-pseudo", type=float, default=0.0, help="pseudo-count per bin")
    parser.add_argument("--floor-repeats", type=int, default=3)
    parser.add_argument("--fp-noises", type=int, default=500, help="GRPO optimum: x_0 draws")
    parser.add_argument("--fp-draws", type=int, default=64, help="GRPO optimum: paths per x_0")
    parser.add_argument("--out", type=Path, default=None,
                        help="benchmarks/results (runs/finetune_quick with --quick)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 1024 calls")
    args = parser.parse_args()
    args.argv = sys.argv[1:]
    if args.quick:
        args.repeats, args.calls, args.base_steps, args.floor_repeats = 1, 1024, 300, 1
        args.eval_samples, args.kl_samples, args.fp_noises, args.fp_draws = 500, 4000, 50, 16
    if args.calls % args.batch or args.batch % args.group_size:
        parser.error("--calls must be a multiple of --batch, --batch of --group-size")
    if args.out is None:
        root = Path(__file__).resolve().parent
        args.out = root.parent / "runs" / "finetune_quick" if args.quick else root / "results"
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    grid = tilted_grid(eight_gaussians_log_prob, REWARD, args.beta, LO, HI, N_GRID)
    reference = grid.sample(args.eval_samples, torch.Generator().manual_seed(1))
    mmd = build_metrics(["mmd"], seed=0, reference=reference)["mmd"]
    kl = BinnedKL(grid, args.kl_bins, args.kl_pseudo)
    g = torch.Generator().manual_seed(2)
    frontier = []
    for b in (8.0, 4.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0625):
        q = tilted_grid(eight_gaussians_log_prob, REWARD, b, LO, HI, N_GRID)
        frontier.append({"beta": b, "kl": q.kl_to_base(), "reward": q.mean_reward(),
                         "kl_hat": kl(q.sample(args.kl_samples, g))})  # fmt: skip
    kl_exact_p = [kl(eight_gaussians(args.kl_samples, generator=g)[0])
                  for _ in range(args.floor_repeats)]  # fmt: skip
    kl_exact_q = [kl(grid.sample(args.kl_samples, g)) for _ in range(args.floor_repeats)]
    floors: dict[str, list[float]] = {"mmd": [], "w2": []}
    curves: list[Curve] = []
    fixed_points: dict[float, list[dict[str, float]]] = {e: [] for e in sorted({0.7, args.eta})}
    for rep in range(args.repeats):
        ev = Evaluator(grid, mmd, kl, rep, args)
        for _ in range(args.floor_repeats):
            y = grid.sample(args.eval_samples, g)
            floors["mmd"].append(float(mmd(y, ev.target)))
            floors["w2"].append(float(wasserstein2(y, ev.target)))
        t0 = time.perf_counter()
        base = train_base(rep, args)
        print(f"seed {rep}: base trained ({time.perf_counter() - t0:.0f} s)", flush=True)
        for row in ("base", "base_sde"):
            curve = Curve(row, rep)
            curve.add(0, ev(base, row.endswith("_sde"), w2=True))
            curves.append(curve)
        for eta in fixed_points:
            fixed_points[eta].append(grpo_fixed_point(base, eta, rep, args))
        order = METHODS[rep % len(METHODS) :] + METHODS[: rep % len(METHODS)]
        for key in order:
            for curve in fine_tune(key, base, ev, rep, args):
                curves.append(curve)
                print(f"{LABELS[curve.row]:20s} seed {rep}: tilted MMD {curve.mmd[-1]:.4f}, "
                      f"E[r] {curve.reward[-1]:.3f}, KL est. {curve.kl[-1]:.3f} after "
                      f"{curve.calls[-1]} calls ({curve.seconds:.0f} s, "
                      f"{time.perf_counter() - start:.0f} s so far)", flush=True)  # fmt: skip
    extras = {"grid": grid, "floors": floors, "frontier": frontier, "kl_exact_p": kl_exact_p,
              "kl_exact_q": kl_exact_q, "fixed_points": fixed_points}  # fmt: skip
    write_results(curves, extras, args, time.perf_counter() - start)


if __name__ == "__main__":
    main()
