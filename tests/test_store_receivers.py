"""Receivers sharing a store (SQLite, Redis, memory): apart, and a deployment's data still its own after the upgrade.

The store contract (``test_receivers_sharing_a_store_keep_their_events_apart``)
checks that views of one store keep their events apart; these tests check
what each store adds: a SQLite file of the schema before receivers migrated
in place, Redis keys where a single-receiver deployment left them, two
receivers configured with one explicit Redis prefix, and the memory store's
views.
"""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import redis

from webhook_receiver.stores import ClaimState, EventStatus, MemoryStore, StoreSettings
from webhook_receiver.stores.redis import RedisStore
from webhook_receiver.stores.registry import open_store
from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.testing.store_contract import contract_event as event

from .conftest import REDIS_URL

#: The schema of the version before receivers were told apart, as it created files.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_receiver_events (
    id TEXT PRIMARY KEY,
    trigger_name TEXT NOT NULL,
    status TEXT NOT NULL,
    raw TEXT NOT NULL,
    outcomes TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    due_at REAL,
    lease_token TEXT,
    lease_expires REAL,
    lease_boot TEXT,
    background INTEGER
);
CREATE INDEX IF NOT EXISTS webhook_receiver_events_due ON webhook_receiver_events (due_at)
    WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS webhook_receiver_events_lease ON webhook_receiver_events (lease_expires)
    WHERE background = 1 AND lease_expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS webhook_receiver_watermarks (
    handler TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (handler, resource_type, resource_id)
);
"""


def old_file(path: Path) -> None:
    """A file as the version before wrote it: a processed, a queued and a failed event, and a watermark."""
    now = time.time()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(OLD_SCHEMA)
    rows = [
        ("done", "processed", '{"ship": [true, null, 1, 1.0, 2.0]}', None, None),
        ("queued", "pending", None, now - 1, 1),
        ("broken", "failed", '{"ship": [false, "E: x", 1, 1.0, 2.0]}', None, None),
    ]
    for n, (event_id, status, outcomes, due_at, background) in enumerate(rows):
        conn.execute(
            "INSERT INTO webhook_receiver_events (id, trigger_name, status, raw, outcomes, attempts, received_at,"
            " updated_at, due_at, background) VALUES (?, 'order.paid', ?, ?, ?, 1, ?, ?, ?, ?)",
            (event_id, status, event(event_id).raw_json.decode(), outcomes, now + n, now + n, due_at, background),
        )
    conn.execute("INSERT INTO webhook_receiver_watermarks VALUES ('ship', 'order', 'o-1', 100.5)")
    conn.commit()
    conn.close()


def test_sqlite_a_file_of_the_old_schema_is_migrated_in_place_and_stays_its_receiver_s(tmp_path: Path) -> None:
    path = tmp_path / "webhook_receiver-shop.sqlite3"  # the default file of a receiver named shop
    old_file(path)
    store = SQLiteStore(str(path), receiver="shop")
    assert [e.id for e in store.events()] == ["broken", "queued", "done"], "every row, in its order"
    done = store.get("done")
    assert done is not None and done.status is EventStatus.PROCESSED and done.handlers["ship"].ok
    assert store.claim(event("done")).state is ClaimState.DONE, "a redelivery is still a duplicate"
    assert store.count_due() == 1
    queued = store.claim_due()
    assert queued is not None and queued.event_id == "queued" and store.finish(queued, ok=True)
    assert store.watermark("ship", "order", "o-1") == 100.5
    assert store.raise_watermark("ship", "order", "o-1", 50.0) is False

    # the receiver is in the keys now: another receiver of the file sees none of it
    outlet = store.for_receiver("outlet")
    assert outlet.events() == [] and outlet.get("done") is None and outlet.count_due() == 0
    assert outlet.watermark("ship", "order", "o-1") is None
    claimed = outlet.claim(event("done"))
    assert claimed.state is ClaimState.CLAIMED and outlet.finish(claimed, ok=True)
    conn = sqlite3.connect(path)
    keys = {
        table: [row[1] for row in sorted(conn.execute(f"PRAGMA table_info({table})"), key=lambda r: r[5]) if row[5]]
        for table in ("webhook_receiver_events", "webhook_receiver_watermarks")
    }
    indexes = {
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    }
    conn.close()
    assert keys == {
        "webhook_receiver_events": ["id", "receiver"],
        "webhook_receiver_watermarks": ["receiver", "handler", "resource_type", "resource_id"],
    }
    assert indexes == {
        "webhook_receiver_events_queue",
        "webhook_receiver_events_leases",
        "webhook_receiver_events_received",
        "webhook_receiver_events_failed",
        "webhook_receiver_deliveries_event",
    }, "a migrated file gets the listing's indexes too, and the delivery log's table"

    # opened again (a restart): nothing is migrated twice, nothing lost
    again = SQLiteStore(str(path), receiver="shop")
    assert [e.id for e in again.events()] == ["broken", "queued", "done"]
    assert [e.id for e in again.for_receiver("outlet").events()] == ["done"]


def _open_old_file(path: str, n: int, queue: multiprocessing.Queue[str]) -> None:
    try:
        store = SQLiteStore(path, receiver="shop", timeout=30)
        claim = store.claim(event(f"new-{n}"))
        done = store.get("done")
        ok = claim.state is ClaimState.CLAIMED and store.finish(claim, ok=True) and done is not None
        queue.put("ok" if ok else "wrong")
    except Exception as exc:  # noqa: BLE001 - the test reports it
        queue.put(repr(exc))


def test_sqlite_an_old_file_opened_by_several_processes_at_once_is_migrated_once(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    old_file(path)
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[str] = ctx.Queue()
    procs = [ctx.Process(target=_open_old_file, args=(str(path), n, queue)) for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert sorted(queue.get(timeout=5) for _ in procs) == ["ok"] * 4
    store = SQLiteStore(str(path), receiver="shop")
    assert sorted(e.id for e in store.events()) == sorted(["broken", "queued", "done"] + [f"new-{n}" for n in range(4)])


def test_redis_a_single_receiver_s_keys_stay_where_they_were(redis_prefix: str) -> None:
    # The version before wrote these keys, and no owner: the first receiver to use the
    # prefix after the upgrade owns it, so its keys stay its own.
    before = RedisStore(REDIS_URL, prefix=redis_prefix, receiver="shop")
    done = before.claim(event("done"))
    assert before.finish(done, ok=True)
    assert before.accept(event("queued")) is None
    assert before.raise_watermark("ship", "order", "o-1", 100.5)
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(f"{redis_prefix}:owner")
    layout = {k.decode() for k in client.scan_iter(f"{redis_prefix}:*")}
    assert layout == {
        f"{redis_prefix}:{name}" for name in ("event:done", "event:queued", "events", "queue", "watermarks")
    }, "the keys, as the version before named them"

    # a tool that only looks, as the default receiver, before the app starts: it sees the
    # keys as they are and takes nothing
    looking = RedisStore(REDIS_URL, prefix=redis_prefix)
    assert sorted(e.id for e in looking.events()) == ["done", "queued"] and looking.count_due() == 1
    assert looking.get("done") is not None and looking.watermark("ship", "order", "o-1") == 100.5
    assert looking.prune(time.time() + 60, dry_run=True) == 1
    assert client.get(f"{redis_prefix}:owner") is None

    after = RedisStore(REDIS_URL, prefix=redis_prefix, receiver="shop")
    assert after.claim(event("done")).state is ClaimState.DONE
    queued = after.claim_due()
    assert queued is not None and queued.event_id == "queued" and after.finish(queued, ok=True)
    assert after.watermark("ship", "order", "o-1") == 100.5
    assert client.get(f"{redis_prefix}:owner") == b"shop"
    client.close()


def test_redis_two_receivers_configured_with_one_prefix_keep_their_events_apart(
    redis_prefix: str, tmp_path: Path
) -> None:
    config = {"WEBHOOK_RECEIVER_REDIS_PREFIX": redis_prefix}

    def opened(receiver: str) -> RedisStore:
        store = open_store(REDIS_URL, StoreSettings(receiver, 30.0, str(tmp_path), config))
        assert isinstance(store, RedisStore) and store.receiver == receiver
        return store

    shop, outlet = opened("shop"), opened("outlet")
    assert shop.accept(event("same")) is None
    assert outlet.get("same") is None and outlet.count_due() == 0 and outlet.claim_due() is None
    theirs = outlet.claim(event("same"))
    assert theirs.state is ClaimState.CLAIMED, "the same id is outlet's own event"
    mine = shop.claim_due()
    assert mine is not None and mine.event_id == "same" and shop.finish(mine, ok=True)
    assert outlet.finish(theirs, ok=False)
    client = redis.Redis.from_url(REDIS_URL)
    assert client.hget(f"{redis_prefix}:event:same", "status") == b"processed", "shop used the prefix first"
    assert client.hget(f"{redis_prefix}:receiver:outlet:event:same", "status") == b"failed"
    client.close()

    # a process started later finds the same split, whichever receiver it opens first
    later_outlet, later_shop = opened("outlet"), opened("shop")
    stored = later_outlet.get("same")
    assert stored is not None and stored.status is EventStatus.FAILED
    stored = later_shop.get("same")
    assert stored is not None and stored.status is EventStatus.PROCESSED


def test_memory_each_receiver_has_state_of_its_own_and_one_view() -> None:
    store = MemoryStore(max_events=2)
    shop = store.for_receiver("shop")
    assert store.for_receiver("shop") is shop and shop.for_receiver("moltin") is store
    assert shop.for_receiver("outlet") is store.for_receiver("outlet")
    assert shop.accept(event("a")) is None and shop.accept(event("b")) is None  # shop's slots are full
    assert store.get("a") is None and store.count_due() == 0
    assert store.accept(event("a")) is None, "the default receiver has slots of its own"
    assert shop.raise_watermark("h", "order", "o-1", 10.0)
    assert store.watermark("h", "order", "o-1") is None
