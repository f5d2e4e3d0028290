"""DanceGRPO: group-relative policy optimisation of a flow's SDE sampler against rewards.

The flow's Euler sampler, made an SDE with the same marginals (``sde_policy.py``), is a policy
of Gaussian steps pi(x_{i+1} | x_i) with tractable densities. Groups of G samples share their
initial noise, their rewards are standardised within the group into advantages, and a PPO-style
clipped ratio objective is optimised on a random subset of the steps:

    A_j = clip((r_j - mean_G r) / (std_G r + 1e-8), -A_max, A_max)
    L   = mean_k max(-A rho, -A clip(rho, 1 - eps, 1 + eps)),  rho = pi_theta / pi_old
          [+ kl_weight mean_k ||mu_theta - mu_base||^2 / (2 std^2)]   optional KL to the base

:class:`GRPOObjective` is one iteration as a ``train()`` objective (a fresh rollout per call,
the per-example loss returned); :func:`grpo_step` runs one iteration with its own optimizer,
optionally over several minibatches of one rollout.

References:
    DanceGRPO: Unleashing GRPO on Visual Generation (Xue et al., 2025), arXiv:2505.07818;
    reference code XueZeyue/DanceGRPO (``train_one_step`` of train_grpo_flux.py).
    DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models
    (Shao et al., 2024), arXiv:2402.03300 (GRPO).
    Proximal Policy Optimization Algorithms (Schulman et al., 2017), arXiv:1707.06347.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from flowforge.finetune.rewards import Reward, check_reward
from flowforge.finetune.sde_policy import (
    GRPORollout,
    _check_eta,
    _is_real,
    sde_mean_std,
    sde_rollout,
    transition_kl,
    transition_log_prob,
)
from flowforge.protocols import Field
from flowforge.solvers.grids import shifted_grid
from flowforge.utils import check_choice, unwrap_ddp, wider_float

__all__ = [
    "AdvantageNorm",
    "GRPOConfig",
    "GRPOObjective",
    "GRPOTerms",
    "group_advantages",
    "grpo_loss",
    "grpo_step",
]

AdvantageNorm = Literal["std", "none"]


@dataclass
class GRPOConfig:
    """Hyperparameters of DanceGRPO; the defaults are the reference FLUX text-to-image script.

    Args:
        group_size: G samples per group (per prompt), >= 2 (the group std needs two).
        n_steps: S SDE steps per rollout.
        eta: the SDE noise scale eta > 0 (0 is refused: the policy would be deterministic).
        timestep_fraction: f; each sample trains on floor(f S') random steps, S' = S, or S - 1
            with ``ignore_last``.
        clip_range: the PPO clip eps of the ratio (1e-4 with per-element mean log-probs on
            FLUX latents; 0.2 on the 2-D toy).
        adv_clip_max: A_max, advantages are clipped to [-A_max, A_max].
        kl_weight: beta of the optional KL to a frozen base model (needs ``base``); 0 is the
            reference trainer (no KL).
        ignore_last: never train on the last step (the reference FLUX trainer drops it).
        shift: the time shift a of the grid, ``shifted_grid(S, a)``; 1 is uniform.
        init_same_noise: the G samples of a group start from the same x_0 (variance reduction
            of the advantages; the reference's ``init_same_noise``).
        advantage_norm: ``"std"`` divides by the group std + 1e-8 (GRPO); ``"none"`` keeps
            r - mean_G r, so ``kl_weight`` is the beta of the tilt in reward units.
        n_minibatches: :func:`grpo_step` shuffles the rollout and splits it into this many
            minibatches, one optimizer step each (the reference steps every grad-accum
            samples); from the second one on the ratio leaves 1 and the clip acts.
            :class:`GRPOObjective` (one step per rollout) needs 1.
        max_grad_norm: :func:`grpo_step` clips the gradient norm to this before each step; None
            leaves it. Under ``train()``, ``train.grad_clip`` clips instead.

    Example:
        >>> toy = GRPOConfig(group_size=16, n_steps=10, eta=0.7, clip_range=0.2, shift=1.0)
        >>> toy.n_train_steps(toy.n_steps)  # floor(0.6 * (10 - 1)), the last step ignored
        5
    """

    group_size: int = 12
    n_steps: int = 16
    eta: float = 0.3
    timestep_fraction: float = 0.6
    clip_range: float = 1e-4
    adv_clip_max: float = 5.0
    kl_weight: float = 0.0
    ignore_last: bool = True
    shift: float = 3.0
    init_same_noise: bool = True
    advantage_norm: AdvantageNorm = "std"
    n_minibatches: int = 1
    max_grad_norm: float | None = 1.0

    def __post_init__(self) -> None:
        for name, low in (("group_size", 2), ("n_steps", 1), ("n_minibatches", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"GRPOConfig.{name}={value!r} must be an integer >= {low}.")
        _check_eta(self.eta, allow_zero=False)
        for name in ("clip_range", "adv_clip_max", "shift"):
            value = getattr(self, name)
            if not _is_real(value) or not value > 0:
                raise ValueError(
                    f"GRPOConfig.{name}={value!r} must be a positive number (defaults: "
                    "clip_range=1e-4, adv_clip_max=5.0, shift=3.0)."
                )
        if not _is_real(self.kl_weight) or not self.kl_weight >= 0:
            raise ValueError(
                f"GRPOConfig.kl_weight={self.kl_weight!r} must be >= 0 (0 disables the KL)."
            )
        if not _is_real(self.timestep_fraction) or not 0 < self.timestep_fraction <= 1:
            raise ValueError(
                f"GRPOConfig.timestep_fraction={self.timestep_fraction!r} must lie in (0, 1] "
                "(card: 0.6)."
            )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(
                f"GRPOConfig.max_grad_norm={self.max_grad_norm!r} must be positive, or None to "
                "leave the gradient unclipped."
            )
        check_choice("GRPOConfig.advantage_norm", self.advantage_norm, ("std", "none"))
        self.n_train_steps(self.n_steps)  # raises if no step would be trained

    def n_train_steps(self, n_steps: int) -> int:
        """floor(f S') steps trained per sample for a rollout of ``n_steps`` steps (>= 1)."""
        trainable = n_steps - 1 if self.ignore_last else n_steps
        k = math.floor(self.timestep_fraction * trainable + 1e-9)  # 0.29 * 100 = 28.999...
        if k < 1:
            raise ValueError(
                f"timestep_fraction={self.timestep_fraction} of {trainable} trainable steps "
                f"(n_steps={n_steps}, ignore_last={self.ignore_last}) trains no step; raise "
                "timestep_fraction or n_steps so that floor(f * steps) >= 1."
            )
        return k


class GRPOTerms(NamedTuple):
    """The parts of the GRPO loss, per example: ``loss = policy + kl_weight * kl``.

    ``loss``, ``policy`` and ``kl`` are (B,) (``kl`` is 0 without a base model); ``ratio`` is
    (k, B), pi_theta / pi_old on the k trained steps of each sample.
    """

    loss: Tensor
    policy: Tensor
    kl: Tensor
    ratio: Tensor


def group_advantages(
    rewards: Tensor | Sequence[Tensor],
    group_size: int,
    adv_clip_max: float = 5.0,
    normalize: AdvantageNorm = "std",
) -> Tensor:
    """Group-relative advantages, summed over rewards and clipped (card 13, "GRPO objective").

        A_j = sum_m (r_mj - mean_G r_m) / (std_G r_m + 1e-8),  A_j <- clip(A_j, -A_max, A_max)

    Groups are consecutive blocks of ``group_size`` samples; std_G is the unbiased sample std
    (``Tensor.std``, as the reference code). A group of equal rewards gets A = 0.

    Args:
        rewards: (B,) scores of one reward, (M, B) or a sequence of M (B,) tensors for M rewards.
        group_size: G, dividing B.
        adv_clip_max: A_max > 0.
        normalize: ``"std"`` (GRPO) or ``"none"`` (only the group mean is subtracted).

    Returns:
        (B,) advantages.

    References:
        DeepSeekMath (Shao et al., 2024), arXiv:2402.03300, Sec. 4.1.2 (outcome supervision);
        DanceGRPO (Xue et al., 2025), arXiv:2505.07818 (several rewards summed).

    Example:
        >>> group_advantages(torch.tensor([0.0, 1.0, 5.0, 5.0]), group_size=2).tolist()
        [-0.7071067690849304, 0.7071067690849304, 0.0, 0.0]
    """
    check_choice("normalize", normalize, ("std", "none"))
    r = rewards if isinstance(rewards, Tensor) else torch.stack(list(rewards))
    r = r.unsqueeze(0) if r.dim() == 1 else r  # (M, B)
    M, B = r.shape
    if B % group_size != 0:
        raise ValueError(
            f"rewards hold {B} samples, not a multiple of group_size={group_size}; pass "
            "n_groups * group_size samples, each group consecutive."
        )
    groups = r.reshape(M, B // group_size, group_size)  # (M, n_groups, G)
    centred = groups - groups.mean(-1, keepdim=True)
    if normalize == "std":
        centred = centred / (groups.std(-1, keepdim=True) + 1e-8)
    return centred.sum(0).reshape(B).clamp(-adv_clip_max, adv_clip_max)  # (B,)


def grpo_loss(
    model: Field,
    rollout: GRPORollout,
    advantages: Tensor,
    config: GRPOConfig,
    base: Field | None = None,
    generator: torch.Generator | None = None,
) -> GRPOTerms:
    """The clipped-ratio GRPO loss on a random subset of each sample's steps, plus the KL.

    Each sample b draws a fresh permutation of its S' trainable steps (S' = S, or S - 1 with
    ``ignore_last``) and keeps the first k = floor(f S'); all k B transitions go through the
    model in one batch:

        rho = exp(log pi_theta(x_{i+1} | x_i) - log pi_old)
        policy_b = mean_k max(-A_b rho, -A_b clip(rho, 1 - eps, 1 + eps))
        kl_b = mean_k mean_d (mu_theta - mu_base)^2 / (2 std^2)     (with a base model)
        loss_b = policy_b + kl_weight kl_b

    The log-probs are recomputed with the rollout's own grid and eta. Both terms are per-element
    means averaged over k random steps, so up to the common factor 1 / (D S') the loss follows the
    gradient of J = E[A] - kl_weight KL(P_theta || P_base), with KL the path KL
    sum_i E ||mu_theta - mu_base||^2 / (2 std_i^2). The policy cannot change the starting
    noise x_0, so over path laws J is maximised by the x_0-conditional tilt
    P_base(path | x_0) exp(r / beta) / Z(x_0), with beta = kl_weight in reward units when
    ``advantage_norm="none"`` (with ``"std"`` the reward is seen in units of its group std).
    Its marginal at t = 1 is the tilted distribution p_base(x) exp(r(x) / beta) / Z only as far
    as the base SDE forgets x_0, which a larger eta does more: on 8 gaussians with
    r = 1[x_2 > 0] and beta = 0.5, that optimum's E[r] is 0.72 at eta 0.7 and 0.85 at eta 1.5,
    against 0.89 for the tilted distribution (``benchmarks/results/finetune.md``).
    Two departures from that gradient: the KL is differentiated at the stored states (DPOK's
    regulariser), so the way a change of one step moves the later states, and with them their
    KL, is not followed; and with ``ignore_last`` the last step carries neither term.

    Args:
        model: the policy being tuned (gradients flow into it).
        rollout: trajectories from :func:`sde_rollout` of the policy before the update.
        advantages: (B,) from :func:`group_advantages`.
        config: supplies ``timestep_fraction``, ``ignore_last``, ``clip_range``, ``kl_weight``.
        base: the frozen base field for the KL, or None (then kl is 0; needed if kl_weight > 0).
        generator: random source of the step permutations.

    Returns:
        :class:`GRPOTerms` of (B,) losses; the caller reduces (``terms.loss.mean()``).

    References:
        DanceGRPO (Xue et al., 2025), arXiv:2505.07818; ``train_one_step`` of the reference
        code. DPOK: Reinforcement Learning for Fine-tuning Text-to-Image Diffusion
        Models (Fan et al., 2023), arXiv:2305.16381 (per-step KL to the base). Fine-tuning of
        Continuous-time Diffusion Models as Entropy-Regularized Control (Uehara et al., 2024),
        arXiv:2402.15194 (the tilted distribution as the optimum).

    Example:
        >>> field = torch.nn.Linear(2, 2)
        >>> model = lambda x, t, c=None: field(x)
        >>> r = sde_rollout(model, torch.randn(4, 2), torch.linspace(0, 1, 6), eta=0.7)
        >>> cfg = GRPOConfig(group_size=2, n_steps=5, eta=0.7, clip_range=0.2)
        >>> terms = grpo_loss(model, r, torch.tensor([1.0, -1.0, 0.5, -0.5]), cfg)
        >>> tuple(terms.loss.shape), tuple(terms.ratio.shape), terms.ratio.allclose(torch.ones(1))
        ((4,), (2, 4), True)
    """
    if config.kl_weight > 0 and base is None:
        raise ValueError(
            f"kl_weight={config.kl_weight} needs the frozen base model; pass base=... (a copy of "
            "the model before fine-tuning) or set kl_weight=0."
        )
    states, grid = rollout.states, rollout.time_grid
    S, B = rollout.log_probs.shape
    if advantages.shape != (B,):
        raise ValueError(
            f"advantages has shape {tuple(advantages.shape)} but the rollout holds {B} samples; "
            f"pass one advantage per sample, shape ({B},) (group_advantages)."
        )
    k = config.n_train_steps(S)
    trainable = S - 1 if config.ignore_last else S
    noise_device = generator.device if generator is not None else states.device
    keys = torch.rand(B, trainable, generator=generator, device=noise_device)
    idx = keys.argsort(1)[:, :k].T.to(states.device)  # (k, B): a fresh permutation per sample
    col = torch.arange(B, device=states.device).expand(k, B)  # (k, B)
    x = states[idx, col].flatten(0, 1)  # (k B, ...)
    x_next = states[idx + 1, col].flatten(0, 1)
    t, t_next = grid[idx].flatten(), grid[idx + 1].flatten()  # (k B,)
    cond = rollout.cond[col.flatten()] if rollout.cond is not None else None
    mean, std = sde_mean_std(model, x, t, t_next, rollout.eta, cond)
    log_prob = transition_log_prob(x_next, mean, std).view(k, B)
    ratio = (log_prob - rollout.log_probs[idx, col]).exp()  # (k, B)
    A = advantages.to(ratio.dtype)[None]  # (1, B)
    eps = config.clip_range
    policy = torch.maximum(-A * ratio, -A * ratio.clamp(1 - eps, 1 + eps)).mean(0)  # (B,)
    if base is None:
        kl = torch.zeros_like(policy)
    else:
        with torch.no_grad():
            mean_base, _ = sde_mean_std(base, x, t, t_next, rollout.eta, cond)
        kl = transition_kl(mean, mean_base, std).view(k, B).mean(0)  # (B,)
    return GRPOTerms(policy + config.kl_weight * kl, policy, kl, ratio)


def _loss_stats(terms: GRPOTerms, clip_range: float, with_kl: bool) -> dict[str, float]:
    """Batch means of the loss terms, the ratio and the share of ratios outside 1 +- eps."""
    stats = {
        "loss": terms.loss.mean().item(),
        "policy_loss": terms.policy.mean().item(),
        "ratio_mean": terms.ratio.mean().item(),
        "clip_fraction": ((terms.ratio - 1).abs() > clip_range).double().mean().item(),
    }
    return stats | ({"kl": terms.kl.mean().item()} if with_kl else {})


class GRPOObjective:
    """DanceGRPO as a ``train()`` objective: every call rolls out, scores and returns the loss.

    A call is one iteration on one minibatch of B = n_groups G samples:

    1. x_0 ~ N(0, I) of shape (n_groups, *shape), repeated G times per group
       (``init_same_noise``; else B independent draws);
    2. :func:`sde_rollout` of the current model on ``shifted_grid(S, shift)``, without grad;
    3. every reward scores the final SDE states (``check_reward``), :func:`group_advantages`;
    4. returns ``grpo_loss(...).loss``, (B,); the caller reduces (mean), backpropagates, clips
       and steps the optimizer.

    ``x`` only gives the device and dtype: its values and length are not read and the loss has
    B rows, so under ``train()`` set ``train.batch_size`` to n_groups * group_size per rank and
    micro-batch. The weights have not moved since the rollout, so rho = 1 and the clip does not
    act (the reference trainer with one minibatch per rollout). The reward sees the rollout's
    own final state x_{t_S} (card 13); the reference FLUX code decodes the last step's x1_hat.
    Unconditional (``cond`` is ignored); group statistics are not gathered across ranks.

    After each call ``stats`` holds floats: ``reward`` (mean of the summed rewards),
    ``reward_std``, ``reward_i`` per reward when there are several, ``adv_abs_mean``, ``loss``,
    ``policy_loss``, ``ratio_mean``, ``clip_fraction`` (share of ratios outside 1 +- eps) and
    ``kl`` (with a base model).

    Args:
        base: the frozen base field for the KL (and the ``kl`` stat) on the model's device, or
            None.
        reward: ``reward(x) -> (B,)``, or a sequence of them (advantages summed).
        config: the :class:`GRPOConfig`.
        n_groups: groups per call (B = n_groups G samples).
        shape: the shape of one sample, e.g. ``(2,)``.

    References:
        DanceGRPO (Xue et al., 2025), arXiv:2505.07818; ``train_one_step`` of the reference
        code.

    Example:
        >>> from flowforge.models.mlp import MLPConfig, MLPField
        >>> net = MLPField(MLPConfig(dim=2, hidden=16, depth=2))
        >>> cfg = GRPOConfig(group_size=4, n_steps=4, eta=0.7, clip_range=0.2, shift=1.0)
        >>> def y(x):
        ...     return x[:, 1]
        >>> objective = GRPOObjective(None, y, cfg, n_groups=2, shape=(2,))
        >>> loss = objective(net, torch.zeros(8, 2), generator=torch.Generator().manual_seed(0))
        >>> loss.shape, round(objective.stats["ratio_mean"], 4), objective.state_dict()
        (torch.Size([8]), 1.0, {'calls': 1})
    """

    def __init__(
        self,
        base: Field | None,
        reward: Reward | Sequence[Reward],
        config: GRPOConfig,
        n_groups: int,
        shape: tuple[int, ...],
    ) -> None:
        rewards = list(reward) if isinstance(reward, Sequence) else [reward]
        if not rewards or not all(callable(r) for r in rewards):
            raise ValueError(
                f"reward={reward!r}; pass a callable reward(x) -> (B,) or a non-empty sequence "
                "of them."
            )
        if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1:
            raise ValueError(f"n_groups={n_groups!r} must be a positive integer, e.g. 4.")
        B = n_groups * config.group_size
        if config.n_minibatches > B:
            raise ValueError(
                f"GRPOConfig.n_minibatches={config.n_minibatches} exceeds the {B} samples of an "
                f"iteration (n_groups={n_groups} x group_size={config.group_size}); use at most "
                f"{B}."
            )
        self.base, self.rewards, self.config = base, rewards, config
        self.n_groups, self.shape = n_groups, tuple(shape)
        self.stats: dict[str, float] = {}
        self.calls = 0

    @property
    def batch_size(self) -> int:
        """B = n_groups * group_size, the rows of every loss."""
        return self.n_groups * self.config.group_size

    def draw(
        self, model: Field, like: Tensor, generator: torch.Generator | None = None
    ) -> tuple[GRPORollout, Tensor, dict[str, float]]:
        """Steps 1-3 on ``like``'s device and dtype (widened to float32 or more): the rollout of
        ``model`` (without grad) from the noise of ``generator``, its (B,) advantages and the
        reward stats."""
        c, G = self.config, self.config.group_size
        device, dtype = like.device, wider_float(like.dtype)
        noise_device = generator.device if generator is not None else device
        grid = shifted_grid(c.n_steps, c.shift, device=device, dtype=dtype)
        n_draw = self.n_groups if c.init_same_noise else self.batch_size
        size = (n_draw, *self.shape)
        x_0 = torch.randn(size, generator=generator, device=noise_device, dtype=dtype).to(device)
        if c.init_same_noise:
            x_0 = x_0.repeat_interleave(G, dim=0)  # (B, *shape): one noise per group
        rollout = sde_rollout(model, x_0, grid, c.eta, generator=generator)
        with torch.no_grad():
            scores = torch.stack([check_reward(r, rollout.x_1) for r in self.rewards])  # (M, B)
        A = group_advantages(scores, G, c.adv_clip_max, c.advantage_norm)
        total = scores.sum(0)
        stats = {"reward": total.mean().item(), "reward_std": total.std().item()}
        if len(self.rewards) > 1:
            stats |= {f"reward_{i}": s.mean().item() for i, s in enumerate(scores)}
        return rollout, A, stats | {"adv_abs_mean": A.abs().mean().item()}

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Args: model: the policy (DDP-wrapped or not); x: sets the device; cond: unused;
        generator: random source. Returns: (n_groups * group_size,) per-example losses."""
        c = self.config
        if c.n_minibatches != 1:
            raise ValueError(
                f"GRPOConfig.n_minibatches={c.n_minibatches}: GRPOObjective draws a fresh "
                "rollout on every call, one optimizer step each; set n_minibatches=1, or use "
                "grpo_step to split one rollout over several optimizer steps."
            )
        rollout, A, stats = self.draw(unwrap_ddp(model), x, generator)
        terms = grpo_loss(model, rollout, A, c, self.base, generator)
        self.stats = stats | _loss_stats(terms, c.clip_range, self.base is not None)
        self.calls += 1
        return terms.loss

    def state_dict(self) -> dict[str, int]:
        """The call count (every other input of a call comes from its arguments)."""
        return {"calls": self.calls}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore :meth:`state_dict`."""
        self.calls = int(state["calls"])


def grpo_step(
    model: nn.Module,
    base: Field | None,
    reward: Reward | Sequence[Reward],
    config: GRPOConfig,
    optimizer: torch.optim.Optimizer,
    n_groups: int,
    shape: tuple[int, ...],
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One DanceGRPO iteration with its own optimizer: roll out, score, update per minibatch.

    Steps 1-3 of :class:`GRPOObjective` (``draw``), then per minibatch of the shuffled rollout
    (``n_minibatches``): :func:`grpo_loss`, backward, gradient-norm clip to ``max_grad_norm``,
    ``optimizer.step()``. From the second minibatch on the ratio leaves 1 and the clip acts.

    Args:
        model: the policy being tuned; ``optimizer`` steps its parameters.
        base, reward, config, n_groups, shape: as for :class:`GRPOObjective`.
        optimizer: the model's optimizer (zeroed and stepped here).
        generator: random source of the noise, the SDE steps, the minibatches and the steps.

    Returns:
        floats: the stats of :class:`GRPOObjective` (loss terms averaged over minibatches) and
        ``grad_norm`` (before clipping, with ``max_grad_norm``).

    Example:
        >>> from flowforge.models.mlp import MLPConfig, MLPField
        >>> net = MLPField(MLPConfig(dim=2, hidden=16, depth=2))
        >>> opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        >>> cfg = GRPOConfig(group_size=4, n_steps=4, eta=0.7, clip_range=0.2, shift=1.0)
        >>> def y(x):
        ...     return x[:, 1]
        >>> stats = grpo_step(net, None, y, cfg, opt, n_groups=2, shape=(2,))
        >>> sorted(stats)[:4]
        ['adv_abs_mean', 'clip_fraction', 'grad_norm', 'loss']
    """
    objective = GRPOObjective(base, reward, config, n_groups, shape)
    param = next(iter(model.parameters()), None)
    if param is None:
        raise ValueError("model has no parameters to tune; pass the nn.Module being trained.")
    rollout, A, stats = objective.draw(model, param, generator)
    B, M = objective.batch_size, config.n_minibatches
    if M > 1:
        noise_device = generator.device if generator is not None else param.device
        order = torch.randperm(B, generator=generator, device=noise_device).to(param.device)
    else:
        order = torch.arange(B, device=param.device)
    sums: dict[str, float] = {}
    for index in order.tensor_split(M):
        terms = grpo_loss(model, rollout.subset(index), A[index], config, base, generator)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.mean().backward()
        part = _loss_stats(terms, config.clip_range, base is not None)
        if config.max_grad_norm is not None:
            norm = nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            part["grad_norm"] = norm.item()
        optimizer.step()
        for key, value in part.items():
            sums[key] = sums.get(key, 0.0) + value
    return stats | {key: value / M for key, value in sums.items()}
