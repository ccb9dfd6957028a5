"""The store protocol, the same for every store: memory, SQLite and a real Redis."""
from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from webhook_receiver import Event, StoreUnavailable
from webhook_receiver.stores import ClaimState, EventStatus, EventStore, MemoryStore
from webhook_receiver.stores.redis import RedisStore
from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.testing import make_event

from .conftest import REDIS_URL


@pytest.fixture(params=["memory", "sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[float], EventStore]]:
    """Builds the store under test with a given lease; closes what it built."""
    made: list[EventStore] = []

    def build(lease_seconds: float) -> EventStore:
        if request.param == "memory":
            store: EventStore = MemoryStore(lease_seconds=lease_seconds)
        elif request.param == "sqlite":
            store = SQLiteStore(str(tmp_path / "events.sqlite3"), lease_seconds=lease_seconds)
        else:
            prefix = request.getfixturevalue("redis_prefix")
            store = RedisStore(REDIS_URL, prefix=prefix, lease_seconds=lease_seconds)
        made.append(store)
        return store

    yield build
    for store in made:
        store.close()


@pytest.fixture
def store(make_store: Callable[[float], EventStore]) -> EventStore:
    """A lease long enough that a slow machine never sees it run out mid-test."""
    return make_store(30.0)


def event(event_id: str = "e-1", trigger: str = "order.paid") -> Event:
    body = make_event(trigger, event_id=event_id)
    body["configuration"] = {"url": "u", "secret_key": "the-secret"}
    return Event.from_dict(body)


def test_claim_record_finish_duplicate(store: EventStore) -> None:
    first = store.claim(event())
    assert first.state is ClaimState.CLAIMED and first.succeeded == frozenset()
    assert store.claim(event()).state is ClaimState.BUSY
    store.record(first, "a", ok=True, error=None, started_at=1.0, finished_at=2.0)
    store.record(first, "b", ok=False, error="ValueError: no", started_at=1.0, finished_at=2.0)
    store.finish(first, ok=False)
    stored = store.get("e-1")
    assert stored is not None and stored.status is EventStatus.FAILED
    assert stored.trigger == "order.paid"
    assert stored.raw["configuration"]["secret_key"] == "[redacted]"
    assert "the-secret" not in json.dumps(stored.raw)
    assert (stored.handlers["b"].ok, stored.handlers["b"].error, stored.handlers["b"].attempts) == (
        False, "ValueError: no", 1)

    second = store.claim(event())
    assert second.state is ClaimState.CLAIMED and second.succeeded == frozenset({"a"})
    store.record(second, "b", ok=True, error=None, started_at=3.0, finished_at=4.0)
    store.finish(second, ok=True)
    stored = store.get("e-1")
    assert stored is not None and stored.status is EventStatus.PROCESSED
    assert stored.handlers["b"].ok and stored.handlers["b"].attempts == 2
    assert store.claim(event()).state is ClaimState.DONE


def test_expired_lease_is_taken_over_and_the_old_claim_cannot_finish(
        make_store: Callable[[float], EventStore]) -> None:
    store = make_store(0.5)
    dead = store.claim(event())
    time.sleep(0.6)
    store.lease_seconds = 30.0  # the worker taking over holds its lease for the rest of the test
    taken = store.claim(event())
    assert taken.state is ClaimState.CLAIMED
    store.finish(dead, ok=True)  # the worker that died comes back: changes nothing
    stored = store.get("e-1")
    assert stored is not None and stored.status is EventStatus.PROCESSING
    store.finish(taken, ok=True)
    assert store.claim(event()).state is ClaimState.DONE


def test_accept_then_claim(store: EventStore) -> None:
    assert store.accept(event()) is None
    assert store.accept(event()) is EventStatus.PENDING
    stored = store.get("e-1")
    assert stored is not None and stored.status is EventStatus.PENDING
    claim = store.claim(event())
    assert claim.state is ClaimState.CLAIMED
    assert store.accept(event()) is EventStatus.PROCESSING
    store.finish(claim, ok=True)
    assert store.accept(event()) is EventStatus.PROCESSED


def test_events_listing_and_prune(store: EventStore) -> None:
    for n, trigger in enumerate(["order.paid", "product.deleted", "order.paid"]):
        claim = store.claim(event(f"e{n}", trigger))
        store.finish(claim, ok=n != 1)
        time.sleep(0.01)
    store.accept(event("pending", "order.paid"))
    assert [e.id for e in store.events()] == ["pending", "e2", "e1", "e0"]
    assert [e.id for e in store.events(status=EventStatus.FAILED)] == ["e1"]
    assert [e.id for e in store.events(trigger="order.paid", limit=2)] == ["pending", "e2"]
    middle = store.get("e1")
    assert middle is not None
    assert [e.id for e in store.events(since=middle.received_at)] == ["pending", "e2", "e1"]
    assert store.prune(time.time() + 1) == 3, "pending events are never pruned"
    assert [e.id for e in store.events()] == ["pending"]
    assert store.get("e0") is None


def _claim_in_process(path: str, queue: "multiprocessing.Queue[str]") -> None:
    store = SQLiteStore(path, lease_seconds=30)
    queue.put(store.claim(event("race")).state.value)


def test_sqlite_claims_are_exclusive_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "race.sqlite3")
    SQLiteStore(path).get("warm-up")  # create the schema once
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(path, queue)) for _ in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    states = sorted(queue.get(timeout=5) for _ in procs)
    assert states == ["busy"] * 5 + ["claimed"]


def test_sqlite_unreachable_file_is_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "missing-folder" / "events.sqlite3"))
    with pytest.raises(StoreUnavailable) as info:
        store.claim(event())
    assert info.value.store == "sqlite"
    (tmp_path / "missing-folder").mkdir()
    assert store.claim(event()).state is ClaimState.CLAIMED


def test_redis_down_is_unavailable(redis_prefix: str) -> None:
    store = RedisStore("redis://127.0.0.1:1/0", prefix=redis_prefix, timeout=0.5)
    with pytest.raises(StoreUnavailable) as info:
        store.claim(event())
    assert info.value.store == "redis" and "ConnectionError" in info.value.reason


def test_redis_repr_hides_the_password(redis_prefix: str) -> None:
    assert "hunter2" not in repr(RedisStore("redis://:hunter2@127.0.0.1:6379/15", prefix=redis_prefix))


def test_sqlite_new_file_opened_by_many_threads_at_once(tmp_path: Path) -> None:
    import threading

    store = SQLiteStore(str(tmp_path / "fresh.sqlite3"))
    barrier = threading.Barrier(8)
    states: list[str] = []
    errors: list[BaseException] = []

    def claim(n: int) -> None:
        barrier.wait()
        try:
            states.append(store.claim(event(f"fresh-{n}")).state.value)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and states == ["claimed"] * 8


def _open_fresh(path: str, queue: "multiprocessing.Queue[str]") -> None:
    try:
        queue.put(SQLiteStore(path).claim(event(f"p-{multiprocessing.current_process().pid}")).state.value)
    except Exception as exc:  # noqa: BLE001 - the test reports it
        queue.put(repr(exc))


def test_sqlite_new_file_opened_by_many_processes_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = ctx.Queue()
    path = str(tmp_path / "fresh-procs.sqlite3")
    procs = [ctx.Process(target=_open_fresh, args=(path, queue)) for _ in range(6)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    assert sorted(queue.get(timeout=5) for _ in procs) == ["claimed"] * 6
