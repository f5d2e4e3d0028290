"""The ``flowforge`` command end to end: train, sample, eval, resume, and user errors.

One tiny run (a 2 x 64 MLP, 120 steps) is trained once per module into a temporary directory;
sampling, evaluation and resuming read it. Most calls go through ``main(argv)`` in-process; a
few run ``python -m flowforge`` in a subprocess to test the real entry point.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import image as mpimg

from flowforge.cli.main import main
from flowforge.recipes.config_io import load_yaml
from flowforge.train.checkpoint import checkpoint_step

TINY = [
    "--threads=1",
    "--model.hidden=64",
    "--model.depth=2",
    "--model.time_embed_dim=16",
    "--train.steps=120",
    "--train.batch_size=128",
    "--train.lr=3e-3",
    "--train.warmup_steps=0",
    "--train.ema_decay=0.9",
    "--train.log_every=20",
    "--train.ckpt_every=60",
    "--train.eval_every=60",
    "--train.progress=false",
    "--sample.n=300",
    "--sample.solver=heun",
    "--sample.nfe=8",
    "--eval.nfes=2,8",
    "--eval.solvers=euler,heun",
    "--eval.n_samples=300",
    "--eval.metrics=w2,sliced_w2,energy",
    "--eval.floor_repeats=1",
    "--eval.dopri5=false",
]
RUN_FILES = [
    "config.yaml",
    "data.json",
    "model.safetensors",
    "ema.safetensors",
    "trainer_state.pt",
    "metrics.jsonl",
    "metrics.json",
    "samples.png",
    "trajectories.png",
    "quality_vs_nfe.png",
    "loss.png",
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flowforge", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "toy2d_fm", f"--out-dir={run}", *TINY]) == 0
    return run


def _png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path)


def test_train_writes_the_run_directory(run_dir):
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    for name in ("samples.png", "trajectories.png", "quality_vs_nfe.png", "loss.png"):
        assert _png(run_dir / name).shape[0] > 100
    assert checkpoint_step(run_dir) == 120
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval"]) for r in records if "eval" in r]
    assert [step for step, _ in evals] == [60, 120]  # the periodic sliced-W2 check
    assert all(np.isfinite(e["sliced_w2"]) and e["nfe"] == 8 for _, e in evals)
    assert load_yaml(run_dir / "config.yaml").train.steps == 120
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = {(r["solver"], r["nfe"]) for r in metrics["results"]}
    # heun spends 2 evaluations per step, so NFE 2 is one heun step and NFE 8 four
    assert rows == {("euler", 2), ("euler", 8), ("heun", 2), ("heun", 8)}
    assert set(metrics["floors"]) == {"w2", "sliced_w2", "energy"}
    assert all(np.isfinite(r["w2"]) for r in metrics["results"])


def test_short_training_beats_the_untrained_baseline(run_dir):
    """120 steps move the samples towards 8 gaussians (radius 4, std 0.5).

    Measured with these settings and 300 eval samples: W2 = 2.81 after 1 step (samples still
    about N(0, I)), 1.78 after 120 steps at heun NFE 8, floor 0.56. The threshold 2.3 sits
    between the untrained and the trained value.
    """
    metrics = json.loads((run_dir / "metrics.json").read_text())
    w2 = {(r["solver"], r["nfe"]): r["w2"] for r in metrics["results"]}
    assert w2[("heun", 8)] < 2.3
    assert metrics["floors"]["w2"] < w2[("heun", 8)]


def test_sample_to_npy_and_png(run_dir, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert main(["sample", str(run_dir), "--n", "50", "--nfe", "4", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (50, 2) and x.dtype == np.float32 and np.isfinite(x).all()
    assert "NFE 4" in capsys.readouterr().out
    png = tmp_path / "s.png"
    args = ["sample", str(run_dir), "--n", "64", "--solver", "euler", "--nfe", "3"]
    assert main([*args, "--out", str(png)]) == 0
    assert _png(png).shape[0] > 100


def test_sample_is_reproducible_with_a_seed(run_dir, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    for out in (a, b):
        assert main(["sample", str(run_dir), "--n", "20", "--seed", "7", "--out", str(out)]) == 0
    assert np.array_equal(np.load(a), np.load(b))


def test_eval_writes_metrics_at_the_requested_nfes(run_dir, tmp_path):
    args = ["eval", str(run_dir), "--nfes", "4", "--solvers", "midpoint", "--n-samples", "200"]
    assert main(args) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [(r["solver"], r["nfe"]) for r in metrics["results"]] == [("midpoint", 4)]
    assert metrics["n_samples"] == 200 and metrics["step"] == 120


def test_resume_continues_from_the_checkpoint(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in run_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    with pytest.warns(UserWarning, match="cosine learning-rate schedule is re-stretched"):
        assert main(["train", str(copy), "--train.steps=160", "--no-eval"]) == 0
    assert "from step 120 to step 160" in capsys.readouterr().out
    assert checkpoint_step(copy) == 160
    records = [json.loads(line) for line in (copy / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(20, 161, 20))  # continued, neither restarted nor duplicated
    assert load_yaml(copy / "config.yaml").train.steps == 160


def test_resume_with_new_sampling_settings_does_not_warn(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="resuming")  # they do not touch training
        argv = ["train", str(copy), "--eval.nfes=4", "--sample.nfe=4", "--threads=2", "--no-eval"]
        assert main(argv) == 0
    assert load_yaml(copy / "config.yaml").sample.nfe == 4


def test_indivisible_batch_is_refused_before_the_run_directory_exists(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"--out-dir={run}", *TINY, "--train.grad_accum=3"]) == 2
    assert "batch_size=128 is not divisible by train.grad_accum=3" in capsys.readouterr().err
    assert not run.exists()


def test_sample_refuses_a_missing_out_directory(run_dir, tmp_path, capsys):
    out = tmp_path / "nonexistent" / "dir" / "x.npy"
    assert main(["sample", str(run_dir), "--n", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nonexistent").exists()


def test_resume_refuses_a_different_model(run_dir, capsys):
    assert main(["train", str(run_dir), "--model.hidden=32"]) == 2
    err = capsys.readouterr().err
    assert "model.hidden (64 -> 32)" in err and "--out-dir" in err


def test_conditional_run_with_guidance(tmp_path):
    run = tmp_path / "cond"
    args = ["train", "toy2d_cond", f"--out-dir={run}", *TINY, "--train.steps=40"]
    assert main([*args, "--sample.guidance=2", "--eval.nfes=4", "--eval.solvers=euler"]) == 0
    out = tmp_path / "c.npy"
    argv = ["sample", str(run), "--n", "30", "--label", "3", "--guidance", "3", "--out", str(out)]
    assert main(argv) == 0
    assert np.load(out).shape == (30, 2)
    assert main(["sample", str(run), "--label", "8", "--out", str(out)]) == 2  # 8 classes: 0..7


def test_csv_data_is_standardised_and_restored(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal([100.0, -50.0], [3.0, 0.5], size=(400, 2))
    csv = tmp_path / "d.csv"
    np.savetxt(csv, data, delimiter=",", header="a,b", comments="")
    run = tmp_path / "csvrun"
    args = ["train", "toy2d_fm", f"--out-dir={run}", f"--data.path={csv}", *TINY]
    assert main([*args, "--train.steps=60"]) == 0
    info = json.loads((run / "data.json").read_text())
    assert np.allclose(info["mean"], data.mean(0))
    assert np.allclose(info["std"], data.std(0, ddof=1))
    out = tmp_path / "s.npy"
    assert main(["sample", str(run), "--n", "500", "--out", str(out)]) == 0
    x = np.load(out)
    # Samples come back in data units: without un-standardising they would sit near 0. A crude
    # 60-step model still gets the mean within a fraction of the column's std (3 and 0.5).
    assert np.all(np.abs(x.mean(0) - [100.0, -50.0]) < [1.5, 0.25])


@pytest.mark.parametrize(
    "body, words",
    [
        ("1,2\n3,nan\n5,6\n", ["row 2, column 2", "NaN"]),
        ("x,y\n1,2\n3,abc\n", ["row 3, column 2", "'abc'"]),
        ("1,2\n3,4,5\n", ["row 2 has 3 columns", "row 1 has 2"]),
    ],
)
def test_bad_csv_is_a_clear_error(tmp_path, capsys, body, words):
    csv = tmp_path / "bad.csv"
    csv.write_text(body)
    argv = ["train", f"--data.path={csv}", f"--out-dir={tmp_path / 'r'}", *TINY]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowforge train: error:") and "Traceback" not in err
    for word in words:
        assert word in err


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_missing_run_directory(tmp_path, capsys, command):
    assert main([command, str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([command, str(tmp_path / "empty")]) == 2
    assert "not a flowforge run directory" in capsys.readouterr().err


def test_corrupt_checkpoint(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in run_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "ema.safetensors").write_bytes(b"garbage")
    assert main(["sample", str(copy), "--out", str(tmp_path / "x.npy")]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_unwritable_outputs(run_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["sample", str(run_dir), "--n", "5", "--out", str(blocker / "x.npy")]) == 2
    assert "cannot write --out" in capsys.readouterr().err
    assert main(["sample", str(run_dir), "--out", str(tmp_path / "x.txt")]) == 2
    assert ".npy" in capsys.readouterr().err
    assert main(["train", f"--out-dir={blocker / 'run'}", *TINY]) == 2
    assert "cannot write to the run directory" in capsys.readouterr().err


def test_bad_nfe_for_solver(run_dir, capsys):
    assert main(["sample", str(run_dir), "--solver", "rk4", "--nfe", "6"]) == 2
    assert "[4, 8, 12, 16, 20]" in capsys.readouterr().err


def test_unknown_preset(capsys):
    assert main(["train", "toy2d_fn"]) == 2
    assert "Did you mean 'toy2d_fm'?" in capsys.readouterr().err


def test_subprocess_presets():
    proc = run_cli("presets")
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert {"toy2d_fm", "toy2d_cond", "toy2d_ot", "toy2d_logitnormal"} <= set(names)


def test_subprocess_user_error_has_no_traceback():
    proc = run_cli("train", "--trian.steps=5")
    assert proc.returncode == 2
    assert "unknown config key 'trian'" in proc.stderr and "Did you mean 'train'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_type_on_the_command_line(capsys):
    assert main(["train", "--train.steps=many"]) == 2
    assert "train.steps='many'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, options",
    [
        ("sample", ["--n", "--solver", "--nfe", "--guidance", "--out", "(default: ema)"]),
        ("eval", ["--nfes", "--solvers", "--n-samples", "(default: ema)"]),
        ("train", ["--out-dir", "--train.steps", "(default: 2000)", "--sample.solver"]),
    ],
)
def test_help_shows_options_with_defaults(capsys, command, options):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for option in options:
        assert option in out


def test_initial_weights_depend_only_on_the_seed(tmp_path):
    from safetensors.torch import load_file

    def weights(name: str, seed: int) -> dict:
        argv = ["train", f"--out-dir={tmp_path / name}", *TINY, "--train.steps=1", "--no-eval"]
        assert main([*argv, f"--train.seed={seed}"]) == 0
        return load_file(tmp_path / name / "model.safetensors")

    a, b, c = weights("a", 0), weights("b", 0), weights("c", 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_train_from_a_yaml_file(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("data:\n  name: moons\ntrain:\n  steps: 3\n  warmup_steps: 0\n")
    run = tmp_path / "mine"
    assert main(["train", str(config), f"--out-dir={run}", "--no-eval", "--threads=1"]) == 0
    saved = load_yaml(run / "config.yaml")
    assert (saved.name, saved.data.name, saved.train.steps) == ("mine", "moons", 3)
