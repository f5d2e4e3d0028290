"""Runs from Python: read one back (``load``), sample, evaluate and save it.

A run directory holds ``config.yaml``, ``data.json``, the checkpoint (``model.safetensors``,
``ema.safetensors``, ``trainer_state.pt``), ``metrics.jsonl`` and, after evaluation,
``metrics.json`` and the pictures. ``flowforge train`` is ``flowforge.recipes.fitting.fit``, and
``flowforge sample`` / ``flowforge eval`` are ``Run.sample`` / ``Run.evaluate``, so the command
line and Python cannot drift apart::

    import flowforge
    run = flowforge.load("runs/digits")
    images = run.sample(16, label=3, guidance=2.0)  # (16, 1, 8, 8) in [0, 1]
    metrics = run.evaluate(nfes=[4, 8])
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Literal

import torch
import yaml
from torch import Tensor, nn

from flowforge.recipes import plots
from flowforge.recipes.base import Recipe, RunData, Samples
from flowforge.recipes.config import (
    ConfigError,
    RunConfig,
    SampleConfig,
    data_kind,
)
from flowforge.recipes.config_io import (
    from_dict,
    load_yaml,
    save_yaml,
    to_dict,
)
from flowforge.recipes.energies import build_target, load_target
from flowforge.recipes.gfn_envs import build_env, load_env
from flowforge.recipes.images import build_images, load_images
from flowforge.recipes.table import recipe_for
from flowforge.recipes.validation import validate
from flowforge.recipes.vectors import build_vectors, load_vectors
from flowforge.recipes.videos import build_videos, load_videos
from flowforge.train.checkpoint import (
    CONFIG_FILE,
    EMA_FILE,
    STATE_FILE,
    checkpoint_step,
    load_weights,
    save_weights,
)
from flowforge.train.config import EMA_AUTO_WARMUP
from flowforge.train.ema import initial_share
from flowforge.train.logging import METRICS_FILE
from flowforge.utils.io import atomic_path

__all__ = [
    "METRICS_JSON",
    "RUNS_DIR",
    "Run",
    "build_data",
    "check_label",
    "load",
    "load_data",
    "read_run_config",
    "set_threads",
]

RUNS_DIR = "runs"
CLASSIFIER_FILES = ("classifier.safetensors", "classifier.json")  # image metrics' cached network
METRICS_JSON = "metrics.json"


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` unless ``threads`` is None (the ``threads`` key)."""
    if threads is not None:
        torch.set_num_threads(threads)


def build_data(config: RunConfig, run_dir: Path | None = None) -> RunData:
    """The data of a run that trains: images (a latent run fits its codec into ``run_dir``)
    or vectors."""
    kind = data_kind(config)
    if kind == "images":
        return build_images(config, run_dir)
    if kind == "videos":
        return build_videos(config)
    if kind == "energies":
        return build_target(config.data)
    if kind == "environments":
        return build_env(config)
    return build_vectors(config.data)


def load_data(config: RunConfig, run_dir: Path) -> RunData:
    """The data of a trained run, as sampling and evaluation need it."""
    kind = data_kind(config)
    if kind == "images":
        return load_images(run_dir, config)
    if kind == "videos":
        return load_videos(run_dir, config)
    if kind == "energies":
        return load_target(run_dir, config)
    if kind == "environments":
        return load_env(run_dir, config)
    return load_vectors(run_dir, config)


def check_label(key: str, label: int, num_classes: int) -> None:
    """``ValueError`` unless ``label`` is a class of a run with ``num_classes`` classes."""
    if not 0 <= label < max(num_classes, 1):
        fix = f"use 0..{num_classes - 1}." if num_classes else "the run is unconditional, drop it."
        raise ValueError(f"{key}={label} is not a class of this run; {fix}")


