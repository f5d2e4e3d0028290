"""Pictures of GFlowNet runs: learned against target distributions and marginals, the exact L1
during training, and (molecules) the best molecules with the score histogram."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from flowforge.gfn import (
    HyperGrid,
    SetGeneration,
    SmilesBuilder,
    mean_state,
    sample_trajectories,
    terminal_distribution,
)
from flowforge.recipes import plots
from flowforge.recipes.gfn_molecules import molecule_pictures
from flowforge.train.logging import METRICS_FILE

if TYPE_CHECKING:
    from flowforge.recipes.base import Recipe
    from flowforge.recipes.gfn_envs import EnvData

__all__ = ["cpu_policy", "pictures"]


def cpu_policy(model: nn.Module) -> nn.Module:
    """The policy on the CPU (the exact programs run there)."""
    device = next(model.parameters()).device
    return model if device.type == "cpu" else copy.deepcopy(model).cpu()


def _eval_curve(run_dir: Path | None) -> tuple[list[int], list[float]]:
    """(trajectories, exact L1) of the progress checks in metrics.jsonl."""
    if run_dir is None or not (Path(run_dir) / METRICS_FILE).is_file():
        return [], []
    xs, ys = [], []
    for line in (Path(run_dir) / METRICS_FILE).read_text().splitlines():
        try:
            record = json.loads(line).get("eval", {})
        except (json.JSONDecodeError, AttributeError):
            continue
        if "exact_l1" in record and "trajectories" in record:
            xs.append(int(record["trajectories"]))
            ys.append(float(record["exact_l1"]))
    return xs, ys


def _heatmaps(p: Tensor, target: Tensor, states: Tensor, height: int, title: str):
    """The learned and target distributions over the first two coordinates, one colour scale
    (the marginal over the others when ndim > 2)."""
    grids = []
    for dist in (p, target):
        grid = torch.zeros(height, height, dtype=torch.float64)
        grid.index_put_((states[:, 0], states[:, 1]), dist.double(), accumulate=True)
        grids.append(grid.numpy())
    fig, axes = plots.figure(8.4, 3.8, 1, 2)
    top = max(g.max() for g in grids)
    names = ("learned (exact, by dynamic programming)", "target R / Z")
    for ax, grid, name in zip(axes[0], grids, names, strict=True):
        mesh = ax.imshow(grid.T, origin="lower", vmin=0, vmax=top, cmap="viridis")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("x0")
        ax.set_ylabel("x1")
    fig.colorbar(mesh, ax=list(axes[0]), shrink=0.8, label="probability")
    fig.suptitle(title, fontsize=9)
    return fig


def _bars(learned: np.ndarray, exact: np.ndarray, what: str, title: str):
    """Per-element P(x_i = 1), learned beside exact."""
    fig, axes = plots.figure(max(5.0, 0.35 * len(learned) + 2), 3.6)
    ax = axes[0, 0]
    i = np.arange(len(learned))
    ax.bar(i - 0.2, exact, 0.4, label="exact", color="tab:gray")
    ax.bar(i + 0.2, learned, 0.4, label="learned", color="tab:blue")
    ax.set_xlabel(what)
    ax.set_ylabel("P(x_i = 1)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


@torch.no_grad()
def pictures(recipe: Recipe, model: nn.Module, data: EnvData, run_dir: Path | None, step) -> dict:
    """distribution.png: learned vs target over the first two hypergrid coordinates;
    marginals.png: per-element marginals learned vs exact (sets: items, bits: positions; from
    ``sample.n`` samples where the DAG is not enumerated); l1_curve.png: the exact L1 of the
    progress checks against trajectories seen."""
    env, title = data.env, f"{recipe.config.name}, step {step}"
    policy = cpu_policy(model)
    if isinstance(env, SmilesBuilder):
        return molecule_pictures(recipe, policy, data, title)
    figures = {}
    p = terminal_distribution(data.dag, policy) if data.exact else None
    if isinstance(env, HyperGrid) and p is not None and env.ndim >= 2:
        figures["distribution.png"] = _heatmaps(
            p, data.dag.target(), data.dag.terminal_states, env.height,
            title + (f" (marginal over x0, x1 of {env.ndim} coordinates)" * (env.ndim > 2)),
        )  # fmt: skip
    elif not isinstance(env, HyperGrid):
        if p is not None:
            x = data.dag.terminal_states
            learned, exact = mean_state(x, p), mean_state(x, data.dag.target())
        else:
            s = recipe.config.sample
            g = torch.Generator().manual_seed(s.seed)
            learned = mean_state(sample_trajectories(env, policy, s.n, generator=g).last_states)
            exact = env.inclusion_marginals() if isinstance(env, SetGeneration) else None
        what = "item" if isinstance(env, SetGeneration) else "bit position"
        exact_np = np.full(len(learned), np.nan) if exact is None else exact.numpy()
        figures["marginals.png"] = _bars(learned.numpy(), exact_np, what, title)
    xs, ys = _eval_curve(run_dir)
    if xs:
        fig, axes = plots.figure(6, 3.8)
        ax = axes[0, 0]
        ax.plot(xs, ys, marker="o", ms=3)
        ax.set_xlabel("trajectories seen")
        ax.set_ylabel("exact L1 to R / Z (lower is better)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.set_title(f"{recipe.config.name}: exact L1 during training", fontsize=9)
        figures["l1_curve.png"] = fig
    return figures
