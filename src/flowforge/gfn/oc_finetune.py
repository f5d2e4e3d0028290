"""Fine-tuning a pre-trained OC-GFN to a reward R(x): the amortised marginal over outcomes.

The GFlowNet of R is the mixture of the outcome-conditioned flows weighted by R (Theorem 4.2
of the paper; each F(. | y) is a flow with terminal flow R(x | y) = 1[x = y], so the mixture is
a flow with terminal flow R(x)):

    P_F^R(a | s) = M(s -> a) / sum_a' M(s -> a'),   M(s -> a) = sum_y R(y) F(s -> a | y),
    F(s -> a | y) = F(s | y) P_F(a | s, y)

The sum is over every outcome, so the paper learns an amortised predictor. Two forms:

* ``MarginalFlowRegression`` (the paper's form): regress log F_phi(s -> a) on
  log (1/M) sum_m R(y_m) F(s -> a | y_m) / q(y_m) at visited states, reading F(s | y) from the
  pre-trained flow head. It needs F(s | y) right at *every* state for *every* outcome, also
  far from the paths to y (where the truth is about exp(log_failure)); CPU-scale pre-training
  does not get there (measured on a 7 x 7 grid: even the exact sum over all 49 outcomes gives
  an L1 of 0.9-1.4 to R / Z, because the flow head stays near log F = -1 off the paths).
* ``MarginalDistillation`` (what ``tests/gfn/test_oc.py`` trains, and our simpler amortisation
  of the same sum): F(s | y) = F(s_0 | y) P(s in tau | y) under the OC policy, so with one
  OC rollout tau_b per outcome y_b ~ q the sum becomes an expectation over the states the
  rollouts visit, and the weighted cross-entropy

      L = sum_b w_b sum_{s in tau_b} CE( P_F(. | s, y_b), P_phi(. | s) ),
      w_b = R(y_b) F(s_0 | y_b) / q(y_b)

  is minimised at every state by P_phi(a | s) = sum_b w_b 1[s in tau_b] P_F(a | s, y_b) /
  sum_b w_b 1[s in tau_b], the Monte Carlo (ratio) estimate of P_F^R(a | s). Only states on
  the OC rollouts are read, where pre-training is accurate.

Either way the fine-tuned model is an unconditional ``MLPPolicy`` whose logits are log F_phi
(up to a per-state constant for the distillation), so ``terminal_distribution`` and
``exact_l1`` evaluate it directly. One fine-tuning trajectory costs one reward query.

References:
    Pre-Training and Fine-Tuning Generative Flow Networks (Pan, Jain, Madan and Bengio, 2024),
    arXiv:2310.03419, Section 4.2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowforge.gfn.env import Env
from flowforge.gfn.policy import Policy, log_probs
from flowforge.gfn.trajectories import Trajectories

__all__ = ["MarginalDistillation", "MarginalFlowRegression"]


class MarginalFlowRegression:
    """Regress log F_phi(s -> a) on the marginal edge flows of the pre-trained OC-GFN.

    At every state s visited by ``traj`` (deduplicated) and every valid action a, the target is

        log F^R(s -> a) = log (1/M) sum_m w_m F(s | y_m) P_F(a | s, y_m),
        w_m = R(y_m) / q(y_m)   (``log_q=None``: w_m = M R(y_m), the exact sum over the y_m)

    from the frozen ``oc_policy``; the loss of a trajectory is the sum over its states of the
    squared errors of the policy's logits (B,). Passing the distinct outcomes found so far with
    ``log_q=None`` sums over them exactly.

    Args:
        env: the environment.
        oc_policy: the pre-trained outcome-conditioned policy (flow head log F(s | y)).

    References:
        Pre-Training and Fine-Tuning Generative Flow Networks (Pan et al., 2024),
        arXiv:2310.03419, Section 4.2.

    Example:
        >>> from flowforge.gfn import HyperGrid, MLPPolicy, PolicyConfig, sample_trajectories
        >>> env = HyperGrid(ndim=2, height=4)
        >>> oc = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16,
        ...                             cond_dim=env.encoding_dim))
        >>> marginal = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
        >>> g = torch.Generator().manual_seed(0)
        >>> traj = sample_trajectories(env, marginal, 8, generator=g)
        >>> y = traj.last_states
        >>> MarginalFlowRegression(env, oc)(marginal, traj, y, env.log_reward(y)).shape
        torch.Size([8])
    """

    def __init__(self, env: Env, oc_policy: Policy) -> None:
        self.env = env
        self.oc_policy = oc_policy

    @torch.no_grad()
    def target(self, states: Tensor, outcomes: Tensor, log_w: Tensor) -> Tensor:
        """(N, A) log (1/M) sum_m exp(log_w_m) F(s -> a | y_m) at ``states`` (N, *S); -inf at
        invalid actions. ``outcomes``: (M, *S); ``log_w``: (M,)."""
        N, M = len(states), len(outcomes)
        rows = states.repeat(M, *([1] * (states.dim() - 1)))  # row m * N + i: states[i]
        cond = self.env.encode(outcomes).repeat_interleave(N, 0)
        lpf, _, log_f = log_probs(self.env, self.oc_policy, rows, cond)  # (M N, A), (M N,)
        log_edge = (log_f[:, None] + lpf).double().reshape(M, N, -1)  # log F(s -> a | y_m)
        return torch.logsumexp(log_w.double()[:, None, None] + log_edge, 0) - math.log(M)

    def __call__(
        self,
        policy: Policy,
        traj: Trajectories,
        outcomes: Tensor,
        log_rewards: Tensor,
        log_q: Tensor | None = None,
    ) -> Tensor:
        """Args: policy (unconditional, the marginal); traj: B fine-tuning trajectories;
        outcomes: (M, *S) y_m; log_rewards: (M,) log R(y_m); log_q: (M,) log q(y_m) or None.
        Returns: (B,) summed squared errors over each trajectory's states."""
        M = len(outcomes)
        if log_rewards.shape != (M,) or (log_q is not None and log_q.shape != (M,)):
            raise ValueError(
                f"log_rewards {tuple(log_rewards.shape)} and log_q must be ({M},), one value per "
                "outcome."
            )
        log_w = log_rewards.double() + (math.log(M) if log_q is None else -log_q.double())
        T, B = traj.actions.shape
        flat = traj.states[:-1].reshape(T * B, *traj.states.shape[2:])  # s_t of action t
        keys, inverse = torch.unique(flat.flatten(1), dim=0, return_inverse=True)
        states = keys.reshape(len(keys), *flat.shape[1:])
        target = self.target(states, outcomes, log_w)  # (N, A)
        mask = self.env.forward_mask(states) & torch.isfinite(target)
        pred = policy(self.env.encode(states)).logits  # (N, A) log F_phi(s -> a)
        err = (pred - target.to(pred)).masked_fill(~mask, 0.0).square().sum(-1)  # (N,)
        per_step = err.reshape(-1)[inverse].reshape(T, B).masked_fill(~traj.valid, 0.0)
        return per_step.sum(0)


