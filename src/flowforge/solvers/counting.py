"""Counting field evaluations (NFE), the cost measure every sampler comparison reports."""

from __future__ import annotations

from torch import Tensor, nn

from flowforge.protocols import Field

__all__ = ["CountingField"]


class CountingField(nn.Module):
    """Wrap a field and count its calls; the wrapper keeps the field contract.

    One call with a batch of B examples is one function evaluation (NFE), however large B is.
    A wrapped ``nn.Module`` is registered as a submodule, so its parameters stay visible.

    Args:
        field: any ``field(x, t, cond) -> Tensor``.

    Attributes:
        nfe: the number of calls since construction or the last :meth:`reset`.

    Example:
        >>> import torch
        >>> f = CountingField(lambda x, t, cond=None: -x)
        >>> _ = f(torch.ones(4, 2), torch.zeros(4)); _ = f(torch.ones(4, 2), torch.zeros(4))
        >>> f.nfe
        2
    """

    def __init__(self, field: Field) -> None:
        super().__init__()
        self.field = field
        self.nfe = 0

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args: x: (B, ...); t: (B,); cond: optional. Returns: field(x, t, cond)."""
        self.nfe += 1
        return self.field(x, t, cond)

    def reset(self) -> None:
        """Set the count back to zero."""
        self.nfe = 0
