"""edge.http is sans-IO: no module imports networking, event loops, clocks or randomness."""
from __future__ import annotations

import ast
from pathlib import Path

import edge.http

FORBIDDEN = {"asyncio", "socket", "time", "random", "datetime", "secrets", "selectors", "ssl",
             "uvloop", "os", "threading", "subprocess"}
PACKAGE = Path(edge.http.__file__).parent


def imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "__import__":
            names.add("__import__")
    return names


def test_the_package_has_modules() -> None:
    names = {p.name for p in PACKAGE.glob("*.py")}
    assert {"request.py", "ranges.py", "conditional.py", "response.py", "errors.py",
            "limits.py"} <= names


def test_no_io_clock_or_randomness_imports() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        roots = {name.split(".")[0] for name in imported_modules(tree)}
        assert not roots & (FORBIDDEN | {"__import__"}), f"{path.name} imports {roots & FORBIDDEN}"


def test_no_clock_calls() -> None:
    clock_calls = {"now", "utcnow", "today", "monotonic", "perf_counter", "time_ns", "urandom"}
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in clock_calls, f"{path.name}:{node.lineno} .{node.attr}"


def test_request_module_documents_its_state_machine() -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / "request.py").read_text()))
    assert doc is not None and "Theory of operation" in doc
