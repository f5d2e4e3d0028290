"""``sample`` and ``eval`` take the same dotted overrides as ``train``; dopri5 rows on request;
one PNG per image; the recipes listing."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from flowforge.cli.main import main


def test_eval_takes_dotted_sample_and_eval_overrides(vector_run, capsys):
    argv = ["eval", str(vector_run), "--sample.guidance=2", "--sample.guidance_method=raag"]
    assert main([*argv, "--eval.nfes=4", "--eval.metrics=w2,energy"]) == 0
    m = json.loads((vector_run / "metrics.json").read_text())
    assert m["guidance"] == 2.0 and set(m["floors"]) == {"w2", "energy"}
    assert [(r["solver"], r["nfe"]) for r in m["results"]] == [("euler", 4)]
    raag = m["results"][0]["w2"]
    assert main(["eval", str(vector_run), "--sample.guidance=2", "--eval.nfes=4"]) == 0
    cfg = json.loads((vector_run / "metrics.json").read_text())["results"][0]["w2"]
    assert raag != cfg  # the method reached the sampler
    capsys.readouterr()
    assert main(["eval", str(vector_run), "--train.steps=5"]) == 2
    assert "takes sample.* and eval.* overrides" in capsys.readouterr().err
    assert main(["eval", str(vector_run), "--sample.guidnce=2"]) == 2
    assert "Did you mean 'sample.guidance'?" in capsys.readouterr().err


def test_eval_with_dopri5_rows(vector_run):
    assert main(["eval", str(vector_run), "--solvers", "dopri5", "euler", "--nfes", "2"]) == 0
    rows = json.loads((vector_run / "metrics.json").read_text())["results"]
    assert [r["solver"] for r in rows] == ["dopri5", "euler"]
    assert rows[0]["nfe"] > 2 and np.isfinite(rows[0]["w2"])  # adaptive: it spends what it needs


def test_sample_takes_dotted_overrides(vector_run, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    assert main(["sample", str(vector_run), "--n", "20", "--out", str(a)]) == 0
    argv = ["sample", str(vector_run), "--sample.n=20", "--sample.time_shift=3"]
    assert main([*argv, "--out", str(b)]) == 0
    assert np.load(b).shape == (20, 2) and not np.array_equal(np.load(a), np.load(b))


def test_sample_into_a_folder_writes_one_png_per_image(image_run, tmp_path, capsys):
    out = tmp_path / "pngs"
    assert main(["sample", str(image_run), "--n", "5", "--label", "2", "--out", f"{out}/"]) == 0
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"sample_{i:04d}.png" for i in range(5)]
    first = np.asarray(Image.open(files[0]))
    assert first.shape == (8, 8) and first.dtype == np.uint8
    npy = tmp_path / "x.npy"
    argv = ["sample", str(image_run), "--n", "5", "--label", "2", "--out", str(npy)]
    assert main(argv) == 0
    x = np.load(npy)  # the same images in [0, 1]
    np.testing.assert_array_equal(np.round(x[0, 0] * 255).astype(np.uint8), first)
    capsys.readouterr()


def test_a_vector_run_refuses_a_folder(vector_run, tmp_path, capsys):
    assert main(["sample", str(vector_run), "--out", f"{tmp_path}/"]) == 2
    assert "this run samples vectors" in capsys.readouterr().err


def test_sample_names_a_missing_run_before_its_output(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "run directory" in err and "does not exist" in err and "--out" not in err


def test_recipes_lists_every_method(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in ("fm", "meanflow", "symmflow", "autoencoder", "flowturbo"):
        assert f"\n{name}: " in f"\n{out}"
    assert "flow_map_ratio=0.25" in out


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_help_lists_the_dotted_overrides(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert "--sample.guidance_method" in out and "--train.steps" not in out
