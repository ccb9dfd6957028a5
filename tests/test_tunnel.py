"""flask webhooks tunnel, end to end against the emulator with the loopback provider."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sample_app.activity import read_activity
from webhook_receiver.cli import webhooks_cli
from webhook_receiver.local.emulator import Emulator
from webhook_receiver.local.tunnel import TunnelError, open_tunnel

from .processes import free_port, port_open, wait_for

ROOT = Path(__file__).resolve().parent.parent
APP_SECRET = "the-apps-own-secret-7d2e"


def tunnel_env(moltin: Emulator, tmp_path: Path) -> dict[str, str]:
    """The environment of a ``flask webhooks tunnel`` process serving the sample app against *moltin*."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLASK_APP": f"sample_app:create_app(instance_path={str(tmp_path)!r})",
        "FLASK_WEBHOOK_RECEIVER_SECRET_KEY": json.dumps(APP_SECRET),
        "MOLTIN_CLIENT_ID": moltin.client_id,
        "MOLTIN_CLIENT_SECRET": moltin.client_secret,
        "MOLTIN_API_URL": moltin.url,
    }


@pytest.mark.parametrize("reload", [False, True])
def test_tunnel_registers_serves_and_cleans_up(moltin: Emulator, tmp_path: Path, reload: bool) -> None:
    port = free_port()
    env = tunnel_env(moltin, tmp_path)
    args = [
        sys.executable,
        "-m",
        "flask",
        "webhooks",
        "tunnel",
        "--provider",
        "loopback",
        "--port",
        str(port),
        "--reload" if reload else "--no-reload",
    ]
    log = tmp_path / "tunnel.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(
            lambda: b"Running on" in log.read_bytes() and moltin.state.integrations,
            30,
            f"the tunnel to start:\n{log.read_text() if log.exists() else ''}",
        )
        (integration,) = moltin.state.integrations.values()
        assert integration["name"].startswith("webhook_receiver-moltin-tunnel-")
        assert integration["configuration"]["url"] == f"http://127.0.0.1:{port}/webhooks/moltin"
        session_secret = integration["configuration"]["secret_key"]
        assert session_secret != APP_SECRET, "a fresh secret: the app's own never leaves it"
        assert integration["observes"] == ["order.fulfilled", "order.paid", "product.deleted"]
        text = log.read_text()
        assert "Public URL: http://127.0.0.1:" in text and session_secret not in text

        fired = moltin.fire("order.paid")
        assert moltin.wait_idle(20)
        assert [log_["status_code"] for log_ in moltin.logs()] == [200]
        assert [a["event"] for a in read_activity(str(tmp_path / "activity.jsonl"))] == [fired.event_id]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
        assert moltin.state.integrations == {}, "the temporary integration is deleted on exit"
        assert "deleted temporary integration" in log.read_text()
        wait_for(lambda: not port_open(port), 10, "the app to stop serving")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_tunnel_failures_are_one_line(moltin: Emulator, tmp_path: Path) -> None:
    from webhook_receiver import WebhookReceiver

    from .conftest import new_app

    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=APP_SECRET,
        MOLTIN_CLIENT_ID=moltin.client_id,
        MOLTIN_CLIENT_SECRET=moltin.client_secret,
        MOLTIN_API_URL=moltin.url,
    )
    receiver = WebhookReceiver()
    receiver.on("order.paid")(lambda e: None)
    receiver.init_app(app)
    result = app.test_cli_runner().invoke(webhooks_cli, ["tunnel", "--provider", "url"])
    assert result.exit_code == 1 and "--public-url" in result.output
    for args, said in (
        (["--provider", "loopback", "--port", "70000"], "70000 is not in the range 1<=x<=65535"),
        (["--provider", "loopback", "--public-url", "https://mine.example"], "--public-url is the url provider's"),
    ):
        refused = app.test_cli_runner().invoke(webhooks_cli, ["tunnel", *args])
        assert refused.exit_code == 2 and said in refused.output, refused.output
    assert moltin.state.integrations == {}


def test_the_public_url_s_login_shows_masked(moltin: Emulator, tmp_path: Path) -> None:
    port = free_port()
    env = tunnel_env(moltin, tmp_path)
    public = f"http://user:TunPass7@127.0.0.1:{port}"
    args = [sys.executable, "-m", "flask", "webhooks", "tunnel", "--provider", "url", "--public-url", public]
    log = tmp_path / "tunnel.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*args, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: b"Running on" in log.read_bytes(), 30, f"the tunnel to start:\n{log.read_text()}")
        (integration,) = moltin.state.integrations.values()
        assert integration["configuration"]["url"] == f"{public}/webhooks/moltin", "upstream gets the login"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()
        text = log.read_text()
        assert f"Public URL: http://user:***@127.0.0.1:{port}/webhooks/moltin" in text, text
        assert "TunPass7" not in text
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_providers() -> None:
    assert open_tunnel("url", 5000, public_url="https://abc.example/").public_url == "https://abc.example"
    assert open_tunnel("loopback", 5001).public_url == "http://127.0.0.1:5001"
    with pytest.raises(TunnelError, match="public URL"):
        open_tunnel("url", 5000)
    for odd in ("https://h/x?y", "https://h/#x"):  # registered as https://h/x?y/webhooks/moltin
        with pytest.raises(TunnelError, match="no query or fragment"):
            open_tunnel("url", 5000, public_url=odd)
    with pytest.raises(TunnelError, match="unknown provider"):
        open_tunnel("carrier-pigeon", 5000)
    import importlib.util

    if importlib.util.find_spec("pyngrok") is None:  # the dev install has no pyngrok
        with pytest.raises(TunnelError, match=r"pip install 'webhook_receiver\[tunnel\]'"):
            open_tunnel("ngrok", 5000)


def test_cloudflared_must_be_on_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TunnelError, match="cloudflared binary on the PATH"):
        open_tunnel("cloudflared", 5000)
