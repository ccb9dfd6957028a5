"""The shared store: Redis, for many processes on many machines (extra ``[redis]``).

Each step of the protocol is one Lua script, so it is atomic across every
process that talks to the same Redis, and every time in it is the Redis
server's clock (``TIME``): machines whose clocks disagree still agree on who
holds a lease.

Keys, under a root: ``<root>:event:<id>`` (a hash: trigger, status, raw,
outcomes, attempts, error, times, the lease's token and expiry),
``<root>:queue`` (a sorted set of pending event ids by due time, in ms),
``<root>:leases`` (a sorted set of held event ids by lease expiry, in ms;
only events that came through the queue: a request that died mid-handler
answered no 2xx, and upstream's retry takes its event over)
``<root>:events`` (a sorted set of every event id by time received, in
s), ``<root>:failed`` (a set of the failed event ids, for the backlog's
count; ``<root>:failed_counted`` says it holds the events failed before it was
kept too), ``<root>:watermarks`` (a hash of the newest ``updated_at`` per
handler and resource, for ``latest_only`` handlers) and
``<root>:deliveries:<id>`` (a list of an event's delivery attempts after its
first, the newest ``MAX_DELIVERIES``, written on the cold paths only). The two sorted sets find
due events and expired leases in O(log n). ``<root>:body:<token>`` lives
only inside a claim's transaction: the new event's body, renamed to its
``event`` hash by the claim script (see :meth:`_Link.claim`); it expires by
itself if the script did not run.

Receivers sharing a prefix keep their keys apart: one receiver owns the
prefix (``<prefix>:owner`` holds its name, set once), the app's first:
``init_app`` makes it the owner as it starts or, when the server does not
answer then, the first write of any of the app's receivers does (a store used
without ``init_app``: the first receiver to write). The owner's root
is the prefix itself, as before receivers were told apart, so that the keys
of a single-receiver deployment stay its own after an upgrade; any other
receiver's root is ``<prefix>:receiver:<name>`` (receiver names have no
``:``, and no key of the owner's starts with ``<prefix>:receiver:``).

Fork safety: the client (its connection pool) and the scripts are held by a
:class:`_Link` that the views of one store share; in a forked child
(``gunicorn --preload``) :meth:`RedisStore.after_fork` gives it a new client,
so that the child never shares a socket with its parent nor waits on a pool
lock that a parent thread held at fork time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from .. import fastjson
from ..errors import StoreUnavailable
from ..events import Event
from .base import (
    DEFAULT_RECEIVER,
    MAX_DELIVERIES,
    BacklogStats,
    Claim,
    ClaimState,
    DeliveryAttempt,
    EventStatus,
    EventStore,
    HourCount,
    Run,
    StoredEvent,
    dump_delivery,
    dump_outcomes,
    finished_status,
    hour_start,
    leaves_to_queue,
    load_delivery,
    load_outcomes,
    load_raw,
    new_token,
    prunable,
)

__all__ = ["RedisStore"]

_NOW = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The set of failed events (``<root>:failed``), named from the queue's key (``<root>:queue``) in the scripts of
# the hot path rather than sent as one more key: only an event that fails or stops being failed touches it, and
# every other delivery would pay for the argument (the claim-due script reaches event keys the same way).
_FAILED = "string.sub(KEYS[2], 1, -6) .. 'failed'"

# The server's clock as the text of seconds with milliseconds (``received_at``, ``updated_at``) and as a number of
# milliseconds (``now``), made from TIME's two strings with string operations only: a Lua number turned into text
# goes through the C library's float formatting, a large part of a script's cost.
_CLOCK = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local us = t[2]
local ms = string.sub(string.rep('0', 6 - #us) .. us, 1, 3)
local sec = t[1] .. '.' .. ms
local now = t[1] * 1000 + ms
"""

# KEYS: event, queue, leases, events, body; ARGV: id, token, lease ms, trigger. Sent by its digest (EVALSHA) after
# the new event's body in the same MULTI (see _Link.claim): the body is a hash of its own under a key of this
# claim's (``<root>:body:<token>``) that expires by itself; a new event's hash is that one, renamed, so that the body
# never goes through Lua (which would hash its every byte to intern it); any other event's claim drops it.
_CLAIM = (
    """
local k = KEYS[1]
local f = redis.call('HMGET', k, 'status', 'lease_expires', 'background', 'outcomes')
local status = f[1]
if status then redis.call('DEL', KEYS[5]) end
if status == 'processed' then return {'done'} end
"""
    + _CLOCK
    + """
if status == 'processing' then
  local held = tonumber(f[2])
  if held and held > now then return {'busy'} end
end
local expires = now + ARGV[3]
if not status then
  redis.call('RENAME', KEYS[5], k)
  redis.call('PERSIST', k)
  redis.call('HSET', k, 'trigger', ARGV[4], 'status', 'processing', 'attempts', '1', 'received_at', sec,
             'updated_at', sec, 'token', ARGV[2], 'lease_expires', expires)
  redis.call('ZADD', KEYS[4], sec, ARGV[1])
  return {'claimed', 1, ''}
end
local attempts = redis.call('HINCRBY', k, 'attempts', 1)
redis.call('HSET', k, 'status', 'processing', 'updated_at', sec, 'token', ARGV[2], 'lease_expires', expires)
redis.call('HDEL', k, 'due_at')
redis.call('ZREM', KEYS[2], ARGV[1])
if status == 'failed' then redis.call('SREM', """
    + _FAILED
    + """, ARGV[1]) end
if f[3] == '1' then redis.call('ZADD', KEYS[3], expires, ARGV[1]) end
return {'claimed', attempts, f[4] or ''}
"""
)

