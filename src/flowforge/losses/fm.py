"""The conditional flow-matching objective."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from flowforge.losses.distances import mse, pseudo_huber
from flowforge.losses.time_samplers import UniformTime
from flowforge.paths.affine import CondOTPath
from flowforge.paths.base import ProbPath
from flowforge.protocols import Coupling, Field, TimeSampler
from flowforge.utils import check_batch, check_choice, check_finite, randn_like_gen

__all__ = ["FlowMatchingLoss", "Distance"]

Distance = Literal["mse", "pseudo_huber"]


class FlowMatchingLoss:
    """Conditional flow matching: regress the field on the path's conditional velocity.

    L(theta) = w(t) d(v_theta(x_t, t, c), dx_t),  t ~ pi(t),  (x_0, x_1) ~ coupling,
    x_t and dx_t from the path (Lipman et al., Eq. 9; with an OT coupling, Tong et al., Eq. 18).
    One value per example; the caller reduces.

    Args:
        path: the probability path (default: the straight line, rectified flow).
        time_sampler: pi(t), a callable ``(n, generator, device, dtype) -> (n,)``.
        coupling: pairs noise with data before interpolation (default: independent).
        distance: ``"mse"`` or ``"pseudo_huber"``.
        huber_c: pseudo-Huber scale; None is 0.00054 * dim (rf++ code).
        weighting: optional ``w(t) -> (B,)`` loss weights.
        debug: check the data for non-finite values and the path inputs on every call (costs
            device syncs).

    References:
        Flow Matching for Generative Modeling (Lipman et al., 2023), arXiv:2210.02747.
        Improving and Generalizing Flow-Based Generative Models with Minibatch Optimal Transport
        (Tong et al., 2024), arXiv:2302.00482.

    Example:
        >>> loss = FlowMatchingLoss()
        >>> field = lambda x, t, cond=None: torch.zeros_like(x)
        >>> loss(field, torch.randn(8, 2), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([8])
    """

    def __init__(
        self,
        path: ProbPath | None = None,
        time_sampler: TimeSampler | None = None,
        coupling: Coupling | None = None,
        distance: Distance = "mse",
        huber_c: float | None = None,
        weighting: Callable[[Tensor], Tensor] | None = None,
        debug: bool = False,
    ) -> None:
        check_choice("distance", distance, ("mse", "pseudo_huber"))
        if huber_c is not None and distance != "pseudo_huber":
            raise ValueError(
                f"huber_c={huber_c!r} is only used with distance='pseudo_huber' (got "
                f"distance={distance!r}); drop huber_c or switch the distance."
            )
        self.path = CondOTPath() if path is None else path
        self.time_sampler = UniformTime() if time_sampler is None else time_sampler
        self.coupling = coupling
        self.distance = distance
        self.huber_c = huber_c
        self.weighting = weighting
        self.debug = debug

    def __call__(
        self,
        model: Field,
        x_1: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
        x_0: Tensor | None = None,
    ) -> Tensor:
        """Args: x_1 (B, ...) data; cond (B, ...) or None; x_0 (B, ...) source, default N(0, I).

        Returns: (B,) per-example losses.
        """
        check_batch("cond", cond, x_1.shape[0], ref="x_1")
        if self.debug:
            check_finite("x_1", x_1)
        if x_0 is None:
            x_0 = randn_like_gen(x_1, generator)
        if self.coupling is not None:
            x_0, x_1, cond = self.coupling(x_0, x_1, cond, generator=generator)
        t = self.time_sampler(
            x_1.shape[0], generator=generator, device=x_1.device, dtype=x_1.dtype
        )
        s = self.path.sample(x_0, x_1, t, validate=self.debug)  # t in [0, 1] by construction
        pred = model(s.x_t, t, cond)
        if self.distance == "mse":
            loss = mse(pred, s.dx_t)
        else:
            loss = pseudo_huber(pred, s.dx_t, self.huber_c)
        return loss if self.weighting is None else self.weighting(t) * loss
