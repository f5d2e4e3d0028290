"""GFlowNets through the command line and ``flowforge.load``: a policy trained on its own
rollouts (TB, DB, SubTB, FL-DB, FL-SubTB) on the hypergrid, sets and bit strings, evaluated
exactly where the state DAG is enumerable, sampled as integer states.

Runs are tiny, so most tests check plumbing (rows and floors, trajectories/s in the progress
lines, pictures, resume, samples that are valid objects, errors); one small sets run checks
that the recipe learns. The losses' accuracy is checked in tests/gfn and benchmarks/gfn.py.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import flowforge
from flowforge.cli.main import main

TINY = [
    "--threads=1",
    "--train.steps=20",
    "--train.batch_size=16",
    "--train.progress=false",
    "--train.ckpt_every=10",
    "--train.eval_every=10",
    "--method.hidden=16",
    "--eval.n_samples=400",
    "--eval.floor_repeats=1",
    "--sample.n=50",
]
GRID = ["--method.ndim=2", "--method.height=4"]


@pytest.fixture(autouse=True)
def _float32():
    torch.set_default_dtype(torch.float32)  # as a user runs it (conftest restores float64)


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _train(run: Path, preset: str, *extra: str) -> None:
    with torch.random.fork_rng():
        assert main(["train", preset, f"--out-dir={run}", *TINY, *extra]) == 0


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("gfn") / "grid"
    torch.set_default_dtype(torch.float32)
    _train(run, "hypergrid_tb", *GRID)
    return run


def test_hypergrid_reports_exact_and_sample_metrics_beside_floors(grid_run):
    m = _metrics(grid_run)
    (row,) = m["results"]
    assert row["solver"] == "policy" and 1 <= row["nfe"] <= 2 * 3 + 1
    for key in ("exact_l1", "empirical_l1", "log_z", "log_z_error", "top_k_reward", "diversity"):
        assert math.isfinite(row[key]), key
    assert 0 <= row["exact_l1"] <= 2 and 0 <= row["modes_found"] <= m["modes"] == 4
    assert row["log_z_error"] == pytest.approx(abs(row["log_z"] - m["true_log_z"]))
    floors = m["floors"]
    assert floors["exact_l1"] == 0 and floors["modes_found"] == 4  # 400 exact draws find all
    assert 0 < floors["empirical_l1"] < 0.5
    checks = [json.loads(line)["eval"] for line in (grid_run / "metrics.jsonl").open()
              if "eval" in line]  # fmt: skip
    assert [c["trajectories"] for c in checks] == [160, 320]
    assert checks[1]["trajectories_per_s"] > 0 and math.isfinite(checks[1]["exact_l1"])
    for name in ("distribution.png", "l1_curve.png", "loss.png", "quality_vs_nfe.png"):
        assert (grid_run / name).is_file(), name


def test_samples_are_valid_terminal_states(grid_run, tmp_path):
    out = tmp_path / "x.npy"
    assert main(["sample", str(grid_run), "--n", "40", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (40, 2) and x.dtype == np.int64 and x.min() >= 0 and x.max() <= 3
    run = flowforge.load(grid_run)
    a, b = run.sample(30, seed=1), run.sample(30, seed=1)
    assert a.dtype == torch.long and torch.equal(a, b)  # seeded
    assert main(["sample", str(grid_run), "--n", "40", "--out", str(tmp_path / "x.png")]) == 0
    assert run.evaluate(n_samples=200)["results"][0]["exact_l1"] == pytest.approx(
        _metrics(grid_run)["results"][0]["exact_l1"]
    )  # the same policy, the same dynamic program


def test_a_resumed_run_matches_an_uninterrupted_one(tmp_path):
    """With a replay buffer and decaying epsilon, whose state (calls, buffer) is saved."""
    extra = [*GRID, "--method.replay_size=50", "--method.replay_fraction=0.5",
             "--method.epsilon=0.5", "--method.epsilon_decay_steps=20", "--no-eval"]  # fmt: skip
    _train(tmp_path / "full", "hypergrid_tb", *extra)
    _train(tmp_path / "half", "hypergrid_tb", *extra, "--train.steps=10")
    with torch.random.fork_rng():
        assert main(["train", str(tmp_path / "half"), "--train.steps=20", "--no-eval"]) == 0
    full = load_file(tmp_path / "full" / "model.safetensors")
    half = load_file(tmp_path / "half" / "model.safetensors")
    assert all(torch.equal(full[k], half[k]) for k in full)
    state = torch.load(tmp_path / "half" / "trainer_state.pt", weights_only=True)
    assert state["objective"]["calls"] == 20 and len(state["objective"]["replay"]["n_steps"])


@pytest.mark.parametrize(
    ("preset", "extra", "files"),
    [
        ("hypergrid_fldb", [*GRID, "--method.loss=flsubtb", "--method.prefix_fraction=0.5"],
         ["distribution.png"]),
        ("sets_fl", ["--method.n_items=6", "--method.set_size=3"], ["marginals.png"]),
        ("sets_fl", ["--data.name=bits", "--method.length=4", "--method.loss=db",
                     "--method.backward=learned"], ["marginals.png"]),
        ("hypergrid_tb", [*GRID, "--method.loss=subtb", "--method.replay_size=20"],
         ["distribution.png"]),
    ],
    ids=["grid-flsubtb-prefixes", "sets-fldb", "bits-db-learned-pb", "grid-subtb-replay"],
)  # fmt: skip
def test_losses_and_environments_train_through_the_recipe(tmp_path, preset, extra, files):
    run = tmp_path / "run"
    _train(run, preset, "--train.steps=4", "--train.eval_every=0", *extra)
    (row,) = _metrics(run)["results"]
    assert all(math.isfinite(v) for k, v in row.items() if k != "solver")
    assert 0 <= row["exact_l1"] <= 2 and math.isfinite(row["log_z_error"])
    if "marginals.png" in files:
        assert 0 <= row["marginal_l1"] and _metrics(run)["floors"]["marginal_l1"] == 0
    for name in files:
        assert (run / name).is_file(), name


def test_sets_with_set_sizes_written_by_sample(tmp_path):
    run = tmp_path / "sets"
    _train(run, "sets_fl", "--train.steps=2", "--method.n_items=7", "--method.set_size=3",
           "--no-eval")  # fmt: skip
    x = flowforge.load(run).sample(25)
    assert x.shape == (25, 7) and (x.sum(1) == 3).all() and ((x == 0) | (x == 1)).all()
    info = json.loads((run / "data.json").read_text())
    assert len(info["settings"]["energies"]) == 7  # the drawn energies travel with the run


def test_fl_db_learns_the_sets_target(tmp_path):
    """100 updates of 32 full trajectories (3200) on 5 of 10 items: the exact L1 falls from
    0.97 after one step to below 0.25 (measured at train.seed 0-2: 0.062, 0.073, 0.076)."""
    run = tmp_path / "learn"
    argv = ["train", "sets_fl", f"--out-dir={run}", "--threads=1", "--train.steps=100",
            "--train.batch_size=32", "--train.progress=false", "--method.n_items=10",
            "--method.set_size=5", "--method.hidden=64", "--eval.n_samples=500",
            "--eval.floor_repeats=1"]  # fmt: skip
    with torch.random.fork_rng():
        assert main(argv) == 0
    assert _metrics(run)["results"][0]["exact_l1"] < 0.25


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--method.loss=xb"], r"method.loss='xb'.*'tb'"),
        (["--method.height=1"], r"method.height=1 must be >= 2"),
        (["--method.R0=0"], r"method.R0=0.0 must be > 0: it is the reward floor"),
        (["--method.prefix_fraction=0.5"], r"method.prefix_fraction=0.5 .* method.loss='tb'"),
        (["--method.replay_fraction=1"], r"method.replay_fraction=1.0 must be in \[0, 1\)"),
        (["--data.conditional=true"], "is a GFlowNet environment; drop data.path"),
        (["--sample.solver=heun"], "heun"),
        (["--data.name=moons"], "are vectors; use a GFlowNet environment"),
    ],
)
def test_bad_settings_are_named(tmp_path, capsys, args, match):
    argv = ["train", "hypergrid_tb", f"--out-dir={tmp_path / 'r'}", *TINY, *args]
    assert main(argv) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_other_recipes_refuse_an_environment(tmp_path, capsys):
    argv = ["train", "toy2d_fm", f"--out-dir={tmp_path / 'r'}", "--data.name=hypergrid"]
    assert main(argv) == 2
    assert "are environments; use vector data" in capsys.readouterr().err


def test_op_on_branin_currin_reports_the_pareto_metrics(tmp_path):
    """OP-GFN (Pareto order) on the 4 x 4 grid: hypervolume, IGD and the exact mass on the front
    beside the front's own floors; no log Z (not identified); the objectives travel with the
    run, so a loaded run evaluates the same way."""
    run = tmp_path / "op"
    _train(run, "hypergrid_op", *GRID, "--train.eval_every=0", "--method.pareto_k=16")
    m = _metrics(run)
    (row,) = m["results"]
    assert all(math.isfinite(v) for k, v in row.items() if k != "solver")
    assert "log_z" not in row and "log_z_error" not in row
    floors = m["floors"]
    assert floors["igd"] == 0 and floors["pareto_mass"] == 1 and m["front"] >= 1
    assert 0 < row["hypervolume"] <= floors["hypervolume"] + 1e-9 and row["igd"] >= 0
    assert 0 < row["pareto_mass"] < 1
    assert json.loads((run / "data.json").read_text())["settings"]["objectives"] == "branin_currin"
    again = flowforge.load(run).evaluate(n_samples=400)["results"][0]
    assert again["pareto_mass"] == pytest.approx(row["pareto_mass"])


def test_op_learns_from_the_order_of_the_reward(tmp_path):
    """OP-GFN (total order of R) through the recipe, and TB on the scalarised Branin-Currin."""
    _train(tmp_path / "op", "hypergrid_tb", *GRID, "--train.steps=4", "--train.eval_every=0",
           "--method.loss=op")  # fmt: skip
    (row,) = _metrics(tmp_path / "op")["results"]
    assert "log_z" not in row and 0 <= row["exact_l1"] <= 2 and "hypervolume" not in row
    _train(tmp_path / "tb", "hypergrid_op", *GRID, "--train.steps=4", "--train.eval_every=0",
           "--method.loss=tb")  # fmt: skip
    (row,) = _metrics(tmp_path / "tb")["results"]
    assert all(math.isfinite(row[k]) for k in ("log_z_error", "hypervolume", "igd", "pareto_mass"))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--method.ndim=3"], r"method.objectives='branin_currin' scores 2-D hypergrid states"),
        (["--data.name=sets"], r"data.name='sets' and method.ndim=2; use data.name=hypergrid"),
        (["--method.prefix_fraction=0.5"], r"method.prefix_fraction=0.5 .* method.loss='op'"),
        (["--method.objectives=pareto"], r"method.objectives='pareto'.*'branin_currin'"),
        (["--method.pareto_k=0"], r"method.pareto_k=0 must be >= 1"),
    ],
)
def test_bad_op_settings_are_named(tmp_path, capsys, args, match):
    argv = ["train", "hypergrid_op", f"--out-dir={tmp_path / 'r'}", *TINY, *args]
    assert main(argv) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


MOLECULES = ["--method.max_length=24", "--method.training_smiles=3000", "--method.top_k=10",
             "--eval.n_samples=200"]  # fmt: skip


def test_molecules_train_evaluate_and_sample_smiles(tmp_path, capsys):
    """The molecules preset through the command line: validity, uniqueness, novelty, top-k score
    and diversity beside the training molecules' figures, both pictures, SMILES written by
    ``flowforge sample --out x.smi`` that RDKit reads, and a loaded run that evaluates alike."""
    pytest.importorskip("rdkit")
    from flowforge.data.smiles import canonical_smiles

    run = tmp_path / "mol"
    _train(run, "molecules_tb", *MOLECULES)
    m = _metrics(run)
    (row,) = m["results"]
    for key in ("validity", "uniqueness", "novelty", "top_k_diversity"):
        assert 0 <= row[key] <= 1
    assert row["validity"] > 0 and 0 < row["top_k_score"] <= 1 and math.isfinite(row["log_z"])
    assert m["training"]["validity"] == 1 and m["training"]["molecules"] > 10
    assert (run / "molecules.png").is_file() and (run / "scores.png").is_file()
    assert "training" in capsys.readouterr().out
    out = tmp_path / "x.smi"
    assert main(["sample", str(run), "--n", "40", "--out", str(out)]) == 0
    smiles = out.read_text().splitlines()
    assert len(smiles) == 40 and all(1 <= len(s) for s in smiles)
    assert sum(c is not None for c in canonical_smiles(smiles)) >= 1
    again = flowforge.load(run).evaluate(n_samples=200)["results"][0]
    assert again["validity"] == pytest.approx(row["validity"])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--method.log_floor=-inf"], r"method.log_floor='-inf' must be a finite number"),
        (["--method.offline_fraction=1"], r"method.offline_fraction=1.0 must be in \[0, 1\)"),
        (["--method.max_length=0"], r"method.max_length=0 must be >= 1"),
        (["--method.score=sa"], r"method.score='sa'.*'qed'"),
    ],
)
def test_bad_molecule_settings_are_named(tmp_path, capsys, args, match):
    argv = ["train", "molecules_tb", f"--out-dir={tmp_path / 'r'}", *TINY, *args]
    assert main(argv) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_offline_molecules_are_refused_elsewhere(tmp_path, capsys):
    argv = ["train", "hypergrid_tb", f"--out-dir={tmp_path / 'r'}", *TINY,
            "--method.offline_fraction=0.25"]  # fmt: skip
    assert main(argv) == 2
    assert "only data.name=molecules has" in capsys.readouterr().err


def test_smi_output_needs_a_molecule_run(grid_run, tmp_path, capsys):
    assert main(["sample", str(grid_run), "--n", "5", "--out", str(tmp_path / "x.smi")]) == 2
    assert "hypergrid objects have no text form; write a .npy" in capsys.readouterr().err
    assert not (tmp_path / "x.smi").exists()


def test_molecules_without_rdkit_say_which_extra_before_writing(tmp_path, capsys, monkeypatch):
    import flowforge.data.smiles as smiles

    def missing():
        raise ImportError(
            "molecules need RDKit: pip install 'flowforge[chem]' (or pip install rdkit)"
        )

    monkeypatch.setattr(smiles, "_chem", missing)
    argv = ["train", "molecules_tb", f"--out-dir={tmp_path / 'r'}", *TINY]
    assert main(argv) == 2
    assert "data.name='molecules': molecules need RDKit: pip install 'flowforge[chem]'" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "r").exists()
