"""Review of today's change "a request's failed run of an event answered 202 meanwhile goes back to the queue".

On every built-in store (memory, SQLite, SQLAlchemy on PostgreSQL and
MariaDB, a real Redis): only an event that came through :meth:`accept` is
left to the queue; an event given back by a consumer (``finish`` with a
``retry_at``) did not, and its later failure stays ``failed`` as on SQLite.
Receivers sharing a store stay apart; and a replay of an event the queue
gave up on runs once, as ``flask webhooks replay`` says.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from webhook_receiver.stores import ClaimState, EventStatus, EventStore, MemoryStore
from webhook_receiver.stores.base import Run
from webhook_receiver.stores.redis import RedisStore
from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.testing.store_contract import contract_event as event

from .conftest import MARIADB_URL, POSTGRES_URL, REDIS_URL
from .test_stores import closing, on_database

MakeStore = Callable[[float], EventStore]


class Checks:
    def test_an_event_given_back_then_failing_in_a_request_is_failed_not_queued(self, make_store: MakeStore) -> None:
        # A consumer's batch stopped before this event started: given back (due now). The message is
        # redelivered to a consumer, whose run fails: no 202 was ever answered for it.
        store = make_store(30.0)
        first = store.claim(event("back"))
        assert store.finish(first, ok=False, retry_at=time.time())
        again = store.claim(event("back"))
        assert again.state is ClaimState.CLAIMED and not again.by_queue
        assert store.finish(again, ok=False, last=Run("h", False, "E: x", 1.0, 2.0))
        assert not again.requeued, "it never came through accept: no 202 promised the queue's retries"
        stored = store.get("back")
        assert stored is not None and stored.status is EventStatus.FAILED

    def test_another_receiver_s_accept_does_not_requeue_this_one_s_failure(self, make_store: MakeStore) -> None:
        base = make_store(30.0)
        shop, outlet = base.for_receiver("shop"), base.for_receiver("outlet")
        held = shop.claim(event("same"))
        assert outlet.accept(event("same")) is None, "outlet's own event, new there"
        assert shop.finish(held, ok=False, last=Run("h", False, "E: x", 1.0, 2.0))
        assert not held.requeued
        mine = shop.get("same")
        assert mine is not None and mine.status is EventStatus.FAILED
        assert shop.claim_due() is None
        taken = outlet.claim_due()
        assert taken is not None and taken.event_id == "same" and outlet.finish(taken, ok=True)

    def test_accept_racing_a_failing_finish_never_loses_the_202(self, make_store: MakeStore) -> None:
        # Whichever commits first, an event answered 202 ends pending for the queue, never failed.
        store = make_store(30.0)
        for n in range(25):
            event_id = f"race-{n}"
            held = store.claim(event(event_id))
            start = threading.Barrier(2)
            answers: list[object] = []

            def accept(
                event_id: str = event_id, start: threading.Barrier = start, answers: list[object] = answers
            ) -> None:
                start.wait()
                answers.append(store.accept(event(event_id)))

            thread = threading.Thread(target=accept)
            thread.start()
            start.wait()
            assert store.finish(held, ok=False, last=Run("h", False, "E: x", 1.0, 2.0))
            thread.join()
            stored = store.get(event_id)
            assert stored is not None and stored.status is EventStatus.PENDING, (n, answers, held.requeued)


class TestMemory(Checks):
    @pytest.fixture
    def make_store(self) -> Iterator[MakeStore]:
        yield from closing(lambda lease: MemoryStore(lease_seconds=lease))


class TestSQLite(Checks):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[MakeStore]:
        yield from closing(lambda lease: SQLiteStore(str(tmp_path / "events.sqlite3"), lease_seconds=lease))


class TestPostgreSQL(Checks):
    @pytest.fixture
    def make_store(self, table_prefix: str) -> Iterator[MakeStore]:
        yield from on_database(POSTGRES_URL, table_prefix)


class TestMariaDB(Checks):
    @pytest.fixture
    def make_store(self, table_prefix: str) -> Iterator[MakeStore]:
        yield from on_database(MARIADB_URL, table_prefix)


class TestRedis(Checks):
    @pytest.fixture
    def make_store(self, redis_prefix: str) -> Iterator[MakeStore]:
        yield from closing(lambda lease: RedisStore(REDIS_URL, prefix=redis_prefix, lease_seconds=lease))


def test_a_failed_replay_of_an_event_the_queue_gave_up_on_is_not_run_again_by_the_queue(tmp_path: Path) -> None:
    """``flask webhooks replay`` runs an event once, here and now; the queue's retries of it were all spent."""
    from flask import Flask

    from webhook_receiver import Event, WebhookReceiver
    from webhook_receiver.cli import webhooks_cli
    from webhook_receiver.testing import deliver, make_event

    from .conftest import SECRET, new_app

    receiver = WebhookReceiver()
    runs: list[str] = []

    @receiver.on("order.paid", name="ship")
    def ship(event: Event) -> None:
        runs.append(event.id)
        raise ConnectionError("the warehouse is down")

    app: Flask = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_DISPATCH="thread",
        WEBHOOK_RECEIVER_MAX_ATTEMPTS=1,
        WEBHOOK_RECEIVER_STORE=SQLiteStore(str(tmp_path / "events.sqlite3")),
    )
    receiver.init_app(app)
    store = receiver.get_store(app)
    try:
        assert deliver(app.test_client(), make_event("order.paid", event_id="spent"), secret=SECRET).status_code == 202
        deadline = time.monotonic() + 20
        while (stored := store.get("spent")) is None or stored.status is not EventStatus.FAILED:
            assert time.monotonic() < deadline, "the queue's one run ends failed"
            time.sleep(0.02)
        replayed = app.test_cli_runner().invoke(webhooks_cli, ["replay", "spent"])
        assert "still failing: ship" in replayed.output and runs == ["spent", "spent"]
        stored = store.get("spent")
        assert stored is not None and stored.status is EventStatus.FAILED, "the replay said failed: it is failed"
    finally:
        receiver.get_config(app).dispatcher.close()