# KEYS: queue, leases; ARGV: token, lease ms, event key prefix
_CLAIM_DUE = (
    _NOW
    + """
for _ = 1, 20 do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1)
  if #ids == 0 then ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1) end
  if #ids == 0 then return false end
  local id = ids[1]
  local key = ARGV[3] .. id
  redis.call('ZREM', KEYS[1], id)
  if redis.call('EXISTS', key) == 1 then
    local expires = now + tonumber(ARGV[2])
    local attempts = redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HSET', key, 'status', 'processing', 'updated_at', now / 1000, 'token', ARGV[1],
               'lease_expires', expires)
    redis.call('HDEL', key, 'due_at')
    redis.call('ZADD', KEYS[2], expires, id)
    local f = redis.call('HMGET', key, 'trigger', 'raw', 'outcomes')
    return {id, attempts, f[1], f[2], f[3] or ''}
  end
  redis.call('ZREM', KEYS[2], id)
end
return false
"""
)

# KEYS: event, queue, events, leases; ARGV: id, trigger, raw
_ACCEPT = (
    _NOW
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  redis.call('HSET', KEYS[1], 'trigger', ARGV[2], 'status', 'pending', 'raw', ARGV[3], 'attempts', 0,
             'received_at', now / 1000, 'updated_at', now / 1000, 'due_at', now, 'background', 1)
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  redis.call('ZADD', KEYS[3], now / 1000, ARGV[1])
  return false
end
if status == 'failed' or status == 'resolved' then
  redis.call('HSET', KEYS[1], 'status', 'pending', 'due_at', now, 'updated_at', now / 1000, 'background', 1)
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  if status == 'failed' then redis.call('SREM', """
    + _FAILED
    + """, ARGV[1]) end
elseif status == 'processing' and redis.call('HGET', KEYS[1], 'background') ~= '1' then
  -- held by a request (claim): the queue takes it over if that lease runs out
  redis.call('HSET', KEYS[1], 'background', 1)
  local held = redis.call('HGET', KEYS[1], 'lease_expires')
  if held then redis.call('ZADD', KEYS[4], held, ARGV[1]) end
end
return status
"""
)

# KEYS: queue, leases
_COUNT_DUE = (
    _NOW
    + """
return redis.call('ZCOUNT', KEYS[1], '-inf', now) + redis.call('ZCOUNT', KEYS[2], '-inf', now)
"""
)

# KEYS: event, leases; ARGV: id, token, lease ms
_RENEW = (
    _NOW
    + """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] then return 0 end
local expires = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'lease_expires', expires)
if redis.call('HGET', KEYS[1], 'background') == '1' then redis.call('ZADD', KEYS[2], expires, ARGV[1]) end
return 1
"""
)

# KEYS: event; ARGV: token, outcomes, updated_at
_RECORD = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'outcomes', ARGV[2], 'updated_at', ARGV[3])
return 1
"""

# KEYS: event, queue, leases; ARGV: id, token, status, outcomes, error, retry delay ms ('' for none). The fields
# the finish clears (the lease's, the due time, the error of an earlier try) go in one HDEL. The status and the
# delay are read where ``{status}`` and ``{delay}`` stand: ARGV's in the finish, a choice of the script's own in
# the failure of a request's claim (below).
_FINISH_BODY = (
    """
if ARGV[5] ~= '' then
  redis.call('HSET', k, 'status', {status}, 'outcomes', ARGV[4], 'updated_at', sec, 'error', ARGV[5])
  redis.call('HDEL', k, 'token', 'lease_expires', 'due_at')
else
  redis.call('HSET', k, 'status', {status}, 'outcomes', ARGV[4], 'updated_at', sec)
  redis.call('HDEL', k, 'token', 'lease_expires', 'due_at', 'error')
end
redis.call('ZREM', KEYS[3], ARGV[1])
if {status} == 'failed' then  -- for good: the queue owes it nothing more (a new 202 says again)
  redis.call('HDEL', k, 'background')
  redis.call('SADD', """
    + _FAILED
    + """, ARGV[1])
end
if {delay} ~= '' then
  local due = now + {delay}
  redis.call('HSET', k, 'due_at', due)
  redis.call('ZADD', KEYS[2], due, ARGV[1])
end
"""
)
_FENCE = """
local k = KEYS[1]
if redis.call('HGET', k, 'token') ~= ARGV[2] then return 0 end
"""
_FINISH = _FENCE + _CLOCK + _FINISH_BODY.format(status="ARGV[3]", delay="ARGV[6]") + "return 1\n"

