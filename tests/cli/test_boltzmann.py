"""Boltzmann generators through the command line and ``flowforge.load``: a flow trained on a
target by maximum likelihood, reverse KL or self-improvement, sampled by its inverse, SNIS or
SMC, evaluated per sampler.

Runs are tiny, so these tests check plumbing and exact properties (SNIS resampling returns
the flow's own samples, a resumed self-improvement keeps its teacher, errors); the samplers'
accuracy is checked in tests/nf/boltzmann and benchmarks/boltzmann.py.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import flowforge
from flowforge.cli.main import main

TINY = [
    "--threads=1",
    "--train.steps=30",
    "--train.batch_size=64",
    "--train.warmup_steps=0",
    "--train.progress=false",
    "--train.ckpt_every=30",
    "--data.n_train=512",
    "--eval.n_samples=300",
    "--sample.n=50",
    "--method.width=16",
    "--method.head_dim=8",
    "--method.layers_per_block=[1,1]",
    "--method.smc_steps=3",
]


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def gmm_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("boltzmann") / "gmm"
    with torch.random.fork_rng():
        assert main(["train", "gmm40_boltzmann", f"--out-dir={run}", *TINY]) == 0
    return run


def test_gmm40_reports_every_sampler(gmm_run):
    rows = {r["solver"]: r for r in _metrics(gmm_run)["results"]}
    assert list(rows) == ["inverse", "snis", "smc"]
    assert rows["snis"]["nfe"] == 1 and rows["smc"]["nfe"] == 1 + 3  # energy evaluations
    assert 0 < rows["snis"]["ess"] <= 1 and math.isfinite(rows["snis"]["log_z_error"])
    assert rows["snis"]["log_z_error"] == pytest.approx(abs(rows["snis"]["log_z"]))  # log Z = 0
    assert all(math.isfinite(r["energy_w2"]) for r in rows.values())
    assert _metrics(gmm_run)["floors"]["ess"] == 1.0
    assert (gmm_run / "energies.png").is_file() and (gmm_run / "samples.png").is_file()


def test_samples_from_the_command_line_and_python(gmm_run, tmp_path):
    out = tmp_path / "x.npy"
    assert main(["sample", str(gmm_run), "--n", "40", "--solver", "snis", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (40, 2) and np.isfinite(x).all()
    run = flowforge.load(gmm_run)
    raw = run.sample(40, solver="inverse", seed=3)
    resampled = run.sample(40, solver="snis", seed=3)
    # SNIS resampling returns the flow's own samples (the same noise), reweighted
    assert all((raw == row).all(1).any() for row in resampled)
    assert run.sample(10, solver="smc").shape == (10, 2)
    assert main(["sample", str(gmm_run), "--n", "40", "--out", str(tmp_path / "x.png")]) == 0


@pytest.mark.parametrize("extra", [["--method.train_by=reverse_kl"], ["--method.flow=nsf"]])
def test_reverse_kl_and_zuko_flows_train_through_the_recipe(tmp_path, extra):
    run = tmp_path / "run"
    argv = ["train", "gmm40_boltzmann", f"--out-dir={run}", *TINY, "--train.steps=10", *extra]
    assert main([*argv, "--method.transforms=2", "--method.hidden=[16]"]) == 0
    assert {r["solver"] for r in _metrics(run)["results"]} == {"inverse", "snis", "smc"}


def test_self_improvement_starts_from_its_init_and_keeps_the_teacher(gmm_run, tmp_path):
    run = tmp_path / "si"
    argv = ["train", "gmm40_boltzmann", f"--out-dir={run}", *TINY, "--train.steps=10",
            "--train.ckpt_every=5", "--method.train_by=self_improve", f"--method.init={gmm_run}",
            "--method.buffer=500", "--method.refresh_every=4", "--no-eval"]  # fmt: skip
    assert main(argv) == 0
    assert (run / "teacher.safetensors").is_file()
    state = torch.load(run / "trainer_state.pt", weights_only=True)
    assert state["objective"]["calls"] == 10 and len(state["objective"]["history"]) == 3
    assert main(["train", str(run), "--train.steps=14", "--no-eval"]) == 0  # resumes
    state = torch.load(run / "trainer_state.pt", weights_only=True)
    assert state["objective"]["calls"] == 14 and len(state["objective"]["history"]) == 4


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--method.train_by=self_improve"], "set method.init=RUN_DIR"),
        (["--method.patch_size=3"], "method.patch_size=3 does not divide the target's 2"),
        (["--data.conditional=true"], "is a Boltzmann target; drop data.path"),
        (["--sample.solver=heun"], "heun"),
        (["--method.quantile=1.5"], r"method.quantile=1.5 must be in \[0, 1\)"),
    ],
)
def test_bad_settings_are_named(tmp_path, capsys, args, match):
    argv = ["train", "gmm40_boltzmann", f"--out-dir={tmp_path / 'r'}", *TINY, *args]
    assert main(argv) == 2
    assert re.search(match, capsys.readouterr().err)


def test_other_recipes_refuse_a_target(tmp_path, capsys):
    argv = ["train", "toy2d_tarflow", f"--out-dir={tmp_path / 'r'}", "--data.name=gmm40"]
    assert main(argv) == 2
    assert "are energies; use vector data" in capsys.readouterr().err


def test_a_mismatched_init_run_is_refused(gmm_run, tmp_path, capsys):
    argv = ["train", "gmm40_boltzmann", f"--out-dir={tmp_path / 'r'}", *TINY,
            "--method.train_by=self_improve", f"--method.init={gmm_run}", "--method.width=32",
            "--method.head_dim=16"]  # fmt: skip
    assert main(argv) == 2
    assert "differs in ['method.width', 'method.head_dim']" in capsys.readouterr().err


def test_alanine_dipeptide_trains_and_reports_its_ramachandran_metrics(tmp_path, monkeypatch):
    """The molecule end to end at toy size: MD frames (cached under FLOWFORGE_CACHE), a TARFlow
    on atom tokens in internal coordinates, SNIS rows with the Ramachandran KL / W2 against a
    separate MD reference, the torsion cuts saved so a loaded run rebuilds the same target, and
    the Ramachandran plot."""
    pytest.importorskip("openmm")
    pytest.importorskip("openmmtools")
    monkeypatch.setenv("FLOWFORGE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "aldp"
    args = [a for a in TINY if not a.startswith(("--data.n_train", "--eval.n_samples"))]
    with torch.random.fork_rng():
        extra = ["--data.n_train=300", "--eval.n_samples=150", "--train.steps=10"]
        code = main(["train", "aldp_boltzmann", f"--out-dir={run}", *args, *extra])
    assert code == 0
    m = _metrics(run)
    rows = {r["solver"]: r for r in m["results"]}
    assert list(rows) == ["inverse", "snis"]
    for key in ("rama_kl", "rama_w2"):
        assert all(math.isfinite(r[key]) and r[key] >= 0 for r in rows.values())
        assert 0 <= m["floors"][key] < math.inf
    assert 0 < rows["snis"]["ess"] <= 1
    info = json.loads((run / "data.json").read_text())
    assert len(info["settings"]["offsets"]) == 19 and info["dim"] == 60
    assert (run / "ramachandran.png").is_file()
    loaded = flowforge.load(run)
    assert loaded.data.energy.coordinates.offsets.tolist() == info["settings"]["offsets"]


def test_every_target_states_its_dimension():
    """Validation reads a target's dimension without building it (a molecule's costs MD)."""
    from flowforge.recipes.energies import TARGETS, target

    for name, t in TARGETS.items():
        if name != "aldp":
            assert target(name).dim == t.dim, name
