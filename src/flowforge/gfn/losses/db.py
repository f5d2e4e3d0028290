"""Detailed balance (DB): one residual per transition, F(x) = R(x) at the exit.

    L_DB(s -> s') = ( log F(s) + log P_F(s' | s) - log F(s') - log P_B(s | s') )^2

and at the exit of x, ( log F(x) + log P_F(exit | x) - log R(x) )^2. On prefixes that never
reach the exit or a complete object, DB receives no reward signal.

References:
    GFlowNet Foundations (Bengio et al., 2023), arXiv:2111.09266, Eq. 44.
"""

from __future__ import annotations

from torch import Tensor

from flowforge.gfn.env import Env
from flowforge.gfn.losses.balance import balance_terms
from flowforge.gfn.policy import Policy
from flowforge.gfn.trajectories import Trajectories

__all__ = ["DetailedBalance"]


class DetailedBalance:
    """The DB loss summed over each trajectory's transitions (B,); the caller reduces.

    Args:
        env: the environment the trajectories come from.

    References:
        GFlowNet Foundations (Bengio et al., 2023), arXiv:2111.09266.

    Example:
        >>> import torch
        >>> from flowforge.gfn import HyperGrid, MLPPolicy, PolicyConfig, sample_trajectories
        >>> env = HyperGrid(ndim=2, height=4)
        >>> policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
        >>> traj = sample_trajectories(env, policy, 8, generator=torch.Generator().manual_seed(0))
        >>> DetailedBalance(env)(policy, traj).shape
        torch.Size([8])
    """

    def __init__(self, env: Env) -> None:
        self.env = env

    def __call__(self, policy: Policy, traj: Trajectories) -> Tensor:
        """Args: policy; traj: B trajectories or prefixes. Returns: (B,) summed squares."""
        terms = balance_terms(self.env, policy, traj)
        r = terms.log_flow[:-1] + terms.delta - terms.log_flow[1:]  # (T, B)
        return r.square().masked_fill(~terms.valid, 0.0).sum(0)
