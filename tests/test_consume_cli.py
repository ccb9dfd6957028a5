"""``flask webhooks consume``: its help, its errors, and ``events`` showing how each event came in."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from webhook_receiver import WebhookReceiver
from webhook_receiver.cli import webhooks_cli

from .conftest import SECRET, new_app
from .processes import ROOT, wait_for
from .queues import Rabbit, Sqs, cloudevent, moto_endpoint_fixture, rabbit_fixture  # noqa: F401
from .test_queues import consume

PASSWORD = "cli-pw-never-shown-31f0"


def consume_process(app_file: Path, *arguments: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``flask --app APP_FILE webhooks consume ARGUMENTS...`` in a process of its own, and the file of its output."""
    log = app_file.with_suffix(".log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", str(app_file), "webhooks", "consume", *arguments],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return proc, log


def terminate_once(proc: subprocess.Popen[bytes], log: Path, marker: bytes, *, settle: float = 0.0) -> int:
    """SIGTERM the command once *marker* is in its output (and *settle* seconds more); its exit status."""
    try:
        wait_for(lambda: marker in log.read_bytes(), 60, f"{marker!r} in the output\n{log.read_text()}")
        time.sleep(settle)
        proc.terminate()
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_help_names_the_urls_and_variables_and_never_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_RECEIVER_STOMP_PASSWORD", PASSWORD)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PASSWORD)
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    WebhookReceiver().init_app(app)
    shown = app.test_cli_runner().invoke(webhooks_cli, ["consume", "--help"])
    assert shown.exit_code == 0, shown.output
    for word in ("stomp://", "stomp+ssl://", "sqs://", "WEBHOOK_RECEIVER_STOMP_PASSWORD", "--endpoint-url", "SIGTERM"):
        assert word in shown.output
    assert PASSWORD not in shown.output
    assert "consume" in app.test_cli_runner().invoke(webhooks_cli, ["--help"]).output


@pytest.mark.parametrize(
    "urls, message",
    [
        (["ftp://host/queue/x"], "a queue URL is stomp://"),
        ([f"stomp://u:{PASSWORD}@host:99999999/queue/x"], "malformed"),
        ([f"stomp://u:{PASSWORD}@host"], "no destination"),
        ([f"https://u:{PASSWORD}@sqs.eu-west-1.amazonaws.com/1/epcc"], "takes no credentials"),
        (["sqs://a", "sqs://b"], "one SQS queue per consumer"),
        ([f"stomp://u:{PASSWORD}@host/queue/x", "sqs://a"], "one consumer takes one kind"),
        # a "/" in the password cut the user info short: the rest of it showed as the path, in every log line
        ([f"stomp://u:12/{PASSWORD}@127.0.0.1/queue/x"], "percent-encode it"),
        ([f"stomp://u:/{PASSWORD}@127.0.0.1/queue/x"], "percent-encode it"),
        ([f"stomp://:{PASSWORD}@host/queue/x"], "a password without a user name"),  # was dropped, silently
        ([f"stomp://u:{PASSWORD}%0Ax@host/queue/x"], "line break"),  # its end showed in stomp.py's DEBUG lines
        ([f"stomp://u:{PASSWORD}@host/queue/x?foo"], "unknown parameter 'foo'"),
        ([f"stomp://u:{PASSWORD}@host/queue/x?vhost="], "vhost is empty"),
        (["--grace", "nan", f"stomp://u:{PASSWORD}@host/queue/x"], "not a finite number"),
        (["--grace", "inf", f"stomp://u:{PASSWORD}@host/queue/x"], "not a finite number"),
        # the endpoint's password showed in every log line and repr
        (["--endpoint-url", f"http://svc:{PASSWORD}@127.0.0.1:9", "sqs://epcc-x"], "endpoint URL takes no credentials"),
        (["--endpoint-url", "ftp://127.0.0.1:9", "sqs://epcc-x"], "endpoint URL is http://HOST"),
        (["https://sqs.eu-west-1.amazonaws.com/1/epcc-x?region=us-east-1"], "not the queue URL's"),
        (["sqs://epcc-x?region=eu_west"], "not an AWS region"),
        # an SQS queue's options beside a STOMP broker were dropped without a word
        (["--region", "us-east-1", f"stomp://u:{PASSWORD}@host/queue/x"], "a region is for an SQS queue"),
        (["--endpoint-url", "http://127.0.0.1:9", f"stomp://u:{PASSWORD}@host/queue/x"], "an endpoint URL is for"),
    ],
)
def test_a_bad_url_is_one_line_that_never_quotes_a_password(urls: list[str], message: str) -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    WebhookReceiver().init_app(app)
    result = app.test_cli_runner().invoke(webhooks_cli, ["consume", *urls])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert PASSWORD not in result.output and "Traceback" not in result.output


def test_events_shows_how_each_event_came_in(rabbit: Rabbit, tmp_path: Path) -> None:
    receiver = WebhookReceiver()
    receiver.on("order.paid")(lambda event: None)
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=f"sqlite:////{tmp_path}/events.sqlite3")
    receiver.init_app(app)
    rabbit.publish([cloudevent("via-stomp")])
    consume(receiver.consumer(app, rabbit.url), lambda stats: stats.acked >= 1)
    from webhook_receiver.testing import deliver, make_event

    assert (
        deliver(app.test_client(), make_event("order.paid", event_id="via-webhook"), secret=SECRET).status_code == 200
    )
    runner = app.test_cli_runner()
    listed = runner.invoke(webhooks_cli, ["events"]).output
    lines = {line.split()[2]: line for line in listed.splitlines()[1:]}
    assert listed.splitlines()[0].split()[5] == "via"
    assert lines["via-stomp"].split()[5] == "stomp" and lines["via-webhook"].split()[5] == "webhook"
    as_json = {item["id"]: item for item in json.loads(runner.invoke(webhooks_cli, ["events", "--json"]).output)}
    assert as_json["via-stomp"]["transport"] == "stomp" and as_json["via-webhook"]["transport"] == "webhook"


