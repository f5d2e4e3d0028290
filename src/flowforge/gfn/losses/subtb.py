"""Sub-trajectory balance SubTB(lambda): every sub-trajectory, weighted geometrically by length.

    L(tau) = sum_{0 <= i < j <= L} lambda^{j-i} r_ij^2 / sum_{0 <= i < j <= L} lambda^{j-i}
    r_ij = log F(s_i) + sum_{i<=t<j} log P_F(s_t+1 | s_t) - log F(s_j) - sum log P_B(s_t | s_t+1)

with F of the exit node equal to R(x); the pairs j = i + 1 are DB and (0, L) is TB with
Z = F(s_0).

References:
    Learning GFlowNets from Partial Episodes for Improved Convergence and Stability
    (Madan et al., 2023), arXiv:2209.12782, Eq. 9.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.gfn.env import Env
from flowforge.gfn.losses.balance import BalanceTerms, balance_terms, subtrajectory_residuals
from flowforge.gfn.policy import Policy
from flowforge.gfn.trajectories import Trajectories

__all__ = ["SubTrajectoryBalance", "lambda_weighted"]


def lambda_weighted(terms: BalanceTerms, lam: float) -> Tensor:
    """(B,) the lambda-weighted mean of the squared sub-trajectory residuals (Eq. 9)."""
    r, pairs = subtrajectory_residuals(terms)  # (T + 1, T + 1, B)
    n = r.shape[0]
    i = torch.arange(n, device=r.device)
    w = (lam ** (i[None, :] - i[:, None]).clamp(min=0).to(r.dtype))[..., None] * pairs
    total = (w * r.square().masked_fill(~pairs, 0.0)).sum((0, 1))
    return total / w.sum((0, 1)).clamp(min=torch.finfo(r.dtype).tiny)


class SubTrajectoryBalance:
    """The SubTB(lambda) loss, one value per trajectory (B,); the caller reduces.

    Args:
        env: the environment the trajectories come from.
        lam: lambda > 0, the weight ratio of a sub-trajectory one step longer (0.9 in Madan
            et al.; lambda -> 0 approaches DB, large lambda TB).

    References:
        Learning GFlowNets from Partial Episodes for Improved Convergence and Stability
        (Madan et al., 2023), arXiv:2209.12782.

    Example:
        >>> import torch
        >>> from flowforge.gfn import HyperGrid, MLPPolicy, PolicyConfig, sample_trajectories
        >>> env = HyperGrid(ndim=2, height=4)
        >>> policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
        >>> traj = sample_trajectories(env, policy, 8, generator=torch.Generator().manual_seed(0))
        >>> SubTrajectoryBalance(env, lam=0.9)(policy, traj).shape
        torch.Size([8])
    """

    def __init__(self, env: Env, lam: float = 0.9) -> None:
        if not lam > 0:
            raise ValueError(f"lam={lam!r} must be > 0 (0.9 is the usual choice).")
        self.env = env
        self.lam = lam

    def __call__(self, policy: Policy, traj: Trajectories) -> Tensor:
        """Args: policy; traj: B trajectories or prefixes. Returns: (B,) weighted squares."""
        return lambda_weighted(balance_terms(self.env, policy, traj), self.lam)
