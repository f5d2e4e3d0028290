"""AC-Flow: ORW-CFM-W2 (``orw.py``) with shaped rewards, a critic and clipped advantages.

The update of ORW-CFM-W2 (x_1 from the lagged policy, the FM path states x_t, L_FM and L_W2 to
the frozen reference) with the weights computed from a critic instead of the raw reward:

    r~  = (r - mean) / (std + eps) [, tanh]                  shaped rewards (B,)
    L_V = mean (V_phi(x_t, t) - r~)^2                          critic on the FM path states
    A   = clip(r~ - V_phi(x_t, t), -c_A, c_A),  w = f(beta A)  per (sample, t), detached
    L   = w * L_FM + alpha * L_W2                              (B,), averaged

The first K_w updates train the critic only (the actor takes plain ORW weights f(beta r~) or
no update). Two forms: :class:`ACFlow` takes the reward and both optimizers per update
(``step``); :class:`ACFlowObjective` binds a reward, owns the critic's optimizer and is a
``train()`` objective returning the actor's (B,) loss.

References:
    Fine-tuning Flow Matching Generative Models with Intermediate Feedback (Fan, Cheng, Shen,
    Zhou, Liu, 2025), arXiv:2510.18072 (AC-Flow).
    Online Reward-Weighted Fine-Tuning of Flow Matching with Wasserstein Regularization
    (Fan, Shen, Cheng, Chen, Liang, Liu, 2025), arXiv:2502.06061 (ORW-CFM-W2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from flowforge.finetune.orw import (
    Weighting,
    _check_common,
    _check_reward,
    _fm_w2,
    _frozen,
    _Rollouts,
    _stats,
    _update,
    reward_weights,
)
from flowforge.finetune.rewards import Reward
from flowforge.losses.fm import FlowMatchingLoss
from flowforge.models.layers import SinusoidalEmbedding, make_activation
from flowforge.models.mlp import MLPConfig
from flowforge.solvers.ode import ODEMethod
from flowforge.utils import check_choice

__all__ = [
    "ACFlow",
    "ACFlowConfig",
    "ACFlowObjective",
    "RewardShaper",
    "RewardShaping",
    "ValueMLP",
    "WarmupActor",
]

RewardShaping = Literal["batch", "running", "none"]
WarmupActor = Literal["orw", "none"]


class RewardShaper:
    """Shaped rewards r~ = (r - m) / (s + eps), optionally squashed by tanh (AC-Flow).

    ``"batch"``: m, s are the batch mean and standard deviation; ``"running"``: exponential
    moving averages of them, m <- mu m + (1 - mu) mean_b, s^2 <- mu s^2 + (1 - mu) var_b,
    updated with each batch before it is shaped (the first batch sets them); ``"none"``: r~ = r.
    ``squash`` bounds the critic's target range to (-1, 1).

    Args:
        mode: ``"batch"``, ``"running"`` or ``"none"``.
        squash: apply tanh after normalising.
        momentum: mu of the running statistics, in [0, 1).
        eps: added to s.

    Example:
        >>> r = RewardShaper()(torch.tensor([0.0, 2.0, 0.0, 2.0]))  # mean 1, std 1
        >>> [round(v, 4) for v in r.tolist()]
        [-1.0, 1.0, -1.0, 1.0]
    """

    def __init__(
        self,
        mode: RewardShaping = "batch",
        squash: bool = False,
        momentum: float = 0.99,
        eps: float = 1e-6,
    ) -> None:
        check_choice("shaping", mode, ("batch", "running", "none"))
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum={momentum!r} must lie in [0, 1), e.g. 0.99.")
        if not eps > 0:
            raise ValueError(f"eps={eps!r} must be > 0, e.g. 1e-6.")
        self.mode, self.squash, self.momentum, self.eps = mode, squash, momentum, eps
        self.mean: float | None = None
        self.var: float | None = None

    def __call__(self, r: Tensor) -> Tensor:
        """Args: r (B,) rewards. Returns: (B,) shaped rewards (updates the running stats)."""
        if self.mode == "none":
            r_s = r
        else:
            mean, var = r.mean().item(), r.var(correction=0).item()
            if self.mode == "running" and self.mean is not None:
                mu = self.momentum
                mean, var = mu * self.mean + (1 - mu) * mean, mu * self.var + (1 - mu) * var
            if self.mode == "running":
                self.mean, self.var = mean, var
            r_s = (r - mean) / (math.sqrt(var) + self.eps)
        return torch.tanh(r_s) if self.squash else r_s

    def state_dict(self) -> dict[str, float | None]:
        """The running mean and variance (None until the first ``"running"`` batch)."""
        return {"mean": self.mean, "var": self.var}

    def load_state_dict(self, state: dict[str, float | None]) -> None:
        """Restore :meth:`state_dict`."""
        self.mean, self.var = state["mean"], state["var"]


class ValueMLP(nn.Module):
    """A critic V_phi(x_t, t) -> (B,): MLP([flatten(x_t), e(t)]) with a scalar head.

    The layers of ``MLPField`` (``depth`` hidden layers of width ``hidden``, sinusoidal or raw
    time features) built from the same ``MLPConfig``, with one output instead of D.

    Args:
        config: ``MLPConfig`` with dim = D features of x; num_classes = 0 and n_times = 1.

    Example:
        >>> V = ValueMLP(MLPConfig(dim=2, hidden=16, depth=2))
        >>> V(torch.randn(5, 2), torch.rand(5)).shape
        torch.Size([5])
    """

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        c = config
        if c.num_classes != 0 or c.n_times != 1:
            raise ValueError(
                f"ValueMLP takes an unconditional one-time MLPConfig; got num_classes="
                f"{c.num_classes}, n_times={c.n_times}. Pass num_classes=0, n_times=1."
            )
        if min(c.dim, c.hidden, c.depth) < 1 or c.time_embed_dim < 0:
            raise ValueError(
                f"MLPConfig(dim={c.dim}, hidden={c.hidden}, depth={c.depth}, time_embed_dim="
                f"{c.time_embed_dim}); dim, hidden and depth must be >= 1, time_embed_dim >= 0."
            )
        self.config = c
        self.time_embed = SinusoidalEmbedding(c.time_embed_dim) if c.time_embed_dim > 0 else None
        layers: list[nn.Module] = [
            nn.Linear(c.dim + (c.time_embed_dim or 1), c.hidden),
            make_activation(c.activation),
        ]
        for _ in range(c.depth - 1):
            layers += [nn.Linear(c.hidden, c.hidden), make_activation(c.activation)]
        layers.append(nn.Linear(c.hidden, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Args: x (B, ...) with D features; t (B,). Returns: (B,) values."""
        B = x.shape[0]
        if x[0].numel() != self.config.dim or t.shape != (B,):
            raise ValueError(
                f"ValueMLP got x {tuple(x.shape)} and t {tuple(t.shape)}; pass x (B, ...) with "
                f"MLPConfig.dim={self.config.dim} features and t of shape (B,)."
            )
        t = t.to(x.dtype)
        t_in = t[:, None] if self.time_embed is None else self.time_embed(t)
        return self.net(torch.cat([x.reshape(B, -1), t_in], 1)).squeeze(1)  # (B,)


