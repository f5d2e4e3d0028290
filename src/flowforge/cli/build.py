"""Name -> object tables and builders: the one place where config strings become objects.

Library code takes objects; this module turns a ``RunConfig`` into the model, the objective, the
data source and the sampling field, and draws samples with the configured solver.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from flowforge.cli.config import (
    ConfigError,
    DataConfig,
    MethodConfig,
    ModelConfig,
    SampleConfig,
    check_nfe,
)
from flowforge.data.arrays import load_array
from flowforge.data.toy2d import (
    checkerboard,
    circles,
    eight_gaussians,
    moons,
    pinwheel,
    spirals,
    swiss_roll,
)
from flowforge.guidance.cfg import ClassifierFreeGuidance
from flowforge.guidance.dropout import ConditionDropout
from flowforge.guidance.raag import RAAG
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.losses.time_samplers import (
    CosMapTime,
    LogitNormalTime,
    ModeTime,
    ShiftedTime,
    UniformTime,
    UShapedTime,
)
from flowforge.metrics.mmd import (
    BANDWIDTH_SCALES,
    energy_distance,
    median_bandwidth,
    mmd2_unbiased,
)
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.metrics.wasserstein import wasserstein2
from flowforge.models.mlp import MLPConfig, MLPField
from flowforge.paths.affine import CondOTPath, CosinePath, PolynomialPath, VPPath
from flowforge.paths.couplings import ExactOTCoupling, IndependentCoupling, SinkhornCoupling
from flowforge.solvers.adaptive import sample_dopri5
from flowforge.solvers.grids import shifted_grid, uniform_grid
from flowforge.solvers.ode import NFE_PER_STEP, sample_ode
from flowforge.typing import Field
from flowforge.utils.io import atomic_path

__all__ = [
    "DATASETS",
    "PATHS",
    "TIME_SAMPLERS",
    "COUPLINGS",
    "GUIDANCE",
    "SOLVERS",
    "DataSource",
    "build_data",
    "build_model",
    "build_objective",
    "build_field",
    "build_metrics",
    "generate",
    "DATA_INFO",
]

DATASETS: dict[str, Callable] = {
    "eight_gaussians": eight_gaussians,
    "moons": moons,
    "circles": circles,
    "swiss_roll": swiss_roll,
    "checkerboard": checkerboard,
    "pinwheel": pinwheel,
    "spirals": spirals,
}
PATHS: dict[str, Callable[[MethodConfig], object]] = {
    "cond_ot": lambda m: CondOTPath(),
    "cosine": lambda m: CosinePath(),
    "vp": lambda m: VPPath(beta_min=m.vp_beta_min, beta_max=m.vp_beta_max),
    "polynomial": lambda m: PolynomialPath(n=m.poly_n),
}
TIME_SAMPLERS: dict[str, Callable[[MethodConfig], object]] = {
    "uniform": lambda m: UniformTime(),
    "logit_normal": lambda m: LogitNormalTime(loc=m.logit_loc, scale=m.logit_scale),
    "mode": lambda m: ModeTime(scale=m.mode_scale),
    "cosmap": lambda m: CosMapTime(),
    "u_shaped": lambda m: UShapedTime(a=m.u_a),
}
COUPLINGS: dict[str, Callable[[MethodConfig], object]] = {
    "independent": lambda m: IndependentCoupling(),
    "exact_ot": lambda m: ExactOTCoupling(),
    "sinkhorn": lambda m: SinkhornCoupling(reg=m.sinkhorn_reg),
}
GUIDANCE: dict[str, Callable[[Field, SampleConfig, int], Field]] = {
    "cfg": lambda model, s, null: ClassifierFreeGuidance(model, scale=s.guidance, null_cond=null),
    "raag": lambda model, s, null: RAAG(
        model, w_max=s.guidance, alpha=s.raag_alpha, null_cond=null
    ),
}
SOLVERS: tuple[str, ...] = (*NFE_PER_STEP, "dopri5", "fewstep")

DATA_INFO = "data.json"  # dim, classes, class frequencies and normalisation of a run's data


@dataclass
class DataSource:
    """A run's training data and what sampling needs to know about it.

    Attributes:
        train: a sampler ``(n, generator) -> (x, labels | None)`` or a ``TensorDataset``, in the
            model's (normalised) space.
        dim: features per example.
        num_classes: K classes (0 for an unconditional run).
        class_probs: (K,) class frequencies, to draw labels for conditional samples.
        mean, std: (D,) normalisation (x_model = (x - mean) / std), or None.
        reference: ``(n, generator) -> x`` fresh data in data space (for metrics and plots).
    """

    train: Callable | TensorDataset | None
    dim: int
    num_classes: int
    class_probs: list[float]
    mean: list[float] | None
    std: list[float] | None
    reference: Callable[[int, torch.Generator | None], Tensor] | None = None

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

    def save(self, run_dir: str | Path) -> None:
        """Write ``data.json`` (dim, classes, normalisation) into ``run_dir``."""
        info = {
            "dim": self.dim,
            "num_classes": self.num_classes,
            "class_probs": self.class_probs,
            "mean": self.mean,
            "std": self.std,
        }
        with atomic_path(Path(run_dir, DATA_INFO)) as tmp:
            tmp.write_text(json.dumps(info, indent=1))

    @classmethod
    def load(cls, run_dir: str | Path) -> DataSource:
        """Read ``data.json`` back (no training data, no reference)."""
        path = Path(run_dir, DATA_INFO)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing; {run_dir} is not a complete flowforge run (train it first "
                "with `flowforge train`)."
            )
        try:
            info = json.loads(path.read_text())
            return cls(
                train=None,
                dim=int(info["dim"]),
                num_classes=int(info["num_classes"]),
                class_probs=[float(p) for p in info["class_probs"]],
                mean=info["mean"],
                std=info["std"],
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is corrupt ({e}); retrain the run.") from None


def _toy(config: DataConfig) -> DataSource:
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

    return DataSource(
        train=sampler,
        dim=probe_x.shape[1],
        num_classes=num_classes,
        class_probs=probs,
        mean=None,
        std=None,
        reference=reference,
    )


def _array(config: DataConfig) -> DataSource:
    array = load_array(config.path, dtype=torch.float64)
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

    return DataSource(
        train=dataset,
        dim=x.shape[1],
        num_classes=num_classes,
        class_probs=probs,
        mean=mean,
        std=std,
        reference=reference,
    )


def build_data(config: DataConfig) -> DataSource:
    """The training data of ``config``: a toy sampler or a user's array.

    Raises:
        FileNotFoundError, ValueError: an unreadable or malformed array file (row and column
        named).

    Example:
        >>> source = build_data(DataConfig(name="moons", conditional=True))
        >>> source.dim, source.num_classes, source.train(4, None)[1].shape
        (2, 2, torch.Size([4]))
    """
    return _array(config) if config.path is not None else _toy(config)


def build_model(config: ModelConfig, dim: int, num_classes: int, n_times: int = 1) -> MLPField:
    """The MLP field for ``dim`` features, ``num_classes`` classes and ``n_times`` time inputs
    per example (2 for flow maps), in float32.

    Example:
        >>> build_model(ModelConfig(hidden=16, depth=2), dim=3, num_classes=0).net[0]
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


