"""Pictures of a run, drawn with matplotlib's Agg backend (no display needed).

Each function takes plain arrays, writes one PNG atomically and returns its path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter  # noqa: E402

from flowforge.utils.io import atomic_path  # noqa: E402

__all__ = [
    "plot_samples",
    "plot_trajectories",
    "plot_quality_vs_nfe",
    "plot_loss",
    "plot_image_rows",
    "colour_masks",
    "smooth",
]

_DPI = 110


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _limits(*arrays: np.ndarray) -> tuple[float, float, float, float]:
    pts = np.concatenate([a[:, :2] for a in arrays if len(a)])
    lo, hi = np.quantile(pts, 0.002, axis=0), np.quantile(pts, 0.998, axis=0)
    pad = 0.08 * (hi - lo).max()
    return lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad


def plot_samples(
    path: str | Path,
    samples: np.ndarray,
    data: np.ndarray,
    title: str = "",
    labels: np.ndarray | None = None,
) -> Path:
    """Scatter generated samples beside the data (first two features), same axes.

    Args:
        path: the PNG to write.
        samples: (N, D) generated points, D >= 2 (D = 1 is drawn against zero).
        data: (M, D) data points.
        title: figure title.
        labels: optional (N,) class of each sample, used as colour.
    """
    samples, data = _two_d(samples), _two_d(data)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
    x0, x1, y0, y1 = _limits(samples, data)
    axes[0].scatter(data[:, 0], data[:, 1], s=2, alpha=0.5, color="tab:gray")
    axes[0].set_title(f"data ({len(data)})")
    if labels is None:
        axes[1].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, color="tab:blue")
    else:
        axes[1].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, c=labels, cmap="tab10")
    axes[1].set_title(f"samples ({len(samples)})")
    for ax in axes:
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("equal")
    fig.suptitle(title)
    return _save(fig, path)


def plot_trajectories(
    path: str | Path, trajectory: np.ndarray, data: np.ndarray | None = None, title: str = ""
) -> Path:
    """ODE paths from noise (t = 0, black) to samples (t = 1, blue), first two features.

    Args:
        path: the PNG to write.
        trajectory: (S, N, D) states at S times for N particles.
        data: optional (M, D) data drawn faintly underneath.
        title: figure title.
    """
    traj = np.stack([_two_d(s) for s in trajectory])  # (S, N, 2)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    if data is not None:
        d = _two_d(data)
        ax.scatter(d[:, 0], d[:, 1], s=1, alpha=0.15, color="tab:gray")
    paths = LineCollection(traj.transpose(1, 0, 2), colors="tab:olive", alpha=0.35, lw=0.6)
    ax.add_collection(paths)  # one artist for all N paths (N Line2D objects draw slowly)
    ax.scatter(traj[0, :, 0], traj[0, :, 1], s=3, color="black", label="noise (t = 0)")
    ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=3, color="tab:blue", label="samples (t = 1)")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def plot_quality_vs_nfe(
    path: str | Path,
    results: Sequence[dict],
    floors: dict[str, float],
    metrics: Sequence[str],
    title: str = "",
) -> Path:
    """Metric against NFE (log x), one line per solver, the finite-sample floor dashed.

    Args:
        path: the PNG to write.
        results: rows ``{"solver": str, "nfe": int, <metric>: float, ...}``.
        floors: ``{metric: value}``, the finite-sample floor of each metric.
        metrics: the metric names to draw, one panel each.
        title: figure title.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    solvers = list(dict.fromkeys(r["solver"] for r in results))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, solver in enumerate(solvers):
            rows = sorted((r for r in results if r["solver"] == solver), key=lambda r: r["nfe"])
            nfe = [r["nfe"] for r in rows]
            val = [r[metric] for r in rows]
            marker = "*" if len(rows) == 1 else "o"
            ax.plot(
                nfe, val, marker=marker, ms=5 if marker == "o" else 10, label=solver, color=f"C{i}"
            )
        if metric in floors:
            ax.axhline(floors[metric], ls="--", color="black", lw=1, label="floor")
        ax.set_xscale("log", base=2)
        _value_scale(ax, [r[metric] for r in results] + [floors.get(metric, 1.0)])
        ax.set_xlabel("NFE")
        ax.set_title(metric)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _value_scale(ax, values: list[float]) -> None:
    """Log y for positive values spanning a decade or more; symlog when some are <= 0.

    Unbiased estimators (MMD^2, energy distance) dip below zero near the floor, so their axis is
    linear within the smallest significant magnitude and logarithmic beyond it.
    """
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return
    if (v > 0).all():
        if v.max() / v.min() > 5:
            ax.set_yscale("log")
            _plain_ticks(ax)
        return
    linthresh = max(np.abs(v).max() * 1e-3, 1e-12)
    ax.set_yscale("symlog", linthresh=linthresh)


