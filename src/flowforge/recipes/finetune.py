"""Reward fine-tuning of a trained flow (``method.name: finetune``).

``method.base`` names a trained flow-matching run; the fine-tuned run starts from its weights
(its architecture: the base's ``model:`` section is copied into the run) and keeps a frozen copy
of it (``teacher.safetensors``) as the reference of the divergence terms. ``method.algorithm``:

    grpo     DanceGRPO: the Euler sampler as an SDE (``eta``), groups of ``group_size``
             samples from one noise, group-relative advantages, the clipped-ratio loss on a
             share ``timestep_fraction`` of the steps, KL to the base (``kl_weight``)
    orw      ORW-CFM-W2: flow matching on the lagged policy's samples weighted by
             softmax(``weight_beta`` r), plus ``alpha`` times the W2 bound to the base
    rwr      reward-weighted regression: ``orw`` without the W2 term (the plain baseline)
    acflow   AC-Flow: ``orw`` with shaped rewards, a critic on the path states, clipped
             advantages (``clip_advantage``) and a critic warm-up (``warmup_updates``)

The reward is ``method.reward`` (``half_plane``: 1[x_dim > threshold] or its sigmoid with
``reward_smooth``; ``bump``: a Gaussian bump at ``reward_center``; ``mode``: -||x - center||^2;
``classifier``: a digit classifier's log p(``target_class`` | x), trained once on the run's
training images with a seed of its own, ``reward_classifier.safetensors``; ``smoothness``,
``contrast`` on images). Each ODE sample of the evaluation is scored: a row adds ``reward``
(its mean), ``base_reward`` (the base model's on the same noise), ``base_sliced_w2`` (sliced W2
from the base model's samples of the same noise: how far fine-tuning moved), on images
``base_fd`` (the Frechet distance between the two sample sets in the evaluation's classifier
features) and, for the classifier reward, ``target_probability`` (mean p(target | x)) beside
the base's, ``diversity`` (mean pairwise distance) and, on 2-D vector data with
``tilt_temperature`` > 0, ``tilted_mmd``, the MMD to the exact tilted target
p(x) exp(r(x) / tilt_temperature) / Z computed by quadrature (beside ``base_tilted_mmd``, the
base's, and ``tilted_reward``, the target's mean reward).
The progress checks (``train.eval_every``) log the reward and ``base_sliced_w2`` to
metrics.jsonl, and reward_vs_divergence.png draws the path of training through that plane.

References:
    DanceGRPO: Unleashing GRPO on Visual Generation (Xue et al., 2025), arXiv:2505.07818.
    Online Reward-Weighted Fine-Tuning of Flow Matching with Wasserstein Regularization
    (Fan et al., 2025), arXiv:2502.06061.
    Fine-tuning Flow Matching Generative Models with Intermediate Feedback (Fan et al., 2025),
    arXiv:2510.18072.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from flowforge.data.toy2d import eight_gaussians_log_prob
from flowforge.distill.reflow import init_from_teacher
from flowforge.finetune import (
    ACFlowConfig,
    ACFlowObjective,
    ClassifierLogProb,
    Contrast,
    GaussianBump,
    GRPOConfig,
    GRPOObjective,
    HalfPlane,
    ORWConfig,
    ORWObjective,
    Smoothness,
    SquaredDistance,
    ValueMLP,
    check_reward,
    tilted_grid,
)
from flowforge.metrics import frechet_distance
from flowforge.models.classifier import ClassifierConfig, ImageClassifier, train_classifier
from flowforge.models.mlp import MLPConfig
from flowforge.recipes import plots
from flowforge.recipes.base import Recipe, RunData, Samples, TrainContext, Training
from flowforge.recipes.config import TOY_DATASETS, ConfigError, MethodConfig, meta
from flowforge.recipes.config_io import load_yaml
from flowforge.recipes.image_eval import feature_classifier
from flowforge.recipes.teacher import (
    TEACHER_CONFIG,
    TEACHER_FILE,
    require_teacher,
    resolve_teacher,
    run_teacher,
    teacher_network,
    training_teacher,
)
from flowforge.recipes.vector_eval import build_metrics
from flowforge.train.checkpoint import CONFIG_FILE
from flowforge.train.logging import METRICS_FILE
from flowforge.utils.io import atomic_path

__all__ = ["FinetuneConfig", "FinetuneRecipe", "REWARD_CLASSIFIER_FILE"]

REWARD_CLASSIFIER_FILE = "reward_classifier.safetensors"
ALGORITHMS = ("grpo", "orw", "rwr", "acflow")


@dataclass
class FinetuneConfig(MethodConfig):
    """Reward fine-tuning: the base run, the algorithm, the reward and their settings."""

    name: str = field(default="finetune", metadata=meta("the recipe: reward fine-tuning"))
    base: str | None = field(
        default=None, metadata=meta("directory of the trained fm run to fine-tune")
    )
    algorithm: Literal["grpo", "orw", "rwr", "acflow"] = field(
        default="grpo", metadata=meta("grpo (DanceGRPO), orw (ORW-CFM-W2), rwr, acflow")
    )
    reward: Literal["half_plane", "bump", "mode", "classifier", "smoothness", "contrast"] = field(
        default="half_plane", metadata=meta("the reward r(x) (see the recipe's docs)")
    )
    reward_dim: int = field(default=1, metadata=meta("half_plane: the coordinate"))
    reward_threshold: float = field(default=0.0, metadata=meta("half_plane: the threshold"))
    reward_smooth: float = field(
        default=0.0, metadata=meta("half_plane: sigmoid width (0: the indicator)")
    )
    reward_center: list[float] = field(
        default_factory=lambda: [4.0, 0.0], metadata=meta("bump, mode: the centre")
    )
    reward_width: float = field(default=1.0, metadata=meta("bump: the width"))
    target_class: int = field(default=0, metadata=meta("classifier: the class to raise"))
    classifier_steps: int = field(
        default=400, metadata=meta("classifier: training steps of the reward classifier")
    )
    group_size: int = field(default=16, metadata=meta("grpo: samples per group (one noise)"))
    sde_steps: int = field(default=10, metadata=meta("grpo: SDE steps of a rollout"))
    eta: float = field(default=0.7, metadata=meta("grpo: SDE noise level (> 0)"))
    shift: float = field(default=1.0, metadata=meta("grpo: time-grid shift (1: uniform)"))
    timestep_fraction: float = field(
        default=0.6, metadata=meta("grpo: share of the steps trained per sample")
    )
    clip_range: float = field(default=0.2, metadata=meta("grpo: ratio clip epsilon"))
    adv_clip: float = field(default=5.0, metadata=meta("grpo: advantage clip"))
    kl_weight: float = field(default=0.0, metadata=meta("grpo: weight of the KL to the base"))
    weight_beta: float = field(
        default=0.5, metadata=meta("orw/rwr/acflow: weights softmax(weight_beta r or A)")
    )
    alpha: float = field(default=1.0, metadata=meta("orw/acflow: weight of the W2 bound"))
    sample_steps: int = field(
        default=16, metadata=meta("orw/rwr/acflow: Euler steps of the policy's samples")
    )
    refresh_every: int = field(
        default=1, metadata=meta("orw/rwr/acflow: updates between lagged-policy refreshes")
    )
    clip_advantage: float = field(default=2.0, metadata=meta("acflow: advantage clip c_A"))
    warmup_updates: int = field(default=50, metadata=meta("acflow: critic-only warm-up"))
    critic_lr: float = field(default=1e-4, metadata=meta("acflow: the critic's Adam rate"))
    critic_hidden: int = field(default=128, metadata=meta("acflow: the critic MLP's width"))
    tilt_temperature: float = field(
        default=0.0,
        metadata=meta("eval (2-D): MMD to p exp(r / tilt_temperature) / Z (0: not reported)"),
    )


class FinetuneRecipe(Recipe):
    """A trained flow fine-tuned against a reward, through the one ``train()``."""

    name = "finetune"
    Config = FinetuneConfig
    labels = False
    run_files = (TEACHER_FILE, TEACHER_CONFIG, REWARD_CLASSIFIER_FILE)

    def validate(self) -> None:
        """A base run, positive sizes, probabilities in range, a batch of whole groups."""
        require_teacher(self.config, "base")
        m, batch = self.method, self.config.train.batch_size
        for key in ("group_size", "sde_steps", "sample_steps", "refresh_every",
                    "critic_hidden", "classifier_steps"):  # fmt: skip
            if getattr(m, key) < 1:
                raise ConfigError(f"method.{key}={getattr(m, key)!r} must be >= 1.")
        for key in ("eta", "shift", "clip_range", "critic_lr"):
            if not getattr(m, key) > 0:
                raise ConfigError(f"method.{key}={getattr(m, key)!r} must be > 0.")
        for key in ("kl_weight", "weight_beta", "alpha", "adv_clip", "clip_advantage",
                    "tilt_temperature", "warmup_updates"):  # fmt: skip
            if not getattr(m, key) >= 0:
                raise ConfigError(f"method.{key}={getattr(m, key)!r} must be >= 0.")
        if not 0 < m.timestep_fraction <= 1:
            raise ConfigError(
                f"method.timestep_fraction={m.timestep_fraction!r} must be in (0, 1]."
            )
        if m.algorithm == "grpo" and batch % m.group_size:
            raise ConfigError(
                f"train.batch_size={batch} is not a multiple of method.group_size="
                f"{m.group_size}: a GRPO batch is whole groups; use e.g. train.batch_size="
                f"{max(1, batch // m.group_size) * m.group_size}."
            )
        if m.reward in ("classifier", "smoothness", "contrast") and (
            self.config.data.name in TOY_DATASETS
        ):
            raise ConfigError(
                f"method.reward={m.reward!r} scores images, but data.name="
                f"{self.config.data.name!r} is 2-D; use method.reward=half_plane, bump or mode."
            )

    def prepare(self) -> None:
        """The base's directory, made absolute, and its architecture copied into the run."""
        resolve_teacher(self.config, "base")
        config_file = Path(self.method.base, CONFIG_FILE)
        if config_file.is_file():
            self.config.model = load_yaml(config_file).model

    def build_model(self, data: RunData) -> nn.Module:
        """The base's architecture (the data's field network)."""
        return data.network(self.config.model)

    def training(self, model: nn.Module, data: RunData, context: TrainContext) -> Training:
        """The algorithm's objective; a fresh run starts from the base's weights."""
        base = training_teacher(self.config, data, context, "base")
        if not context.resumed:
            init_from_teacher(model, base)
        reward = self.reward(data, context.run_dir)
        objective = self._objective(base, reward, data)
        return Training(objective, lambda n, generator: (torch.zeros(n, 1), None))

    def _objective(self, base: nn.Module, reward, data: RunData):
        m, batch, shape = self.method, self.config.train.batch_size, tuple(data.shape)
        if m.algorithm == "grpo":
            config = GRPOConfig(
                group_size=m.group_size, n_steps=m.sde_steps, eta=m.eta,
                timestep_fraction=m.timestep_fraction, clip_range=m.clip_range,
                adv_clip_max=m.adv_clip, kl_weight=m.kl_weight, shift=m.shift,
                ignore_last=True,
            )  # fmt: skip
            return GRPOObjective(base if m.kl_weight > 0 else None, reward, config,
                                 batch // m.group_size, shape)  # fmt: skip
        if m.algorithm in ("orw", "rwr"):
            alpha = 0.0 if m.algorithm == "rwr" else m.alpha
            config = ORWConfig(
                beta=m.weight_beta, alpha=alpha, batch_size=batch,
                sample_steps=m.sample_steps, refresh_every=m.refresh_every,
            )  # fmt: skip
            return ORWObjective(shape, reward, config, base if alpha > 0 else None)
        critic = ValueMLP(MLPConfig(dim=int(math.prod(shape)), hidden=m.critic_hidden, depth=2))
        critic = critic.float()  # as the model (build_model: float32)
        config = ACFlowConfig(
            beta=m.weight_beta, alpha=m.alpha, batch_size=batch,
            clip_advantage=m.clip_advantage, warmup_updates=m.warmup_updates,
            sample_steps=m.sample_steps, refresh_every=m.refresh_every,
        )  # fmt: skip
        return ACFlowObjective(shape, reward, critic, config, base if m.alpha > 0 else None,
                               m.critic_lr)  # fmt: skip

    def reward(self, data: RunData, run_dir: Path | None):
        """The run's reward callable (``method.reward`` and its settings)."""
        m = self.method
        if m.reward == "half_plane":
            return HalfPlane(m.reward_dim, m.reward_threshold, m.reward_smooth)
        if m.reward == "bump":
            return GaussianBump(m.reward_center, m.reward_width)
        if m.reward == "mode":
            return SquaredDistance(m.reward_center)
        if m.reward == "smoothness":
            return Smoothness()
        if m.reward == "contrast":
            return Contrast()
        return ClassifierLogProb(self._classifier(data, run_dir), m.target_class)

    def _classifier(self, data: RunData, run_dir: Path | None) -> ImageClassifier:
        """The reward's digit classifier: trained once on the training images (seed
        ``train.seed + 1``, apart from the evaluation's feature classifier), then read back."""
        x, y = getattr(data, "train_x", None), getattr(data, "train_labels", None)
        if x is None or y is None:
            raise ConfigError(
                "method.reward='classifier' needs labelled training images (e.g. data.name="
                "digits); use another method.reward."
            )
        K = int(y.max()) + 1
        if not 0 <= self.method.target_class < K:
            raise ConfigError(
                f"method.target_class={self.method.target_class!r} is not one of the {K} "
                f"classes; choose one in [0, {K})."
            )
        C, H, _ = data.image_shape
        net = ImageClassifier(ClassifierConfig(in_channels=C, num_classes=K, input_size=H)).float()
        path = None if run_dir is None else Path(run_dir, REWARD_CLASSIFIER_FILE)
        if path is not None and path.is_file():
            net.load_state_dict(load_file(path))
            return net.eval()
        g = torch.Generator().manual_seed(self.config.train.seed + 1)
        train_classifier(net, x, y, steps=self.method.classifier_steps, generator=g)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
        return net.eval()

    # ---- evaluation ------------------------------------------------------------------------

    _run_dir: Path | None = None  # the run being evaluated (set by evaluate, hook, draw)
    _parts: tuple[nn.Module, object] | None = None  # its base and reward, and for which run
    _parts_run: Path | None = None

    def _evaluation_parts(self, data: RunData) -> tuple[nn.Module, object]:
        """The frozen base and the reward of the run being evaluated, built once per run."""
        if self._parts is None or self._parts_run != self._run_dir:
            base = run_teacher(self.config, self._run_dir, teacher_network(data), "base")
            self._parts = (base, self.reward(data, self._run_dir))
            self._parts_run = self._run_dir
        return self._parts

    def extra_metrics(self, model, data, drawn: Samples, solver: str, nfe: int, generator):
        """reward, base_sliced_w2, diversity and (2-D, tilt_temperature > 0) tilted_mmd."""
        return self._tracking(model, data, drawn.x, solver, nfe, full=True)

    def _tracking(self, model, data, x: Tensor, solver, nfe, full: bool) -> dict:
        """The reward of ``x`` and of the base's samples from the same noise, their sliced W2
        and (``full``) the diversity and the tilted target's MMD."""
        base, reward = self._evaluation_parts(data)
        device = next(model.parameters()).device
        g = torch.Generator().manual_seed(self.config.eval.seed)
        n = len(x)
        x_0 = torch.randn(n, *data.shape, generator=g, dtype=torch.float32).to(device)
        sampler = Recipe.sampler(self, base.to(device), data, self.config.sample)
        y, _ = sampler(x_0, solver, nfe, None)
        y = data.to_data(y).float().cpu()
        x = x.float().cpu()
        r_x, r_y = check_reward(reward, x), check_reward(reward, y)
        sw2 = build_metrics(["sliced_w2"], self.config.eval.seed, y.flatten(1))["sliced_w2"]
        out = {
            "reward": float(r_x.mean()),
            "base_reward": float(r_y.mean()),
            "base_sliced_w2": float(sw2(x.flatten(1), y.flatten(1))),
        }
        if isinstance(reward, ClassifierLogProb):  # the probability itself, and the base's
            out["target_probability"] = float(r_x.exp().mean())
            out["base_target_probability"] = float(r_y.exp().mean())
        if full:
            out["diversity"] = float(torch.pdist(x.flatten(1)[:1000]).mean())
            if len(data.shape) == 3:  # images: FD to the base's samples in the eval features
                e = self.config.eval
                net = feature_classifier(self._run_dir, data, e.classifier_steps, e.seed)
                with torch.no_grad():
                    fx, fy = net.features(x), net.features(y)
                out["base_fd"] = frechet_distance(fx, fy)
            if self.method.tilt_temperature > 0 and x.shape[1:] == (2,):
                grid = tilted_grid(eight_gaussians_log_prob, reward, self.method.tilt_temperature)
                target = grid.sample(n, torch.Generator().manual_seed(self.config.eval.seed))
                mmd = build_metrics(["mmd"], self.config.eval.seed, target)["mmd"]
                out["tilted_mmd"] = float(mmd(x, target))
                out["base_tilted_mmd"] = float(mmd(y, target))
                out["tilted_reward"] = grid.mean_reward()
        return out

    def evaluate(self, model, data, run_dir, step, progress: bool = True) -> dict:
        """The data's rows with the fine-tuning columns (``extra_metrics``)."""
        self._run_dir = run_dir
        return super().evaluate(model, data, run_dir, step, progress)

    def progress_hook(self, data: RunData, run_dir: Path | None):
        """The data's check plus the reward and base_sliced_w2 of ``min(eval.n_samples, 1000)``
        ODE samples at the sampling settings."""
        inner = data.progress_hook(self, run_dir)
        s, n = self.config.sample, min(self.config.eval.n_samples, 1000)
        self._run_dir = run_dir

        def hook(step: int, net: nn.Module) -> dict:
            record = inner(step, net) if inner is not None else {}
            device = next(net.parameters()).device
            g = torch.Generator().manual_seed(self.config.eval.seed)
            x_0 = torch.randn(n, *data.shape, generator=g, dtype=torch.float32).to(device)
            x, used = self.sampler(net, data, s, run_dir)(x_0, s.solver, s.nfe, None)
            x = data.to_data(x)
            record.update(self._tracking(net, data, x, s.solver, used, full=False))
            return record

        return hook

    def draw(self, model: nn.Module, data: RunData, run_dir: Path | None, step) -> dict:
        """The data's pictures and reward_vs_divergence.png (the progress checks)."""
        self._run_dir = run_dir
        figures = data.pictures(self, model, run_dir, step)
        points = _tracking_curve(run_dir)
        if points:
            fig, axes = plots.figure(5.5, 4.2)
            ax = axes[0, 0]
            w2, r, steps = zip(*points, strict=True)
            ax.plot(w2, r, marker="o", ms=3)
            for i in (0, len(steps) - 1):
                ax.annotate(f"step {steps[i]}", (w2[i], r[i]), fontsize=7)
            ax.set_xlabel("sliced W2 from the base model's samples (same noise)")
            ax.set_ylabel("mean reward of ODE samples")
            ax.grid(alpha=0.3)
            ax.set_title(f"{self.config.name}: reward against divergence", fontsize=9)
            figures["reward_vs_divergence.png"] = fig
        return figures


def _tracking_curve(run_dir: Path | None) -> list[tuple[float, float, int]]:
    """(base_sliced_w2, reward, step) of the progress checks in metrics.jsonl."""
    if run_dir is None or not Path(run_dir, METRICS_FILE).is_file():
        return []
    points = []
    for line in Path(run_dir, METRICS_FILE).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        ev = record.get("eval", {}) if isinstance(record, dict) else {}
        if "reward" in ev and "base_sliced_w2" in ev:
            points.append((float(ev["base_sliced_w2"]), float(ev["reward"]), record.get("step")))
    return points
