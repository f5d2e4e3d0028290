"""The bundled presets: YAML files in ``flowforge/configs`` (package data), one per task.

Light on purpose (no torch): ``flowforge presets`` lists them at once.

Example:
    >>> "toy2d_fm" in list_presets() and preset_path("toy2d_fm").suffix == ".yaml"
    True
"""

from __future__ import annotations

import difflib
from pathlib import Path

from flowforge.recipes.errors import ConfigError

__all__ = ["list_presets", "preset_path", "presets_dir"]


def presets_dir() -> Path:
    """The folder of the preset YAML files."""
    return Path(__file__).resolve().parents[1] / "configs"  # installed as package data


def list_presets() -> dict[str, str]:
    """Preset name -> one-line description (the first comment line of its YAML file)."""
    out = {}
    for path in sorted(presets_dir().glob("*.yaml")):
        first = next((line for line in path.read_text().splitlines() if line.startswith("#")), "#")
        out[path.stem] = first.lstrip("#").strip()
    return out


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name``; ``ConfigError`` naming the presets if there is none."""
    path = presets_dir() / f"{name}.yaml"
    if not path.is_file():
        names = list(list_presets())
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{name!r} is neither a preset, a .yaml file nor a run directory.{hint} "
            f"Presets: {', '.join(names)}."
        )
    return path
