"""The layout's rules that code could quietly break (README "Layout", tools/README.md, cli/README.md):
each runtime package imports only the packages its README allows, none imports tools/ (only the
CLI's tool commands do), and no module outside tools/ is over 500 lines. Read from the sources'
import statements, without importing anything."""

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


# What each package may import of the project (README "Layout"; each package's README says the same).
MAY_IMPORT = {
    "consensus": set(),
    "sandbox": set(),
    "p2p": {"consensus"},
    "node": {"consensus", "p2p", "sandbox"},
    "bootstrap": {"consensus", "p2p"},
}


def project_packages_imported(path: Path) -> set[str]:
    """The project's top-level packages (other than its own) that the module at `path` imports."""
    own = path.relative_to(ROOT).parts[0]
    package = ".".join(["distributeai", *path.relative_to(ROOT).parent.parts])
    found = {m.split(".")[1] for m in imported_modules(path.read_text(), package)
             if m.startswith("distributeai.") and m.count(".") >= 1}
    return found - {own}


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_runtime_packages_import_only_what_their_readme_allows(package):
    offenders = {str(p.relative_to(ROOT)): sorted(extra) for p in sorted((ROOT / package).rglob("*.py"))
                 if (extra := project_packages_imported(p) - MAY_IMPORT[package])}
    assert offenders == {}


def test_no_module_outside_tools_is_over_500_lines():
    modules = [p for p in sorted(ROOT.rglob("*.py"))
               if not {"tools", ".venv", "build", ".git"} & set(p.relative_to(ROOT).parts)
               and not p.relative_to(ROOT).parts[0].endswith(".egg-info")]
    long = {str(p.relative_to(ROOT)): n for p in modules if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert modules and long == {}
