"""Order-preserving GFlowNets (OP-GFN): learn from comparisons u(x) > u(x'), not from R(x).

A TB-parameterised GFlowNet implies a reward for each sampled trajectory tau ending at x,

    log R^(tau) = log Z + sum_t log P_F(s_t+1 | s_t) - sum_t log P_B(s_t | s_t+1)   (with exit)

and OP-GFN trains it to order the batch the way the objective u does:

    total order (pairs x, x' of the batch):  p = 1[u(x) > u(x')], 1/2 on ties,
        L_OP = CE( softmax([log R^(x), log R^(x')]), [p, 1 - p] )
    partial order (K objectives, Pareto dominance): P(x) = 1[x in Pareto(X)] / |Pareto(X)|,
        L_OP = CE( softmax_{x in X} log R^(x), P )

The TB residual with R^ in place of R is identically zero (R^ is the reward that balances the
trajectory), so the TB-form of OP-GFN is L_OP alone: this is what the reference code trains
(``orderingedTrajectoryBalance`` and the GFN-Mole ``ordering_batch_loss_trajectory_balance``:
the ordering loss of log Z + sum log P_F - sum log P_B, no TB term; the single-objective code
clamps the batch-mean loss at 100, the multi-objective one does not). The effect is a learned
reward that sharpens during training, from exploration to exploitation, without a reward
exponent.

References:
    Order-Preserving GFlowNets (Chen and Mauch, 2024), arXiv:2310.00386, Eqs. 3-5;
    code github.com/yhangchen/OP-GFN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from flowforge.gfn.env import Env
from flowforge.gfn.pareto import non_dominated, objective_values
from flowforge.gfn.policy import Policy
from flowforge.gfn.trajectories import Trajectories, evaluate_trajectories
from flowforge.utils.checks import check_choice

__all__ = ["OrderPreservingTB", "pairwise_order_loss", "set_order_loss", "tb_log_reward"]


def tb_log_reward(
    env: Env, policy: Policy, traj: Trajectories, log_z: Literal["param", "flow"] = "param"
) -> Tensor:
    """(B,) log R^(tau) = log Z + sum log P_F - sum log P_B of each complete trajectory.

    Args:
        env: the environment the trajectories come from.
        policy: the policy (re-evaluated, with gradients).
        traj: B terminated trajectories.
        log_z: ``"param"`` reads ``policy.log_z``; ``"flow"`` the flow head at s_0 (with cond).

    Returns:
        (B,) the TB-implied log-rewards (with the same log Z for every trajectory).

    Example:
        >>> from flowforge.gfn import HyperGrid, MLPPolicy, PolicyConfig, sample_trajectories
        >>> env = HyperGrid(ndim=2, height=4)
        >>> policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
        >>> traj = sample_trajectories(env, policy, 8, generator=torch.Generator().manual_seed(0))
        >>> tb_log_reward(env, policy, traj).shape
        torch.Size([8])
    """
    check_choice("log_z", log_z, ("param", "flow"))
    if not traj.terminated.all():
        raise ValueError(
            f"the TB-implied reward needs complete trajectories, but "
            f"{int((~traj.terminated).sum())} of {len(traj)} are prefixes."
        )
    ev = evaluate_trajectories(env, policy, traj)
    z = policy.log_z if log_z == "param" else ev.log_flow[0]
    return z + ev.log_pf.sum(0) - ev.log_pb.sum(0)  # TB residual without log R(x)


def pairwise_order_loss(
    log_r_hat: Tensor, u: Tensor, partner: Tensor, tie_tol: float = 1e-6
) -> Tensor:
    """(B,) cross-entropy of each pair (i, partner[i]) against the order of u (Eq. 4).

        p_i = 1[u_i > u_j] (1/2 when |u_i - u_j| <= tie_tol),  d = log R^_i - log R^_j
        L_i = -p_i log sigmoid(d) - (1 - p_i) log sigmoid(-d)

    which is the two-way softmax CE; it equals log 2 for equal log R^ and for ties. (The
    reference code's tie is one-sided, 1/2 for u_j - 1e-6 < u_i <= u_j; this one is symmetric.)

    Args:
        log_r_hat: (B,) learned log-rewards.
        u: (B,) the objective (only its order is read).
        partner: (B,) long, the index j paired with each i.
        tie_tol: the tolerance under which u values tie.

    Example:
        >>> u, partner = torch.tensor([1.0, 1.0]), torch.tensor([1, 0])  # a tie: log 2
        >>> [round(v, 4) for v in pairwise_order_loss(torch.zeros(2), u, partner).tolist()]
        [0.6931, 0.6931]
    """
    diff = u - u[partner]
    p = torch.where(diff.abs() <= tie_tol, 0.5, (diff > 0).to(log_r_hat.dtype))
    d = log_r_hat - log_r_hat[partner]
    return -p * F.logsigmoid(d) - (1 - p) * F.logsigmoid(-d)


def set_order_loss(log_r_hat: Tensor, u: Tensor) -> Tensor:
    """(B,) terms of the set (Pareto) order loss; their mean is the batch CE (Eq. 5).

        L = -sum_i P_i log softmax(log R^)_i,  P = 1[i in Pareto(u)] / |Pareto(u)|

    returned as B * (-P_i log softmax_i), so ``.mean()`` is L (only the mean is meaningful).

    Args:
        log_r_hat: (B,) learned log-rewards.
        u: (B, K) objective values (or (B,): the Pareto set is the set of maxima).

    Example:
        >>> u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
        >>> round(set_order_loss(torch.zeros(3), u).mean().item(), 4)  # log 3
        1.0986
    """
    target = non_dominated(u).to(log_r_hat.dtype)
    target = target / target.sum()
    return -len(u) * target * log_r_hat.log_softmax(0)


def _clamp_mean(loss: Tensor, max_loss: float | None) -> Tensor:
    """Per-example values whose mean is min(mean, max_loss), with zero gradient above it."""
    if max_loss is None:
        return loss
    mean = loss.mean()
    if mean <= max_loss:
        return loss
    return loss.detach() * (max_loss / mean.detach())  # clamp of the batch mean (no gradient)


class OrderPreservingTB:
    """The OP-GFN loss on TB-implied rewards: only comparisons of u are read, never R.

    ``order="total"`` pairs each trajectory with a random other one of the batch (a random
    permutation, as in the reference code) and uses ``pairwise_order_loss``; ``"pareto"``
    uses ``set_order_loss`` with Pareto dominance over the K objectives of the batch.

    Args:
        env: the environment the trajectories come from (its reward is not used).
        objective: ``objective(x) -> (B,)`` or ``(B, K)`` on terminal states, maximised.
        order: ``"total"`` (one objective) or ``"pareto"`` (partial order, K >= 1).
        max_loss: clamp of the batch-mean loss (the single-objective reference uses 100, the
            multi-objective one does not clamp: pass None); above it the gradient is zero.
        log_z: ``"param"`` (the policy's ``log_z``) or ``"flow"`` (log F(s_0 | cond)).
        tie_tol: u values closer than this tie (target 1/2), for ``"total"``.

    References:
        Order-Preserving GFlowNets (Chen and Mauch, 2024), arXiv:2310.00386.

    Example:
        >>> from flowforge.gfn import HyperGrid, MLPPolicy, PolicyConfig, sample_trajectories
        >>> env = HyperGrid(ndim=2, height=4)
        >>> policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
        >>> traj = sample_trajectories(env, policy, 8, generator=torch.Generator().manual_seed(0))
        >>> loss = OrderPreservingTB(env, lambda x: x.sum(1).double())
        >>> loss(policy, traj, generator=torch.Generator().manual_seed(1)).shape
        torch.Size([8])
    """

    def __init__(
        self,
        env: Env,
        objective: Callable[[Tensor], Tensor],
        order: Literal["total", "pareto"] = "total",
        max_loss: float | None = 100.0,
        log_z: Literal["param", "flow"] = "param",
        tie_tol: float = 1e-6,
    ) -> None:
        check_choice("order", order, ("total", "pareto"))
        check_choice("log_z", log_z, ("param", "flow"))
        if max_loss is not None and not max_loss > 0:
            raise ValueError(f"max_loss={max_loss!r} must be > 0 or None (no clamp).")
        if not tie_tol >= 0:
            raise ValueError(f"tie_tol={tie_tol!r} must be >= 0.")
        self.env = env
        self.objective = objective
        self.order = order
        self.max_loss = max_loss
        self.log_z = log_z
        self.tie_tol = tie_tol

    def __call__(
        self, policy: Policy, traj: Trajectories, generator: torch.Generator | None = None
    ) -> Tensor:
        """Args: policy; traj: B terminated trajectories; generator: for the pairs.
        Returns: (B,) per-trajectory terms whose mean is the (clamped) OP loss."""
        log_r_hat = tb_log_reward(self.env, policy, traj, self.log_z)  # (B,)
        u = objective_values(self.objective, traj.last_states).to(log_r_hat.device)  # (B, K)
        if self.order == "total":
            if u.shape[1] != 1:
                raise ValueError(
                    f"order='total' needs one objective, but the objective returned K = "
                    f"{u.shape[1]}; use order='pareto' for several objectives."
                )
            partner = torch.randperm(len(traj), generator=generator).to(log_r_hat.device)
            loss = pairwise_order_loss(log_r_hat, u[:, 0], partner, self.tie_tol)
        else:
            loss = set_order_loss(log_r_hat, u)
        return _clamp_mean(loss, self.max_loss)
