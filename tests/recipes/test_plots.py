"""Pictures: figures of their own (the user's matplotlib backend untouched), what they show."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from matplotlib.figure import Figure

import flowforge
from flowforge.recipes import plots


def test_importing_and_drawing_leaves_the_backend_and_pyplot_alone():
    code = (
        "import matplotlib, sys\n"
        "matplotlib.use('svg')\n"
        "from flowforge.recipes import plots\n"
        "import numpy as np\n"
        "plots.plot_samples(np.zeros((5, 2)), np.ones((5, 2)))\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["svg", "False"]


def test_wide_data_get_a_corner_plot_with_the_column_names():
    g = np.random.default_rng(0)
    fig = plots.plot_samples(g.normal(size=(50, 7)), g.normal(size=(50, 7)), columns="abcdefg")
    assert isinstance(fig, Figure)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 15  # the lower triangle of 5 x 5 columns
    assert {ax.get_xlabel() for ax in visible} - {""} == set("abcde")
    assert "first 5 of 7 columns" in fig.legends[0].get_texts()[1].get_text()


def test_quality_plot_draws_every_metric_with_its_direction():
    rows = [{"solver": "euler", "nfe": n, "fd": 10.0 / n, "precision": 0.5, "known_mse": 0.1}
            for n in (1, 2, 4)]  # fmt: skip
    fig = plots.plot_quality_vs_nfe(rows, {"fd": 1.0, "precision": 0.9}, ["fd", "precision"])
    labels = [ax.get_ylabel() for ax in fig.axes if ax.get_visible()]
    assert labels == [
        "fd (lower is better)", "precision (higher is better)", "known_mse (lower is better)"
    ]  # fmt: skip
    precision = fig.axes[1]
    assert precision.get_yscale() == "linear" and precision.get_ylim()[1] >= 1.0


def test_run_draw_returns_the_figures_and_titles_say_what_was_sampled(vector_run):
    run = flowforge.load(vector_run)
    figures = run.draw(write=False)
    assert {"samples.png", "trajectories.png", "loss.png"} <= set(figures)
    title = figures["samples.png"]._suptitle.get_text()
    assert "heun NFE" in title and "labels drawn with the class frequencies" in title
    legend = [t.get_text() for t in figures["samples.png"].axes[1].get_legend().get_texts()]
    assert legend[:2] == ["class 0", "class 1"]
