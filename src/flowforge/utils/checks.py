"""Input validation that raises errors naming the argument, the bad value and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch
from torch import Tensor

__all__ = ["check_choice", "check_finite", "check_same_shape", "check_time", "check_batch"]


def check_choice(name: str, value: object, valid: Iterable[str]) -> None:
    """Raise ``ValueError`` if ``value`` is not one of ``valid``, suggesting the closest name.

    Example:
        >>> check_choice("solver", "heun", ["euler", "heun"])
    """
    valid = list(valid)
    if value in valid:
        return
    close = difflib.get_close_matches(str(value), valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{name}={value!r} is not valid; choose one of {valid}.{hint}")


def check_finite(name: str, x: Tensor) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or infinite values."""
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).nonzero()[0].tolist()
        raise ValueError(
            f"{name} contains non-finite values (first at index {bad}); "
            "clean or impute the data before passing it."
        )


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; "
            "they must match."
        )


def check_batch(name: str, value: Tensor | None, batch: int, ref: str = "x") -> None:
    """Raise ``ValueError`` unless ``value`` is None or has leading dimension ``batch``."""
    if value is not None and (value.dim() == 0 or value.shape[0] != batch):
        raise ValueError(
            f"{name} has shape {tuple(value.shape)} but {ref} has batch size {batch}; "
            f"pass one {name} per example (leading dimension {batch})."
        )


def check_time(name: str, t: Tensor, batch: int | None = None) -> None:
    """Raise ``ValueError`` unless ``t`` is 1-D (length ``batch`` if given) within [0, 1]."""
    if t.dim() != 1 or (batch is not None and t.shape[0] != batch):
        want = f"({batch},)" if batch is not None else "(B,)"
        raise ValueError(
            f"{name} has shape {tuple(t.shape)}; expected {want}, one time per example."
        )
    if t.numel() and (t.min() < 0 or t.max() > 1):
        raise ValueError(
            f"{name} has values in [{t.min().item():.4g}, {t.max().item():.4g}]; "
            "times must lie in [0, 1] (t = 0 noise, t = 1 data)."
        )