def _plain_ticks(ax) -> None:
    """Decimal tick labels (0.3, 1, 3) instead of 3 x 10^-1 on a log axis."""
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(NullFormatter())


def smooth(values: Sequence[float], frac: float = 0.02) -> np.ndarray:
    """Bias-corrected exponential moving average with window ``frac`` of the series.

    Example:
        >>> smooth([1.0, 1.0, 1.0]).tolist()
        [1.0, 1.0, 1.0]
    """
    v = np.asarray(values, dtype=float)
    beta = 1 - 1 / max(1.0, frac * len(v))
    out, acc = np.empty_like(v), 0.0
    for i, x in enumerate(v):
        acc = beta * acc + (1 - beta) * x
        out[i] = acc / (1 - beta ** (i + 1)) if beta > 0 else x
    return out


def plot_loss(path: str | Path, steps: Sequence[int], losses: Sequence[float], title: str = ""):
    """Training loss against step, log y, raw (faint) and smoothed.

    Args:
        path: the PNG to write.
        steps: (S,) step of each loss value.
        losses: (S,) loss values.
        title: figure title.
    """
    fig, ax = plt.subplots(figsize=(6, 3.8))
    steps, losses = np.asarray(steps), np.asarray(losses, dtype=float)
    ok = np.isfinite(losses) & (losses > 0)
    ax.plot(steps[ok], losses[ok], color="tab:blue", alpha=0.25, lw=0.8, label="loss")
    if ok.sum() > 2:
        ax.plot(steps[ok], smooth(losses[ok]), color="tab:blue", lw=1.6, label="smoothed")
    ax.set_yscale("log")
    _plain_ticks(ax)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def _two_d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float).reshape(len(x), -1)
    if x.shape[1] == 1:
        return np.concatenate([x, np.zeros_like(x)], axis=1)
    return x[:, :2]


# Background, then one colour per shape class (SHAPE_CLASSES order), in [-1, 1].
_MASK_PALETTE = np.array(
    [[-1.0, -1.0, -1.0], [0.9, -0.6, -0.6], [-0.6, 0.7, -0.6], [-0.5, -0.3, 1.0]]
)


def colour_masks(masks) -> np.ndarray:
    """(N, H, W) integer masks -> (N, 3, H, W) RGB images in [-1, 1] (class colours cycle).

    Example:
        >>> colour_masks(np.zeros((1, 2, 2), dtype=int)).shape
        (1, 3, 2, 2)
    """
    masks = np.asarray(masks, dtype=np.int64)
    rgb = _MASK_PALETTE[masks % len(_MASK_PALETTE)]  # (N, H, W, 3)
    return rgb.transpose(0, 3, 1, 2)


def plot_image_rows(
    path: str | Path, rows: Sequence, names: Sequence[str], title: str = ""
) -> Path:
    """A grid of images: one row per entry of ``rows``, named on the left.

    Args:
        path: the PNG to write.
        rows: sequences of (N, C, H, W) images in [-1, 1] (C = 1 grey, C = 3 RGB); rows may
            hold different N.
        names: one label per row ("" for none).
        title: figure title.
    """
    rows = [np.asarray(r, dtype=np.float64) for r in rows]
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(0.9 * cols + 1.2, 0.9 * len(rows) + 0.5), squeeze=False
    )
    for i, (row, name) in enumerate(zip(rows, names, strict=True)):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j >= len(row):
                continue
            img = (np.clip(row[j], -1, 1) + 1) / 2  # (C, H, W) in [0, 1]
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(img[:3].transpose(1, 2, 0), interpolation="nearest")
        axes[i, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    return _save(fig, path)
