"""Few-step generation: quality against NFE for every few-step method, the teacher and
the peers' best at equal NFE, on 8 gaussians, moons and digits, with each method's training cost.

2-D (8 gaussians, moons). One flow-matching teacher per dataset (``MLPField`` 3 x 256 SiLU,
sinusoidal time features, Adam 1e-3 cosine, batch 256, no EMA: the reflow card-check recipe).
Every method uses 3 x 256 networks (two-time ``MLPConfig(n_times=2)`` where the method needs
two times) on the same data stream, with the recipe of its card-check benchmark:

    reflow     rf++ pairs (100-step Euler teacher ODE), student initialised from the teacher,
               ReflowLoss(distance="mse"), U-shaped t (a = 4), lr 1e-4 constant; rf++ sampler
    meanflow   MeanFlowLoss() defaults, raw times (time_embed_dim=0), batch 512, lr 1e-3 cosine,
               EMA 0.999 (evaluated); meanflow_sample
    freeflow   a fresh two-time student with raw times (time_embed_dim=0: the JVP target
               diverges with the teacher's scale-1000 sinusoidal time features),
               FreeFlowLoss(teacher) prediction only (the correction term did not help in
               benchmarks/freeflow_2d.py), data-free (x_1 is a NaN placeholder), lr 1e-3
               cosine, EMA 0.999, 6000 steps (it is cheap: no data, one teacher call);
               freeflow_sample
    twinflow   TwinFlowLoss() defaults (full tutorial form), lr 1e-3 cosine, EMA 0.999;
               twinflow_sample(style="few")
    flowturbo  MLPRefiner 1 x 64 beside the frozen teacher, RefinerLoss(max_delta=0.12), Adam 1e-2
               cosine; schedules with NFE = predictor calls: 1 H0P0R1, 2 H0P1R1, 4 H1P2R2,
               8 H2P4R3 (the refiner, 1 x 64, adds 2 calls per R step: about 2 % of a
               predictor call each)
    blockwise  M = 4 segments (SegmentMLP 2 x 128 + shared FeatureMLP G 2 x 128 -> 16, alignment
               0.05 to a fixed random feature net), lr 1e-3 cosine; NFE = M x steps per segment,
               so only NFE 4 and 8 exist (one step costs G + V_k, 0.10 M parameters vs the
               3 x 256 MLP's 0.15 M)

reflow, freeflow and flowturbo distil the teacher; meanflow, twinflow and blockwise train from
data. Peer: torchcfm's ``ExactOptimalTransportConditionalFlowMatcher`` (minibatch exact OT)
on ``MLPField`` 3 x 256 with raw t (torchcfm's MLP layout), the teacher's steps, lr and batch,
sampled with torchdyn's ``odeint`` (what torchcfm's NeuralODE calls) with Euler and midpoint at
equal NFE and dopri5 (atol = rtol = 1e-5, NFE counted) for reference. If torchcfm does not import,
flowforge's ``FlowMatchingLoss(coupling=ExactOTCoupling())`` stands in, labelled as such.

Metric: exact W2 (POT) of 2000 samples against 2000 fresh data points, mean over 2 independent
(noise, data) draws; sliced W2 (512 fixed directions) on the same samples. Floor: W2 between two
fresh data sets of 2000 (``finite_sample_floor``, median of 5). Training cost: wall-clock seconds
of each method's training in this process on one thread (reflow: pair generation + student),
divided by the teacher's training seconds; distilled methods also need the teacher (column
"with teacher").

Digits (8 x 8 scikit-learn digits, 1438 training / 359 held-out, unconditional): teacher = FM
``UNetField`` (base 32, mults (1, 2), batch 128, Adam 1e-3 cosine, EMA 0.999); methods at a
reduced budget: reflow (pairs from the 100-step Euler teacher, student initialised from it, lr
1e-4), meanflow (smooth time features, ``time_scale=1``: 1-step FD 51.6 against 71.6 with 1000
on the ``digits_meanflow`` preset), freeflow (data-free, from the teacher; ``time_scale=1``:
with 1000 its loss diverges) and twinflow (two-time ``UNetField``, ``n_times=2``, EMA 0.999),
flowturbo (refiner ``ConcatRefiner`` of a one-level UNet, base 16) and blockwise (four base-16
UNets); ``--digits-methods`` picks a subset. FD in the features of
a small classifier trained on the training digits (as ``flowforge.recipes.image_eval``): all 359
held-out digits against 359 samples, mean of 3 noise seeds; floor = 359 training digits against
the held-out ones.

Targets: at NFE 1 the best method reaches W2 <= 1.10 x floor on 8 gaussians and
W2 <= 0.25 on moons; at NFE 2 on digits the best method's FD <= 1.3 x the 100-NFE teacher's FD.

Run:
    python benchmarks/few_step.py                 # 2-D and digits
    python benchmarks/few_step.py --skip-digits   # 2-D only
    python benchmarks/few_step.py --digits        # digits only
    python benchmarks/few_step.py --quick         # smoke run (< 2 min): runs/few_step_quick
    python benchmarks/few_step.py --report-only   # rebuild the report from the cached parts

Each part caches its results in ``runs/few_step/<part>.json`` (``--out`` for the report), so a
later run of the other part merges both into ``few_step.md`` and ``few_step.png``. Exits 1 if an
evaluated target fails (the results are written first).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from flowforge.data.digits import load_digits_tensor  # noqa: E402
from flowforge.data.toy2d import eight_gaussians, moons  # noqa: E402
from flowforge.distill.blockwise import (
    BlockwiseField,
    BlockwiseLoss,
    blockwise_sample,
)
from flowforge.distill.blockwise_nets import (
    FeatureMLP,
    FeatureMLPConfig,
    SegmentMLP,
    SegmentMLPConfig,
    random_feature_target,
)
from flowforge.distill.flowturbo import (  # noqa: E402
    ConcatRefiner,
    MLPRefiner,
    MLPRefinerConfig,
    RefinerLoss,
    flowturbo_nfe,
    flowturbo_sample,
)
from flowforge.distill.freeflow import (  # noqa: E402
    FreeFlowLoss,
    freeflow_sample,
)
from flowforge.distill.meanflow import MeanFlowLoss, meanflow_sample  # noqa: E402
from flowforge.distill.reflow import (  # noqa: E402
    ReflowLoss,
    init_from_teacher,
    make_reflow_pairs,
    reflow_sample,
)
from flowforge.distill.twinflow import TwinFlowLoss  # noqa: E402
from flowforge.distill.twinflow_sampling import twinflow_sample  # noqa: E402
from flowforge.losses.fm import FlowMatchingLoss  # noqa: E402
from flowforge.metrics.floor import finite_sample_floor  # noqa: E402
from flowforge.metrics.frechet import frechet_distance  # noqa: E402
from flowforge.metrics.sliced import sliced_wasserstein  # noqa: E402
from flowforge.metrics.wasserstein import wasserstein2  # noqa: E402
from flowforge.models.classifier import (  # noqa: E402
    ClassifierConfig,
    ImageClassifier,
    train_classifier,
)
from flowforge.models.mlp import MLPConfig, MLPField  # noqa: E402
from flowforge.models.unet import UNetConfig, UNetField  # noqa: E402
from flowforge.solvers.adaptive import sample_dopri5  # noqa: E402
from flowforge.solvers.ode import sample_euler, sample_midpoint  # noqa: E402
from flowforge.train.ema import EMA  # noqa: E402

NFES = (1, 2, 4, 8)
METHODS = ("reflow", "meanflow", "freeflow", "twinflow", "flowturbo", "blockwise")
DISTILLED = ("reflow", "freeflow", "flowturbo")
TURBO = {1: "H0P0R1", 2: "H0P1R1", 4: "H1P2R2", 8: "H2P4R3"}
N_DIRS = 512
EVAL = {"n_w2": 2000, "repeats": 2, "fd_seeds": 3}  # --quick: 500 samples, 1 draw, 1 seed
TARGET_8G, TARGET_MOONS, TARGET_DIGITS = 1.10, 0.25, 1.3
DIGITS_METHODS = ("reflow", "meanflow", "freeflow", "twinflow", "flowturbo", "blockwise")
ROOT = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------------- training
def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def param_counts(teacher: nn.Module, models: dict) -> dict:
    """Parameters per network; blockwise also per sampling step (G + one V_k, no projector)."""
    out = {"teacher": n_params(teacher)}
    out.update({k: n_params(v) for k, v in models.items()})
    if "blockwise" in models:
        bfm = models["blockwise"]
        g = n_params(bfm.guidance) if getattr(bfm, "guidance", None) is not None else 0
        out["blockwise per step"] = g + n_params(bfm.segments[0])
    return out


def fit(
    model: nn.Module,
    objective: Callable,
    batch: Callable[[torch.Generator], tuple[Tensor, Tensor | None]],
    steps: int,
    lr: float,
    seed: int,
    cosine: bool = True,
    ema: float = 0.0,
) -> tuple[nn.Module, float]:
    """Plain loop shared by every method: Adam, cosine or constant lr, optional EMA (with the
    warm-up decay min(ema, (1 + n) / (10 + n)), so short runs do not keep the initial weights).

    Returns the evaluated network (EMA shadow if any) in eval mode and the training seconds."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda i: 0.5 * (1 + math.cos(math.pi * i / steps))) if cosine else (lambda i: 1.0)
    )
    shadow = EMA(model, ema, warmup=True) if ema > 0 else None  # short runs: warm-up decay
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        x, cond = batch(g)
        loss = objective(model, x, cond, generator=g).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if shadow is not None:
            shadow.update(model)
    seconds = time.perf_counter() - start
    out = shadow.module if shadow is not None else model
    return out.eval().requires_grad_(False), seconds


