"""Generative flow networks: samplers of compositional objects x with P_T(x) proportional to R(x).

The package has its own contracts and shares only networks and helpers with the rest of
flowforge:

* ``Env`` (``env.py``): integer states in batches, ``n_actions`` with the exit action last,
  forward masks (B, A) and backward masks (B, A - 1), ``step`` / ``backward_step`` (the backward
  action a undoes the forward move a), ``log_reward(x)`` > -inf at states where the exit is
  valid, an optional partial energy ``state_energy(s)`` for the forward-looking losses, and for
  enumerable environments ``all_terminal_states()`` and the exact ``log_partition()``.
  Environments: ``HyperGrid``, ``BitSequence``, ``SetGeneration``, ``SmilesBuilder`` (molecules
  token by token, scored with RDKit: the ``chem`` extra).
* ``Policy`` (``policy.py``): ``policy(env.encode(s), cond=None) -> PolicyOutput(logits,
  logits_pb | None, log_flow)`` with a learned scalar ``log_z``; ``log_probs`` masks invalid
  actions with -inf in P_F and P_B (``logits_pb = None`` is the uniform P_B). ``cond`` (B, C) is
  concatenated to the state encoding, for conditional GFlowNets.
* ``Trajectories`` (``trajectories.py``): states (T + 1, B, ...), actions (T, B), lengths,
  log P_F, log P_B, transition energies and terminal log-rewards, drawn by
  ``sample_trajectories`` (epsilon-uniform exploration, temperature); ``truncate`` makes the
  prefixes (incomplete trajectories) that the forward-looking losses learn from;
  ``backward_trajectories`` draws trajectories ending at given objects from P_B (off-policy data).
* Losses (``losses/``): ``TrajectoryBalance``, ``DetailedBalance``, ``SubTrajectoryBalance``,
  ``ForwardLookingDB``, ``ForwardLookingSubTB``; ``loss(policy, traj) -> (B,)``.
* Order-preserving GFlowNets (``losses/op.py``, ``pareto.py``): ``OrderPreservingTB`` learns
  from comparisons of an objective alone (pairwise for a total order, the batch's Pareto set for
  several objectives) through the TB-implied reward log R^ = log Z + sum log P_F - sum log P_B;
  ``non_dominated``, ``pareto_front``, exact ``hypervolume`` and ``igd``; ``BraninCurrin``.
* Outcome-conditioned GFlowNets (``oc.py``, ``oc_finetune.py``): a policy conditioned on an
  outcome y (``cond``) pre-trained without a reward on R(x | y) = 1[x = y] with hindsight
  relabelling (``OutcomeConditionedBalance``), its success rate exactly or by sampling, and
  fine-tuning to a new reward by the marginal policy (``MarginalDistillation``: weighted
  rollouts of the pre-trained model; ``MarginalFlowRegression``: the paper's flow regression).
* Exact evaluation (``exact.py``, ``metrics.py``): the terminal distribution of a policy by a
  dynamic program over the ``StateDAG``, exact flows, L1 to R / Z, log Z error, modes found,
  top-k reward, diversity.

References:
    Flow Network based Generative Models for Non-Iterative Diverse Candidate Generation
    (Bengio et al., 2021), arXiv:2106.04399.
    GFlowNet Foundations (Bengio et al., 2023), arXiv:2111.09266.
"""

from flowforge.gfn.env import Env, SequenceEnv, check_log_reward, log_reward_from_fn
from flowforge.gfn.envs import BitSequence, HyperGrid, SetGeneration, log_elementary_symmetric
from flowforge.gfn.envs.branin_currin import BraninCurrin
from flowforge.gfn.envs.smiles import SmilesBuilder
from flowforge.gfn.exact import (
    ExactFlows,
    StateDAG,
    exact_flows,
    match_rows,
    terminal_distribution,
)
from flowforge.gfn.losses import (
    BalanceTerms,
    DetailedBalance,
    ForwardLookingDB,
    ForwardLookingSubTB,
    SubTrajectoryBalance,
    TrajectoryBalance,
    balance_terms,
    lambda_weighted,
    subtrajectory_residuals,
)
from flowforge.gfn.losses.op import (
    OrderPreservingTB,
    pairwise_order_loss,
    set_order_loss,
    tb_log_reward,
)
from flowforge.gfn.metrics import (
    diversity,
    empirical_distribution,
    empirical_l1,
    exact_l1,
    l1_distance,
    log_z_error,
    mean_state,
    modes_found,
    top_k_reward,
)
from flowforge.gfn.oc import (
    OutcomeConditionedBalance,
    hindsight_relabel,
    outcome_balance_terms,
    outcome_log_reward,
    outcome_terminal_distributions,
    success_rate,
)
from flowforge.gfn.oc_finetune import MarginalDistillation, MarginalFlowRegression
from flowforge.gfn.pareto import hypervolume, igd, non_dominated, objective_values, pareto_front
from flowforge.gfn.policy import (
    MLPPolicy,
    Policy,
    PolicyConfig,
    PolicyOutput,
    TabularPolicy,
    log_probs,
    masked_log_softmax,
)
from flowforge.gfn.replay import ReplayBuffer
from flowforge.gfn.trajectories import (
    Trajectories,
    TrajectoryEval,
    backward_trajectories,
    evaluate_trajectories,
    sample_trajectories,
)

__all__ = [
    "BalanceTerms",
    "BitSequence",
    "BraninCurrin",
    "DetailedBalance",
    "Env",
    "SequenceEnv",
    "ExactFlows",
    "ForwardLookingDB",
    "ForwardLookingSubTB",
    "HyperGrid",
    "MLPPolicy",
    "MarginalDistillation",
    "MarginalFlowRegression",
    "OrderPreservingTB",
    "OutcomeConditionedBalance",
    "Policy",
    "PolicyConfig",
    "PolicyOutput",
    "ReplayBuffer",
    "SetGeneration",
    "SmilesBuilder",
    "StateDAG",
    "SubTrajectoryBalance",
    "TabularPolicy",
    "Trajectories",
    "TrajectoryBalance",
    "TrajectoryEval",
    "balance_terms",
    "check_log_reward",
    "diversity",
    "empirical_distribution",
    "empirical_l1",
    "evaluate_trajectories",
    "exact_flows",
    "exact_l1",
    "hindsight_relabel",
    "hypervolume",
    "igd",
    "l1_distance",
    "lambda_weighted",
    "log_elementary_symmetric",
    "log_probs",
    "log_reward_from_fn",
    "log_z_error",
    "masked_log_softmax",
    "match_rows",
    "mean_state",
    "modes_found",
    "non_dominated",
    "objective_values",
    "outcome_balance_terms",
    "outcome_log_reward",
    "outcome_terminal_distributions",
    "pairwise_order_loss",
    "pareto_front",
    "backward_trajectories",
    "sample_trajectories",
    "set_order_loss",
    "subtrajectory_residuals",
    "success_rate",
    "tb_log_reward",
    "terminal_distribution",
    "top_k_reward",
]
