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
    """The package's __init__ holds imports, __all__ and the lazy re-export hooks (PEP 562), nothing else."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            assert node.name in ("__getattr__", "__dir__"), node.name
        elif isinstance(node, ast.If):
            assert ast.unparse(node.test) == "TYPE_CHECKING"
        elif isinstance(node, ast.Expr):
            assert isinstance(node.value, ast.Constant)  # the docstring
        else:
            assert isinstance(node, (ast.Import, ast.ImportFrom, ast.Assign)), ast.dump(node)
    for name in webhook_receiver.__all__:
        assert hasattr(webhook_receiver, name)
    assert sorted(dir(webhook_receiver)) == sorted(webhook_receiver.__all__)


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
    paths = ["webhook_receiver", "tests", "bench", "sample_app"]
    result = subprocess.run([sys.executable, "-m", "ruff", "check", *paths], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_tree_is_formatted() -> None:
    """ruff format, configured in pyproject.toml; run ``ruff format`` to fix."""
    paths = ["webhook_receiver", "tests", "bench", "sample_app"]
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *paths], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_renders_and_ci_runs_its_test_command() -> None:
    import docutils.core

    readme = (ROOT / "README.rst").read_text()
    docutils.core.publish_doctree(readme, settings_overrides={"report_level": 2, "halt_level": 2})
    quickstart = readme[readme.index("Quickstart\n") : readme.index("Usage\n")]
    commands = [line.strip() for line in quickstart.splitlines() if line.startswith("       python3 -m venv")]
    assert len(commands) == 2 and commands[0].endswith("python -m sample_app")
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_one_exception_hierarchy() -> None:
    """Every exception the package defines lives in errors.py, derives from the root class and is exported."""
    import inspect
    import pkgutil

    import webhook_receiver
    from webhook_receiver import errors

    defined = {name for name, obj in vars(errors).items() if inspect.isclass(obj) and obj.__module__ == errors.__name__}
    for name in defined:
        obj = getattr(errors, name)
        assert issubclass(obj, (webhook_receiver.WebhookReceiverError, Warning)), name
        assert name in webhook_receiver.__all__, f"{name} is not exported"
    for module in pkgutil.walk_packages(webhook_receiver.__path__, "webhook_receiver."):
        if module.name.endswith(("pytest_plugin", ".errors")) or ".emulator" in module.name:
            continue  # the emulator's private refusal and the pytest plugin are not public exceptions
        imported = __import__(module.name, fromlist=["_"])
        for name, obj in vars(imported).items():
            if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == module.name:
                raise AssertionError(f"{module.name}.{name} is an exception outside errors.py")


def test_no_file_cites_anything_outside_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    for name in tracked:
        path = ROOT / name
        if path.suffix not in (".py", ".rst", ".cfg", ".toml", ".md", ".txt") or name == "tests/test_package.py":
            continue
        text = path.read_text(errors="replace")
        for outside in ("DESIGN.md", "../shared", "shared/upstream"):
            assert outside not in text, f"{name} cites {outside}"


def test_the_sdist_ships_what_its_tests_need_and_they_collect(tmp_path: Path) -> None:
    """python -m build --sdist, unpacked: conftest, data, JS check, sample app, docs; pytest collects every test.

    ``--no-isolation`` builds with this environment's setuptools, so that the
    test needs no network.
    """
    import shutil
    import tarfile

    # Build from a copy of the files git knows (tracked, or new and not ignored): a clean checkout, with no
    # egg-info left by an earlier build (setuptools would take its file list from there).
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    source = tmp_path / "source"
    for name in listed:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--skip-dependency-check", "--outdir", str(dist)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (archive,) = dist.glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (top,) = (tmp_path / "unpacked").iterdir()
    shipped = {str(path.relative_to(top)) for path in top.rglob("*") if path.is_file()}
    tracked = {name for name in listed if (ROOT / name).is_file()}
    for needed in (
        "tests/conftest.py",
        "tests/data/epcc-observable-events.txt",
        "tests/js/package.json",
        "tests/js/sdk_check.js",
        "sample_app/app.py",
        "docs/conf.py",
        "docs/index.rst",
        "CHANGES.rst",
        "LICENSE.rst",
        "webhook_receiver/py.typed",
    ):
        assert needed in shipped, needed
    missing = sorted(name for name in tracked - shipped if not name.startswith(".gitignore"))
    assert missing == [], f"tracked files the sdist leaves out: {missing}"
    assert not [name for name in shipped if "__pycache__" in name or name.endswith((".pyc", ".sqlite3"))]
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=top,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    summary = collected.stdout.strip().splitlines()[-1]
    assert summary.split()[1:3] == ["tests", "collected"] and int(summary.split()[0]) > 500, summary


def test_metadata_has_no_deprecated_license_classifier() -> None:
    """``license = BSD-3-Clause`` (an SPDX expression) says it; the classifier beside it is deprecated."""
    import configparser

    metadata = configparser.ConfigParser()
    metadata.read(ROOT / "setup.cfg")
    assert metadata["metadata"]["license"] == "BSD-3-Clause"
    assert "License ::" not in metadata["metadata"]["classifiers"]
    assert "build" in metadata["options.extras_require"]["dev"]
