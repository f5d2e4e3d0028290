"""The recipe interface: everything the command line and ``flowforge.load`` know of a method.

A recipe turns a run's config into the pieces of a run, with the data as an object
(``RunData``: vectors or images, pixels or latents) so that method and modality do not
multiply into branches:

    validate()                         its own keys; the shared rules are in ``validation``
    build_model(data)                  the network trained (float32, initialised from the RNG)
    training(model, data, context)     the objective and its training data (``Training``)
    sampler(model, data, sample)       a function drawing samples with a solver at an NFE
    nfe_budgets / check_nfe            which NFEs each of its solvers spends exactly
    generate / evaluate / draw         samples with their conditions, metrics and pictures;
                                       the defaults ask the data (``RunData``)

Subclasses are concrete and final (STYLE.md section 3): shared behaviour is in the defaults
here or in plain helper functions, never in a concrete base recipe.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from flowforge.guidance.cfg import ClassifierFreeGuidance
from flowforge.guidance.raag import RAAG
from flowforge.protocols import Field
from flowforge.recipes.config import (
    ODE_SOLVERS,
    ConfigError,
    MethodConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
)
from flowforge.solvers.adaptive import sample_dopri5
from flowforge.solvers.grids import shifted_grid, uniform_grid
from flowforge.solvers.ode import NFE_PER_STEP, sample_ode
from flowforge.train.data import BatchSource

if TYPE_CHECKING:
    from flowforge.train.loop import Objective

__all__ = [
    "Recipe",
    "RunData",
    "Training",
    "TrainContext",
    "Sampler",
    "Samples",
    "describe_sampling",
    "GUIDANCE",
    "guided_field",
    "ode_sample",
    "ode_steps",
    "ode_sampler",
    "own_sampler",
]

# sample(x_0, solver, nfe, cond=None, trajectory=False) -> (x, nfe_used)
Sampler = Callable[..., tuple[Tensor, int]]

GUIDANCE: dict[str, Callable[[Field, SampleConfig, int], Field]] = {
    "cfg": lambda model, s, null: ClassifierFreeGuidance(model, scale=s.guidance, null_cond=null),
    "raag": lambda model, s, null: RAAG(
        model, w_max=s.guidance, alpha=s.raag_alpha, null_cond=null
    ),
}


def guided_field(model: Field, sample: SampleConfig, num_classes: int) -> Field:
    """The field to integrate: the model, wrapped in CFG or RAAG when ``guidance != 1``.

    Example:
        >>> from flowforge.models.mlp import MLPConfig, MLPField
        >>> net = MLPField(MLPConfig(dim=2, hidden=8, num_classes=3))
        >>> type(guided_field(net, SampleConfig(guidance=2.0), num_classes=3)).__name__
        'ClassifierFreeGuidance'
        >>> guided_field(net, SampleConfig(), num_classes=3) is net
        True
    """
    if num_classes == 0 or sample.guidance == 1.0:
        return model
    return GUIDANCE[sample.guidance_method](model, sample, num_classes)


def describe_sampling(
    sample: SampleConfig, nfe: int, num_classes: int, labels: str | None = None
) -> str:
    """What a picture's samples are: solver, NFE, guidance and labels, for its title.

    Example:
        >>> describe_sampling(SampleConfig(guidance=2.0), 16, num_classes=8, labels="label 3")
        'heun NFE 16, cfg guidance 2, label 3'
    """
    parts = [f"{sample.solver} NFE {nfe}"]
    if num_classes and sample.guidance != 1.0:
        parts.append(f"{sample.guidance_method} guidance {sample.guidance:g}")
    if num_classes:
        parts.append(labels or "labels drawn with the class frequencies")
    return ", ".join(parts)


def ode_steps(key: str, solver: str, nfe: int) -> int:
    """Steps of the fixed-step ``solver`` for ``nfe`` evaluations; ``ConfigError`` if they do
    not divide.

    Example:
        >>> ode_steps("sample.nfe", "heun", 8)
        4
    """
    per_step = NFE_PER_STEP[solver]
    if nfe < per_step or nfe % per_step:
        valid = [per_step * k for k in range(1, 6)]
        raise ConfigError(
            f"{key}={nfe!r} is not a multiple of the {per_step} evaluations per step of solver "
            f"{solver!r}; use one of {valid}..."
        )
    return nfe // per_step


@torch.no_grad()
def ode_sample(
    field: Field,
    x_0: Tensor,
    solver: str,
    nfe: int,
    cond: Tensor | None = None,
    trajectory: bool = False,
    *,
    sample: SampleConfig | None = None,
) -> tuple[Tensor, int]:
    """Integrate ``field`` from noise ``x_0`` (t = 0) to data (t = 1).

    Args:
        field: the velocity field.
        x_0: (B, ...) noise.
        solver: ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"`` or ``"dopri5"``.
        nfe: network evaluations (fixed-step solvers; a multiple of the per-step count).
        cond: (B,) labels, (B, C, H, W) condition channels, or None.
        trajectory: return the (S, B, ...) states at the grid times (dopri5: 41 evenly spaced
            times) instead of the final one.
        sample: the time shift of the grid and dopri5's tolerances (default ``SampleConfig()``).

    Returns:
        ``(x, nfe_used)``: the samples (or the trajectory) and the evaluations spent.

    Example:
        >>> decay = lambda x, t, cond=None: -x  # x(1) = x(0) / e
        >>> x, nfe = ode_sample(decay, torch.ones(1, 2), "rk4", 16)
        >>> nfe, round(x[0, 0].item(), 4)
        (16, 0.3679)
    """
    s = SampleConfig() if sample is None else sample
    if solver == "dopri5":
        grid = torch.linspace(0, 1, 41 if trajectory else 2, device=x_0.device)
        x, *traj, used = sample_dopri5(
            field,
            x_0,
            time_grid=grid,
            cond=cond,
            atol=s.atol,
            rtol=s.rtol,
            return_trajectory=trajectory,
            return_nfe=True,
        )
        return (traj[0] if trajectory else x), int(used)
    if solver not in NFE_PER_STEP:
        raise ConfigError(f"solver={solver!r} is not valid; choose one of {list(ODE_SOLVERS)}.")
    steps = ode_steps("nfe", solver, nfe)
    grid = uniform_grid(steps) if s.time_shift == 1.0 else shifted_grid(steps, s.time_shift)
    grid = grid.to(device=x_0.device)
    out = sample_ode(field, x_0, grid, method=solver, cond=cond, return_trajectory=trajectory)
    return (out[1] if trajectory else out), nfe


def ode_sampler(model: Field, num_classes: int, sample: SampleConfig) -> Sampler:
    """The ODE solvers on ``model``, guided as ``sample`` says (the default recipe sampler)."""
    field = guided_field(model, sample, num_classes)

    def sampler(x_0, solver, nfe, cond=None, trajectory=False):
        return ode_sample(field, x_0, solver, nfe, cond, trajectory, sample=sample)

    return sampler


def own_sampler(
    own: Callable[[Tensor, int, Tensor | None], tuple[Tensor, int]], ode: Sampler | None = None
) -> Sampler:
    """A recipe's sampler from its own ``own(x_0, nfe, cond) -> (x, nfe_used)`` (``fewstep``),
    with the ODE solvers of ``ode`` too when the network is a velocity field; no gradients."""

    @torch.no_grad()
    def sampler(x_0, solver, nfe, cond=None, trajectory=False):
        if ode is not None and solver in ODE_SOLVERS:
            return ode(x_0, solver, nfe, cond, trajectory)
        return own(x_0, nfe, cond)

    return sampler


@dataclass
class Samples:
    """Samples drawn by ``Recipe.generate``, in data space, on the CPU.

    Attributes:
        x: (n, ...) the samples (images in [-1, 1]; inpainting: known pixels pasted back).
        nfe: network evaluations spent per sample.
        labels: (n,) the labels they were conditioned on, or None.
        masks: (n, H, W) the masks they were generated from (mask-to-image, SymmFlow), or None.
        raw: inpainting: the samples before pasting; else None.
        known: inpainting: (n, 1, H, W) known-pixel masks; else None.
        reference: inpainting: the images being completed; else None.
        unconditional: inpainting: samples with nothing known, same noise; else None.
    """

    x: Tensor
    nfe: int
    labels: Tensor | None = None
    masks: Tensor | None = None
    raw: Tensor | None = None
    known: Tensor | None = None
    reference: Tensor | None = None
    unconditional: Tensor | None = None


@dataclass
class TrainContext:
    """Where a run trains: its directory (None: no files), whether it resumes, and whether
    this process is rank 0 (the one that writes)."""

    run_dir: Path | None = None
    resumed: bool = False
    main: bool = True


@dataclass
class Training:
    """What ``train()`` gets from a recipe: the objective and the data it draws batches from."""

    objective: Objective
    data: BatchSource


class RunData(abc.ABC):
    """A run's data as the recipes see it: vectors (toys, tables) or images (pixels, latents).

    Attributes:
        shape: one example in the model's space (features, or (C, H, W) of pixels/latents).
        num_classes: K classes the flow is conditioned on (0: none).
        train: the training set in the model's space (a sampler or a ``TensorDataset``).
    """

    shape: tuple[int, ...]
    num_classes: int
    train: BatchSource | None

    @abc.abstractmethod
    def labels(self, n: int, generator: torch.Generator | None) -> Tensor | None:
        """(n,) labels drawn with the training frequencies, or None if unconditional."""

    @abc.abstractmethod
    def to_data(self, x: Tensor) -> Tensor:
        """Model space -> data space (normalisation undone; images decoded, in [-1, 1])."""

    @abc.abstractmethod
    def network(self, model: ModelConfig, n_times: int = 1, channels: int | None = None):
        """The field network of ``model`` for this data (MLP, UNet or DiT), in float32.

        ``n_times`` time inputs per example (2 for flow maps); ``channels`` overrides the state
        channels of an image network (a joint image and mask state)."""

    @abc.abstractmethod
    def generate(
        self,
        sampler: Sampler,
        n: int,
        nfe: int,
        solver: str,
        generator: torch.Generator,
        labels: Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> Samples:
        """``n`` samples of ``sampler`` from fresh noise on ``device``, conditioned as the run
        was trained (labels drawn with the training frequencies unless given; image conditions
        from the held-out split), mapped to data space on the CPU."""

    @abc.abstractmethod
    def save(self, run_dir: Path) -> None:
        """Write what sampling needs to know about the data into ``run_dir`` (data.json)."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A few words for the training banner ("1438 images on pixels")."""

    def progress_hook(self, recipe: Recipe, run_dir: Path | None):
        """The periodic check of ``train.eval_every`` (``hook(step, net) -> dict``), or None."""
        return None

    @abc.abstractmethod
    def evaluate(self, recipe: Recipe, model: nn.Module, run_dir, step, progress) -> dict:
        """Sample quality of ``recipe``'s samples at the run's eval settings."""

    @abc.abstractmethod
    def pictures(self, recipe: Recipe, model: nn.Module, run_dir: Path, step) -> dict:
        """The run's pictures at its sampling settings: ``{file name: Figure}``."""


