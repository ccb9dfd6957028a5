"""Debian's Chromium, driven by Playwright for Python (no browser download: Playwright is given the binary).

``.ci/run`` installs the ``chromium`` package before the tests; where it is
missing, the browser tests are skipped, except under ``CI=true`` where that
is a failure. ``python -m tests.browser`` installs it (as root, with apt-get).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

__all__ = ["CANDIDATES", "chromium_path", "install_chromium", "require_chromium"]

#: Where Debian's package puts the browser, in the order they are tried; ``WEBHOOK_RECEIVER_CHROMIUM`` wins.
CANDIDATES = ("chromium", "chromium-browser", "/usr/bin/chromium", "/usr/lib/chromium/chromium")


def chromium_path() -> str | None:
    """The installed Chromium's executable, or ``None``."""
    chosen = os.environ.get("WEBHOOK_RECEIVER_CHROMIUM")
    for name in ([chosen] if chosen else []) + list(CANDIDATES):
        found = shutil.which(name)
        if found:
            return found
    return None


def require_chromium() -> str:
    """The Chromium executable; skip without one (fail under ``CI=true``), and without Playwright."""
    import pytest  # here: ``.ci/run`` runs this file with the system's Python, before the venv exists

    if os.environ.get("CI") == "true":
        import playwright.sync_api  # noqa: F401 - under CI, a missing Playwright is a failure too
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is in the [dev] extra")
    found = chromium_path()
    if found is None:
        message = "Chromium is not installed: apt-get install -y chromium (python -m tests.browser does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def install_chromium() -> int:
    """Install Debian's ``chromium`` package when it is missing; the exit status."""
    if chromium_path() is not None:
        return 0
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
    return subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, env=env).returncode


if __name__ == "__main__":
    sys.exit(install_chromium())
