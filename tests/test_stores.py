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
from webhook_receiver.stores.base import Run
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
    assert store.record(first, Run("a", True, None, 1.0, 2.0))
    assert store.finish(first, ok=False, last=Run("b", False, "ValueError: no", 1.0, 2.0))
    stored = store.get("e-1")
    assert stored is not None and stored.status is EventStatus.FAILED
    assert stored.trigger == "order.paid"
    assert stored.raw["configuration"]["secret_key"] == "[redacted]"
    assert "the-secret" not in json.dumps(stored.raw)
    assert (stored.handlers["b"].ok, stored.handlers["b"].error, stored.handlers["b"].attempts) == (
        False, "ValueError: no", 1)

    second = store.claim(event())
    assert second.state is ClaimState.CLAIMED and second.succeeded == frozenset({"a"})
    assert store.finish(second, ok=True, last=Run("b", True, None, 3.0, 4.0))
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
    # the worker that died comes back: every write it tries is refused
    assert not store.renew(dead)
    assert not store.record(dead, Run("a", False, "late", 1.0, 2.0))
    assert not store.finish(dead, ok=False, last=Run("a", False, "late", 1.0, 2.0))
    stored = store.get("e-1")
    assert stored is not None and stored.status is EventStatus.PROCESSING and stored.handlers == {}
    assert store.finish(taken, ok=True, last=Run("a", True, None, 3.0, 4.0))
    stored = store.get("e-1")
    assert stored is not None and stored.handlers["a"].ok and stored.handlers["a"].attempts == 1
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


def test_the_queue_hands_out_due_events_oldest_first(store: EventStore) -> None:
    assert store.claim_due() is None and store.count_due() == 0
    for n in range(3):
        assert store.accept(event(f"q{n}")) is None
        time.sleep(0.002)
    assert store.count_due() == 3
    first = store.claim_due()
    assert first is not None and first.event_id == "q0" and first.attempt == 1
    assert first.trigger == "order.paid" and first.raw is not None and first.raw["id"] == "q0"
    assert first.raw["configuration"]["secret_key"] == "[redacted]"
    assert store.count_due() == 2
    stored = store.get("q0")
    assert stored is not None and stored.status is EventStatus.PROCESSING and stored.due_at is None
    assert store.accept(event("q0")) is EventStatus.PROCESSING, "a redelivery leaves a held event alone"
    assert store.claim(event("q0")).state is ClaimState.BUSY

    # a failed run is due again later: a row, not a timer
    assert store.finish(first, ok=False, last=Run("h", False, "E: x", 1.0, 2.0), retry_at=time.time() + 0.3)
    stored = store.get("q0")
    assert stored is not None and stored.status is EventStatus.PENDING and stored.due_at is not None
    assert stored.attempts == 1 and stored.handlers["h"].error == "E: x"
    taken = [store.claim_due(), store.claim_due()]
    assert [c.event_id for c in taken if c] == ["q1", "q2"]
    assert store.claim_due() is None, "q0 is not due yet"
    time.sleep(0.35)
    again = store.claim_due()
    assert again is not None and again.event_id == "q0" and again.attempt == 2
    assert again.outcomes["h"].attempts == 1
    assert store.finish(again, ok=False, last=Run("h", False, "E: y", 3.0, 4.0))
    stored = store.get("q0")
    assert stored is not None and stored.status is EventStatus.FAILED and stored.handlers["h"].attempts == 2

    # an upstream redelivery of a failed event buys it one more run
    assert store.accept(event("q0")) is EventStatus.FAILED
    last = store.claim_due()
    assert last is not None and last.event_id == "q0" and last.attempt == 3
    assert store.finish(last, ok=True, last=Run("h", True, None, 5.0, 6.0))
    assert store.accept(event("q0")) is EventStatus.PROCESSED
    assert all(store.finish(c, ok=True) for c in taken if c)
    assert store.claim_due() is None and store.count_due() == 0


def test_an_expired_lease_is_due_and_a_renewed_one_is_not(make_store: Callable[[float], EventStore]) -> None:
    store = make_store(0.4)
    store.accept(event("held"))
    time.sleep(0.002)
    store.accept(event("dead"))
    held, dead = store.claim_due(), store.claim_due()
    assert held is not None and dead is not None and (held.event_id, dead.event_id) == ("held", "dead")
    for _ in range(4):
        time.sleep(0.15)
        assert store.renew(held)
    assert store.count_due() == 1, "only the lease that was not renewed ran out"
    taken = store.claim_due()
    assert taken is not None and taken.event_id == "dead" and taken.attempt == 2
    assert store.claim_due() is None
    assert not store.finish(dead, ok=True), "the dead worker's write is fenced off"
    assert store.finish(taken, ok=True) and store.finish(held, ok=True)
    assert store.count_due() == 0


def test_a_finished_claim_writes_nothing_more(store: EventStore) -> None:
    claim = store.claim(event())
    assert store.finish(claim, ok=True)
    assert not store.finish(claim, ok=False) and not store.renew(claim)
    stored = store.get("e-1")
    assert stored is not None and stored.status is EventStatus.PROCESSED


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
    assert store.prune(time.time() + 1, dry_run=True) == 2 and len(store.events()) == 4, "a dry run forgets nothing"
    assert store.prune(time.time() + 1) == 2, "failed events are kept unless asked"
    assert [e.id for e in store.events()] == ["pending", "e1"]
    assert store.prune(time.time() + 1, include_failed=True, dry_run=True) == 1
    assert store.prune(time.time() + 1, include_failed=True) == 1, "pending events are never pruned"
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


