"""flowforge vs torchcfm vs Meta's flow_matching on 2-D toys: speed, agreement, quality per NFE.

Every library trains the same network (``MLPField``, 3 x 256 SiLU, raw t as an extra input, i.e.
torchcfm's ``MLP`` layout) from the same initial ``state_dict`` with Adam(lr=1e-3) on the same
precomputed stream of data ``x_1``, noise ``x_0`` and times ``t``; only the objective differs:

    torchcfm        ConditionalFlowMatcher(sigma=0)
                        .sample_location_and_conditional_flow(x_0, x_1, t)
    flow_matching   AffineProbPath(CondOTScheduler()).sample(x_0, x_1, t)
    flowforge       FlowMatchingLoss(time_sampler=<replays t>)(model, x_1, x_0=x_0)

Reported (markdown table + two plots under ``--out``):

1. training steps/s, median over interleaved repeats (libraries in rotating order), and the ratio
   of flowforge to the fastest peer, on the same stream (pure step cost) and end to end (each
   library draws its own noise and times; flowforge through ``train()``);
2. final-weight and loss-curve agreement after ``--steps`` steps on the same stream;
3. exact W2 (2000 samples) and sliced W2 (4096 samples, 512 fixed directions) at NFE 1..32 for
   Euler, midpoint, Heun and dopri5, beside the finite-sample floor; every library's solver runs
   on the same trained model and the same x_0, so equal numbers show equal solvers
   (|W2(a, y) - W2(b, y)| <= W2(a, b) <= max_i ||a_i - b_i||, so max|dx| bounds the metric gap);
   wall-clock seconds per 1000 samples per solver and library;
4. the minibatch-OT variant: torchcfm ``ExactOptimalTransportConditionalFlowMatcher`` vs
   flowforge ``FlowMatchingLoss(coupling=ExactOTCoupling())``.

Peers come from ``scripts/bench_setup.sh`` (the ``[bench]`` extra without torchvision). Run:

    python benchmarks/peers_2d.py              # full run, 6 to 9 minutes on 2 shared cores
    python benchmarks/peers_2d.py --quick      # smoke run, about a minute
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from flowforge.data.toy2d import eight_gaussians, moons
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.metrics.floor import finite_sample_floor
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.metrics.wasserstein import wasserstein2
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.paths.couplings import ExactOTCoupling
from flowforge.solvers.adaptive import sample_dopri5
from flowforge.solvers.grids import uniform_grid
from flowforge.solvers.ode import NFE_PER_STEP, sample_ode
from flowforge.train.config import TrainConfig
from flowforge.train.loop import make_optimizer, train

TASKS = {"eight_gaussians": eight_gaussians, "moons": moons}
NFES = (1, 2, 4, 8, 16, 32)
FIXED_SOLVERS = ("euler", "midpoint", "heun")
PEERS = ("torchcfm", "flow_matching")
LIBS = ("flowforge", *PEERS)
N_PROJ = 512  # sliced-W2 directions
DIR_SEED = 1234  # seed of the sliced-W2 directions: the same 512 directions for every number
DOPRI_TOL = 1e-5
Loss = Callable[[nn.Module, Tensor, Tensor, Tensor], Tensor]  # (model, x_0, x_1, t) -> ()


# ----------------------------------------------------------------------------- the shared setup
def make_model(seed: int = 0) -> MLPField:
    """The network every library trains: 3 x 256 SiLU with raw t concatenated (torchcfm's MLP)."""
    torch.manual_seed(seed)
    return MLPField(MLPConfig(dim=2, hidden=256, depth=3, time_embed_dim=0, activation="silu"))


def clone_model(model: nn.Module) -> nn.Module:
    """A fresh copy with the same ``state_dict`` (identical initial weights)."""
    return copy.deepcopy(model)


@dataclass
class Stream:
    """Precomputed stream: per step data x_1 (S, B, 2), noise x_0 (S, B, 2) and times t (S, B)."""

    x_1: Tensor
    x_0: Tensor
    t: Tensor

    def __len__(self) -> int:
        return self.x_1.shape[0]


def make_stream(task: str, steps: int, batch: int, seed: int) -> Stream:
    """Draw ``steps`` batches of (x_1, x_0, t) from one seeded generator, in that order."""
    g = torch.Generator().manual_seed(seed)
    x_1, x_0, t = [], [], []
    for _ in range(steps):
        x_1.append(TASKS[task](batch, g)[0])
        x_0.append(torch.randn(batch, 2, generator=g))
        t.append(torch.rand(batch, generator=g))
    return Stream(torch.stack(x_1), torch.stack(x_0), torch.stack(t))


class ReplayTime:
    """A flowforge time sampler that returns the stream's precomputed t (set before each call)."""

    def __init__(self) -> None:
        self.t: Tensor | None = None

    def __call__(self, n, generator=None, device=None, dtype=torch.float32) -> Tensor:
        assert self.t is not None and self.t.shape == (n,), "set ReplayTime.t to a (B,) tensor"
        return self.t


# ----------------------------------------------------------------------------- objectives
def flowforge_loss(ot: bool = False) -> Loss:
    times = ReplayTime()
    objective = FlowMatchingLoss(time_sampler=times, coupling=ExactOTCoupling() if ot else None)

    def loss(model, x_0, x_1, t):
        times.t = t
        return objective(model, x_1, x_0=x_0).mean()

    return loss


def torchcfm_loss(ot: bool = False) -> Loss:
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )

    fm = (ExactOptimalTransportConditionalFlowMatcher if ot else ConditionalFlowMatcher)(sigma=0.0)

    def loss(model, x_0, x_1, t):  # torchcfm's README loop
        t, x_t, u_t = fm.sample_location_and_conditional_flow(x_0, x_1, t=t)
        return torch.mean((model(x_t, t) - u_t) ** 2)

    return loss


