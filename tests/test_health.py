"""``flask webhooks health`` and the readiness endpoint: store up or down, backlog over its limit, workers stopped."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.cli import webhooks_cli
from webhook_receiver.observability import health_of
from webhook_receiver.stores.memory import MemoryStore
from webhook_receiver.testing import deliver, make_event

from .conftest import SECRET, new_app, require_redis
from .processes import Processes, free_port, in_child, wait_for

HEALTH_URL = "/webhooks/health"


def health_cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(webhooks_cli, ["health", *args])


def test_store_up_is_healthy_in_the_command_and_the_endpoint(receiver: WebhookReceiver) -> None:
    receiver.on("order.paid")(lambda event: None)
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=None, WEBHOOK_RECEIVER_HEALTH_URL=HEALTH_URL
    )
    app.config["TESTING"] = False  # the default SQLite store in the instance folder
    receiver.init_app(app)
    assert deliver(app.test_client(), make_event("order.paid"), secret=SECRET).status_code == 200

    result = health_cli(app)
    assert result.exit_code == 0, result.output
    assert "status: healthy" in result.output and "sqlite store answers" in result.output
    report = json.loads(health_cli(app, "--json").output)
    assert report["status"] == "healthy"
    assert report["receivers"]["moltin"]["store"]["status"] == "healthy"
    assert report["receivers"]["moltin"]["workers"]["status"] == "skipped"  # the command runs no workers

    answer = app.test_client().get(HEALTH_URL)
    assert answer.status_code == 200 and answer.json["status"] == "healthy"
    assert answer.headers["Cache-Control"] == "no-store"


def test_store_unreachable_is_down_without_its_credentials(receiver: WebhookReceiver) -> None:
    require_redis()  # the redis client library, and a server to tell a closed port from
    receiver.on("order.paid")(lambda event: None)
    closed = free_port()  # nothing listens there
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=f"redis://:store-password-8d1f@127.0.0.1:{closed}/0",
        WEBHOOK_RECEIVER_HEALTH_URL=HEALTH_URL,
    )
    receiver.init_app(app)

    result = health_cli(app)
    assert result.exit_code == 2, result.output
    assert "store" in result.output and "down" in result.output
    as_json = health_cli(app, "--json")
    assert as_json.exit_code == 2
    assert json.loads(as_json.output)["receivers"]["moltin"]["store"]["status"] == "down"

    answer = app.test_client().get(HEALTH_URL)
    assert answer.status_code == 503 and answer.json["status"] == "down"
    for text in (result.output, as_json.output, answer.get_data(as_text=True)):
        assert "store-password-8d1f" not in text and SECRET not in text


@pytest.fixture
def gated() -> Iterator[threading.Event]:
    gate = threading.Event()
    yield gate
    gate.set()


def test_backlog_over_its_limit_is_degraded(receiver: WebhookReceiver, gated: threading.Event) -> None:
    started = threading.Event()

    @receiver.on("order.paid")
    def wait(event: Event) -> None:
        started.set()
        gated.wait(30)

    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_DISPATCH="thread",
        WEBHOOK_RECEIVER_THREADS=1,
        WEBHOOK_RECEIVER_MAX_BACKLOG=3,
        WEBHOOK_RECEIVER_HEALTH_URL=HEALTH_URL,
        WEBHOOK_RECEIVER_HEALTH_MAX_AGE=3600,
    )
    receiver.init_app(app)
    client = app.test_client()
    try:
        assert deliver(client, make_event("order.paid"), secret=SECRET).status_code == 202
        assert started.wait(10)  # the one worker holds it; the next ones wait in the store
        store = receiver.get_store(app)

        def backlog_full() -> bool:  # 503 once the dispatcher counts 3 waiting; the store has the last word
            if store.count_due() >= 3:
                return True
            assert deliver(client, make_event("order.paid"), secret=SECRET).status_code in (202, 503)
            return False

        wait_for(backlog_full, 30, "3 events due")
        assert health_cli(app).exit_code == 1

        report = json.loads(health_cli(app, "--json").output)
        assert report["status"] == "degraded"
        assert report["receivers"]["moltin"]["backlog"] == {
            "status": "degraded",
            "detail": "3 events due, the limit is 3",
        }
        assert deliver(client, make_event("order.paid"), secret=SECRET).status_code == 503
        assert report["receivers"]["moltin"]["oldest_due"]["status"] == "healthy"
        answer = client.get(HEALTH_URL)  # still ready: the process answers, upstream retries the 503s
        assert answer.status_code == 200 and answer.json["status"] == "degraded"
        assert answer.json["receivers"]["moltin"]["workers"]["status"] == "healthy"

        app.extensions["webhook_receiver.observability"].max_age = 0.000001
        aged = json.loads(health_cli(app, "--json").output)
        assert aged["receivers"]["moltin"]["oldest_due"]["status"] == "degraded"
    finally:
        gated.set()
        receiver.get_config(app).dispatcher.close()


def test_workers_stopped_is_down_at_the_endpoint(receiver: WebhookReceiver) -> None:
    receiver.on("order.paid")(lambda event: None)
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_DISPATCH="thread", WEBHOOK_RECEIVER_HEALTH_URL=HEALTH_URL
    )
    receiver.init_app(app)
    client = app.test_client()
    assert client.get(HEALTH_URL).json["receivers"]["moltin"]["workers"]["status"] == "healthy"

    receiver.get_config(app).dispatcher.close()
    answer = client.get(HEALTH_URL)
    assert answer.status_code == 503
    assert answer.json["status"] == "down"
    assert answer.json["receivers"]["moltin"]["workers"]["status"] == "down"
    assert answer.json["receivers"]["moltin"]["store"]["status"] == "healthy"


def test_a_wrong_health_setting_stops_init_app(receiver: WebhookReceiver) -> None:
    for key, value in [("WEBHOOK_RECEIVER_HEALTH_URL", "health"), ("WEBHOOK_RECEIVER_HEALTH_MAX_AGE", -1)]:
        app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, **{key: value})
        with pytest.raises(RuntimeError, match=key):
            WebhookReceiver().init_app(app)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"WEBHOOK_RECEIVER_HEALTH_MAX_AGE": float("inf")}, "positive, finite number of seconds"),
        ({"WEBHOOK_RECEIVER_HEALTH_TIMEOUT": 0}, "positive, finite number of seconds"),
        ({"WEBHOOK_RECEIVER_HEALTH_TIMEOUT": "3"}, "positive, finite number of seconds"),
        ({"WEBHOOK_RECEIVER_HEALTH_TIMEOUT": 61}, "at most 60 seconds"),  # no probe waits that long
        ({"WEBHOOK_RECEIVER_METRICS_CACHE_SECONDS": float("inf")}, "positive, finite number of seconds"),
        ({"WEBHOOK_RECEIVER_HEALTH_URL": "/h/<x>"}, "no '<...>' part"),  # every probe got an HTML 500
        # the probe would read the metrics (200), and never see a 503
        ({"WEBHOOK_RECEIVER_METRICS": "/x", "WEBHOOK_RECEIVER_HEALTH_URL": "/x"}, "are one path"),
        ({"WEBHOOK_RECEIVER_METRICS": "/webhooks/moltin"}, "the URL of webhook receiver 'moltin'"),
        ({"WEBHOOK_RECEIVER_HEALTH_URL": "/webhooks/moltin"}, "the URL of webhook receiver 'moltin'"),
        ({"WEBHOOK_RECEIVER_HEALTH_URL": "/static/<path:filename>"}, "no '<...>' part"),
    ],
)
def test_an_observability_setting_that_cannot_work_stops_init_app(config: dict[str, Any], message: str) -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, **config)
    with pytest.raises(RuntimeError, match=re.escape(message)):
        WebhookReceiver().init_app(app)


def test_a_route_the_app_has_already_is_refused_as_the_health_url() -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_HEALTH_URL="/ready")
    app.add_url_rule("/ready", "ready", lambda: "mine")
    with pytest.raises(RuntimeError, match="a path the app routes already"):
        WebhookReceiver().init_app(app)


def test_app_wide_observability_keys_in_a_receivers_entry_are_said_to_be_ignored() -> None:
    from webhook_receiver.errors import UnknownSettingWarning

    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVERS={"moltin": {"HEALTH_URL": "/h", "METRICS": "/m", "INBOX_URL": "/i"}},
    )
    with pytest.warns(UnknownSettingWarning) as warned:
        WebhookReceiver().init_app(app)
    said = " ".join(str(w.message) for w in warned)
    assert "WEBHOOK_RECEIVERS['moltin']['HEALTH_URL'] is app-wide only" in said and "It is ignored." in said
    assert "WEBHOOK_RECEIVERS['moltin']['METRICS'] is app-wide only" in said
    assert "WEBHOOK_RECEIVERS['moltin']['INBOX_URL'] is app-wide only" in said  # the inbox reads app.config too
    assert app.test_client().get("/h").status_code == 404


APP_THAT_FAILS = """
import sys

