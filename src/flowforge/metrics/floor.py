"""The finite-sample floor of a sample-based metric: its value between two fresh target draws.

A distance between n generated samples and n target samples never reaches 0 even for a perfect
model, because two independent n-sample sets of the same distribution differ. Report every
metric beside this floor (DESIGN.md, "Evaluation").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["finite_sample_floor"]


@torch.no_grad()
def finite_sample_floor(
    metric: Callable[[Tensor, Tensor], Tensor],
    sample_target: Callable[[int, torch.Generator | None], Tensor | tuple[Tensor, ...]],
    n: int,
    repeats: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Median over ``repeats`` of ``metric(A, B)`` for two fresh independent target sets A, B.

    For r = 1..repeats: A_r = sample_target(n, generator), B_r = sample_target(n, generator)
    (in that order, from the same generator), floor = median_r metric(A_r, B_r). Bind any other
    argument of the metric first, e.g. ``lambda a, b: sliced_wasserstein(a, b, generator=g)``.
    Evaluated without gradients.

    Args:
        metric: ``metric(a, b) -> ()`` tensor, e.g. ``sliced_wasserstein`` or ``wasserstein2``.
        sample_target: ``sample_target(n, generator)`` drawing n target samples (n, ...); if it
            returns a tuple (like the ``flowforge.data`` toy samplers' ``(x, labels)``), its
            first element is used.
        n: samples per set; use the size the generated samples are evaluated with.
        repeats: independent pairs; the median is robust to an unlucky draw.
        generator: random source passed to ``sample_target``.

    Returns:
        () the median metric value (the mean of the two middle values for even ``repeats``).

    Example:
        >>> def target(n, generator=None):
        ...     return torch.randn(n, 2, generator=generator)
        >>> def mean_gap(a, b):
        ...     return (a.mean(0) - b.mean(0)).norm()
        >>> g = torch.Generator().manual_seed(0)
        >>> bool(finite_sample_floor(mean_gap, target, 1000, repeats=3, generator=g) < 0.2)
        True
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}; pass the positive number of samples per set.")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r}; pass a positive number of independent pairs.")

    def draw() -> Tensor:
        sample = sample_target(n, generator)
        return sample[0] if isinstance(sample, (tuple, list)) else sample

    values = []
    for _ in range(repeats):
        a = draw()
        b = draw()
        values.append(torch.as_tensor(metric(a, b)).reshape(()))
    values = torch.stack(values)
    return values.quantile(0.5) if values.is_floating_point() else values.median()
