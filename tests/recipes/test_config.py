"""Config dataclasses: YAML round trip, typed dotted overrides, errors that name the key."""

from __future__ import annotations

import typing

import pytest

from flowforge.recipes import flow_matching, gfn, vectors
from flowforge.recipes.config import (
    ODE_SOLVERS,
    TOY_DATASETS,
    ConfigError,
    RunConfig,
)
from flowforge.recipes.config_io import (
    apply_overrides,
    config_keys,
    list_presets,
    load_yaml,
    preset_path,
    save_yaml,
)
from flowforge.recipes.table import RECIPES, all_solvers
from flowforge.recipes.validation import validate


def test_overrides_are_converted_to_the_field_types():
    base = RunConfig()
    cfg = apply_overrides(
        base,
        [
            "--train.steps=1234",
            "--train.lr=1e-3",
            "--train.compile=false",
            "--eval.nfes=[1,2,4]",
            "--eval.solvers=euler,heun",
            "--method.huber_c=0.5",
            "--sample.solver=rk4",
            "--sample.nfe=8",
            "--data.path=null",
            "--threads=2",
        ],
    )
    assert cfg.train.steps == 1234 and isinstance(cfg.train.steps, int)
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.train.compile is False
    assert cfg.eval.nfes == [1, 2, 4]
    assert cfg.eval.solvers == ["euler", "heun"]
    assert cfg.method.huber_c == 0.5
    assert (cfg.sample.solver, cfg.sample.nfe) == ("rk4", 8)
    assert cfg.data.path is None
    assert cfg.threads == 2
    assert base == RunConfig()  # the input config is not modified in place


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(
        RunConfig(),
        [
            "--name=rt",
            "--train.lr=3e-5",
            "--method.huber_c=0.01",
            "--method.distance=pseudo_huber",
            "--eval.nfes=3,5",
            "--data.conditional=true",
            "--sample.guidance=1.5",
        ],
    )
    save_yaml(cfg, tmp_path / "config.yaml")
    assert load_yaml(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("name", sorted(list_presets()))
def test_presets_load_validate_and_round_trip(name, tmp_path):
    cfg = validate(load_yaml(preset_path(name)))
    assert cfg.name == name
    save_yaml(cfg, tmp_path / "config.yaml")
    assert load_yaml(tmp_path / "config.yaml") == cfg


def test_presets_have_descriptions():
    presets = list_presets()
    assert {"toy2d_fm", "toy2d_cond", "toy2d_ot", "toy2d_logitnormal"} <= set(presets)
    assert all(len(text) > 20 for text in presets.values())


def test_unknown_key_names_it_lists_valid_keys_and_suggests():
    with pytest.raises(ConfigError) as e:
        apply_overrides(RunConfig(), ["--train.stesp=5"])
    msg = str(e.value)
    assert "'train.stesp'" in msg
    assert "Did you mean 'train.steps'?" in msg
    assert "train.batch_size" in msg  # the valid keys are listed


def test_unknown_section_suggests_the_closest():
    with pytest.raises(ConfigError, match="Did you mean 'train'"):
        apply_overrides(RunConfig(), ["--trian.steps=5"])


def test_unknown_key_in_yaml(tmp_path):
    (tmp_path / "bad.yaml").write_text("model:\n  hiden: 64\n")
    with pytest.raises(ConfigError, match="'model.hiden'.*Did you mean 'model.hidden'"):
        load_yaml(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    "override, words",
    [
        ("--train.steps=abc", ["train.steps='abc'", "int"]),
        ("--train.steps=1.5", ["train.steps='1.5'", "int"]),
        ("--train.lr=fast", ["train.lr='fast'", "float"]),
        ("--data.conditional=maybe", ["data.conditional='maybe'", "bool"]),
        ("--eval.nfes=1,x", ["eval.nfes[1]='x'", "int"]),
    ],
)
def test_wrong_type_names_key_value_and_expected_type(override, words):
    with pytest.raises(ConfigError) as e:
        apply_overrides(RunConfig(), [override])
    for word in words:
        assert word in str(e.value)


def test_wrong_type_in_yaml(tmp_path):
    (tmp_path / "bad.yaml").write_text("train:\n  steps: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"train.steps=\[1, 2\].*int"):
        load_yaml(tmp_path / "bad.yaml")


def test_bad_choice_lists_choices_and_suggests():
    with pytest.raises(ConfigError) as e:
        apply_overrides(RunConfig(), ["--sample.solver=heunn"])
    msg = str(e.value)
    assert "sample.solver='heunn'" in msg and "'midpoint'" in msg
    assert "Did you mean 'heun'?" in msg


def test_override_without_value():
    with pytest.raises(ConfigError, match="--train.steps=VALUE"):
        apply_overrides(RunConfig(), ["--train.steps"])


def test_nfe_must_divide_into_solver_steps():
    cfg = apply_overrides(RunConfig(), ["--sample.solver=rk4", "--sample.nfe=6"])
    with pytest.raises(ConfigError, match=r"sample.nfe=6.*\[4, 8, 12, 16, 20\]"):
        validate(cfg)


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="sample.guidance=2.0 needs a class-conditional run"):
        validate(apply_overrides(RunConfig(), ["--sample.guidance=2"]))
    with pytest.raises(ConfigError, match="cond_dropout"):
        validate(apply_overrides(RunConfig(), ["--method.cond_dropout=1.0"]))


def test_train_config_checks_its_own_ranges():
    # TrainConfig validates itself on construction; the CLI passes its ValueError on.
    with pytest.raises(ValueError, match="train.steps=0"):
        apply_overrides(RunConfig(), ["--train.steps=0"])


def test_every_choice_has_a_builder():
    """The Literal choices of the configs and the name tables of the recipes agree exactly."""
    hints = typing.get_type_hints(flow_matching.FlowMatchingConfig)
    assert set(typing.get_args(hints["path"])) == set(flow_matching.PATHS)
    assert set(typing.get_args(hints["time_sampler"])) == set(flow_matching.TIME_SAMPLERS)
    assert set(typing.get_args(hints["coupling"])) == set(flow_matching.COUPLINGS)
    assert set(TOY_DATASETS) == set(vectors.DATASETS)
    flow_solvers = ("sequential", "jacobi", "inverse", "snis", "smc")
    assert set(all_solvers()) == {*ODE_SOLVERS, "fewstep", *flow_solvers, "policy"}
    few_step = ("reflow", "meanflow", "freeflow", "twinflow", "flowturbo", "blockwise")
    flows = ("tarflow", "starflow", "zuko")
    tuning = ("boltzmann", "gfn", "finetune")
    assert set(RECIPES) == {"fm", "symmflow", "autoencoder", *few_step, *flows, *tuning}
    assert set(typing.get_args(typing.get_type_hints(gfn.GFNConfig)["loss"])) == set(gfn.LOSSES)
    for name, recipe in RECIPES.items():  # each row's recipe answers to its own name
        assert recipe.name == name and recipe.Config().name == name


def test_every_key_has_help():
    keys = config_keys()
    assert len(keys) > 50
    missing = [key.key for key in keys if not key.help]
    assert not missing, f"config keys without help text: {missing}"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ConfigError, match=f"sample.guidance='{value}' must be a finite number"):
        apply_overrides(RunConfig(), [f"--sample.guidance={value}"])


def test_eval_needs_two_samples():
    with pytest.raises(ConfigError, match="eval.n_samples=1 must be >= 2"):
        validate(apply_overrides(RunConfig(), ["--eval.n_samples=1"]))
