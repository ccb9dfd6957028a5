"""Review 17b: a rolling deploy inline -> thread, where the request's handler fails instead of dying.

The request (inline dispatch) runs a slow handler; upstream gives up on it
after about 10 s and retries; the retry reaches an instance with thread
dispatch, which answers 202 (the event is held: ``accept`` returns
``processing`` and joins it to the queue). Then the request's handler fails.
Upstream, answered 202, never retries again; the queue's retries were
promised by the 202. The request's ``finish(ok=False)`` used to mark the
event ``failed`` for good after its one run, with nothing left to retry it;
now the store leaves it pending, due now, for the queue (a request's claim
is not the queue's: ``Claim.by_queue``), and the queue runs it again.

The store contract holds every store to it
(``StoreContract.test_a_request_s_failed_run_of_an_event_answered_202_goes_back_to_the_queue``);
here: the case as it was reported, on each store; two apps sharing one
SQLite file, in this process; an inline run answered 202 at its deadline,
whose failure on its last attempt stays final; and two gunicorn servers, one
of each dispatch, on one SQLite file.
"""

from __future__ import annotations

import logging
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from flask import Flask

from webhook_receiver import Event, WebhookReceiver, signals
from webhook_receiver.stores import ClaimState, EventStatus, EventStore, MemoryStore
from webhook_receiver.stores.redis import RedisStore
from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.testing import deliver, make_event
from webhook_receiver.testing.store_contract import contract_event

from .conftest import DATABASES, REDIS_URL, SECRET, drop_tables, new_app, require_database
from .processes import Processes, logs_text, wait_for
from .service_app import SECRET as SERVICE_SECRET
from .service_app import effects


