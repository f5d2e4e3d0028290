"""Protocols shared by every layer: the field contract and the time-sampler contract."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["Field", "FlowMap", "TimeSampler", "Coupling"]


@runtime_checkable
class Field(Protocol):
    """A time-dependent vector field ``model(x, t, cond=None) -> Tensor``.

    ``x`` is ``(B, ...)``, ``t`` is ``(B,)`` in [0, 1] (t = 0 noise, t = 1 data) and the output has
    the shape of ``x``. Velocity, x_1-prediction, epsilon-prediction and score networks all share
    this signature; wrappers in ``flowforge.paths`` convert between them.
    """

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class FlowMap(Protocol):
    """A two-time map ``X(x, s, t, cond=None) -> Tensor`` transporting ``x`` from time s to t."""

    def __call__(self, x: Tensor, s: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class TimeSampler(Protocol):
    """Draws ``n`` training times in [0, 1] as a ``(n,)`` tensor."""

    def __call__(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor: ...


@runtime_checkable
class Coupling(Protocol):
    """Pairs source and data samples: ``(x_0, x_1, cond) -> (x_0, x_1, cond)`` reordered."""

    def __call__(
        self,
        x_0: Tensor,
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]: ...
