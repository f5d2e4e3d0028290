"""GFlowNet objectives: TB, DB, SubTB(lambda) and the forward-looking FL-DB and FL-SubTB.

Each is a small class holding the environment and its hyperparameters; ``loss(policy, traj)``
re-evaluates the policy on the trajectories and returns one value per trajectory (B,).
"""

from flowforge.gfn.losses.balance import BalanceTerms, balance_terms, subtrajectory_residuals
from flowforge.gfn.losses.db import DetailedBalance
from flowforge.gfn.losses.fl import ForwardLookingDB, ForwardLookingSubTB
from flowforge.gfn.losses.subtb import SubTrajectoryBalance, lambda_weighted
from flowforge.gfn.losses.tb import TrajectoryBalance

__all__ = [
    "BalanceTerms",
    "DetailedBalance",
    "ForwardLookingDB",
    "ForwardLookingSubTB",
    "SubTrajectoryBalance",
    "TrajectoryBalance",
    "balance_terms",
    "lambda_weighted",
    "subtrajectory_residuals",
]
