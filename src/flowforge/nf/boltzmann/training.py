"""Training a flow as a Boltzmann proposal: maximum likelihood, reverse KL, self-improvement.

    maximum likelihood   -log q(x) / D on samples of the target (MD or exact): ``FlowNLLLoss``
    reverse KL           KL(q || p) + log Z = E_q[log q(x) + E(x)], x = rsample (reparameterised)
    self-improvement     each round: draw from q, SNIS-reweight (quantile filter), resample into
                         a buffer, then fit the buffer with a teacher regulariser (card 19):
                         L = -log q(x) / D + lambda_T (log q(x) - log q_teacher(x))^2

Objectives follow the package's contract ``objective(model, x, cond, generator) -> (B,)`` so the
one ``train()`` runs them; ``self_improve`` is the loop of rounds in plain PyTorch.

References:
    Amortized Sampling with Transferable Normalizing Flows (Tan et al., 2025), arXiv:2508.18175.
    Boltzmann Generators (Noé et al., 2019), arXiv:1812.01729 (reverse KL).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowforge.nf.boltzmann.energies import Energy
from flowforge.nf.boltzmann.snis import snis
from flowforge.nf.objective import flow_log_prob

__all__ = [
    "ReverseKL",
    "RoundResult",
    "SelfImprovementLoss",
    "TeacherRegularisedNLL",
    "self_improve",
]


def _flow(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # a DDP wrapper's flow


class ReverseKL:
    """Reverse KL per sample and dimension, (log q(x) + E(x)) / D with x ~ q reparameterised.

    The ``x`` a training loop hands in only sets the batch size (the samples are the flow's
    own); samples whose energy is not finite contribute zero (their count is ``skipped``).

    Args:
        target: the energy.

    Example:
        >>> from flowforge.nf.boltzmann.energies import GaussianMixture
        >>> from flowforge.nf.boltzmann.snis import DiagonalGaussian
        >>> q = DiagonalGaussian(torch.zeros(2), torch.ones(2))
        >>> loss = ReverseKL(GaussianMixture(modes=1, scale=0.0, std=1.0))(q, torch.zeros(4096, 2))
        >>> abs(loss.mean().item()) < 0.05  # q = p: KL = 0 (log Z = 0)
        True
    """

    def __init__(self, target: Energy) -> None:
        self.target = target
        self.skipped = 0

    def __call__(
        self, model: nn.Module, x: Tensor, cond: Tensor | None = None, generator=None
    ) -> Tensor:
        flow = _flow(model)
        if not hasattr(flow, "rsample"):
            raise TypeError(
                f"reverse KL needs reparameterised samples; {type(flow).__name__} has no rsample "
                "(give a NormalizingFlow of flowforge.nf)."
            )
        y = flow.rsample(len(x), cond, generator)
        e = self.target.energy(y)
        per_sample = (flow_log_prob(model, y, cond) + e) / self.target.dim
        finite = torch.isfinite(per_sample)
        self.skipped += int((~finite).sum())
        return torch.where(finite, per_sample, torch.zeros_like(per_sample))


class TeacherRegularisedNLL:
    """-log q(x) / D + weight (log q(x) - log q_teacher(x))^2 per example (card 19).

    Args:
        teacher: a frozen copy of the pre-trained flow (its log-density on the batch).
        weight: lambda_T (0.5 in the card).
    """

    def __init__(self, teacher: nn.Module, weight: float = 0.5) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = weight

    def __call__(
        self, model: nn.Module, x: Tensor, cond: Tensor | None = None, generator=None
    ) -> Tensor:
        log_q = flow_log_prob(model, x, cond)
        D = x[0].numel()
        if self.weight == 0:
            return -log_q / D
        with torch.no_grad():
            log_t = self.teacher.log_prob(x, cond)
        return -log_q / D + self.weight * (log_q - log_t).square()


class SelfImprovementLoss:
    """Self-improvement as one objective for a training loop: every ``refresh_every`` calls
    the buffer is redrawn from the flow being trained (``buffer`` proposals, SNIS-reweighted
    with the top ``quantile`` of log w dropped, resampled), and each call fits a batch of the
    buffer with ``TeacherRegularisedNLL``.

    The ``x`` a loop hands in only sets the batch size. State (the buffer, the calls, the ESS
    history) is in ``state_dict`` so a resumed run continues where it stopped.

    Args:
        target: the energy.
        teacher: the frozen pre-trained flow.
        buffer: proposals drawn per refresh.
        refresh_every: calls between refreshes.
        teacher_weight: lambda_T.
        quantile: SNIS's top log-weight quantile dropped.
        energy_cutoff: drop proposals with energies above it (None: none).
    """

    def __init__(
        self,
        target: Energy,
        teacher: nn.Module,
        buffer: int = 20000,
        refresh_every: int = 250,
        teacher_weight: float = 0.5,
        quantile: float = 0.002,
        energy_cutoff: float | None = None,
    ) -> None:
        self.target, self.size, self.refresh_every = target, buffer, refresh_every
        self.loss = TeacherRegularisedNLL(teacher, teacher_weight)
        self.quantile, self.energy_cutoff = quantile, energy_cutoff
        self.calls, self.buffer = 0, None
        self.history: list[float] = []

    def __call__(
        self, model: nn.Module, x: Tensor, cond: Tensor | None = None, generator=None
    ) -> Tensor:
        if self.buffer is None or self.calls % self.refresh_every == 0:
            flow = _flow(model)
            was_training = flow.training
            flow.eval()
            drawn = snis(flow, self.target, self.size, None, self.energy_cutoff, self.quantile,
                         generator=generator)  # fmt: skip
            self.history.append(drawn.weights.ess / self.size)
            self.buffer = drawn.resample(self.size, generator).detach()
            flow.train(was_training)
        self.calls += 1
        idx = torch.randint(self.size, (len(x),), generator=generator, device=self.buffer.device)
        return self.loss(model, self.buffer[idx].to(x), cond)

    def state_dict(self) -> dict:
        """The buffer, the call count and the ESS history."""
        return {"calls": self.calls, "buffer": self.buffer, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict``'s values."""
        self.calls, self.buffer = int(state["calls"]), state["buffer"]
        self.history = [float(v) for v in state["history"]]


