"""Every value a person may mistype on the command line is a one-line error, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import pytest
import requests
from flask import Flask

from webhook_receiver import WebhookReceiver
from webhook_receiver.cli import webhooks_cli
from webhook_receiver.local.console import main as console
from webhook_receiver.local.emulator import Emulator
from webhook_receiver.testing import make_event

from .conftest import SECRET


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["events", "--since", "²h"], "'²h' is not a duration such as 30d, 12h or 90m"),
        (["events", "--since", "1e999d"], "is not a duration"),
        (["events", "--since", "99999999999w"], "is longer than 100 years"),
        (["prune", "--older-than", "²d"], "'²d' is not a duration such as 30d, 12h or 90m"),
        (["events", "--limit", "99999999999999999999"], "is not in the range 1<=x<=1000000"),
        (["events", "--limit", "-1"], "is not in the range 1<=x<=1000000"),
        (["events", "--limit", "0"], "is not in the range"),
        (["listen", "--interval", "1e999"], "'1e999' is not a finite number"),
        (["listen", "--interval", "nan"], "'nan' is not a finite number"),
        (["listen", "--interval", "99999"], "is not in the range 0.05<=x<=3600"),
        (["listen", "--seconds", "inf"], "'inf' is not a finite number"),
        (["listen", "--limit", "-1"], "is not in the range"),
        (["logs", "--limit", "-1"], "is not in the range"),
        (["send", "order.payed"], "'order.payed' is not an Elastic Path event: did you mean order.paid?"),
    ],
)
def test_a_bad_value_is_a_usage_error_of_one_line(
    app: Flask, receiver: WebhookReceiver, args: list[str], message: str
) -> None:
    receiver.on("order.paid")(lambda e: None)
    result = app.test_cli_runner().invoke(webhooks_cli, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert message in result.output and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: Invalid value"), result.output


def test_good_durations_and_limits_still_work(app: Flask, receiver: WebhookReceiver, send: Any) -> None:
    receiver.on("order.paid")(lambda e: None)
    send(make_event("order.paid", event_id="kept"))
    runner = app.test_cli_runner()
    listed = runner.invoke(webhooks_cli, ["events", "--since", "2h", "--limit", "1000000"])
    assert listed.exit_code == 0 and "kept" in listed.output
    assert (
        runner.invoke(webhooks_cli, ["prune", "--older-than", "1.5d", "--dry-run"]).output == "would prune 0 events\n"
    )


def test_replay_of_an_unknown_id_says_so_and_nothing_else(app: Flask, receiver: WebhookReceiver) -> None:
    receiver.on("order.paid")(lambda e: None)
    result = app.test_cli_runner().invoke(webhooks_cli, ["replay", "nope"])
    assert result.exit_code == 1
    assert result.output == "Error: no stored event 'nope'\n"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_send_to_a_closed_port_says_what_failed_and_why(app: Flask, receiver: WebhookReceiver) -> None:
    """The console script and flask webhooks send --to, as a person runs them."""
    receiver.on("order.paid")(lambda e: None)
    url = f"http://127.0.0.1:{closed_port()}/webhooks/moltin"
    expected = f"Error: could not deliver to {url}: connection refused; is your app running on 127.0.0.1:"
    script = subprocess.run(
        [sys.executable, "-m", "webhook_receiver.local.console", "send", "order.paid", "--to", url],
        env={**os.environ, "WEBHOOK_RECEIVER_SECRET_KEY": SECRET},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert script.returncode == 1 and script.stderr.startswith(expected), script.stderr
    assert len(script.stderr.strip().splitlines()) == 1
    flask_send = app.test_cli_runner().invoke(webhooks_cli, ["send", "order.paid", "--to", url])
    assert flask_send.exit_code == 1 and flask_send.output.startswith(expected), flask_send.output


def test_console_send_of_a_typo_says_did_you_mean() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(console, ["send", "order.payed", "--to", "http://127.0.0.1:9/x", "--secret", SECRET])
    assert result.exit_code == 2 and "did you mean order.paid?" in result.output, result.output
    custom = CliRunner().invoke(
        console, ["send", "wishlist.creatd", "--to", "http://127.0.0.1:9/x", "--secret", SECRET]
    )
    assert custom.exit_code == 2 and "is not an Elastic Path event" in custom.output


def test_emulator_fire_of_a_typo_says_did_you_mean(moltin: Emulator) -> None:
    answer = requests.post(f"{moltin.url}/emulator/fire", json={"trigger": "order.payed"}, timeout=5)
    assert answer.status_code == 422
    assert (
        answer.json()["errors"][0]["detail"] == "'order.payed' is not an Elastic Path event: did you mean order.paid?"
    )
    fine = requests.post(f"{moltin.url}/emulator/fire", json={"trigger": "wishlist_ext.created"}, timeout=5)
    assert fine.status_code == 202
