"""The store contract over every built-in store (memory, SQLite, a real Redis), and what each adds."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from webhook_receiver import StoreUnavailable
from webhook_receiver.stores import ClaimState, EventStore, MemoryStore
from webhook_receiver.stores.redis import RedisStore
from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.testing import make_event
from webhook_receiver.testing.store_contract import StoreContract, contract_event

from .conftest import MARIADB_URL, POSTGRES_URL, REDIS_URL, drop_tables, require_database


def closing(build: Callable[[float], EventStore]) -> Iterator[Callable[[float], EventStore]]:
    """A make_store fixture's body: builds with *build* and closes every store it built."""
    made: list[EventStore] = []

    def make(lease_seconds: float) -> EventStore:
        made.append(build(lease_seconds))
        return made[-1]

    yield make
    for store in made:
        store.close()


def on_database(url: str, table_prefix: str) -> Iterator[Callable[[float], EventStore]]:
    """A make_store fixture's body for ``SQLAlchemyStore`` on the database at *url*, its tables dropped after."""
    from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore

    require_database(url)
    yield from closing(lambda lease: SQLAlchemyStore(url, prefix=table_prefix, lease_seconds=lease))
    drop_tables(url, table_prefix)


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def make_store(self) -> Iterator[Callable[[float], EventStore]]:
        yield from closing(lambda lease: MemoryStore(lease_seconds=lease))


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[Callable[[float], EventStore]]:
        yield from closing(lambda lease: SQLiteStore(str(tmp_path / "events.sqlite3"), lease_seconds=lease))


class TestSQLAlchemyStoreOnSQLite(StoreContract):
    @pytest.fixture
    def make_store(self, tmp_path: Path) -> Iterator[Callable[[float], EventStore]]:
        from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore

        url = f"sqlite+pysqlite:///{tmp_path / 'events.sqlite3'}"
        yield from closing(lambda lease: SQLAlchemyStore(url, lease_seconds=lease))


class TestSQLAlchemyStoreOnPostgreSQL(StoreContract):
    @pytest.fixture
    def make_store(self, table_prefix: str) -> Iterator[Callable[[float], EventStore]]:
        yield from on_database(POSTGRES_URL, table_prefix)


class TestSQLAlchemyStoreOnMariaDB(StoreContract):
    @pytest.fixture
    def make_store(self, table_prefix: str) -> Iterator[Callable[[float], EventStore]]:
        yield from on_database(MARIADB_URL, table_prefix)


class TestRedisStore(StoreContract):
    @pytest.fixture
    def make_store(self, redis_prefix: str) -> Iterator[Callable[[float], EventStore]]:
        yield from closing(lambda lease: RedisStore(REDIS_URL, prefix=redis_prefix, lease_seconds=lease))


event = contract_event


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


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@127.0.0.1:1/15",
        "redis://user:hunter2@127.0.0.1:1/15",
        "redis://127.0.0.1:1/15?password=hunter2",
        "redis://127.0.0.1:1/15?db=3&password=hunter2",
        "unix:///tmp/no-such-redis.sock?password=hunter2",
    ],
)
def test_redis_passwords_are_hidden_in_every_form(redis_prefix: str, url: str) -> None:
    from flask import Flask

    from webhook_receiver import WebhookReceiver

    store = RedisStore(url, prefix=redis_prefix, timeout=0.5)
    view = store.for_receiver("outlet")
    assert "hunter2" not in repr(store) + store.url + store.location + repr(view) + view.location
    assert "***" in store.url and "***" in store.location
    assert "hunter2" not in repr(vars(store)), "the URL is kept in a closure, for a forked child's new client"
    with pytest.raises(StoreUnavailable) as info:
        store.claim(event())
    assert "hunter2" not in str(info.value)
    with pytest.raises(StoreUnavailable) as info:
        view.claim(event())
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


@pytest.mark.parametrize("setting", [None, "sqlite:///events.sqlite3", "sqlite:///nested/events.sqlite3"])
def test_sqlite_files_are_private_and_a_relative_path_works_in_a_new_instance_folder(
    tmp_path: Path, setting: str | None
) -> None:
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
    assert other.claim_due() is None and other.claim(event("held")).state is ClaimState.BUSY, (
        "a forward step does not let another worker take a running event"
    )
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