def create_app():
    raise RuntimeError("the factory failed")

def with_a_dsn():
    raise RuntimeError("cannot reach postgresql://app:S3cret-pw-71@db.internal:5432/shop")

def exiting():
    sys.exit("no configuration")
"""


def _flask(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def test_a_check_that_could_not_be_made_exits_3_never_a_state_of_the_store(tmp_path: Path) -> None:
    # 1 and 2 mean degraded and down: a liveness probe that reads "$? -lt 2" must not pass on a mistake
    (tmp_path / "failing.py").write_text(APP_THAT_FAILS)
    done = _flask(tmp_path, "--app", "failing:create_app", "webhooks", "health")
    assert done.returncode == 3, done.stderr
    assert "the app did not load: RuntimeError: the factory failed" in done.stderr
    assert "Traceback" not in done.stderr
    missing = _flask(tmp_path, "--app", "no_such_module", "webhooks", "health")
    assert missing.returncode == 3 and "Could not import 'no_such_module'" in missing.stderr
    exiting = _flask(tmp_path, "--app", "failing:exiting", "webhooks", "health")  # it exited 1: "degraded"
    assert exiting.returncode == 3 and "SystemExit: no configuration" in exiting.stderr
    quoted = _flask(tmp_path, "--app", "failing:with_a_dsn", "webhooks", "health", "--json")
    assert quoted.returncode == 3 and "S3cret-pw-71" not in quoted.stdout + quoted.stderr
    assert json.loads(quoted.stdout) == {
        "status": "not_checked",
        "error": "the app did not load: RuntimeError: cannot reach postgresql://app:***@db.internal:5432/shop",
    }


def _on_a_redis_of_its_own(
    receiver: WebhookReceiver, processes: Processes, tmp_path: Path, *, timeout: float
) -> tuple[Flask, subprocess.Popen[bytes]]:
    """An app whose receiver keeps its events on a redis-server of the test's own (to freeze), and that server."""
    require_redis()
    port = free_port()
    server = processes.redis_server(port, tmp_path / "redis.log")
    receiver.on("order.paid")(lambda event: None)
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=f"redis://127.0.0.1:{port}/0",
        WEBHOOK_RECEIVER_HEALTH_URL=HEALTH_URL,
        WEBHOOK_RECEIVER_HEALTH_TIMEOUT=timeout,
    )
    receiver.init_app(app)
    return app, server


