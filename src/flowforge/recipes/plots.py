"""Pictures of a run: each function takes plain arrays and returns a matplotlib ``Figure``.

Figures are built on their own Agg canvas (``matplotlib.figure.Figure``), so nothing here
touches pyplot or switches the user's backend (a notebook keeps its own); ``save_figure``
writes one atomically as PNG. ``Run.draw`` returns the run's figures by file name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from flowforge.utils.io import atomic_path

__all__ = [
    "LOWER_IS_BETTER",
    "UNIT_INTERVAL",
    "colour_masks",
    "figure",
    "plot_image_rows",
    "plot_loss",
    "plot_quality_vs_nfe",
    "plot_ramachandran",
    "plot_samples",
    "plot_trajectories",
    "save_figure",
    "smooth",
]

_DPI = 110
_CORNER_COLUMNS = 5  # a corner plot shows the first five columns of wider data
# metrics whose smaller values are better (the others: larger is better)
LOWER_IS_BETTER = frozenset(
    {"w2", "sliced_w2", "mmd", "energy", "fd", "known_error", "known_mse", "fd_unconditional",
     "reconstruction_mse", "energy_w2", "log_z_error", "rama_kl", "rama_w2", "exact_l1",
     "empirical_l1", "marginal_l1", "igd"}
)  # fmt: skip
UNIT_INTERVAL = frozenset({"precision", "recall", "accuracy", "miou", "miou_generated"})


def figure(width: float, height: float, rows: int = 1, cols: int = 1, **kwargs):
    """``(fig, axes)``: a ``Figure`` on its own Agg canvas and a (rows, cols) array of axes."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False, **kwargs)
    return fig, axes


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG, atomically (a reader never sees half a file)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight")
    return path


def _limits(*arrays: np.ndarray) -> tuple[float, float, float, float]:
    pts = np.concatenate([a[:, :2] for a in arrays if len(a)])
    lo, hi = np.quantile(pts, 0.002, axis=0), np.quantile(pts, 0.998, axis=0)
    pad = 0.08 * max((hi - lo).max(), 1e-12)
    return lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad


def _class_legend(ax, labels: np.ndarray, cmap: str = "tab10") -> None:
    classes = np.unique(labels)
    if len(classes) > 20:
        return
    colours = [matplotlib.colormaps[cmap](k % 10) for k in classes]  # tab10 cycles
    handles = [Line2D([], [], ls="", marker="o", ms=4, color=c) for c in colours]
    ax.legend(handles, [f"class {k}" for k in classes], fontsize=7, loc="best", ncol=2)


def plot_samples(
    samples: np.ndarray,
    data: np.ndarray,
    title: str = "",
    labels: np.ndarray | None = None,
    columns: Sequence[str] | None = None,
) -> Figure:
    """Generated samples beside the data: a scatter of both for 2-D data, a histogram for 1-D,
    and a corner plot (every pair of the first five columns) for wider data.

    Args:
        samples: (N, D) generated points.
        data: (M, D) data points.
        title: figure title (say what was sampled: solver, NFE, guidance, labels).
        labels: optional (N,) class of each sample, shown by colour with a legend.
        columns: the D column names (a CSV header), else x0, x1, ...
    """
    samples, data = np.asarray(samples, float), np.asarray(data, float)
    samples, data = samples.reshape(len(samples), -1), data.reshape(len(data), -1)
    D = samples.shape[1]
    names = list(columns) if columns is not None else [f"x{i}" for i in range(D)]
    if D == 1:
        fig, axes = figure(6, 3.8)
        ax = axes[0, 0]
        bins = np.histogram_bin_edges(np.concatenate([samples[:, 0], data[:, 0]]), bins=60)
        ax.hist(data[:, 0], bins=bins, density=True, alpha=0.5, color="tab:gray", label="data")
        ax.hist(samples[:, 0], bins=bins, density=True, alpha=0.5, label="samples")
        ax.set_xlabel(names[0])
        ax.legend(fontsize=8)
    elif D == 2:
        fig, axes = figure(9, 4.5, 1, 2, sharex=True, sharey=True)
        x0, x1, y0, y1 = _limits(samples, data)
        axes[0, 0].scatter(data[:, 0], data[:, 1], s=2, alpha=0.5, color="tab:gray")
        axes[0, 0].set_title(f"data ({len(data)})")
        ax = axes[0, 1]
        if labels is None:
            ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, color="tab:blue")
        else:
            ax.scatter(
                samples[:, 0], samples[:, 1], s=2, alpha=0.5, c=labels % 10, cmap="tab10",
                vmin=0, vmax=9,
            )  # fmt: skip
            _class_legend(ax, labels)
        ax.set_title(f"samples ({len(samples)})")
        for a in axes[0]:
            a.set_xlim(x0, x1)
            a.set_ylim(y0, y1)
            a.set_aspect("equal")
            a.set_xlabel(names[0])
        axes[0, 0].set_ylabel(names[1])
    else:
        k = min(D, _CORNER_COLUMNS)
        fig, axes = figure(2.0 * k + 1, 2.0 * k + 0.5, k, k)
        for i in range(k):
            for j in range(k):
                ax = axes[i, j]
                if j > i:
                    ax.set_visible(False)
                    continue
                if i == j:
                    both = np.concatenate([samples[:, i], data[:, i]])
                    bins = np.histogram_bin_edges(both, bins=40)
                    ax.hist(data[:, i], bins=bins, density=True, alpha=0.5, color="tab:gray")
                    ax.hist(samples[:, i], bins=bins, density=True, alpha=0.5, color="tab:blue")
                else:
                    ax.scatter(data[:, j], data[:, i], s=1, alpha=0.3, color="tab:gray")
                    ax.scatter(samples[:, j], samples[:, i], s=1, alpha=0.3, color="tab:blue")
                if i == k - 1:
                    ax.set_xlabel(names[j], fontsize=8)
                if j == 0 and i > 0:
                    ax.set_ylabel(names[i], fontsize=8)
                ax.tick_params(labelsize=6)
        handles = [Line2D([], [], ls="", marker="s", color=c) for c in ("tab:gray", "tab:blue")]
        more = f" (first {k} of {D} columns)" if D > k else ""
        fig.legend(handles, [f"data ({len(data)})", f"samples ({len(samples)}){more}"],
                   loc="upper right", fontsize=8)  # fmt: skip
    fig.suptitle(title)
    return fig


