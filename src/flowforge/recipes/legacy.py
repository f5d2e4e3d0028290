"""Configs of the earlier layout: ``method.objective`` chose the method and a ``distill:``
section held the few-step settings. They are read into the recipe layout (``method.name`` and
the recipe's own keys), with a warning that shows the section rewritten.
"""

from __future__ import annotations

import dataclasses
import warnings

import yaml

from flowforge.recipes.config import ConfigError

__all__ = ["legacy_override", "upgrade_legacy"]

# the earlier layout: method.objective chose the method and a distill: section held the
# few-step settings; these keys were renamed on the way into the recipes' sections
_LEGACY_RENAMES = {"reflow_sampler": "sampler"}


def legacy_override(item: str) -> str:
    """``--method.objective=X`` -> ``--method.name=X``; ``--distill.k=v`` -> ``--method.k=v``."""
    text = item[2:] if item.startswith("--") else item
    key, sep, value = text.partition("=")
    if key == "method.objective":
        new = f"method.name{sep}{value}"
    elif key.startswith("distill."):
        leaf = key.split(".", 1)[1]
        new = f"method.{_LEGACY_RENAMES.get(leaf, leaf)}{sep}{value}"
    else:
        return item
    warnings.warn(
        f"--{key} is the earlier config layout; write --{new.partition('=')[0]} (a recipe's "
        "settings live in its method: section, chosen by method.name).",
        FutureWarning,
        stacklevel=3,
    )
    return "--" + new


def upgrade_legacy(data: dict, where: str = "the config") -> dict:
    """Convert a config mapping of the earlier layout (``method.objective`` and a ``distill:``
    section) to the recipe layout (``method.name`` and the recipe's keys), with a warning.

    Keys of the old sections that the recipe does not have are left out: the old layout held
    every method's settings at once, and each method read only its own.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     new = upgrade_legacy({"method": {"objective": "meanflow", "path": "vp"},
        ...                           "distill": {"flow_map_ratio": 0.5, "pairs": 10}})
        >>> new["method"]
        {'name': 'meanflow', 'flow_map_ratio': 0.5}
    """
    method = data.get("method")
    if "distill" not in data and not (isinstance(method, dict) and "objective" in method):
        return data
    from flowforge.recipes.table import config_class  # the table imports every recipe

    data = dict(data)
    method = dict(method) if isinstance(method, dict) else {}
    distill = data.pop("distill", None) or {}
    if not isinstance(distill, dict):
        raise ConfigError(f"{where}: distill must be a mapping of keys to values.")
    name = method.pop("objective", "fm")
    if not isinstance(name, str):
        raise ConfigError(f"{where}: method.objective={name!r} must be a method name.")
    known = {f.name for f in dataclasses.fields(config_class(name))}
    merged = {**method, **{_LEGACY_RENAMES.get(k, k): v for k, v in distill.items()}}
    data["method"] = {"name": name, **{k: v for k, v in merged.items() if k in known}}
    shown = yaml.safe_dump(
        {"method": data["method"]}, default_flow_style=True, sort_keys=False, width=10**6
    ).strip()
    warnings.warn(
        f"{where} uses the earlier config layout (method.objective and a distill: section); "
        f"it is read as {shown}. Rewrite its method: section that way (keys {name} does not "
        "read are left out; a run directory's config.yaml is rewritten when it trains again).",
        FutureWarning,
        stacklevel=3,
    )
    return data
