"""Exports resolve, and train/ imports only L0 (flowforge.typing, flowforge.utils) and itself."""

from __future__ import annotations

import ast
from pathlib import Path

import flowforge.train as train_pkg

SRC = Path(train_pkg.__file__).parent
ALLOWED = ("flowforge.train", "flowforge.typing", "flowforge.utils")


def test_all_names_resolve():
    assert len(train_pkg.__all__) == len(set(train_pkg.__all__))
    for name in train_pkg.__all__:
        assert getattr(train_pkg, name) is not None, name
    assert callable(train_pkg.distributed.print0)


def test_layering():
    bad = []
    for path in SRC.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] == "flowforge" and not n.startswith(ALLOWED)
            ]
    assert not bad, bad
