"""The documentation site builds, warnings as errors, and holds what the code says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "docs", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    cli = (out / "cli.html").read_text()
    for command in ("sync", "listen", "replay", "prune", "tunnel", "emulate"):
        assert f"{command}</h" in cli or f">{command}<" in cli, f"the CLI reference lacks {command}"
    api = (out / "api.html").read_text()
    for name in ("WebhookReceiver", "SQLAlchemyStore", "StoreContract", "register_store", "MoltinClient"):
        assert name in api, f"the API reference lacks {name}"
    pages = sorted(path.stem for path in (ROOT / "docs").glob("*.rst"))
    index = (out / "index.html").read_text()
    assert all(f"{page}.html" in index for page in pages if page != "index"), "every page is in the table of contents"
