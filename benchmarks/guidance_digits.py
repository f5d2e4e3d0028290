"""Card 11 (RAAG) on images: RAAG vs constant CFG at 4 and 8 NFE on class-conditional digits.

Card 11's claim, at image scale: ratio-aware adaptive guidance at few steps is no worse than a
constant guidance scale at the same NFE. Given a trained class-conditional digits run (the
``digits`` preset: 8x8 UNet, CFG dropout 0.1), this evaluates its EMA network with
the image evaluation at NFE 4 and 8 for Euler and Heun and guidance w in {1, 1.5, 2, 3, 4}:

    cfg    v = v_u + w (v_c - v_u)                                  (constant scale)
    raag   v = v_u + w_t (v_c - v_u),  w_t = 1 + (w - 1) exp(-alpha RATIO_t),
           RATIO_t = ||v_c - v_u|| / ||v_u|| per sample               (w_max = w)

alpha is the run's ``sample.raag_alpha`` (the CLI default 5, power 1) unless ``--alpha`` is
given: w_t falls to about 1 (no extra guidance) where the correction is large compared with the
unconditional velocity (the noise-side steps) and reaches w where it is small. At w = 1 both
are the plain conditional model (the same samples).

Metrics (the run's feature classifier, copied from the run directory so every number uses the
same one): Frechet distance and precision/recall between all held-out digits and as many
samples, and the classifier's accuracy on the samples' labels. Every (method, w) is evaluated
on ``--seeds`` noise/label seeds; a seed gives CFG and RAAG the same noise and labels, so the
FD difference RAAG - CFG is paired. Per cell (solver, NFE, w) the verdict is "worse" when the
mean paired difference exceeds t_{0.95, n-1} times its standard error (and 0.1 % of CFG's FD),
"better" when it is below minus that, else "tie"; RAAG is "no worse" in a cell unless it is
"worse". Also listed: the lowest FD per (solver, NFE) over every setting, and RAAG's median
weight w_t per network evaluation at the largest w.

If ``--run`` holds a run still being trained, this waits (polling every 30 s, at most
``--wait`` seconds; 0 uses its latest checkpoint at once) for its ``metrics.json``; if
``--run`` does not exist, a run is trained with the digits preset into ``--out-dir`` first.

Run:
    python benchmarks/guidance_digits.py                 # about 6 minutes on 2 shared cores
    python benchmarks/guidance_digits.py --quick         # smoke run, under 2 minutes
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from scipy import stats  # noqa: E402

from flowforge.recipes.base import guided_field, ode_sample  # noqa: E402
from flowforge.recipes.config import RunConfig  # noqa: E402
from flowforge.recipes.config_io import apply_overrides, load_yaml, preset_path  # noqa: E402
from flowforge.recipes.fitting import fit  # noqa: E402
from flowforge.recipes.image_eval import CLASSIFIER_FILE  # noqa: E402
from flowforge.recipes.run import METRICS_JSON, load, set_threads  # noqa: E402
from flowforge.recipes.table import recipe_for  # noqa: E402
from flowforge.train.checkpoint import CONFIG_FILE  # noqa: E402

NAME = "guidance_digits"
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_RUN = "/tmp/runs/runs/digits"
METRICS = ("fd", "precision", "recall", "accuracy")
METHODS = ("cfg", "raag")


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def strings(text: str) -> list[str]:
    return [v.strip() for v in text.split(",")]


def wait_for(run: Path, wait: float, poll: float) -> None:
    """Block until ``run/metrics.json`` exists (the run's training and evaluation are done)."""
    start = time.monotonic()
    while wait > 0 and not (run / METRICS_JSON).is_file():
        waited = time.monotonic() - start
        if waited > wait:
            raise TimeoutError(
                f"{run / METRICS_JSON} did not appear within --wait={wait:g} s; is the run still "
                "training? Wait longer with --wait, or pass another --run."
            )
        print(f"waiting for {run / METRICS_JSON} ({waited:.0f} s so far)", flush=True)
        time.sleep(poll)


def prepare_run(args: argparse.Namespace, out: Path) -> Path:
    """The run directory to evaluate: the given one (after waiting) or a freshly trained one."""
    run = Path(args.run)
    if (run / CONFIG_FILE).is_file():
        wait_for(run, args.wait, args.poll)
        return run
    if run.exists():
        raise FileNotFoundError(f"--run={run} exists but holds no {CONFIG_FILE}; not a run.")
    run = out / "digits"
    print(f"--run={args.run} does not exist: training the digits preset into {run}", flush=True)
    config = apply_overrides(
        load_yaml(preset_path("digits")),
        [
            f"--threads={args.threads}",
            f"--train.steps={args.train_steps}",
            f"--train.warmup_steps={min(100, args.train_steps // 2)}",
            "--train.progress=false",
        ],
    )
    fit(config, run_dir=run, evaluate=False)
    return run


def eval_config(base: RunConfig, args: argparse.Namespace, method: str, w: float, seed: int):
    """The run's config with one guidance setting and the benchmark's eval settings."""
    overrides = [
        f"--sample.guidance={w}",
        f"--sample.guidance_method={method}",
        f"--eval.solvers={','.join(args.solvers)}",
        f"--eval.nfes={','.join(map(str, args.nfes))}",
        f"--eval.metrics={','.join(METRICS)}",
        f"--eval.n_samples={args.n_samples}",
        f"--eval.seed={seed}",
        f"--eval.classifier_steps={args.classifier_steps}",
    ]
    if args.alpha is not None:
        overrides.append(f"--sample.raag_alpha={args.alpha}")
    return apply_overrides(base, overrides)


@torch.no_grad()
def raag_weights(net, config: RunConfig, data, solver: str, nfe: int, seed: int) -> list[float]:
    """Median RAAG weight w_t over the batch at each network evaluation."""
    s = config.sample
    raag = guided_field(net, s, data.num_classes)
    medians: list[float] = []

    def field(x, t, cond):
        v = raag(x, t, cond)
        medians.append(raag.last_weight.median().item())
        return v

    g = torch.Generator().manual_seed(seed)
    n = min(config.eval.n_samples, len(data.test_x))
    x_0 = torch.randn(n, *data.shape, generator=g)
    labels = data.labels(n, g)
    ode_sample(field, x_0, solver, nfe, labels, sample=s)
    return medians


def verdict(diffs: list[float], scale: float) -> tuple[float, float, str]:
    """(mean, standard error, verdict) of paired FD differences RAAG - CFG.

    A mean within 0.1 % of ``scale`` (CFG's mean FD) is a tie whatever its standard error, so
    that rounding-level differences of nearly identical samples are not called significant.
    """
    mean = statistics.fmean(diffs)
    if all(d == 0 for d in diffs):
        return mean, 0.0, "identical"
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    bound = stats.t.ppf(0.95, len(diffs) - 1) * se if len(diffs) > 1 else 0.0
    bound = max(bound, 1e-3 * abs(scale))
    return mean, se, "worse" if mean > bound else "better" if mean < -bound else "tie"


def plot(table: dict, floors: dict, args: argparse.Namespace, title: str, path: Path) -> None:
    """FD against class accuracy, one panel per (solver, NFE), CFG and RAAG lines over w."""
    cells = [(s, n) for s in args.solvers for n in args.nfes]
    cols = len(args.nfes)
    rows = math.ceil(len(cells) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.8 * rows), squeeze=False)
    for ax, (solver, nfe) in zip(axes.flat, cells, strict=False):
        for method, color in zip(METHODS, ("C0", "C3"), strict=True):
            pts = [table[method, w, solver, nfe] for w in args.weights]
            xs = [statistics.fmean(p["accuracy"]) for p in pts]
            ys = [statistics.fmean(p["fd"]) for p in pts]
            err = [statistics.stdev(p["fd"]) if len(p["fd"]) > 1 else 0.0 for p in pts]
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, color=color, label=method, capsize=2)
            for w, x, y in zip(args.weights, xs, ys, strict=True):
                ax.annotate(f"{w:g}", (x, y), fontsize=7, color=color,
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.axhline(floors["fd"], color="black", ls="--", lw=1, label="FD floor")
        ax.axvline(floors["accuracy"], color="grey", ls=":", lw=1, label="classifier acc.")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.set_xlabel("class accuracy of samples")
        ax.set_ylabel("FD (classifier features)")
        ax.set_title(f"{solver}, NFE {nfe}")
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(cells) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", default=DEFAULT_RUN, help=f"trained digits run ({DEFAULT_RUN})")
    p.add_argument(
        "--out-dir",
        default=None,
        help="fresh directory for the classifier copy and a trained run (default: a new "
        "/tmp/bench_guidance_digits_* directory)",
    )
    p.add_argument(
        "--results",
        default=None,
        help="where the .md and .png go (default benchmarks/results; --out-dir with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run (tiny settings, < 2 min)")
    p.add_argument(
        "--weights", type=floats, default=[1.0, 1.5, 2.0, 3.0, 4.0], help="w (1,1.5,2,3,4)"
    )
    p.add_argument("--nfes", type=ints, default=[4, 8], help="NFE budgets (4,8)")
    p.add_argument("--solvers", type=strings, default=["euler", "heun"], help="(euler,heun)")
    p.add_argument("--alpha", type=float, default=None, help="RAAG alpha (the run's: 5)")
    p.add_argument("--seeds", type=int, default=5, help="noise/label seeds per setting (5)")
    p.add_argument("--seed", type=int, default=1234, help="first eval seed (1234, CLI default)")
    p.add_argument(
        "--n-samples", type=int, default=100_000, help="samples (capped at the held-out set)"
    )
    p.add_argument(
        "--wait",
        type=float,
        default=1200,
        help="max seconds to wait for --run's metrics.json (1200; 0: use its checkpoint as is)",
    )
    p.add_argument("--poll", type=float, default=30, help="seconds between checks (30)")
    p.add_argument(
        "--train-steps", type=int, default=3000, help="steps if a run is trained (3000, preset)"
    )
    p.add_argument(
        "--classifier-steps",
        type=int,
        default=1500,
        help="steps of the feature classifier if the run has none cached (1500)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    args = p.parse_args(argv)
    if args.quick:
        args.weights, args.nfes, args.solvers, args.seeds = [1.0, 3.0], [4], ["euler"], 2
        args.train_steps, args.classifier_steps, args.n_samples = 30, 100, 200
    if any(w < 1 for w in args.weights):
        p.error(f"--weights={args.weights}: guidance weights must be >= 1 (RAAG's w_max).")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.out_dir is None:
        out = Path(tempfile.mkdtemp(prefix=f"bench_{NAME}_", dir="/tmp"))
    else:
        out = Path(args.out_dir)
        if out.exists() and any(out.iterdir()):
            print(f"--out-dir={out} is not empty; pass a fresh directory.", file=sys.stderr)
            return 2
        out.mkdir(parents=True, exist_ok=True)
    results = Path(args.results) if args.results else (out if args.quick else RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    run = prepare_run(args, out)
    if (run / CLASSIFIER_FILE).is_file():  # the run's own feature network, for every number
        shutil.copy(run / CLASSIFIER_FILE, out / CLASSIFIER_FILE)
    base = load_yaml(run / CONFIG_FILE)
    if not base.data.conditional:
        print(f"--run={run} is not class-conditional; guidance needs labels.", file=sys.stderr)
        return 2
    base = apply_overrides(base, [f"--threads={args.threads}"])
    loaded = load(run)
    set_threads(args.threads)
    data, net = loaded.data, loaded.net()
    alpha = args.alpha if args.alpha is not None else base.sample.raag_alpha
    print(f"evaluating {run} (step {base.train.steps}) in {out}; RAAG alpha {alpha:g}", flush=True)

    # (method, w, solver, nfe) -> {metric: [value per seed]}
    table: dict = {}
    floors: dict = {}
    seeds = [args.seed + i for i in range(args.seeds)]
    t0 = time.perf_counter()
    for w in args.weights:
        for method in METHODS:
            if w == 1.0 and method == "raag":  # guided_field returns the bare model at w = 1
                for solver in args.solvers:
                    for nfe in args.nfes:
                        table["raag", w, solver, nfe] = table["cfg", w, solver, nfe]
                continue
            for seed in seeds:
                config = eval_config(base, args, method, w, seed)
                m = recipe_for(config).evaluate(net, data, out, None, progress=False)
                floors = m["floors"]
                for r in m["results"]:
                    cell = table.setdefault((method, w, r["solver"], r["nfe"]), {})
                    for k in METRICS:
                        cell.setdefault(k, []).append(float(r[k]))
                fds = ", ".join(f"{r['solver']} {r['nfe']}: {r['fd']:.2f}" for r in m["results"])
                print(f"[{time.perf_counter() - t0:5.0f} s] {method} w={w:g} seed {seed}: FD "
                      f"{fds}", flush=True)  # fmt: skip
    n_eval = m["n_samples"]
    w_top = max(args.weights)
    weights_used = {
        (solver, nfe): raag_weights(
            net, eval_config(base, args, "raag", w_top, args.seed), data, solver, nfe, args.seed
        )
        for solver in args.solvers
        for nfe in args.nfes
        if w_top > 1  # at w = 1 there is no guidance wrapper
    }

    command = "python benchmarks/guidance_digits.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    md = [
        "# RAAG vs constant CFG at few steps on class-conditional digits (card 11)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, torch {torch.__version__}, {args.threads} thread(s).",
        "",
        f"Run: `{run}` ({base.name}: {base.model.arch}, {base.data.image_size}x"
        f"{base.data.image_size} digits, {base.train.steps} steps, cond dropout "
        f"{base.method.cond_dropout}), EMA weights. Metrics in the run's classifier features: "
        f"all {n_eval} held-out digits vs {n_eval} samples, labels drawn with the training "
        f"frequencies; {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}), the same noise and labels "
        f"for CFG and RAAG per seed. RAAG: w_max = w, alpha = {alpha:g}, power 1. Floors "
        f"(training vs held-out digits): FD {floors['fd']:.3f}, precision "
        f"{floors['precision']:.3f}, recall {floors['recall']:.3f}; classifier accuracy on "
        f"held-out digits {floors['accuracy']:.3f}.",
        "",
        "## FD: RAAG vs CFG at equal NFE and w",
        "",
        "Mean over seeds (sd); diff = RAAG - CFG paired per seed (standard error); verdict at "
        "one-sided 95 % (t distribution; differences within 0.1 % of CFG's FD count as ties): "
        "worse / tie / better. RAAG is *no worse* unless worse.",
        "",
        "| solver | NFE | w | FD cfg | FD raag | diff (se) | verdict | acc cfg | acc raag |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def mean_sd(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.2f} ({sd:.2f})"

    counts = {"worse": 0, "tie": 0, "better": 0, "identical": 0}
    for solver in args.solvers:
        for nfe in args.nfes:
            for w in args.weights:
                c, r = table["cfg", w, solver, nfe], table["raag", w, solver, nfe]
                diffs = [b - a for a, b in zip(c["fd"], r["fd"], strict=True)]
                diff, se, word = verdict(diffs, statistics.fmean(c["fd"]))
                counts[word] += 1
                md.append(
                    f"| {solver} | {nfe} | {w:g} | {mean_sd(c['fd'])} | {mean_sd(r['fd'])} | "
                    f"{diff:+.2f} ({se:.2f}) | {word} | {statistics.fmean(c['accuracy']):.3f} | "
                    f"{statistics.fmean(r['accuracy']):.3f} |"
                )
    guided = len(args.solvers) * len(args.nfes) * sum(w != 1 for w in args.weights)
    no_worse = guided - counts["worse"]
    md += [
        "",
        f"**RAAG no worse than CFG (FD) in {no_worse} of {guided} guided cells** (w > 1): "
        f"{counts['better']} better, {counts['tie']} tie, {counts['worse']} worse; the w = 1 "
        "cells are the same samples.",
        "",
        "Lowest mean FD per solver and NFE over every (method, w):",
        "",
    ]
    for solver in args.solvers:
        for nfe in args.nfes:
            best = min(
                ((m_, w) for m_ in METHODS for w in args.weights),
                key=lambda k: statistics.fmean(table[k[0], k[1], solver, nfe]["fd"]),
            )
            fd = statistics.fmean(table[best[0], best[1], solver, nfe]["fd"])
            shown = "no guidance (w = 1)" if best[1] == 1 else f"{best[0]} w = {best[1]:g}"
            md.append(f"- {solver} NFE {nfe}: {shown}, FD {fd:.2f}")
    md += [
        "",
        "## All metrics (means over seeds)",
        "",
        "| solver | NFE | method | w | FD | precision | recall | accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for solver in args.solvers:
        for nfe in args.nfes:
            for method in METHODS:
                for w in args.weights:
                    cell = table[method, w, solver, nfe]
                    vals = " | ".join(f"{statistics.fmean(cell[k]):.3f}" for k in METRICS)
                    md.append(f"| {solver} | {nfe} | {method} | {w:g} | {vals} |")
    md += [
        "",
        f"## RAAG weight per network evaluation (w_max = {w_top:g}, alpha = {alpha:g})",
        "",
        "Median over the batch of w_t at each evaluation, noise end first (seed "
        f"{args.seed}); constant CFG would use {w_top:g} throughout.",
        "",
        "| solver | NFE | median w_t per evaluation | mean |",
        "|---|---|---|---|",
    ]
    for (solver, nfe), ws in weights_used.items():
        shown = ", ".join(f"{v:.2f}" for v in ws)
        md.append(f"| {solver} | {nfe} | {shown} | {statistics.fmean(ws):.2f} |")
    text = "\n".join(md) + "\n"
    print("\n" + text)
    (results / f"{NAME}.md").write_text(text)
    title = (
        f"{base.name}: FD vs class accuracy, CFG vs RAAG (alpha {alpha:g})\npoints labelled by "
        f"w, mean (sd) over {len(seeds)} seeds"
    )
    plot(table, floors, args, title, results / f"{NAME}.png")
    print(f"wrote {results / (NAME + '.md')} and {results / (NAME + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
