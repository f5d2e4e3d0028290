"""Exponential moving average of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

__all__ = ["EMA", "initial_share"]


def initial_share(decay: float, warmup: bool, updates: int) -> float:
    """The weight the initial (untrained) weights keep in an EMA after ``updates`` updates:
    the product of the decays, ``decay ** updates`` without warm-up.

    Example:
        >>> round(initial_share(0.999, False, 300), 3), initial_share(0.999, True, 300) < 1e-6
        (0.741, True)
    """
    if not warmup:
        return decay**updates
    share = 1.0
    for n in range(updates):
        share *= min(decay, (1 + n) / (10 + n))
        if share < 1e-12:  # gone for good
            return 0.0
    return share


class EMA:
    """Shadow copy of a model whose weights track ``theta_ema <- d * theta_ema + (1 - d) * theta``.

    After ``n`` updates with constant weights ``theta`` the shadow is
    ``theta + d^n (theta_ema_0 - theta)``. Floating-point buffers (e.g. batch-norm statistics)
    are averaged like parameters; integer buffers are copied.

    With ``warmup=True`` the decay of update ``n`` (0-indexed) is ``min(d, (1 + n) / (10 + n))``,
    so early, mostly random weights are forgotten quickly (the schedule of
    ``tf.train.ExponentialMovingAverage`` with ``num_updates``). ``train()`` uses it when
    ``TrainConfig.ema_warms_up`` (``ema_warmup=True``, or automatically for short runs), else the
    constant decay.

    Args:
        model: the network to track; copied with ``copy.deepcopy`` (unwrap ``torch.compile`` and
            DDP wrappers first).
        decay: ``d`` in [0, 1).
        warmup: use the warm-up schedule above.

    Example:
        >>> net = torch.nn.Linear(1, 1, bias=False)
        >>> _ = net.weight.data.fill_(0.0)
        >>> ema = EMA(net, decay=0.5)
        >>> _ = net.weight.data.fill_(1.0)
        >>> for _ in range(3):
        ...     ema.update(net)
        >>> ema.module.weight.item()  # 1 - 0.5 ** 3
        0.875
    """

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = False) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(
                f"decay={decay} is out of range; use a value in [0, 1) such as 0.999."
            )
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """Decay used by the next :meth:`update`."""
        if self.warmup:
            return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow towards ``model``'s current weights by one step."""
        weight = 1.0 - self.current_decay()
        shadow, current = [], []
        for s, p in zip(self.module.parameters(), model.parameters(), strict=True):
            shadow.append(s)
            current.append(p.detach())
        for s, b in zip(self.module.buffers(), model.buffers(), strict=True):
            if s.is_floating_point():
                shadow.append(s)
                current.append(b)
            else:
                s.copy_(b)
        if shadow:
            torch._foreach_lerp_(shadow, current, weight)  # s += w * (p - s), one fused kernel
        self.num_updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The shadow module's ``state_dict`` (tensors only, ready for safetensors)."""
        return self.module.state_dict()

    def load_state_dict(
        self, state_dict: dict[str, Tensor], num_updates: int | None = None
    ) -> None:
        """Load shadow weights (and optionally the update counter used by the warm-up)."""
        self.module.load_state_dict(state_dict)
        if num_updates is not None:
            self.num_updates = num_updates