@pytest.mark.parametrize("dispatch", ["inline", "thread"])
def test_the_command_consumes_and_stops_on_sigterm(rabbit: Rabbit, tmp_path: Path, dispatch: str) -> None:
    """The real command in a process of its own: a message in, SIGTERM, a clean exit with a summary.

    With background dispatch the command also runs its process's workers (``--work``), so the handler runs.
    """
    app_file = tmp_path / "queue_app.py"
    app_file.write_text(
        "from flask import Flask\n"
        "from webhook_receiver import WebhookReceiver\n"
        "receiver = WebhookReceiver(secret_key='s' * 32)\n"
        "receiver.on('order.paid')(lambda event: print('handled', event.id, event.transport, flush=True))\n"
        f"app = Flask(__name__, instance_path={str(tmp_path)!r})\n"
        f"app.config['WEBHOOK_RECEIVER_DISPATCH'] = {dispatch!r}\n"
        "receiver.init_app(app)\n"
    )
    rabbit.publish([cloudevent("cli-1")])
    proc, log = consume_process(app_file, rabbit.url)
    assert terminate_once(proc, log, b"handled cli-1") == 0, log.read_text()
    text = log.read_text()
    assert "handled cli-1 stomp" in text
    assert f"stopped: 1 acknowledged ({'processed' if dispatch == 'inline' else 'accepted'} 1)" in text
    assert "guest:guest" not in text
    assert rabbit.count() == 0


def test_handlers_still_running_past_the_grace_end_the_process_and_their_messages_come_again(
    rabbit: Rabbit, tmp_path: Path
) -> None:
    """``--grace`` bounds the stop: a batch's handler runs in the consumer's own thread, so the command waited for
    it whatever the grace (18 s for a 20 s handler and a grace of 2)."""
    app_file = tmp_path / "slow_app.py"
    app_file.write_text(
        "import time\n"
        "from flask import Flask\n"
        "from webhook_receiver import WebhookReceiver\n"
        "receiver = WebhookReceiver(secret_key='s' * 32)\n"
        "@receiver.on('order.paid')\n"
        "def slow(event):\n"
        "    print('started', event.id, flush=True)\n"
        "    time.sleep(60)\n"
        f"app = Flask(__name__, instance_path={str(tmp_path)!r})\n"
        "receiver.init_app(app)\n"
    )
    rabbit.publish([cloudevent("slow-1")])
    proc, log = consume_process(app_file, "--grace", "1", rabbit.url)
    try:
        wait_for(lambda: b"started slow-1" in log.read_bytes(), 60, f"the handler started\n{log.read_text()}")
        proc.terminate()
        stopped = time.monotonic()
        assert proc.wait(30) == 1, log.read_text()
        assert time.monotonic() - stopped < 8, "a second past the grace, not the handler's 60 s"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "still run 2.0 s after the signal to stop; exiting" in log.read_text()
    wait_for(lambda: rabbit.count() == 1, 30, "the message back on the queue")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"concurrency": 0}, "concurrency must be a whole number of at least 1"),
        ({"concurrency": 2.5}, "concurrency must be a whole number"),  # was taken, then reconnected for ever
        ({"prefetch": -5}, "prefetch must be a whole number"),  # was asked of the broker, which then sent nothing
        ({"prefetch": 0}, "prefetch must be a whole number"),  # was replaced by the default, silently
        ({"grace": -5}, "grace must be a finite number of seconds"),
        ({"grace": float("nan")}, "grace must be a finite number of seconds"),
    ],
)
def test_a_consumer_with_a_setting_out_of_range_is_refused(options: dict[str, object], message: str) -> None:
    receiver = WebhookReceiver()
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver.init_app(app)
    with pytest.raises(ValueError, match=message):
        receiver.consumer(app, "stomp://u@127.0.0.1/queue/x", **options)  # type: ignore[arg-type]


def test_sigterm_during_a_long_poll_with_nothing_in_hand_exits_0(moto_endpoint: str, tmp_path: Path) -> None:
    """The grace ran out while the loop waited for a 20 s poll, no handler running: not the status-1 exit of work cut
    short (it said "handlers of 0 message(s) still run")."""
    app_file = tmp_path / "idle_app.py"
    app_file.write_text(
        "from flask import Flask\n"
        "from webhook_receiver import WebhookReceiver\n"
        "receiver = WebhookReceiver(secret_key='s' * 32)\n"
        "receiver.on('order.paid')(lambda event: None)\n"
        f"app = Flask(__name__, instance_path={str(tmp_path)!r})\n"
        "receiver.init_app(app)\n"
    )
    sqs = Sqs(moto_endpoint)
    proc, log = consume_process(app_file, "--grace", "1", f"{sqs.url}?wait=20")
    assert terminate_once(proc, log, b"consuming", settle=1.0) == 0, log.read_text()  # settled into its poll
    text = log.read_text()
    assert "stopped while a poll was still open" in text and "still run" not in text
