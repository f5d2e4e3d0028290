"""Dispersive regularisers: batch losses that push a layer's features apart (card 06, DM1).

A dispersive loss is the repulsive half of a contrastive loss, with no positive pairs. Given the
features H = (h_1, ..., h_B) of one intermediate layer for a batch (flattened to (B, D)), the
training objective becomes ``L = L_regression + lambda * L_disp(H)`` (Wang & He, Eq. 1). The
variants of Wang & He, Table 1 (tau the temperature, eps the margin):

    InfoNCE-L2 : L = log mean_{i,j} exp(-||h_i - h_j||^2 / tau)
    InfoNCE-cos: L = log mean_{i,j} exp(-(1 - cos(h_i, h_j)) / tau)
    Hinge      : L = mean_{i != j} max(0, eps - ||h_i - h_j||)^2
    Covariance : L = mean_{m != n} Cov(H_hat)_{mn}^2,  H_hat the normalised features

Minimising any of them spreads the batch out. The InfoNCE forms average over all ordered pairs
including i = j (as Wang & He's code does; the diagonal adds the constant exp(0) = 1 per row) or
over i != j only (``include_diagonal=False``), consistently. Wang & He's reference code divides the
squared distance by D; that is ``tau * D`` here.

DM1's reference code (``dispersive_infonce_l2_dm1``) differs: it uses the un-squared distance,
fills the diagonal with -1e9 and then clamps the similarities to [-10, 10], which turns the masked
diagonal into a constant exp(10) term that dominates the sum (card 06, pitfalls). It is kept for
comparison only; use ``dispersive_infonce_l2``.

Features are read with a forward hook on a named submodule (``capture_features``), so any
network works unchanged: ``[name for name, _ in model.named_modules()]`` lists the names
(``"net.3"`` is the second hidden activation of ``MLPField``).

References:
    Diffuse and Disperse: Image Generation with Representation Regularization (Wang & He, 2025),
    arXiv:2506.09027 (code: raywang4/DispLoss).
    DM1: MeanFlow with Dispersive Regularization for 1-Step Robotic Manipulation (Zou et al.,
    2025) (code: Guowei-Zou/dm1-release, ``model/loss/dispersive_loss.py``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.utils import check_choice

__all__ = [
    "capture_features",
    "dispersive_covariance",
    "dispersive_hinge",
    "dispersive_infonce_cos",
    "dispersive_infonce_l2",
    "dispersive_infonce_l2_dm1",
    "pairwise_sq_dist",
]

CovNorm = Literal["l2", "standardize", "none"]


def _flat(h: Tensor, name: str = "h") -> Tensor:
    """(B, ...) -> (B, D); at least two examples are needed for a pair."""
    if h.dim() < 2 or h.shape[0] < 2:
        raise ValueError(
            f"{name} has shape {tuple(h.shape)}; pass features of shape (B, ...) with B >= 2 "
            "(a dispersive loss compares examples of one batch)."
        )
    return h.reshape(h.shape[0], -1)


def _check_tau(tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"tau={tau!r} must be positive (0.5 in DM1 and Wang & He).")


def pairwise_sq_dist(h: Tensor) -> Tensor:
    """Squared Euclidean distances ||h_i - h_j||^2 of a batch, with an exact zero diagonal.

    The features are centred first (h_i - mean_k h_k) so the Gram-matrix form
    n_i + n_j - 2 <h_i, h_j> does not cancel catastrophically for features far from the
    origin: the result is translation invariant to rounding, at O(B^2 + B D) memory.

    Args:
        h: (B, ...) features, flattened to (B, D).

    Returns:
        (B, B) squared distances, >= 0, diagonal exactly 0.

    Example:
        >>> pairwise_sq_dist(torch.tensor([[0.0, 0.0], [3.0, 4.0]])).tolist()
        [[0.0, 25.0], [25.0, 0.0]]
    """
    h = _flat(h)
    hc = h - h.mean(0, keepdim=True)  # (B, D)
    sq = hc.square().sum(1)  # (B,)
    d2 = (sq[:, None] + sq[None, :] - 2 * hc @ hc.T).clamp_min(0)  # (B, B)
    return d2 * (1 - torch.eye(len(h), dtype=h.dtype, device=h.device))


def _log_mean_exp(logits: Tensor, include_diagonal: bool) -> Tensor:
    """log mean_{i,j} exp(logits_ij) over all pairs or over i != j."""
    B = logits.shape[0]
    if include_diagonal:
        return torch.logsumexp(logits.reshape(-1), 0) - math.log(B * B)
    off = ~torch.eye(B, dtype=torch.bool, device=logits.device)
    return torch.logsumexp(logits[off], 0) - math.log(B * (B - 1))


def dispersive_infonce_l2(h: Tensor, tau: float = 0.5, include_diagonal: bool = True) -> Tensor:
    """InfoNCE-L2 dispersive loss L = log mean_{i,j} exp(-||h_i - h_j||^2 / tau).

    Depends on the features only through their differences, so it is invariant under adding
    the same vector to every row; it decreases when the features are scaled up (card 06,
    check 3). Computed with logsumexp, stable for any spread.

    Args:
        h: (B, ...) features of one layer, flattened to (B, D); B >= 2.
        tau: temperature (0.5 in DM1; Wang & He's code uses tau * D).
        include_diagonal: average over all B^2 ordered pairs (Wang & He's code) or over the
            B (B - 1) pairs with i != j.

    Returns:
        () the loss; <= 0 when the diagonal is included (each row has the term exp(0) = 1).

    References:
        Diffuse and Disperse (Wang & He, 2025), arXiv:2506.09027, Eq. 6 and Table 1.

    Example:
        >>> h = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
        >>> bool(dispersive_infonce_l2(2 * h) < dispersive_infonce_l2(h))
        True
    """
    _check_tau(tau)
    return _log_mean_exp(-pairwise_sq_dist(h) / tau, include_diagonal)


def dispersive_infonce_cos(h: Tensor, tau: float = 0.5, include_diagonal: bool = True) -> Tensor:
    """InfoNCE-cosine dispersive loss L = log mean_{i,j} exp(-(1 - cos(h_i, h_j)) / tau).

    Invariant under scaling each row by a positive number; spreads the feature directions.

    Args:
        h: (B, ...) features, flattened to (B, D); B >= 2.
        tau: temperature.
        include_diagonal: all ordered pairs, or i != j only (see ``dispersive_infonce_l2``).

    Returns:
        () the loss.

    References:
        Diffuse and Disperse (Wang & He, 2025), arXiv:2506.09027, Table 1.

    Example:
        >>> h = torch.eye(4)  # orthogonal rows: cos = 0 off the diagonal
        >>> round(dispersive_infonce_cos(h, tau=1.0).exp().item(), 4)  # (4 + 12 e^-1) / 16
        0.5259
    """
    _check_tau(tau)
    hn = F.normalize(_flat(h), dim=1)  # (B, D)
    return _log_mean_exp(-(1 - hn @ hn.T) / tau, include_diagonal)


def dispersive_hinge(h: Tensor, margin: float = 1.0, squared: bool = True) -> Tensor:
    """Hinge dispersive loss L = mean_{i != j} max(0, eps - ||h_i - h_j||)^2.

    Zero once every pair is at least ``margin`` apart.

    Args:
        h: (B, ...) features, flattened to (B, D); B >= 2.
        margin: eps (1.0 in DM1's code).
        squared: square the hinge (Wang & He); False is DM1's code (un-squared relu).

    Returns:
        () the loss, >= 0.

    References:
        Diffuse and Disperse (Wang & He, 2025), arXiv:2506.09027, Table 1.

    Example:
        >>> dispersive_hinge(torch.tensor([[0.0], [0.5]])).item()  # (1 - 0.5)^2
        0.25
    """
    if not margin > 0:
        raise ValueError(f"margin={margin!r} must be positive (DM1 uses 1.0).")
    h = _flat(h)
    off = ~torch.eye(len(h), dtype=torch.bool, device=h.device)
    # sqrt of a zero distance has an infinite slope: keep the diagonal out of the sqrt
    d = pairwise_sq_dist(h)[off].clamp_min(1e-30).sqrt()  # (B (B - 1),)
    gap = F.relu(margin - d)
    return (gap.square() if squared else gap).mean()


def dispersive_covariance(
    h: Tensor, normalize: CovNorm = "l2", variance_hinge: bool = False
) -> Tensor:
    """Covariance dispersive loss L = mean_{m != n} Cov(H_hat)_{mn}^2 (decorrelate features).

    Cov = (H_hat - mean)^T (H_hat - mean) / (B - 1) over the batch. DM1's code adds
    mean_m relu(1 - Cov_mm) (``variance_hinge``), which keeps each feature's variance >= 1 (it
    is 0 with ``normalize="standardize"``, where Cov_mm = 1).

    Args:
        h: (B, ...) features, flattened to (B, D); B >= 2, D >= 2.
        normalize: H_hat: ``"l2"`` rows scaled to unit norm (the card's "normalised H"),
            ``"standardize"`` each feature to zero mean and unit variance over the batch
            (then Cov is the correlation matrix), or ``"none"`` (DM1's code).
        variance_hinge: add DM1's variance term.

    Returns:
        () the loss, >= 0.

    References:
        Diffuse and Disperse (Wang & He, 2025), arXiv:2506.09027, Table 1.

    Example:
        >>> h = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
        >>> dispersive_covariance(h, normalize="none").item()  # uncorrelated columns
        0.0
    """
    check_choice("normalize", normalize, ("l2", "standardize", "none"))
    h = _flat(h)
    if h.shape[1] < 2:
        raise ValueError(
            f"h has {h.shape[1]} feature(s) per example; the covariance loss needs D >= 2 "
            "(it penalises correlations between features)."
        )
    if normalize == "l2":
        h = F.normalize(h, dim=1)
    hc = h - h.mean(0, keepdim=True)  # (B, D)
    if normalize == "standardize":
        hc = (
            hc
            / hc.square().mean(0, keepdim=True).add(1e-12).sqrt()
            * math.sqrt((len(h) - 1) / len(h))
        )  # unit unbiased variance, so Cov_mm = 1
    cov = hc.T @ hc / (len(h) - 1)  # (D, D)
    off = ~torch.eye(cov.shape[0], dtype=torch.bool, device=cov.device)
    loss = cov[off].square().mean()
    if variance_hinge:
        loss = loss + F.relu(1 - cov.diagonal()).mean()
    return loss


def dispersive_infonce_l2_dm1(h: Tensor, tau: float = 0.5) -> Tensor:
    """DM1's reference "InfoNCE-L2", reproduced for comparison: not the paper's formula.

    s_ij = -||h_i - h_j|| / tau (un-squared), s_ii = -1e9, s <- clamp(s, -10, 10),
    L = -mean_i logsumexp_j(-s_ij). The clamp turns the masked diagonal into a constant
    exp(10) in every row, which dominates whenever the distances are below 10 tau; pairs
    farther than 10 tau apart are clamped too and give no gradient. Card 06 says to implement
    ``dispersive_infonce_l2`` instead.

    Args:
        h: (B, ...) features, flattened to (B, D); B >= 2.
        tau: temperature.

    Returns:
        () the loss.

    References:
        DM1 (Zou et al., 2025), code Guowei-Zou/dm1-release,
        ``DispersiveLoss._infonce_l2_loss`` (with ``weight=1``).

    Example:
        >>> h = torch.tensor([[0.0], [100.0]])  # far apart: every term clamped
        >>> round(dispersive_infonce_l2_dm1(h).item(), 4)  # -log(2 e^10)
        -10.6931
    """
    _check_tau(tau)
    h = _flat(h)
    s = -pairwise_sq_dist(h).clamp_min(1e-30).sqrt() / tau  # (B, B)
    s = s.masked_fill(torch.eye(len(h), dtype=torch.bool, device=h.device), -1e9)
    s = s.clamp(-10, 10)
    return -torch.logsumexp(-s, dim=1).mean()


@contextlib.contextmanager
def capture_features(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Record the outputs of named submodules with forward hooks while the block runs.

    Inside the ``with`` block every forward pass of ``model`` stores, for each name, the output
    of ``model.get_submodule(name)`` (the last call's, if the module runs several times) in the
    yielded dict. The hooks are removed and the dict is cleared on exit.

    Args:
        model: the network.
        names: submodule names as in ``model.named_modules()`` (e.g. ``"net.3"``).

    Yields:
        dict name -> the module's output tensor.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
        >>> with capture_features(net, ["1"]) as feats:
        ...     _ = net(torch.zeros(3, 2))
        ...     feats["1"].shape
        torch.Size([3, 4])
    """
    if isinstance(names, str):
        names = [names]
    store: dict[str, Tensor] = {}
    handles = []
    try:
        for name in names:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                valid = [n for n, _ in model.named_modules() if n]
                raise ValueError(
                    f"feature module {name!r} is not a submodule of {type(model).__name__}; "
                    f"choose one of {valid[:20]}{' ...' if len(valid) > 20 else ''}."
                ) from None

            def hook(_m: nn.Module, _in: object, out: Tensor, name: str = name) -> None:
                if not isinstance(out, Tensor):
                    raise TypeError(
                        f"feature module {name!r} returned {type(out).__name__}, not a tensor; "
                        "hook a submodule whose output is a (B, ...) tensor."
                    )
                store[name] = out

            handles.append(module.register_forward_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()
        store.clear()
