"""``flowforge train``: train a run directory (or resume it), then evaluate and plot it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from flowforge.cli import plots
from flowforge.cli.build import (
    DATA_INFO,
    DataSource,
    build_data,
    build_metrics,
    generate,
)
from flowforge.cli.config import (
    ConfigError,
    RunConfig,
    is_image_run,
    validate,
)
from flowforge.cli.config_io import (
    load_yaml,
    preset_path,
    to_dict,
)
from flowforge.cli.distill_config import FEW_STEP_OBJECTIVES, NATIVE_ONLY_OBJECTIVES
from flowforge.cli.eval_command import (
    METRICS_JSON,
    evaluate,
    print_table,
    set_threads,
    write_json,
)
from flowforge.cli.fewstep import build_run_model, build_run_objective, run_field
from flowforge.cli.image_eval import evaluate_images, picture_images, reconstruction_metrics
from flowforge.cli.images import (
    build_image_data,
    build_image_model,
    build_image_objective,
    image_teacher,
    load_image_teacher,
)
from flowforge.train import distributed
from flowforge.train.checkpoint import CONFIG_FILE, checkpoint_step
from flowforge.train.logging import METRICS_FILE
from flowforge.train.loop import train
from flowforge.utils.io import atomic_path
from flowforge.utils.seed import seed_everything

__all__ = [
    "resolve_train",
    "train_command",
    "RUNS_DIR",
]

RUNS_DIR = "runs"


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
    set_threads(config.threads)
    if config.data.path is not None:  # so `sample` and `eval` find it from any directory
        config.data.path = str(Path(config.data.path).resolve())
    if config.distill.teacher is not None:
        config.distill.teacher = str(Path(config.distill.teacher).resolve())
    run_dir = Path(RUNS_DIR, config.name) if run_dir is None else Path(run_dir)
    main = distributed.is_main()  # from the torchrun environment; train() joins the group
    if _is_run_dir(run_dir):
        _check_resume(config, run_dir)
    if main:
        _check_writable(run_dir)
    if is_image_run(config):
        return _train_images(config, run_dir, main, evaluate)
    source = build_data(config.data)
    if main:
        source.save(run_dir)
    seed_everything(config.train.seed)  # the initial weights depend on the seed only
    model = build_run_model(config, source.dim, source.num_classes)
    resumed = checkpoint_step(run_dir) if run_dir.is_dir() else None
    objective, data = build_run_objective(
        config, model, source, run_dir, resumed is not None, main=main
    )
    distributed.print0(
        f"{'continuing' if resumed is not None else 'training'} {config.name} in {run_dir}: "
        f"{sum(p.numel() for p in model.parameters())} parameters, "
        f"{'from step ' + str(resumed) + ' ' if resumed is not None else ''}to step "
        f"{config.train.steps}, world size {distributed.world_size()}"
    )
    hook = _progress_hook(source, config, run_dir) if config.train.eval_every else None
    t0 = time.perf_counter()
    result = train(
        model,
        objective,
        data,
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
    print_table(metrics)
    print(f"evaluated in {time.perf_counter() - t0:.1f} s; run directory: {run_dir}")
    return metrics


def _train_images(config: RunConfig, run_dir: Path, main: bool, evaluate: bool) -> dict | None:
    """``train_command`` for images: pixels or latents, labels, masks or inpainting."""
    t0 = time.perf_counter()
    data = build_image_data(config, run_dir if main else None)
    if main:
        write_json(run_dir / DATA_INFO, {"kind": "image", "shape": list(data.shape)})
    seed_everything(config.train.seed)
    model = build_image_model(config, data)
    resumed = checkpoint_step(run_dir) if run_dir.is_dir() else None
    train_set = data.train
    if config.method.objective in FEW_STEP_OBJECTIVES:
        objective, train_set = build_run_objective(
            config, model, data, run_dir, resumed is not None, main, image_teacher(data)
        )
        data.teacher = load_image_teacher(config, data, run_dir if main else None)
    else:
        objective = build_image_objective(config, data)
    space = "latents " + "x".join(map(str, data.shape)) if data.codec is not None else "pixels"
    distributed.print0(
        f"{'continuing' if resumed is not None else 'training'} {config.name} in {run_dir}: "
        f"{len(data.train_x)} images on {space}, "
        f"{sum(p.numel() for p in model.parameters())} parameters, "
        f"{'from step ' + str(resumed) + ' ' if resumed is not None else ''}to step "
        f"{config.train.steps} (data ready in {time.perf_counter() - t0:.1f} s)"
    )
    t0 = time.perf_counter()
    result = train(model, objective, train_set, config.train, run_dir, run_config=to_dict(config))
    distributed.print0(f"trained to step {result.step} in {time.perf_counter() - t0:.1f} s")
    if not (main and evaluate):
        return None
    t0 = time.perf_counter()
    net = (result.ema if result.ema is not None else result.model).eval()
    metrics = {}
    if config.method.objective != "autoencoder":
        metrics = evaluate_images(net, data, config, run_dir, step=result.step)
        write_json(run_dir / METRICS_JSON, metrics)
        plots.plot_quality_vs_nfe(
            run_dir / "quality_vs_nfe.png",
            metrics["results"],
            metrics["floors"],
            config.eval.metrics,
            title=f"{config.name}, step {result.step}",
        )
        print_table(metrics)
    else:
        metrics = reconstruction_metrics(net, data, result.step)
        write_json(run_dir / METRICS_JSON, metrics)
        print(f"held-out reconstruction MSE {metrics['reconstruction_mse']:.4g}")
    picture_images(net, data, config, run_dir)
    steps, losses = _read_losses(run_dir / METRICS_FILE)
    if steps:
        plots.plot_loss(run_dir / "loss.png", steps, losses, title=f"{config.name}: training loss")
    print(f"evaluated in {time.perf_counter() - t0:.1f} s; run directory: {run_dir}")
    return metrics


def _progress_hook(source: DataSource, config: RunConfig, run_dir: Path):
    """Sliced W2 at the sampling settings, logged every ``train.eval_every`` steps."""
    s, n = config.sample, min(config.eval.n_samples, 1000)

    def hook(step: int, net: torch.nn.Module) -> dict:
        device = next(net.parameters()).device
        g = torch.Generator().manual_seed(config.eval.seed)
        target = source.reference(n, g)
        x_0 = torch.randn(n, source.dim, generator=g, dtype=torch.float32).to(device)
        labels = source.labels(n, g)
        field = run_field(net, config, source.num_classes, run_dir, s.solver)
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
        sw2 = build_metrics(["sliced_w2"], config.eval.seed, target)["sliced_w2"]
        return {"sliced_w2": float(sw2(source.to_data(x).float().cpu(), target)), "nfe": used}

    return hook


def _evaluate_and_plot(
    model: torch.nn.Module, source: DataSource, config: RunConfig, run_dir: Path, step: int
) -> dict:
    device = next(model.parameters()).device
    metrics = evaluate(model, source, config, step=step, device=device, run_dir=run_dir)
    write_json(run_dir / METRICS_JSON, metrics)
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
    field = run_field(model, config, source.num_classes, run_dir, config.sample.solver)
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
    if config.method.objective not in NATIVE_ONLY_OBJECTIVES:  # ODE paths need a field
        m = min(300, n)
        traj, _ = generate(
            run_field(model, config, source.num_classes, run_dir, "dopri5"),
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