def flow_matching_loss() -> Loss:
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler

    path = AffineProbPath(scheduler=CondOTScheduler())

    def loss(model, x_0, x_1, t):  # flow_matching's examples/2d_flow_matching loop
        s = path.sample(t=t, x_0=x_0, x_1=x_1)
        return torch.pow(model(s.x_t, s.t) - s.dx_t, 2).mean()

    return loss


LOSSES: dict[str, Callable[[], Loss]] = {
    "flowforge": flowforge_loss,
    "torchcfm": torchcfm_loss,
    "flow_matching": flow_matching_loss,
}


Optimizer = Callable[[nn.Module], torch.optim.Optimizer]


def adam(**kwargs) -> Optimizer:
    """The peers' optimizer, Adam(lr=1e-3), with extra keyword arguments."""
    return lambda model: torch.optim.Adam(model.parameters(), lr=1e-3, **kwargs)


def flowforge_adamw(model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer flowforge's ``train()`` builds (AdamW, weight decay 0: Adam's math)."""
    return make_optimizer(model, TrainConfig(lr=1e-3, weight_decay=0.0))


TRAIN_STEP = "flowforge + train()'s AdamW"
# flowforge step variants timed beside the plain loop: (objective, optimizer).
VARIANTS: dict[str, tuple[Callable[[], Loss], Optimizer]] = {
    TRAIN_STEP: (flowforge_loss, flowforge_adamw),
    "flowforge + Adam(foreach=True)": (flowforge_loss, adam(foreach=True)),
}


@dataclass
class Trainer:
    """A model, its optimizer and one library's objective: ``step`` is the pure training step."""

    model: nn.Module
    loss: Loss
    optimizer: torch.optim.Optimizer
    losses: list[Tensor] = field(default_factory=list)

    @classmethod
    def build(cls, init: nn.Module, loss: Loss, optimizer: Optimizer | None = None) -> Trainer:
        model = clone_model(init)
        return cls(model, loss, (optimizer or adam())(model))

    def step(self, x_0: Tensor, x_1: Tensor, t: Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.model, x_0, x_1, t)
        loss.backward()
        self.optimizer.step()
        self.losses.append(loss.detach())

    def run(self, stream: Stream, start: int = 0, steps: int | None = None) -> float:
        """Train on stream[start : start + steps]; returns the wall-clock seconds."""
        stop = len(stream) if steps is None else start + steps
        t0 = time.perf_counter()
        for i in range(start, stop):
            self.step(stream.x_0[i], stream.x_1[i], stream.t[i])
        return time.perf_counter() - t0


