"""Image-generation metrics beyond Fréchet distance: precision/recall, accuracy, IoU, inpainting.

- :func:`precision_recall`: improved precision and recall (Kynkaanniemi et al. 2019) in a feature
  space the caller picks, separating fidelity (precision) from coverage (recall).
- :func:`class_accuracy`: accuracy of a classifier on conditional samples (does class y look
  like y?).
- :func:`per_class_iou`, :func:`mean_iou`: segmentation agreement, e.g. of jointly generated
  image/mask pairs or of masks that conditioned a sample.
- :func:`known_pixel_error`: how far an inpainting sampler moved the pixels it was given.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from flowforge.metrics.frechet import as_feature_matrix

__all__ = [
    "knn_radii",
    "manifold_coverage",
    "precision_recall",
    "class_accuracy",
    "per_class_iou",
    "mean_iou",
    "known_pixel_error",
]


def _float_features(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))  # distances never in half


def knn_radii(features: Tensor | np.ndarray, k: int = 3, chunk_size: int = 1024) -> Tensor:
    """Distance from each point to its k-th nearest neighbour in the same set, self excluded.

    r_i = ||x_i - NN_k(x_i)||: the (k + 1)-th smallest entry of row i of the distance matrix,
    whose smallest is the point itself (a duplicate point at distance 0 counts as a neighbour).

    Args:
        features: (N, D) features, N > k.
        k: the neighbour rank, k >= 1.
        chunk_size: rows of the (chunk_size, N) distance block held in memory at once.

    Returns:
        (N,) radii, in the features' float dtype (float32 at least).

    References:
        Improved Precision and Recall Metric for Assessing Generative Models (Kynkaanniemi et
        al., 2019), arXiv:1904.06991, Eq. 2.

    Example:
        >>> knn_radii(torch.tensor([[0.0], [1.0], [3.0]]), k=1).tolist()
        [1.0, 1.0, 2.0]
    """
    x = _float_features(as_feature_matrix("features", features))  # (N, D)
    _check_k(k, len(x), "features")
    _check_chunk_size(chunk_size)
    radii = []
    for rows in x.split(chunk_size):
        d = torch.cdist(rows, x)  # (chunk, N)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # k + 1: the point itself comes first
    return torch.cat(radii)


def manifold_coverage(
    reference: Tensor | np.ndarray,
    radii: Tensor,
    queries: Tensor | np.ndarray,
    chunk_size: int = 1024,
) -> Tensor:
    """Which queries lie in the manifold estimate, the union of balls B(x_j, r_j).

    f(q) = 1 if ||q - x_j|| <= r_j for some reference point x_j, else 0.

    Args:
        reference: (N, D) reference points x_j.
        radii: (N,) ball radii r_j (usually :func:`knn_radii` of ``reference``).
        queries: (M, D) points to test.
        chunk_size: query rows of the (chunk_size, N) distance block held in memory at once.

    Returns:
        (M,) bool, True where the query is inside.

    References:
        Improved Precision and Recall Metric for Assessing Generative Models (Kynkaanniemi et
        al., 2019), arXiv:1904.06991, Eq. 1.

    Example:
        >>> ref = torch.tensor([[0.0], [1.0], [3.0]])
        >>> manifold_coverage(ref, knn_radii(ref, k=1), torch.tensor([[4.5], [10.0]])).tolist()
        [True, False]
    """
    x = _float_features(as_feature_matrix("reference", reference))  # (N, D)
    q = as_feature_matrix("queries", queries).to(x.dtype)  # (M, D)
    if q.shape[1] != x.shape[1]:
        raise ValueError(
            f"queries has {q.shape[1]} features per row but reference has {x.shape[1]}; "
            "extract both with the same feature network."
        )
    if radii.shape != (len(x),):
        raise ValueError(
            f"radii has shape {tuple(radii.shape)}; pass one radius per reference point, "
            f"shape ({len(x)},) (see knn_radii)."
        )
    _check_chunk_size(chunk_size)
    r = radii.to(x)  # (N,)
    inside = [(torch.cdist(rows, x) <= r).any(dim=1) for rows in q.split(chunk_size)]
    return torch.cat(inside)  # (M,)


def precision_recall(
    real_features: Tensor | np.ndarray,
    fake_features: Tensor | np.ndarray,
    k: int = 3,
    chunk_size: int = 1024,
) -> tuple[float, float]:
    """Improved precision and recall of generated samples against real ones, k-NN manifolds.

    Each set's manifold is the union of balls around its points with the distance to their k-th
    nearest neighbour as radius (:func:`knn_radii`); then

        precision = (1/M) sum_j f(fake_j; real manifold)   (fidelity: fakes look real),
        recall    = (1/N) sum_i f(real_i; fake manifold)   (coverage: reals are generated).

    Distances are computed in blocks of ``chunk_size`` rows, so memory is O(chunk_size * N)
    (about 40 MB for 10k x 10k in float32 with the default) and time O(N M D).

    Args:
        real_features: (N, D) features of real images, N > k.
        fake_features: (M, D) features of generated images, M > k, same D.
        k: neighbour rank of the radii; the paper uses 3 (with N = M = 50 000).
        chunk_size: rows per distance block.

    Returns:
        ``(precision, recall)``, Python floats in [0, 1].

    References:
        Improved Precision and Recall Metric for Assessing Generative Models (Kynkaanniemi et
        al., 2019), arXiv:1904.06991, Sec. 2.

    Example:
        >>> real = torch.tensor([[0.0], [1.0], [3.0]])  # k=1 radii 1, 1, 2
        >>> fake = torch.tensor([[4.5], [10.0]])  # radii 5.5, 5.5: every real point is covered
        >>> precision_recall(real, fake, k=1)
        (0.5, 1.0)
    """
    real = as_feature_matrix("real_features", real_features)
    fake = as_feature_matrix("fake_features", fake_features)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real_features has {real.shape[1]} features per row but fake_features has "
            f"{fake.shape[1]}; extract both with the same feature network."
        )
    _check_k(k, len(real), "real_features")
    _check_k(k, len(fake), "fake_features")
    real_radii = knn_radii(real, k, chunk_size)
    fake_radii = knn_radii(fake, k, chunk_size)
    precision = manifold_coverage(real, real_radii, fake, chunk_size).double().mean().item()
    recall = manifold_coverage(fake, fake_radii, real, chunk_size).double().mean().item()
    return precision, recall


def _check_k(k: int, n: int, name: str) -> None:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r}; the neighbour rank must be an integer >= 1 (default 3).")
    if n <= k:
        raise ValueError(
            f"{name} has {n} rows but k={k} needs at least {k + 1} (a point and k neighbours); "
            "pass more samples or a smaller k."
        )


def _check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}; pass a positive integer (default 1024).")


def _integer_tensor(name: str, x: Tensor | np.ndarray) -> Tensor:
    x = torch.as_tensor(x).detach()
    if x.is_floating_point() and (not torch.isfinite(x).all() or (x != x.round()).any()):
        raise ValueError(f"{name} has non-integer values; pass class indices (an integer tensor).")
    return x.long()


def class_accuracy(
    logits_or_predictions: Tensor | np.ndarray, labels: Tensor | np.ndarray
) -> float:
    """Share of examples whose predicted class equals the label.

    accuracy = (1/N) sum_i [argmax_k logits_ik = y_i], or (1/N) sum_i [p_i = y_i] for predictions.

    Args:
        logits_or_predictions: (N, K) logits (or probabilities), or (N,) predicted class indices.
        labels: (N,) true class indices.

    Returns:
        The accuracy, a Python float in [0, 1].

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
        >>> class_accuracy(logits, torch.tensor([0, 1, 1])), class_accuracy([0, 1, 0], [0, 1, 1])
        (0.6666666666666666, 0.6666666666666666)
    """
    scores = torch.as_tensor(logits_or_predictions).detach()
    y = _integer_tensor("labels", labels)
    if y.dim() != 1 or len(y) == 0:
        raise ValueError(
            f"labels has shape {tuple(y.shape)}; pass one class index per example, shape (N,)."
        )
    if scores.dim() == 2:
        pred = scores.argmax(dim=1)  # (N,)
    elif scores.dim() == 1:
        pred = _integer_tensor("logits_or_predictions", scores)  # (N,)
    else:
        raise ValueError(
            f"logits_or_predictions has shape {tuple(scores.shape)}; pass (N, K) logits or (N,) "
            "predicted class indices."
        )
    if len(pred) != len(y):
        raise ValueError(
            f"logits_or_predictions has {len(pred)} examples but labels has {len(y)}; "
            "pass one label per example."
        )
    return (pred == y.to(pred.device)).double().mean().item()


def per_class_iou(
    pred_masks: Tensor | np.ndarray,
    true_masks: Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int | None = None,
) -> Tensor:
    """Intersection over union of each class between predicted and true label masks.

    IoU_c = |{pred = c} ∩ {true = c}| / |{pred = c} ∪ {true = c}|, counted over the pixels whose
    true label is not ``ignore_index``; NaN for a class absent from both masks (0 / 0) and for
    ``ignore_index`` itself when it is a class index.

    Args:
        pred_masks: (...) integer class indices in [0, K), e.g. (B, H, W).
        true_masks: (...) same shape, indices in [0, K) or ``ignore_index``.
        num_classes: K.
        ignore_index: a true label whose pixels are left out (e.g. 255 for "unlabelled").

    Returns:
        (K,) float64 IoU per class, NaN where undefined.

    References:
        The PASCAL Visual Object Classes Challenge (Everingham et al., IJCV 2010), Sec. 4.3.

    Example:
        >>> pred, true = torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 1, 1, 1]])
        >>> per_class_iou(pred, true, num_classes=3).tolist()  # 1/2, 2/3, absent
        [0.5, 0.6666666666666666, nan]
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r}; pass the number of classes K >= 1.")
    pred = _integer_tensor("pred_masks", pred_masks)
    true = _integer_tensor("true_masks", true_masks).to(pred.device)
    if pred.shape != true.shape:
        raise ValueError(
            f"pred_masks has shape {tuple(pred.shape)} but true_masks has shape "
            f"{tuple(true.shape)}; pass one predicted label per true label."
        )
    valid = true != ignore_index if ignore_index is not None else torch.ones_like(true).bool()
    pred, true = pred[valid], true[valid]  # (P,) labelled pixels
    for name, m in (("pred_masks", pred), ("true_masks", true)):
        if m.numel() and (m.min() < 0 or m.max() >= num_classes):
            raise ValueError(
                f"{name} has labels in [{m.min().item()}, {m.max().item()}] outside [0, "
                f"{num_classes}); fix num_classes={num_classes} or mark unlabelled pixels with "
                "ignore_index."
            )
    k = num_classes
    confusion = torch.bincount(true * k + pred, minlength=k * k).reshape(k, k)  # (K, K)
    intersection = confusion.diagonal()  # (K,)
    union = confusion.sum(dim=0) + confusion.sum(dim=1) - intersection  # (K,)
    iou = intersection.double() / union.double()  # 0 / 0 = NaN for absent classes
    if ignore_index is not None and 0 <= ignore_index < k:
        iou[ignore_index] = float("nan")
    return iou


