"""Vector runs: 2-D toys and a user's tables, as the data of a recipe.

``VectorData`` holds a run's training stream (a toy sampler or the rows of a CSV/NPY file,
standardised per column), what sampling needs to know (dimension, classes, normalisation; saved
as ``data.json``) and fresh reference data for the metrics; its network is an MLP field. The
metrics, pictures and the periodic check during training are in
``flowforge.recipes.vector_eval``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from flowforge.data.arrays import load_array, read_header
from flowforge.data.toy2d import (
    checkerboard,
    circles,
    eight_gaussians,
    moons,
    pinwheel,
    spirals,
    swiss_roll,
)
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.recipes import vector_eval
from flowforge.recipes.base import Recipe, RunData, Sampler, Samples
from flowforge.recipes.config import DataConfig, ModelConfig, RunConfig
from flowforge.utils.io import atomic_path

__all__ = ["DATASETS", "DATA_INFO", "VectorData", "build_vectors", "load_vectors"]

DATASETS: dict[str, Callable] = {
    "eight_gaussians": eight_gaussians,
    "moons": moons,
    "circles": circles,
    "swiss_roll": swiss_roll,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
    "spirals": spirals,
}
DATA_INFO = "data.json"  # dim, classes, class frequencies and normalisation of a run's data


@dataclass
class VectorData(RunData):
    """A vector run's training data and what sampling needs to know about it.

    Attributes:
        train: a sampler ``(n, generator) -> (x, labels | None)`` or a ``TensorDataset``, in the
            model's (normalised) space; None for a loaded run.
        dim: features per example.
        num_classes: K classes (0 for an unconditional run).
        class_probs: (K,) class frequencies, to draw labels for conditional samples.
        mean, std: (D,) normalisation (x_model = (x - mean) / std), or None.
        reference: ``(n, generator) -> x`` fresh data in data space (for metrics and plots);
            a loaded run builds it from ``data_config`` when first needed.
        data_config: the run's data settings (a loaded run's reference data come from them).
        columns: the feature names (a CSV header), for the pictures; None for x0, x1 ...
    """

    train: Callable | TensorDataset | None
    dim: int
    num_classes: int
    class_probs: list[float]
    mean: list[float] | None
    std: list[float] | None
    reference: Callable[[int, torch.Generator | None], Tensor] | None = None
    data_config: DataConfig | None = None
    columns: list[str] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one example in the model's space: ``(dim,)``."""
        return (self.dim,)

    def to_data(self, x: Tensor) -> Tensor:
        """Undo the normalisation: model space -> data space."""
        if self.mean is None:
            return x
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device)
        return x * std + mean

    def labels(self, n: int, generator: torch.Generator | None) -> Tensor | None:
        """(n,) class labels drawn with the data's class frequencies, or None if unconditional."""
        if self.num_classes == 0:
            return None
        probs = torch.tensor(self.class_probs, dtype=torch.float64)
        return torch.multinomial(probs, n, replacement=True, generator=generator)

    def fresh(self, n: int, generator: torch.Generator | None) -> Tensor:
        """(n, D) fresh data in data space (a table's rows drawn with replacement)."""
        if self.reference is None:
            assert self.data_config is not None, "a VectorData needs reference data or a config"
            self.reference = build_vectors(self.data_config).reference
        return self.reference(n, generator)

    def network(self, model: ModelConfig, n_times: int = 1, channels: int | None = None):
        """The MLP field of ``model`` for these vectors (``channels`` does not apply)."""
        assert channels is None, "vector networks have no channels"
        return build_mlp(model, self.dim, self.num_classes, n_times)

    @torch.no_grad()
    def generate(
        self, sampler: Sampler, n, nfe, solver, generator, labels=None, device="cpu"
    ) -> Samples:
        """``n`` samples from fresh noise (then labels) of ``generator``, in data units."""
        x_0 = torch.randn(n, self.dim, generator=generator, dtype=torch.float32).to(device)
        drawn = self.labels(n, generator)
        labels = drawn if labels is None else labels
        x, used = sampler(x_0, solver, nfe, None if labels is None else labels.to(device))
        return Samples(x=self.to_data(x).float().cpu(), nfe=used, labels=labels)

    def describe(self) -> str:
        """The training banner's words on the data."""
        return f"{self.dim} features"

    def save(self, run_dir: str | Path) -> None:
        """Write ``data.json`` (dim, classes, normalisation) into ``run_dir``."""
        info = {
            "dim": self.dim,
            "num_classes": self.num_classes,
            "class_probs": self.class_probs,
            "mean": self.mean,
            "std": self.std,
            "columns": self.columns,
        }
        with atomic_path(Path(run_dir, DATA_INFO)) as tmp:
            tmp.write_text(json.dumps(info, indent=1))

    def evaluate(self, recipe: Recipe, model: nn.Module, run_dir, step, progress=True) -> dict:
        """W2, sliced W2, MMD and energy distance per solver and NFE, beside their floors."""
        return vector_eval.evaluate(recipe, model, self, run_dir, step=step, progress=progress)

    def pictures(self, recipe: Recipe, model: nn.Module, run_dir: Path, step) -> list[Path]:
        """samples.png (beside fresh data), trajectories.png (velocity fields) and loss.png."""
        return vector_eval.pictures(recipe, model, self, run_dir, step)

    def progress_hook(self, recipe: Recipe, run_dir: Path | None):
        """The periodic check of ``train.eval_every``: sliced W2 at the sampling settings."""
        return vector_eval.progress_hook(recipe, self, run_dir)


