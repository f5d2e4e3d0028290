"""The command line: config dataclasses, presets, name -> class tables, subcommands and plots."""

from flowforge.cli.config import (
    ConfigError,
    DataConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
)
from flowforge.cli.config_io import (
    apply_overrides,
    list_presets,
    load_yaml,
    save_yaml,
)
from flowforge.cli.main import main

__all__ = [
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "MethodConfig",
    "ModelConfig",
    "RunConfig",
    "SampleConfig",
    "apply_overrides",
    "list_presets",
    "load_yaml",
    "main",
    "save_yaml",
]