# ----------------------------------------------------------------------------- timing helpers
def interleaved(runners: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call every runner ``repeats`` times, rotating the order each round; seconds per call.

    Example:
        >>> calls = []
        >>> out = interleaved({"a": lambda: calls.append("a") or 1.0,
        ...                    "b": lambda: calls.append("b") or 2.0}, repeats=2)
        >>> calls, out
        (['a', 'b', 'b', 'a'], {'a': [1.0, 1.0], 'b': [2.0, 2.0]})
    """
    names = list(runners)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(runners[name]())
    return out


def rates(seconds: list[float], steps: int) -> tuple[float, float, float]:
    """(median, min, max) steps/s from the seconds each repeat took.

    Example:
        >>> rates([1.0, 2.0, 0.5], 10)
        (10.0, 5.0, 20.0)
    """
    r = [steps / s for s in seconds]
    return statistics.median(r), min(r), max(r)


def paired_ratios(secs: dict[str, list[float]]) -> tuple[str, dict[str, list[float]]]:
    """The fastest peer (by median time) and, per runner, its speed ratio to that peer in each
    round: rounds are timed back to back, so load that lasts a round cancels in the ratio.

    Example:
        >>> paired_ratios({"torchcfm": [2.0, 4.0], "flow_matching": [4.0, 4.0], "x": [1.0, 2.0]})
        ('torchcfm', {'torchcfm': [1.0, 1.0], 'flow_matching': [0.5, 1.0], 'x': [2.0, 2.0]})
    """
    fastest = min(PEERS, key=lambda p: statistics.median(secs[p]))
    ref = secs[fastest]
    return fastest, {k: [r / s for s, r in zip(v, ref, strict=True)] for k, v in secs.items()}


def max_abs_diff(a: dict[str, Tensor] | Tensor, b: dict[str, Tensor] | Tensor) -> float:
    """Largest absolute difference between two tensors or two state_dicts.

    Example:
        >>> max_abs_diff({"w": torch.zeros(2)}, {"w": torch.tensor([0.0, -0.5])})
        0.5
    """
    if isinstance(a, Tensor):
        return (a.double() - b.double()).abs().max().item()
    return max(max_abs_diff(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- speed
def natural_step(
    lib: str, task: str, batch: int
) -> Callable[[nn.Module, torch.optim.Optimizer], None]:
    """One end-to-end peer step: draw data, then noise and times the library's own way."""
    sampler = TASKS[task]
    if lib == "torchcfm":
        from torchcfm.conditional_flow_matching import ConditionalFlowMatcher

        fm = ConditionalFlowMatcher(sigma=0.0)

        def step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
            x_1 = sampler(batch, None)[0]
            x_0 = torch.randn_like(x_1)
            optimizer.zero_grad(set_to_none=True)
            t, x_t, u_t = fm.sample_location_and_conditional_flow(x_0, x_1)  # t ~ U inside
            loss = torch.mean((model(x_t, t) - u_t) ** 2)
            loss.backward()
            optimizer.step()

        return step

    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler

    path = AffineProbPath(scheduler=CondOTScheduler())

    def step(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        x_1 = sampler(batch, None)[0]
        x_0 = torch.randn_like(x_1)
        t = torch.rand(x_1.shape[0])
        optimizer.zero_grad(set_to_none=True)
        s = path.sample(t=t, x_0=x_0, x_1=x_1)
        loss = torch.pow(model(s.x_t, s.t) - s.dx_t, 2).mean()
        loss.backward()
        optimizer.step()

    return step


def flowforge_train_config(steps: int, batch: int, defaults: bool) -> TrainConfig:
    if defaults:  # train()'s defaults: EMA 0.999, clip 1.0, cosine schedule (no progress bar)
        return TrainConfig(steps=steps, batch_size=batch, lr=1e-3, progress=False, device="cpu")
    return TrainConfig(
        steps=steps,
        batch_size=batch,
        lr=1e-3,
        ema_decay=0.0,
        grad_clip=0.0,
        schedule="constant",
        progress=False,
        device="cpu",
    )


def speed(
    task: str, init: nn.Module, n: int, batch: int, repeats: int, seed: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per ``n`` steps of every runner of both regimes, interleaved ``repeats`` times."""
    stream = make_stream(task, n, batch, seed=seed + 100)

    # Same stream: one Trainer per library (and flowforge variants), each replays the stream.
    runners: dict[tuple[str, str], Callable[[], float]] = {}
    for lib in LIBS:
        tr = Trainer.build(init, LOSSES[lib]())
        runners["same stream", lib] = lambda tr=tr: tr.run(stream)
    for name, (loss, optimizer) in VARIANTS.items():
        tr = Trainer.build(init, loss(), optimizer)
        runners["same stream", name] = lambda tr=tr: tr.run(stream)

    # End to end: peers draw their own noise/times; flowforge runs train() for n steps.
    for lib in PEERS:
        model = clone_model(init)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        step = natural_step(lib, task, batch)

        def run(step=step, model=model, optimizer=optimizer) -> float:
            t0 = time.perf_counter()
            for _ in range(n):
                step(model, optimizer)
            return time.perf_counter() - t0

        runners["end to end", lib] = run

    def data(k: int, g: torch.Generator) -> tuple[Tensor, None]:
        return TASKS[task](k, g)[0], None  # drop the labels: the field is unconditional

    for label, defaults in (("flowforge train()", False), ("flowforge train() defaults", True)):
        config = flowforge_train_config(n, batch, defaults)

        def run(config=config) -> float:
            model = clone_model(init)
            t0 = time.perf_counter()
            train(model, FlowMatchingLoss(), data, config)
            return time.perf_counter() - t0

        runners["end to end", label] = run

    for r in runners.values():  # warm-up: allocator, lazy imports, first-call overheads
        r()
    # Both regimes in one rotation, so a burst of load from elsewhere hits every runner alike.
    secs = interleaved(runners, repeats)
    out: dict[str, dict[str, list[float]]] = {}
    for (regime, name), v in secs.items():
        out.setdefault(regime, {})[name] = v
    return out


def profile_step(init: nn.Module, task: str, batch: int, steps: int = 30) -> list[tuple]:
    """Share of flowforge's same-stream step time by operator group (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    stream = make_stream(task, steps + 5, batch, seed=7)
    tr = Trainer.build(init, flowforge_loss())
    tr.run(stream, 0, 5)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        tr.run(stream, 5, steps)
    groups = {
        "matmul (addmm/mm)": ("aten::addmm", "aten::mm"),
        "SiLU fwd+bwd": ("aten::silu", "aten::silu_backward"),
    }
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    opt = sum(e.cpu_time_total for e in prof.key_averages() if e.key.startswith("Optimizer.step"))
    rows = []
    for label, keys in groups.items():
        us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in keys)
        rows.append((label, us / steps / 1e3, us / total))
    rows.append(("Adam step (total)", opt / steps / 1e3, opt / total))
    rest = total - sum(r[1] * steps * 1e3 for r in rows)
    rows.append(("everything else", rest / steps / 1e3, rest / total))
    rows.append(("step total", total / steps / 1e3, 1.0))
    return rows


# ----------------------------------------------------------------------------- sampling
def batched_field(model: nn.Module) -> Callable[[Tensor, Tensor], Tensor]:
    """Peer solvers call f(t, x) with a scalar t; the field wants (B,) times."""

    def f(t: Tensor, x: Tensor) -> Tensor:
        return model(x, torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0]))

    return f