def plot_trajectories(
    trajectory: np.ndarray,
    data: np.ndarray | None = None,
    title: str = "",
    columns: Sequence[str] | None = None,
) -> Figure:
    """ODE paths from noise (t = 0, black) to samples (t = 1, blue), first two columns.

    Args:
        trajectory: (S, N, D) states at S times for N particles.
        data: optional (M, D) data drawn faintly underneath.
        title: figure title.
        columns: the column names (the first two label the axes).
    """
    traj = np.stack([_two_d(s) for s in trajectory])  # (S, N, 2)
    fig, axes = figure(5.5, 5.5)
    ax = axes[0, 0]
    if data is not None:
        d = _two_d(data)
        ax.scatter(d[:, 0], d[:, 1], s=1, alpha=0.15, color="tab:gray", label="data")
    paths = LineCollection(traj.transpose(1, 0, 2), colors="tab:olive", alpha=0.35, lw=0.6)
    ax.add_collection(paths)  # one artist for all N paths (N Line2D objects draw slowly)
    ax.scatter(traj[0, :, 0], traj[0, :, 1], s=3, color="black", label="noise (t = 0)")
    ax.scatter(traj[-1, :, 0], traj[-1, :, 1], s=3, color="tab:blue", label="samples (t = 1)")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    names = list(columns) if columns is not None else ["x0", "x1"]
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1] if len(names) > 1 else "0")
    ax.set_title(title)
    return fig


def _metric_label(name: str) -> str:
    better = "lower" if name in LOWER_IS_BETTER else "higher"
    return f"{name} ({better} is better)"