@dataclass
class ACFlowConfig:
    """Hyperparameters of :class:`ACFlow` (card 14's suggested defaults where it gives them).

    Args:
        beta: temperature of w = f(beta A) (card: 0.5 - 2).
        alpha: weight of the W2 term toward the reference (card: 1).
        clip_advantage: c_A, in units of the shaped reward; ``math.inf`` disables clipping.
        warmup_updates: K_w critic-only updates (card: 5 - 10 % of the run).
        warmup_actor: the actor during warm-up: ``"orw"`` (plain weights f(beta r~)) or
            ``"none"`` (no actor update).
        shaping: ``"batch"``, ``"running"`` or ``"none"`` (see :class:`RewardShaper`).
        squash: tanh after normalising the reward.
        momentum: of the running reward statistics.
        weighting: f, ``"softmax"`` (B softmax_batch(beta A), the card's form) or ``"exp"``.
        batch_size, sample_steps, solver, refresh_every, grad_clip: as in
            :class:`~flowforge.finetune.orw.ORWConfig`; grad_clip also clips the critic's
            gradient (under ``train()`` only the critic's: ``train.grad_clip`` clips the actor).

    Example:
        >>> ACFlowConfig(clip_advantage=math.inf).clip_advantage
        inf
    """

    beta: float = 1.0
    alpha: float = 1.0
    clip_advantage: float = 2.0
    warmup_updates: int = 50
    warmup_actor: WarmupActor = "orw"
    shaping: RewardShaping = "batch"
    squash: bool = False
    momentum: float = 0.99
    weighting: Weighting = "softmax"
    batch_size: int = 256
    sample_steps: int = 16
    solver: ODEMethod = "euler"
    refresh_every: int = 1
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        _check_common(self, "ACFlowConfig")
        if not self.clip_advantage > 0:  # also refuses NaN
            raise ValueError(
                f"ACFlowConfig.clip_advantage={self.clip_advantage!r} must be > 0 (card: 2; "
                "math.inf disables clipping)."
            )
        w = self.warmup_updates
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise ValueError(f"ACFlowConfig.warmup_updates={w!r} must be an integer >= 0.")
        check_choice("ACFlowConfig.warmup_actor", self.warmup_actor, ("orw", "none"))
        check_choice("ACFlowConfig.shaping", self.shaping, ("batch", "running", "none"))
        if not 0 <= self.momentum < 1:
            raise ValueError(f"ACFlowConfig.momentum={self.momentum!r} must lie in [0, 1).")
        if self.shaping == "batch" and self.batch_size < 2:
            raise ValueError(
                f"ACFlowConfig.batch_size={self.batch_size} with shaping='batch'; a batch "
                "standard deviation needs batch_size >= 2."
            )


