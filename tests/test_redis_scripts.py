"""The Redis store's scripts: a server that lost them, and events written by the previous release's scripts.

The claim is sent by its digest (``EVALSHA``) in the same ``MULTI`` as the new
event's body, which goes into a hash of the claim's own that the script renames
to the event's. These tests run on a redis-server of their own (a
``SCRIPT FLUSH`` on the shared one would disturb every other client of it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from webhook_receiver import Event
from webhook_receiver.stores import ClaimState, EventStatus
from webhook_receiver.stores.base import Run
from webhook_receiver.stores.redis import RedisStore
from webhook_receiver.testing import make_event

from .conftest import require_redis
from .processes import Processes, free_port


@pytest.fixture
def server(processes: Processes, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """A redis-server of this test's own (no persistence): an admin client and its URL."""
    import redis

    require_redis()
    port = free_port()
    processes.redis_server(port, tmp_path / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"
    admin = redis.Redis.from_url(url)
    yield admin, url
    admin.close()


def event(event_id: str) -> Event:
    return Event.from_dict(make_event("order.paid", event_id=event_id))


def keys(admin: Any) -> set[str]:
    return {key.decode() for key in admin.keys("*")}


def test_a_claim_after_the_server_lost_its_scripts_is_whole(server: tuple[Any, str]) -> None:
    admin, url = server
    store = RedisStore(url, prefix="whr-flush")
    first = store.claim(event("first"))
    assert first.state is ClaimState.CLAIMED and store.finish(first, ok=True)
    admin.script_flush()
    claim = store.claim(event("second"))  # NOSCRIPT inside the EXEC: loaded, and the transaction sent again
    assert claim.state is ClaimState.CLAIMED and claim.attempt == 1
    stored = store.get("second")
    assert stored is not None and stored.status is EventStatus.PROCESSING and stored.raw["id"] == "second"
    assert [e.id for e in store.events()] == ["second", "first"]
    admin.script_flush()
    assert store.finish(claim, ok=True)  # the finish's EVALSHA loads its script too
    stored = store.get("second")
    assert stored is not None and stored.status is EventStatus.PROCESSED
    assert not [key for key in keys(admin) if ":body:" in key]  # every claim's body hash renamed or dropped
    admin.script_flush()
    assert store.claim(event("second")).state is ClaimState.DONE
    assert not [key for key in keys(admin) if ":body:" in key]
    store.close()


def test_a_claim_whose_script_did_not_run_leaves_only_a_body_that_expires(server: tuple[Any, str]) -> None:
    # What a process that dies between the refused transaction and its retry leaves behind.
    admin, url = server
    store = RedisStore(url, prefix="whr-half")
    assert store.claim(event("warm")).state is ClaimState.CLAIMED  # the prefix is taken, the scripts loaded
    before = keys(admin)
    admin.script_flush()
    root = "whr-half"
    claim_keys = [f"{root}:event:lost", f"{root}:queue", f"{root}:leases", f"{root}:events", f"{root}:body:t-1"]
    answer = store._link.claim_once(
        store._link.connection(), claim_keys, ["lost", "t-1", 60000, "order.paid"], b'{"id": "lost"}'
    )
    assert isinstance(answer[2], store._link.no_script)
    assert keys(admin) - before == {f"{root}:body:t-1"}  # no event, no index entry: nothing half claimed
    assert 0 < admin.pttl(f"{root}:body:t-1") <= 60000
    assert store.get("lost") is None and [e.id for e in store.events()] == ["warm"]
    claim = store.claim(event("lost"))  # upstream's retry finds a new event
    assert claim.state is ClaimState.CLAIMED and claim.attempt == 1
    assert admin.pttl(f"{root}:event:lost") == -1  # the renamed hash lost the body's expiry
    store.close()


def test_the_renamed_body_keeps_no_expiry_and_a_duplicate_drops_its_body(server: tuple[Any, str]) -> None:
    admin, url = server
    store = RedisStore(url, prefix="whr-ttl")
    claim = store.claim(event("one"))
    assert admin.pttl("whr-ttl:event:one") == -1
    assert store.claim(event("one")).state is ClaimState.BUSY
    assert store.finish(claim, ok=True)
    assert store.claim(event("one")).state is ClaimState.DONE
    assert sorted(keys(admin)) == ["whr-ttl:event:one", "whr-ttl:events", "whr-ttl:owner"]
    store.close()


def _old_hash(**fields: Any) -> dict[str, Any]:
    """An event's hash as the previous release's scripts wrote it (Lua numbers formatted by ``%.17g``)."""
    base = {
        "trigger": "order.paid",
        "raw": b'{"id": "old", "trigger": "order.paid"}',
        "attempts": 1,
        "received_at": "1796172525.9070001",
        "updated_at": "1796172525.9070001",
    }
    base.update(fields)
    return base


def test_events_written_by_the_previous_release_are_claimed_finished_and_read(server: tuple[Any, str]) -> None:
    admin, url = server
    store = RedisStore(url, prefix="whr-old")
    now_ms = int(time.time() * 1000)
    admin.set("whr-old:owner", "moltin")
    outcomes = '{"a":[true,null,1,1.0,2.0]}'
    admin.hset(
        "whr-old:event:failed",
        mapping=_old_hash(status="failed", outcomes=outcomes, error="ValueError: no", due_at=now_ms - 1000),
    )
    admin.hset(
        "whr-old:event:held",
        mapping=_old_hash(status="processing", token="x-1", lease_expires=now_ms + 60_000),
    )
    admin.hset("whr-old:event:done", mapping=_old_hash(status="processed"))
    admin.zadd("whr-old:events", {"failed": 1796172525.907, "held": 1796172525.907, "done": 1796172525.907})
    stored = store.get("failed")
    assert stored is not None and stored.received_at == pytest.approx(1796172525.907)
    assert store.claim(event("done")).state is ClaimState.DONE
    assert store.claim(event("held")).state is ClaimState.BUSY
    claim = store.claim(event("failed"))
    assert claim.state is ClaimState.CLAIMED and claim.attempt == 2 and set(claim.outcomes) == {"a"}
    assert store.finish(claim, ok=True, last=Run("b", True, None, 3.0, 4.0))
    stored = store.get("failed")
    assert stored is not None and stored.status is EventStatus.PROCESSED and stored.error is None
    assert stored.due_at is None and set(stored.handlers) == {"a", "b"} and stored.attempts == 2
    assert stored.raw["id"] == "old" and stored.updated_at >= time.time() - 60
    # what this release writes, the previous one reads: the same fields, numbers as decimal text
    fields = admin.hgetall("whr-old:event:failed")
    assert {b"token", b"lease_expires", b"due_at", b"error"}.isdisjoint(fields)
    assert float(fields[b"updated_at"]) > 0 and int(fields[b"attempts"]) == 2
    store.close()
