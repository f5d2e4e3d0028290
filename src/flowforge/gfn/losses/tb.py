"""Trajectory balance (TB): one residual per complete trajectory with a learned log Z.

    L_TB(tau) = ( log Z + sum_t log P_F(s_t+1 | s_t) - log R(x) - sum_t log P_B(s_t | s_t+1) )^2

References:
    Trajectory Balance: Improved Credit Assignment in GFlowNets (Malkin et al., 2022),
    arXiv:2201.13259, Eq. 14.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from flowforge.gfn.env import Env
from flowforge.gfn.policy import Policy
from flowforge.gfn.trajectories import Trajectories, evaluate_trajectories
from flowforge.utils.checks import check_choice

__all__ = ["TrajectoryBalance"]


class TrajectoryBalance:
    """The TB loss, one value per trajectory (B,); the caller reduces.

    Args:
        env: the environment the trajectories come from.
        log_z: ``"param"`` reads the policy's scalar ``log_z``; ``"flow"`` reads its flow head at
            s_0, log F(s_0 | cond), which makes log Z a function of the conditioning input.

    References:
        Trajectory Balance: Improved Credit Assignment in GFlowNets (Malkin et al., 2022),
        arXiv:2201.13259.

    Example:
        >>> import torch
        >>> from flowforge.gfn import HyperGrid, MLPPolicy, PolicyConfig, sample_trajectories
        >>> env = HyperGrid(ndim=2, height=4)
        >>> policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
        >>> traj = sample_trajectories(env, policy, 8, generator=torch.Generator().manual_seed(0))
        >>> TrajectoryBalance(env)(policy, traj).shape
        torch.Size([8])
    """

    def __init__(self, env: Env, log_z: Literal["param", "flow"] = "param") -> None:
        check_choice("log_z", log_z, ("param", "flow"))
        self.env = env
        self.log_z = log_z

    def __call__(self, policy: Policy, traj: Trajectories) -> Tensor:
        """Args: policy; traj: B terminated trajectories. Returns: (B,) squared residuals."""
        if not traj.terminated.all():
            raise ValueError(
                f"TB needs complete trajectories, but {int((~traj.terminated).sum())} of "
                f"{len(traj)} are prefixes; use a forward-looking loss for incomplete ones."
            )
        ev = evaluate_trajectories(self.env, policy, traj)
        log_z = policy.log_z if self.log_z == "param" else ev.log_flow[0]
        log_r = traj.log_rewards.to(ev.log_pf)
        return (log_z + ev.log_pf.sum(0) - log_r - ev.log_pb.sum(0)).square()  # Eq. 14
