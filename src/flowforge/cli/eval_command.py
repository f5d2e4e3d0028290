"""``flowforge eval``: quality of a trained run against NFE, and reading a run directory.

A run directory holds ``config.yaml``, ``data.json`` (dimension, classes, normalisation), the
checkpoint (``model.safetensors``, ``ema.safetensors``, ``trainer_state.pt``), ``metrics.jsonl``
and, after training or ``eval``, ``metrics.json`` and the pictures ``samples.png``,
``trajectories.png`` (2-D), ``quality_vs_nfe.png`` and ``loss.png``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from flowforge.cli import plots
from flowforge.cli.build import (
    DataSource,
    build_data,
    build_metrics,
    generate,
)
from flowforge.cli.config import (
    RunConfig,
    is_image_run,
    validate,
)
from flowforge.cli.config_io import (
    from_dict,
    load_yaml,
    to_dict,
)
from flowforge.cli.fewstep import build_run_model, eval_jobs, run_field
from flowforge.cli.image_eval import evaluate_images, reconstruction_metrics
from flowforge.cli.images import load_image_run
from flowforge.metrics.floor import finite_sample_floor
from flowforge.train import distributed
from flowforge.train.checkpoint import CONFIG_FILE, checkpoint_step, load_weights
from flowforge.utils.io import atomic_path

__all__ = [
    "eval_command",
    "evaluate",
    "load_run",
    "set_threads",
    "write_json",
    "print_table",
    "METRICS_JSON",
]

METRICS_JSON = "metrics.json"


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` unless ``threads`` is None (the ``threads`` key)."""
    if threads is not None:
        torch.set_num_threads(threads)


