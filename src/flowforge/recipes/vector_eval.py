"""Evaluation and pictures of vector runs.

Every eval row uses the same noise, the same labels and the same reference set of
``eval.n_samples`` fresh data points; the floor of a metric is its value between two fresh data
sets of that size (median of ``eval.floor_repeats`` pairs), what a perfect model scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowforge.metrics.floor import finite_sample_floor
from flowforge.metrics.mmd import (
    BANDWIDTH_SCALES,
    energy_distance,
    median_bandwidth,
    mmd2_unbiased,
)
from flowforge.metrics.sliced import sliced_wasserstein
from flowforge.metrics.wasserstein import wasserstein2
from flowforge.recipes import plots
from flowforge.recipes.base import Samples, describe_sampling

if TYPE_CHECKING:
    from flowforge.recipes.base import Recipe
    from flowforge.recipes.vectors import VectorData

__all__ = ["build_metrics", "eval_jobs", "evaluate", "pictures", "progress_hook"]


def eval_jobs(recipe: Recipe) -> list[tuple[str, int]]:
    """The ``(solver, nfe)`` rows of an evaluation: ``eval.solvers`` x ``eval.nfes``, keeping
    the budgets each solver spends exactly (``Recipe.nfe_budgets``), then dopri5 once when
    ``eval.dopri5`` is set.

    Example:
        >>> from flowforge.recipes.config import RunConfig
        >>> from flowforge.recipes.table import recipe_for
        >>> cfg = RunConfig()
        >>> cfg.eval.solvers, cfg.eval.nfes, cfg.eval.dopri5 = ["euler", "heun"], [1, 2], False
        >>> eval_jobs(recipe_for(cfg))
        [('euler', 1), ('euler', 2), ('heun', 2)]
    """
    e = recipe.config.eval
    jobs = [(s, n) for s in e.solvers for n in recipe.nfe_budgets(s, e.nfes)]
    if e.dopri5 and ("dopri5", 0) not in jobs:
        jobs.append(("dopri5", 0))
    return jobs


def evaluate(
    recipe: Recipe,
    model: nn.Module,
    data: VectorData,
    run_dir: Path | None = None,
    *,
    step: int | None = None,
    progress: bool = True,
) -> dict:
    """Sample quality at several NFEs per solver, beside each metric's finite-sample floor.

    Returns:
        ``{"step", "n_samples", "guidance", "floors": {metric: value},
        "results": [{"solver", "nfe", metric: value, ...}, ...]}``.
    """
    config = recipe.config
    e = config.eval
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(e.seed)
    n = e.n_samples
    target = data.fresh(n, g)  # (n, D) in data space
    fns = build_metrics(e.metrics, e.seed, target)
    x_0 = torch.randn(n, data.dim, generator=g, dtype=torch.float32).to(device)
    labels = data.labels(n, g)
    labels = None if labels is None else labels.to(device)
    sampler = recipe.sampler(model, data, config.sample, run_dir)
    jobs = eval_jobs(recipe)
    floors = {
        name: float(finite_sample_floor(fn, data.fresh, n, e.floor_repeats, generator=g))
        for name, fn in fns.items()
    }
    results = []
    bar = tqdm(jobs, desc="eval", unit="run", disable=not progress, leave=False)
    for solver, nfe in bar:
        bar.set_postfix_str(solver if recipe.own_cost else f"{solver} NFE {nfe or 'adaptive'}")
        x, used = sampler(x_0, solver, nfe, labels)
        x = data.to_data(x).float().cpu()
        row: dict = {"solver": solver, "nfe": int(used)}
        if not torch.isfinite(x).all():
            row.update({name: math.inf for name in fns})
        else:
            row.update({name: float(fn(x, target)) for name, fn in fns.items()})
            row.update(recipe.extra_metrics(model, data, Samples(x, int(used)), solver, nfe, g))
        results.append(row)
    return {
        "step": step,
        "n_samples": n,
        "guidance": config.sample.guidance if data.num_classes else None,
        "floors": floors,
        "results": results,
    }


def pictures(
    recipe: Recipe, model: nn.Module, data: VectorData, run_dir: Path | None, step: int | None
) -> dict:
    """samples.png at the sampling settings beside fresh data (a corner plot for more than two
    columns), and trajectories.png (ODE paths of 300 samples) for a velocity field."""
    config = recipe.config
    s = config.sample
    device = next(model.parameters()).device
    title = f"{config.name}, step {step}"
    g = torch.Generator().manual_seed(s.seed)
    sampler = recipe.sampler(model, data, s, run_dir)
    x_0 = torch.randn(s.n, data.dim, generator=g, dtype=torch.float32).to(device)
    labels = data.labels(s.n, g)
    labels = None if labels is None else labels.to(device)
    x, used = sampler(x_0, s.solver, s.nfe, labels)
    reference = data.fresh(s.n, g).numpy()
    figures = {
        "samples.png": plots.plot_samples(
            data.to_data(x).cpu().numpy(),
            reference,
            title=f"{title}: {describe_sampling(s, used, data.num_classes)}",
            labels=None if labels is None else labels.cpu().numpy(),
            columns=data.columns,
        )
    }
    if "dopri5" in recipe.solvers:  # a velocity field: draw its ODE paths
        m = min(300, s.n)
        cond = None if labels is None else labels[:m]
        traj, _ = sampler(x_0[:m], "dopri5", 0, cond, trajectory=True)
        figures["trajectories.png"] = plots.plot_trajectories(
            data.to_data(traj).cpu().numpy(),
            reference,
            title=f"{title}: ODE paths, noise (t = 0) to data (t = 1)",
            columns=data.columns,
        )
    return figures


def progress_hook(recipe: Recipe, data: VectorData, run_dir: Path | None):
    """``hook(step, net) -> {"sliced_w2", "nfe"}`` at the sampling settings (1000 samples at
    most), for ``train.eval_every``."""
    config = recipe.config
    s, n = config.sample, min(config.eval.n_samples, 1000)

    def hook(step: int, net: nn.Module) -> dict:
        device = next(net.parameters()).device
        g = torch.Generator().manual_seed(config.eval.seed)
        target = data.fresh(n, g)
        x_0 = torch.randn(n, data.dim, generator=g, dtype=torch.float32).to(device)
        labels = data.labels(n, g)
        sampler = recipe.sampler(net, data, s, run_dir)
        x, used = sampler(x_0, s.solver, s.nfe, None if labels is None else labels.to(device))
        sw2 = build_metrics(["sliced_w2"], config.eval.seed, target)["sliced_w2"]
        return {"sliced_w2": float(sw2(data.to_data(x).float().cpu(), target)), "nfe": used}

    return hook


def build_metrics(
    names: list[str], seed: int, reference: Tensor
) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """The metric functions ``metric(x, y) -> scalar`` named in ``names``, choices fixed once.

    Sliced W2 uses the same directions and MMD the same kernel widths (the median heuristic on
    ``reference``) for every row and for the floor, so rows differ only through the samples.

    Args:
        names: metric names out of ``w2``, ``sliced_w2``, ``mmd``, ``energy`` (eval.metrics).
        seed: seed of the sliced-W2 projection directions.
        reference: (N, D) data setting the MMD kernel widths.

    Returns:
        ``{name: metric}`` in the order of ``names``.

    Example:
        >>> fns = build_metrics(["energy", "sliced_w2"], seed=0, reference=torch.randn(50, 2))
        >>> list(fns), float(fns["energy"](torch.zeros(4, 2), torch.zeros(4, 2)))
        (['energy', 'sliced_w2'], 0.0)
    """
    directions_seed = seed
    if "mmd" in names:
        bandwidths = (
            median_bandwidth(reference, reference) * torch.tensor(BANDWIDTH_SCALES)
        ).tolist()

    def sw2(x: Tensor, y: Tensor) -> Tensor:
        g = torch.Generator().manual_seed(directions_seed)
        return sliced_wasserstein(x, y, generator=g)

    def mmd(x: Tensor, y: Tensor) -> Tensor:
        return mmd2_unbiased(x, y, bandwidths=bandwidths)

    table = {"w2": wasserstein2, "sliced_w2": sw2, "mmd": mmd, "energy": energy_distance}
    return {name: table[name] for name in names}