class Recipe(abc.ABC):
    """One method's command-line knowledge, bound to a run's config.

    Class attributes say what the recipe trains on and how it samples, so configs are checked
    before anything is built:

    Attributes:
        name: the ``method.name`` that picks this recipe (its row in ``RECIPES``).
        Config: the dataclass of its ``method:`` section (a ``MethodConfig``).
        data_kinds: ``"vectors"`` and/or ``"images"``.
        channels: the ``data.channels`` conditions it trains with on images.
        labels: whether it trains class-conditional runs (``data.conditional``).
        latent: whether it trains on an autoencoder run's latents (``data.autoencoder``).
        autoencoder_arch: whether its network is ``model.arch=autoencoder``.
        own_network: its ``method:`` section sizes its network (a normalizing flow), so
            ``model.arch`` and the architecture checks do not apply.
        samples: whether its runs draw samples (an autoencoder's do not).
        solvers: the ``sample.solver`` names it accepts; ``dopri5`` among them means its
            network is a velocity field (trajectories, ``Run.field``).
        guided_solvers: those that apply guidance (CFG/RAAG).
        own_cost: its samplers spend what they need (a normalizing flow's decoders): one
            evaluation row per solver, and ``sample.nfe`` is not read.
        metrics: image metrics only its runs report (``miou`` for SymmFlow).
        run_files: files it keeps in a run directory besides the checkpoint (a teacher's
            copy, reflow pairs), copied by ``Run.save``.
    """

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    data_kinds: ClassVar[tuple[str, ...]] = ("vectors", "images")
    channels: ClassVar[tuple[str, ...]] = ("none",)
    labels: ClassVar[bool] = True
    latent: ClassVar[bool] = False
    autoencoder_arch: ClassVar[bool] = False
    own_network: ClassVar[bool] = False
    samples: ClassVar[bool] = True
    solvers: ClassVar[tuple[str, ...]] = ODE_SOLVERS
    guided_solvers: ClassVar[tuple[str, ...]] = ODE_SOLVERS
    own_cost: ClassVar[bool] = False
    metrics: ClassVar[tuple[str, ...]] = ()
    run_files: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: RunConfig) -> None:
        if not isinstance(config.method, self.Config):
            raise TypeError(
                f"{type(self).__name__} needs a {self.Config.__name__} method section, got "
                f"{type(config.method).__name__}; build recipes with recipe_for(config)."
            )
        self.config = config
        self.method: Any = config.method

    # ---- configuration -----------------------------------------------------------------

    def validate(self) -> None:
        """Raise ``ConfigError`` for settings of the ``method:`` section that cannot work."""
        return None  # a section without cross-field rules

    def prepare(self) -> None:
        """Make the section's paths absolute before a run starts (teachers, base runs)."""
        return None  # a section without paths

    def nfe_budgets(self, solver: str, nfes: list[int]) -> list[int]:
        """The budgets out of ``nfes`` that ``solver`` spends exactly (the eval rows); dopri5,
        being adaptive, gets one row (NFE 0 before it runs), as does a recipe's own-cost
        sampler."""
        if solver == "dopri5" or self.own_cost:
            return [0]
        if solver in NFE_PER_STEP:
            return [n for n in nfes if n % NFE_PER_STEP[solver] == 0]
        return list(nfes)

    def check_nfe(self, key: str, solver: str, nfe: int) -> None:
        """Raise ``ConfigError`` unless ``solver`` can spend ``nfe`` evaluations."""
        if self.own_cost:
            return
        if solver in NFE_PER_STEP:
            ode_steps(key, solver, nfe)
        elif solver != "dopri5" and nfe < 1:
            raise ConfigError(f"{key}={nfe!r} must be >= 1 (network evaluations).")

    # ---- training ----------------------------------------------------------------------

    @abc.abstractmethod
    def build_model(self, data: RunData) -> nn.Module:
        """The network this recipe trains for ``data`` (float32, from the global RNG)."""

    @abc.abstractmethod
    def training(self, model: nn.Module, data: RunData, context: TrainContext) -> Training:
        """The objective and training data of a run (teachers, pairs, rollouts ...)."""

    # ---- sampling ----------------------------------------------------------------------

    def sampler(
        self, model: nn.Module, data: RunData, sample: SampleConfig, run_dir: Path | None = None
    ) -> Sampler:
        """``sample(x_0, solver, nfe, cond=None, trajectory=False) -> (x, nfe_used)`` in the
        model's space; the default integrates the (guided) network with an ODE solver."""
        return ode_sampler(model, data.num_classes, sample)

    def velocity_field(
        self, model: nn.Module, data: RunData, sample: SampleConfig, run_dir: Path | None = None
    ) -> Field:
        """The guided velocity field of a trained network (for a user's own solver)."""
        if "dopri5" not in self.solvers:
            raise ValueError(
                f"a {self.name} network is not a velocity field; sample it with "
                f"solver={self.solvers[0]!r} instead."
            )
        return guided_field(model, sample, data.num_classes)

    def generate(
        self,
        model: nn.Module,
        data: RunData,
        sample: SampleConfig,
        n: int,
        nfe: int,
        solver: str,
        generator: torch.Generator,
        labels: Tensor | None = None,
        run_dir: Path | None = None,
    ) -> Samples:
        """``n`` samples in data space with their conditions."""
        sampler = self.sampler(model, data, sample, run_dir)
        device = next(model.parameters()).device
        return data.generate(sampler, n, nfe, solver, generator, labels, device)

    def extra_metrics(self, model, data, drawn, solver: str, nfe: int, generator) -> dict:
        """Metrics of one eval row beyond the data's own (``Recipe.metrics``)."""
        return {}

    def progress_hook(self, data: RunData, run_dir: Path | None):
        """The check every ``train.eval_every`` steps, ``hook(step, net) -> dict`` written to
        metrics.jsonl, or None; by default the data's (fine-tuning recipes add the reward and
        the divergence from their base)."""
        return data.progress_hook(self, run_dir)

    # ---- evaluation and pictures -------------------------------------------------------

    def evaluate(
        self, model: nn.Module, data: RunData, run_dir: Path | None, step, progress: bool = True
    ) -> dict:
        """Metrics of the trained ``model`` at the run's eval settings."""
        return data.evaluate(self, model, run_dir, step, progress)

    def draw(self, model: nn.Module, data: RunData, run_dir: Path | None, step) -> dict:
        """The run's pictures, ``{file name: Figure}`` (``Run.draw`` writes them)."""
        return data.pictures(self, model, run_dir, step)
