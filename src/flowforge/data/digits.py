"""scikit-learn's bundled handwritten digits (1797 real 8x8 images, 10 classes) as image tensors.

The images ship with scikit-learn, so nothing is downloaded. Pixel values 0..16 are mapped
affinely to [-1, 1] (x = v / 8 - 1), so 0 -> -1 and 16 -> +1 exactly. The 16x16 version is the
8x8 one upsampled by a factor 2 with bilinear interpolation
(``torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)``): every output
pixel is a convex combination of input pixels, so values stay in [-1, 1], and each input pixel's
weights sum to 4 (2 per axis, edge clamping included), so the mean intensity is kept exactly; it
adds no detail.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["load_digits_tensor", "split_indices"]


def split_indices(
    labels: Tensor, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """A seeded, stratified train/test split of ``range(len(labels))``.

    For every class k with n_k examples, ``round(test_fraction * n_k)`` of them, chosen by a
    permutation drawn from ``torch.Generator().manual_seed(seed)``, go to the test set and the
    rest to the training set, so both sets keep the class proportions.

    Args:
        labels: (N,) integer class labels.
        test_fraction: share of each class held out, in (0, 1).
        seed: seed of the permutation; the same seed gives the same split.

    Returns:
        ``(train_idx, test_idx)``, sorted (n_train,) and (n_test,) long tensors, disjoint, whose
        union is ``range(N)``.

    Example:
        >>> tr, te = split_indices(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), 0.25)
        >>> len(tr), len(te), set(tr.tolist()) & set(te.tolist())
        (6, 2, set())
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            f"test_fraction={test_fraction!r} must lie strictly between 0 and 1; e.g. 0.2 holds "
            "out a fifth of each class."
        )
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for k in torch.unique(labels).tolist():
        idx = (labels == k).nonzero().squeeze(1)  # (n_k,)
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def load_digits_tensor(
    size: Literal[8, 16] = 8,
    split: Literal["train", "test", "all"] = "all",
    seed: int = 0,
    test_fraction: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """scikit-learn's 1797 handwritten digits as (N, 1, H, W) images in [-1, 1] with labels.

    x = v / 8 - 1 for raw values v in {0, ..., 16}; for ``size=16`` the 8x8 images are
    upsampled with bilinear interpolation (align_corners=False). ``split`` selects a part of a
    stratified split (see ``split_indices``): the same ``seed`` and ``test_fraction`` always give
    the same, disjoint train and test parts, so metrics can use held-out digits.

    Args:
        size: 8 (the native resolution) or 16 (bilinear upsampling by 2).
        split: "train", "test" or "all" (all 1797 images in scikit-learn's order).
        seed: seed of the split (unused for "all").
        test_fraction: share of each class in the test part (unused for "all").

    Returns:
        ``(x, labels)``: x (N, 1, size, size) float32 in [-1, 1]; labels (N,) int64 in 0..9.

    References:
        Optical Recognition of Handwritten Digits (Alpaydin & Kaynak, 1998), UCI ML Repository.

    Example:
        >>> x, y = load_digits_tensor()
        >>> tuple(x.shape), x.min().item(), x.max().item(), y.unique().tolist() == list(range(10))
        ((1797, 1, 8, 8), -1.0, 1.0, True)
    """
    if size not in (8, 16):
        raise ValueError(f"size={size!r} is not supported; pass 8 (native) or 16 (upsampled).")
    if split not in ("train", "test", "all"):
        raise ValueError(f"split={split!r} is not valid; choose 'train', 'test' or 'all'.")
    try:
        from sklearn.datasets import load_digits  # bundled with scikit-learn: no download
    except ImportError as e:
        raise ImportError(
            "the digits dataset comes with scikit-learn, from the [digits] extra: pip install "
            "'flowforge[digits]'."
        ) from e

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)  # (N, 8, 8), values 0..16
    x = torch.from_numpy(images).unsqueeze(1) / 8.0 - 1.0  # (N, 1, 8, 8) in [-1, 1]
    labels = torch.from_numpy(np.asarray(bunch.target)).long()  # (N,)
    if size == 16:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # (N,1,16,16)
    if split != "all":
        train_idx, test_idx = split_indices(labels, test_fraction, seed)
        idx = train_idx if split == "train" else test_idx
        x, labels = x[idx], labels[idx]
    return x.contiguous(), labels
