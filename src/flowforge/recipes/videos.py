"""Video runs: procedural moving shapes (``data.name: moving_shapes``), for video flows.

``VideoData`` holds seeded training and held-out videos (``data.n_train`` and 512, of
``data.frames`` frames of ``data.image_size`` pixels; labels = motion direction when
``data.conditional``). Evaluation measures, per eval row: the Frechet distance of single frames
in the features of a frame classifier (trained once on training frames to tell the shape, cached
in the run), and how well the videos move: the per-frame centroid displacement's distance from
the true velocity (``motion_error``; the label's for conditional runs, else the motion nearest
the sample's own) and the share moving the label's way. Floors: held-out vs training videos.
Pictures: one filmstrip per video (``samples.png``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from flowforge.data.videos import MOTIONS, motion_error, moving_shapes
from flowforge.metrics.frechet import frechet_distance
from flowforge.metrics.images import class_accuracy
from flowforge.models.classifier import ClassifierConfig, ImageClassifier, train_classifier
from flowforge.recipes import plots
from flowforge.recipes.base import Recipe, RunData, Sampler, Samples, describe_sampling
from flowforge.recipes.config import ConfigError, ModelConfig, RunConfig
from flowforge.recipes.vector_eval import eval_jobs
from flowforge.utils.io import atomic_path

__all__ = [
    "FRAME_CLASSIFIER_FILE",
    "VideoData",
    "build_videos",
    "frame_classifier",
    "frame_features",
    "load_videos",
]

DATA_INFO = "data.json"
FRAME_CLASSIFIER_FILE = "frame_classifier.safetensors"
_TEST_VIDEOS = 512  # held-out videos, drawn with another seed


@dataclass
class VideoData(RunData):
    """A run's videos.

    Attributes:
        train_x, test_x: (N, F, 1, H, W) videos in [-1, 1].
        train_labels, test_labels: (N,) motion classes.
        train_kinds, test_kinds: (N,) shape classes 1..3 (the frame classifier's task).
        num_classes: classes the flow is conditioned on (4 motions, or 0).
        shape: (F, 1, H, W) of one video.
        train: the training set (videos, with labels when conditional).
    """

    train_x: Tensor
    test_x: Tensor
    train_labels: Tensor
    test_labels: Tensor
    train_kinds: Tensor
    test_kinds: Tensor
    num_classes: int
    shape: tuple[int, ...]
    train: TensorDataset | None = field(default=None, repr=False)

    def labels(self, n: int, generator: torch.Generator | None) -> Tensor | None:
        """(n,) motion labels drawn uniformly (the data's frequencies), or None."""
        if self.num_classes == 0:
            return None
        return torch.randint(self.num_classes, (n,), generator=generator)

    def to_data(self, x: Tensor) -> Tensor:
        """Flow space -> videos in [-1, 1]."""
        return x.clamp(-1, 1)

    def network(self, model: ModelConfig, n_times: int = 1, channels: int | None = None):
        raise ConfigError(
            "video runs train a video flow sized by its method section (method.name=starflow); "
            "there is no model.arch network for videos."
        )

    def describe(self) -> str:
        F, _, H, W = self.shape
        return f"{len(self.train_x)} videos of {F} frames of {H}x{W}"

    def save(self, run_dir: Path) -> None:
        """Write data.json (the video shape and classes); the videos are regenerated."""
        info = {"kind": "video", "shape": list(self.shape), "num_classes": self.num_classes}
        with atomic_path(Path(run_dir, DATA_INFO)) as tmp:
            tmp.write_text(json.dumps(info, indent=1))

    @torch.no_grad()
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
        """``n`` videos from fresh noise (then labels) of ``generator``."""
        x_0 = torch.randn(n, *self.shape, generator=generator, dtype=torch.float32).to(device)
        drawn = self.labels(n, generator)
        labels = drawn if labels is None else labels
        x, used = sampler(x_0, solver, nfe, None if labels is None else labels.to(device))
        return Samples(x=self.to_data(x).float().cpu(), nfe=used, labels=labels)

    def evaluate(self, recipe: Recipe, model: nn.Module, run_dir, step, progress=True) -> dict:
        """Per-frame FD and motion error per solver, beside the floors."""
        return evaluate(recipe, model, self, run_dir, step=step, progress=progress)

    def pictures(self, recipe: Recipe, model: nn.Module, run_dir: Path, step) -> dict:
        """samples.png: one filmstrip per video (two per motion for conditional runs)."""
        s = recipe.config.sample
        g = torch.Generator().manual_seed(s.seed)
        K = self.num_classes
        labels = torch.arange(K).repeat_interleave(2) if K else None
        n = len(labels) if K else 8
        out = recipe.generate(model, self, s, n, s.nfe, s.solver, g, labels, run_dir)
        names = [MOTIONS[int(k)] for k in labels] if K else [""] * n
        what = describe_sampling(s, out.nfe, K, labels="motion on the left")
        title = f"{recipe.config.name}: videos, frames left to right ({what})"
        return {"samples.png": plots.plot_image_rows(list(out.x), names, title=title)}


def frame_classifier(
    run_dir: Path | None, data: VideoData, steps: int, seed: int, progress: bool = False
) -> ImageClassifier:
    """A classifier of single frames by shape (its features measure frame quality), trained
    once on training frames and cached in ``run_dir``."""
    F, C, H, _ = data.shape
    config = ClassifierConfig(in_channels=C, num_classes=3, input_size=H)
    path = None if run_dir is None else Path(run_dir, FRAME_CLASSIFIER_FILE)
    net = ImageClassifier(config).float()
    if path is not None and path.is_file():
        net.load_state_dict(load_file(path))
        return net.eval()
    torch.manual_seed(seed)
    net = ImageClassifier(config).float()
    frames = data.train_x.flatten(0, 1)
    kinds = (data.train_kinds - 1).repeat_interleave(F)
    g = torch.Generator().manual_seed(seed)
    train_classifier(net, frames, kinds, steps=steps, generator=g, progress=progress)
    if path is not None:
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    return net.eval()


@torch.no_grad()
def frame_features(net: ImageClassifier, videos: Tensor) -> tuple[Tensor, Tensor]:
    """The frame classifier's (N F, features) and (N F, 3) logits of videos (N, F, C, H, W)."""
    frames = videos.flatten(0, 1).float()
    feats, logits = [], []
    for chunk in frames.split(1024):
        f = net.features(chunk)
        feats.append(f)
        logits.append(net.head(f))
    return torch.cat(feats), torch.cat(logits)


def evaluate(recipe: Recipe, model: nn.Module, data: VideoData, run_dir, *, step=None,
             progress: bool = True) -> dict:  # fmt: skip
    """Per-frame FD (``fd``) and motion (``motion``: displacement error, direction accuracy)
    per solver row, beside the floors (held-out vs training videos)."""
    config = recipe.config
    e = config.eval
    n = min(e.n_samples, len(data.test_x))
    net = frame_classifier(run_dir, data, e.classifier_steps, e.seed, progress)
    real, real_logits = frame_features(net, data.test_x[:n])
    F = data.shape[0]
    clf_acc = class_accuracy(real_logits, (data.test_kinds[:n] - 1).repeat_interleave(F))
    g = torch.Generator().manual_seed(e.seed)
    idx = torch.randperm(len(data.train_x), generator=g)[:n]
    floors: dict = {}
    labels_real = data.test_labels[:n] if data.num_classes else None
    if "fd" in e.metrics:
        floors["fd"] = frechet_distance(frame_features(net, data.train_x[idx])[0], real)
    if "motion" in e.metrics:
        floors.update(motion_error(data.test_x[:n], labels_real))
    results = []
    bar = tqdm(eval_jobs(recipe), desc="eval", unit="run", disable=not progress, leave=False)
    for solver, nfe in bar:
        bar.set_postfix_str(solver)
        gen = torch.Generator().manual_seed(e.seed + 1)
        out = recipe.generate(model, data, config.sample, n, nfe, solver, gen, run_dir=run_dir)
        row: dict = {"solver": solver, "nfe": int(out.nfe)}
        if not torch.isfinite(out.x).all():
            row.update({k: math.inf for k in floors})
            results.append(row)
            continue
        if "fd" in e.metrics:
            row["fd"] = frechet_distance(real, frame_features(net, out.x)[0])
        if "motion" in e.metrics:
            row.update(motion_error(out.x, out.labels))
        results.append(row)
    return {
        "step": step,
        "n_samples": n,
        "guidance": config.sample.guidance if data.num_classes else None,
        "frame_classifier_accuracy": clf_acc,
        "floors": floors,
        "results": results,
    }


def build_videos(config: RunConfig) -> VideoData:
    """The seeded training and held-out videos of ``config.data``."""
    d = config.data
    size = d.image_size or 16
    try:
        train = moving_shapes(d.n_train, torch.Generator().manual_seed(0), d.frames, size)
        test = moving_shapes(_TEST_VIDEOS, torch.Generator().manual_seed(1), d.frames, size)
    except ValueError as err:
        raise ConfigError(f"data.frames={d.frames}, data.image_size={size}: {err}") from None
    K = len(MOTIONS) if d.conditional else 0
    dataset = (
        TensorDataset(train.videos, train.labels) if K else TensorDataset(train.videos)
    )  # fmt: skip
    return VideoData(
        train_x=train.videos,
        test_x=test.videos,
        train_labels=train.labels,
        test_labels=test.labels,
        train_kinds=train.kinds,
        test_kinds=test.kinds,
        num_classes=K,
        shape=tuple(train.videos.shape[1:]),
        train=dataset,
    )


def load_videos(run_dir: Path, config: RunConfig) -> VideoData:
    """The videos of a trained run (regenerated from its seeds)."""
    return build_videos(config)
