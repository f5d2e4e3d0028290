"""examples/quickstart.py (the README's Python snippet) runs and learns."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import torch

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def test_quickstart_runs_and_learns(monkeypatch, capsys):
    """300 Adam steps take the sliced W2 from 1.92 (untrained, measured) to 0.44 (measured).

    Both figures were measured with ``QUICKSTART_STEPS=0`` and ``300`` (2000 samples, floor about
    0.15-0.18); the threshold 1.0 lies between them.
    """
    monkeypatch.setenv("QUICKSTART_STEPS", "300")
    torch.set_num_threads(1)  # a small MLP: one thread is fastest on a shared CPU
    torch.set_default_dtype(torch.float32)  # as in a user's session (conftest restores it)
    runpy.run_path(str(QUICKSTART), run_name="__main__")
    out = capsys.readouterr().out
    match = re.search(r"sliced W2 to fresh data: ([\d.]+) \(finite-sample floor ([\d.]+)\)", out)
    assert match, out
    sw2, floor = float(match[1]), float(match[2])
    assert floor < sw2 < 1.0


def test_readme_snippet_runs():
    """The README's Python block runs as printed (with 20 steps instead of 2000)."""
    readme = (QUICKSTART.parents[1] / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    assert "range(2000)" in code
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    namespace: dict = {}
    exec(compile(code.replace("range(2000)", "range(20)"), "README.md", "exec"), namespace)
    assert namespace["x"].shape == (2000, 2) and torch.isfinite(namespace["x"]).all()


def test_readme_run_snippet_runs(tmp_path, monkeypatch):
    """The README's block on trained runs runs as printed (5 steps instead of 500, fewer
    samples and evaluation rows)."""
    readme = (QUICKSTART.parents[1] / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, re.S)[1]
    assert "flowforge.load(" in code and '"train.steps=500"' in code
    quick = ["train.steps=5", "train.warmup_steps=0", "train.progress=false", "threads=1"]
    quick += ["eval.n_samples=100", "eval.floor_repeats=1", "eval.dopri5=false", "sample.n=100"]
    code = code.replace('"train.steps=500"', ", ".join(f'"{o}"' for o in quick))
    monkeypatch.chdir(tmp_path)
    torch.set_default_dtype(torch.float32)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["x"].shape == (1000, 2) and torch.isfinite(namespace["x"]).all()
    rows = {(r["solver"], r["nfe"]) for r in namespace["metrics"]["results"]}
    assert {("euler", 4), ("euler", 8), ("heun", 4), ("heun", 8)} <= rows
