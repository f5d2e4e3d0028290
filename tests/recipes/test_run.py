"""The Python API of runs: load, sample, field, evaluate, save, fit, and what it refuses."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

import flowforge
from flowforge.cli.main import main
from flowforge.recipes.config import ConfigError
from flowforge.solvers.grids import uniform_grid
from flowforge.solvers.ode import sample_ode


def test_load_gives_config_networks_and_data(vector_run):
    run = flowforge.load(vector_run)
    assert run.config.method.name == "fm" and run.step == 40
    assert run.ema is not None and run.ema is not run.model
    assert run.data.num_classes == 8 and run.data.shape == (2,)
    assert not run.model.training and not run.ema.training


def test_sample_matches_the_command_line(vector_run, tmp_path):
    out = tmp_path / "s.npy"
    argv = ["sample", str(vector_run), "--n", "30", "--nfe", "4", "--seed", "5", "--out", str(out)]
    assert main([*argv, "--label", "3", "--guidance", "2"]) == 0
    run = flowforge.load(vector_run)
    x = run.sample(30, nfe=4, seed=5, label=3, guidance=2.0)
    assert x.shape == (30, 2) and x.dtype == torch.float32
    np.testing.assert_array_equal(x.numpy(), np.load(out))


def test_sample_options_change_the_draw(vector_run):
    run = flowforge.load(vector_run)
    a = run.sample(20, nfe=4, label=1)
    assert torch.equal(a, run.sample(20, nfe=4, label=1))  # seeded by sample.seed
    assert not torch.equal(a, run.sample(20, nfe=4, label=2))
    assert not torch.equal(a, run.sample(20, nfe=4, label=1, guidance=3.0))
    raag = run.sample(20, nfe=4, label=1, guidance=3.0, guidance_method="raag")
    assert not torch.equal(raag, run.sample(20, nfe=4, label=1, guidance=3.0))
    g = torch.Generator().manual_seed(11)
    assert not torch.equal(a, run.sample(20, nfe=4, label=1, generator=g))
    assert not torch.equal(a, run.sample(20, nfe=4, label=1, which="model"))
    labels = torch.arange(8).repeat(2)
    assert run.sample(16, nfe=2, label=labels).shape == (16, 2)


def test_field_integrated_by_hand_equals_sample(vector_run):
    """``Run.field`` is the guided field the samplers integrate: Euler by hand gives the same."""
    run = flowforge.load(vector_run)
    g = torch.Generator().manual_seed(0)
    x_0 = torch.randn(25, 2, generator=g, dtype=torch.float32)
    labels = run.data.labels(25, g)
    field = run.field(guidance=2.0)
    mine = run.data.to_data(sample_ode(field, x_0, uniform_grid(4), method="euler", cond=labels))
    theirs = run.sample(25, nfe=4, solver="euler", guidance=2.0, seed=0)
    torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"nfe": 3, "solver": "heun"}, "sample.nfe=3 is not a multiple"),
        ({"solver": "fewstep"}, "a fm run uses ODE solvers"),
        ({"label": 8}, "label=8 is not a class of this run; use 0..7"),
        ({"guidance": -1.0}, "sample.guidance=-1.0 must be >= 0"),
        ({"guidance_method": "cgf"}, "Did you mean 'cfg'?"),
    ],
)
def test_bad_sample_options_are_named(vector_run, kwargs, words):
    run = flowforge.load(vector_run)
    with pytest.raises(ValueError, match="") as e:
        run.sample(10, **kwargs)
    assert words in str(e.value)


def test_evaluate_equals_the_command_line(vector_run):
    run = flowforge.load(vector_run)
    mine = run.evaluate(nfes=[2, 4], solvers=["euler", "heun"], progress=False)
    assert main(["eval", str(vector_run), "--nfes", "2", "4", "--solvers", "euler", "heun"]) == 0
    theirs = json.loads((vector_run / "metrics.json").read_text())
    assert mine == theirs
    assert [(r["solver"], r["nfe"]) for r in mine["results"]] == [
        ("euler", 2), ("euler", 4), ("heun", 2), ("heun", 4)
    ]  # fmt: skip


def test_save_and_load_round_trip(vector_run, tmp_path):
    run = flowforge.load(vector_run)
    with torch.no_grad():  # change the weights in memory: save writes what the run holds
        for p in run.ema.parameters():
            p.mul_(0.5)
    copy = flowforge.load(run.save(tmp_path / "copy"))
    assert copy.config == run.config and copy.step == run.step
    for a, b in ((run.model, copy.model), (run.ema, copy.ema)):
        for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), k
    assert torch.equal(run.sample(40, nfe=2), copy.sample(40, nfe=2))
    assert not torch.equal(copy.sample(40, nfe=2), flowforge.load(vector_run).sample(40, nfe=2))
    # the copy is a run directory of its own: the command line samples and resumes it
    assert main(["sample", str(tmp_path / "copy"), "--out", str(tmp_path / "c.npy")]) == 0
    assert main(["train", str(tmp_path / "copy"), "--train.steps=42", "--no-eval"]) == 0
    with pytest.raises(ValueError, match="the run's own directory"):
        run.save(vector_run)


def test_images_come_back_in_unit_range_or_uint8(image_run):
    run = flowforge.load(image_run)
    x = run.sample(6, nfe=2, label=7)
    assert x.shape == (6, 1, 8, 8) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    u = run.sample(6, nfe=2, label=7, uint8=True)
    assert u.dtype == torch.uint8 and torch.equal(u, (x * 255).round().to(torch.uint8))
    drawn = run.generate(6, nfe=2, label=7)  # the raw draw: [-1, 1], labels and NFE
    torch.testing.assert_close((drawn.x + 1) / 2, x)
    assert drawn.nfe == 2 and drawn.labels.tolist() == [7] * 6


def test_fit_from_python_then_load(tmp_path):
    run = flowforge.fit(
        "toy2d_fm",
        "train.steps=3",
        "--train.warmup_steps=0",
        "threads=1",
        "train.progress=false",
        "eval.n_samples=50",
        "eval.floor_repeats=1",
        "eval.nfes=2",
        "eval.solvers=euler",
        "eval.dopri5=false",
        "sample.n=20",
        run_dir=tmp_path / "fit",
    )
    assert run.metrics["step"] == 3 and (tmp_path / "fit" / "metrics.json").is_file()
    again = flowforge.load(tmp_path / "fit")
    assert again.config == run.config
    assert torch.equal(again.sample(10, nfe=2), run.sample(10, nfe=2))


def test_a_run_of_train_alone_is_refused_with_the_fix(tmp_path):
    from flowforge.train import TrainConfig, train

    net = torch.nn.Linear(2, 2)
    data = lambda n, g: (torch.randn(n, 2, generator=g),)  # noqa: E731
    mse = lambda m, x, c, g: (m(x) - x).square().mean(1)  # noqa: E731
    train(net, mse, data, TrainConfig(steps=2, batch_size=8, progress=False), tmp_path / "py")
    with pytest.raises(ConfigError, match="written by flowforge.train.train without run_config"):
        flowforge.load(tmp_path / "py")
    assert main(["sample", str(tmp_path / "py")]) == 2


def test_a_config_of_the_earlier_layout_is_read_with_a_warning(vector_run, tmp_path):
    """Run directories written before the recipes held method.objective and a distill section;
    they are read as the recipe layout, and the warning shows the rewritten section."""
    copy = tmp_path / "old"
    shutil.copytree(vector_run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    method = config["method"]
    del method["name"]
    config["method"] = {"objective": "fm", **method}
    config["distill"] = {"teacher": None, "pairs": 50000, "flow_map_ratio": 0.25}
    (copy / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.warns(FutureWarning, match=r"earlier config layout.*name: fm"):
        old = flowforge.load(copy)
    new = flowforge.load(vector_run)
    assert old.config == new.config
    assert torch.equal(old.sample(10, nfe=2), new.sample(10, nfe=2))


def test_legacy_overrides_warn_and_map_to_the_method_section():
    from flowforge.recipes.config import RunConfig
    from flowforge.recipes.config_io import apply_overrides

    with pytest.warns(FutureWarning, match="write --method.name"):
        cfg = apply_overrides(RunConfig(), ["--method.objective=meanflow"])
    with pytest.warns(FutureWarning, match="write --method.flow_map_ratio"):
        cfg = apply_overrides(cfg, ["--distill.flow_map_ratio=0.5"])
    assert (cfg.method.name, cfg.method.flow_map_ratio) == ("meanflow", 0.5)


def test_method_keys_are_typed_by_the_recipe():
    from flowforge.recipes.config import RunConfig
    from flowforge.recipes.config_io import apply_overrides

    mf = apply_overrides(RunConfig(), ["--method.flow_map_ratio=0.3", "--method.name=meanflow"])
    assert (type(mf.method).__name__, mf.method.flow_map_ratio) == ("MeanFlowConfig", 0.3)
    assert mf.method.cond_dropout == 0.1  # a key fm and meanflow share is kept
    with pytest.raises(ConfigError, match="Did you mean 'method.flow_map_ratio'"):
        apply_overrides(mf, ["--method.flow_map_ratoi=0.3"])
    with pytest.raises(ConfigError, match=r"method.flow_map_ratio='x'.*float"):
        apply_overrides(mf, ["--method.flow_map_ratio=x"])
    with pytest.raises(ConfigError, match="'schedule' is a key of method.name=flowturbo"):
        apply_overrides(mf, ["--method.schedule=H1P1R1"])
    with pytest.raises(ConfigError, match="Did you mean 'meanflow'"):
        apply_overrides(RunConfig(), ["--method.name=meanflw"])


def test_eval_warns_when_the_ema_still_holds_the_initial_weights(tmp_path):
    """A 40-step run with decay 0.999 and no warm-up keeps 0.999^40 = 96 % of the initial
    weights in its EMA: the evaluation says so and records the share; with the automatic
    warm-up (the default for such a short run) the share is negligible."""
    args = ["train.steps=40", "train.warmup_steps=0", "train.ema_decay=0.999", "threads=1"]
    args += ["train.progress=false", "eval.n_samples=50", "eval.floor_repeats=1"]
    args += ["eval.nfes=2", "eval.solvers=euler", "eval.dopri5=false", "sample.n=50"]
    with pytest.warns(UserWarning, match="still hold 96% of the initial"):
        stale = flowforge.fit("toy2d_fm", *args, "train.ema_warmup=false", run_dir=tmp_path / "a")
    assert stale.metrics["ema_initial_share"] == pytest.approx(0.999**40)
    fresh = flowforge.fit("toy2d_fm", *args, run_dir=tmp_path / "b")
    assert fresh.config.train.ema_warmup is None and fresh.config.train.ema_warms_up
    assert fresh.metrics["ema_initial_share"] < 1e-6
