"""The probability-path interface: what a field should learn at each time."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from torch import Tensor

from flowforge.utils import check_same_shape, check_time

__all__ = ["PathSample", "ProbPath"]


@dataclass
class PathSample:
    """A point on a conditional path and its regression target.

    Attributes:
        x_t: (B, ...) the interpolated state.
        dx_t: (B, ...) the conditional velocity d x_t / dt, the flow-matching target.
        t: (B,) the times.
        x_0: (B, ...) the source endpoint (noise).
        x_1: (B, ...) the data endpoint.
    """

    x_t: Tensor
    dx_t: Tensor
    t: Tensor
    x_0: Tensor
    x_1: Tensor


class ProbPath(abc.ABC):
    """A family of conditional paths from ``x_0`` (t = 0, noise) to ``x_1`` (t = 1, data)."""

    @abc.abstractmethod
    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor, validate: bool = True) -> PathSample:
        """Args: x_0, x_1: (B, ...); t: (B,). Returns: PathSample with x_t, dx_t of (B, ...).

        ``validate=False`` skips the shape and time-range checks (the range check reduces over
        t and, on a GPU, waits for the device); objectives that draw t themselves use it.
        """

    @staticmethod
    def _check(x_0: Tensor, x_1: Tensor, t: Tensor) -> None:
        check_same_shape("x_0", x_0, "x_1", x_1)
        check_time("t", t, batch=x_1.shape[0])
