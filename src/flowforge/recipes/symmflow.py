"""SymmFlow (``method.name: symmflow``): images and segmentation masks in one flow.

The state is [image, one-hot mask]; generation runs forward from [noise, mask] (mask to image),
segmentation backward from [image, noise]. Trains on the procedural shapes (their masks);
evaluation adds the mIoU of one-network segmentation (``miou``) and of the segmentation of its
own mask-to-image samples (``miou_generated``).

References:
    SymmFlow (card 16, docs/methods.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from flowforge.losses.symmflow import SymmFlowLoss, masks_to_channels
from flowforge.metrics.images import mean_iou
from flowforge.recipes import plots
from flowforge.recipes.base import (
    Recipe,
    Samples,
    TrainContext,
    Training,
    describe_sampling,
    ode_steps,
)
from flowforge.recipes.config import ConfigError, MethodConfig, SampleConfig, meta
from flowforge.recipes.images import ImageData
from flowforge.solvers.symmflow import symmflow_generate, symmflow_segment

__all__ = ["SymmFlowConfig", "SymmFlowRecipe", "segment"]


@dataclass
class SymmFlowConfig(MethodConfig):
    """SymmFlow: the weight of the image half of the loss and the masks' dequantisation."""

    name: str = field(default="symmflow", metadata=meta("the recipe: SymmFlow"))
    image_weight: float = field(default=0.9, metadata=meta("weight of the image half of the loss"))
    dequant_beta: float = field(
        default=15.0, metadata=meta("mask dequantisation noise (in 1/127.5 units)")
    )


@torch.no_grad()
def segment(
    model: nn.Module, data: ImageData, images: Tensor, solver: str, nfe: int, generator
) -> Tensor:
    """SymmFlow segmentation of ``images`` (data space): (n, H, W) mask classes."""
    device = next(model.parameters()).device
    y = symmflow_segment(
        model,
        images.to(device),
        data.mask_classes,
        n_steps=ode_steps("nfe", solver, nfe),
        method=solver,
        generator=generator,
    )
    return y.argmax(1).cpu()


class SymmFlowRecipe(Recipe):
    """Joint image/mask flows on the shapes: mask-to-image forward, segmentation backward."""

    name = "symmflow"
    Config = SymmFlowConfig
    data_kinds = ("images",)
    labels = False
    solvers = ("euler", "midpoint", "heun", "rk4")
    guided_solvers = ()
    metrics = ("miou",)

    def validate(self) -> None:
        """Masks to learn from, no other condition, weights in range."""
        d, m = self.config.data, self.method
        if d.name != "shapes" or d.path is not None:
            raise ConfigError(
                "method.name='symmflow' runs need segmentation masks, which data.name=shapes "
                "provides; switch the dataset."
            )
        if d.channels != "none" or d.conditional:
            raise ConfigError(
                "method.name=symmflow models images and masks jointly; set data.channels=none "
                "and data.conditional=false."
            )
        if not 0 <= m.image_weight <= 1:
            raise ConfigError(f"method.image_weight={m.image_weight!r} must lie in [0, 1].")

    def build_model(self, data: ImageData) -> nn.Module:
        """The data's UNet/DiT on the joint [image, mask] state."""
        return data.network(self.config.model, channels=data.shape[0] + data.mask_classes)

    def training(self, model: nn.Module, data: ImageData, context: TrainContext) -> Training:
        """``SymmFlowLoss`` on (image, one-hot mask) pairs."""
        masks = masks_to_channels(data.train_masks, data.mask_classes, torch.float32)
        loss = SymmFlowLoss(
            x_channels=data.shape[0],
            image_weight=self.method.image_weight,
            dequant_beta=self.method.dequant_beta,
        )
        return Training(objective=loss, data=TensorDataset(data.train_x, masks))

    def sampler(self, model, data, sample: SampleConfig, run_dir: Path | None = None):
        """Not a plain field of the image: samples come from held-out masks (``generate``)."""
        raise ValueError(
            "a symmflow network generates from masks; use Run.sample or generate(), which "
            "take the held-out masks as conditions."
        )

    @torch.no_grad()
    def generate(
        self, model, data: ImageData, sample, n, nfe, solver, generator, labels=None, run_dir=None
    ) -> Samples:
        """Images rendered from the first ``n`` held-out masks."""
        device = next(model.parameters()).device
        masks = data.test_masks[:n]
        y = masks_to_channels(masks, data.mask_classes, torch.float32).to(device)
        x = symmflow_generate(
            model,
            y,
            data.shape[0],
            n_steps=ode_steps("nfe", solver, nfe),
            method=solver,
            generator=generator,
        )
        return Samples(x=data.decode(x.float()).cpu(), nfe=nfe, masks=masks)

    def extra_metrics(self, model, data: ImageData, drawn: Samples, solver, nfe, generator):
        """mIoU of segmenting held-out images, and of segmenting its own samples."""
        n = len(drawn.x)
        masks = segment(model, data, data.test_x[:n], solver, nfe, generator)
        again = segment(model, data, drawn.x, solver, nfe, generator)
        return {
            "miou": mean_iou(masks, data.test_masks[:n], data.mask_classes),
            "miou_generated": mean_iou(again, drawn.masks, data.mask_classes),
        }

    def draw(self, model, data: ImageData, run_dir: Path | None, step) -> dict:
        """mask_pairs.png: masks, their images and 1-step segmentations, and held-out images
        with their true and segmented masks."""
        s, n, title = self.config.sample, 10, self.config.name
        g = torch.Generator().manual_seed(s.seed)
        out = self.generate(model, data, s, n, s.nfe, s.solver, g)
        real = data.test_x[-n:]
        rows = [
            plots.colour_masks(out.masks),
            out.x,
            plots.colour_masks(segment(model, data, out.x, "euler", 1, g)),
            real,
            plots.colour_masks(data.test_masks[-n:]),
            plots.colour_masks(segment(model, data, real, "euler", 1, g)),
        ]
        names = ["mask", "generated", "its 1-step segmentation"]
        names += ["held-out image", "true mask", "1-step segmentation"]
        what = describe_sampling(s, out.nfe, 0)
        title = f"{title}: images from held-out masks ({what}), and segmentations (Euler, 1 step)"
        return {"mask_pairs.png": plots.plot_image_rows(rows, names, title=title)}
