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


def test_the_linter_passes() -> None:
    """ruff, configured in pyproject.toml: pycodestyle, pyflakes, import order, bugbear."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "webhook_receiver", "tests", "bench", "sample_app"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_renders_and_ci_runs_its_test_command() -> None:
    import docutils.core

    readme = (ROOT / "README.rst").read_text()
    docutils.core.publish_doctree(readme, settings_overrides={"report_level": 2, "halt_level": 2})
    quickstart = readme[readme.index("Quickstart\n"):readme.index("Usage\n")]
    commands = [line.strip() for line in quickstart.splitlines() if line.startswith("       python3 -m venv")]
    assert len(commands) == 2 and commands[0].endswith("python -m sample_app")
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()
