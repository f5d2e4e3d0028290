"""Few-step image runs through the command line: every digits few-step preset trains, evaluates
and samples from a tiny class-conditional teacher.

Runs are tiny (a width-8 UNet, 3 steps, a 5-step feature classifier), so these tests check the
plumbing and exact properties (files, NFE rows, teacher copies, errors); quality is measured by
the presets' full runs and ``benchmarks/few_step.py`` (benchmarks/README.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flowforge.cli.main import main

# each preset's own method keys at a tiny size
DISTILL = {
    "digits_reflow": ["--method.pairs=32", "--method.teacher_nfe=4"],
    "digits_flowturbo": ["--method.refiner_hidden=8"],
}
TEACHER_PRESETS = ("digits_reflow", "digits_freeflow", "digits_flowturbo")


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, train_tiny) -> Path:
    run = tmp_path_factory.mktemp("fewstep_images") / "teacher"
    with torch.random.fork_rng():
        threads = torch.get_num_threads()
        assert train_tiny("digits", run, "--eval.solvers=[euler]", "--eval.nfes=[2]") == 0
        torch.set_num_threads(threads)
    return run


@pytest.fixture
def distil(tmp_path, train_tiny):
    """Train ``preset`` from ``teacher`` into tmp_path / preset (tiny) and return the run."""

    def run(preset: str, teacher: Path, *extra: str) -> Path:
        args = [*DISTILL.get(preset, []), *extra]
        args += [f"--method.teacher={teacher}"] * (preset in TEACHER_PRESETS)
        assert train_tiny(preset, tmp_path / preset, *args) == 0
        return tmp_path / preset

    return run


@pytest.mark.parametrize(
    "preset, rows",
    [
        ("digits_reflow", {(s, n) for s in ("euler", "fewstep") for n in (1, 2, 4)}),
        ("digits_meanflow", {("fewstep", 1), ("fewstep", 2), ("fewstep", 4)}),
        ("digits_freeflow", {("fewstep", 1), ("fewstep", 2), ("fewstep", 4)}),
        ("digits_twinflow", {("fewstep", 1), ("fewstep", 2), ("fewstep", 4)}),
        ("digits_flowturbo", {("fewstep", 4)}),  # H1P2R2: 2 + 1 + 1 teacher calls
        # fewstep: 1 step in each of 4 segments; Euler routes any grid through the segments
        ("digits_blockwise", {("euler", 1), ("euler", 2), ("euler", 4), ("fewstep", 4)}),
    ],
)
def test_each_digits_preset_trains_evaluates_and_samples(tmp_path, teacher, distil, preset, rows):
    run = distil(preset, teacher, "--eval.nfes=[1,2,4]")
    m = _metrics(run)
    assert {(r["solver"], r["nfe"]) for r in m["results"]} == rows
    for r in m["results"]:
        assert np.isfinite(r["fd"]) and 0 <= r["accuracy"] <= 1
    assert (run / "samples.png").is_file() and (run / "quality_vs_nfe.png").is_file()
    uses_teacher = preset in ("digits_reflow", "digits_freeflow", "digits_flowturbo")
    assert (run / "teacher.safetensors").is_file() == uses_teacher
    out = tmp_path / "sevens.npy"
    assert main(["sample", str(run), "--label", "7", "--n", "6", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (6, 1, 8, 8) and np.isfinite(x).all() and np.abs(x).max() <= 1


def test_image_reflow_starts_from_the_teacher(tmp_path, teacher, distil):
    # One step at a negligible learning rate: the student is still the teacher, so Euler samples
    # of the two runs agree.
    run = distil(
        "digits_reflow", teacher, "--train.steps=1", "--train.lr=1e-12",
        "--eval.nfes=[2]",
    )  # fmt: skip
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    common = ["--n", "8", "--solver", "euler", "--nfe", "4", "--label", "3"]
    assert main(["sample", str(run), *common, "--out", str(a)]) == 0
    assert main(["sample", str(teacher), *common, "--out", str(b)]) == 0
    np.testing.assert_allclose(np.load(a), np.load(b), atol=1e-5)


def test_image_flowturbo_outlives_its_teacher(tmp_path, teacher, distil):
    copy = tmp_path / "teacher_copy"
    shutil.copytree(teacher, copy)
    run = distil("digits_flowturbo", copy)
    rows = _metrics(run)["results"]
    shutil.rmtree(copy)  # the run holds a copy of its teacher
    assert main(["eval", str(run)]) == 0
    assert _metrics(run)["results"] == rows


@pytest.mark.parametrize(
    "preset, args, words",
    [
        (
            "digits_meanflow",
            ["--data.image_size=16", "--data.autoencoder=runs/digits_ae"],
            "or drop data.autoencoder to train in pixel space",
        ),
        ("digits_blockwise", ["--method.segment_guidance=true"], "segment_guidance=false"),
        ("digits_reflow", ["--method.teacher=nowhere"], "is not a run directory"),
    ],
)
def test_bad_few_step_image_settings_are_named(tmp_path, capsys, train_tiny, preset, args, words):
    assert train_tiny(preset, tmp_path / "r", *args) == 2
    assert words in capsys.readouterr().err


def test_a_teacher_on_other_images_is_refused(tmp_path, teacher, train_tiny, capsys):
    args = [f"--method.teacher={teacher}", "--data.image_size=16"]
    assert train_tiny("digits_freeflow", tmp_path / "r", *args) == 2
    assert "was trained on other data" in capsys.readouterr().err


def test_model_time_scale_reaches_the_image_networks():
    from flowforge.recipes.config import RunConfig
    from flowforge.recipes.config_io import apply_overrides, load_yaml, preset_path
    from flowforge.recipes.images import build_images
    from flowforge.recipes.table import recipe_for

    config: RunConfig = load_yaml(preset_path("digits_freeflow"))
    config.model.base_channels = 8
    data = build_images(config)
    net = recipe_for(config).build_model(data)
    assert (net.config.n_times, net.config.time_scale) == (2, 1.0)
    config = apply_overrides(config, ["method.name=twinflow", "model.arch=dit"])
    config.model.hidden, config.model.depth, config.model.time_scale = 32, 2, 7.0
    dit = recipe_for(config).build_model(data)
    assert (dit.config.n_times, dit.config.time_scale) == (2, 7.0)