class ACFlow:
    """AC-Flow: ORW-CFM-W2 with shaped rewards, a critic over path states and clipped advantages.

    Per update (after drawing x_1 from the lagged policy and r = reward(x_1)):

        r~   = shape(r)                                       reward shaping
        L_V  = mean (V_phi(x_t, t) - r~)^2                     critic on the FM path states
        A    = clip(r~ - V_phi(x_t, t), -c_A, c_A)             clipped advantage, detached
        w    = f(beta A)   (warm-up: f(beta r~) or no update)  generalised critic weighting
        L    = mean( w L_FM(x_t, t) + alpha L_W2(x_t, t) )

    V_phi(x_t, t) estimates E[r~ | x_t] under the lagged policy (Monte Carlo value, gamma = 1, no
    intermediate rewards); the advantage uses its prediction before this update's critic step,
    so the baseline never saw the sample it judges. With V = const and no clipping it is
    ORW-CFM-W2 on r~.

    Args:
        shape: the shape of one sample, e.g. ``(2,)``.
        critic: V_phi ``critic(x_t, t) -> (B,)`` (e.g. :class:`ValueMLP`), trained in place.
        config: the :class:`ACFlowConfig`.
        reference: the frozen pretrained field (copied, eval mode); required iff alpha > 0.
        fm_loss: path, time sampler and coupling (default ``FlowMatchingLoss()``).

    References:
        Fine-tuning Flow Matching Generative Models with Intermediate Feedback (Fan et al.,
        2025), arXiv:2510.18072; the functional forms follow its abstract and project page.

    Example:
        >>> import copy
        >>> from flowforge.models.mlp import MLPField
        >>> base = MLPField(MLPConfig(dim=2, hidden=16, depth=1)).requires_grad_(False)
        >>> model, critic = copy.deepcopy(base).requires_grad_(True), ValueMLP(base.config)
        >>> ac = ACFlow((2,), critic, ACFlowConfig(batch_size=8, sample_steps=2), reference=base)
        >>> opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        >>> opt_v = torch.optim.Adam(critic.parameters(), lr=1e-3)
        >>> stats = ac.step(model, lambda x: -x.square().sum(1), opt, opt_v)
        >>> stats["warmup"], ac.updates
        (1.0, 1)
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        critic: nn.Module,
        config: ACFlowConfig | None = None,
        reference: nn.Module | None = None,
        fm_loss: FlowMatchingLoss | None = None,
    ) -> None:
        self.config = c = ACFlowConfig() if config is None else config
        if not isinstance(critic, nn.Module):
            raise TypeError(f"critic={type(critic).__name__} must be an nn.Module (ValueMLP).")
        if not isinstance(c, ACFlowConfig):
            raise TypeError(f"config={type(c).__name__} must be an ACFlowConfig (None: defaults).")
        self.critic = critic
        self.reference = _frozen(reference, c.alpha, "ACFlowConfig")
        self.fm_loss = FlowMatchingLoss() if fm_loss is None else fm_loss
        self.shaper = RewardShaper(c.shaping, c.squash, c.momentum)
        self.rollouts = _Rollouts(shape, c.batch_size, c.sample_steps, c.solver, c.refresh_every)
        self.updates = 0
        self.stats: dict[str, float] = {}

    def loss(
        self,
        model: nn.Module,
        reward: Reward,
        critic_optimizer: torch.optim.Optimizer,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One critic update and the actor's per-example loss of this update.

        Draws the batch (refreshing the lagged copy when due), steps the critic with
        ``critic_optimizer`` (its gradient clipped to ``config.grad_clip``), counts the update and
        sets ``stats``: as :meth:`ORWCFM.loss <flowforge.finetune.orw.ORWCFM.loss>`, plus
        critic_loss (L_V), advantage (mean |A| after clipping), clipped (fraction of
        |r~ - V| > c_A), warmup (1.0 during warm-up).

        Args:
            model: the field being fine-tuned, ``model(x, t)`` (unconditional), DDP-wrapped or
                not.
            reward: ``reward(x) -> (B,)`` finite scores, higher is better (called without grad).
            critic_optimizer: the critic's optimizer.
            generator: random source of the sampling noise, the path noise and the times.

        Returns:
            (B,) w L_FM + alpha L_W2, B = ``config.batch_size``; during a warm-up with
            ``warmup_actor="none"`` the same times 0 (zero gradients, graph kept).
        """
        c = self.config
        x_1, r = self.rollouts.draw(model, reward, self.updates, generator)  # (B, ...), (B,)
        l_fm, l_w2, rec = _fm_w2(model, self.reference, self.fm_loss, x_1, generator)
        r_s = self.shaper(r)[rec.idx]  # (B,), in the order of the path states
        v = self.critic(rec.x_t.detach(), rec.t.detach())  # (B,)
        l_v = (v - r_s).square().mean()  # Monte Carlo value regression
        _update(self.critic, critic_optimizer, l_v, c.grad_clip)
        warmup = self.updates < c.warmup_updates
        a = r_s - v.detach()  # (B,), the baseline from before this critic step
        clipped = (a.abs() > c.clip_advantage).float().mean().item()
        a = a.clamp(-c.clip_advantage, c.clip_advantage)
        w = reward_weights(r_s if warmup else a, c.beta, c.weighting)  # (B,)
        loss = w * l_fm + c.alpha * l_w2  # (B,)
        self.updates += 1
        self.stats = _stats(r, l_fm, l_w2, loss, w) | {
            "critic_loss": l_v.item(),
            "advantage": a.abs().mean().item(),
            "clipped": clipped,
            "warmup": float(warmup),
        }
        return 0 * loss if warmup and c.warmup_actor == "none" else loss

    def step(
        self,
        model: nn.Module,
        reward: Reward,
        optimizer: torch.optim.Optimizer,
        critic_optimizer: torch.optim.Optimizer,
        generator: torch.Generator | None = None,
    ) -> dict[str, float]:
        """One critic update and (after warm-up, or with ``warmup_actor="orw"``) one actor update.

        :meth:`loss`, then backward, gradient clip and ``optimizer.step()`` for the actor,
        skipped during a warm-up with ``warmup_actor="none"``.

        Args:
            model, reward, critic_optimizer, generator: as for :meth:`loss`.
            optimizer: the model's optimizer.

        Returns:
            The ``stats`` of :meth:`loss`.
        """
        c = self.config
        actor = self.updates >= c.warmup_updates or c.warmup_actor == "orw"
        loss = self.loss(model, reward, critic_optimizer, generator).mean()
        if actor:
            _update(model, optimizer, loss, c.grad_clip)
        return self.stats

    def state_dict(self) -> dict:
        """The update count, the lagged policy's weights, the shaper's and the critic's state."""
        return {
            "updates": self.updates,
            "lagged": self.rollouts.state_dict(),
            "shaper": self.shaper.state_dict(),
            "critic": dict(self.critic.state_dict()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.updates = int(state["updates"])
        self.rollouts.load_state_dict(state["lagged"])
        self.shaper.load_state_dict(state["shaper"])
        self.critic.load_state_dict(state["critic"])


class ACFlowObjective:
    """AC-Flow as a ``train()`` objective with a fixed reward and its own critic optimizer.

    Each call is :meth:`ACFlow.loss`: it draws ``config.batch_size`` samples from the lagged
    policy, takes one Adam step of the critic (lr ``critic_lr``, gradient norm clipped to
    ``config.grad_clip``) and returns the actor's (B,) loss w L_FM + alpha L_W2 (0 times it
    during a warm-up with ``warmup_actor="none"``); the caller reduces, backpropagates, clips
    (``train.grad_clip``) and steps the actor. ``x`` is not read (its values, length and
    device): the rollout runs on the model's device, so under ``train()`` set
    ``train.batch_size`` to ``config.batch_size`` per rank and micro-batch. Updates (warm-up,
    lagged refresh) count calls. The critic is not synchronised across DDP ranks. ``stats``
    after a call: as :meth:`ACFlow.loss`.

    Args:
        shape: the shape of one sample, e.g. ``(2,)``.
        reward: ``reward(x) -> (B,)`` finite scores, higher is better.
        critic: V_phi ``critic(x_t, t) -> (B,)`` on the model's device, trained in place.
        config, reference, fm_loss: as for :class:`ACFlow`.
        critic_lr: the learning rate of the critic's Adam.

    Example:
        >>> import copy
        >>> from flowforge.models.mlp import MLPField
        >>> base = MLPField(MLPConfig(dim=2, hidden=16, depth=1)).requires_grad_(False)
        >>> model, critic = copy.deepcopy(base).requires_grad_(True), ValueMLP(base.config)
        >>> cfg = ACFlowConfig(batch_size=8, sample_steps=2, warmup_actor="none")
        >>> objective = ACFlowObjective((2,), lambda x: -x.square().sum(1), critic, cfg, base)
        >>> loss = objective(model, torch.zeros(8, 2))
        >>> loss.abs().max().item(), loss.requires_grad, objective.stats["warmup"]
        (0.0, True, 1.0)
        >>> sorted(objective.state_dict())
        ['critic', 'critic_optimizer', 'lagged', 'shaper', 'updates']
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        reward: Reward,
        critic: nn.Module,
        config: ACFlowConfig | None = None,
        reference: nn.Module | None = None,
        critic_lr: float = 1e-4,
        fm_loss: FlowMatchingLoss | None = None,
    ) -> None:
        _check_reward(reward)
        if not (isinstance(critic_lr, int | float) and critic_lr > 0):
            raise ValueError(f"critic_lr={critic_lr!r} must be a positive number, e.g. 1e-4.")
        self.reward = reward
        self.method = ACFlow(shape, critic, config, reference, fm_loss)
        self.critic_optimizer = torch.optim.Adam(critic.parameters(), lr=critic_lr)

    @property
    def stats(self) -> dict[str, float]:
        """The floats of the last call (:meth:`ACFlow.loss`)."""
        return self.method.stats

    def __call__(
        self,
        model: nn.Module,
        x: Tensor | None = None,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Args: model: the field being tuned; x, cond: unused; generator: random source.

        Returns: (config.batch_size,) per-example actor losses.
        """
        return self.method.loss(model, self.reward, self.critic_optimizer, generator)

    def state_dict(self) -> dict:
        """:meth:`ACFlow.state_dict` and the critic optimizer's state."""
        return self.method.state_dict() | {"critic_optimizer": self.critic_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.method.load_state_dict(state)
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
