"""What the subcommands do: train a run, sample from it, evaluate it.

A run directory holds ``config.yaml``, ``data.json`` (dimension, classes, normalisation), the
checkpoint (``model.safetensors``, ``ema.safetensors``, ``trainer_state.pt``), ``metrics.jsonl``
and, after training or ``eval``, ``metrics.json`` and the pictures ``samples.png``,
``trajectories.png`` (2-D), ``quality_vs_nfe.png`` and ``loss.png``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from flowforge.cli import plots
from flowforge.cli.build import (
    DataSource,
    build_data,
    build_field,
    build_model,
    build_objective,
    generate,
)
from flowforge.cli.config import (
    ConfigError,
    RunConfig,
    check_nfe,
    from_dict,
    load_yaml,
    preset_path,
    to_dict,
    validate,
)
from flowforge.metrics.floor import finite_sample_floor
from flowforge.metrics.mmd import (
    BANDWIDTH_SCALES,
    energy_distance,
    median_bandwidth,
    mmd2_unbiased,
)
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.metrics.wasserstein import wasserstein2
from flowforge.solvers.ode import NFE_PER_STEP
from flowforge.train import distributed
from flowforge.train.checkpoint import CONFIG_FILE, checkpoint_step, load_weights
from flowforge.train.logging import METRICS_FILE
from flowforge.train.loop import train
from flowforge.utils.io import atomic_path
from flowforge.utils.seed import seed_everything

__all__ = [
    "resolve_train",
    "train_command",
    "sample_command",
    "eval_command",
    "evaluate",
    "load_run",
    "METRICS_JSON",
]

METRICS_JSON = "metrics.json"
RUNS_DIR = "runs"


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def resolve_train(source: str, out_dir: str | None) -> tuple[RunConfig, Path | None]:
    """Turn the ``train`` argument into ``(config, run_dir)``.

    ``source`` is a run directory (continued in place), a ``.yaml`` file or a preset name.
    ``run_dir`` is None when it is to be derived from the final config's name.
    """
    path = Path(source)
    if _is_run_dir(path):
        if out_dir is not None and Path(out_dir).resolve() != path.resolve():
            raise ConfigError(
                f"--out-dir={out_dir} differs from the run directory {source} being resumed; "
                "drop --out-dir, or copy the run directory first."
            )
        return load_yaml(path / CONFIG_FILE), path
    if path.is_dir():
        raise FileNotFoundError(
            f"{source} is a directory without {CONFIG_FILE}, so it is not a flowforge run to "
            "resume; pass a preset name, a .yaml file, or a run directory."
        )
    if path.suffix in (".yaml", ".yml"):
        config = load_yaml(path)
    else:
        config = load_yaml(preset_path(source))
    return config, (Path(out_dir) if out_dir is not None else None)


_FIXED_ON_RESUME = ("data", "model", "method")


def _check_resume(config: RunConfig, run_dir: Path) -> None:
    """A run directory may only be continued with the same data, model and method."""
    old = to_dict(load_yaml(run_dir / CONFIG_FILE))
    new = to_dict(config)
    changed = [
        f"{section}.{key} ({old[section][key]!r} -> {new[section][key]!r})"
        for section in _FIXED_ON_RESUME
        for key in new[section]
        if old[section][key] != new[section][key]
    ]
    if changed:
        raise ConfigError(
            f"{run_dir} already holds a run with different settings: {', '.join(changed)}. "
            "Only train.*, sample.* and eval.* may change when continuing a run; pass "
            "--out-dir=NEW_DIR (or --name=NEW_NAME) to start a new one."
        )


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(run_dir / ".write_test") as tmp:
            tmp.write_text("ok")
        (run_dir / ".write_test").unlink()
    except OSError as e:
        raise PermissionError(
            f"cannot write to the run directory {run_dir} ({e.strerror or e}); choose another "
            "with --out-dir."
        ) from None


def train_command(
    config: RunConfig,
    run_dir: Path | None = None,
    *,
    evaluate: bool = True,
) -> dict | None:
    """Train ``config`` into ``run_dir`` (default ``runs/<name>``), then evaluate and plot.

    Resumes when ``run_dir`` already holds a checkpoint. Returns the metrics (rank 0, with
    ``evaluate``) or None.
    """
    validate(config)
    _set_threads(config.threads)
    if config.data.path is not None:  # so `sample` and `eval` find it from any directory
        config.data.path = str(Path(config.data.path).resolve())
    run_dir = Path(RUNS_DIR, config.name) if run_dir is None else Path(run_dir)
    main = distributed.is_main()  # from the torchrun environment; train() joins the group
    if _is_run_dir(run_dir):
        _check_resume(config, run_dir)
    if main:
        _check_writable(run_dir)
    source = build_data(config.data)
    if main:
        source.save(run_dir)
    seed_everything(config.train.seed)  # the initial weights depend on the seed only
    model = build_model(config.model, source.dim, source.num_classes)
    objective = build_objective(config.method, source.num_classes)
    resumed = checkpoint_step(run_dir) if run_dir.is_dir() else None
    distributed.print0(
        f"{'continuing' if resumed is not None else 'training'} {config.name} in {run_dir}: "
        f"{sum(p.numel() for p in model.parameters())} parameters, "
        f"{'from step ' + str(resumed) + ' ' if resumed is not None else ''}to step "
        f"{config.train.steps}, world size {distributed.world_size()}"
    )
    hook = _progress_hook(source, config) if config.train.eval_every else None
    t0 = time.perf_counter()
    result = train(
        model,
        objective,
        source.train,
        config.train,
        run_dir,
        eval_hook=hook,
        run_config=to_dict(config),
    )
    distributed.print0(f"trained to step {result.step} in {time.perf_counter() - t0:.1f} s")
    if not (main and evaluate):
        return None
    t0 = time.perf_counter()
    net = (result.ema if result.ema is not None else result.model).eval()
    metrics = _evaluate_and_plot(net, source, config, run_dir, result.step)
    _print_table(metrics)
    print(f"evaluated in {time.perf_counter() - t0:.1f} s; run directory: {run_dir}")
    return metrics


def _progress_hook(source: DataSource, config: RunConfig):
    """Sliced W2 at the sampling settings, logged every ``train.eval_every`` steps."""
    s, n = config.sample, min(config.eval.n_samples, 1000)

    def hook(step: int, net: torch.nn.Module) -> dict:
        device = next(net.parameters()).device
        g = torch.Generator().manual_seed(config.eval.seed)
        target = source.reference(n, g)
        x_0 = torch.randn(n, source.dim, generator=g, dtype=torch.float32).to(device)
        labels = source.labels(n, g)
        field = build_field(net, s, source.num_classes)
        x, used = generate(
            field,
            x_0,
            s.solver,
            s.nfe,
            cond=None if labels is None else labels.to(device),
            time_shift=s.time_shift,
            atol=s.atol,
            rtol=s.rtol,
        )
        sw2 = _metric_fns(["sliced_w2"], config.eval.seed, target)["sliced_w2"]
        return {"sliced_w2": float(sw2(source.to_data(x).float().cpu(), target)), "nfe": used}

    return hook


def _evaluate_and_plot(
    model: torch.nn.Module, source: DataSource, config: RunConfig, run_dir: Path, step: int
) -> dict:
    device = next(model.parameters()).device
    metrics = evaluate(model, source, config, step=step, device=device)
    _write_json(run_dir / METRICS_JSON, metrics)
    title = f"{config.name}, step {step}"
    plots.plot_quality_vs_nfe(
        run_dir / "quality_vs_nfe.png",
        metrics["results"],
        metrics["floors"],
        config.eval.metrics,
        title=title,
    )
    g = torch.Generator().manual_seed(config.sample.seed)
    n = config.sample.n
    field = build_field(model, config.sample, source.num_classes)
    x_0 = torch.randn(n, source.dim, generator=g, dtype=torch.float32).to(device)
    labels = source.labels(n, g)
    labels = None if labels is None else labels.to(device)
    x, used = generate(
        field,
        x_0,
        config.sample.solver,
        config.sample.nfe,
        cond=labels,
        time_shift=config.sample.time_shift,
        atol=config.sample.atol,
        rtol=config.sample.rtol,
    )
    data = source.reference(n, g).numpy()
    plots.plot_samples(
        run_dir / "samples.png",
        source.to_data(x).cpu().numpy(),
        data,
        title=f"{title}, {config.sample.solver} NFE {used}",
        labels=None if labels is None else labels.cpu().numpy(),
    )
    m = min(300, n)
    traj, _ = generate(
        field,
        x_0[:m],
        "dopri5",
        0,
        cond=None if labels is None else labels[:m],
        atol=config.sample.atol,
        rtol=config.sample.rtol,
        return_trajectory=True,
    )
    plots.plot_trajectories(
        run_dir / "trajectories.png",
        source.to_data(traj).cpu().numpy(),
        data,
        title=f"{title}: ODE paths, noise (t = 0) to data (t = 1)",
    )
    steps, losses = _read_losses(run_dir / METRICS_FILE)
    if steps:
        plots.plot_loss(run_dir / "loss.png", steps, losses, title=f"{config.name}: training loss")
    return metrics


def _read_losses(path: Path) -> tuple[list[int], list[float]]:
    steps, losses = [], []
    if not path.exists():
        return steps, losses
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "loss" in record:
            steps.append(int(record["step"]))
            losses.append(float(record["loss"]))
    return steps, losses


def _write_json(path: Path, obj: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1))


def _metric_fns(names: list[str], seed: int, reference: Tensor) -> dict:
    """The metric functions, with every random or data-dependent choice fixed once.

    Sliced W2 uses the same directions and MMD the same kernel widths (the median heuristic on
    ``reference``) for every row and for the floor, so rows differ only through the samples.
    """
    directions_seed = seed
    if "mmd" in names:
        bandwidths = (
            median_bandwidth(reference, reference) * torch.tensor(BANDWIDTH_SCALES)
        ).tolist()

    def sw2(x: Tensor, y: Tensor) -> Tensor:
        g = torch.Generator().manual_seed(directions_seed)
        return sliced_wasserstein(x, y, generator=g)

    def mmd(x: Tensor, y: Tensor) -> Tensor:
        return mmd2_unbiased(x, y, bandwidths=bandwidths)

    table = {"w2": wasserstein2, "sliced_w2": sw2, "mmd": mmd, "energy": energy_distance}
    return {name: table[name] for name in names}


def evaluate(
    model: torch.nn.Module,
    source: DataSource,
    config: RunConfig,
    *,
    step: int | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
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
    fns = _metric_fns(e.metrics, e.seed, target)
    x_0 = torch.randn(n, source.dim, generator=g, dtype=torch.float32).to(device)
    labels = source.labels(n, g)
    labels = None if labels is None else labels.to(device)
    field = build_field(model, config.sample, source.num_classes)
    jobs = [
        (solver, nfe) for solver in e.solvers for nfe in e.nfes if nfe % NFE_PER_STEP[solver] == 0
    ]
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
            field,
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


def _print_table(metrics: dict) -> None:
    names = list(metrics["floors"])
    head = f"{'solver':<9}{'NFE':>5}" + "".join(f"{n:>12}" for n in names)
    lines = [head, "-" * len(head)]
    for row in metrics["results"]:
        lines.append(
            f"{row['solver']:<9}{row['nfe']:>5}" + "".join(f"{row[n]:>12.4g}" for n in names)
        )
    lines.append(f"{'floor':<9}{'':>5}" + "".join(f"{metrics['floors'][n]:>12.4g}" for n in names))
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
    _set_threads(config.threads)
    info = DataSource.load(run_dir)
    model = build_model(config.model, info.dim, info.num_classes)
    load_weights(run_dir, model, which=which)
    return config, info, model.eval()


def sample_command(
    run: str | os.PathLike,
    *,
    n: int | None = None,
    solver: str | None = None,
    nfe: int | None = None,
    guidance: float | None = None,
    label: int | None = None,
    seed: int | None = None,
    which: str = "ema",
    out: str | os.PathLike | None = None,
) -> Path:
    """Draw samples from a run into ``out`` (.npy array in data units, or .png scatter)."""
    run_dir = Path(run)
    out = run_dir / "sample.npy" if out is None else Path(out)
    if out.suffix not in (".npy", ".png"):
        raise ValueError(f"--out={str(out)!r} must end in .npy (array) or .png (scatter plot).")
    config, info, model = load_run(run_dir, which)
    s = config.sample
    overrides = {"n": n, "solver": solver, "nfe": nfe, "guidance": guidance, "seed": seed}
    sample_dict = to_dict(s) | {k: v for k, v in overrides.items() if v is not None}
    if solver is not None and solver != "dopri5" and nfe is None:
        # Keep the run's budget when it divides; otherwise one step's worth is not a good
        # default, so ask.
        if sample_dict["nfe"] % NFE_PER_STEP[solver]:
            raise ConfigError(
                f"--solver={solver} cannot spend the run's sample.nfe={s.nfe}; pass --nfe with "
                f"a multiple of {NFE_PER_STEP[solver]}."
            )
    config.sample = from_dict(sample_dict, type(s), "sample.")
    validate(config)
    s = config.sample
    check_nfe("--nfe", s.solver, s.nfe)
    if label is not None and not 0 <= label < max(info.num_classes, 1):
        raise ValueError(
            f"--label={label} is not a class of this run; "
            + (
                f"use 0..{info.num_classes - 1}."
                if info.num_classes
                else "the run is unconditional, drop --label."
            )
        )
    g = torch.Generator().manual_seed(s.seed)
    x_0 = torch.randn(s.n, info.dim, generator=g, dtype=torch.float32)
    labels = info.labels(s.n, g)
    if label is not None:
        labels = torch.full((s.n,), label, dtype=torch.long)
    field = build_field(model, s, info.num_classes)
    t0 = time.perf_counter()
    x, used = generate(
        field, x_0, s.solver, s.nfe, cond=labels, time_shift=s.time_shift, atol=s.atol, rtol=s.rtol
    )
    x = info.to_data(x).float().numpy()
    seconds = time.perf_counter() - t0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".npy":
            with atomic_path(out) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, x)
        else:
            source = build_data(config.data)
            data = source.reference(s.n, torch.Generator().manual_seed(s.seed + 1)).numpy()
            title = f"{run_dir.name}: {s.solver}, NFE {used}" + (
                f", guidance {s.guidance:g}" if info.num_classes else ""
            )
            plots.plot_samples(
                out, x, data, title=title, labels=None if labels is None else labels.numpy()
            )
    except OSError as e:
        raise PermissionError(
            f"cannot write --out={str(out)!r} ({e.strerror or e}); choose a writable path."
        ) from None
    print(
        f"wrote {s.n} samples ({s.solver}, NFE {used}, {seconds:.2f} s) of shape "
        f"{tuple(x.shape)} to {out}"
    )
    return out


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
    source = build_data(config.data)
    source.mean, source.std = info.mean, info.std  # the normalisation the model was trained with
    step = checkpoint_step(run_dir)
    metrics = evaluate(model, source, config, step=step)
    try:
        _write_json(run_dir / METRICS_JSON, metrics)
        plots.plot_quality_vs_nfe(
            run_dir / "quality_vs_nfe.png",
            metrics["results"],
            metrics["floors"],
            config.eval.metrics,
            title=f"{config.name}, step {step}",
        )
    except OSError as e:
        raise PermissionError(f"cannot write into {run_dir} ({e.strerror or e}).") from None
    _print_table(metrics)
    print(f"wrote {run_dir / METRICS_JSON} and {run_dir / 'quality_vs_nfe.png'}")
    return metrics