def build_objective(config: MethodConfig, num_classes: int) -> Callable:
    """``FlowMatchingLoss`` from the method config, with condition dropout when conditional.

    Example:
        >>> loss = build_objective(MethodConfig(coupling="exact_ot", path="vp"), num_classes=0)
        >>> type(loss.coupling).__name__, type(loss.path).__name__
        ('ExactOTCoupling', 'VPPath')
        >>> type(build_objective(MethodConfig(), num_classes=8)).__name__
        'ConditionDropout'
    """
    time_sampler = TIME_SAMPLERS[config.time_sampler](config)
    if config.time_shift != 1.0:
        time_sampler = ShiftedTime(time_sampler, config.time_shift)
    coupling = COUPLINGS[config.coupling](config)
    loss = FlowMatchingLoss(
        path=PATHS[config.path](config),
        time_sampler=time_sampler,
        coupling=None if config.coupling == "independent" else coupling,
        distance=config.distance,
        huber_c=config.huber_c,
    )
    if num_classes > 0 and config.cond_dropout > 0:
        return ConditionDropout(loss, config.cond_dropout, null_value=num_classes)
    return loss


def build_field(model: Field, config: SampleConfig, num_classes: int) -> Field:
    """The field to integrate: the model, wrapped in CFG or RAAG when ``guidance != 1``.

    Example:
        >>> net = build_model(ModelConfig(hidden=8), dim=2, num_classes=3)
        >>> type(build_field(net, SampleConfig(guidance=2.0), num_classes=3)).__name__
        'ClassifierFreeGuidance'
        >>> build_field(net, SampleConfig(), num_classes=3) is net
        True
    """
    if num_classes == 0 or config.guidance == 1.0:
        return model
    return GUIDANCE[config.guidance_method](model, config, num_classes)


