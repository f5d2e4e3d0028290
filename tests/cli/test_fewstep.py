"""Few-step runs through the command line: each method trains, evaluates and samples.

Runs are tiny (30 steps), so these tests check plumbing and exact properties (files, NFE
accounting, teacher copies, errors); the methods' quality is checked by their own tests and
benchmarks (benchmarks/README.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flowforge.cli.main import main

TINY = [
    "--threads=1",
    "--model.hidden=32",
    "--train.steps=30",
    "--train.batch_size=64",
    "--train.warmup_steps=0",
    "--train.progress=false",
    "--train.ckpt_every=30",
    "--eval.n_samples=100",
    "--eval.floor_repeats=1",
    "--sample.n=50",
]
# each method's own keys: reflow's pairs, and the teacher of the distilling methods
PAIRS = ["--method.pairs=256", "--method.teacher_nfe=8"]
TEACHER_METHODS = ("reflow", "freeflow", "flowturbo")
ODE_AND_FEWSTEP = ["--sample.solver=fewstep", "--eval.solvers=[euler,fewstep]", "--eval.nfes=[4]"]
FEWSTEP_ONLY = [
    "--sample.solver=fewstep",
    "--eval.solvers=[fewstep]",
    "--eval.nfes=[1,2]",
    "--eval.dopri5=false",
]


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("fewstep") / "teacher"
    with torch.random.fork_rng():
        threads = torch.get_num_threads()
        argv = ["train", "toy2d_fm", f"--out-dir={run}", *TINY, "--eval.dopri5=false"]
        assert main(argv) == 0
        torch.set_num_threads(threads)
    return run


def _train(tmp_path: Path, objective: str, teacher: Path, *extra: str) -> Path:
    run = tmp_path / objective
    own = [f"--method.teacher={teacher}"] * (objective in TEACHER_METHODS)
    own += PAIRS * (objective == "reflow")
    argv = [
        "train",
        "toy2d_fm",
        f"--name={objective}",
        f"--out-dir={run}",
        f"--method.name={objective}",
        *own,
        *TINY,
        *extra,
    ]
    assert main(argv) == 0
    return run


@pytest.mark.parametrize(
    "objective, extra",
    [
        ("reflow", ODE_AND_FEWSTEP),
        ("blockwise", ODE_AND_FEWSTEP),
        ("meanflow", FEWSTEP_ONLY),
        ("freeflow", FEWSTEP_ONLY),
        ("twinflow", FEWSTEP_ONLY),
    ],
)
def test_each_method_trains_evaluates_and_samples(tmp_path, teacher, objective, extra):
    run = _train(tmp_path, objective, teacher, *extra)
    rows = {(r["solver"], r["nfe"]) for r in _metrics(run)["results"]}
    solvers = extra[1].split("=")[1].strip("[]").split(",")
    nfes = [int(n) for n in extra[2].split("=")[1].strip("[]").split(",")]
    assert {(s, n) for s in solvers for n in nfes} <= rows
    assert (run / "samples.png").is_file()
    out = tmp_path / "x.npy"
    assert main(["sample", str(run), "--n", "8", "--nfe", "4", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (8, 2) and np.isfinite(x).all()


def test_reflow_starts_from_the_teacher_and_keeps_its_pairs(tmp_path, teacher):
    run = _train(
        tmp_path, "reflow", teacher, *ODE_AND_FEWSTEP, "--train.steps=1", "--train.lr=1e-12"
    )
    # One step at a negligible learning rate: the student is still the teacher, so Euler
    # samples of the two runs agree.
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    common = ["--n", "16", "--solver", "euler", "--nfe", "4"]
    assert main(["sample", str(run), *common, "--out", str(a)]) == 0
    assert main(["sample", str(teacher), *common, "--out", str(b)]) == 0
    np.testing.assert_allclose(np.load(a), np.load(b), atol=1e-5)
    pairs = (run / "reflow_pairs.safetensors").read_bytes()
    with pytest.warns(UserWarning, match="train.steps changed"):
        _train(
            tmp_path, "reflow", teacher, *ODE_AND_FEWSTEP, "--train.steps=2", "--train.lr=1e-12"
        )
    assert (run / "reflow_pairs.safetensors").read_bytes() == pairs  # reused on resume


def test_flowturbo_reports_its_schedule_cost_and_outlives_its_teacher(tmp_path, teacher):
    copy = tmp_path / "teacher_copy"
    shutil.copytree(teacher, copy)
    run = _train(tmp_path, "flowturbo", copy, *FEWSTEP_ONLY, "--method.schedule=H1P2R1")
    rows = _metrics(run)["results"]
    assert [(r["solver"], r["nfe"]) for r in rows] == [("fewstep", 4)]  # 2a + b teacher calls
    shutil.rmtree(copy)  # the run holds a copy of its teacher
    assert main(["eval", str(run)]) == 0
    assert _metrics(run)["results"] == rows


def test_blockwise_nfe_must_fill_every_segment(tmp_path, teacher, capsys):
    run = _train(tmp_path, "blockwise", teacher, *ODE_AND_FEWSTEP)
    assert main(["sample", str(run), "--nfe", "6", "--out", str(tmp_path / "x.npy")]) == 2
    assert "nfe=6 is not a multiple of method.segments=4" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, words",
    [
        (["--method.name=reflow"], "set method.teacher=RUN_DIR"),
        (["--method.name=meanflow"], "set sample.solver=fewstep"),
        (
            ["--method.name=meanflow", "--sample.solver=fewstep"],
            "set eval.solvers=[fewstep]",
        ),
        (["--sample.solver=fewstep"], "a fm run uses ODE solvers"),
        (
            ["--method.name=blockwise", "--sample.solver=fewstep", "--sample.guidance=2"]
            + ["--data.conditional=true"],
            "the few-step samplers apply no guidance",
        ),
        (["--method.name=freeflow", "--method.teacher=nowhere"], "is not a run directory"),
    ],
)
def test_bad_few_step_settings_are_named(tmp_path, capsys, args, words):
    argv = ["train", "toy2d_fm", f"--out-dir={tmp_path / 'r'}", *TINY, *args]
    if "freeflow" in args[0]:
        argv += FEWSTEP_ONLY
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_a_teacher_must_be_a_flow_matching_run(tmp_path, teacher, capsys):
    blockwise = _train(tmp_path, "blockwise", teacher, *ODE_AND_FEWSTEP)
    argv = ["train", "toy2d_fm", f"--out-dir={tmp_path / 'r'}", *TINY, *FEWSTEP_ONLY]
    argv += ["--method.name=freeflow", f"--method.teacher={blockwise}"]
    assert main(argv) == 2
    assert "the teacher must be a flow-matching run" in capsys.readouterr().err


def test_class_conditional_few_step_run_samples_a_label(tmp_path, teacher):
    run = _train(tmp_path, "meanflow", teacher, *FEWSTEP_ONLY, "--data.conditional=true")
    out = tmp_path / "three.npy"
    assert main(["sample", str(run), "--label", "3", "--n", "6", "--out", str(out)]) == 0
    assert np.load(out).shape == (6, 2)


def test_meanflow_dispersive_weight_adds_the_regulariser():
    # The dispersive term is one batch scalar lambda * L_disp(H) added to every example, so the
    # per-example losses with and without it differ by the same positive-or-negative constant.
    from flowforge.recipes.base import TrainContext
    from flowforge.recipes.config import RunConfig
    from flowforge.recipes.config_io import apply_overrides
    from flowforge.recipes.table import recipe_for
    from flowforge.recipes.vectors import build_vectors

    losses = []
    for weight in (0.0, 0.5):
        cfg = apply_overrides(RunConfig(), ["method.name=meanflow", "model.time_embed_dim=0"])
        cfg.method.dispersive_weight = weight
        recipe, data = recipe_for(cfg), build_vectors(cfg.data)
        torch.manual_seed(0)
        model = recipe.build_model(data)
        loss = recipe.training(model, data, TrainContext()).objective
        x_1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
        losses.append(loss(model, x_1, None, torch.Generator().manual_seed(2)).detach())
    gap = losses[1] - losses[0]
    assert gap.abs().min() > 1e-4
    torch.testing.assert_close(gap, gap[:1].expand_as(gap), rtol=0, atol=1e-5)


def test_a_teacher_on_other_data_is_refused(tmp_path, teacher, capsys):
    # Same dimension, so the weights would load: the data settings are compared instead.
    argv = ["train", "toy2d_fm", f"--out-dir={tmp_path / 'r'}", *TINY, *ODE_AND_FEWSTEP]
    argv += ["--method.name=reflow", f"--method.teacher={teacher}", "--data.name=moons", *PAIRS]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "data.name='eight_gaussians' (this run: 'moons')" in err
