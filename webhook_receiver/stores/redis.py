"""The shared store: Redis, for many processes on many machines (extra ``[redis]``).

Each step of the protocol is one Lua script, so a claim is atomic across every
process that talks to the same Redis. A claim's lease is a key with an expiry:
when a worker dies mid-handler, the key expires and the next delivery takes
the event over.

Keys, under a prefix (``webhook_receiver`` by default): ``<prefix>:event:<id>``
(a hash: trigger, status, raw, times), ``<prefix>:lease:<id>``,
``<prefix>:outcomes:<id>`` (a hash of JSON outcomes by handler name) and
``<prefix>:events`` (a sorted set of ids by time received).
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

from ..errors import StoreUnavailable
from ..events import Event
from .base import Claim, ClaimState, EventStatus, EventStore, HandlerOutcome, Run, StoredEvent

__all__ = ["RedisStore"]

_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'processed' then return {'done'} end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'busy'} end
if not status then
  redis.call('HSET', KEYS[1], 'trigger', ARGV[4], 'status', 'processing', 'raw', ARGV[5],
             'received_at', ARGV[3], 'updated_at', ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[6])
  return {'claimed'}
end
redis.call('HSET', KEYS[1], 'status', 'processing', 'updated_at', ARGV[3])
local succeeded = {'claimed'}
local outcomes = redis.call('HGETALL', KEYS[4])
for i = 1, #outcomes, 2 do
  if cjson.decode(outcomes[i + 1])['ok'] then table.insert(succeeded, outcomes[i]) end
end
return succeeded
"""

_RECORD = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
local attempts = 1
if previous then attempts = cjson.decode(previous)['attempts'] + 1 end
local outcome = cjson.decode(ARGV[2])
outcome['attempts'] = attempts
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(outcome))
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'updated_at', ARGV[3]) end
return attempts
"""

_FINISH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at', ARGV[3])
redis.call('DEL', KEYS[2])
return 1
"""

_ACCEPT = """
local status = redis.call('HGET', KEYS[1], 'status')
if status then return status end
redis.call('HSET', KEYS[1], 'trigger', ARGV[2], 'status', 'pending', 'raw', ARGV[3],
           'received_at', ARGV[1], 'updated_at', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[4])
return false
"""


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise RuntimeError(
            "the Redis store needs the redis package: pip install 'webhook_receiver[redis]'"
        ) from None
    return redis


