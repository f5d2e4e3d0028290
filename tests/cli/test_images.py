"""Image runs through the command line: every image preset trains, evaluates, samples and draws.

Each run is tiny (a UNet of width 8, a few steps, a 5-step feature classifier), so these tests
check the plumbing and the exact properties (pasted pixels, shapes, files, errors); learning to a
quality bar is checked by the presets' full runs (benchmarks/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowforge.cli.main import main
from flowforge.recipes.config_io import load_yaml

SHAPES = ["--data.n_train=64", "--eval.solvers=euler"]


@pytest.fixture
def train(tmp_path, train_tiny):
    """Train ``preset`` into tmp_path / preset (tiny, evaluated at NFE 2) and return the run."""

    def run(preset: str, *extra: str) -> Path:
        assert train_tiny(preset, tmp_path / preset, "--eval.nfes=2", *extra) == 0
        return tmp_path / preset

    return run


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_digits_class_conditional_run(tmp_path, capsys, train):
    run = train("digits", "--eval.solvers=heun")
    m = _metrics(run)
    for name in ("fd", "precision", "recall", "accuracy"):
        assert name in m["floors"] and name in m["results"][0]
    assert 0.0 <= m["results"][0]["accuracy"] <= 1.0 and m["classifier_accuracy"] > 0.1
    for name in ("samples.png", "quality_vs_nfe.png", "classifier.safetensors", "loss.png"):
        assert (run / name).is_file(), name
    out = tmp_path / "sevens.npy"
    assert main(["sample", str(run), "--label", "7", "--n", "6", "--out", str(out)]) == 0
    x = np.load(out)
    assert x.shape == (6, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert main(["sample", str(run), "--label", "10", "--out", str(out)]) == 2
    assert "--label=10 is not a class of this run; use 0..9" in capsys.readouterr().err
    # `eval` reuses the cached classifier and reproduces the training-time evaluation exactly.
    assert main(["eval", str(run)]) == 0
    assert _metrics(run)["results"] == m["results"]
    assert (m["guidance"], m["guidance_method"], m["raag_alpha"]) == (1.0, "cfg", None)


def test_inpainting_keeps_known_pixels_exactly(tmp_path, train):
    run = train("shapes_inpaint", *SHAPES)
    for row in _metrics(run)["results"]:
        assert row["known_error"] == 0.0  # pasted back: exact, whatever the model
        assert row["known_mse"] > 0.0  # the raw sample is the network's own (barely trained)
        assert np.isfinite(row["fd_unconditional"])
    assert (run / "inpainting.png").is_file()


def test_symmflow_run_segments_and_renders(tmp_path, train):
    run = train("shapes_symmflow", *SHAPES, "--eval.nfes=1", "--sample.nfe=1")
    row = _metrics(run)["results"][0]
    assert 0.0 <= row["miou"] <= 1.0 and 0.0 <= row["miou_generated"] <= 1.0
    assert (run / "mask_pairs.png").is_file()


def test_mask_to_image_run(tmp_path, train):
    run = train("shapes_mask2image", *SHAPES)
    assert "fd" in _metrics(run)["results"][0] and (run / "mask_pairs.png").is_file()


def test_latent_run_uses_its_saved_codec(tmp_path, train, train_tiny):
    ae = train("digits_ae")
    assert _metrics(ae)["reconstruction_mse"] > 0 and (ae / "reconstructions.png").is_file()
    run = train("digits_latent", f"--data.autoencoder={ae}", "--eval.solvers=heun")
    assert (run / "codec.safetensors").is_file()
    first = _metrics(run)["results"]
    (ae / "model.safetensors").unlink()  # the latent run no longer needs the autoencoder run
    (ae / "ema.safetensors").unlink(missing_ok=True)
    assert main(["eval", str(run)]) == 0
    assert _metrics(run)["results"] == first
    out = tmp_path / "latent.npy"
    assert main(["sample", str(run), "--n", "4", "--out", str(out)]) == 0
    assert np.load(out).shape == (4, 1, 16, 16)
    # Resuming trains on the saved codec (same bytes), with the autoencoder's weights gone.
    codec = (run / "codec.safetensors").read_bytes()
    extra = [f"--data.autoencoder={ae}", "--eval.solvers=heun", "--train.steps=5"]
    with pytest.warns(UserWarning, match="train.steps changed from 3 to 5"):
        assert train_tiny("digits_latent", run, "--eval.nfes=2", *extra) == 0
    assert (run / "codec.safetensors").read_bytes() == codec
    assert _metrics(run)["step"] == 5


def test_folder_of_class_subfolders_trains(tmp_path, train):
    g = np.random.default_rng(0)
    for k in range(2):
        (tmp_path / "imgs" / f"class{k}").mkdir(parents=True)
        for i in range(40):
            pixels = (g.random((8, 8)) * 100 + 150 * k).astype(np.uint8)
            Image.fromarray(pixels, "L").save(tmp_path / "imgs" / f"class{k}" / f"{i}.png")
    run = train(
        "digits",
        f"--data.path={tmp_path / 'imgs'}",
        "--eval.solvers=heun",
        "--train.batch_size=8",
    )
    m = _metrics(run)
    assert m["n_samples"] == 8  # 10% of 80 images held out, at most eval.n_samples
    assert len(json.loads((run / "data.json").read_text())["shape"]) == 3


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--model.arch=mlp"], "holds images but model.arch='mlp'"),
        (["--method.name=symmflow"], "need segmentation masks"),
        (["--eval.metrics=fd,miou"], "'miou' is measured on method.name=symmflow"),
        (["--eval.metrics=w2"], "which are for vectors"),
        (["--data.image_size=12"], "digits come in 8 or 16 pixels"),
        (["--data.autoencoder=/nonexistent"], "is not a trained run directory"),
    ],
)
def test_image_config_errors(tmp_path, capsys, train_tiny, overrides, message):
    assert train_tiny("digits", tmp_path / "r", "--eval.nfes=2", *overrides) == 2
    assert message in capsys.readouterr().err


def test_folder_of_mixed_sizes_is_refused(tmp_path, capsys, train_tiny):
    (tmp_path / "imgs").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "imgs" / "a.png")
    Image.new("L", (9, 9)).save(tmp_path / "imgs" / "b.png")
    overrides = [f"--data.path={tmp_path / 'imgs'}", "--data.image_size=null"]
    overrides += ["--data.conditional=false", "--eval.metrics=fd"]
    assert train_tiny("digits", tmp_path / "r", *overrides) == 2
    err = capsys.readouterr().err
    assert "a.png" in err and "b.png" in err, err


def test_a_flat_folder_just_works_with_a_class_preset(tmp_path, train_tiny, capsys):
    """`flowforge train digits --data.path=FLAT` trains unconditionally with the metrics that
    apply; the feature network learns rotations of the unlabelled images."""
    g = np.random.default_rng(0)
    (tmp_path / "flat").mkdir()
    for i in range(40):
        pixels = np.zeros((8, 8), np.uint8)
        pixels[: 2 + i % 5, 1] = 255  # a bar on the left: rotations are telling
        Image.fromarray(pixels + (g.random((8, 8)) * 20).astype(np.uint8), "L").save(
            tmp_path / "flat" / f"{i}.png"
        )
    run = tmp_path / "run"
    args = [f"--data.path={tmp_path / 'flat'}", "--eval.nfes=2", "--eval.solvers=euler"]
    assert train_tiny("digits", run, *args, "--train.batch_size=8") == 0
    assert "is a flat folder (no class subfolders)" in capsys.readouterr().out
    m = json.loads((run / "metrics.json").read_text())
    assert set(m["floors"]) == {"fd", "precision", "recall"} and "accuracy" not in m["results"][0]
    assert m["classifier_accuracy"] is not None and np.isfinite(m["results"][0]["fd"])
    assert load_yaml(run / "config.yaml").data.conditional is False
