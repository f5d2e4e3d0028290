"""Boltzmann generators (``method.name: boltzmann``): a flow as the proposal of a target energy.

The flow (TARFlow, or zuko's NSF/MAF) is trained one of three ways (``method.train_by``):

    ml             maximum likelihood on the target's samples (exact, MALA or MD)
    reverse_kl     KL(q || p) on the energy alone, with reparameterised samples
    self_improve   fine-tune a trained run (``method.init``) on its own SNIS-reweighted samples
                   with the teacher regulariser (card 19), the buffer redrawn every
                   ``method.refresh_every`` steps

and sampled three ways (``sample.solver``): ``inverse`` (the flow alone), ``snis``
(self-normalised importance resampling) and ``smc`` (annealed SMC with MALA moves). Evaluation
reports ESS / n, log Z and its error, and energy and sliced W2 per sampler.

References:
    Amortized Sampling with Transferable Normalizing Flows (Tan et al., 2025), arXiv:2508.18175.
    Boltzmann Generators (Noé et al., 2019), arXiv:1812.01729.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from flowforge.nf import FlowNLLLoss, TransformerFlow, TransformerFlowConfig
from flowforge.nf.boltzmann import (
    ReverseKL,
    SelfImprovementLoss,
    StandardizedFlow,
    importance_weights,
    multinomial_resample,
    smc,
)
from flowforge.nf.zuko import zuko_flow
from flowforge.recipes.base import Recipe, RunData, TrainContext, Training
from flowforge.recipes.config import ConfigError, MethodConfig, SampleConfig, meta
from flowforge.recipes.config_io import load_yaml
from flowforge.recipes.energies import TARGETS, TargetData
from flowforge.train.checkpoint import CONFIG_FILE, load_weights
from flowforge.utils.io import atomic_path

__all__ = ["BoltzmannConfig", "BoltzmannRecipe"]

TEACHER_FILE = "teacher.safetensors"
_ARCH_KEYS = ("flow", "patch_size", "width", "layers_per_block", "head_dim", "transforms",
              "hidden", "bins")  # fmt: skip


@dataclass
class BoltzmannConfig(MethodConfig):
    """A flow proposal for a Boltzmann target: its network, objective and samplers."""

    name: str = field(default="boltzmann", metadata=meta("the recipe: a Boltzmann generator"))
    flow: Literal["tarflow", "nsf", "maf"] = field(
        default="tarflow", metadata=meta("tarflow (flowforge's), or zuko's nsf / maf")
    )
    train_by: Literal["ml", "reverse_kl", "self_improve"] = field(
        default="ml",
        metadata=meta("ml on target samples, reverse_kl on the energy, or self_improve"),
    )
    patch_size: int = field(default=1, metadata=meta("tarflow: coordinates per token"))
    width: int = field(default=64, metadata=meta("tarflow: transformer width"))
    layers_per_block: list[int] = field(
        default_factory=lambda: [1] * 8, metadata=meta("tarflow: layers of each block")
    )
    head_dim: int = field(default=32, metadata=meta("tarflow: channels per attention head"))
    transforms: int = field(default=5, metadata=meta("nsf/maf: autoregressive transforms"))
    hidden: list[int] = field(
        default_factory=lambda: [128, 128], metadata=meta("nsf/maf: hidden widths")
    )
    bins: int = field(default=8, metadata=meta("nsf: spline bins"))
    init: str | None = field(
        default=None,
        metadata=meta("self_improve: a trained boltzmann run (start and frozen teacher)"),
    )
    buffer: int = field(default=20000, metadata=meta("self_improve: proposals per refresh"))
    refresh_every: int = field(
        default=250, metadata=meta("self_improve: training steps between buffer refreshes")
    )
    teacher_weight: float = field(
        default=0.5, metadata=meta("self_improve: lambda_T of (log q - log q_teacher)^2")
    )
    quantile: float = field(
        default=0.002, metadata=meta("SNIS: top fraction of log-weights dropped")
    )
    energy_cutoff: float | None = field(
        default=None, metadata=meta("SNIS: drop samples with energies above it (null: none)")
    )
    smc_steps: int = field(default=100, metadata=meta("smc: annealing steps"))
    smc_step_size: float = field(default=0.01, metadata=meta("smc: initial Langevin step"))
    smc_mcmc: Literal["mala", "ula"] = field(default="mala", metadata=meta("smc: moves"))
    smc_substeps: int = field(default=1, metadata=meta("smc: Langevin moves per step"))
    smc_ess_threshold: float = field(
        default=0.5, metadata=meta("smc: resample when ESS / n falls below it")
    )


class BoltzmannRecipe(Recipe):
    """A flow trained as the proposal of a target energy and reweighted onto it."""

    name = "boltzmann"
    Config = BoltzmannConfig
    data_kinds = ("energies",)
    labels = False
    own_network = True
    solvers = ("snis", "smc", "inverse")
    guided_solvers = ()
    own_cost = True
    run_files = (TEACHER_FILE,)

    def validate(self) -> None:
        """Sizes positive, fractions in range, an init run for self_improve."""
        m = self.method
        keys = ["patch_size", "width", "head_dim", "transforms", "bins", "buffer",
                "refresh_every", "smc_steps", "smc_substeps"]  # fmt: skip
        for key in keys:
            if getattr(m, key) < 1:
                raise ConfigError(f"method.{key}={getattr(m, key)!r} must be >= 1.")
        if m.width % m.head_dim:
            raise ConfigError(
                f"method.width={m.width} is not a multiple of method.head_dim={m.head_dim}."
            )
        for key in ("layers_per_block", "hidden"):
            if not getattr(m, key) or min(getattr(m, key)) < 1:
                raise ConfigError(f"method.{key}={getattr(m, key)!r} must list sizes >= 1.")
        if not 0 <= m.quantile < 1:
            raise ConfigError(f"method.quantile={m.quantile!r} must be in [0, 1).")
        if not 0 < m.smc_ess_threshold <= 1:
            raise ConfigError(
                f"method.smc_ess_threshold={m.smc_ess_threshold!r} must be in (0, 1]."
            )
        if not m.smc_step_size > 0 or not m.teacher_weight >= 0:
            raise ConfigError(
                f"method.smc_step_size={m.smc_step_size!r} must be > 0 and "
                f"method.teacher_weight={m.teacher_weight!r} >= 0."
            )
        name = self.config.data.name
        dim = TARGETS[name].dim if name in TARGETS else None
        if m.flow == "tarflow" and dim is not None and dim % m.patch_size:
            raise ConfigError(
                f"method.patch_size={m.patch_size} does not divide the target's {dim} "
                "coordinates; choose a divisor."
            )
        if m.train_by == "self_improve" and m.init is None:
            raise ConfigError(
                "method.train_by=self_improve fine-tunes a trained run: set method.init=RUN_DIR "
                "(e.g. one trained with `flowforge train gmm40_boltzmann`)."
            )

    def prepare(self) -> None:
        """``method.init`` made absolute."""
        if self.method.init is not None:
            self.method.init = str(Path(self.method.init).resolve())

    def build_model(self, data: RunData) -> nn.Module:
        """The flow on standardised coordinates of the target."""
        assert isinstance(data, TargetData)
        m = self.method
        if m.flow == "tarflow":
            flow = TransformerFlow(
                TransformerFlowConfig(
                    shape=(data.dim,), patch_size=m.patch_size, width=m.width,
                    layers_per_block=tuple(m.layers_per_block), head_dim=m.head_dim,
                )
            )  # fmt: skip
        else:
            flow = zuko_flow(m.flow, data.dim, 0, m.transforms, tuple(m.hidden), m.bins)
        mean, std = torch.tensor(data.mean), torch.tensor(data.std)
        return StandardizedFlow(flow, mean, std).float()

    def training(self, model: nn.Module, data: RunData, context: TrainContext) -> Training:
        """The objective of ``method.train_by`` and its data (samples, or placeholders whose
        count is the batch of the flow's own samples)."""
        m = self.method
        placeholders = lambda n, g: (torch.zeros(n, data.dim), None)  # noqa: E731
        if m.train_by == "ml":
            return Training(FlowNLLLoss("gaussian", 0.0), data.train)
        if m.train_by == "reverse_kl":
            return Training(ReverseKL(data.energy), placeholders)
        teacher = self._teacher(model, context)
        loss = SelfImprovementLoss(data.energy, teacher, m.buffer, m.refresh_every,
                                   m.teacher_weight, m.quantile, m.energy_cutoff)  # fmt: skip
        return Training(loss, placeholders)

    def _teacher(self, model: nn.Module, context: TrainContext) -> nn.Module:
        """The frozen pre-trained flow: the run's copy, else ``method.init`` (checked against
        this run's flow and target, loaded as the start and copied into the run)."""
        run_dir = context.run_dir
        teacher = copy.deepcopy(model)
        if run_dir is not None and (run_dir / TEACHER_FILE).is_file():
            teacher.load_state_dict(load_file(run_dir / TEACHER_FILE))
            return teacher.eval().requires_grad_(False)
        init = Path(self.method.init)
        if not (init / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"method.init={str(init)!r} is not a run directory (no {CONFIG_FILE}); train "
                "one first, e.g. `flowforge train gmm40_boltzmann`."
            )
        other = load_yaml(init / CONFIG_FILE)
        mismatch = [
            f"method.{k}" for k in _ARCH_KEYS
            if getattr(other.method, k, None) != getattr(self.method, k)
        ] + (["data.name"] if other.data.name != self.config.data.name else [])  # fmt: skip
        if not isinstance(other.method, BoltzmannConfig) or mismatch:
            raise ConfigError(
                f"method.init={str(init)!r} is not a boltzmann run with this flow and target "
                f"(differs in {mismatch or ['method.name']}); use the same settings."
            )
        load_weights(init, teacher)
        if not context.resumed:
            model.load_state_dict(teacher.state_dict())
        if context.main and run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(run_dir / TEACHER_FILE) as tmp:
                save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, tmp)
        return teacher.eval().requires_grad_(False)

    def sampler(self, model, data: RunData, sample: SampleConfig, run_dir: Path | None = None):
        """``inverse``: the flow's samples; ``snis``: resampled by their importance weights;
        ``smc``: annealed from them. Its cost is target energy evaluations per sample."""
        m = self.method

        @torch.no_grad()
        def sampler(x_0, solver, nfe, cond=None, trajectory=False):
            x = model.inverse(x_0)
            if solver == "inverse":
                return x, 0
            g = torch.Generator().manual_seed(sample.seed)
            if solver == "snis":
                log_q = model.log_prob(x).double().cpu()
                w = importance_weights(-data.energy.energy(x.double().cpu()), log_q,
                                       m.energy_cutoff, m.quantile)  # fmt: skip
                w.check()
                idx = multinomial_resample(w.log_w, len(x), g)
                return x[idx.to(x.device)], 1
            out = smc(model, data.energy, len(x), m.smc_steps, m.smc_step_size, m.smc_mcmc,
                      m.smc_substeps, m.smc_ess_threshold, generator=g, x=x)  # fmt: skip
            return out.x, out.evaluations // len(x)

        return sampler
