"""Reward fine-tuning of trained flows: rewards as callables, DanceGRPO, AC-Flow (ORW-CFM-W2
with a critic), and fine-tuning by maximum likelihood of reconstructions.

Each method is an objective ``objective(model, x, cond, generator) -> (B,)`` for
``flowforge.train.train`` that draws its own samples from the model being tuned (``x`` only
sets the device), with its statistics in ``objective.stats`` and its state (lagged policy,
critic, running statistics) in ``state_dict``; the ``*_step`` / ``.step`` forms take one
optimizer step themselves.

* The SDE policy (``sde_policy.py``): the Euler sampler of a velocity field as an SDE with the
  same marginals (``eta``), its Gaussian transition log-probabilities and KL, rollouts.
* DanceGRPO (``grpo.py``): groups from one noise, group-relative advantages, the clipped-ratio
  loss on a share of the steps, KL to the base (``GRPOObjective``, ``grpo_step``).
* ORW-CFM-W2 and RWR (``orw.py``): flow matching on the lagged policy's samples weighted by the
  reward, with (ORW) or without (RWR) the W2 bound to the base (``ORWObjective``).
* AC-Flow (``acflow.py``): ORW with shaped rewards, a critic over the path states, clipped
  advantages and a critic warm-up (``ACFlowObjective``).

* Rewards (``rewards.py``): ``reward(x) -> (B,)`` callables (half-plane, Gaussian bump, squared
  distance, a classifier's log-probability, image smoothness and contrast, weighted sums) and
  ``check_reward``, which every method calls on a reward's output.
* The tilted target (``tilted.py``): p(x) exp(r(x) / beta) / Z of a 2-D density by quadrature,
  the optimum of KL-regularised reward maximisation, for evaluating fine-tuning exactly.
* Maximum likelihood of reconstructions (``mle.py``): the deployment solver's output regressed
  on data from the base flow's inverse-ODE pairs, all weights or a residual contraction field.
"""

from flowforge.finetune.acflow import (
    ACFlow,
    ACFlowConfig,
    ACFlowObjective,
    RewardShaper,
    ValueMLP,
)
from flowforge.finetune.grpo import (
    GRPOConfig,
    GRPOObjective,
    group_advantages,
    grpo_loss,
    grpo_step,
)
from flowforge.finetune.mle import (
    MLEReconstructionLoss,
    MLEStart,
    ResidualContractionField,
    make_reconstruction_pairs,
    reconstruct,
)
from flowforge.finetune.orw import ORWCFM, ORWConfig, ORWObjective, make_rwr, reward_weights
from flowforge.finetune.rewards import (
    ClassifierLogProb,
    Contrast,
    GaussianBump,
    HalfPlane,
    Reward,
    RewardSum,
    Smoothness,
    SquaredDistance,
    check_reward,
    reward_name,
)
from flowforge.finetune.sde_policy import (
    GRPORollout,
    sde_mean_std,
    sde_rollout,
    sde_sample,
    transition_kl,
    transition_log_prob,
)
from flowforge.finetune.tilted import TiltedGrid, tilted_grid

__all__ = [
    "ACFlow",
    "ACFlowConfig",
    "ACFlowObjective",
    "ClassifierLogProb",
    "Contrast",
    "GRPOConfig",
    "GRPOObjective",
    "GRPORollout",
    "GaussianBump",
    "HalfPlane",
    "MLEReconstructionLoss",
    "MLEStart",
    "ORWCFM",
    "ORWConfig",
    "ORWObjective",
    "ResidualContractionField",
    "Reward",
    "RewardShaper",
    "RewardSum",
    "Smoothness",
    "SquaredDistance",
    "TiltedGrid",
    "ValueMLP",
    "check_reward",
    "group_advantages",
    "grpo_loss",
    "grpo_step",
    "make_reconstruction_pairs",
    "make_rwr",
    "reconstruct",
    "reward_name",
    "reward_weights",
    "sde_mean_std",
    "sde_rollout",
    "sde_sample",
    "tilted_grid",
    "transition_kl",
    "transition_log_prob",
]
