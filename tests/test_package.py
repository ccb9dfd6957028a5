"""The package's house rules: typed, re-exports only in __init__, extras stay optional."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import webhook_receiver

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "webhook_receiver"


def test_ships_py_typed() -> None:
    assert (PACKAGE / "py.typed").exists()


def test_init_only_reexports() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        assert isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign, ast.Expr)), ast.dump(node)
        if isinstance(node, ast.Expr):
            assert isinstance(node.value, ast.Constant)  # the docstring
    for name in webhook_receiver.__all__:
        assert hasattr(webhook_receiver, name)


def test_public_names_have_docstrings() -> None:
    for name in webhook_receiver.__all__:
        obj = getattr(webhook_receiver, name)
        if not isinstance(obj, str):
            assert obj.__doc__, name


def test_mypy_strict_passes() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