class RedisStore(EventStore):
    """Events in Redis, shared by every process and machine that reaches it.

    :param url: a Redis URL, such as ``redis://127.0.0.1:6379/0``.
    :param prefix: the prefix of every key.
    :param lease_seconds: see :class:`~webhook_receiver.stores.EventStore`.
    :param timeout: socket timeout in seconds.
    """

    name = "redis"

    def __init__(self, url: str, *, prefix: str = "webhook_receiver", lease_seconds: float = 60.0,
                 timeout: float = 5.0) -> None:
        super().__init__(lease_seconds=lease_seconds)
        redis = _import_redis()
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self.url = url
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._claim_script = self.client.register_script(_CLAIM)
        self._record_script = self.client.register_script(_RECORD)
        self._finish_script = self.client.register_script(_FINISH)
        self._accept_script = self.client.register_script(_ACCEPT)

    def __repr__(self) -> str:
        host = self.url.rsplit("@", 1)[-1]  # never the password
        return f"<RedisStore {host!r} prefix={self.prefix!r} lease_seconds={self.lease_seconds}>"

    def _key(self, kind: str, event_id: str = "") -> str:
        return f"{self.prefix}:{kind}:{event_id}" if event_id else f"{self.prefix}:{kind}"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise StoreUnavailable(self.name, type(exc).__name__ + ": " + str(exc).split(" (", 1)[0]) from None

    def claim(self, event: Event) -> Claim:
        token = uuid.uuid4().hex
        keys = [self._key("event", event.id), self._key("lease", event.id), self._key("events"),
                self._key("outcomes", event.id)]
        args = [token, int(self.lease_seconds * 1000), time.time(), event.trigger, json.dumps(event.raw),
                event.id]
        answer = self._call(self._claim_script, keys=keys, args=args)
        state = answer[0].decode()
        if state == "done":
            return Claim(event.id, ClaimState.DONE)
        if state == "busy":
            return Claim(event.id, ClaimState.BUSY)
        return Claim(event.id, ClaimState.CLAIMED, token, frozenset(n.decode() for n in answer[1:]))

    def record(self, claim: Claim, name: str, *, ok: bool, error: str | None,
               started_at: float, finished_at: float) -> None:
        self._call(self._record_script, keys=self._record_keys(claim),
                   args=self._record_args(Run(name, ok, error, started_at, finished_at)))

    def finish(self, claim: Claim, *, ok: bool, last: Run | None = None) -> None:
        if last is None:
            return self._finish(claim, ok=ok)
        pipe = self.client.pipeline(transaction=False)  # one round trip for both scripts
        self._record_script(keys=self._record_keys(claim), args=self._record_args(last), client=pipe)
        self._finish_script(keys=self._finish_keys(claim), args=self._finish_args(claim, ok), client=pipe)
        self._call(pipe.execute)
        return None

    def _record_keys(self, claim: Claim) -> list[str]:
        return [self._key("outcomes", claim.event_id), self._key("event", claim.event_id)]

    @staticmethod
    def _record_args(run: Run) -> list[Any]:
        outcome = json.dumps({"ok": run.ok, "error": run.error, "started_at": run.started_at,
                              "finished_at": run.finished_at})
        return [run.name, outcome, run.finished_at]

    def _finish_keys(self, claim: Claim) -> list[str]:
        return [self._key("event", claim.event_id), self._key("lease", claim.event_id)]

    @staticmethod
    def _finish_args(claim: Claim, ok: bool) -> list[Any]:
        return [claim.token, (EventStatus.PROCESSED if ok else EventStatus.FAILED).value, time.time()]

    def _finish(self, claim: Claim, *, ok: bool) -> None:
        self._call(self._finish_script, keys=self._finish_keys(claim), args=self._finish_args(claim, ok))

    def accept(self, event: Event) -> EventStatus | None:
        answer = self._call(self._accept_script, keys=[self._key("event", event.id), self._key("events")],
                            args=[time.time(), event.trigger, json.dumps(event.raw), event.id])
        return None if answer is None else EventStatus(answer.decode())

    def get(self, event_id: str) -> StoredEvent | None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self._key("event", event_id))
        pipe.hgetall(self._key("outcomes", event_id))
        fields, outcomes = self._call(pipe.execute)
        return self._stored(event_id, fields, outcomes) if fields else None

    def events(self, *, status: EventStatus | None = None, trigger: str | None = None,
               since: float | None = None, limit: int | None = None) -> list[StoredEvent]:
        ids = self._call(self.client.zrevrangebyscore, self._key("events"), "+inf",
                         since if since is not None else "-inf")
        found: list[StoredEvent] = []
        for raw_id in ids:
            stored = self.get(raw_id.decode())
            if stored is None:
                continue
            if (status is None or stored.status is status) and (trigger is None or stored.trigger == trigger):
                found.append(stored)
                if limit is not None and len(found) >= limit:
                    break
        return found

    def prune(self, before: float) -> int:
        ids = self._call(self.client.zrangebyscore, self._key("events"), "-inf", f"({before}")
        pruned = 0
        for raw_id in ids:
            event_id = raw_id.decode()
            status = self._call(self.client.hget, self._key("event", event_id), "status")
            if status is not None and status.decode() not in ("processed", "failed"):
                continue
            self._call(self.client.delete, self._key("event", event_id), self._key("outcomes", event_id))
            self._call(self.client.zrem, self._key("events"), event_id)
            pruned += 1
        return pruned

    def close(self) -> None:
        self.client.close()

    def _stored(self, event_id: str, fields: dict[bytes, bytes], outcomes: dict[bytes, bytes]) -> StoredEvent:
        handlers = {}
        for raw_name, raw_outcome in outcomes.items():
            name, data = raw_name.decode(), json.loads(raw_outcome)
            handlers[name] = HandlerOutcome(name, bool(data["ok"]), data.get("error"), int(data["attempts"]),
                                            float(data["started_at"]), float(data["finished_at"]))
        return StoredEvent(
            id=event_id,
            trigger=fields[b"trigger"].decode(),
            status=EventStatus(fields[b"status"].decode()),
            raw=json.loads(fields[b"raw"]),
            handlers=handlers,
            received_at=float(fields[b"received_at"]),
            updated_at=float(fields[b"updated_at"]),
        )
