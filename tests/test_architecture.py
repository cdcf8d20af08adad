"""The code's architecture, read from the source (nothing is imported): routing knows nothing of
billing, no module imports itself back, the product holds no test code, and long modules say why.

Every import counts, at module level or inside a function, except those only a type checker runs
(`if TYPE_CHECKING:`): a cycle dodged by a function-level import is still a cycle.
"""

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

PACKAGES = ("routing", "billing", "routerweb")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _parse(path: Path) -> ast.Module:
    """`ast.parse`, again when CPython 3.11's AST conversion trips over another thread's (gh-106905:
    "AST constructor recursion depth mismatch", seen with live servers running in threads)."""
    for attempt in range(5):
        try:
            return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SystemError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (resolved to the longest known module name)."""
    tree = _parse(path)
    type_checking = {
        id(node)
        for guard in ast.walk(tree)
        if isinstance(guard, ast.If) and "TYPE_CHECKING" in ast.unparse(guard.test)
        for stmt in guard.body
        for node in ast.walk(stmt)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def test_routing_imports_nothing_from_billing():
    offenders = {
        (module, target)
        for module, targets in _graph().items()
        if module.startswith(("routing", "routerweb"))
        for target in targets
        if target.startswith("billing")
    }
    assert not offenders, sorted(offenders)


def test_there_are_no_import_cycles():
    graph = _graph()
    cycles, state = [], {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_no_module_is_over_400_lines_without_a_reason_at_its_top():
    """A long module says why at its top, in a line that starts with 'Long:'."""
    long_ones = []
    for path in _modules().values():
        lines = path.read_text().splitlines()
        if len(lines) > 400 and not any(line.startswith("Long:") for line in lines[:30]):
            long_ones.append(f"{path.relative_to(REPO_ROOT)}: {len(lines)} lines")
    assert not long_ones, long_ones


def test_the_product_never_imports_test_code():
    """routerweb/, routing/ and billing/ import neither ``tests`` nor the test support package ``testkit``,
    not even by a dotted path in a string."""
    product = PACKAGES
    forbidden = ("tests", "testkit")
    offenders = []
    for package in product:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            tree = _parse(path)
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
