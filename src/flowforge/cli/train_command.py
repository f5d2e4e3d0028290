"""``flowforge train``: train a run directory (or resume it), then evaluate and plot it."""

from __future__ import annotations

from pathlib import Path

from flowforge.cli.eval_command import print_metrics
from flowforge.recipes.config import ConfigError, RunConfig
from flowforge.recipes.config_io import load_yaml, preset_path
from flowforge.recipes.fitting import fit
from flowforge.recipes.run import read_run_config
from flowforge.train.checkpoint import CONFIG_FILE

__all__ = ["resolve_train", "train_command"]


def resolve_train(source: str, out_dir: str | None) -> tuple[RunConfig, Path | None]:
    """Turn the ``train`` argument into ``(config, run_dir)``.

    ``source`` is a run directory (continued in place), a ``.yaml`` file or a preset name.
    ``run_dir`` is None when it is to be derived from the final config's name.
    """
    path = Path(source)
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        if out_dir is not None and Path(out_dir).resolve() != path.resolve():
            raise ConfigError(
                f"--out-dir={out_dir} differs from the run directory {source} being resumed; "
                "drop --out-dir, or copy the run directory first."
            )
        return read_run_config(path), path
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
    run = fit(config, run_dir=run_dir, evaluate=evaluate)
    if run.metrics is None:
        return None
    print_metrics(run.metrics)
    print(f"run directory: {run.run_dir}")
    return run.metrics