def mean_iou(
    pred_masks: Tensor | np.ndarray,
    true_masks: Tensor | np.ndarray,
    num_classes: int,
    ignore_index: int | None = None,
) -> float:
    """Mean IoU over the classes present in the prediction or the truth.

    mIoU = (1/|P|) sum_{c in P} IoU_c, P = classes with a non-empty union (see
    :func:`per_class_iou`); classes absent from both masks are skipped, not counted as 0 or 1.

    Args:
        pred_masks, true_masks, num_classes, ignore_index: as in :func:`per_class_iou`.

    Returns:
        The mean IoU, a Python float in [0, 1].

    References:
        The PASCAL Visual Object Classes Challenge (Everingham et al., IJCV 2010), Sec. 4.3.

    Example:
        >>> pred, true = torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 1, 1, 1]])
        >>> round(mean_iou(pred, true, num_classes=3), 6)  # (1/2 + 2/3) / 2
        0.583333
    """
    iou = per_class_iou(pred_masks, true_masks, num_classes, ignore_index)
    present = ~iou.isnan()
    if not present.any():
        raise ValueError(
            "no labelled pixel to score: every true label equals "
            f"ignore_index={ignore_index!r} (or the masks are empty); pass masks with labels."
        )
    return iou[present].mean().item()


