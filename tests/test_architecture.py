"""Rules about which code may import which, read from the source (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_product_never_imports_test_code():
    """routerweb/, routing/ and billing/ import neither ``tests`` nor the test support package ``testkit``,
    not even by a dotted path in a string."""
    product = ("routerweb", "routing", "billing")
    forbidden = ("tests", "testkit")
    offenders = []
    for package in product:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value:
                    names = [node.value]  # a dotted path for import_string / import_module
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in forbidden and name.replace(".", "").replace("_", "").isalnum():
                        offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} imports {name}")
    assert offenders == []
