"""Rewards: callables ``reward(x) -> (B,)`` on a batch of samples, and their checks.

Any callable that maps samples (B, ...) to one finite score per sample is a reward; the ones
here cover the fine-tuning checks and benchmarks:

    HalfPlane(dim, threshold, smooth)   1[x_dim > threshold], or sigmoid((x_dim - thr.) / smooth)
    GaussianBump(center, width, scale)  scale * exp(-||x - center||^2 / (2 width^2))
    SquaredDistance(center)             -||x - center||^2 (prefers one region, unbounded below)
    ClassifierLogProb(classifier, k)    log p(k | x) of an image classifier (images in [-1, 1])
    Smoothness(weight)                  -mean squared difference of neighbouring pixels
    Contrast()                          the per-image standard deviation of the pixels
    RewardSum([(w_1, r_1), ...])        sum_i w_i r_i(x)

``check_reward`` is what every fine-tuning method calls on a reward's output: the wrong shape,
NaN or inf is an error naming the reward, never a silent NaN loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "ClassifierLogProb",
    "Contrast",
    "GaussianBump",
    "HalfPlane",
    "Reward",
    "RewardSum",
    "Smoothness",
    "SquaredDistance",
    "check_reward",
    "reward_name",
]

Reward = Callable[[Tensor], Tensor]


def reward_name(reward: Reward) -> str:
    """A short name of the reward for messages and logs (its ``name``, ``__name__`` or class).

    Example:
        >>> reward_name(HalfPlane()), reward_name(lambda x: x.sum(1))
        ('HalfPlane(dim=1, threshold=0)', '<lambda>')
    """
    name = getattr(reward, "name", None) or getattr(reward, "__name__", None)
    return str(name) if name else type(reward).__name__


def check_reward(reward: Reward, x: Tensor) -> Tensor:
    """``reward(x)`` after checking it is a (B,) tensor of finite values.

    Raises:
        TypeError: when the reward does not return a tensor.
        ValueError: naming the reward, for the wrong shape or for NaN / inf values (with the
            first offending sample indices).

    Example:
        >>> check_reward(lambda x: x[:, 0], torch.ones(3, 2)).tolist()
        [1.0, 1.0, 1.0]
    """
    name = reward_name(reward)
    r = reward(x)
    if not isinstance(r, Tensor):
        raise TypeError(f"reward {name} returned {type(r).__name__}; return a (B,) tensor.")
    B = x.shape[0]
    if r.shape != (B,):
        raise ValueError(
            f"reward {name} returned shape {tuple(r.shape)} for {B} samples; it must return "
            f"({B},), one score per sample (reduce over the other dimensions)."
        )
    bad = ~torch.isfinite(r)
    if bad.any():
        idx = bad.nonzero().flatten()[:3].tolist()
        raise ValueError(
            f"reward {name} is NaN or inf for {int(bad.sum())} of {B} samples (e.g. indices "
            f"{idx}: {r[idx].tolist()}); make it finite everywhere (clamp it, or add an epsilon "
            "inside logs)."
        )
    return r


class HalfPlane:
    """1[x_dim > threshold], or the smooth sigmoid((x_dim - threshold) / smooth) for smooth > 0.

    Example:
        >>> HalfPlane()(torch.tensor([[0.0, 1.0], [0.0, -1.0]])).tolist()
        [1.0, 0.0]
    """

    def __init__(self, dim: int = 1, threshold: float = 0.0, smooth: float = 0.0) -> None:
        if smooth < 0:
            raise ValueError(f"smooth={smooth!r} must be >= 0 (0: the indicator).")
        self.dim, self.threshold, self.smooth = dim, threshold, smooth
        extra = f", smooth={smooth:g}" if smooth else ""
        self.name = f"HalfPlane(dim={dim}, threshold={threshold:g}{extra})"

    def __call__(self, x: Tensor) -> Tensor:
        u = x.flatten(1)[:, self.dim] - self.threshold
        return torch.sigmoid(u / self.smooth) if self.smooth > 0 else (u > 0).to(x.dtype)


class GaussianBump:
    """scale * exp(-||x - center||^2 / (2 width^2)), a smooth bounded region reward.

    Example:
        >>> GaussianBump([0.0, 0.0], width=1.0)(torch.zeros(2, 2)).tolist()
        [1.0, 1.0]
    """

    def __init__(self, center: Sequence[float], width: float = 1.0, scale: float = 1.0) -> None:
        if not width > 0:
            raise ValueError(f"width={width!r} must be > 0.")
        self.center, self.width, self.scale = torch.tensor(center), width, scale
        self.name = f"GaussianBump(center={list(center)}, width={width:g})"

    def __call__(self, x: Tensor) -> Tensor:
        d2 = (x.flatten(1) - self.center.to(x)).square().sum(1)
        return self.scale * torch.exp(-d2 / (2 * self.width**2))


class SquaredDistance:
    """-||x - center||^2: prefers the region around ``center`` (AC-Flow's toy reward).

    Example:
        >>> SquaredDistance([1.0, 0.0])(torch.zeros(1, 2)).tolist()
        [-1.0]
    """

    def __init__(self, center: Sequence[float]) -> None:
        self.center = torch.tensor(center)
        self.name = f"SquaredDistance(center={list(center)})"

    def __call__(self, x: Tensor) -> Tensor:
        return -(x.flatten(1) - self.center.to(x)).square().sum(1)


class ClassifierLogProb:
    """log p(target | x) of an image classifier ``classifier(x) -> (B, K)`` logits, frozen.

    Differentiable in x (for methods that backpropagate through the reward).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> ClassifierLogProb(net, target=2)(torch.zeros(5, 1, 2, 2)).shape
        torch.Size([5])
    """

    def __init__(self, classifier: nn.Module, target: int) -> None:
        self.classifier = classifier.eval().requires_grad_(False)
        self.target = int(target)
        self.name = f"ClassifierLogProb(target={self.target})"

    def __call__(self, x: Tensor) -> Tensor:
        logits = self.classifier(x)
        if not 0 <= self.target < logits.shape[1]:
            raise ValueError(
                f"target={self.target} is not a class of the classifier's {logits.shape[1]}; "
                f"choose one in [0, {logits.shape[1]})."
            )
        return logits.log_softmax(1)[:, self.target]


class Smoothness:
    """-weight * mean squared difference of horizontally and vertically neighbouring pixels.

    Example:
        >>> Smoothness()(torch.ones(2, 1, 4, 4)).tolist()
        [-0.0, -0.0]
    """

    name = "Smoothness"

    def __init__(self, weight: float = 1.0) -> None:
        self.weight = weight

    def __call__(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"Smoothness scores (B, C, H, W) images, not shape {tuple(x.shape)}.")
        dx = (x[..., :, 1:] - x[..., :, :-1]).square().flatten(1).mean(1)
        dy = (x[..., 1:, :] - x[..., :-1, :]).square().flatten(1).mean(1)
        return -self.weight * (dx + dy)


class Contrast:
    """The standard deviation of each image's pixels.

    Example:
        >>> Contrast()(torch.tensor([[[[-1.0, 1.0]]]])).tolist()
        [1.0]
    """

    name = "Contrast"

    def __call__(self, x: Tensor) -> Tensor:
        return x.flatten(1).std(1, unbiased=False)


class RewardSum:
    """sum_i w_i r_i(x) over ``terms = [(w_1, r_1), ...]``, each term checked.

    Example:
        >>> r = RewardSum([(1.0, HalfPlane()), (0.5, SquaredDistance([0.0, 0.0]))])
        >>> r(torch.tensor([[0.0, 2.0]])).tolist()
        [-1.0]
    """

    def __init__(self, terms: Sequence[tuple[float, Reward]]) -> None:
        if not terms:
            raise ValueError("RewardSum needs at least one (weight, reward) term.")
        self.terms = list(terms)
        self.name = " + ".join(f"{w:g} {reward_name(r)}" for w, r in self.terms)

    def __call__(self, x: Tensor) -> Tensor:
        return sum(w * check_reward(r, x) for w, r in self.terms)