def known_pixel_error(
    samples: Tensor | np.ndarray, reference: Tensor | np.ndarray, known: Tensor | np.ndarray
) -> float:
    """Largest change an inpainting sampler made to the pixels it was told to keep.

    err = max_{p : known_p = 1} |samples_p - reference_p|, over all images and channels.

    Args:
        samples: (B, C, H, W) (or any shape) generated images.
        reference: the same shape, the images whose known pixels were given.
        known: bool or {0, 1} mask broadcastable to ``samples`` (e.g. (1, 1, H, W) or (B, 1, H,
            W)), 1 = known, with at least one known pixel.

    Returns:
        The error, a Python float (computed in float64; NaN if a known sample pixel is NaN).

    Example:
        >>> x = torch.zeros(1, 1, 2, 2)
        >>> y = torch.tensor([[[[0.0, 0.5], [9.0, -0.25]]]])
        >>> known_pixel_error(y, x, torch.tensor([[1, 1], [0, 1]]))  # 9.0 is not known
        0.5
    """
    x = torch.as_tensor(samples).detach()
    ref = torch.as_tensor(reference).detach().to(x.device)
    mask = torch.as_tensor(known).detach().to(x.device)
    if x.shape != ref.shape:
        raise ValueError(
            f"samples has shape {tuple(x.shape)} but reference has shape {tuple(ref.shape)}; "
            "pass the reference images the samples were conditioned on, one per sample."
        )
    if mask.dtype != torch.bool:
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("known has values other than 0 and 1; pass a bool or {0, 1} mask.")
        mask = mask == 1
    try:
        mask = mask.expand(x.shape)
    except RuntimeError:
        raise ValueError(
            f"known has shape {tuple(mask.shape)}, which does not broadcast to samples' shape "
            f"{tuple(x.shape)}; pass e.g. (1, 1, H, W) or (B, 1, H, W)."
        ) from None
    if not mask.any():
        raise ValueError("known marks no pixel as known (all 0); nothing to check.")
    diff = x.to(torch.float64) - ref.to(torch.float64)  # exact for float32 inputs
    return diff[mask].abs().max().item()
