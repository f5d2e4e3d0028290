"""Forward-looking balance (FL-DB, FL-SubTB): local credit from additive energies.

With E(x) = sum_t E(s_t -> s_{t+1}) and R(x) = exp(-E(x)), the state flow is reparameterised as
F(s) = F~(s) exp(-E(s)) with E(s) the partial energy, and the network learns log F~:

    FL-DB (s -> s'):  ( log F~(s) + log P_F(s' | s) - log F~(s') - log P_B(s | s') + E(s -> s') )^2
    FL-SubTB:         ( log F~(s_i) + sum log P_F - log F~(s_j) - sum log P_B + sum_{i<=t<j} E )^2

with log F~ = 0 at the exit node (F~(x) = 1 at complete objects whose energy is -log R(x)).
Every transition carries its own reward signal, so any prefix of a trajectory is a valid
training example: these losses learn from incomplete trajectories.

References:
    Better Training of GFlowNets with Local Credit and Incomplete Trajectories (Pan et al., 2023),
    arXiv:2302.01687, Eqs. 6 and 7.
"""

from __future__ import annotations

from torch import Tensor

from flowforge.gfn.env import Env
from flowforge.gfn.losses.balance import balance_terms
from flowforge.gfn.losses.subtb import lambda_weighted
from flowforge.gfn.policy import Policy
from flowforge.gfn.trajectories import Trajectories

__all__ = ["ForwardLookingDB", "ForwardLookingSubTB"]


class ForwardLookingDB:
    """The FL-DB loss summed over each trajectory's transitions (B,); the caller reduces.

    The policy's flow head is log F~(s); the trajectories must carry energies (an environment
    with ``state_energy``).

    Args:
        env: the environment the trajectories come from.

    References:
        Better Training of GFlowNets with Local Credit and Incomplete Trajectories
        (Pan et al., 2023), arXiv:2302.01687.

    Example:
        >>> import torch
        >>> from flowforge.gfn import MLPPolicy, PolicyConfig, SetGeneration, sample_trajectories
        >>> env = SetGeneration(6, 3, torch.linspace(0, 1, 6))
        >>> policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
        >>> traj = sample_trajectories(env, policy, 8, generator=torch.Generator().manual_seed(0))
        >>> prefixes = traj.truncate(torch.full((8,), 2))  # incomplete trajectories are fine
        >>> ForwardLookingDB(env)(policy, prefixes).shape
        torch.Size([8])
    """

    def __init__(self, env: Env) -> None:
        self.env = env

    def __call__(self, policy: Policy, traj: Trajectories) -> Tensor:
        """Args: policy; traj: B trajectories or prefixes. Returns: (B,) summed squares."""
        terms = balance_terms(self.env, policy, traj, forward_looking=True)
        r = terms.log_flow[:-1] + terms.delta - terms.log_flow[1:]  # Eq. 6, (T, B)
        return r.square().masked_fill(~terms.valid, 0.0).sum(0)


class ForwardLookingSubTB:
    """The FL-SubTB(lambda) loss, one value per trajectory (B,); the caller reduces.

    Args:
        env: the environment the trajectories come from.
        lam: lambda > 0, the geometric weight of longer sub-trajectories.

    References:
        Better Training of GFlowNets with Local Credit and Incomplete Trajectories
        (Pan et al., 2023), arXiv:2302.01687.

    Example:
        >>> import torch
        >>> from flowforge.gfn import MLPPolicy, PolicyConfig, SetGeneration, sample_trajectories
        >>> env = SetGeneration(6, 3, torch.linspace(0, 1, 6))
        >>> policy = MLPPolicy(PolicyConfig(env.encoding_dim, env.n_actions, hidden=16))
        >>> traj = sample_trajectories(env, policy, 8, generator=torch.Generator().manual_seed(0))
        >>> ForwardLookingSubTB(env)(policy, traj).shape
        torch.Size([8])
    """

    def __init__(self, env: Env, lam: float = 0.9) -> None:
        if not lam > 0:
            raise ValueError(f"lam={lam!r} must be > 0 (0.9 is the usual choice).")
        self.env = env
        self.lam = lam

    def __call__(self, policy: Policy, traj: Trajectories) -> Tensor:
        """Args: policy; traj: B trajectories or prefixes. Returns: (B,) weighted squares."""
        terms = balance_terms(self.env, policy, traj, forward_looking=True)
        return lambda_weighted(terms, self.lam)  # Eq. 7