# The failed finish of a request's claim (ARGV as the finish's, status 'failed', no delay): an event that came
# through the queue (``background``: a 202 was answered for it) is left pending and due now instead, for the
# queue; 2 says so.
_FINISH_FAILED = (
    _FENCE
    + _CLOCK
    + """
local status, delay = ARGV[3], ARGV[6]
if redis.call('HGET', k, 'background') == '1' then status, delay = 'pending', '0' end
"""
    + _FINISH_BODY.format(status="status", delay="delay")
    + """
if status == 'pending' then return 2 end
return 1
"""
)

# KEYS: watermarks; ARGV: field, updated_at. A compare-and-set: 0 (nothing written) when a newer one is kept.
_RAISE_WATERMARK = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and tonumber(held) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: event, failed; ARGV: id. A compare-and-set on the status: 1 when a failed event is resolved now, else 0.
_RESOLVE = (
    _NOW
    + """
if redis.call('HGET', KEYS[1], 'status') ~= 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'resolved', 'updated_at', now / 1000)
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""
)

# KEYS: queue, leases, failed, failed_counted. The server's time (ms), the due events and the oldest due time of
# the queue and of the expired leases (ms, as text; false when none), the failed events, and whether the failed set
# holds the events that failed before it was kept (see RedisStore.backlog_stats): each O(log n).
_BACKLOG = (
    _NOW
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
local held = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
return {tostring(now), redis.call('ZCOUNT', KEYS[1], '-inf', now), due[2] or false,
        redis.call('ZCOUNT', KEYS[2], '-inf', now), held[2] or false, redis.call('SCARD', KEYS[3]),
        redis.call('EXISTS', KEYS[4])}
"""
)

# KEYS: events, failed; ARGV: the last id and its score counted (or ''), how many to count. The failed set built
# from the events' statuses, a page of the received index at a time, for events failed before it was kept: the
# page starts right after the last id counted (where its score starts when it was pruned meanwhile), so that an
# event pruned in between makes none skipped. Returns the page's last id and score, or false at the end.
_COUNT_FAILED = """
local start = 0
if ARGV[1] ~= '' then
  local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
  if rank then start = rank + 1 else start = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[2]) end
end
local page = redis.call('ZRANGE', KEYS[1], start, start + tonumber(ARGV[3]) - 1, 'WITHSCORES')
if #page == 0 then return false end
local prefix = string.sub(KEYS[1], 1, -7) .. 'event:'
for i = 1, #page, 2 do
  if redis.call('HGET', prefix .. page[i], 'status') == 'failed' then redis.call('SADD', KEYS[2], page[i]) end
end
return {page[#page - 1], page[#page]}
"""

# KEYS: owner; ARGV: receiver, '1' to take the prefix if no receiver owns it. The owner's name, if any.
_OWNER = """
if ARGV[2] == '1' then redis.call('SET', KEYS[1], ARGV[1], 'NX') end
return redis.call('GET', KEYS[1])
"""

#: How many events one round trip reads when listing or pruning.
_BATCH = 500


def check_url(url: str) -> None:
    """Refuse a Redis URL whose password would be read as another part of it (the message quotes none of it).

    A ``#`` starts the URL's fragment, which redis-py drops with the host,
    port and database after it: a password holding one would connect to
    the local server's database 0, without a word. Two ``@`` before the path
    make the first part of the password the host.

    :raises ValueError: saying how to write the URL instead.
    """
    if "#" in url:
        raise ValueError(
            "the Redis URL holds a '#', which ends it there (the host, port and database after it would be"
            " dropped): write a '#' inside the password as %23"
        )
    parts = urlsplit(url)
    if "://" not in url or parts.scheme.lower() == "unix":  # no host to misread; a socket's path may hold '@'
        return
    query_at, query_equals = parts.query.find("@"), parts.query.find("=")
    if (
        parts.netloc.count("@") > 1
        or "@" in parts.path  # a '/' in the password: its tail would be the database
        or (query_at >= 0 and (query_equals < 0 or query_at < query_equals))  # a '?' in the password
    ):
        raise ValueError(
            "the Redis URL has an '@' where the password would be read as another part of it: write an '@',"
            " '/' or '?' inside the password as %40, %2F or %3F (urllib.parse.quote(password, safe='') does it)"
        )


def hide_password(url: str) -> str:
    """*url* with its password hidden, in every form a Redis URL may carry one.

    ``redis://user:pw@host``, ``redis://:pw@host`` and ``?password=pw`` (any
    case) become ``***``; a URL that does not parse is hidden whole.
    """
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, host = netloc.rsplit("@", 1)
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
        query = "&".join(
            f"{name}=***" if name.lower() in ("password", "pass", "pwd") else f"{name}={value}" if value else name
            for name, value in ((pair.split("=", 1) + [""])[:2] for pair in parts.query.split("&") if pair)
        )
        hidden = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
        if url.startswith(f"{parts.scheme}://") and not hidden.startswith(f"{parts.scheme}://"):
            hidden = f"{parts.scheme}://{hidden[len(parts.scheme) + 1 :]}"  # unix:///path keeps its slashes
        return hidden
    except ValueError:
        return "redis://***"