class MarginalDistillation:
    """Distil the R-weighted mixture of the OC policies into one policy (module docstring).

    ``traj`` are rollouts of the frozen ``oc_policy`` conditioned on outcomes y_b ~ q
    (``traj.cond = env.encode(y_b)``); the weights w_b = R(y_b) F(s_0 | y_b) / q(y_b) are
    normalised over the batch (w_b -> B w_b / sum w), so the mean of the returned (B,) values
    is the weighted cross-entropy sum_b w_b sum_t CE(P_F(. | s_t, y_b), P_phi(. | s_t)) / B.

    Args:
        env: the environment.
        oc_policy: the pre-trained outcome-conditioned policy (P_F and flow head at s_0).

    References:
        Pre-Training and Fine-Tuning Generative Flow Networks (Pan et al., 2024),
        arXiv:2310.03419, Section 4.2.

    Example:
        >>> from flowforge.gfn import HyperGrid, MLPPolicy, PolicyConfig, sample_trajectories
        >>> env = HyperGrid(ndim=2, height=4)
        >>> oc = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16,
        ...                             cond_dim=env.encoding_dim))
        >>> marginal = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
        >>> g = torch.Generator().manual_seed(0)
        >>> y = env.all_terminal_states()[torch.randint(16, (8,), generator=g)]
        >>> traj = sample_trajectories(env, oc, 8, cond=env.encode(y), generator=g)
        >>> log_w = env.log_reward(y) + math.log(16)  # q uniform over the 16 outcomes
        >>> MarginalDistillation(env, oc)(marginal, traj, log_w).shape
        torch.Size([8])
    """

    def __init__(self, env: Env, oc_policy: Policy) -> None:
        self.env = env
        self.oc_policy = oc_policy

    def __call__(self, policy: Policy, traj: Trajectories, log_weights: Tensor) -> Tensor:
        """Args: policy (unconditional, the marginal); traj: B OC rollouts with cond;
        log_weights: (B,) log R(y_b) - log q(y_b). Returns: (B,) weighted summed CEs."""
        B = len(traj)
        if traj.cond is None:
            raise ValueError("MarginalDistillation needs OC rollouts with cond = encode(y).")
        if log_weights.shape != (B,):
            raise ValueError(
                f"log_weights has shape {tuple(log_weights.shape)}; expected ({B},), one "
                "log R(y) - log q(y) per trajectory."
            )
        T = traj.T
        flat = traj.states[:-1].reshape(T * B, *traj.states.shape[2:])  # s_t, row t * B + b
        with torch.no_grad():
            lpf_y, _, log_f = log_probs(self.env, self.oc_policy, flat, traj.cond.repeat(T, 1))
            log_w = log_weights.double() + log_f.reshape(T, B)[0].double()  # + log F(s_0 | y)
            w = B * torch.softmax(log_w, 0)  # (B,) normalised over the batch
            teacher = lpf_y.exp()  # (T B, A), 0 at invalid actions
        log_student = log_probs(self.env, policy, flat)[0]  # (T B, A)
        safe = log_student.masked_fill(teacher == 0, 0.0)  # 0 * -inf would be nan
        ce = -(teacher.to(safe) * safe).sum(-1).reshape(T, B).masked_fill(~traj.valid, 0.0)
        return w.to(ce) * ce.sum(0)