class PeerOTLoss:
    """torchcfm's exact-OT conditional flow matching as an objective (its README loop)."""

    def __init__(self) -> None:
        from torchcfm.conditional_flow_matching import ExactOptimalTransportConditionalFlowMatcher

        self.fm = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0)

    def __call__(self, model, x_1, cond=None, generator=None) -> Tensor:
        x_0 = torch.randn(x_1.shape, generator=generator, dtype=x_1.dtype)
        t = torch.rand(len(x_1), generator=generator, dtype=x_1.dtype)
        t, x_t, u_t = self.fm.sample_location_and_conditional_flow(x_0, x_1, t=t)
        return (model(x_t, t) - u_t).square().flatten(1).mean(1)


def peer_objective() -> tuple[Callable, str]:
    try:
        return PeerOTLoss(), "torchcfm OT-CFM"
    except ImportError as e:  # fall back to flowforge's own exact-OT coupling, labelled
        print(f"torchcfm import failed ({e}); using flowforge's ExactOTCoupling", flush=True)
        from flowforge.paths.couplings import ExactOTCoupling

        return FlowMatchingLoss(coupling=ExactOTCoupling()), "flowforge OT-CFM (torchcfm missing)"


def peer_solve(model: nn.Module, x_0: Tensor, method: str, nfe: int) -> tuple[Tensor, int]:
    """Sample the peer with torchdyn's odeint (torchcfm's solver), else flowforge's solvers."""
    calls = [0]

    def f(t, x):
        calls[0] += 1
        return model(x, t.reshape(()).expand(len(x)).to(x.dtype))

    try:
        from torchdyn.numerics import odeint
    except ImportError:
        odeint = None
    if method == "dopri5":
        if odeint is not None:
            span = torch.tensor([0.0, 1.0])
            x = odeint(f, x_0, span, "dopri5", atol=1e-5, rtol=1e-5)[1][-1]
            return x, calls[0]
        return sample_dopri5(model, x_0, atol=1e-5, rtol=1e-5, return_nfe=True)
    steps = nfe // (2 if method == "midpoint" else 1)
    grid = torch.linspace(0, 1, steps + 1)
    if odeint is not None:
        return odeint(f, x_0, grid, method)[1][-1], nfe
    solver = sample_midpoint if method == "midpoint" else sample_euler
    return solver(model, x_0, grid), nfe


