"""Classic flows from zuko (MAF, NSF) behind this package's contract, for comparison.

zuko is an optional extra (``pip install 'flowforge[zuko]'``); nothing here is rewritten: the
adapter calls zuko's transform for ``forward`` (with its log-determinant) and its inverse for
``inverse``. Labels become one-hot context (the null class K included, so label dropout works).

References:
    Masked Autoregressive Flow for Density Estimation (Papamakarios et al., 2017),
    arXiv:1705.07057. Neural Spline Flows (Durkan et al., 2019), arXiv:1906.04032.
    zuko (Rozet et al.), https://github.com/probabilists/zuko.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.nf.base import NormalizingFlow

__all__ = ["ZukoFlow", "zuko_flow"]


def _zuko():
    try:
        import zuko
    except ImportError as e:
        raise ImportError(
            "the zuko flows (MAF, NSF) need the zuko package, from the [zuko] extra: pip install "
            "'flowforge[zuko]'."
        ) from e
    return zuko


class ZukoFlow(NormalizingFlow):
    """A zuko ``Flow`` as a ``NormalizingFlow`` on (D,) vectors.

    Args:
        flow: a ``zuko.flows.Flow`` with a standard-normal base.
        features: D.
        num_classes: K (its context is a one-hot of K + 1 entries), or 0.
    """

    def __init__(self, flow: nn.Module, features: int, num_classes: int = 0) -> None:
        super().__init__()
        self.flow = flow
        self.event_shape = (features,)
        self.num_classes = num_classes

    def _context(self, cond: Tensor | None, n: int, device) -> Tensor | None:
        if self.num_classes == 0:
            return None
        if cond is None:
            cond = torch.full((n,), self.num_classes, dtype=torch.long, device=device)
        return F.one_hot(cond.long(), self.num_classes + 1).float()

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        transform = self.flow.transform(self._context(cond, len(x), x.device))
        return transform.call_and_ladj(x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.flow.transform(self._context(cond, len(z), z.device)).inv(z)


def zuko_flow(
    kind: Literal["maf", "nsf"],
    features: int,
    num_classes: int = 0,
    transforms: int = 5,
    hidden: tuple[int, ...] = (128, 128),
    bins: int = 8,
) -> ZukoFlow:
    """zuko's MAF or NSF (``bins`` spline bins) with ``transforms`` autoregressive transforms of
    ``hidden`` MLPs, as a ``ZukoFlow``.

    Raises:
        ImportError: zuko is not installed (the message names the extra).
    """
    zuko = _zuko()
    context = num_classes + 1 if num_classes else 0
    common = dict(features=features, context=context, transforms=transforms)
    if kind == "maf":
        flow = zuko.flows.MAF(**common, hidden_features=hidden)
    elif kind == "nsf":
        flow = zuko.flows.NSF(**common, bins=bins, hidden_features=hidden)
    else:
        raise ValueError(f"kind={kind!r} must be 'maf' or 'nsf'.")
    return ZukoFlow(flow, features, num_classes)
