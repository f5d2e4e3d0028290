import ast
import pathlib

import flowforge.data as package


def test_all_names_resolve():
    assert package.__all__ and all(hasattr(package, name) for name in package.__all__)


def test_imports_only_lower_layers_or_itself():
    # Layer L1: data may import utils/typing (L0) and itself, never a sibling such as metrics.
    allowed = ("flowforge.data", "flowforge.utils", "flowforge.typing")
    for path in pathlib.Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flowforge"):
                assert node.module.startswith(allowed), (path.name, node.module)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("flowforge"):
                        assert alias.name.startswith(allowed), (path.name, alias.name)
