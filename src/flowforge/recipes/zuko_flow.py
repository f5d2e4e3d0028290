"""Classic normalizing flows from zuko (``method.name: zuko``): MAF or NSF on vectors.

The baselines of the transformer flows, trained, sampled and evaluated the same way (maximum
likelihood on optionally noised data; samples by inverting the flow, ``sample.solver=inverse``;
the held-out likelihood beside the sample metrics). zuko is an optional extra
(``pip install 'flowforge[zuko]'``); the flows are zuko's own, not rewritten.

References:
    Masked Autoregressive Flow for Density Estimation (Papamakarios et al., 2017),
    arXiv:1705.07057. Neural Spline Flows (Durkan et al., 2019), arXiv:1906.04032.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from torch import nn

from flowforge.nf.objective import FlowNLLLoss
from flowforge.nf.zuko import zuko_flow
from flowforge.recipes.base import Recipe, RunData, TrainContext, Training, own_sampler
from flowforge.recipes.config import ConfigError, MethodConfig, SampleConfig, meta
from flowforge.recipes.flow_matching import check_cond_dropout, cond_dropout_key, label_dropout
from flowforge.recipes.tarflow import held_out_likelihood

__all__ = ["ZukoConfig", "ZukoRecipe"]


@dataclass
class ZukoConfig(MethodConfig):
    """zuko's MAF (affine) or NSF (rational-quadratic splines) autoregressive flow."""

    name: str = field(default="zuko", metadata=meta("the recipe: a zuko flow"))
    kind: Literal["nsf", "maf"] = field(
        default="nsf", metadata=meta("nsf (neural spline flow) or maf (masked affine)")
    )
    transforms: int = field(default=3, metadata=meta("autoregressive transforms"))
    hidden: list[int] = field(
        default_factory=lambda: [64, 64], metadata=meta("hidden widths of each transform's MLP")
    )
    bins: int = field(default=8, metadata=meta("nsf: spline bins"))
    noise_std: float = field(
        default=0.0, metadata=meta("std of Gaussian noise added to training data (0: none)")
    )
    cond_dropout: float = cond_dropout_key()


class ZukoRecipe(Recipe):
    """A zuko MAF or NSF on vectors, by maximum likelihood."""

    name = "zuko"
    Config = ZukoConfig
    data_kinds = ("vectors",)
    own_network = True
    solvers = ("inverse",)
    guided_solvers = ()
    own_cost = True

    def validate(self) -> None:
        """Sizes positive, noise non-negative, label dropout in range."""
        m = self.method
        for key in ("transforms", "bins"):
            if getattr(m, key) < 1:
                raise ConfigError(f"method.{key}={getattr(m, key)!r} must be >= 1.")
        if not m.hidden or min(m.hidden) < 1:
            raise ConfigError(f"method.hidden={m.hidden!r} must list widths >= 1.")
        if not m.noise_std >= 0:
            raise ConfigError(f"method.noise_std={m.noise_std!r} must be >= 0.")
        check_cond_dropout(m)

    def build_model(self, data: RunData) -> nn.Module:
        """zuko's flow on the data's features (labels as one-hot context)."""
        m = self.method
        (features,) = data.shape
        return zuko_flow(
            m.kind, features, data.num_classes, m.transforms, tuple(m.hidden), m.bins
        ).float()

    def _loss(self) -> FlowNLLLoss:
        return FlowNLLLoss("gaussian", self.method.noise_std)

    def training(self, model: nn.Module, data: RunData, context: TrainContext) -> Training:
        """NLL per dimension, labels dropped for the unconditional (null) context."""
        return Training(label_dropout(self._loss(), self.method, data.num_classes), data.train)

    def sampler(self, model, data: RunData, sample: SampleConfig, run_dir: Path | None = None):
        """Prior noise through the flow's inverse; one 'evaluation' per sample."""

        def invert(x_0, nfe, cond=None):
            return model.inverse(x_0, cond), 1

        return own_sampler(invert)

    def evaluate(self, model, data: RunData, run_dir, step, progress: bool = True) -> dict:
        """The sample-quality rows and the held-out likelihood (``likelihood``)."""
        metrics = data.evaluate(self, model, run_dir, step, progress)
        metrics["likelihood"] = held_out_likelihood(model, data, self.config.eval, self._loss())
        return metrics
