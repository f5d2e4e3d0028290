"""Package structure: the import layers of STYLE.md section 2 and the public names."""

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import flowforge

SRC = Path(flowforge.__file__).parent
LAYER = {
    "protocols": 0, "utils": 0,
    "paths": 1, "models": 1, "data": 1, "metrics": 1,
    "losses": 2, "solvers": 2, "guidance": 2, "nf": 2, "latent": 2, "gfn": 2, "discrete": 2,
    "distill": 3, "finetune": 3, "inverse": 3, "science": 3,
    "train": 4,
    "recipes": 5,
    "cli": 6,
}  # fmt: skip
EXEMPT = {"__init__", "__main__", "configs"}


def _flowforge_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [
            (node.lineno, n) for n in names if n == "flowforge" or n.startswith("flowforge.")
        ]
    return found


def _modules():
    for path in sorted(SRC.rglob("*.py")):
        top = path.relative_to(SRC).parts[0].removesuffix(".py")
        if top not in EXEMPT:
            yield path, top


def test_every_module_belongs_to_a_layer():
    unknown = {top for _, top in _modules() if top not in LAYER}
    assert not unknown, f"add these subpackages to a layer in STYLE.md and this test: {unknown}"


def test_imports_respect_layers():
    bad = []
    for path, top in _modules():
        for line, name in _flowforge_imports(path):
            parts = name.split(".")
            if len(parts) < 2:
                bad.append(f"{path.relative_to(SRC)}:{line} imports the top-level package")
                continue
            other = parts[1]
            if other == top:
                continue
            if top == "train":
                ok = LAYER.get(other, 99) == 0
            else:
                ok = LAYER.get(other, 99) < LAYER[top]
            if not ok:
                bad.append(f"{path.relative_to(SRC)}:{line} ({top}, L{LAYER[top]}) imports {name}")
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_only_cli_builds_from_strings():
    bad = []
    for path, top in _modules():
        if top == "cli":
            continue
        text = path.read_text()
        for needle in ("importlib", "globals()", "getattr(sys.modules"):
            if needle in text:
                bad.append(f"{path.relative_to(SRC)} uses {needle}")
    assert not bad, bad


def _packages():
    yield "flowforge"
    for info in pkgutil.walk_packages([str(SRC)], prefix="flowforge."):
        if info.ispkg:
            yield info.name


@pytest.mark.parametrize("name", sorted(set(_packages())))
def test_all_names_resolve(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists undefined names {missing}"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