def load_vectors(run_dir: str | Path, config: RunConfig) -> VectorData:
    """Read a vector run's ``data.json`` back (no training data; the reference data are built
    from ``config`` when a metric first needs them)."""
    path = Path(run_dir, DATA_INFO)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; {run_dir} is not a complete flowforge run (train it first "
            "with `flowforge train`)."
        )
    try:
        info = json.loads(path.read_text())
        return VectorData(
            train=None,
            dim=int(info["dim"]),
            num_classes=int(info["num_classes"]),
            class_probs=[float(p) for p in info["class_probs"]],
            mean=info["mean"],
            std=info["std"],
            data_config=config.data,
            columns=info.get("columns"),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is corrupt ({e}); retrain the run.") from None


def build_mlp(config: ModelConfig, dim: int, num_classes: int, n_times: int = 1) -> nn.Module:
    """The MLP field for ``dim`` features, ``num_classes`` classes and ``n_times`` time inputs
    per example (2 for flow maps), in float32.

    Example:
        >>> build_mlp(ModelConfig(hidden=16, depth=2), dim=3, num_classes=0).net[0]
        Linear(in_features=67, out_features=16, bias=True)
    """
    mlp = MLPConfig(
        dim=dim,
        hidden=config.hidden,
        depth=config.depth,
        time_embed_dim=config.time_embed_dim,
        num_classes=num_classes,
        class_embed_dim=config.class_embed_dim,
        activation=config.activation,
        n_times=n_times,
    )
    return MLPField(mlp).float()


def _toy(config: DataConfig) -> VectorData:
    fn = DATASETS[config.name]
    probe_x, probe_y = fn(8192, torch.Generator().manual_seed(0))
    num_classes = int(probe_y.max()) + 1 if config.conditional else 0
    probs = (
        (torch.bincount(probe_y.long(), minlength=num_classes).double() / len(probe_y)).tolist()
        if config.conditional
        else []
    )
    conditional = config.conditional

    def sampler(n: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        x, y = fn(n, generator)
        return x.float(), (y.long() if conditional else None)

    def reference(n: int, generator: torch.Generator | None) -> Tensor:
        return fn(n, generator)[0].float()

    return VectorData(
        train=sampler,
        dim=probe_x.shape[1],
        num_classes=num_classes,
        class_probs=probs,
        mean=None,
        std=None,
        reference=reference,
    )


def _array(config: DataConfig) -> VectorData:
    array = load_array(config.path, dtype=torch.float64)
    header = read_header(config.path)
    columns = header if header is not None and len(header) == array.shape[-1] else None
    if array.dim() == 1:
        array = array[:, None]
    if array.dim() != 2 or array.shape[0] < 2:
        raise ValueError(
            f"data.path={config.path!r} holds an array of shape {tuple(array.shape)}; expected a "
            "table with one example per row and at least two rows."
        )
    labels = None
    if config.label_column is not None:
        col = config.label_column
        if not -array.shape[1] <= col < array.shape[1]:
            raise ValueError(
                f"data.label_column={col} is out of range for {config.path!r} with "
                f"{array.shape[1]} columns; use 0..{array.shape[1] - 1}."
            )
        col = col % array.shape[1]
        raw = array[:, col]
        bad = (raw != raw.round()) | (raw < 0)
        if bad.any():
            row = int(bad.nonzero()[0])
            raise ValueError(
                f"{config.path}: row {row + 1}, column {col + 1} holds label {raw[row].item()!r}; "
                "data.label_column must hold non-negative integer class labels."
            )
        labels = raw.long()
        array = torch.cat([array[:, :col], array[:, col + 1 :]], dim=1)
        columns = None if columns is None else columns[:col] + columns[col + 1 :]
        if array.shape[1] == 0:
            raise ValueError(f"{config.path} has no feature columns besides the label column.")
    mean = std = None
    x = array
    if config.normalize:
        mean_t, std_t = array.mean(0), array.std(0)
        std_t = torch.where(std_t > 0, std_t, torch.ones_like(std_t))  # constant columns
        x = (array - mean_t) / std_t
        mean, std = mean_t.tolist(), std_t.tolist()
    num_classes, probs = 0, []
    if config.conditional:
        num_classes = int(labels.max()) + 1
        probs = (torch.bincount(labels, minlength=num_classes).double() / len(labels)).tolist()
    dataset = TensorDataset(x.float(), labels) if config.conditional else TensorDataset(x.float())
    data_space = array.float()

    def reference(n: int, generator: torch.Generator | None) -> Tensor:
        # A finite table has no fresh data: rows drawn with replacement stand in for it.
        idx = torch.randint(len(data_space), (n,), generator=generator)
        return data_space[idx]

    return VectorData(
        train=dataset,
        dim=x.shape[1],
        num_classes=num_classes,
        class_probs=probs,
        mean=mean,
        std=std,
        reference=reference,
        columns=columns,
    )


def build_vectors(config: DataConfig) -> VectorData:
    """The training data of ``config``: a toy sampler or a user's array.

    Raises:
        FileNotFoundError, ValueError: an unreadable or malformed array file (row and column
        named).

    Example:
        >>> source = build_vectors(DataConfig(name="moons", conditional=True))
        >>> source.dim, source.num_classes, source.train(4, None)[1].shape
        (2, 2, torch.Size([4]))
    """
    return _array(config) if config.path is not None else _toy(config)
