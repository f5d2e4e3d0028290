"""Training a run: ``fit`` is ``flowforge train`` from Python.

It checks the config, builds the run's data and network through its recipe, trains with the one
``train()`` (resuming a run directory that holds a checkpoint), then evaluates and draws it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from flowforge.recipes.base import TrainContext
from flowforge.recipes.config import ConfigError, RunConfig, validate
from flowforge.recipes.config_io import apply_overrides, load_yaml, preset_path, to_dict
from flowforge.recipes.run import RUNS_DIR, Run, build_data, read_run_config, set_threads
from flowforge.recipes.table import recipe_for
from flowforge.train import distributed
from flowforge.train.checkpoint import CONFIG_FILE, checkpoint_step
from flowforge.train.loop import train
from flowforge.utils.io import atomic_path
from flowforge.utils.seed import seed_everything

__all__ = ["fit"]


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_FILE).is_file()


_FIXED_ON_RESUME = ("data", "model", "method")


def _check_resume(config: RunConfig, run_dir: Path) -> None:
    """A run directory may only be continued with the same data, model and method."""
    old = to_dict(read_run_config(run_dir))
    new = to_dict(config)
    changed = [
        f"{section}.{key} ({old[section].get(key)!r} -> {new[section][key]!r})"
        for section in _FIXED_ON_RESUME
        for key in new[section]
        if old[section].get(key) != new[section][key]
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


def _resolve_source(config: RunConfig | str | os.PathLike) -> RunConfig:
    if isinstance(config, RunConfig):
        return config
    path = Path(config)
    if path.suffix in (".yaml", ".yml"):
        return load_yaml(path)
    return load_yaml(preset_path(str(config)))


def fit(
    config: RunConfig | str | os.PathLike = "toy2d_fm",
    *overrides: str,
    run_dir: str | os.PathLike | None = None,
    evaluate: bool = True,
) -> Run:
    """Train a run (or resume it) into ``run_dir`` (default ``runs/<name>``), then evaluate
    and draw it: what ``flowforge train`` does.

    Args:
        config: a ``RunConfig``, a preset name or a YAML file.
        overrides: dotted overrides, ``"train.steps=500"`` or ``"--train.steps=500"``.
        run_dir: the run directory; one that holds a checkpoint is resumed.
        evaluate: evaluate and draw after training (rank 0).

    Returns:
        The trained ``Run`` (its ``metrics`` set when evaluated).

    Example:
        >>> import tempfile
        >>> run = fit("toy2d_fm", "train.steps=2", "train.warmup_steps=0", "threads=1",
        ...           "train.progress=false", run_dir=tempfile.mkdtemp(), evaluate=False)
        ... # doctest: +ELLIPSIS
        training toy2d_fm in ...: fm on 2 features, 149250 parameters, to step 2, world size 1 ...
        trained to step 2 in ...
        >>> run.sample(3, nfe=2).shape
        torch.Size([3, 2])
    """
    config = apply_overrides(_resolve_source(config), list(overrides))  # a copy
    validate(config)
    set_threads(config.threads)
    recipe = recipe_for(config)
    if config.data.path is not None:  # so `sample` and `eval` find it from any directory
        config.data.path = str(Path(config.data.path).resolve())
    recipe.prepare()
    run_dir = Path(RUNS_DIR, config.name) if run_dir is None else Path(run_dir)
    main = distributed.is_main()  # from the torchrun environment; train() joins the group
    if _is_run_dir(run_dir):
        _check_resume(config, run_dir)
    if main:
        _check_writable(run_dir)
    t0 = time.perf_counter()
    data = build_data(config, run_dir if main else None)
    if main:
        data.save(run_dir)
    seed_everything(config.train.seed)  # the initial weights depend on the seed only
    model = recipe.build_model(data)
    resumed = checkpoint_step(run_dir) if run_dir.is_dir() else None
    training = recipe.training(model, data, TrainContext(run_dir, resumed is not None, main))
    distributed.print0(
        f"{'continuing' if resumed is not None else 'training'} {config.name} in {run_dir}: "
        f"{config.method.name} on {data.describe()}, "
        f"{sum(p.numel() for p in model.parameters())} parameters, "
        f"{'from step ' + str(resumed) + ' ' if resumed is not None else ''}to step "
        f"{config.train.steps}, world size {distributed.world_size()} "
        f"(data ready in {time.perf_counter() - t0:.1f} s)"
    )
    hook = data.progress_hook(recipe, run_dir) if config.train.eval_every else None
    t0 = time.perf_counter()
    result = train(
        model,
        training.objective,
        training.data,
        config.train,
        run_dir,
        eval_hook=hook,
        run_config=to_dict(config),
    )
    distributed.print0(f"trained to step {result.step} in {time.perf_counter() - t0:.1f} s")
    run = Run(
        config, data, result.model, result.ema, run_dir=run_dir, step=result.step, recipe=recipe
    )
    if main and evaluate:
        run.metrics = recipe.evaluate(run.net(), data, run_dir, result.step)
        run._write_metrics(config, run.metrics)
        run.draw()
    return run
