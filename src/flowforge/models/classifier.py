"""A small CNN image classifier whose penultimate layer is the feature space of image metrics.

    f(x)      = SiLU(W_f flatten(AvgPool(conv-SiLU x 2 (x))) + b_f)    features, (B, feature_dim)
    logits(x) = W_o f(x) + b_o                                        (B, K)

Fréchet distance and precision/recall of generated images are computed on ``features`` of a
classifier trained by ``train_classifier`` on the same data (no downloaded Inception weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["ClassifierConfig", "ImageClassifier", "train_classifier", "transform_task"]


@dataclass
class ClassifierConfig:
    """Hyperparameters of ``ImageClassifier``.

    Args:
        in_channels: C, channels of the images.
        num_classes: K.
        width: channels of the convolutions (2 x width after pooling).
        feature_dim: size of the feature vector (the metrics' feature space).
        input_size: H = W, the (even) image side.

    Example:
        >>> ImageClassifier(ClassifierConfig(input_size=8)).features(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 64])
    """

    in_channels: int = 1
    num_classes: int = 10
    width: int = 32
    feature_dim: int = 64
    input_size: int = 8


class ImageClassifier(nn.Module):
    """A CNN classifier: two 3x3 convs, 2x2 average pooling, a conv, a feature layer and a head.

    Args:
        config: the ``ClassifierConfig``.

    References:
        GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium
        (Heusel et al., 2017), arXiv:1706.08500 (Fréchet distance in a classifier's features).
        Improved Precision and Recall Metric for Assessing Generative Models
        (Kynkäänniemi et al., 2019), arXiv:1904.06991.

    Example:
        >>> net = ImageClassifier(ClassifierConfig(num_classes=3, width=8, feature_dim=16))
        >>> net(torch.zeros(4, 1, 8, 8)).shape
        torch.Size([4, 3])
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        c = config
        for name in ("in_channels", "num_classes", "width", "feature_dim", "input_size"):
            if getattr(c, name) < 1:
                raise ValueError(f"ClassifierConfig.{name}={getattr(c, name)!r} must be >= 1.")
        if c.input_size % 2:
            raise ValueError(
                f"ClassifierConfig.input_size={c.input_size} must be even (one 2x2 pooling); "
                "pad the images to an even side."
            )
        self.config = c
        w, s = c.width, c.input_size // 2
        self.conv = nn.Sequential(
            nn.Conv2d(c.in_channels, w, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.SiLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.SiLU(),
        )
        self.feature = nn.Linear(2 * w * s * s, c.feature_dim)
        self.head = nn.Linear(c.feature_dim, c.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Args: x: (B, C, H, W) images. Returns: (B, feature_dim) features."""
        c = self.config
        want = (c.in_channels, c.input_size, c.input_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"x has shape {tuple(x.shape)}; the classifier was built for images of shape "
                f"(B, {', '.join(map(str, want))}) (ClassifierConfig.in_channels, input_size); "
                "pass such a batch or rebuild the classifier."
            )
        return F.silu(self.feature(self.conv(x).flatten(1)))  # (B, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x: (B, C, H, W) images. Returns: (B, K) logits."""
        return self.head(self.features(x))


def train_classifier(
    model: ImageClassifier,
    x: Tensor,
    labels: Tensor,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> list[float]:
    """Train ``model`` in place with Adam on cross-entropy over random minibatches.

    Deterministic for a given ``generator`` (minibatch indices are drawn from it). Leaves the
    model in eval mode.

    Args:
        model: the classifier.
        x: (N, C, H, W) training images.
        labels: (N,) integer labels in [0, K).
        steps: optimizer steps.
        batch_size: examples per step (drawn with replacement).
        lr: Adam learning rate.
        generator: source of the minibatch indices.
        progress: show a progress bar.

    Returns:
        The training loss of each step.

    Example:
        >>> net = ImageClassifier(ClassifierConfig(num_classes=2, width=4, feature_dim=8))
        >>> x, y = torch.randn(16, 1, 8, 8), torch.arange(16) % 2
        >>> len(train_classifier(net, x, y, steps=3, batch_size=4))
        3
    """
    K = model.config.num_classes
    if labels.shape != (x.shape[0],):
        raise ValueError(
            f"labels have shape {tuple(labels.shape)} but x has {x.shape[0]} images; pass one "
            f"label per image, shape ({x.shape[0]},)."
        )
    if labels.is_floating_point() or ((labels < 0) | (labels >= K)).any():
        raise ValueError(
            f"labels must be integers in [0, {K}) (ClassifierConfig.num_classes={K}); "
            "remap them or rebuild the classifier."
        )
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps={steps} and batch_size={batch_size} must both be >= 1.")
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    bar = tqdm(range(steps), desc="feature classifier", unit="step", disable=not progress)
    for _ in bar:
        idx = torch.randint(0, x.shape[0], (batch_size,), generator=generator)
        loss = F.cross_entropy(model(x[idx.to(x.device)]), labels[idx.to(labels.device)].long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    bar.close()
    model.eval()
    return losses


def transform_task(x: Tensor) -> tuple[Tensor, Tensor]:
    """A labelled task made from unlabelled images: which of four transforms was applied.

    Square images are rotated by 0, 90, 180 and 270 degrees (rotation prediction); others are
    flipped (none, left-right, up-down, both). A classifier trained on it learns the images'
    layout, so its features serve the image metrics of data without classes.

    Args:
        x: (N, C, H, W) images.

    Returns:
        ``(views, labels)``: (4N, C, H, W) transformed images and their (4N,) transform index.

    References:
        Unsupervised Representation Learning by Predicting Image Rotations (Gidaris et al.,
        2018), arXiv:1803.07728.

    Example:
        >>> views, labels = transform_task(torch.arange(4.0).view(1, 1, 2, 2))
        >>> views.shape, labels.tolist()
        (torch.Size([4, 1, 2, 2]), [0, 1, 2, 3])
        >>> views[1, 0].tolist()  # rotated by 90 degrees
        [[1.0, 3.0], [0.0, 2.0]]
    """
    if x.shape[-1] == x.shape[-2]:
        views = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    else:
        views = [x, x.flip(-1), x.flip(-2), x.flip(-2, -1)]
    labels = torch.arange(4).repeat_interleave(len(x))
    return torch.cat(views), labels