#: The parents' clients, in a forked child: see :meth:`_Link.after_fork`.
_INHERITED: list[Any] = []


class _Link:
    """What the views of one store (:meth:`RedisStore.for_receiver`) share: the client and its scripts."""

    def __init__(self, open_client: Callable[[], Any]) -> None:
        self._open_client = open_client  # a closure: the URL's password is in no repr
        self._connect()

    def _connect(self) -> None:
        self.pid = os.getpid()
        self.client = self._open_client()
        #: This process's own connections for the hot path, one per thread (see :meth:`connection`).
        self.local = threading.local()
        register = self.client.register_script
        self.claim_script = register(_CLAIM)
        self.claim_due = register(_CLAIM_DUE)
        self.accept = register(_ACCEPT)
        self.count_due = register(_COUNT_DUE)
        self.renew = register(_RENEW)
        self.record = register(_RECORD)
        self.finish = register(_FINISH)
        self.finish_failed = register(_FINISH_FAILED)
        self.raise_watermark = register(_RAISE_WATERMARK)
        self.owner = register(_OWNER)
        self.resolve = register(_RESOLVE)
        self.backlog = register(_BACKLOG)
        self.count_failed = register(_COUNT_FAILED)
        exceptions = _import_redis().exceptions
        self.no_script, self.error = exceptions.NoScriptError, exceptions.RedisError
        self.response_error = exceptions.ResponseError

    def after_fork(self) -> None:
        """In a forked child: a client of its own (idempotent, once per process).

        The parent's client is kept, never closed nor collected here: closing
        it (or collecting it) resets its pool under the pool's lock, which a
        thread of the parent may have held at fork time, and would wait for
        it forever.
        """
        if self.pid != os.getpid():
            _INHERITED.append(self.client)
            _INHERITED.append(self.local)  # the forking thread's connection: the parent's socket, never used here
            self._connect()

    def connection(self) -> Any:
        """This thread's connection, held for the process's life (a new one in a forked child).

        The hot path's commands go straight to it (packed by :func:`_pack`,
        their replies read by :func:`_read`), past the client's pool and retry layers; the
        connection itself disconnects on any error and connects again on the
        next command.
        """
        conn = getattr(self.local, "conn", None)
        if conn is None:
            pool = self.client.connection_pool
            conn = self.local.conn = pool.connection_class(**pool.connection_kwargs)
        return conn

    def evalsha(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        """Run a registered *script* on this thread's connection, loading it first if the server lost it."""
        conn = self.connection()
        conn.send_packed_command([_pack(_EVALSHA, script.sha, len(keys), *keys, *args)], check_health=False)
        try:
            return _read(conn)
        except self.no_script:
            conn.send_packed_command([_pack(b"SCRIPT", b"LOAD", script.script)], check_health=False)
            _read(conn)
            conn.send_packed_command([_pack(_EVALSHA, script.sha, len(keys), *keys, *args)], check_health=False)
            return _read(conn)

    def claim(self, keys: list[Any], args: list[Any], raw: bytes) -> Any:
        """The claim script and the new event's body, in one transaction and one round trip.

        ``MULTI``; ``HSET`` of the body into a hash of this claim's own (the
        last of *keys*) and ``PEXPIRE`` of it; ``EVALSHA`` of the claim, which
        renames that hash to the event's when the event is new and drops it
        otherwise; ``EXEC``. The body never goes through Lua, and the script
        is sent by its digest: a server that lost its script cache
        (``SCRIPT FLUSH``, a restart) fails the ``EVALSHA`` alone, which
        leaves nothing but the claim's own body hash, expiring by itself; the
        script is then loaded and the whole transaction sent again.
        """
        conn = self.connection()
        answer = self.claim_once(conn, keys, args, raw)
        if isinstance(answer[2], self.no_script):
            conn.send_packed_command([_pack(b"SCRIPT", b"LOAD", self.claim_script.script)], check_health=False)
            _read(conn)
            answer = self.claim_once(conn, keys, args, raw)
        for reply in answer:
            if isinstance(reply, Exception):
                raise reply
        return answer[2]

    def claim_once(self, conn: Any, keys: list[Any], args: list[Any], raw: bytes) -> Any:
        """The claim's transaction, sent once in one buffer: the ``EXEC``'s answers (errors among them).

        Every reply is read, even after an error (an out-of-memory or read-only
        server refuses the queued commands and ``EXEC``): one left unread
        would be taken for the answer to the next command.
        """
        body = keys[-1].encode()
        packed = b"".join(
            (
                _BODY % (len(body), body, len(raw), raw, len(body), body),
                _pack(_EVALSHA, self.claim_script.sha, len(keys), *keys, *args),
                _EXEC,
            )
        )
        conn.send_packed_command([packed], check_health=False)
        refused: Exception | None = None
        answer: Any = None
        for _ in range(5):  # OK, QUEUED three times, the EXEC's answers
            try:
                answer = _read(conn)
            except self.response_error as exc:
                refused = refused or exc
        if refused is not None:
            raise refused
        if answer is None:
            raise self.error("the claim's transaction was aborted")
        return answer


def _pack(*args: Any) -> bytes:
    """One command in the Redis protocol, as one buffer (one ``sendall``).

    Arguments are encoded as redis-py encodes them: text as UTF-8, numbers by
    their ``repr``, bytes as they are.
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if type(arg) is bytes else _encode(arg)
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


def _encode(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return repr(arg).encode()
    raise TypeError(f"cannot send a {type(arg).__name__} to Redis")


def _read(conn: Any) -> Any:
    """The next reply on *conn*, read by its parser alone (past the connection's per-reply layers).

    An error reply is raised, as ``read_response`` raises it. A socket that
    breaks or times out leaves the connection disconnected (it connects
    again on its next command) and raises redis-py's ``ConnectionError`` or
    ``TimeoutError``, as ``read_response`` does.
    """
    try:
        reply = conn._parser.read_response()
    except BaseException as exc:
        conn.disconnect()
        if isinstance(exc, OSError):  # a socket's own error, which the parser lets through
            from redis.exceptions import ConnectionError, TimeoutError

            kind = TimeoutError if isinstance(exc, socket.timeout) else ConnectionError
            raise kind(f"Error while reading from {conn.host}:{conn.port}: {exc}") from None
        raise
    if isinstance(reply, Exception):
        raise reply
    return reply


_EVALSHA, _EXEC = b"EVALSHA", _pack(b"EXEC")
#: How long a claim's body hash outlives a transaction whose script did not run (ms): it is renamed or dropped
#: in the same transaction otherwise.
_BODY_MS = 60_000
#: ``MULTI``, then ``HSET <body key> raw <body>`` and ``PEXPIRE <body key> <_BODY_MS>``, formatted in one operation.
_BODY = b"".join(
    (
        _pack(b"MULTI"),
        b"*4\r\n$4\r\nHSET\r\n$%d\r\n%b\r\n$3\r\nraw\r\n$%d\r\n%b\r\n",
        b"*3\r\n$7\r\nPEXPIRE\r\n$%d\r\n%b\r\n" + b"$%d\r\n%d\r\n" % (len(str(_BODY_MS)), _BODY_MS),
    )
)


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise RuntimeError("the Redis store needs the redis package: pip install 'webhook_receiver[redis]'") from None
    return redis


class RedisStore(EventStore):
    """Events in Redis, shared by every process and machine that reaches it.

    :param url: a Redis URL, such as ``redis://127.0.0.1:6379/0``.
    :param prefix: the prefix of every key.
    :param lease_seconds: see :class:`~webhook_receiver.stores.EventStore`.
    :param timeout: socket timeout in seconds.
    :param receiver: the receiver this object reads and writes as; the
        others sharing the prefix are reached with :meth:`for_receiver`
        (see the module's docs for their keys).
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "webhook_receiver",
        lease_seconds: float = 60.0,
        timeout: float = 5.0,
        receiver: str = DEFAULT_RECEIVER,
    ) -> None:
        super().__init__(lease_seconds=lease_seconds)
        check_url(url)
        redis = _import_redis()
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        #: The URL with any password hidden (``redis://:***@host``, ``?password=***``).
        self.url = hide_password(url)
        self.prefix = prefix
        self.receiver = receiver
        self._link = _Link(lambda: redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout))
        self._root: str | None = None  # this receiver's root of keys, found on first use
        #: The receiver that owns the prefix when none does yet, once ``init_app`` said (the app's first).
        self._heir: str | None = None

    def __repr__(self) -> str:
        return (
            f"<RedisStore {self.url!r} prefix={self.prefix!r} receiver={self.receiver!r}"
            f" lease_seconds={self.lease_seconds}>"
        )

    @property
    def location(self) -> str:
        """The server's URL (with any password hidden) and the key prefix."""
        return f"{self.url} {self.prefix}:*"

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` client of this process."""
        return self._link.client

    def for_receiver(self, receiver: str) -> RedisStore:
        """The view of *receiver*: the same client, keys of its own (see the module's docs)."""
        other = super().for_receiver(receiver)
        assert isinstance(other, RedisStore)
        if other is not self:
            other._root = None  # found again, for the other receiver, on first use
        return other

    def after_fork(self) -> None:
        """A new client (a new connection pool) in a forked child; the parent's sockets are left alone."""
        self._link.after_fork()

    def _key(self, kind: str, event_id: str = "", *, root: str | None = None) -> str:
        root = root or self._root or self._find_root(take=True)
        return f"{root}:{kind}:{event_id}" if event_id else f"{root}:{kind}"

    def _find_root(self, *, take: bool) -> str:
        """This receiver's root of keys; with *take*, this receiver owns the prefix if no receiver did.

        Reads (listing, counting, pruning) do not take a prefix nobody owns:
        they look at the keys right under it, an earlier version's, so that a
        tool that only looks does not take them from the receiver they belong to.
        """
        heir = self._heir or self.receiver
        owner = self._call(self._link.owner, keys=[f"{self.prefix}:owner"], args=[heir, "1" if take else "0"])
        if owner is None:  # a read, with no receiver owning the prefix yet: its keys are the heir's
            return self.prefix if heir == self.receiver else f"{self.prefix}:receiver:{self.receiver}"
        self._root = root = (
            self.prefix if owner.decode() == self.receiver else f"{self.prefix}:receiver:{self.receiver}"
        )
        return root

    def adopt_earlier_data(self) -> None:
        """Own the prefix if no receiver does: the keys right under it are the app's first receiver's.

        Without this, the first receiver to write after the upgrade took the
        prefix, and a delivery to a second receiver arriving first gave it
        the first's history and its queued events.
        """
        self._heir = self.receiver
        if self._root is None:
            with contextlib.suppress(StoreUnavailable):
                self._find_root(take=True)

    def leave_earlier_data_to(self, first: EventStore) -> None:
        """Take the prefix, when this view is the first to write under it, for *first*'s receiver, if it shares it.

        The app's first receiver adopts the keys right under the prefix at
        ``init_app``; when the server did not answer then, the first write
        of any receiver of the same server, database and prefix makes that
        receiver the owner, and reads before it look at this receiver's own
        root, not at its keys. A first receiver on another store or prefix
        owns nothing here: this one's earlier keys stay its own.
        """
        if isinstance(first, RedisStore) and (first.url, first.prefix) == (self.url, self.prefix):
            self._heir = first.receiver

    def _read_root(self) -> str:
        return self._root or self._find_root(take=False)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(self.name, type(exc).__name__ + ": " + str(exc).split(" (", 1)[0])

    def _script(self, script: Any, keys: list[Any], args: list[Any]) -> Any:
        """A script on this thread's own connection (:meth:`_Link.evalsha`)."""
        try:
            return self._link.evalsha(script, keys, args)
        except self._errors as exc:
            raise self._unavailable(exc) from None

    @property
    def _lease_ms(self) -> int:
        return max(1, int(self.lease_seconds * 1000))

    # -- taking events -------------------------------------------------------------

    def claim(self, event: Event) -> Claim:
        token = new_token()
        root = self._root or self._find_root(take=True)
        try:
            answer = self._link.claim(
                [
                    f"{root}:event:{event.id}",
                    f"{root}:queue",
                    f"{root}:leases",
                    f"{root}:events",
                    f"{root}:body:{token}",
                ],
                [event.id, token, self._lease_ms, event.trigger],
                event.raw_json,
            )
        except self._errors as exc:
            raise self._unavailable(exc) from None
        state = answer[0].decode()
        if state == "done":
            return Claim(event.id, ClaimState.DONE)
        if state == "busy":
            return Claim(event.id, ClaimState.BUSY)
        return Claim(
            event.id,
            ClaimState.CLAIMED,
            token,
            attempt=int(answer[1]),
            outcomes=load_outcomes(answer[2]),
            trigger=event.trigger,
        )

    def claim_due(self) -> Claim | None:
        token = new_token()
        answer = self._call(
            self._link.claim_due,
            keys=[self._key("queue"), self._key("leases")],
            args=[token, self._lease_ms, self._key("event") + ":"],
        )
        if not answer:
            return None
        event_id, attempts, trigger, raw, outcomes = answer
        return Claim(
            event_id.decode(),
            ClaimState.CLAIMED,
            token,
            attempt=int(attempts),
            outcomes=load_outcomes(outcomes),
            trigger=trigger.decode(),
            raw=load_raw(raw),
            by_queue=True,
        )

    def accept(self, event: Event) -> EventStatus | None:
        answer = self._call(
            self._link.accept,
            keys=[self._key("event", event.id), self._key("queue"), self._key("events"), self._key("leases")],
            args=[event.id, event.trigger, event.raw_json],
        )
        return None if answer is None else EventStatus(answer.decode())

    def count_due(self) -> int:
        root = self._read_root()
        return int(
            self._call(self._link.count_due, keys=[self._key("queue", root=root), self._key("leases", root=root)])
        )

    def backlog_stats(self) -> BacklogStats:
        """One script of O(log n) reads: the queue's and the leases' sorted sets, and the set of failed events.

        The failed events are a set the scripts keep (``<root>:failed``: an
        event joins it when it fails, leaves it when it is claimed, accepted,
        resolved or pruned). Events that failed before this version kept it
        are counted into it once, the first time the store is asked: the set
        is emptied and built again from the statuses, a page of the received
        index per round trip (a failure meanwhile is added by its own script,
        whichever comes first); ``<root>:failed_counted`` then says it is
        done. A process of an earlier version still writing (a rolling
        upgrade) does not keep the set: delete that key once the upgrade is
        done, and the next read builds the set again.

        The times are the server's, told on this process's clock as how long
        ago they were.
        """
        root = self._read_root()
        keys = [self._key(kind, root=root) for kind in ("queue", "leases", "failed", "failed_counted")]
        wall = time.time()
        now, due, oldest_due, expired, oldest_held, failed, counted = self._call(self._link.backlog, keys=keys)
        if not counted:
            self._count_failed(root)
            self._call(self.client.set, keys[3], 1)
            wall = time.time()
            now, due, oldest_due, expired, oldest_held, failed, counted = self._call(self._link.backlog, keys=keys)
        wall = (wall + time.time()) / 2  # the server read its clock in between: the middle errs least
        server_now = float(now)
        oldest: float | None = None
        for score in (oldest_due, oldest_held):
            if score is not None:
                at = wall - (server_now - float(score)) / 1000  # how long ago on the server, on this clock
                oldest = at if oldest is None else min(oldest, at)
        return BacklogStats(int(due) + int(expired), oldest, int(failed))

    def _count_failed(self, root: str) -> None:
        """Build the failed set again from every stored event's status, a page of the received index at a time."""
        keys = [self._key("events", root=root), self._key("failed", root=root)]
        self._call(self.client.delete, keys[1])  # members no longer failed, left by an earlier version, go
        last: list[Any] = ["", ""]
        while True:
            page = self._call(self._link.count_failed, keys=keys, args=[*last, _BATCH])
            if not page:
                return
            last = [page[0], page[1]]

    # -- writes under a claim (fenced) --------------------------------------------

    def renew(self, claim: Claim) -> bool:
        return bool(
            self._script(
                self._link.renew,
                [self._key("event", claim.event_id), self._key("leases")],
                [claim.event_id, claim.token, self._lease_ms],
            )
        )

    def record(self, claim: Claim, run: Run) -> bool:
        outcomes = claim.with_run(run)
        written = bool(
            self._script(
                self._link.record,
                [self._key("event", claim.event_id)],
                [claim.token, dump_outcomes(outcomes), run.finished_at],
            )
        )
        if written:
            claim.outcomes = outcomes
        return written

    def finish(
        self,
        claim: Claim,
        *,
        ok: bool,
        last: Run | None = None,
        retry_at: float | None = None,
        error: str | None = None,
    ) -> bool:
        outcomes = claim.with_run(last)
        status = finished_status(ok, retry_at)
        delay = ""  # a retry is sent as a delay: the script adds it to the server's clock
        if status is EventStatus.PENDING and retry_at is not None:
            delay = str(max(0, int((retry_at - time.time()) * 1000)))
        root = self._root or self._find_root(take=True)
        script = self._link.finish_failed if not ok and leaves_to_queue(claim, ok, retry_at) else self._link.finish
        answer = self._script(
            script,
            [f"{root}:event:{claim.event_id}", f"{root}:queue", f"{root}:leases"],
            [claim.event_id, claim.token, status.value, dump_outcomes(outcomes), error or "", delay],
        )
        if answer:
            claim.outcomes = outcomes
            if answer == 2:  # the failure script left the event to the queue
                claim.requeued = True
        return bool(answer)

    # -- the out-of-order guard ---------------------------------------------------------

    @staticmethod
    def _watermark_field(handler: str, resource_type: str, resource_id: str) -> str:
        return fastjson.dumps([handler, resource_type, resource_id])

    def watermark(self, handler: str, resource_type: str, resource_id: str) -> float | None:
        held = self._call(
            self.client.hget,
            self._key("watermarks", root=self._read_root()),
            self._watermark_field(handler, resource_type, resource_id),
        )
        return None if held is None else float(held)

    def raise_watermark(self, handler: str, resource_type: str, resource_id: str, updated_at: float) -> bool:
        written = self._call(
            self._link.raise_watermark,
            keys=[self._key("watermarks")],
            args=[self._watermark_field(handler, resource_type, resource_id), repr(updated_at)],
        )
        return bool(written == 1)

    # -- reading and housekeeping -------------------------------------------------------

    def get(self, event_id: str) -> StoredEvent | None:
        fields = self._call(self.client.hgetall, self._key("event", event_id, root=self._read_root()))
        return _stored(event_id, fields) if fields else None

    def _read(self, ids: list[str], root: str) -> list[tuple[str, dict[bytes, bytes]]]:
        """The hashes of *ids* (a batch), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for event_id in ids:
            pipe.hgetall(self._key("event", event_id, root=root))
        return list(zip(ids, self._call(pipe.execute)))

    def _newest_ids(self, root: str, since: float | None, before: tuple[float, str] | None) -> Iterator[list[str]]:
        """The ids in the received index, newest first (score, then id, descending), a batch at a time."""
        key = self._key("events", root=root)
        top = repr(before[0]) if before is not None else "+inf"
        bottom = repr(since) if since is not None else "-inf"
        offset = 0
        while True:
            chunk = self._call(
                self.client.zrevrangebyscore, key, top, bottom, start=offset, num=_BATCH, withscores=True
            )
            offset += len(chunk)
            ids = [
                member.decode()
                for member, score in chunk
                if before is None or score < before[0] or member.decode() < before[1]
            ]
            if ids:
                yield ids
            if len(chunk) < _BATCH:
                return

    def events(
        self,
        *,
        status: EventStatus | None = None,
        trigger: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        before: tuple[float, str] | None = None,
    ) -> list[StoredEvent]:
        root = self._read_root()
        found: list[StoredEvent] = []
        for ids in self._newest_ids(root, since, before):
            for event_id, fields in self._read(ids, root):
                if not fields:
                    continue
                stored = _stored(event_id, fields)
                if (status is None or stored.status is status) and (trigger is None or stored.trigger == trigger):
                    found.append(stored)
                    if limit is not None and len(found) >= limit:
                        return found
        return found

    def resolve(self, event_id: str) -> bool:
        root = self._read_root()
        done = self._call(
            self._link.resolve,
            keys=[self._key("event", event_id, root=root), self._key("failed", root=root)],
            args=[event_id],
        )
        return bool(done == 1)

    def record_delivery(self, event_id: str, attempt: DeliveryAttempt) -> None:
        key = self._key("deliveries", event_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(key, dump_delivery(attempt))
        pipe.ltrim(key, -MAX_DELIVERIES, -1)
        self._call(pipe.execute)

    def deliveries(self, event_id: str) -> list[DeliveryAttempt]:
        entries = self._call(self.client.lrange, self._key("deliveries", event_id, root=self._read_root()), 0, -1)
        return [load_delivery(entry) for entry in entries]

    def count_by_hour(self, since: float) -> list[HourCount]:
        """Counted here from the received index and each event's status, read a batch per round trip.

        Redis has no query that groups, and a script that read every status
        would hold the server (and so every delivery) for the whole count.
        """
        root = self._read_root()
        key = self._key("events", root=root)
        received: dict[float, int] = {}
        failed: dict[float, int] = {}
        offset = 0
        while True:
            chunk = self._call(
                self.client.zrangebyscore, key, repr(since), "+inf", start=offset, num=_BATCH, withscores=True
            )
            offset += len(chunk)
            pipe = self.client.pipeline(transaction=False)
            for member, _ in chunk:
                pipe.hget(self._key("event", member.decode(), root=root), "status")
            statuses = self._call(pipe.execute) if chunk else []
            for (_, score), state in zip(chunk, statuses):
                if state is None:
                    continue  # pruned in between
                hour = hour_start(score)
                received[hour] = received.get(hour, 0) + 1
                failed[hour] = failed.get(hour, 0) + (state == b"failed")
            if len(chunk) < _BATCH:
                return [HourCount(hour, received[hour], failed[hour]) for hour in sorted(received)]

    def prune(self, before: float, *, include_failed: bool = False, dry_run: bool = False) -> int:
        finished = {s.value.encode() for s in prunable(include_failed)}
        root = self._read_root()
        events_key = self._key("events", root=root)
        ids = [i.decode() for i in self._call(self.client.zrangebyscore, events_key, "-inf", f"({before}")]
        pruned = 0
        for start in range(0, len(ids), _BATCH):
            batch = ids[start : start + _BATCH]
            pipe = self.client.pipeline(transaction=False)
            for event_id in batch:
                pipe.hget(self._key("event", event_id, root=root), "status")
            statuses = self._call(pipe.execute)
            old = [i for i, s in zip(batch, statuses) if s is None or s in finished]
            pruned += sum(1 for s in statuses if s is not None and s in finished)
            if not old or dry_run:
                continue
            pipe = self.client.pipeline(transaction=True)
            for event_id in old:
                # a watch-free delete: only finished events, which no worker writes any more
                pipe.delete(self._key("event", event_id, root=root), self._key("deliveries", event_id, root=root))
            pipe.zrem(events_key, *old)
            if include_failed:
                pipe.srem(self._key("failed", root=root), *old)
            self._call(pipe.execute)
        return pruned

    def close(self) -> None:
        self.client.close()


def _stored(event_id: str, fields: dict[bytes, bytes]) -> StoredEvent:
    due = fields.get(b"due_at")
    error = fields.get(b"error")
    return StoredEvent(
        id=event_id,
        trigger=fields[b"trigger"].decode(),
        status=EventStatus(fields[b"status"].decode()),
        raw=load_raw(fields.get(b"raw", b"{}")),
        handlers=load_outcomes(fields.get(b"outcomes")),
        received_at=float(fields[b"received_at"]),
        updated_at=float(fields[b"updated_at"]),
        attempts=int(fields.get(b"attempts", b"0")),
        due_at=float(due) / 1000 if due else None,
        error=error.decode() if error else None,
    )