def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` as indented JSON, atomically (a reader never sees half a file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))


def evaluate(
    model: torch.nn.Module,
    source: DataSource,
    config: RunConfig,
    *,
    step: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    run_dir: Path | None = None,
) -> dict:
    """Sample quality at several NFEs per solver, beside each metric's finite-sample floor.

    Every row uses the same noise, the same labels and the same reference set of
    ``eval.n_samples`` fresh data points; the floor of a metric is its value between two fresh
    data sets of that size (median of ``eval.floor_repeats`` pairs), what a perfect model
    scores.

    Returns:
        ``{"step", "n_samples", "guidance", "floors": {metric: value},
        "results": [{"solver", "nfe", metric: value, ...}, ...]}``.
    """
    e = config.eval
    g = torch.Generator().manual_seed(e.seed)
    n = e.n_samples
    target = source.reference(n, g)  # (n, D) in data space
    fns = build_metrics(e.metrics, e.seed, target)
    x_0 = torch.randn(n, source.dim, generator=g, dtype=torch.float32).to(device)
    labels = source.labels(n, g)
    labels = None if labels is None else labels.to(device)
    K = source.num_classes
    fields = {s: run_field(model, config, K, run_dir, s) for s in {*e.solvers, "dopri5"}}
    jobs = eval_jobs(config)
    if e.dopri5:
        jobs.append(("dopri5", 0))
    floors = {
        name: float(finite_sample_floor(fn, source.reference, n, e.floor_repeats, generator=g))
        for name, fn in fns.items()
    }
    results = []
    bar = tqdm(jobs, desc="eval", unit="run", disable=not progress, leave=False)
    for solver, nfe in bar:
        bar.set_postfix_str(f"{solver} NFE {nfe or 'adaptive'}")
        x, used = generate(
            fields[solver],
            x_0,
            solver,
            nfe,
            cond=labels,
            time_shift=config.sample.time_shift,
            atol=config.sample.atol,
            rtol=config.sample.rtol,
        )
        x = source.to_data(x).float().cpu()
        row: dict = {"solver": solver, "nfe": int(used)}
        if not torch.isfinite(x).all():
            row.update({name: math.inf for name in fns})
        else:
            row.update({name: float(fn(x, target)) for name, fn in fns.items()})
        results.append(row)
    return {
        "step": step,
        "n_samples": n,
        "guidance": config.sample.guidance if source.num_classes else None,
        "floors": floors,
        "results": results,
    }


def print_table(metrics: dict) -> None:
    """Print (rank 0) one row per solver and NFE of ``evaluate``'s metrics, then the floors."""
    floors = metrics["floors"]
    names = list(floors)
    for row in metrics["results"]:  # extra columns of image runs (no floor)
        names += [k for k in row if k not in ("solver", "nfe") and k not in names]
    head = f"{'solver':<9}{'NFE':>5}" + "".join(f"{n:>17}" for n in names)
    lines = [head, "-" * len(head)]
    for row in metrics["results"]:
        cells = [f"{row[n]:>17.4g}" if n in row else f"{'-':>17}" for n in names]
        lines.append(f"{row['solver']:<9}{row['nfe']:>5}" + "".join(cells))
    cells = [f"{floors[n]:>17.4g}" if floors.get(n) is not None else f"{'-':>17}" for n in names]
    lines.append(f"{'floor':<9}{'':>5}" + "".join(cells))
    distributed.print0("\n".join(lines))


def load_run(
    run: str | os.PathLike, which: str = "ema"
) -> tuple[RunConfig, DataSource, torch.nn.Module]:
    """Read a run directory: its config, data description and trained model (eval mode, CPU).

    Raises:
        FileNotFoundError: no such directory, or it is not a complete run.
        ValueError: a corrupt config, data description or checkpoint.
    """
    run_dir = Path(run)
    if not run_dir.exists():
        raise FileNotFoundError(
            f"run directory {run_dir} does not exist; train one with `flowforge train` or check "
            "the path (runs live under runs/<name>/ by default)."
        )
    if not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir} is a file, not a run directory; check the path.")
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"{run_dir} has no {CONFIG_FILE}, so it is not a flowforge run directory; pass the "
            "folder written by `flowforge train` (e.g. runs/toy2d_fm)."
        )
    config = load_yaml(run_dir / CONFIG_FILE)
    set_threads(config.threads)
    if is_image_run(config):
        return (config, *load_image_run(run_dir, config, which))
    info = DataSource.load(run_dir)
    model = build_run_model(config, info.dim, info.num_classes)
    load_weights(run_dir, model, which=which)
    return config, info, model.eval()


def eval_command(
    run: str | os.PathLike,
    *,
    nfes: list[int] | None = None,
    solvers: list[str] | None = None,
    n_samples: int | None = None,
    seed: int | None = None,
    which: str = "ema",
) -> dict:
    """Evaluate a run; writes ``metrics.json`` and ``quality_vs_nfe.png`` into it."""
    run_dir = Path(run)
    config, info, model = load_run(run_dir, which)
    overrides = {"nfes": nfes, "solvers": solvers, "n_samples": n_samples, "seed": seed}
    eval_dict = to_dict(config.eval) | {k: v for k, v in overrides.items() if v is not None}
    config.eval = from_dict(eval_dict, type(config.eval), "eval.")
    validate(config)
    step = checkpoint_step(run_dir)
    if is_image_run(config):
        if config.method.objective == "autoencoder":
            metrics = reconstruction_metrics(model, info, step)
            write_json(run_dir / METRICS_JSON, metrics)
            print(f"held-out reconstruction MSE {metrics['reconstruction_mse']:.4g}")
            return metrics
        metrics = evaluate_images(model, info, config, run_dir, step=step)
    else:
        source = build_data(config.data)
        source.mean, source.std = (
            info.mean,
            info.std,
        )  # the normalisation the model was trained with
        metrics = evaluate(model, source, config, step=step, run_dir=run_dir)
    try:
        write_json(run_dir / METRICS_JSON, metrics)
        plots.plot_quality_vs_nfe(
            run_dir / "quality_vs_nfe.png",
            metrics["results"],
            metrics["floors"],
            config.eval.metrics,
            title=f"{config.name}, step {step}",
        )
    except OSError as e:
        raise PermissionError(f"cannot write into {run_dir} ({e.strerror or e}).") from None
    print_table(metrics)
    print(f"wrote {run_dir / METRICS_JSON} and {run_dir / 'quality_vs_nfe.png'}")
    return metrics
