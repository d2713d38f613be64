"""The matcher core imports only the standard library, numpy and our own modules."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import matcher.core

pytestmark = pytest.mark.unit

CORE = Path(matcher.core.__file__).parent
ALLOWED_THIRD_PARTY = {"numpy"}
OWN = {"matcher", "mosaic"}
OWN_ALLOWED = ("matcher.core", "mosaic.errors")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", [pytest.param(p, id=p.name) for p in sorted(CORE.glob("*.py"))])
def test_core_module_imports_only_stdlib_numpy_and_own_code(path: Path) -> None:
    for name in imported_modules(path):
        top = name.split(".")[0]
        if top in OWN:
            assert name.startswith(OWN_ALLOWED), f"{path.name} imports {name}"
        else:
            assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, (
                f"{path.name} imports {name}"
            )


def test_core_has_no_clock_or_randomness() -> None:
    for path in CORE.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        for banned in ("import time", "datetime", "import random", "perf_counter"):
            assert banned not in text, f"{path.name} uses {banned}"