def read_run_config(run: str | os.PathLike) -> RunConfig:
    """The config of a run directory.

    Raises:
        FileNotFoundError: no such directory, or it is not a run directory.
        ConfigError: a config.yaml written without a run config (``flowforge.train.train``
            alone), or one that does not parse.
    """
    run_dir = Path(run)
    if not run_dir.exists():
        raise FileNotFoundError(
            f"run directory {run_dir} does not exist; train one with `flowforge train` or check "
            "the path (runs live under runs/<name>/ by default)."
        )
    if not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir} is a file, not a run directory; check the path.")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} has no {CONFIG_FILE}, so it is not a flowforge run directory; pass the "
            "folder written by `flowforge train` (e.g. runs/toy2d_fm)."
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if isinstance(raw, dict) and "steps" in raw and "train" not in raw:
        raise ConfigError(
            f"{path} holds only training settings (written by flowforge.train.train without "
            "run_config), so the network, data and method of the run are unknown; train with "
            "flowforge.fit(config) or `flowforge train`, which write a full run config."
        )
    return load_yaml(path)


class Run:
    """A trained run: its config, recipe, data, networks and directory.

    Attributes:
        config: the ``RunConfig``.
        recipe: the run's recipe, bound to ``config``.
        data: the run's data (``VectorData`` or ``ImageData``).
        model: the trained network (raw weights), eval mode.
        ema: the EMA weights, or None when the run keeps none.
        run_dir: the directory it was read from or trained in, or None.
        step: optimizer steps trained.
        metrics: the last evaluation (after ``fit`` or ``evaluate``), or None.
    """

    def __init__(
        self,
        config: RunConfig,
        data: RunData,
        model: nn.Module,
        ema: nn.Module | None = None,
        *,
        run_dir: str | os.PathLike | None = None,
        step: int | None = None,
        recipe: Recipe | None = None,
    ) -> None:
        self.config = config
        self.recipe = recipe_for(config) if recipe is None else recipe
        self.data = data
        self.model = model.eval()
        self.ema = None if ema is None else ema.eval()
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.step = step
        self.metrics: dict | None = None

    def __repr__(self) -> str:
        return (
            f"Run({self.config.name!r}, method={self.config.method.name!r}, step={self.step}, "
            f"run_dir={str(self.run_dir) if self.run_dir else None!r})"
        )

    def net(self, which: Literal["ema", "model"] = "ema") -> nn.Module:
        """The EMA network (falling back to the raw one when the run has none), or the raw."""
        if which not in ("ema", "model"):
            raise ValueError(f"which={which!r} is not valid; choose 'ema' or 'model'.")
        return self.ema if which == "ema" and self.ema is not None else self.model

    def _with(self, section: str, **values) -> RunConfig:
        """A validated copy of the config with ``sample.*`` or ``eval.*`` values replaced."""
        values = {k: v for k, v in values.items() if v is not None}
        current = to_dict(getattr(self.config, section))
        new = from_dict(current | values, type(getattr(self.config, section)), f"{section}.")
        return validate(dataclasses.replace(self.config, **{section: new}))

    def ema_initial_share(self) -> float | None:
        """The weight the initial (untrained) weights keep in the run's EMA, or None without
        an EMA (``flowforge.train.ema.initial_share`` at the run's step and decay)."""
        t = self.config.train
        if self.ema is None or t.ema_decay == 0 or self.step is None:
            return None
        return initial_share(t.ema_decay, t.ema_warms_up, self.step)

    def sample_config(self, **values) -> SampleConfig:
        """The run's ``sample`` section with ``values`` (n, nfe, solver ...) replaced, checked
        against the run (None keeps a setting)."""
        return self._with("sample", **values).sample

    def generate(
        self,
        n: int | None = None,
        *,
        nfe: int | None = None,
        solver: str | None = None,
        label: int | Tensor | None = None,
        guidance: float | None = None,
        guidance_method: str | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        which: Literal["ema", "model"] = "ema",
    ) -> Samples:
        """Samples with what they were conditioned on and the NFE spent (see ``sample``)."""
        config = self._with(
            "sample",
            n=n,
            nfe=nfe,
            solver=solver,
            guidance=guidance,
            guidance_method=guidance_method,
            seed=seed,
        )
        s = config.sample
        labels = None
        if label is not None:
            labels = torch.as_tensor(label, dtype=torch.long)
            for value in labels.flatten().tolist():
                check_label("label", value, self.data.num_classes)
            labels = labels.expand(s.n) if labels.dim() == 0 else labels
            if labels.shape != (s.n,):
                raise ValueError(
                    f"label has shape {tuple(labels.shape)}; pass one class or one per sample "
                    f"({s.n},)."
                )
        g = torch.Generator().manual_seed(s.seed) if generator is None else generator
        recipe = recipe_for(config)
        return recipe.generate(
            self.net(which), self.data, s, s.n, s.nfe, s.solver, g, labels, self.run_dir
        )

    def sample(
        self,
        n: int | None = None,
        *,
        nfe: int | None = None,
        solver: str | None = None,
        label: int | Tensor | None = None,
        guidance: float | None = None,
        guidance_method: str | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        which: Literal["ema", "model"] = "ema",
        uint8: bool = False,
    ) -> Tensor:
        """Draw samples in data units; options left out take the run's ``sample.*`` settings.

        Args:
            n: number of samples.
            nfe: network evaluations (a multiple of the solver's per-step count).
            solver: an ODE solver (``euler``, ``midpoint``, ``heun``, ``rk4``, ``dopri5``) or
                the recipe's own sampler (``fewstep``).
            label: one class for every sample, or (n,) classes (conditional runs).
            guidance: guidance scale (1: none); ``guidance_method`` ``cfg`` or ``raag``.
            generator: the noise generator (default: seeded with ``seed`` or ``sample.seed``).
            which: the EMA weights (default) or the raw ones.
            uint8: images as uint8 in [0, 255] instead of floats in [0, 1].

        Returns:
            (n, D) vectors with the normalisation undone, (n, C, H, W) images or (n, F, C, H,
            W) videos in [0, 1].
        """
        x = self.generate(
            n,
            nfe=nfe,
            solver=solver,
            label=label,
            guidance=guidance,
            guidance_method=guidance_method,
            generator=generator,
            seed=seed,
            which=which,
        ).x
        bad = int((~torch.isfinite(x)).sum())
        if bad:  # returned as drawn, but never silently
            warnings.warn(
                f"{bad} of the {x.numel()} sampled values are nan or inf; the weights diverge "
                "at these settings (try another solver or nfe, or which='model').",
                stacklevel=2,
            )
        if data_kind(self.config) in ("vectors", "energies", "environments"):
            return x
        x = (x.clamp(-1, 1) + 1) / 2
        return (x * 255).round().to(torch.uint8) if uint8 else x

    def field(
        self,
        guidance: float | None = None,
        guidance_method: str | None = None,
        which: Literal["ema", "model"] = "ema",
    ):
        """The (guided) velocity field ``v(x, t, cond)`` in the model's space (normalised or
        latent; ``run.data.to_data`` maps back), for a solver of your own."""
        config = self._with("sample", guidance=guidance, guidance_method=guidance_method)
        recipe = recipe_for(config)
        return recipe.velocity_field(self.net(which), self.data, config.sample, self.run_dir)

    def evaluate(
        self,
        nfes: list[int] | None = None,
        solvers: list[str] | None = None,
        n_samples: int | None = None,
        seed: int | None = None,
        *,
        which: Literal["ema", "model"] = "ema",
        write: bool = False,
        progress: bool = True,
    ) -> dict:
        """The run's metrics at its ``eval.*`` settings (arguments override them); ``write``
        puts metrics.json and quality_vs_nfe.png into the run directory."""
        config = self._with("eval", nfes=nfes, solvers=solvers, n_samples=n_samples, seed=seed)
        recipe = recipe_for(config)
        share = self.ema_initial_share() if which == "ema" and self.ema is not None else None
        if share is not None and share > EMA_AUTO_WARMUP:
            warnings.warn(
                f"the EMA weights of {self.config.name} still hold {share:.0%} of the initial "
                f"(untrained) weights after {self.step} steps (train.ema_decay="
                f"{self.config.train.ema_decay:g}), so their samples are poor: evaluate the raw "
                "weights (--which model), train longer, or set train.ema_warmup=true.",
                stacklevel=2,
            )
        metrics = recipe.evaluate(self.net(which), self.data, self.run_dir, self.step, progress)
        if share is not None:
            metrics["ema_initial_share"] = share
        self.metrics = metrics
        if write:
            self._write_metrics(config, metrics)
        return metrics

    def _write_metrics(self, config: RunConfig, metrics: dict) -> None:
        if self.run_dir is None:
            raise ValueError("this run has no directory to write into; use Run.save(dir) first.")
        try:
            with atomic_path(self.run_dir / METRICS_JSON) as tmp:
                tmp.write_text(json.dumps(metrics, indent=1))
            if "results" in metrics:
                figure = plots.plot_quality_vs_nfe(
                    metrics["results"],
                    metrics["floors"],
                    config.eval.metrics,
                    title=f"{config.name}, step {self.step}{_guidance_note(config, metrics)}",
                )
                plots.save_figure(figure, self.run_dir / "quality_vs_nfe.png")
        except OSError as e:
            raise PermissionError(
                f"cannot write into {self.run_dir} ({e.strerror or e})."
            ) from None

    def draw(self, which: Literal["ema", "model"] = "ema", write: bool = True) -> dict:
        """The run's pictures (samples, trajectories, loss curve ...) as ``{file name:
        Figure}``, written into its directory unless ``write=False`` (for a notebook)."""
        figures = self.recipe.draw(self.net(which), self.data, self.run_dir, self.step)
        steps, losses = (
            ([], []) if self.run_dir is None else _read_losses(self.run_dir / METRICS_FILE)
        )
        if steps:
            title = f"{self.config.name}: training loss"
            figures["loss.png"] = plots.plot_loss(steps, losses, title=title)
        if write:
            if self.run_dir is None:
                raise ValueError("this run has no directory to draw into; pass write=False.")
            for name, figure in figures.items():
                plots.save_figure(figure, self.run_dir / name)
        return figures

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the run into ``directory``: config, data description, the current weights,
        and the files its recipe keeps (a teacher's copy, reflow pairs, a latent codec, the
        cached feature classifier, the trainer state); ``flowforge.load`` reads it back."""
        out = Path(directory)
        if self.run_dir is not None and out.resolve() == self.run_dir.resolve():
            raise ValueError(f"{out} is the run's own directory; save into another one.")
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(self.config, out / CONFIG_FILE)
        self.data.save(out)
        save_weights(out, self.model, self.ema, step=self.step or 0)
        if self.run_dir is not None:
            keep = (*self.recipe.run_files, STATE_FILE, METRICS_FILE, *CLASSIFIER_FILES)
            for name in keep:
                if (self.run_dir / name).is_file():
                    shutil.copy2(self.run_dir / name, out / name)
        return out


def load(run: str | os.PathLike) -> Run:
    """Read a run directory (written by ``flowforge train``, ``fit`` or ``Run.save``).

    Raises:
        FileNotFoundError: no such directory, or it is not a complete run.
        ValueError: a corrupt config, data description or checkpoint.
    """
    run_dir = Path(run)
    config = read_run_config(run_dir)
    set_threads(config.threads)
    recipe = recipe_for(config)
    data = load_data(config, run_dir)
    model = load_weights(run_dir, recipe.build_model(data), which="model")
    ema = None
    if (run_dir / EMA_FILE).is_file():
        ema = load_weights(run_dir, recipe.build_model(data), which="ema")
    return Run(
        config, data, model, ema, run_dir=run_dir, step=checkpoint_step(run_dir), recipe=recipe
    )


def _guidance_note(config: RunConfig, metrics: dict) -> str:
    if metrics.get("guidance") in (None, 1.0):
        return ""
    return f", {config.sample.guidance_method} guidance {config.sample.guidance:g}"


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
