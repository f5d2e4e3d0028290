"""Transferable proposals (Prose): one flow conditioned on the system, q(x | c), trained on a
family of targets and used zero-shot on systems it never saw, then fine-tuned on one.

    fit_family   maximum likelihood over systems (c_k, p_k): each step draws ``systems_per_step``
                 systems and batch / systems_per_step exact samples of each, -log q(x | c) / D
    then         snis(flow, target, n, cond=c_new) on an unseen system, and
                 self_improve(flow, target, cond=c_new) to fine-tune on it

A flow whose condition is a feature vector (``TransformerFlowConfig(cond_features=F)``, or a
zuko flow with context) is a transferable proposal; the system's parameters are its condition.

References:
    Amortized Sampling with Transferable Normalizing Flows (Tan et al., 2025), arXiv:2508.18175.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowforge.nf.boltzmann.energies import Energy
from flowforge.nf.objective import flow_log_prob

__all__ = ["fit_family"]


def fit_family(
    flow: nn.Module,
    systems: Sequence[tuple[Tensor, Energy]],
    steps: int = 1000,
    batch: int = 256,
    lr: float = 1e-3,
    systems_per_step: int = 4,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Train ``flow`` (conditioned on (F,) system features) by maximum likelihood on exact
    samples of every system in ``systems`` (``(features, energy)`` pairs of energies with
    ``sample``); AdamW with cosine decay of ``lr``. Returns the loss per step."""
    if not systems:
        raise ValueError("systems is empty; give (features, energy) pairs of the family.")
    if any(not e.exact for _, e in systems):
        raise ValueError("fit_family draws exact samples; every energy needs one (e.exact).")
    m = min(systems_per_step, len(systems))
    per = max(batch // m, 1)
    opt = torch.optim.AdamW(flow.parameters(), lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    dtype = next(flow.parameters()).dtype
    losses = []
    flow.train()
    for _ in range(steps):
        picks = torch.randperm(len(systems), generator=generator)[:m].tolist()
        x = torch.cat([systems[k][1].sample(per, generator) for k in picks]).to(dtype)
        c = torch.cat([systems[k][0].to(dtype).expand(per, -1) for k in picks])
        loss = -(flow_log_prob(flow, x, c) / x[0].numel()).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    flow.eval()
    return losses