def plot_quality_vs_nfe(
    results: Sequence[dict],
    floors: dict[str, float],
    metrics: Sequence[str],
    title: str = "",
) -> Figure:
    """Metric against NFE (log x), one line per solver, the finite-sample floor dashed.

    Every metric of the rows is drawn (``metrics`` first, then the rows' other columns such as
    inpainting's ``known_mse``); metrics in [0, 1] on a linear axis, the others on a log axis
    when they span a decade (symlog when some are <= 0, linear when all are equal).

    Args:
        results: rows ``{"solver": str, "nfe": int, <metric>: float, ...}``.
        floors: ``{metric: value}``, the finite-sample floor of each metric.
        metrics: the metric names asked for (drawn first).
        title: figure title.
    """
    names = [m for m in metrics if any(m in r for r in results)]
    for row in results:
        names += [k for k, v in row.items() if k not in ("solver", "nfe", *names)
                  and isinstance(v, (int, float))]  # fmt: skip
    names = names or list(metrics)
    cols = min(len(names), 4)
    rows = -(-len(names) // cols)
    fig, axes = figure(4.2 * cols, 3.8 * rows, rows, cols)
    solvers = list(dict.fromkeys(r["solver"] for r in results))
    for index, ax in enumerate(axes.flat):
        if index >= len(names):
            ax.set_visible(False)
            continue
        metric = names[index]
        for i, solver in enumerate(solvers):
            rows_ = sorted(
                (r for r in results if r["solver"] == solver and metric in r),
                key=lambda r: r["nfe"],
            )
            if not rows_:
                continue
            marker = "*" if len(rows_) == 1 else "o"
            ax.plot(
                [r["nfe"] for r in rows_],
                [r[metric] for r in rows_],
                marker=marker,
                ms=5 if marker == "o" else 10,
                label=solver,
                color=f"C{i}",
            )
        if floors.get(metric) is not None:
            ax.axhline(floors[metric], ls="--", color="black", lw=1, label="floor")
        ax.set_xscale("log", base=2)
        values = [r[metric] for r in results if metric in r]
        if floors.get(metric) is not None:
            values.append(floors[metric])
        _value_scale(ax, values, unit=metric in UNIT_INTERVAL)
        ax.set_xlabel("NFE")
        ax.set_ylabel(_metric_label(metric))
        ax.set_title(metric)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _value_scale(ax, values: list[float], unit: bool = False) -> None:
    """Linear for metrics in [0, 1] and for constant values; log y for positive values spanning
    more than a factor 5; symlog when some are <= 0.

    Unbiased estimators (MMD^2, energy distance) dip below zero near the floor, so their axis is
    linear within the smallest significant magnitude and logarithmic beyond it.
    """
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return
    ax.ticklabel_format(axis="y", useOffset=False)  # no "1e-7 + 1.145" offsets
    if unit:
        lo, hi = min(0.0, v.min()), max(1.0, v.max())
        ax.set_ylim(lo - 0.02, hi + 0.02)
        return
    if v.max() - v.min() <= 1e-6 * max(np.abs(v).max(), 1e-12):  # (nearly) all equal
        centre, half = v.mean(), max(abs(v.mean()) * 0.1, 1e-3)
        ax.set_ylim(centre - half, centre + half)
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


def plot_loss(steps: Sequence[int], losses: Sequence[float], title: str = "") -> Figure:
    """Training loss against step, log y, raw (faint) and smoothed.

    Args:
        steps: (S,) step of each loss value.
        losses: (S,) loss values.
        title: figure title.
    """
    fig, axes = figure(6, 3.8)
    ax = axes[0, 0]
    steps, losses = np.asarray(steps), np.asarray(losses, dtype=float)
    ok = np.isfinite(losses) & (losses > 0)
    ax.plot(steps[ok], losses[ok], color="tab:blue", alpha=0.25, lw=0.8, label="loss")
    if ok.sum() > 2:
        ax.plot(steps[ok], smooth(losses[ok]), color="tab:blue", lw=1.6, label="smoothed")
    ax.set_yscale("log")
    _plain_ticks(ax)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (lower is better)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def plot_ramachandran(angles: dict[str, np.ndarray], title: str = "", bins: int = 60) -> Figure:
    """Ramachandran plots: one panel per named (n, 2) set of (phi, psi) in radians, log density
    (per square degree) on a shared colour scale, axes in degrees; non-finite rows dropped.

    Args:
        angles: panel title -> (n, 2) angles.
        title: figure title.
        bins: histogram bins per angle.
    """
    fig, axes = figure(3.6 * len(angles), 3.6, 1, len(angles))
    edges = np.linspace(-180, 180, bins + 1)
    angles = {k: a[np.isfinite(a).all(1)] for k, a in angles.items()}
    hists = {k: np.histogram2d(*np.degrees(a).T, bins=[edges, edges])[0] / max(len(a), 1)
             / (edges[1] - edges[0]) ** 2 for k, a in angles.items()}  # fmt: skip
    top = max(max(h.max() for h in hists.values()), 1e-12)
    norm = matplotlib.colors.LogNorm(vmin=top * 1e-4, vmax=top)
    for ax, (name, h) in zip(axes[0], hists.items(), strict=True):
        mesh = ax.pcolormesh(edges, edges, np.where(h > 0, h, np.nan).T, norm=norm,
                             cmap="viridis")  # fmt: skip
        ax.set_xlabel("phi (degrees)")
        ax.set_ylabel("psi (degrees)")
        ax.set_title(f"{name} (n = {len(angles[name])})", fontsize=8)
        ax.set_aspect("equal")
        ax.set_xticks([-180, -90, 0, 90, 180])
        ax.set_yticks([-180, -90, 0, 90, 180])
    fig.colorbar(mesh, ax=list(axes[0]), label="density (log scale)", shrink=0.8)
    fig.suptitle(title, fontsize=9)
    return fig


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


def plot_image_rows(rows: Sequence, names: Sequence[str], title: str = "") -> Figure:
    """A grid of images: one row per entry of ``rows``, named on the left.

    Args:
        rows: sequences of (N, C, H, W) images in [-1, 1] (C = 1 grey, C = 3 RGB); rows may
            hold different N.
        names: one label per row ("" for none), e.g. "class 3".
        title: figure title.
    """
    rows = [np.asarray(r, dtype=np.float64) for r in rows]
    cols = max(len(r) for r in rows)
    fig, axes = figure(0.9 * cols + 1.2, 0.9 * len(rows) + 0.5, len(rows), cols)
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
    return fig