def _health_threads() -> int:
    return sum(thread.name == "webhook-receiver-health" and thread.is_alive() for thread in threading.enumerate())


def test_a_store_that_hangs_is_down_at_the_timeout_and_one_thread_waits_on_it(
    receiver: WebhookReceiver, processes: Processes, tmp_path: Path
) -> None:
    """A frozen Redis (SIGSTOP): each check answers down at its timeout, not after the store's own 5 s
    socket timeouts one after the other, and probes that come meanwhile start no second thread."""
    app, server = _on_a_redis_of_its_own(receiver, processes, tmp_path, timeout=0.5)
    before = _health_threads()
    client = app.test_client()
    assert client.get(HEALTH_URL).status_code == 200
    os.kill(server.pid, signal.SIGSTOP)
    try:
        answers = [client.get(HEALTH_URL) for _ in range(4)]
        for answer in answers:
            assert answer.status_code == 503, answer.json
            assert "redis store has not answered in" in answer.json["receivers"]["moltin"]["store"]["detail"]
        assert _health_threads() == before + 1, "each probe started a thread of its own against the hung store"
        result = health_cli(app, "--timeout", "0.3")
        assert result.exit_code == 2 and "redis store has not answered in" in result.output, result.output
        assert _health_threads() == before + 1
    finally:
        os.kill(server.pid, signal.SIGCONT)
    wait_for(lambda: client.get(HEALTH_URL).status_code == 200, 30, "health once Redis runs again")
    assert health_cli(app).exit_code == 0


def test_a_forked_child_asks_the_store_itself_rather_than_wait_on_its_parents_thread(
    receiver: WebhookReceiver, processes: Processes, tmp_path: Path
) -> None:
    """The parent's check still waits on a frozen Redis when it forks: the child's check is its own."""
    app, server = _on_a_redis_of_its_own(receiver, processes, tmp_path, timeout=0.3)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        assert app.test_client().get(HEALTH_URL).status_code == 503  # its thread still waits on the store

        def child() -> bool:
            from webhook_receiver.observability import health_of

            os.kill(server.pid, signal.SIGCONT)
            return health_of(app, timeout=10).status == "healthy"  # the parent's thread is not in this process

        assert in_child(child, hung_after=30) == 0
    finally:
        os.kill(server.pid, signal.SIGCONT)