@pytest.mark.parametrize("url", ["redis://:hunter2@127.0.0.1:1/15", "redis://user:hunter2@127.0.0.1:1/15",
                                 "redis://127.0.0.1:1/15?password=hunter2", "redis://127.0.0.1:1/15?db=3&password=hunter2",
                                 "unix:///tmp/no-such-redis.sock?password=hunter2"])
def test_redis_passwords_are_hidden_in_every_form(redis_prefix: str, url: str) -> None:
    from flask import Flask

    from webhook_receiver import WebhookReceiver

    store = RedisStore(url, prefix=redis_prefix, timeout=0.5)
    assert "hunter2" not in repr(store) + store.url and "***" in store.url
    with pytest.raises(StoreUnavailable) as info:
        store.claim(event())
    assert "hunter2" not in str(info.value)
    app = Flask(__name__)
    app.config.update(WEBHOOK_RECEIVER_SECRET_KEY="a-long-enough-secret-1234", WEBHOOK_RECEIVER_STORE=url)
    receiver = WebhookReceiver(app)
    assert "hunter2" not in repr(receiver.get_config(app))


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


def test_memory_store_refuses_rather_than_forget_unfinished_events() -> None:
    store = MemoryStore(max_events=3)
    for n in range(3):
        assert store.accept(event(f"m{n}")) is None
    with pytest.raises(StoreUnavailable, match="unfinished"):
        store.accept(event("m3"))
    claim = store.claim_due()
    assert claim is not None and store.finish(claim, ok=True)
    assert store.accept(event("m3")) is None, "a finished event makes room"
    assert store.get("m0") is None and store.get("m3") is not None


def test_watermarks_only_go_up(store: EventStore) -> None:
    assert store.watermark("h", "order", "o-1") is None
    store.raise_watermark("h", "order", "o-1", 200.5)
    store.raise_watermark("h", "order", "o-1", 100.0)
    assert store.watermark("h", "order", "o-1") == 200.5
    store.raise_watermark("h", "order", "o-1", 300.25)
    assert store.watermark("h", "order", "o-1") == 300.25
    assert store.watermark("other", "order", "o-1") is None and store.watermark("h", "order", "o-2") is None


@pytest.mark.parametrize("setting", [None, "sqlite:///events.sqlite3", "sqlite:///nested/events.sqlite3"])
def test_sqlite_files_are_private_and_a_relative_path_works_in_a_new_instance_folder(
        tmp_path: Path, setting: str | None) -> None:
    """Customers' names, addresses and emails: 0600 files in a 0700 folder the library makes."""
    import os
    import stat

    from flask import Flask

    from webhook_receiver import WebhookReceiver
    from webhook_receiver.testing import deliver

    instance = tmp_path / "instance-not-there-yet"
    app = Flask(__name__, instance_path=str(instance))
    app.config.update(WEBHOOK_RECEIVER_SECRET_KEY="a-long-enough-secret-1234", WEBHOOK_RECEIVER_STORE=setting)
    receiver = WebhookReceiver(app)
    receiver.on("order.paid")(lambda e: None)
    answer = deliver(app.test_client(), make_event("order.paid"), secret="a-long-enough-secret-1234")
    assert answer.status_code == 200, answer.get_json()
    files = [p for p in instance.rglob("*") if p.is_file()]
    assert {p.name.rsplit(".sqlite3", 1)[-1] for p in files} == {"", "-wal", "-shm"}
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    for folder in {p.parent for p in files}:
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700, folder


class SteppedClock:
    """A controllable clock: the wall clock can be stepped, the monotonic one advanced, the machine rebooted."""

    def __init__(self, boot: str = "boot-1") -> None:
        self.boot: str | None = boot
        self.wall_offset = 0.0
        self.monotonic = 1_000.0

    def wall(self) -> float:
        return time.time() + self.wall_offset

    def lease(self) -> float:
        return self.monotonic


@pytest.mark.parametrize("step", [+3600.0, -86400.0])
def test_sqlite_leases_ignore_wall_clock_steps(tmp_path: Path, step: float) -> None:
    clock = SteppedClock()
    path = str(tmp_path / "clock.sqlite3")
    holder = SQLiteStore(path, lease_seconds=30, clock=clock)  # type: ignore[arg-type]
    other = SQLiteStore(path, lease_seconds=30, clock=clock)  # type: ignore[arg-type]
    holder.accept(event("held"))
    held = holder.claim_due()
    assert held is not None
    clock.wall_offset = step  # an hour forward, or a day back
    assert other.claim_due() is None and other.claim(event("held")).state is ClaimState.BUSY, \
        "a forward step does not let another worker take a running event"
    clock.monotonic += 31  # the lease's real length has passed: a backward step blocks it no longer
    taken = other.claim_due()
    assert taken is not None and taken.event_id == "held"
    assert not holder.finish(held, ok=True)


def test_sqlite_leases_of_an_earlier_boot_have_run_out(tmp_path: Path) -> None:
    before = SteppedClock("boot-1")
    path = str(tmp_path / "reboot.sqlite3")
    first = SQLiteStore(path, lease_seconds=30, clock=before)  # type: ignore[arg-type]
    first.accept(event("interrupted"))
    assert first.claim_due() is not None
    after = SteppedClock("boot-2")
    after.monotonic = 5.0  # the monotonic clock starts again at boot, far below the lease's end
    rebooted = SQLiteStore(path, lease_seconds=30, clock=after)  # type: ignore[arg-type]
    taken = rebooted.claim_due()
    assert taken is not None and taken.event_id == "interrupted", "not blocked until the old lease's end"
    assert rebooted.claim_due() is None
