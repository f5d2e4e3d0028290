"""Gradient averaging across ``torch.distributed`` ranks for networks outside the DDP wrapper."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

__all__ = ["average_gradients", "unwrap_ddp"]


def unwrap_ddp(model):
    """The network inside a ``DistributedDataParallel`` wrapper, or ``model`` itself.

    Forward-mode AD (``torch.func.jvp``) cannot run through the wrapper; objectives that need
    a JVP take the tangent from the inner network and the output (with its gradient) from the
    wrapper, so DDP still averages the gradients.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> unwrap_ddp(net) is net
        True
    """
    return model.module if isinstance(model, DistributedDataParallel) else model


def average_gradients(module: torch.nn.Module) -> None:
    """Average ``module``'s gradients over the ranks in place (a no-op when not distributed).

    For networks an objective trains itself, beside the DDP-wrapped model (FreeFlow's fake
    velocity net): with equal initial weights and averaged gradients every rank keeps the same
    copy, as DDP does for the model.

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> net(torch.ones(1, 2)).sum().backward()
        >>> average_gradients(net)  # single process: unchanged
        >>> net.weight.grad.tolist()
        [[1.0, 1.0]]
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return
    W = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(W)
