"""TrainConfig: defaults, help text on every field, errors naming field, value and fix."""

from __future__ import annotations

from dataclasses import asdict, fields

import pytest

from flowforge.train.config import TrainConfig


def test_defaults_and_help_text():
    cfg = TrainConfig()
    assert asdict(cfg)["batch_size"] == 512 and cfg.schedule == "cosine"
    for f in fields(TrainConfig):
        assert len(f.metadata.get("help", "")) > 10, f.name


@pytest.mark.parametrize(
    "field, value, error, message",
    [
        ("steps", 0, ValueError, r"train\.steps=0 is invalid.*>= 1"),
        ("batch_size", -4, ValueError, r"train\.batch_size=-4 is invalid"),
        ("grad_accum", 0, ValueError, r"train\.grad_accum=0 .*use 1 for no accumulation"),
        # Checked here, before the CLI creates a run directory (not only inside train()).
        ("grad_accum", 3, ValueError, r"batch_size=512 is not divisible by train\.grad_accum=3"),
        ("steps", 2.5, TypeError, r"train\.steps=2\.5 must be an int"),
        ("seed", True, TypeError, r"train\.seed=True must be an int"),
        ("lr", 0.0, ValueError, r"train\.lr=0\.0 is out of range; use a positive"),
        ("lr", float("nan"), ValueError, r"train\.lr=nan is out of range"),
        ("beta2", 1.0, ValueError, r"train\.beta2=1\.0 is out of range; use a value in \[0, 1\)"),
        ("min_lr_ratio", 1.5, ValueError, r"train\.min_lr_ratio=1\.5 is out of range"),
        ("ema_decay", -0.1, ValueError, r"train\.ema_decay=-0\.1 is out of range"),
        ("grad_clip", -1.0, ValueError, r"train\.grad_clip=-1\.0 is out of range"),
        ("weight_decay", "0.1", TypeError, r"train\.weight_decay='0\.1' must be a number"),
        ("schedule", "cosin", ValueError, r"train\.schedule='cosin' is not valid; choose one of"),
        ("precision", "fp16", ValueError, r"train\.precision='fp16' is not valid"),
        ("compile", "yes", TypeError, r"train\.compile='yes' must be true or false"),
        ("device", "gpu0", ValueError, r"train\.device='gpu0' is not a torch device"),
        ("log_every", 0, ValueError, r"train\.log_every=0 is invalid"),
        ("eval_every", -1, ValueError, r"train\.eval_every=-1 is invalid.*use 0 to disable"),
    ],
)
def test_bad_values_name_field_value_and_fix(field, value, error, message):
    with pytest.raises(error, match=message):
        TrainConfig(**{field: value})


def test_a_warmup_longer_than_the_run_is_shortened_with_a_warning():
    """`flowforge train toy2d_fm --train.steps=5` (preset warm-up 100) trains, warming up for a
    tenth of the run; the learning rate follows the shortened warm-up."""
    import torch

    from flowforge.train.loop import lr_factor, train

    config = TrainConfig(steps=30, warmup_steps=100, progress=False, batch_size=8)
    assert config.warmup == 3
    assert [lr_factor(s, config) for s in range(3)] == [1 / 3, 2 / 3, 1.0]
    net = torch.nn.Linear(2, 2)
    data = lambda n, g: (torch.randn(n, 2, generator=g),)  # noqa: E731
    mse = lambda m, x, c, g: (m(x) - x).square().mean(1)  # noqa: E731
    with pytest.warns(UserWarning, match="warmup_steps=100 exceeds train.steps=30; warming up"):
        assert train(net, mse, data, config).step == 30
