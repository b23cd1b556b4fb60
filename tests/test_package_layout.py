"""The package's shape (helpers/__init__.py): one subpackage per paper that never imports the other paper's,
``common`` that imports neither, modules of a readable size, and subpackage exports that resolve."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import helpers

PACKAGE = Path(helpers.__file__).parent
SUBPACKAGES = ("common", "safeedit", "detox", "llm2llm")
#: what each subpackage may import from helpers (besides itself); helpers.cli only lazily, for run_guarded
ALLOWED = {
    "common": {"common", "cli"},
    "safeedit": {"common", "safeedit", "cli"},
    "detox": {"common", "safeedit", "detox", "cli"},
    "llm2llm": {"common", "llm2llm", "cli"},
}
MAX_LINES = 450


def _helpers_imports(source: str, package: tuple[str, ...]) -> set[str]:
    """The top-level helpers names (``common``, ``detox``, …) that ``source``, a module of ``helpers.<package>``,
    imports, nested imports included."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[:len(package) - node.level + 1])
                parts = base + (node.module.split(".") if node.module else [])
                names = parts[:1] or [alias.name for alias in node.names]
            elif node.module and node.module.split(".")[0] == "helpers":
                parts = node.module.split(".")[1:]
                names = parts[:1] or [alias.name for alias in node.names]
            else:
                continue
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("helpers.") and len(a.name.split(".")) > 1)
    return found


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_papers_do_not_import_each_other(subpackage):
    wrong = {}
    for path in sorted((PACKAGE / subpackage).glob("*.py")):
        bad = _helpers_imports(path.read_text(encoding="utf-8"), (subpackage,)) - ALLOWED[subpackage]
        if bad:
            wrong[path.name] = sorted(bad)
    assert not wrong, f"helpers.{subpackage} imports {wrong}"


def test_the_import_scan_sees_a_violation():
    """The scan above catches the other paper imported relatively, absolutely or lazily (so it can fail)."""
    source = ("from ..safeedit.judge import get_judge\nfrom . import loop\nimport helpers.detox.dinm\n\n"
              "def f():\n    from .. import common\n")
    assert _helpers_imports(source, ("llm2llm",)) == {"safeedit", "llm2llm", "detox", "common"}


def test_no_flat_modules_are_left():
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py", "cli.py", "dinm.py"], flat  # dinm.py: the deprecated entry point
    assert "def " not in (PACKAGE / "dinm.py").read_text(encoding="utf-8")


def test_modules_stay_readable():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_subpackage_exports_resolve(subpackage):
    module = importlib.import_module(f"helpers.{subpackage}")
    assert module.__doc__ and module.__all__
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, missing
