"""``flowforge eval``: quality of a trained run against NFE, beside each metric's floor."""

from __future__ import annotations

import os
from pathlib import Path

from flowforge.recipes.config_io import apply_overrides
from flowforge.recipes.run import METRICS_JSON, load
from flowforge.train import distributed

__all__ = ["describe_likelihood", "eval_command", "print_metrics", "print_table", "run_overrides"]


def run_overrides(run, overrides: list[str], command: str) -> None:
    """Apply ``sample.*`` / ``eval.*`` overrides to a loaded run's config (in memory)."""
    for item in overrides:
        key = (item[2:] if item.startswith("--") else item).split("=", 1)[0]
        if key.split(".")[0] not in ("sample", "eval"):
            raise ValueError(
                f"`flowforge {command}` takes sample.* and eval.* overrides; {key} is fixed "
                "once a run is trained (train a new run to change it)."
            )
    run.config = apply_overrides(run.config, overrides)


def print_table(metrics: dict) -> None:
    """Print (rank 0) one row per solver and NFE of an evaluation, then the floors."""
    floors = metrics["floors"]
    names = list(floors)
    for row in metrics["results"]:  # extra columns of image runs (no floor)
        names += [k for k in row if k not in ("solver", "nfe") and k not in names]
    w = max([9] + [len(row["solver"]) + 1 for row in metrics["results"]])
    cw = {n: max(17, len(n) + 2) for n in names}  # column widths
    head = f"{'solver':<{w}}{'NFE':>5}" + "".join(f"{n:>{cw[n]}}" for n in names)
    lines = [head, "-" * len(head)]
    for row in metrics["results"]:
        cells = [f"{row[n]:>{cw[n]}.4g}" if n in row else f"{'-':>{cw[n]}}" for n in names]
        lines.append(f"{row['solver']:<{w}}{row['nfe']:>5}" + "".join(cells))
    cells = [
        f"{floors[n]:>{cw[n]}.4g}" if floors.get(n) is not None else f"{'-':>{cw[n]}}"
        for n in names
    ]
    lines.append(f"{'floor':<{w}}{'':>5}" + "".join(cells))
    if "training" in metrics:  # molecules: the same figures of training molecules
        ref = metrics["training"]
        cells = [f"{ref[n]:>{cw[n]}.4g}" if n in ref else f"{'-':>{cw[n]}}" for n in names]
        lines.append(f"{'training':<{w}}{'':>5}" + "".join(cells))
    if "likelihood" in metrics:  # normalizing flows: the held-out likelihood
        lines.append(describe_likelihood(metrics["likelihood"]))
    distributed.print0("\n".join(lines))


def describe_likelihood(likelihood: dict) -> str:
    """One line of a flow's held-out likelihood.

    Example:
        >>> describe_likelihood({"n": 10, "noise": "gaussian", "noise_std": 0.05, "nll": 2.5,
        ...                      "nll_per_dim": 1.25})
        'held-out NLL: 2.5 nats/example, 1.25 nats/dim (10 examples, gaussian noise 0.05)'
    """
    parts = [f"{likelihood['nll']:.4g} nats/example", f"{likelihood['nll_per_dim']:.4g} nats/dim"]
    if "bits_per_dim" in likelihood:
        parts.append(f"{likelihood['bits_per_dim']:.4g} bits/dim")
    return (
        f"held-out NLL: {', '.join(parts)} ({likelihood['n']} examples, "
        f"{likelihood['noise']} noise {likelihood['noise_std']:g})"
    )


def print_metrics(metrics: dict) -> None:
    """The table of an evaluation with rows, else its figures one per line."""
    if "results" in metrics:
        print_table(metrics)
        return
    for key, value in metrics.items():
        if key != "step":
            distributed.print0(f"{key.replace('_', ' ')}: {value:.4g}")


def eval_command(
    run: str | os.PathLike,
    *,
    nfes: list[int] | None = None,
    solvers: list[str] | None = None,
    n_samples: int | None = None,
    seed: int | None = None,
    which: str = "ema",
    overrides: list[str] | None = None,
) -> dict:
    """Evaluate a run; writes ``metrics.json`` and ``quality_vs_nfe.png`` into it."""
    loaded = load(run)
    run_overrides(loaded, overrides or [], "eval")
    metrics = loaded.evaluate(
        nfes=nfes, solvers=solvers, n_samples=n_samples, seed=seed, which=which, write=True
    )
    print_metrics(metrics)
    written = [METRICS_JSON] + ["quality_vs_nfe.png"] * ("results" in metrics)
    print(f"wrote {' and '.join(str(Path(run, name)) for name in written)}")
    return metrics