# ----------------------------------------------------------------------------------- 2-D part
def toy_sampler(name: str) -> Callable:
    fn = eight_gaussians if name == "8gaussians" else moons
    return lambda n, generator=None: fn(n, generator)[0]


def mlp(n_times: int = 1, time_embed_dim: int = 64) -> MLPField:
    return MLPField(
        MLPConfig(dim=2, hidden=256, depth=3, time_embed_dim=time_embed_dim, n_times=n_times)
    )


def build_bfm() -> BlockwiseField:
    seg = lambda: SegmentMLP(SegmentMLPConfig(hidden=128, depth=2, feature_dim=16))  # noqa: E731
    guidance = FeatureMLP(FeatureMLPConfig(out_dim=16, hidden=128, depth=2))
    projector = nn.Sequential(nn.Linear(16, 64), nn.SiLU(), nn.Linear(64, 32))
    return BlockwiseField(seg, 4, guidance=guidance, projector=projector)


def run_toy(name: str, steps: dict, seed: int) -> dict:
    """Train the teacher, the peer and every method on one 2-D dataset; return its results."""
    torch.manual_seed(seed)  # every network below is built from this seed's stream
    data = toy_sampler(name)

    def batch(n: int) -> Callable:
        return lambda g: (data(n, g), None)

    log = lambda s: print(f"[{name}] {s}", flush=True)  # noqa: E731
    secs: dict[str, float] = {}
    models: dict[str, object] = {}

    teacher, secs["teacher"] = fit(mlp(), FlowMatchingLoss(), batch(256), steps["teacher"], 1e-3,
                                   seed)  # fmt: skip
    log(f"teacher {steps['teacher']} steps {secs['teacher']:.0f} s")
    objective, peer_label = peer_objective()
    peer, secs["peer"] = fit(mlp(time_embed_dim=0), objective, batch(256), steps["teacher"], 1e-3,
                             seed + 1)  # fmt: skip
    log(f"peer {secs['peer']:.0f} s")

    # reflow: pairs + student from the teacher
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed + 2)
    pairs = make_reflow_pairs(teacher, steps["pairs"], (2,), n_steps=100, generator=g).pairs
    pair_s = time.perf_counter() - t0
    student = init_from_teacher(mlp(), teacher)

    def pair_batch(g: torch.Generator) -> tuple[Tensor, None]:
        return pairs[torch.randint(len(pairs), (256,), generator=g)], None

    models["reflow"], s = fit(student, ReflowLoss(distance="mse"), pair_batch, steps["reflow"],
                              1e-4, seed + 3, cosine=False)  # fmt: skip
    secs["reflow"] = pair_s + s
    log(f"reflow pairs {pair_s:.0f} s + student {s:.0f} s")

    models["meanflow"], secs["meanflow"] = fit(
        mlp(2, time_embed_dim=0), MeanFlowLoss(), batch(512), steps["meanflow"], 1e-3, seed + 4,
        ema=0.999
    )  # fmt: skip
    log(f"meanflow {secs['meanflow']:.0f} s")

    nan = torch.full((256, 2), float("nan"))  # data-free: FreeFlow never reads x_1's values
    models["freeflow"], secs["freeflow"] = fit(
        mlp(2, time_embed_dim=0), FreeFlowLoss(teacher),
        lambda g: (nan, None), steps["freeflow"], 1e-3, seed + 5, ema=0.999
    )  # fmt: skip
    log(f"freeflow {secs['freeflow']:.0f} s")

    models["twinflow"], secs["twinflow"] = fit(
        mlp(2), TwinFlowLoss(), batch(256), steps["twinflow"], 1e-3, seed + 6, ema=0.999
    )  # fmt: skip
    log(f"twinflow {secs['twinflow']:.0f} s")

    refiner = MLPRefiner(MLPRefinerConfig(dim=2, hidden=64, depth=1))
    models["flowturbo"], secs["flowturbo"] = fit(
        refiner, RefinerLoss(teacher, max_delta=0.12), batch(256), steps["flowturbo"], 1e-2,
        seed + 7
    )  # fmt: skip
    log(f"flowturbo {secs['flowturbo']:.0f} s")

    align = BlockwiseLoss(align_weight=0.05, align_target=random_feature_target(2, 32, seed=0))
    models["blockwise"], secs["blockwise"] = fit(
        build_bfm(), align, batch(256), steps["blockwise"], 1e-3, seed + 8
    )
    log(f"blockwise {secs['blockwise']:.0f} s")

    # ---- evaluation: the same noise and target sets for every row
    t0 = time.perf_counter()
    draws = []
    for r in range(EVAL["repeats"]):
        ge = torch.Generator().manual_seed(10_000 + 100 * r + seed)
        draws.append((torch.randn(EVAL["n_w2"], 2, generator=ge), data(EVAL["n_w2"], ge)))
    directions_seed = 777

    def score(sample: Callable[[Tensor], Tensor | tuple[Tensor, int]]) -> dict:
        w2, sw2, nfe = [], [], None
        for x_0, y in draws:
            with torch.no_grad():
                out = sample(x_0)
            if isinstance(out, tuple):
                out, nfe = out
            if not torch.isfinite(out).all():
                return {"w2": math.inf, "sw2": math.inf, "nfe": nfe}
            w2.append(wasserstein2(out, y).item())
            gd = torch.Generator().manual_seed(directions_seed)
            sw2.append(sliced_wasserstein(out, y, N_DIRS, generator=gd).item())
        return {"w2": sum(w2) / len(w2), "sw2": sum(sw2) / len(sw2), "nfe": nfe}

    gf = torch.Generator().manual_seed(20_000 + seed)
    floor_w2 = finite_sample_floor(
        wasserstein2, data, EVAL["n_w2"], repeats=5, generator=gf
    ).item()
    gf = torch.Generator().manual_seed(20_000 + seed)
    floor_sw2 = finite_sample_floor(
        lambda a, b: sliced_wasserstein(
            a, b, N_DIRS, generator=torch.Generator().manual_seed(directions_seed)
        ),
        data, EVAL['n_w2'], repeats=5, generator=gf,
    ).item()  # fmt: skip

    rows: dict[str, dict[int, dict]] = {}
    grid = lambda n: torch.linspace(0, 1, n + 1)  # noqa: E731
    rows["teacher (Euler)"] = {n: score(lambda x, n=n: sample_euler(teacher, x, grid(n)))
                               for n in (*NFES, 100)}  # fmt: skip
    rows[f"{peer_label} (Euler)"] = {n: score(lambda x, n=n: peer_solve(peer, x, "euler", n))
                                     for n in NFES}  # fmt: skip
    rows[f"{peer_label} (midpoint)"] = {
        n: score(lambda x, n=n: peer_solve(peer, x, "midpoint", n)) for n in NFES if n >= 2
    }
    dopri = score(lambda x: peer_solve(peer, x, "dopri5", 0))
    m = models
    samplers = {
        "reflow": lambda x, n: reflow_sample(m["reflow"], x, n),
        "meanflow": lambda x, n: meanflow_sample(m["meanflow"], x, n),
        "freeflow": lambda x, n: freeflow_sample(m["freeflow"], x, n),
        "twinflow": lambda x, n: twinflow_sample(m["twinflow"], x, n),
        "flowturbo": lambda x, n: flowturbo_sample(teacher, m["flowturbo"], x, TURBO[n]),
        "blockwise": lambda x, n: blockwise_sample(m["blockwise"], x, n // 4),
    }
    for method, sample in samplers.items():
        nfes = [n for n in NFES if method != "blockwise" or n % 4 == 0]
        rows[method] = {n: score(lambda x, n=n, s=sample: s(x, n)) for n in nfes}
    for n, sched in TURBO.items():
        assert flowturbo_nfe(sched).predictor == n, (sched, n)
    log(f"eval {time.perf_counter() - t0:.0f} s")
    return {
        "floor_w2": floor_w2,
        "floor_sw2": floor_sw2,
        "rows": {k: {str(n): v for n, v in r.items()} for k, r in rows.items()},
        "dopri5": dopri,
        "peer_label": peer_label,
        "params": {**param_counts(teacher, models), "peer": n_params(peer)},
        "eval": dict(EVAL),
        "seconds": secs,
        "steps": steps,
    }


# -------------------------------------------------------------------------------- digits part
def run_digits(steps: dict, seed: int, methods: tuple[str, ...]) -> dict:
    """FM UNet teacher and the few-step methods on 8 x 8 digits; FD in classifier features."""
    torch.manual_seed(seed)  # every network below is built from this seed's stream
    log = lambda s: print(f"[digits] {s}", flush=True)  # noqa: E731
    x_train, y_train = load_digits_tensor(8, "train", seed=0)
    x_test, _ = load_digits_tensor(8, "test", seed=0)
    shape = tuple(x_train.shape[1:])
    bs = 128

    def batch(g: torch.Generator) -> tuple[Tensor, None]:
        return x_train[torch.randint(len(x_train), (bs,), generator=g)], None

    def unet(n_times: int = 1, time_scale: float = 1000.0) -> UNetField:
        return UNetField(UNetConfig(base_channels=32, channel_mults=(1, 2), n_times=n_times,
                                    time_scale=time_scale))  # fmt: skip

    secs: dict[str, float] = {}
    models: dict[str, nn.Module] = {}
    teacher, secs["teacher"] = fit(unet(), FlowMatchingLoss(), batch, steps["teacher"], 1e-3,
                                   seed, ema=0.999)  # fmt: skip
    log(f"teacher {steps['teacher']} steps {secs['teacher']:.0f} s")

    if "reflow" in methods:
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(seed + 2)
        pairs = make_reflow_pairs(teacher, steps["pairs"], shape, n_steps=100, generator=g,
                                  batch_size=1024).pairs  # fmt: skip
        pair_s = time.perf_counter() - t0

        def pair_batch(g: torch.Generator) -> tuple[Tensor, None]:
            return pairs[torch.randint(len(pairs), (bs,), generator=g)], None

        student = init_from_teacher(unet(), teacher)
        models["reflow"], s = fit(student, ReflowLoss(distance="mse"), pair_batch,
                                  steps["reflow"], 1e-4, seed + 3, cosine=False)  # fmt: skip
        secs["reflow"] = pair_s + s
        log(f"reflow pairs {steps['pairs']} in {pair_s:.0f} s + student {s:.0f} s")
    if "meanflow" in methods:
        models["meanflow"], secs["meanflow"] = fit(
            unet(2, time_scale=1.0), MeanFlowLoss(), batch, steps["meanflow"], 1e-3, seed + 4,
            ema=0.999,
        )  # fmt: skip
        log(f"meanflow {secs['meanflow']:.0f} s")
    if "freeflow" in methods:  # data-free: the batch only sets the shape, never its values
        nan = torch.full((bs, *shape), float("nan"))
        models["freeflow"], secs["freeflow"] = fit(
            unet(2, time_scale=1.0), FreeFlowLoss(teacher), lambda g: (nan, None),
            steps["freeflow"], 1e-3, seed + 5, ema=0.999
        )  # fmt: skip
        log(f"freeflow {secs['freeflow']:.0f} s")
    if "twinflow" in methods:
        models["twinflow"], secs["twinflow"] = fit(
            unet(2), TwinFlowLoss(), batch, steps["twinflow"], 1e-3, seed + 6, ema=0.999
        )  # fmt: skip
        log(f"twinflow {secs['twinflow']:.0f} s")
    if "flowturbo" in methods:
        net = UNetField(UNetConfig(in_channels=2, out_channels=1, base_channels=16,
                                   channel_mults=(1,), mid_attention=False))  # fmt: skip
        models["flowturbo"], secs["flowturbo"] = fit(
            ConcatRefiner(net), RefinerLoss(teacher, max_delta=0.12), batch, steps["flowturbo"],
            1e-3, seed + 7
        )  # fmt: skip
        log(f"flowturbo {secs['flowturbo']:.0f} s")
    if "blockwise" in methods:
        segment = lambda: UNetField(UNetConfig(base_channels=16, channel_mults=(1, 2)))  # noqa: E731
        field = BlockwiseField(segment, 4)
        models["blockwise"], secs["blockwise"] = fit(
            field, BlockwiseLoss(), batch, steps["blockwise"], 1e-3, seed + 8, ema=0.999
        )  # fmt: skip
        log(f"blockwise {secs['blockwise']:.0f} s")

    # ---- evaluation in a classifier's feature space (as flowforge.recipes.image_eval)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    clf = ImageClassifier(ClassifierConfig(in_channels=1, num_classes=10, input_size=8))
    train_classifier(clf, x_train, y_train, steps=steps["classifier"],
                     generator=torch.Generator().manual_seed(seed))  # fmt: skip
    clf.eval()
    n = len(x_test)

    def feats(x: Tensor) -> Tensor:
        with torch.no_grad():
            return clf.features(x.float())

    real = feats(x_test)
    idx = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))[:n]
    floor = frechet_distance(feats(x_train[idx]), real)
    noises = [torch.randn(n, *shape, generator=torch.Generator().manual_seed(30_000 + r))
              for r in range(EVAL["fd_seeds"])]  # fmt: skip

    def score(sample: Callable[[Tensor], Tensor]) -> dict:
        values = []
        for x_0 in noises:
            with torch.no_grad():
                x = sample(x_0)
            if not torch.isfinite(x).all():
                return {"fd": math.inf}
            values.append(frechet_distance(feats(x.clamp(-1, 1)), real))
        return {"fd": sum(values) / len(values)}

    grid = lambda k: torch.linspace(0, 1, k + 1)  # noqa: E731
    rows: dict[str, dict[int, dict]] = {}
    rows["teacher (Euler)"] = {k: score(lambda x, k=k: sample_euler(teacher, x, grid(k)))
                               for k in (*NFES, 100)}  # fmt: skip
    rows["teacher (midpoint)"] = {
        k: score(lambda x, k=k: sample_midpoint(teacher, x, grid(k // 2))) for k in NFES if k >= 2
    }
    m = models
    samplers = {
        "reflow": lambda x, k: reflow_sample(m["reflow"], x, k),
        "meanflow": lambda x, k: meanflow_sample(m["meanflow"], x, k),
        "freeflow": lambda x, k: freeflow_sample(m["freeflow"], x, k),
        "twinflow": lambda x, k: twinflow_sample(m["twinflow"], x, k),
        "flowturbo": lambda x, k: flowturbo_sample(teacher, m["flowturbo"], x, TURBO[k]),
        "blockwise": lambda x, k: blockwise_sample(m["blockwise"], x, k // 4),
    }
    for method in methods:
        nfes = [k for k in NFES if method != "blockwise" or k % 4 == 0]
        rows[method] = {k: score(lambda x, k=k, s=samplers[method]: s(x, k)) for k in nfes}
    log(f"eval {time.perf_counter() - t0:.0f} s")
    return {
        "floor_fd": floor,
        "rows": {k: {str(n): v for n, v in r.items()} for k, r in rows.items()},
        "seconds": secs,
        "steps": steps,
        "methods": list(methods),
        "params": param_counts(teacher, models),
        "fd_seeds": EVAL["fd_seeds"],
    }


# ------------------------------------------------------------------------------------ report
def fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return ""
    return "inf" if not math.isfinite(v) else f"{v:.{digits}f}"


def best_method(rows: dict, nfe: int, key: str) -> tuple[str | None, float]:
    best, value = None, math.inf
    for name in METHODS:
        cell = rows.get(name, {}).get(str(nfe))
        if cell is not None and cell[key] < value:
            best, value = name, cell[key]
    return best, value


def toy_table(name: str, res: dict) -> list[str]:
    rows, secs, floor = res["rows"], res["seconds"], res["floor_w2"]
    teacher_s = secs["teacher"]
    lines = [
        f"### {name}",
        "",
        f"W2 (exact, {res['eval']['n_w2']} samples, mean of {res['eval']['repeats']} draws) / "
        f"sliced W2; floor W2 "
        f"{floor:.3f}, sliced {res['floor_sw2']:.3f}; teacher {res['steps']['teacher']} steps "
        f"in {teacher_s:.1f} s.",
        "",
        "| model | " + " | ".join(f"NFE {n}" for n in NFES) + " | train s | cost / teacher "
        "| with teacher |",
        "|---|" + "---:|" * (len(NFES) + 3),
    ]
    if "params" in res:
        lines[3:3] = ["Parameters: " + ", ".join(f"{k} {v}" for k, v in res["params"].items()), ""]
    order = [k for k in rows if not k.startswith("teacher") and k not in METHODS]
    for key in ["teacher (Euler)", "teacher (midpoint)", *order, *METHODS]:
        if key not in rows:
            continue
        cells = []
        for n in NFES:
            c = rows[key].get(str(n))
            cells.append(f"{fmt(c['w2'])} / {fmt(c['sw2'])}" if c else "n/a")
        if key in METHODS:
            s = secs[key]
            with_t = f"{(s + teacher_s) / teacher_s:.2f}" if key in DISTILLED else ""
            cost = f"{s:.1f} | {s / teacher_s:.2f} | {with_t}"
        elif key.startswith("teacher"):
            cost = f"{teacher_s:.1f} | 1.00 | "
        else:
            cost = f"{secs['peer']:.1f} | {secs['peer'] / teacher_s:.2f} | "
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {cost} |")
    t100 = rows["teacher (Euler)"]["100"]
    d = res["dopri5"]
    lines += [
        f"| teacher, Euler 100 NFE | {fmt(t100['w2'])} / {fmt(t100['sw2'])} (NFE 100) | | | | "
        f"| | |",
        f"| {res['peer_label']}, dopri5 | {fmt(d['w2'])} / {fmt(d['sw2'])} (NFE {d['nfe']}) "
        "| | | | | | |",
        f"| data vs data (floor) | {fmt(floor)} / {fmt(res['floor_sw2'])} | | | | | | |",
        "",
    ]
    return lines


def digits_table(res: dict) -> list[str]:
    rows, secs = res["rows"], res["seconds"]
    teacher_s = secs["teacher"]
    st = res["steps"]
    lines = [
        "### digits (8 x 8, unconditional)",
        "",
        f"FD in classifier features (359 held-out digits vs 359 samples, mean of "
        f"{res['fd_seeds']} noise seeds); "
        f"floor (training vs held-out digits) {res['floor_fd']:.2f}; teacher UNet "
        f"{st['teacher']} steps in {teacher_s:.0f} s. Methods run: {', '.join(res['methods'])}.",
        "",
        "| model | " + " | ".join(f"NFE {n}" for n in NFES) + " | train s | cost / teacher "
        "| with teacher |",
        "|---|" + "---:|" * (len(NFES) + 3),
    ]
    if "params" in res:
        lines[3:3] = ["Parameters: " + ", ".join(f"{k} {v}" for k, v in res["params"].items()), ""]
    for key in ["teacher (Euler)", "teacher (midpoint)", *METHODS]:
        if key not in rows:
            continue
        cells = []
        for n in NFES:
            c = rows[key].get(str(n))
            cells.append(fmt(c["fd"], 2) if c else "n/a")
        if key in METHODS:
            s = secs[key]
            with_t = f"{(s + teacher_s) / teacher_s:.2f}" if key in DISTILLED else ""
            cost = f"{s:.0f} | {s / teacher_s:.2f} | {with_t}"
        else:
            cost = f"{teacher_s:.0f} | 1.00 | "
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {cost} |")
    lines += [
        f"| teacher, Euler 100 NFE | {fmt(rows['teacher (Euler)']['100']['fd'], 2)} (NFE 100) "
        "| | | | | | |",
        f"| held-out vs training digits (floor) | {fmt(res['floor_fd'], 2)} | | | | | | |",
        "",
    ]
    return lines


def targets(parts: dict) -> list[tuple[str, bool]]:
    out = []
    if "8gaussians" in parts:
        r = parts["8gaussians"]
        name, w = best_method(r["rows"], 1, "w2")
        ratio = w / r["floor_w2"]
        text = (f"8 gaussians, NFE 1: best method ({name}) W2 {w:.3f} = {ratio:.3f} x floor "
                f"{r['floor_w2']:.3f} (target <= {TARGET_8G:.2f} x)")  # fmt: skip
        out.append((text, ratio <= TARGET_8G))
    if "moons" in parts:
        r = parts["moons"]
        name, w = best_method(r["rows"], 1, "w2")
        out.append((f"moons, NFE 1: best method ({name}) W2 {w:.3f} (target <= {TARGET_MOONS})",
                    w <= TARGET_MOONS))  # fmt: skip
    if "digits" in parts:
        r = parts["digits"]
        name, fd = best_method(r["rows"], 2, "fd")
        t100 = r["rows"]["teacher (Euler)"]["100"]["fd"]
        out.append((f"digits, NFE 2: best method ({name}) FD {fd:.2f} = {fd / t100:.3f} x the "
                    f"100-NFE teacher's {t100:.2f} (target <= {TARGET_DIGITS} x)",
                    fd <= TARGET_DIGITS * t100))  # fmt: skip
    return out


def colour(label: str) -> str:
    """One colour per model across panels (methods C2..C7, teacher and peers C0, C1, C8, C9)."""
    if label in METHODS:
        return f"C{2 + METHODS.index(label)}"
    if label.startswith("teacher"):
        return "C0" if "Euler" in label else "C9"
    return "C1" if "Euler" in label else "C8"


def plot(parts: dict, path: Path) -> None:
    panels = [k for k in ("8gaussians", "moons", "digits") if k in parts]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, name in zip(axes[0], panels, strict=True):
        r = parts[name]
        key = "fd" if name == "digits" else "w2"
        for label, row in r["rows"].items():
            pts = sorted((int(n), c[key]) for n, c in row.items() if int(n) <= 8)
            pts = [(n, v) for n, v in pts if math.isfinite(v)]
            if not pts:
                continue
            style = "-o" if label in METHODS else ("--s" if label.startswith("teacher") else ":^")
            ax.plot(*zip(*pts, strict=True), style, label=label, ms=4, color=colour(label))
        t100 = r["rows"]["teacher (Euler)"]["100"][key]
        ax.axhline(t100, color="k", ls="-.", lw=1, label="teacher, 100 NFE")
        floor = r["floor_fd"] if name == "digits" else r["floor_w2"]
        ax.axhline(floor, color="gray", ls="--", lw=1, label="floor (data vs data)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(NFES, [str(n) for n in NFES])
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel("FD (classifier features)" if name == "digits" else "W2 (exact)")
        ax.set_title(name)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(parts: dict, commands: dict, out: Path) -> list[tuple[str, bool]]:
    checks = targets(parts)
    lines = [
        "# Few-step methods: quality against NFE",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, {platform.system()}, "
        f"torch {torch.__version__}, 1 thread  ",
    ]
    for part, cmd in commands.items():
        lines.append(f"Command ({part}): `{cmd['command']}` ({cmd['seconds']:.0f} s)  ")
    lines += ["", "Recipes and metrics: see the docstring of `benchmarks/few_step.py`.", ""]
    lines += ["## Targets", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks]
    lines.append("")
    for name in ("8gaussians", "moons"):
        if name in parts:
            lines += toy_table(name, parts[name])
    if "digits" in parts:
        lines += digits_table(parts["digits"])
    lines += [
        "NFE counts calls of the main network (flowturbo: predictor calls; its refiner adds 2 "
        "calls per R step: a 1 x 64 MLP on 2-D, a one-level base-16 UNet on digits, see the "
        "parameter lines). blockwise samples in M = 4 segments, so NFE 1 and 2 do not "
        "exist. cost / teacher = training seconds / the teacher's training seconds (reflow: "
        "pairs + student); with teacher = (method + teacher) / teacher for distilled methods.",
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "few_step.md").write_text("\n".join(lines))
    plot(parts, out / "few_step.png")
    print("\n".join(lines), flush=True)
    return checks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (< 2 min)")
    part = ap.add_mutually_exclusive_group()
    part.add_argument("--skip-digits", action="store_true", help="run only the 2-D part")
    part.add_argument("--digits", action="store_true", help="run only the digits part")
    part.add_argument(
        "--report-only", action="store_true", help="rebuild the report from the cached parts"
    )
    ap.add_argument("--seed", type=int, default=0, help="seed of every stream")
    ap.add_argument("--digits-methods", default=",".join(DIGITS_METHODS),
                    help="methods trained on digits (comma separated)")  # fmt: skip
    ap.add_argument("--out", default=None, help="report folder (default benchmarks/results)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    q = args.quick
    if q:
        EVAL.update(n_w2=500, repeats=1, fd_seeds=1)
    out = Path(args.out) if args.out else (Path("runs/few_step_quick") if q else ROOT / "results")
    cache = Path("runs/few_step_quick" if q else "runs/few_step")
    cache.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/few_step.py " + " ".join(sys.argv[1:])
    if q:
        toy_steps = dict(teacher=600, pairs=4000, reflow=400, meanflow=300, freeflow=200,
                         twinflow=200, flowturbo=300, blockwise=300)  # fmt: skip
        dig_steps = dict(teacher=60, pairs=256, reflow=30, meanflow=20, freeflow=20, twinflow=20,
                         flowturbo=30, blockwise=30, classifier=100)  # fmt: skip
    else:
        toy_steps = dict(teacher=4000, pairs=50_000, reflow=4000, meanflow=3000, freeflow=6000,
                         twinflow=2000, flowturbo=3000, blockwise=3000)  # fmt: skip
        dig_steps = dict(teacher=1200, pairs=1500, reflow=500, meanflow=500, freeflow=500,
                         twinflow=500, flowturbo=300, blockwise=1200, classifier=300)  # fmt: skip

    if not (args.digits or args.report_only):
        t0 = time.perf_counter()
        res = {name: run_toy(name, toy_steps, args.seed) for name in ("8gaussians", "moons")}
        res["_command"] = {"command": command, "seconds": time.perf_counter() - t0}
        (cache / "toy.json").write_text(json.dumps(res))
    if not (args.skip_digits or args.report_only):
        t0 = time.perf_counter()
        methods = tuple(m for m in args.digits_methods.split(",") if m)
        res = {"digits": run_digits(dig_steps, args.seed, methods)}
        res["_command"] = {"command": command, "seconds": time.perf_counter() - t0}
        (cache / "digits.json").write_text(json.dumps(res))

    parts, commands = {}, {}
    for file, label in (("toy.json", "2-D"), ("digits.json", "digits")):
        if (cache / file).is_file():
            res = json.loads((cache / file).read_text())
            commands[label] = res.pop("_command")
            parts.update(res)
    checks = write_report(parts, commands, out)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