def _pages(store: EventStore, size: int) -> list[str]:
    """Every event's id, read a keyset page of *size* at a time."""
    seen: list[str] = []
    before: tuple[float, str] | None = None
    while True:
        page = store.events(limit=size, before=before)
        seen += [e.id for e in page]
        if len(page) < size:
            return seen
        before = (page[-1].received_at, page[-1].id)


def test_keyset_pages_split_events_received_at_one_time_by_id(tmp_path: Path, redis_prefix: str) -> None:
    # Five events given one received time (as two deliveries in one clock tick get): a page that ends
    # among them goes on with the next id down, none read twice or left out.
    sqlite, redis = SQLiteStore(str(tmp_path / "ties.sqlite3")), RedisStore(REDIS_URL, prefix=redis_prefix)
    memory = MemoryStore()
    for store in (sqlite, redis, memory):
        for n in range(7):
            store.finish(store.claim(event(f"t{n}")), ok=True)
    tied = ["t1", "t2", "t3", "t4", "t5"]
    at = 1_700_000_000.25
    with sqlite._autocommit() as conn:
        conn.execute(
            f"UPDATE webhook_receiver_events SET received_at = ? WHERE id IN ({','.join('?' * 5)})", (at, *tied)
        )
    client = redis.client
    for event_id in tied:
        client.hset(redis._key("event", event_id), "received_at", repr(at))
        client.zadd(redis._key("events"), {event_id: at})
    for event_id in tied:
        memory._events[event_id].received_at = at
    for store in (sqlite, redis, memory):
        newest_first = ["t6", "t0", "t5", "t4", "t3", "t2", "t1"]
        assert [e.id for e in store.events()] == newest_first, store.name
        for size in (1, 2, 3):
            assert _pages(store, size) == newest_first, (store.name, size)
        assert [e.id for e in store.events(before=(at, "t3"))] == ["t2", "t1"], store.name
    redis.close()


def test_redis_counts_the_events_failed_before_it_kept_a_set_of_them(redis_prefix: str) -> None:
    # An earlier version kept no set of failed events: the first backlog read counts them into one, a page
    # of the received index at a time, and a page whose last event was pruned meanwhile skips none.
    store = RedisStore(REDIS_URL, prefix=redis_prefix)
    for n in range(1200):
        store.finish(store.claim(event(f"old{n:04d}")), ok=n % 100 != 7)
    store.accept(event("queued"))
    client = store.client
    client.delete(f"{redis_prefix}:failed", f"{redis_prefix}:failed_counted")  # as an earlier version left it
    stats = store.backlog_stats()
    assert (stats.due, stats.failed) == (1, 12)
    assert client.exists(f"{redis_prefix}:failed_counted") == 1
    assert store.claim(event("old0007")).state is ClaimState.CLAIMED and store.backlog_stats().failed == 11
    # a process of the earlier version during a rolling upgrade: it claims a failed event, leaving it in the set
    client.hset(f"{redis_prefix}:event:old0107", "status", "processing")
    assert store.backlog_stats().failed == 11, "counted once: the set is trusted"
    client.delete(f"{redis_prefix}:failed_counted")  # the upgrade done: counted again, from the statuses
    assert store.backlog_stats().failed == 10

    # the last event of a page pruned before the next page is read: the next starts where its score did
    events_key, failed_key = f"{redis_prefix}:events", f"{redis_prefix}:failed"
    client.delete(failed_key)
    ids = [m.decode() for m in client.zrange(events_key, 0, -1)]
    cursor, score = ids[499], client.zscore(events_key, ids[499])
    client.zrem(events_key, cursor)
    page = store._link.count_failed(keys=[events_key, failed_key], args=[cursor, repr(score), 600])
    assert page is not None
    counted = {m.decode() for m in client.smembers(failed_key)}
    failed_next = {i for i in ids[500:1100] if i.startswith("old") and int(i[3:]) % 100 == 7 and i != "old0007"}
    assert len(failed_next) == 6 and failed_next <= counted, "no event after the pruned one was skipped"
