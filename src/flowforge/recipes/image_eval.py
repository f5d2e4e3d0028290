"""Evaluation and pictures of image runs.

Image quality is measured in the feature space of a small classifier trained on the run's own
training images (seeded, cached in the run directory as ``classifier.safetensors``): Fréchet
distance and precision/recall against the held-out images, the classifier's accuracy on
class-conditional samples, and the known-pixel error of inpainting; a recipe adds its own
(SymmFlow's mIoU, ``Recipe.extra_metrics``). Each metric sits next to its floor: its value
between held-out and training images.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from flowforge.metrics.frechet import frechet_distance
from flowforge.metrics.images import class_accuracy, known_pixel_error, precision_recall
from flowforge.models.classifier import (
    ClassifierConfig,
    ImageClassifier,
    train_classifier,
    transform_task,
)
from flowforge.recipes import plots
from flowforge.recipes.base import describe_sampling
from flowforge.recipes.vector_eval import eval_jobs
from flowforge.utils.io import atomic_path

if TYPE_CHECKING:
    from flowforge.recipes.base import Recipe
    from flowforge.recipes.images import ImageData

__all__ = [
    "CLASSIFIER_FILE",
    "classifier_accuracy",
    "classifier_settings",
    "evaluate",
    "feature_classifier",
    "features",
    "pictures",
]

CLASSIFIER_FILE = "classifier.safetensors"


CLASSIFIER_BOUND = 0.9  # held-out accuracy under which the feature metrics are unreliable


def feature_classifier(
    run_dir: Path | None, data: ImageData, steps: int, seed: int, progress: bool = False
):
    """The run's feature network: a classifier trained once on the run's training images
    (seeded by ``seed``), then read back from ``run_dir`` on every later evaluation.

    It learns the images' classes; images without classes (a flat folder) train it to tell
    which of four rotations (or flips) was applied (``transform_task``). Its settings are kept
    beside it (``classifier.json``) and read by ``classifier_settings``."""
    x, y, K = data.train_x, data.train_labels, data.label_classes
    task = "classes" if y is not None else "rotations"
    if y is None:
        (x, y), K = transform_task(x), 4
    C, H, _ = data.image_shape
    net = ImageClassifier(ClassifierConfig(in_channels=C, num_classes=K, input_size=H)).float()
    path = None if run_dir is None else Path(run_dir, CLASSIFIER_FILE)
    if path is not None and path.is_file():
        net.load_state_dict(load_file(path))
        return net.eval()
    torch.manual_seed(seed)
    net = ImageClassifier(ClassifierConfig(in_channels=C, num_classes=K, input_size=H)).float()
    g = torch.Generator().manual_seed(seed)
    train_classifier(net, x, y, steps=steps, generator=g, progress=progress)
    if path is not None:
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
        with atomic_path(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps({"task": task, "steps": steps, "seed": seed}))
    return net.eval()


def classifier_settings(run_dir: Path | None, steps: int, seed: int, task: str) -> dict:
    """How the run's feature classifier was trained (its saved settings, else these)."""
    path = None if run_dir is None else Path(run_dir, CLASSIFIER_FILE).with_suffix(".json")
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    return {"task": task, "steps": steps, "seed": seed}


def classifier_accuracy(net: ImageClassifier, data: ImageData, n: int) -> float:
    """Held-out accuracy of the feature classifier on its task (classes, or transforms)."""
    x, y = data.test_x[:n], data.test_labels
    if y is None:
        x, y = transform_task(x)
    else:
        y = y[:n]
    return class_accuracy(features(net, x)[1], y)


@torch.no_grad()
def features(net: ImageClassifier, x: Tensor) -> tuple[Tensor, Tensor]:
    """The classifier's (N, F) features and (N, K) logits of images ``x``, in chunks."""
    feats, logits = [], []
    for chunk in x.split(512):
        f = net.features(chunk.float())
        feats.append(f)
        logits.append(net.head(f))
    return torch.cat(feats), torch.cat(logits)


def _quality(
    metrics: list[str], fake: Tensor, real_feats: Tensor, fake_logits: Tensor, labels
) -> dict:
    row: dict = {}
    if "fd" in metrics:
        row["fd"] = frechet_distance(real_feats, fake)
    if "precision" in metrics or "recall" in metrics:
        p, r = precision_recall(real_feats, fake)
        row.update({k: v for k, v in (("precision", p), ("recall", r)) if k in metrics})
    if "accuracy" in metrics and labels is not None:
        row["accuracy"] = class_accuracy(fake_logits, labels)
    return row


