"""The shape of the package: imports flow one way, and the optional parts load only when used."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "webhook_receiver"

Graph = dict[str, set[str]]


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph() -> Graph:
    """Every import of every module, wherever it is: top level, ``TYPE_CHECKING`` and inside functions."""
    modules = module_names()
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                # "from . import x" imports the module x; "from .m import y" imports m.
                submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules]
                targets = submodules if len(submodules) == len(node.names) else [base, *submodules]
            else:
                continue
            graph[name].update(target for target in targets if target in modules and target != name)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back() -> None:
    graph = import_graph()
    assert "webhook_receiver.receiver" in graph["webhook_receiver.upstream.sync"]  # the graph sees imports
    assert cycles(graph) == []


def test_no_part_imports_itself_back() -> None:
    """The same between the package's parts: stores, dispatch, upstream, local, testing, cli and the core modules."""
    parts: Graph = {}
    for name, targets in import_graph().items():
        part = ".".join(name.split(".")[:2])
        parts.setdefault(part, set()).update(".".join(t.split(".")[:2]) for t in targets)
    for part, targets in parts.items():
        targets.discard(part)
    assert cycles(parts) == []


@pytest.mark.parametrize(
    "layer, below",
    [
        (
            "webhook_receiver.stores",
            ["dispatch", "delivery", "receiver", "config", "cli", "local", "upstream", "testing"],
        ),
        ("webhook_receiver.dispatch", ["delivery", "receiver", "config", "cli", "local", "upstream", "testing"]),
        ("webhook_receiver.receiver", ["cli", "local", "upstream", "testing"]),
        ("webhook_receiver.testing", ["cli", "local"]),
        ("webhook_receiver.local", ["cli"]),
        ("webhook_receiver.wire", ["receiver", "delivery", "testing", "local"]),
        (
            "webhook_receiver.instrumentation",
            ["stores", "dispatch", "delivery", "receiver", "config", "cli", "local", "upstream", "observability"],
        ),
        ("webhook_receiver.observability", ["dispatch", "delivery", "receiver", "config", "cli", "local", "upstream"]),
    ],
)
def test_lower_layers_do_not_know_higher_ones(layer: str, below: list[str]) -> None:
    for name, targets in import_graph().items():
        if name == layer or name.startswith(layer + "."):
            for target in targets:
                assert target.split(".")[1] not in below, f"{name} imports {target}"


def test_the_pytest_plugin_loads_nothing_until_a_fixture_is_used(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_plain.py").write_text(
        "import sys\n"
        "def test_plain():\n"
        "    loaded = sorted(m for m in sys.modules if m.startswith('webhook_receiver'))\n"
        "    assert loaded == ['webhook_receiver', 'webhook_receiver.__about__', 'webhook_receiver.local',\n"
        "                      'webhook_receiver.local.pytest_plugin'], loaded\n"
        "    assert 'flask' not in sys.modules\n"
    )
    (tmp_path / "test_fixture.py").write_text(
        "def test_fixture(webhook_event):\n    assert webhook_event('order.paid')['triggered_by'] == 'order.paid'\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_plain.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_fixture.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_old_module_names_still_import() -> None:
    from webhook_receiver import emulator, moltin, sync
    from webhook_receiver.local.emulator import Emulator
    from webhook_receiver.upstream import MoltinClient, sync_integration

    assert emulator.Emulator is Emulator and moltin.MoltinClient is MoltinClient
    assert sync.sync_integration is sync_integration
