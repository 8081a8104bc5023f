"""The layout's rules that code could quietly break (README "Layout", tools/README.md, cli/README.md):
no runtime package imports tools/, only the tool commands of the CLI do, and the CLI's modules stay
small. Read from the sources' import statements, without importing anything."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ("consensus", "p2p", "sandbox", "node", "bootstrap")
MAX_LINES = 500


def imported_modules(source: str, package: str) -> set[str]:
    """Every module `source` (a module of `package`) imports, as an absolute dotted name: relative
    imports resolved, imports inside functions included."""
    parts = package.split(".")
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(parts[:len(parts) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def imports_tools(path: Path) -> bool:
    package = ".".join(["distributeai", *path.relative_to(ROOT).parent.parts])
    return any(m == "distributeai.tools" or m.startswith("distributeai.tools.")
               for m in imported_modules(path.read_text(), package))


@pytest.mark.parametrize("package", RUNTIME)
def test_no_runtime_package_imports_tools(package):
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / package).rglob("*.py")) if imports_tools(p)]
    assert offenders == []


def test_only_the_tool_commands_of_the_cli_import_tools():
    importers = [p.name for p in sorted((ROOT / "cli").glob("*.py")) if imports_tools(p)]
    assert importers == ["tools.py"]


def test_the_import_reader_sees_relative_and_lazy_imports():
    # The checks above are only as good as imported_modules: it must see `from ..tools import x`
    # and an import inside a function body.
    source = "from . import wire\ndef f():\n    from ..tools import devnet\n    import distributeai.tools.fuzz\n"
    found = imported_modules(source, "distributeai.node")
    assert {"distributeai.node.wire", "distributeai.tools.devnet", "distributeai.tools.fuzz"} <= found


def test_cli_modules_stay_under_500_lines():
    long = {p.name: n for p in sorted((ROOT / "cli").glob("*.py")) if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