@dataclass
class RoundResult:
    """One self-improvement round: the proposal's ESS / n and log Z before the round's fit."""

    ess_fraction: float
    log_z: float
    log_z_se: float


def self_improve(
    flow: nn.Module,
    target: Energy,
    rounds: int = 5,
    samples: int = 20000,
    steps: int = 200,
    batch: int = 256,
    lr: float = 1e-3,
    teacher_weight: float = 0.5,
    quantile: float = 0.002,
    generator: torch.Generator | None = None,
    cond: Tensor | None = None,
) -> list[RoundResult]:
    """Fine-tune ``flow`` in place on its own reweighted samples, ``rounds`` times.

    Each round draws ``samples`` proposals, reweights them by SNIS (top ``quantile`` of log w
    dropped), resamples a buffer of the same size with the weights, and takes ``steps`` AdamW
    steps (betas 0.9/0.95, weight decay 4e-4, cosine decay of ``lr``) of
    ``TeacherRegularisedNLL`` on batches of the buffer; the teacher is the flow as it was
    before the first round. ``cond`` (1, F): the system of a transferable flow, fine-tuned on
    that system alone.

    Returns:
        One ``RoundResult`` per round plus a last one of the final flow (``rounds + 1``).
    """
    teacher = copy.deepcopy(flow)
    loss = TeacherRegularisedNLL(teacher, teacher_weight)
    history = []
    for r in range(rounds + 1):
        flow.eval()
        drawn = snis(flow, target, samples, cond, quantile=quantile, generator=generator)
        log_z, se = drawn.weights.log_z()
        history.append(RoundResult(drawn.weights.ess / samples, log_z, se))
        if r == rounds:
            break
        buffer = drawn.resample(samples, generator)
        flow.train()
        opt = torch.optim.AdamW(flow.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=4e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for _ in range(steps):
            idx = torch.randint(samples, (batch,), generator=generator)
            c = None if cond is None else cond.expand(batch, -1)
            value = loss(flow, buffer[idx], c).mean()
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            sched.step()
    flow.eval()
    return history
