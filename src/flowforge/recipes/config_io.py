"""Reading and writing run configs: typed conversion, dotted overrides, YAML files, presets.

Presets are YAML files holding only the keys that differ from the defaults; ``--train.steps=2000``
style overrides are checked against the field types (``int``, ``float``, ``bool``, ``str``,
``Literal``, ``list[...]``, ``X | None``). Unknown keys, wrong types and invalid choices raise
``ConfigError`` (a ``ValueError``) naming the key, the value and the valid options.

The ``method:`` section is typed by its recipe: ``method.name`` picks the recipe's dataclass
(``flowforge.recipes.table``), so ``--method.flow_map_ratio=0.3`` is checked against MeanFlow's
keys in a MeanFlow run. Changing ``method.name`` keeps the keys the two recipes share.
Configs of the earlier layout (``method.objective`` and a ``distill:`` section) are converted
with a warning that says how to rewrite them.

Example:
    >>> cfg = apply_overrides(RunConfig(), ["--train.steps=100", "--sample.solver=euler"])
    >>> cfg.train.steps, cfg.sample.solver
    (100, 'euler')
    >>> from_dict(to_dict(cfg)) == cfg
    True
    >>> apply_overrides(cfg, ["--method.name=meanflow"]).method.flow_map_ratio
    0.25
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from flowforge.recipes.config import ConfigError, MethodConfig, RunConfig
from flowforge.recipes.legacy import legacy_override, upgrade_legacy
from flowforge.recipes.presets import list_presets, preset_path

__all__ = [
    "ConfigKey",
    "apply_overrides",
    "config_keys",
    "from_dict",
    "to_dict",
    "load_yaml",
    "save_yaml",
    "list_presets",
    "preset_path",
]


# ---------------------------------------------------------------------------------------------
# Typed conversion


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner)} (e.g. [1,2,4] or 1,2,4)"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null", "~", ""}


def _choose(value: Any, choices: list[str], key: str) -> Any:
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(choices)}.{hint}")


def _coerce(value: Any, tp: Any, key: str, choices: Any = None) -> Any:
    """Convert ``value`` (from YAML or a command line) to ``tp``, or raise ``ConfigError``.

    ``choices`` (a field's ``metadata["choices"]``, a function returning the valid names) makes
    a ``str`` or ``list[str]`` field behave like a ``Literal`` whose names are known at run time
    (the recipes and their samplers).
    """
    if choices is not None:
        valid = list(choices())
        out = _coerce(value, tp, key)
        if isinstance(out, list):
            return [_choose(v, valid, f"{key}[{i}]") for i, v in enumerate(out)]
        return _choose(out, valid, key)

    def fail(extra: str = "") -> typing.NoReturn:
        raise ConfigError(f"{key}={value!r} has the wrong type; expected {_type_name(tp)}.{extra}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.strip().lower() in _NONE)
        ):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        fail()
    if origin is Literal:
        return _choose(value, list(typing.get_args(tp)), key)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1]
            value = [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            fail()
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        fail(" Use true or false.")
    if tp is int:
        if isinstance(value, bool):
            fail()
        if isinstance(value, int):
            return value
        try:
            number = float(value) if isinstance(value, (str, float)) else None
        except ValueError:
            number = None
        if number is not None and number.is_integer():
            return int(number)
        fail(" Use a whole number such as 100.")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            fail(" Use a number such as 0.001 or 1e-3.")
        if not math.isfinite(number):
            raise ConfigError(f"{key}={value!r} must be a finite number (not nan or inf).")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        fail(" Quote it in YAML.")
    raise AssertionError(f"config field {key} has unsupported type {tp!r}")  # a bug in a config


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _unknown(key: str, valid: list[str], prefix: str, note: str = "") -> ConfigError:
    full = f"{prefix}{key}"
    valid_full = [f"{prefix}{v}" for v in valid]
    close = difflib.get_close_matches(full, valid_full, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigError(
        f"unknown config key {full!r}.{hint}{note} Valid keys: {', '.join(valid_full)}."
    )


def _method_note(config: MethodConfig, key: str) -> str:
    """Where an unknown method key belongs: ' It is a key of method.name=meanflow/freeflow.'"""
    from flowforge.recipes.table import RECIPES

    owners = [
        n for n, r in RECIPES.items() if key in {f.name for f in dataclasses.fields(r.Config)}
    ]
    mine = f" (keys of method.name={config.name})"
    return mine + (f"; {key!r} is a key of method.name={'/'.join(owners)}." if owners else ".")


def _method_class(value: Any, prefix: str) -> type:
    """The recipe dataclass of a ``method:`` mapping, chosen by its ``name`` (default fm)."""
    from flowforge.recipes.table import config_class

    name = value.get("name", "fm") if isinstance(value, dict) else "fm"
    return config_class(_coerce(name, str, f"{prefix}name", _name_choices()))


def _name_choices():
    return dataclasses.fields(MethodConfig)[0].metadata["choices"]


def from_dict(data: dict | None, cls: type = RunConfig, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from a nested dict (missing keys keep their defaults).

    A ``method`` mapping is read into the dataclass of the recipe its ``name`` picks.

    Raises:
        ConfigError: an unknown key (with the closest valid one) or a value of the wrong type.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(
            f"{prefix.rstrip('.') or 'the config'} must be a mapping of keys to values, got "
            f"{data!r}."
        )
    fields = _fields(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            note = _method_note(cls(), str(key)) if issubclass(cls, MethodConfig) else ""
            raise _unknown(str(key), list(fields), prefix, note)
        f, tp = fields[key]
        if dataclasses.is_dataclass(tp):
            section = _method_class(value, f"{prefix}{key}.") if tp is MethodConfig else tp
            kwargs[key] = from_dict(value, section, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{prefix}{key}", f.metadata.get("choices"))
    return cls(**kwargs)


def to_dict(config: Any) -> dict:
    """The nested plain-dict form of a config (what ``config.yaml`` holds)."""
    return dataclasses.asdict(config)


class ConfigKey(typing.NamedTuple):
    """One dotted key of the run config, for ``--help`` and listings."""

    key: str
    type: Any
    default: Any
    help: str
    choices: Any = None  # a function returning the valid names, for str fields


def config_keys(cls: type = RunConfig, prefix: str = "") -> list[ConfigKey]:
    """Every dotted key with its type, default, help and choices.

    The ``method`` keys are those of every recipe, each listed once; the help of a key that
    not every recipe has names the recipes it belongs to (``[meanflow, freeflow] ...``).
    """
    out = []
    instance = cls()
    for name, (f, tp) in _fields(cls).items():
        if tp is MethodConfig:
            out += _method_keys(f"{prefix}{name}.")
        elif dataclasses.is_dataclass(tp):
            out += config_keys(tp, f"{prefix}{name}.")
        else:
            help_text = f.metadata.get("help", "")
            out.append(
                ConfigKey(
                    f"{prefix}{name}",
                    tp,
                    getattr(instance, name),
                    help_text,
                    f.metadata.get("choices"),
                )
            )
    return out


def _method_keys(prefix: str) -> list[ConfigKey]:
    from flowforge.recipes.table import RECIPES

    owners: dict[str, list[str]] = {}
    first: dict[str, ConfigKey] = {}
    for recipe_name, recipe in RECIPES.items():
        defaults = recipe.Config()
        for key, (f, tp) in _fields(recipe.Config).items():
            owners.setdefault(key, []).append(recipe_name)
            first.setdefault(
                key,
                ConfigKey(
                    f"{prefix}{key}",
                    tp,
                    getattr(defaults, key),
                    f.metadata.get("help", ""),
                    f.metadata.get("choices"),
                ),
            )
    out = []
    for key, names in owners.items():
        item = first[key]
        if key == "name":
            item = item._replace(
                default="fm",
                help="the recipe: what to train (`flowforge recipes`)",
                choices=_name_choices(),
            )
        elif len(names) < len(RECIPES):
            item = item._replace(help=f"[{', '.join(names)}] {item.help}")
        out.append(item)
    return out


def _set(config: Any, key: str, value: str) -> None:
    """Set the dotted ``key`` of ``config`` to ``value`` (a string), converted to its type."""
    *parents, leaf = key.split(".")
    target, prefix = config, ""
    for part in parents:
        fields = _fields(type(target))
        if part not in fields:
            sections = [k for k, (_, t) in fields.items() if dataclasses.is_dataclass(t)]
            raise _unknown(part, sections, prefix)
        if not dataclasses.is_dataclass(fields[part][1]):
            raise ConfigError(
                f"{prefix}{part} is a value, not a section; write --{prefix}{part}=VALUE."
            )
        target, prefix = getattr(target, part), f"{prefix}{part}."
    fields = _fields(type(target))
    if leaf not in fields:
        note = _method_note(target, leaf) if isinstance(target, MethodConfig) else ""
        raise _unknown(leaf, list(fields), prefix, note)
    f, tp = fields[leaf]
    if dataclasses.is_dataclass(tp):
        raise ConfigError(
            f"{prefix}{leaf} is a section; set one of its keys, e.g. "
            f"--{prefix}{leaf}.{dataclasses.fields(tp)[0].name}=VALUE."
        )
    setattr(target, leaf, _coerce(value, tp, f"{prefix}{leaf}", f.metadata.get("choices")))


def _switch_method(config: RunConfig, name: str) -> None:
    """``method.name=name``: the new recipe's section, keeping the keys both recipes have."""
    from flowforge.recipes.table import config_class

    cls = config_class(_coerce(name, str, "method.name", _name_choices()))
    if type(config.method) is cls:
        return
    old = to_dict(config.method)
    shared = {f.name: old[f.name] for f in dataclasses.fields(cls) if f.name in old}
    shared.pop("name")
    config.method = from_dict(shared, cls, "method.")


def apply_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply ``--section.key=value`` (or ``section.key=value``) overrides, type-checked.

    ``method.name`` is applied first, so ``--method.name=meanflow --method.flow_map_ratio=0.5``
    works in any order.

    Raises:
        ConfigError: malformed override, unknown key or wrong type.
    """
    config = from_dict(to_dict(config))  # a copy
    parsed = []
    for item in overrides:
        item = legacy_override(item)
        text = item[2:] if item.startswith("--") else item
        if "=" not in text:
            raise ConfigError(
                f"override {item!r} has no value; write it as --{text}=VALUE (e.g. "
                "--train.steps=2000)."
            )
        parsed.append(tuple(text.split("=", 1)))
    for key, value in parsed:
        if key == "method.name":
            _switch_method(config, value)
    for key, value in parsed:
        if key != "method.name":
            _set(config, key, value)
    return from_dict(to_dict(config))  # rebuilt, so each section's own checks run


# ---------------------------------------------------------------------------------------------
# Files


def load_yaml(path: str | Path) -> RunConfig:
    """Read a preset or a run's ``config.yaml``; the run name defaults to the file's stem.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: unreadable YAML, unknown keys or wrong types.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections (data:, train: ...).")
    data = upgrade_legacy(data, where=str(path))
    data.setdefault("name", path.stem if path.name != "config.yaml" else path.parent.name)
    return from_dict(data)


def save_yaml(config: RunConfig, path: str | Path) -> None:
    """Write ``config`` as YAML (reloads with ``load_yaml`` to an equal ``RunConfig``)."""
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
