"""Evaluation of a GFlowNet: L1 to R / Z (exact or from samples), log Z error, modes, diversity.

    L1(P, Q) = sum_x |P(x) - Q(x)|   in [0, 2] (twice the total variation)

The exact L1 reads the policy's terminal distribution from the DAG program of ``gfn.exact``;
the empirical L1 reads the frequencies of sampled objects, whose floor for n samples over N
objects is about sqrt(2 N / (pi n)) even for a perfect sampler.

References:
    Trajectory Balance: Improved Credit Assignment in GFlowNets (Malkin et al., 2022),
    arXiv:2201.13259 (L1 on the hypergrid).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.gfn.env import Env, check_log_reward
from flowforge.gfn.exact import StateDAG, match_rows, terminal_distribution
from flowforge.gfn.policy import Policy

__all__ = [
    "diversity",
    "empirical_distribution",
    "empirical_l1",
    "exact_l1",
    "l1_distance",
    "log_z_error",
    "mean_state",
    "modes_found",
    "top_k_reward",
]


def l1_distance(p: Tensor, q: Tensor) -> float:
    """sum |p - q| of two distributions over the same objects.

    Example:
        >>> l1_distance(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0]))
        1.0
    """
    if p.shape != q.shape:
        raise ValueError(f"p has shape {tuple(p.shape)} but q has {tuple(q.shape)}.")
    return (p.double() - q.double()).abs().sum().item()


def exact_l1(dag: StateDAG, policy: Policy, cond: Tensor | None = None) -> float:
    """L1 between the policy's exact terminal distribution and R / Z."""
    return l1_distance(terminal_distribution(dag, policy, cond), dag.target())


def empirical_distribution(env: Env, x: Tensor) -> Tensor:
    """(N,) frequencies of the sampled objects ``x`` (n, *S) over ``env.all_terminal_states()``.

    Example:
        >>> from flowforge.gfn.envs import HyperGrid
        >>> env = HyperGrid(ndim=1, height=3)
        >>> empirical_distribution(env, torch.tensor([[0], [2], [2], [2]])).tolist()
        [0.25, 0.0, 0.75]
    """
    table = env.all_terminal_states().to(x.device)
    counts = torch.bincount(match_rows(table, x), minlength=len(table))
    return counts.double() / len(x)


def empirical_l1(env: Env, x: Tensor) -> float:
    """L1 between the frequencies of the sampled objects ``x`` and R / Z."""
    table = env.all_terminal_states()
    log_r = check_log_reward(env.log_reward(table), table, f"{type(env).__name__}.log_reward")
    target = torch.softmax(log_r.double(), 0)
    return l1_distance(empirical_distribution(env, x).cpu(), target)


def log_z_error(env: Env, log_z: Tensor | float) -> float:
    """|log Z_learned - log Z| against the environment's exact log partition function."""
    return abs(float(log_z) - env.log_partition())


def modes_found(x: Tensor, log_rewards: Tensor, log_threshold: float) -> int:
    """The number of distinct objects among ``x`` (n, *S) with log R(x) >= ``log_threshold``.

    Example:
        >>> x = torch.tensor([[1, 1], [1, 1], [0, 2], [3, 3]])
        >>> modes_found(x, torch.tensor([0.0, 0.0, -5.0, 0.0]), log_threshold=-1.0)
        2
    """
    good = log_rewards >= log_threshold
    return len(torch.unique(x[good].flatten(1), dim=0)) if good.any() else 0


def top_k_reward(x: Tensor, log_rewards: Tensor, k: int) -> float:
    """Mean reward of the k best distinct objects among ``x`` (fewer if fewer are distinct).

    Example:
        >>> x = torch.tensor([[0], [0], [1], [2]])
        >>> log_r = torch.tensor([4.0, 4.0, 2.0, 1.0], dtype=torch.float64).log()
        >>> top_k_reward(x, log_r, k=2)
        3.0
    """
    if k < 1:
        raise ValueError(f"k={k!r} must be >= 1.")
    keys, inverse = torch.unique(x.flatten(1), dim=0, return_inverse=True)
    best = torch.full((len(keys),), -torch.inf, dtype=torch.float64, device=x.device)
    best = best.scatter_reduce(0, inverse, log_rewards.double(), "amax")
    return best.topk(min(k, len(keys))).values.exp().mean().item()


def diversity(x: Tensor) -> float:
    """Mean pairwise Hamming distance between the distinct objects among ``x`` (n, *S).

    Costs O(n^2) memory in the number of distinct objects: pass a top-k set, not every sample.

    Example:
        >>> diversity(torch.tensor([[0, 0, 0], [1, 1, 0], [0, 0, 0]]))  # one distinct pair
        2.0
    """
    keys = torch.unique(x.flatten(1), dim=0)
    n = len(keys)
    if n < 2:
        return 0.0
    d = (keys[:, None] != keys[None]).sum(-1).double()  # (n, n)
    return (d.sum() / (n * (n - 1))).item()


def mean_state(x: Tensor, p: Tensor | None = None) -> Tensor:
    """(*S,) the mean state E[x] under weights ``p`` (N,) or of the samples (for sets: the
    per-item inclusion marginals P(i in x)).

    Example:
        >>> mean_state(torch.tensor([[1, 0], [1, 1]]), torch.tensor([0.25, 0.75])).tolist()
        [1.0, 0.75]
    """
    w = torch.full((len(x),), 1.0 / len(x), dtype=torch.float64) if p is None else p.double()
    return torch.einsum("n,n...->...", w.to(x.device), x.double())