def evaluate(
    recipe: Recipe,
    model: torch.nn.Module,
    data: ImageData,
    run_dir: Path | None,
    *,
    step: int | None = None,
    progress: bool = True,
) -> dict:
    """Image quality at several NFEs per solver, beside the floors (held-out vs training).

    Returns:
        ``{"step", "n_samples", "guidance", "guidance_method", "raag_alpha",
        "classifier_accuracy",
    "classifier_settings", "floors", "results"}``
        like the vector runs' ``evaluate``; rows add ``fd_unconditional`` (inpainting) and
        ``known_mse`` (mean squared error of the raw samples on the known pixels).
    """
    config = recipe.config
    e = config.eval
    n = min(e.n_samples, len(data.test_x))
    net = feature_classifier(run_dir, data, e.classifier_steps, e.seed, progress)
    real_feats, real_logits = features(net, data.test_x[:n])
    g = torch.Generator().manual_seed(e.seed)
    floors: dict = {}
    train_idx = torch.randperm(len(data.train_x), generator=g)[:n]
    train_feats, _ = features(net, data.train_x[train_idx])
    clf_acc = classifier_accuracy(net, data, n)
    task = "classes" if data.test_labels is not None else "rotations"
    settings = classifier_settings(run_dir, e.classifier_steps, e.seed, task)
    if clf_acc < CLASSIFIER_BOUND:
        warnings.warn(
            f"the feature classifier of the image metrics reads only {clf_acc:.1%} of the "
            f"held-out images' {task} right (trained {settings['steps']} steps); FD, "
            "precision and recall in its features are unreliable: raise eval.classifier_steps "
            f"and delete {CLASSIFIER_FILE} in the run to retrain it.",
            stacklevel=2,
        )
    floors.update(_quality(e.metrics, train_feats, real_feats, real_logits, None))
    if "accuracy" in e.metrics:
        floors["accuracy"] = clf_acc  # a perfect generator scores the classifier's accuracy
    if "miou" in e.metrics:
        floors["miou"] = 1.0
    if "known_error" in e.metrics:
        floors["known_error"] = 0.0
    results = []
    bar = tqdm(eval_jobs(recipe), desc="eval", unit="run", disable=not progress, leave=False)
    for solver, nfe in bar:
        bar.set_postfix_str(solver if recipe.own_cost else f"{solver} NFE {nfe}")
        gen = torch.Generator().manual_seed(e.seed + 1)
        out = recipe.generate(model, data, config.sample, n, nfe, solver, gen, run_dir=run_dir)
        row: dict = {"solver": solver, "nfe": int(out.nfe)}
        if not torch.isfinite(out.x).all():
            row.update({name: math.inf for name in e.metrics})
            results.append(row)
            continue
        feats, logits = features(net, out.x)
        row.update(_quality(e.metrics, feats, real_feats, logits, out.labels))
        row.update(recipe.extra_metrics(model, data, out, solver, nfe, gen))
        if out.known is not None:
            row["known_error"] = known_pixel_error(out.x, out.reference, out.known)
            known = out.known.expand_as(out.raw) > 0
            row["known_mse"] = float((out.raw - out.reference)[known].square().mean())
            free, _ = features(net, out.unconditional)
            row["fd_unconditional"] = frechet_distance(real_feats, free)
        results.append(row)
    return {
        "step": step,
        "n_samples": n,
        "guidance": config.sample.guidance if data.num_classes else None,
        "guidance_method": config.sample.guidance_method if data.num_classes else None,
        "raag_alpha": config.sample.raag_alpha
        if data.num_classes and config.sample.guidance_method == "raag"
        else None,
        "classifier_accuracy": clf_acc,
        "classifier": {
            **settings,
            "held_out_accuracy": clf_acc,
            "reliable": clf_acc >= CLASSIFIER_BOUND,
        },
        "floors": floors,
        "results": results,
    }


def pictures(recipe: Recipe, model: torch.nn.Module, data: ImageData, run_dir: Path | None):
    """The run's pictures at its sampling settings: ``{file name: Figure}``."""
    config = recipe.config
    s, title = config.sample, config.name
    g = torch.Generator().manual_seed(s.seed)
    if data.num_classes:
        K, per = data.num_classes, 10
        labels = torch.arange(K).repeat_interleave(per)
        out = recipe.generate(model, data, s, K * per, s.nfe, s.solver, g, labels, run_dir)
        rows = list(out.x.view(K, per, *out.x.shape[1:]))
        what = describe_sampling(s, out.nfe, K, labels="one row per class")
        figure = plots.plot_image_rows(
            rows, [f"class {k}" for k in range(K)], title=f"{title}: {what}"
        )
        return {"samples.png": figure}
    n = 10
    paired = data.channels != "none"  # one row of 10 conditions and their samples
    out = recipe.generate(
        model, data, s, n * (1 if paired else 6), s.nfe, s.solver, g, None, run_dir
    )
    what = describe_sampling(s, out.nfe, 0)
    if out.known is not None:
        rows = [out.reference, out.reference * out.known, out.raw, out.x, out.unconditional]
        names = ["original", "known pixels", "raw sample", "inpainted", "unconditional"]
        title = f"{title}: inpainting of held-out images with box holes ({what})"
        return {"inpainting.png": plots.plot_image_rows(rows, names, title=title)}
    if out.masks is not None:
        figure = plots.plot_image_rows(
            [plots.colour_masks(out.masks), out.x],
            ["held-out mask", "generated"],
            title=f"{title}: images rendered from held-out masks ({what})",
        )
        return {"mask_pairs.png": figure}
    figure = plots.plot_image_rows(
        list(out.x.view(6, n, *out.x.shape[1:])), [""] * 6, title=f"{title}: samples ({what})"
    )
    return {"samples.png": figure}
