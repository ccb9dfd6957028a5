"""Fidelity: the official JS SDK (@moltin/sdk) works against the emulator.

When the SDK and the emulator disagree, the emulator is wrong. The SDK is
installed from the npm registry into tests/js/node_modules on first use.
With CI=true a missing node or npm is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from webhook_receiver.local.emulator import Emulator

JS = Path(__file__).resolve().parent / "js"


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        if os.environ.get("CI") == "true":
            pytest.fail("node and npm are needed for the SDK fidelity test")
        pytest.skip("node and npm are not installed")
    if not (JS / "node_modules" / "@moltin" / "sdk").exists():
        subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS, check=True, timeout=300)
    return JS


def test_official_sdk_against_the_emulator(node_sdk: Path, moltin: Emulator) -> None:
    host = moltin.url.removeprefix("http://")
    result = subprocess.run(
        ["node", "sdk_check.js", host, moltin.client_id, moltin.client_secret, "https://shop.example/hooks"],
        cwd=node_sdk,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    steps = {line["step"]: line["value"] for line in map(json.loads, result.stdout.splitlines())}
    assert steps["authenticate"] == {"token_type": "Bearer", "expires_in": 3600}
    created = steps["create"]
    assert created["type"] == "integration" and created["name"] == "sdk-check"
    assert created["configuration"] == {"url": "https://shop.example/hooks", "secret_key": "sdk-secret"}
    assert created["links"]["self"].endswith(created["id"])
    assert steps["list"] == {"ids": [created["id"]], "total": 1}
    assert steps["get"] == {"id": created["id"], "name": "sdk-check"}
    assert steps["update"] == {"observes": ["order.paid", "order.fulfilled"], "enabled": False}
    assert steps["logs"] == {"count": 0} and steps["jobs"] == {"count": 0}
    assert steps["delete"] == {"remaining": 0}
    assert steps["get-deleted"]["errors"][0]["status"] == 404
    assert moltin.state.integrations == {}


def test_official_sdk_with_wrong_credentials(node_sdk: Path, moltin: Emulator) -> None:
    host = moltin.url.removeprefix("http://")
    result = subprocess.run(
        ["node", "sdk_check.js", host, moltin.client_id, "wrong", "https://x.example"],
        cwd=node_sdk,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert json.loads(result.stderr.splitlines()[-1])["failed"][0]["status"] == 401