@pytest.fixture(params=["sqlite", "redis", "memory", "postgresql", "mariadb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    built: EventStore
    if request.param == "sqlite":
        built = SQLiteStore(str(tmp_path / "events.sqlite3"), receiver="shop")
    elif request.param == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        built = RedisStore(REDIS_URL, prefix=prefix, receiver="shop")
    elif request.param == "memory":
        built = MemoryStore().for_receiver("shop")
    else:
        from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore

        url = DATABASES[request.param]
        require_database(url)
        prefix = request.getfixturevalue("table_prefix")
        built = SQLAlchemyStore(url, prefix=prefix).for_receiver("shop")
        request.addfinalizer(lambda: drop_tables(url, prefix))
    yield built
    built.close()


def test_an_event_answered_202_while_a_request_ran_it_is_retried_by_the_queue_when_that_run_fails(
    store: EventStore,
) -> None:
    held = store.claim(contract_event("rolled"))  # the inline request, its handler running
    assert held.state is ClaimState.CLAIMED
    assert store.accept(contract_event("rolled")) is EventStatus.PROCESSING  # the retry: answered 202
    assert store.finish(held, ok=False, error="RuntimeError: boom")  # the request's handler fails
    stored = store.get("rolled")
    assert stored is not None
    assert stored.status is not EventStatus.FAILED, "answered 202, run once, failed for good: nothing will retry it"
    assert stored.status is EventStatus.PENDING and held.requeued
    retry = store.claim_due()  # the queue runs it again, its attempts counted from the request's
    assert retry is not None and retry.event_id == "rolled" and retry.attempt == 2
    assert store.finish(retry, ok=True)
    stored = store.get("rolled")
    assert stored is not None and stored.status is EventStatus.PROCESSED


# -- two apps on one SQLite file, in this process ----------------------------------------------------------------


class FailsFirst:
    """The handler both instances run (one code base): the first run waits for the gate, then fails."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.runs: list[str] = []

    def __call__(self, event: Event) -> None:
        self.runs.append(event.id)
        self.started.set()
        if len(self.runs) == 1:
            assert self.gate.wait(30), "the test never opened the gate"
            raise RuntimeError("the first run fails on purpose")


def instance(tmp_path: Path, handler: FailsFirst, **config: Any) -> Flask:
    receiver = WebhookReceiver()
    receiver.on("order.paid")(handler)
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=f"sqlite:///{tmp_path}/events.sqlite3",
        WEBHOOK_RECEIVER_RETRY_BACKOFF=0.05,
        **config,
    )
    receiver.init_app(app)
    return app


def store_of(app: Flask) -> EventStore:
    store: EventStore = app.extensions["webhook_receiver"]["moltin"].store
    return store


def close(app: Flask) -> None:
    app.extensions["webhook_receiver"]["moltin"].dispatcher.close(5)


def test_two_instances_on_one_file_the_thread_one_runs_the_event_the_inline_one_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handler = FailsFirst()
    inline = instance(tmp_path, handler, WEBHOOK_RECEIVER_INLINE_DEADLINE=None)
    threaded = instance(tmp_path, handler, WEBHOOK_RECEIVER_DISPATCH="thread")
    body = make_event("order.paid", event_id=f"rolled-{uuid.uuid4().hex[:8]}")
    answers: list[Any] = []
    first = threading.Thread(target=lambda: answers.append(deliver(inline.test_client(), body, secret=SECRET)))
    try:
        with caplog.at_level(logging.WARNING, logger="webhook_receiver"):
            first.start()
            assert handler.started.wait(10), "the inline request runs the handler"
            retry = deliver(threaded.test_client(), dict(body, attempt=2), secret=SECRET)  # upstream gave up
            assert (retry.status_code, retry.json["status"]) == (202, "accepted")
            stored = store_of(threaded).get(body["id"])
            assert stored is not None and stored.status is EventStatus.PROCESSING, "still the request's"
            handler.gate.set()
            first.join(30)
            assert (answers[0].status_code, answers[0].json["status"]) == (500, "failed"), "upstream is long gone"
            wait_for(
                lambda: (e := store_of(inline).get(body["id"])) is not None and e.status is EventStatus.PROCESSED,
                30,
                "the thread instance's queue to run it again",
            )
        assert handler.runs == [body["id"], body["id"]], "run again, once, by the queue"
        stored = store_of(inline).get(body["id"])
        assert stored is not None and stored.attempts == 2
        assert any("the queue runs it again" in r.getMessage() for r in caplog.records), "the request says so"
    finally:
        handler.gate.set()
        first.join(30)
        close(threaded)
        close(inline)


# -- the inline deadline: answered 202 by the request's own instance ---------------------------------------------


def test_a_run_answered_202_at_the_deadline_that_fails_its_last_attempt_stays_failed(tmp_path: Path) -> None:
    # The run answered 202 at the deadline is the queue's: its failure is retried by the dispatcher's policy
    # (tests/test_inline_deadline.py), and a failure on the policy's last attempt is final, not queued once more.
    handler = FailsFirst()
    app = instance(tmp_path, handler, WEBHOOK_RECEIVER_INLINE_DEADLINE=0.2, WEBHOOK_RECEIVER_MAX_ATTEMPTS=1)
    failed: list[int] = []

    def on_failed(sender: Flask, attempts: int, **kwargs: Any) -> None:
        failed.append(attempts)

    signals.event_failed.connect(on_failed, app)
    body = make_event("order.paid", event_id=f"last-{uuid.uuid4().hex[:8]}")
    try:
        answer = deliver(app.test_client(), body, secret=SECRET)
        assert (answer.status_code, answer.json["status"]) == (202, "accepted")
        handler.gate.set()
        wait_for(lambda: failed, 30, "the run to fail")
        stored = store_of(app).get(body["id"])
        assert stored is not None and stored.status is EventStatus.FAILED, "its last attempt: failed for good"
        assert stored.attempts == 1 and stored.due_at is None and store_of(app).count_due() == 0
        assert handler.runs == [body["id"]] and failed == [1]
    finally:
        handler.gate.set()
        signals.event_failed.disconnect(on_failed, app)
        close(app)


# -- real processes: two gunicorn servers, one inline and one thread, on one SQLite file --------------------------


def test_behind_gunicorn_the_thread_instance_runs_again_what_the_inline_one_failed_after_its_202(
    processes: Processes, tmp_path: Path
) -> None:
    gate = tmp_path / "go-on"
    processes.env.update(WHR_FAIL_ONCE="1", WHR_WAIT_FOR=str(gate), WHR_DEADLINE="none")
    inline = processes.gunicorn(tmp_path / "inline.log", workers=1)
    processes.env.update(WHR_DISPATCH="thread")
    threaded = processes.gunicorn(tmp_path / "thread.log", workers=1)
    for url in (inline, threaded):  # the workers are up (they boot after the port opens)
        assert deliver(url, make_event("cart.updated"), secret=SERVICE_SECRET, timeout=30).json()["status"] == "ignored"

    body = make_event("order.paid", event_id=f"rolled-{uuid.uuid4().hex[:8]}")
    with pytest.raises(requests.exceptions.ReadTimeout):  # upstream gives up on the inline request
        deliver(inline, body, secret=SERVICE_SECRET, timeout=1)
    wait_for(lambda: effects(tmp_path, "start", body["id"]), 30, f"the inline run to start\n{logs_text(tmp_path)}")
    retry = deliver(threaded, dict(body, attempt=2), secret=SERVICE_SECRET, timeout=30)
    assert (retry.status_code, retry.json()["status"]) == (202, "accepted")
    store = SQLiteStore(str(tmp_path / "webhook_receiver-moltin.sqlite3"))
    try:
        stored = store.get(body["id"])
        assert stored is not None and stored.status is EventStatus.PROCESSING, "the inline run holds it"
        gate.touch()  # the inline run goes on, and fails; no delivery comes any more
        wait_for(lambda: effects(tmp_path, "done", body["id"]), 60, f"the queue to run it\n{logs_text(tmp_path)}")
        starts = effects(tmp_path, "start", body["id"])
        assert len(starts) == 2 and len(effects(tmp_path, "done", body["id"])) == 1
        assert starts[1]["pid"] != starts[0]["pid"], "run again by the thread instance"
        wait_for(
            lambda: (e := store.get(body["id"])) is not None and e.status is EventStatus.PROCESSED,
            30,
            f"the event to be processed\n{logs_text(tmp_path)}",
        )
    finally:
        gate.touch()
        store.close()