def solve(lib: str, model: nn.Module, x_0: Tensor, method: str, nfe: int | None):
    """Samples and the NFE spent for one library's solver; None when it has no such solver."""
    calls = 0

    def counted(x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        nonlocal calls
        calls += 1
        return model(x, t)

    f = batched_field(counted)
    with torch.no_grad():
        if lib == "flowforge":
            if method == "dopri5":
                x = sample_dopri5(counted, x_0, atol=DOPRI_TOL, rtol=DOPRI_TOL)
            else:
                x = sample_ode(counted, x_0, uniform_grid(nfe // NFE_PER_STEP[method]), method)
        elif lib == "flow_matching":
            from flow_matching.solver import ODESolver

            solver = ODESolver(velocity_model=lambda x, t: f(t, x))
            if method == "heun":
                return None  # torchdiffeq has no fixed-step 2nd-order Heun ("heun3" is RK3)
            if method == "dopri5":
                x = solver.sample(x_0, None, "dopri5", atol=DOPRI_TOL, rtol=DOPRI_TOL)
            else:
                x = solver.sample(x_0, NFE_PER_STEP[method] / nfe, method)
        else:  # torchcfm samples through torchdyn's NeuralODE, i.e. torchdyn.numerics.odeint
            try:
                from torchdyn.numerics import odeint
            except ImportError:
                return None
            if method == "heun":
                return None  # torchdyn has no Heun
            if method == "dopri5":
                span = torch.tensor([0.0, 1.0])
                x = odeint(f, x_0, span, "dopri5", atol=DOPRI_TOL, rtol=DOPRI_TOL)[1][-1]
            else:
                x = odeint(f, x_0, uniform_grid(nfe // NFE_PER_STEP[method]), method)[1][-1]
    return x, calls


def sampler_overhead(model: nn.Module, batch: int, nfe: int, repeats: int) -> dict[str, float]:
    """Microseconds per network call that a sampler adds to the call itself: flowforge's
    ``sample_ode`` (Euler, Heun) against a plain hand-written loop, on the same network and
    noise, repeats interleaved; the pure calls ``model(x, t)`` are timed in the same rounds.

    overhead = (time of the solve - time of its ``nfe`` bare calls) / nfe.
    """
    x_0 = torch.randn(batch, 2, generator=torch.Generator().manual_seed(7))
    grid_e, grid_h = uniform_grid(nfe), uniform_grid(nfe // 2)

    def plain_euler() -> Tensor:
        x, ts = x_0, torch.linspace(0, 1, nfe + 1)
        for i in range(nfe):
            x = x + (ts[i + 1] - ts[i]) * model(x, ts[i].expand(batch))
        return x

    def plain_heun() -> Tensor:
        x, ts = x_0, torch.linspace(0, 1, nfe // 2 + 1)
        for i in range(nfe // 2):
            h = ts[i + 1] - ts[i]
            v_0 = model(x, ts[i].expand(batch))
            v_1 = model(x + h * v_0, ts[i + 1].expand(batch))
            x = x + h * 0.5 * (v_0 + v_1)
        return x

    def bare() -> None:
        t = torch.full((batch,), 0.5)
        for _ in range(nfe):
            model(x_0, t)

    runners = {
        "bare calls": bare,
        "plain euler": plain_euler,
        "flowforge euler": lambda: sample_ode(model, x_0, grid_e, "euler"),
        "plain heun": plain_heun,
        "flowforge heun": lambda: sample_ode(model, x_0, grid_h, "heun"),
    }

    def timed(f):
        def run() -> float:
            t0 = time.perf_counter()
            f()
            return time.perf_counter() - t0

        return run

    with torch.no_grad():
        secs = interleaved({k: timed(f) for k, f in runners.items()}, repeats)
    bare_s = secs.pop("bare calls")
    # per round: (solve - bare) / nfe, then the median over rounds
    return {
        k: statistics.median((s - b) / nfe * 1e6 for s, b in zip(v, bare_s, strict=True))
        for k, v in secs.items()
    } | {"bare call": statistics.median(bare_s) / nfe * 1e6}


def timed_solves(model, x_0, method, nfe, libs, repeats) -> dict[str, tuple[Tensor, int, float]]:
    """(samples, NFE, median seconds per 1000 samples) per library, libraries interleaved."""
    results = {}
    seconds: dict[str, list[float]] = {lib: [] for lib in libs}
    for r in range(repeats):
        k = r % len(libs)
        for lib in libs[k:] + libs[:k]:
            t0 = time.perf_counter()
            out = solve(lib, model, x_0, method, nfe)
            seconds[lib].append(time.perf_counter() - t0)
            results[lib] = out
    return {
        lib: (*out, statistics.median(seconds[lib]) * 1000 / x_0.shape[0])
        for lib, out in results.items()
        if out is not None
    }


@dataclass
class Metrics:
    """Quality of a sample set against the held-out target."""

    w2: float
    sw: float


def sw_fixed(a: Tensor, b: Tensor) -> Tensor:
    """Sliced W2 with the benchmark's fixed directions (the same for every number)."""
    return sliced_wasserstein(a, b, N_PROJ, generator=torch.Generator().manual_seed(DIR_SEED))


def evaluate(samples: Tensor, target: Tensor, n_w2: int, n_sw: int) -> Metrics:
    """Exact W2 on the first ``n_w2`` points, sliced W2 on the first ``n_sw``."""
    return Metrics(
        wasserstein2(samples[:n_w2], target[:n_w2]).item(),
        sw_fixed(samples[:n_sw], target[:n_sw]).item(),
    )


def floors(task: str, repeats: int, n_w2: int, n_sw: int) -> Metrics:
    """Finite-sample floors: the metrics between two fresh target sets of the same sizes."""
    g = torch.Generator().manual_seed(99)
    w2 = finite_sample_floor(wasserstein2, TASKS[task], n_w2, repeats, g).item()
    return Metrics(w2, finite_sample_floor(sw_fixed, TASKS[task], n_sw, repeats, g).item())


def configs(quick: bool) -> list[tuple[str, int | None]]:
    """(method, NFE) pairs: fixed-step solvers at every NFE they can reach, then dopri5."""
    nfes = (1, 2, 8) if quick else NFES
    out = [(m, n) for m in FIXED_SOLVERS for n in nfes if n % NFE_PER_STEP[m] == 0]
    return out + [("dopri5", None)]


def quality(model, task, args, libs=LIBS) -> list[dict]:
    """Per (method, NFE): flowforge's metrics, each peer's max|dx| from flowforge and s/1k."""
    n = max(args.w2_samples, args.sw_samples)
    x_0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(args.seed + 1))
    target = TASKS[task](n, torch.Generator().manual_seed(args.seed + 2))[0]
    model.eval()
    rows = []
    for method, nfe in configs(args.quick):
        out = timed_solves(model, x_0, method, nfe, list(libs), args.sample_repeats)
        ref = out["flowforge"][0]
        row = {"method": method, "nfe": nfe, "libs": {}}
        for lib, (x, calls, s_per_1k) in out.items():
            dx = max_abs_diff(x, ref)
            # Metrics are computed for flowforge, and for a peer only where its samples differ
            # (dopri5 of torchdyn): elsewhere max|dx| bounds the difference of W2 and SW.
            m = (
                evaluate(x, target, args.w2_samples, args.sw_samples)
                if lib == "flowforge" or dx > 1e-4
                else None
            )
            row["libs"][lib] = {"nfe": calls, "dx": dx, "s_per_1k": s_per_1k, "metrics": m}
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- report
def machine_info() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = [f"torch {torch.__version__}", f"numpy {np.__version__}"]
    for mod in ("torchcfm", "flow_matching", "torchdyn", "torchdiffeq", "ot"):
        try:
            versions.append(f"{mod} {getattr(__import__(mod), '__version__', '?')}")
        except ImportError:
            versions.append(f"{mod} missing")
    return [
        f"- machine: {cpu}, {os.cpu_count()} logical cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}",
        f"- torch threads: {torch.get_num_threads()}; " + ", ".join(versions),
    ]


def fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{digits}f}"


def fmt_dx(dx: float) -> str:
    return "0" if dx == 0 else f"{dx:.1e}"


def speed_table(regime: str, secs: dict[str, list[float]], steps: int) -> list[str]:
    """Median steps/s and range; the ratio to the fastest peer, of medians and paired."""
    r = {k: rates(v, steps) for k, v in secs.items()}
    fastest, ratios = paired_ratios(secs)
    lines = [
        f"| {regime} | median steps/s | [min, max] | ratio of medians to {fastest} "
        "| paired ratio: median [min, max] |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (med, lo, hi) in r.items():
        q = ratios[name]
        lines.append(
            f"| {name} | {med:.1f} | [{lo:.1f}, {hi:.1f}] | {med / r[fastest][0]:.3f} "
            f"| {statistics.median(q):.3f} [{min(q):.2f}, {max(q):.2f}] |"
        )
    return lines


def quality_table(rows: list[dict], floor: Metrics) -> list[str]:
    lines = [
        "| solver | NFE | W2 | SW2 | s/1k ff | max\\|dx\\| torchcfm | s/1k torchcfm "
        "| max\\|dx\\| flow_matching | s/1k flow_matching |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ff = row["libs"]["flowforge"]
        cells = [row["method"], str(ff["nfe"]), fmt(ff["metrics"].w2), fmt(ff["metrics"].sw)]
        cells.append(fmt(ff["s_per_1k"], 3))
        for peer in PEERS:
            p = row["libs"].get(peer)
            if p is None:
                cells += ["n/a", "—"]
                continue
            dx = fmt_dx(p["dx"])
            if p["metrics"] is not None:  # differs: show its own numbers
                m = p["metrics"]
                dx += f" (NFE {p['nfe']}: W2 {fmt(m.w2)}, SW2 {fmt(m.sw)})"
            elif p["nfe"] != ff["nfe"]:
                dx += f" (NFE {p['nfe']})"
            cells += [dx, fmt(p["s_per_1k"], 3)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| floor | — | {fmt(floor.w2)} | {fmt(floor.sw)} | | | | | |")
    return lines


def ot_table(rows: dict[str, list[dict]], floor: Metrics) -> list[str]:
    libs = list(rows)
    head = " | ".join(f"W2 {lib} | SW2 {lib}" for lib in libs)
    lines = [f"| solver | NFE | {head} |", "|---|---:|" + "---:|" * (2 * len(libs))]
    for i, row in enumerate(rows[libs[0]]):
        cells = [row["method"], str(row["libs"]["flowforge"]["nfe"])]
        for lib in libs:
            m = rows[lib][i]["libs"]["flowforge"]
            nfe = "" if m["nfe"] == row["libs"]["flowforge"]["nfe"] else f" (NFE {m['nfe']})"
            cells += [fmt(m["metrics"].w2) + nfe, fmt(m["metrics"].sw)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| floor | — | " + " | ".join([fmt(floor.w2), fmt(floor.sw)] * len(libs)) + " |")
    return lines


def plot_quality(results: dict, sizes: dict[str, int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results)
    fig, axes = plt.subplots(len(tasks), 2, figsize=(11, 4 * len(tasks)), squeeze=False)
    colors = {"euler": "C0", "midpoint": "C1", "heun": "C2", "dopri5": "C3"}
    markers = {"torchcfm": "x", "flow_matching": "+"}
    for i, task in enumerate(tasks):
        res = results[task]
        for j, key in enumerate(("w2", "sw")):
            ax = axes[i, j]
            for method in FIXED_SOLVERS:
                rows = [r for r in res["quality"] if r["method"] == method]
                nfe = [r["libs"]["flowforge"]["nfe"] for r in rows]
                val = [getattr(r["libs"]["flowforge"]["metrics"], key) for r in rows]
                ax.plot(nfe, val, "o-", color=colors[method], label=f"flowforge {method}")
                for peer in PEERS:  # a peer's own value where its samples differ
                    pts = [
                        (r["libs"][peer]["nfe"], getattr(r["libs"][peer]["metrics"], key, v))
                        for v, r in zip(val, rows, strict=True)
                        if peer in r["libs"]
                    ]
                    if pts:
                        ax.plot(
                            *zip(*pts, strict=True), markers[peer], color=colors[method], ms=10
                        )
                ot_rows = [r for r in res["ot"]["flowforge"] if r["method"] == method]
                if ot_rows:
                    ax.plot(
                        [r["libs"]["flowforge"]["nfe"] for r in ot_rows],
                        [getattr(r["libs"]["flowforge"]["metrics"], key) for r in ot_rows],
                        ":",
                        color=colors[method],
                        label=f"flowforge OT {method}",
                    )
            for r in res["quality"]:
                if r["method"] == "dopri5":
                    for d in r["libs"].values():
                        m = d["metrics"] or r["libs"]["flowforge"]["metrics"]
                        ax.plot(d["nfe"], getattr(m, key), "*", color=colors["dopri5"], ms=12)
            ax.plot([], [], "*", color=colors["dopri5"], label="dopri5 (all libraries)")
            ax.plot([], [], "x", color="k", label="torchcfm (torchdyn)")
            ax.plot([], [], "+", color="k", label="flow_matching ODESolver")
            ax.axhline(
                getattr(res["floor"], key), ls="--", color="gray", label="finite-sample floor"
            )
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("NFE")
            n = sizes[key]
            ax.set_title(f"{task}: {'exact W2' if key == 'w2' else 'sliced W2'} ({n} samples)")
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def plot_speed(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results)
    regimes = ("same stream", "end to end")
    fig, axes = plt.subplots(len(tasks), 2, figsize=(13, 3.3 * len(tasks)), squeeze=False)
    for i, task in enumerate(tasks):
        for j, regime in enumerate(regimes):
            ax = axes[i, j]
            fastest, ratios = paired_ratios(results[task]["speed"][regime])
            names = list(ratios)
            med = [statistics.median(ratios[n]) for n in names]
            err = [
                [m - min(ratios[n]) for m, n in zip(med, names, strict=True)],
                [max(ratios[n]) - m for m, n in zip(med, names, strict=True)],
            ]
            colors = ["C1" if n in PEERS else "C0" for n in names]
            ax.barh(names, med, xerr=err, color=colors)
            ax.axvline(1.0, color="k", lw=0.8)
            ax.axvline(1.3, color="C3", ls="--", lw=1, label="target 1.3")
            ax.invert_yaxis()
            ax.set_title(f"{task}: {regime}")
            ax.set_xlabel(f"steps/s ratio to {fastest} (paired; median, min-max)")
            if i == 0 and j == 0:
                ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3000, help="training steps per library and task")
    p.add_argument("--ot-steps", type=int, default=1000, help="training steps of the OT variant")
    p.add_argument("--speed-steps", type=int, default=100, help="steps per timed repeat")
    p.add_argument("--repeats", type=int, default=9, help="interleaved timing repeats")
    p.add_argument("--sample-repeats", type=int, default=3, help="timing repeats per solve")
    p.add_argument("--batch", type=int, default=256, help="batch size")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is stable on a busy box)"
    )
    p.add_argument("--tasks", default="eight_gaussians,moons", help="comma-separated tasks")
    p.add_argument("--seed", type=int, default=0, help="seed of the init and the streams")
    p.add_argument("--w2-samples", type=int, default=2000, help="samples for exact W2")
    p.add_argument("--sw-samples", type=int, default=4096, help="samples for sliced W2")
    p.add_argument("--profile", action="store_true", help="add a torch.profiler breakdown")
    p.add_argument("--quick", action="store_true", help="smoke run: few steps, NFE 1, 2, 8")
    p.add_argument(
        "--out",
        default=None,
        help="output directory (default benchmarks/results; runs/peers_2d_quick with --quick)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.ot_steps, args.speed_steps = 200, 100, 30
        args.repeats, args.sample_repeats = 3, 1
        args.w2_samples, args.sw_samples = 500, 1024
    if args.out is None:  # a smoke run never overwrites the committed results
        args.out = "runs/peers_2d_quick" if args.quick else "benchmarks/results"
    return args


def train_interleaved(
    trainers: dict[str, Trainer], stream: Stream, chunk: int
) -> dict[str, float]:
    """Train every trainer on the whole stream in alternating chunks; steps/s of each."""
    secs = {name: 0.0 for name in trainers}
    names = list(trainers)
    for k, start in enumerate(range(0, len(stream), chunk)):
        steps = min(chunk, len(stream) - start)
        r = k % len(names)
        for name in names[r:] + names[:r]:
            secs[name] += trainers[name].run(stream, start, steps)
    return {name: len(stream) / s for name, s in secs.items()}


def run_task(task: str, init: nn.Module, args: argparse.Namespace) -> dict:
    """Everything measured on one task."""
    res: dict = {}
    t0 = time.perf_counter()
    res["speed"] = speed(task, init, args.speed_steps, args.batch, args.repeats, args.seed)
    print(f"   speed {time.perf_counter() - t0:.0f}s", flush=True)

    # Same-stream training of all three to --steps: agreement, and the model to sample from.
    stream = make_stream(task, args.steps, args.batch, seed=args.seed + 10)
    trainers = {lib: Trainer.build(init, LOSSES[lib]()) for lib in LIBS}
    trainers[TRAIN_STEP] = Trainer.build(init, flowforge_loss(), flowforge_adamw)
    res["train_rate"] = train_interleaved(trainers, stream, chunk=100)
    sd = {lib: tr.model.state_dict() for lib, tr in trainers.items()}
    curve = {lib: torch.stack(tr.losses) for lib, tr in trainers.items()}
    res["agreement"] = {
        name: (
            max_abs_diff(sd[name], sd["flowforge"]),
            max_abs_diff(curve[name], curve["flowforge"]),
        )
        for name in trainers
        if name != "flowforge"
    }
    res["final_loss"] = {name: curve[name][-100:].mean().item() for name in trainers}
    print(f"   train {time.perf_counter() - t0:.0f}s", flush=True)
    res["floor"] = floors(task, 1 if args.quick else 3, args.w2_samples, args.sw_samples)
    res["quality"] = quality(trainers["flowforge"].model, task, args)
    print(f"   quality {time.perf_counter() - t0:.0f}s", flush=True)

    # OT variant: torchcfm's exact-OT matcher vs flowforge's ExactOTCoupling.
    np.random.seed(args.seed)  # torchcfm draws the pairs from the plan with np.random
    ot_stream = make_stream(task, args.ot_steps, args.batch, seed=args.seed + 20)
    ot = {
        "flowforge": Trainer.build(init, flowforge_loss(ot=True)),
        "torchcfm": Trainer.build(init, torchcfm_loss(ot=True)),
    }
    res["ot_rate"] = train_interleaved(ot, ot_stream, chunk=50)
    res["ot"] = {lib: quality(tr.model, task, args, libs=("flowforge",)) for lib, tr in ot.items()}
    print(f"   ot {time.perf_counter() - t0:.0f}s", flush=True)
    model = trainers["flowforge"].model.eval()
    res["overhead"] = {
        batch: sampler_overhead(model, batch, 32, 5 if args.quick else 21) for batch in (16, 1000)
    }
    print(f"   sampler overhead {time.perf_counter() - t0:.0f}s", flush=True)
    if args.profile:
        res["profile"] = profile_step(init, task, args.batch)
    return res


def summary(results: dict, args: argparse.Namespace) -> list[str]:
    """The benchmark's targets, one line each, with the measured figures."""
    lines = ["## Summary against the targets", ""]
    for task, res in results.items():
        fastest, ratios = paired_ratios(res["speed"]["same stream"])
        med = {k: statistics.median(v) for k, v in ratios.items()}
        dw = max(res["agreement"][p][0] for p in PEERS)
        fixed = [
            d["dx"]
            for row in res["quality"]
            if row["method"] != "dopri5"
            for lib, d in row["libs"].items()
            if lib != "flowforge"
        ]
        step = med[TRAIN_STEP]
        lines += [
            f"- {task}: same-stream steps/s of flowforge's training step (its objective + the "
            f"AdamW `train()` builds) / fastest peer ({fastest}), median paired ratio = "
            f"{step:.3f} (target >= 1.3: {'PASS' if step >= 1.3 else 'FAIL'}); objective alone "
            f"(same loop and Adam as the peers) = {med['flowforge']:.3f}",
            *amdahl(res),
            # 1e-4: float32 round-off grown over the run; a different objective moves weights O(1).
            f"- {task}: final weights max|dθ| vs peers = {fmt_dx(dw)}, with train()'s AdamW "
            f"{fmt_dx(res['agreement'][TRAIN_STEP][0])} (same loss curve, < 1e-4: "
            f"{'PASS' if max(dw, res['agreement'][TRAIN_STEP][0]) < 1e-4 else 'FAIL'}); "
            f"fixed-step samples max|dx| vs peers = {fmt_dx(max(fixed))} (equal at equal NFE: "
            f"{'PASS' if max(fixed) < 1e-4 else 'FAIL'})",
        ]
        e2e_fastest, e2e = paired_ratios(res["speed"]["end to end"])
        e2e_med = statistics.median(e2e["flowforge train()"])
        lines.append(
            f"- {task}: end to end, flowforge `train()` (EMA and clipping off, constant lr) / the "
            f"fastest peer's hand loop ({e2e_fastest}), median paired ratio = {e2e_med:.3f} "
            f"(target >= 1.10: {'PASS' if e2e_med >= 1.10 else 'FAIL'}); with train()'s "
            f"defaults {statistics.median(e2e['flowforge train() defaults']):.3f}"
        )
        for batch, o in res.get("overhead", {}).items():
            ok = all(o[f"flowforge {m}"] <= o[f"plain {m}"] for m in ("euler", "heun"))
            lines.append(
                f"- {task}: sampler overhead per network call at batch {batch} (a bare call "
                f"{o['bare call']:.0f} us): flowforge Euler {o['flowforge euler']:.1f} us vs a "
                f"plain loop {o['plain euler']:.1f} us, Heun {o['flowforge heun']:.1f} vs "
                f"{o['plain heun']:.1f} us (target: no more than the plain loop: "
                f"{'PASS' if ok else 'FAIL'})"
            )
    return lines


def amdahl(res: dict) -> list[str]:
    """The best same-stream ratio any objective/optimizer change could give: the network's
    forward and backward (matmuls, SiLU) are the same module in every library."""
    if "profile" not in res:
        return []
    share = {k: s for k, _, s in res["profile"]}
    net = share["matmul (addmm/mm)"] + share["SiLU fwd+bwd"]
    return [
        f"  - profile: the shared network (matmul + SiLU) is {net:.0%} of flowforge's step, so "
        f"even a free objective, optimizer and loop would cap the same-stream ratio at "
        f"1 / {net:.2f} = {1 / net:.2f}"
    ]


def report(results: dict, args: argparse.Namespace, header: list[str]) -> str:
    """The markdown report."""
    md = [*header, "", *summary(results, args)]
    for task, res in results.items():
        md += ["", f"## {task}", "", "### Training speed", ""]
        for regime, secs in res["speed"].items():
            md += speed_table(regime, secs, args.speed_steps) + [""]
        md += [
            "Same stream: pre-generated (x_1, x_0, t), identical plain loop (zero_grad, loss, "
            "backward, Adam step); only the objective differs. `flowforge + train()'s AdamW` "
            "swaps in the optimizer flowforge's `train()` builds (`make_optimizer`: fused "
            "AdamW), i.e. flowforge's own training step; `+ Adam(foreach=True)` is an "
            "alternative optimizer setting. End to end: peers draw x_0 (and t) "
            "themselves each step from the same data sampler; flowforge runs `train()` (first "
            "row: EMA off, clip off, constant lr; second: its defaults EMA 0.999, clip 1.0, "
            "cosine lr), set-up included.",
            "",
            f"### Agreement after {args.steps} steps on the same stream",
            "",
            "| library | max\\|dθ\\| vs flowforge | max\\|d loss\\| over the curve "
            "| final loss (last 100) | steps/s over the run |",
            "|---|---:|---:|---:|---:|",
        ]
        for lib in res["final_loss"]:
            dw, dl = res["agreement"].get(lib, (None, None))
            cells = ["—", "—"] if dw is None else [fmt_dx(dw), fmt_dx(dl)]
            md.append(
                f"| {lib} | {cells[0]} | {cells[1]} | {res['final_loss'][lib]:.4f} "
                f"| {res['train_rate'][lib]:.1f} |"
            )
        md += [
            "",
            "### Sample quality vs NFE (flowforge model, same x_0 for every solver)",
            "",
            *quality_table(res["quality"], res["floor"]),
            "",
            f"W2: exact, {args.w2_samples} samples; SW2: sliced W2, {args.sw_samples} samples, "
            f"{N_PROJ} fixed directions; floor: the same metrics between two fresh target sets. "
            "Peer columns give max|dx| between the peer's samples and flowforge's (it bounds the "
            "W2 and SW2 gap); a peer's own W2/SW2 is shown where its samples differ. torchcfm "
            "samples with torchdyn (`torchdyn.numerics.odeint`, what its `NeuralODE` calls); "
            "flow_matching with `ODESolver` (torchdiffeq). s/1k: median wall-clock seconds per "
            f"1000 samples. dopri5: atol = rtol = {DOPRI_TOL:g}. n/a: no such solver.",
            "",
            f"### OT-coupling variant ({args.ot_steps} steps, same stream)",
            "",
            *ot_table(res["ot"], res["floor"]),
            "",
            "Both models sampled with flowforge's solvers. Training steps/s with the exact-OT "
            "coupling: "
            + ", ".join(f"{lib} {r:.1f}" for lib, r in res["ot_rate"].items())
            + ". torchcfm draws pairs from the plan with replacement (np.random); flowforge "
            "applies the optimal permutation, so the two runs see different pairs.",
        ]
        if "profile" in res:
            md += ["", "### Where flowforge's same-stream step goes (torch.profiler)", ""]
            md += ["| part | ms/step | share |", "|---|---:|---:|"]
            md += [f"| {k} | {ms:.2f} | {s:.0%} |" for k, ms, s in res["profile"]]
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import flow_matching  # noqa: F401
        import torchcfm  # noqa: F401
    except ImportError as e:
        print(f"peer library missing ({e}); install them with scripts/bench_setup.sh")
        return 2
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started, load0 = time.time(), os.getloadavg()
    init = make_model(args.seed)
    results = {}
    for task in args.tasks.split(","):
        print(f"== {task}", flush=True)
        results[task] = run_task(task, init, args)
    n_params = sum(p.numel() for p in init.parameters())
    header = [
        "# flowforge vs torchcfm vs flow_matching on 2-D toys",
        "",
        "Command: `python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]) + "`",
        "",
        *machine_info(),
        f"- network: MLPField 3 x 256 SiLU, raw t input ({n_params} parameters); Adam lr 1e-3; "
        f"batch {args.batch}; {args.steps} steps (OT: {args.ot_steps}); timing: "
        f"{args.repeats} interleaved repeats of {args.speed_steps} steps",
        f"- wall time {time.time() - started:.0f} s; load average {load0[0]:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end",
    ]
    text = report(results, args, header)
    (out / "peers_2d.md").write_text(text)
    plot_quality(
        results, {"w2": args.w2_samples, "sw": args.sw_samples}, out / "peers_2d_quality.png"
    )
    plot_speed(results, out / "peers_2d_speed.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