@torch.no_grad()
def generate(
    field: Field,
    x_0: Tensor,
    solver: str,
    nfe: int,
    cond: Tensor | None = None,
    time_shift: float = 1.0,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    return_trajectory: bool = False,
) -> tuple[Tensor, int]:
    """Integrate ``field`` from noise ``x_0`` (t = 0) to data (t = 1).

    Args:
        field: the velocity field.
        x_0: (B, D) noise.
        solver: ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"``, ``"dopri5"``, or
            ``"fewstep"`` with ``field`` a few-step method's sampler (``cli.fewstep``).
        nfe: network evaluations (fixed-step solvers; a multiple of the per-step count).
        cond: (B,) labels or None.
        time_shift: SD3 shift of the uniform grid (1: uniform).
        atol, rtol: dopri5 tolerances.
        return_trajectory: return the (S, B, D) states at the grid times (dopri5: 41 evenly
            spaced times) instead of the final one.

    Returns:
        ``(x, nfe_used)``: (B, D) samples (or the trajectory) and the evaluations spent.

    Example:
        >>> decay = lambda x, t, cond=None: -x  # x(1) = x(0) / e
        >>> x, nfe = generate(decay, torch.ones(1, 2), "rk4", 16)
        >>> nfe, round(x[0, 0].item(), 4)
        (16, 0.3679)
    """
    if solver == "fewstep":  # a few-step method's own sampler (cli.fewstep.FewStepSampler)
        return field.sample(x_0, nfe, cond)
    if solver == "dopri5":
        grid = torch.linspace(0, 1, 41 if return_trajectory else 2, device=x_0.device)
        x, *traj, used = sample_dopri5(
            field,
            x_0,
            time_grid=grid,
            cond=cond,
            atol=atol,
            rtol=rtol,
            return_trajectory=return_trajectory,
            return_nfe=True,
        )
        return (traj[0] if return_trajectory else x), int(used)
    if solver not in NFE_PER_STEP:
        raise ConfigError(f"solver={solver!r} is not valid; choose one of {list(SOLVERS)}.")
    steps = check_nfe("nfe", solver, nfe)
    grid = uniform_grid(steps) if time_shift == 1.0 else shifted_grid(steps, time_shift)
    grid = grid.to(device=x_0.device)
    out = sample_ode(
        field, x_0, grid, method=solver, cond=cond, return_trajectory=return_trajectory
    )
    return (out[1] if return_trajectory else out), nfe


def build_metrics(
    names: list[str], seed: int, reference: Tensor
) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """The metric functions ``metric(x, y) -> scalar`` named in ``names``, choices fixed once.

    Sliced W2 uses the same directions and MMD the same kernel widths (the median heuristic on
    ``reference``) for every row and for the floor, so rows differ only through the samples.

    Args:
        names: metric names out of ``w2``, ``sliced_w2``, ``mmd``, ``energy`` (eval.metrics).
        seed: seed of the sliced-W2 projection directions.
        reference: (N, D) data setting the MMD kernel widths.

    Returns:
        ``{name: metric}`` in the order of ``names``.

    Example:
        >>> fns = build_metrics(["energy", "sliced_w2"], seed=0, reference=torch.randn(50, 2))
        >>> list(fns), float(fns["energy"](torch.zeros(4, 2), torch.zeros(4, 2)))
        (['energy', 'sliced_w2'], 0.0)
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
