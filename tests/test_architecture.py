"""The house's rooms (issue 25): imports point one way. The pure rules in ``safety/`` import nothing of
ours outside ``safety/`` (the command-line package, ``safety/cli/``, is the one place that wires
everything); the write side (``events/``) never imports the read side or the board; the read side
(``projections/``) never imports the board; nothing but the command line imports the command line.
Function-level imports count as imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "safety": ("events", "projections", "dashboard", "safety.cli"),
    "events": ("projections", "dashboard", "safety.cli"),
    "projections": ("dashboard", "safety.cli"),
    "dashboard": ("safety.cli",),
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(package: str) -> list[Path]:
    found = sorted((ROOT / package).rglob("*.py"))
    return [p for p in found if not (package == "safety" and "cli" in p.relative_to(ROOT / package).parts)]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str):
    wrong = []
    for path in modules(package):
        for name in imports_of(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[package]):
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_the_checked_packages_are_not_empty():
    assert len(modules("safety")) > 10 and not any("cli" in p.parts for p in modules("safety"))
    assert (ROOT / "safety" / "cli" / "wiring.py").is_file()
