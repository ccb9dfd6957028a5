"""webhook-receiver send and flask webhooks send."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.cli import webhooks_cli

from .conftest import SECRET

ROOT = Path(__file__).resolve().parent.parent


def test_console_send_to_a_real_server(
    make_app: Callable[..., Flask], receiver: WebhookReceiver, live_server: Any, tmp_path: Path
) -> None:
    seen: list[Event] = []
    receiver.on("product.deleted", "order.paid")(lambda e: seen.append(e))
    url = live_server(make_app()) + "/webhooks/moltin"
    data = tmp_path / "product.json"
    data.write_text(json.dumps({"id": "p-42", "type": "product"}))
    env = {**os.environ, "WEBHOOK_RECEIVER_SECRET_KEY": SECRET}
    run = [sys.executable, "-m", "webhook_receiver.local.console", "send"]
    ok = subprocess.run(
        [*run, "product.deleted", "--to", url, "--data", str(data), "--attempt", "3"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("200 ") and '"processed"' in ok.stdout
    assert (seen[-1].data, seen[-1].attempt) == ({"id": "p-42", "type": "product"}, 3)
    refused = subprocess.run(
        [*run, "order.paid", "--to", url, "--secret", "wrong"], capture_output=True, text=True, env=env, timeout=30
    )
    assert refused.returncode == 1 and refused.stdout.startswith("401 ")
    bad = subprocess.run(
        [*run, "order.paid", "--to", url, "--data", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert bad.returncode == 2 and "cannot read" in bad.stderr
    assert len(seen) == 1


def test_flask_webhooks_send(app: Flask, receiver: WebhookReceiver) -> None:
    seen: list[Event] = []
    receiver.on("order.paid")(lambda e: seen.append(e))
    runner = app.test_cli_runner()
    result = runner.invoke(webhooks_cli, ["send", "order.paid"])
    assert result.exit_code == 0 and result.output.startswith("200 ")
    assert seen[0].data["type"] == "order" and seen[0].included["items"]
    ignored = runner.invoke(webhooks_cli, ["send", "brand.created"])
    assert ignored.exit_code == 0 and '"ignored"' in ignored.output


def test_no_redirect_is_followed_with_the_secret(live_server: Any) -> None:
    """A 307 to another host: send, deliver(url) and the emulator stop there, the secret goes nowhere."""
    from flask import request as flask_request

    from webhook_receiver.local.emulator import Emulator
    from webhook_receiver.testing import deliver, make_event
    from webhook_receiver.upstream.client import MoltinClient

    reached: list[str] = []
    elsewhere = Flask("elsewhere")

    @elsewhere.post("/steal")
    def steal() -> Any:
        reached.append(flask_request.headers.get("X-MOLTIN-SECRET-KEY", "") + flask_request.get_data(as_text=True))
        return {"id": "x", "status": "processed"}

    target = live_server(elsewhere) + "/steal"
    redirector = Flask("redirector")
    redirector.add_url_rule(
        "/webhooks/moltin", "redirect", methods=["POST"], view_func=lambda: ("", 307, {"Location": target})
    )
    url = live_server(redirector) + "/webhooks/moltin"

    env = {**os.environ, "WEBHOOK_RECEIVER_SECRET_KEY": SECRET}
    sent = subprocess.run(
        [sys.executable, "-m", "webhook_receiver.local.console", "send", "order.paid", "--to", url],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert sent.returncode == 1 and "answered 307, a redirect to " + target in sent.stderr
    assert deliver(url, make_event("order.paid"), secret=SECRET).status_code == 307

    with Emulator(retry_delays=()) as moltin:
        client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url)
        client.create_integration(name="r", url=url, secret_key=SECRET, observes=["order.paid"])
        moltin.fire("order.paid")
        assert moltin.wait_idle(10)
        (log,) = moltin.logs()
    assert not log["succeeded"] and "a redirect to " + target in log["error_detail"]
    assert reached == [], "nothing, and no secret, reached the other host"


def test_flask_send_works_in_the_no_secret_mode_meant_for_experiments() -> None:
    from webhook_receiver import WebhookReceiver

    from .conftest import new_app

    app = new_app(WEBHOOK_RECEIVER_ALLOW_NO_SECRET=True)
    receiver = WebhookReceiver(app)
    seen: list[str] = []
    receiver.on("order.paid")(lambda e: seen.append(e.trigger))
    result = app.test_cli_runner().invoke(webhooks_cli, ["send", "order.paid"])
    assert result.exit_code == 0 and result.output.startswith("200 "), result.output
    assert seen == ["order.paid"]


def test_console_version() -> None:
    from click.testing import CliRunner

    from webhook_receiver import __version__
    from webhook_receiver.local.console import main

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"webhook-receiver, version {__version__}"


def test_console_send_errors_hide_the_url_s_password_and_escape_the_data_path(tmp_path: Path) -> None:
    from .processes import free_port

    env = {**os.environ, "WEBHOOK_RECEIVER_SECRET_KEY": SECRET}
    run = [sys.executable, "-m", "webhook_receiver.local.console", "send", "order.paid"]
    closed = f"http://u:SendPass9@127.0.0.1:{free_port()}/webhooks/moltin"
    sent = subprocess.run([*run, "--to", closed], capture_output=True, text=True, env=env, timeout=30)
    assert sent.returncode == 1 and "could not deliver to http://u:***@127.0.0.1" in sent.stderr, sent.stderr
    assert "SendPass9" not in sent.stderr + sent.stdout
    odd = str(tmp_path / "no\x1b[31mfile\x07")
    missing = subprocess.run([*run, "--to", closed, "--data", odd], capture_output=True, text=True, env=env, timeout=30)
    assert missing.returncode == 2 and "cannot read" in missing.stderr, missing.stderr
    assert "\x1b" not in missing.stderr and "\x07" not in missing.stderr
