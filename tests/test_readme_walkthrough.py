"""The "A local Moltin" walkthrough (docs/elasticpath.rst), run as written, so that it cannot drift from the code."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .processes import free_port

ROOT = Path(__file__).resolve().parent.parent


def walkthrough() -> list[str]:
    """The lines of the code block that follows the "The whole round trip" paragraph."""
    text = (ROOT / "docs" / "elasticpath.rst").read_text()
    block = text[text.index("The whole round trip") :]
    block = block[block.index("::\n\n") + 4 :]
    lines = []
    for line in block.splitlines():
        if not line.startswith("    "):
            break
        lines.append(line[4:])
    return lines


def test_the_local_moltin_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """Only the two ports change (free ones, so that the test never meets another server); the walkthrough
    runs in a copy of the repository's sample shop, so that its instance folder is the test's own."""
    lines = walkthrough()
    assert lines[0].startswith("webhook-receiver emulate") and lines[-2].endswith("webhooks logs")
    emulator_port, app_port = free_port(), free_port()
    script = "\n".join(lines).replace("8765", str(emulator_port)).replace("5000", str(app_port))
    shutil.copytree(
        ROOT / "sample_app", tmp_path / "sample_app", ignore=shutil.ignore_patterns("instance", "__pycache__")
    )
    bindir = str(Path(sys.executable).parent)  # the venv's webhook-receiver, flask and python
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]}
    env.pop("WEBHOOK_RECEIVER_SECRET_KEY", None)
    proc = subprocess.Popen(
        ["bash", "-c", "set -m\n" + script],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=90)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, output
    assert "created integration" in output, output
    assert '"deliveries":1' in output.replace(" ", ""), output
    logs = output[output.rindex("deliveries") :]
    assert "order.paid" in logs and "200" in logs, output