def test_an_unknown_receiver_or_option_exits_3(receiver: WebhookReceiver) -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver.init_app(app)
    unknown = health_cli(app, "--receiver", "nope")
    assert unknown.exit_code == 3 and "no receiver named 'nope'" in unknown.output
    misspelt = health_cli(app, "--jsn")
    assert misspelt.exit_code == 3 and "No such option" in misspelt.output
    assert health_cli(app).exit_code == 0


def test_an_app_without_a_receiver_exits_3() -> None:
    result = health_cli(new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET))
    assert result.exit_code == 3 and "no receiver is set up" in result.output


class _Interrupted(BaseException):
    """Not an Exception, as a gevent Timeout, an asyncio CancelledError, SystemExit and GeneratorExit are not."""


class _StoreThatRaises(MemoryStore):
    """A store of the user's whose reads raise something that is not an Exception."""

    exc: type[BaseException] = _Interrupted

    def count_due(self) -> int:
        raise self.exc("interrupted at postgresql://u:store-pw-5c1@h/db")


@pytest.mark.parametrize("exc", [_Interrupted, SystemExit, GeneratorExit])
def test_a_store_raising_a_base_exception_is_down_never_an_empty_healthy_report(
    exc: type[BaseException], capfd: pytest.CaptureFixture[str]
) -> None:
    """Found by review 33a: the probe's thread died with no check made, and the report read healthy (200, exit 0)."""
    _StoreThatRaises.exc = exc
    receiver = WebhookReceiver()
    receiver.on("order.paid")(lambda event: None)
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=_StoreThatRaises(),
        WEBHOOK_RECEIVER_HEALTH_URL=HEALTH_URL,
    )
    receiver.init_app(app)
    answer = app.test_client().get(HEALTH_URL)
    assert answer.status_code == 503 and answer.json["receivers"]["moltin"]["store"] == {
        "status": "down",
        "detail": f"the memory store was not checked ({exc.__name__})",
    }
    result = health_cli(app)
    assert result.exit_code == 2, result.output
    assert "store-pw-5c1" not in capfd.readouterr().err + result.output  # no traceback quoting the exception


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan", "0", "-1", "61", "inf", "soon"])
def test_a_timeout_that_is_not_a_number_of_seconds_up_to_60_exits_3(receiver: WebhookReceiver, value: str) -> None:
    """NaN passed click's range (every comparison with it is false) and made a healthy store down (review 33a)."""
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver.init_app(app)
    result = health_cli(app, "--timeout", value)
    assert result.exit_code == 3, f"--timeout {value}: exit {result.exit_code}\n{result.output}"
    assert health_cli(app, "--timeout", "5").exit_code == 0


@pytest.mark.parametrize("value", [math.inf, math.nan, 0, -1, 61, True, "3"])
def test_health_of_refuses_a_timeout_that_is_not_a_number_of_seconds_up_to_60(
    receiver: WebhookReceiver, value: Any
) -> None:
    """inf made the wait raise OverflowError; NaN and negatives said a healthy store was down (review 33a)."""
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver.init_app(app)
    with pytest.raises(ValueError, match="at most 60"):
        health_of(app, timeout=value)
    assert health_of(app, timeout=60).status == "healthy"


def test_an_interrupted_check_exits_3_not_a_state_of_the_store(
    receiver: WebhookReceiver, processes: Processes, tmp_path: Path
) -> None:
    """Ctrl-C while the command waits on a frozen Redis exited 1 (click's "Aborted!"), which here means degraded."""
    require_redis()
    port = free_port()
    server = processes.redis_server(port, tmp_path / "redis.log")
    (tmp_path / "frozenapp.py").write_text(
        "from flask import Flask\n"
        "from webhook_receiver import WebhookReceiver\n"
        "receiver = WebhookReceiver()\n"
        "receiver.on('order.paid')(lambda event: None)\n"
        "app = Flask(__name__)\n"
        f"app.config.update(WEBHOOK_RECEIVER_SECRET_KEY={SECRET!r},"
        f" WEBHOOK_RECEIVER_STORE='redis://127.0.0.1:{port}/0')\n"
        "receiver.init_app(app)\n"
        "print('loaded', flush=True)\n"
    )
    os.kill(server.pid, signal.SIGSTOP)
    try:
        command = [sys.executable, "-m", "flask", "--app", "frozenapp", "webhooks", "health", "--timeout", "60"]
        check = subprocess.Popen(
            command,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            # a shell's background job inherits SIGINT ignored, and Python then keeps it so
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        assert check.stdout is not None
        assert check.stdout.readline() == "loaded\n"  # the app is loaded: the check waits on the frozen store
        time.sleep(0.5)
        check.send_signal(signal.SIGINT)
        out, err = check.communicate(timeout=60)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert check.returncode == 3, out + err
    assert "interrupted before the check was made" in err
