"""The embedded default store: one SQLite file (WAL mode) shared by the processes of one machine.

Claims are atomic across processes: each runs in a ``BEGIN IMMEDIATE``
transaction, which SQLite serialises with a file lock. Leases are wall-clock
times, so a worker on the same machine that died mid-handler is taken over
once its lease runs out.

Every row carries the receiver it belongs to (part of its key), so that
receivers sharing one file keep their events, queues and watermarks apart. A
file written before that column existed is migrated in place the first time
it is opened: its rows are given to the receiver that opens it (see
:func:`_migrate`).

Fork safety: the connections (one per thread) and the set-up lock are held by
a :class:`_Link` that the views of one store share; in a forked child
(``gunicorn --preload``) :meth:`SQLiteStore.after_fork` gives it new ones, so
that a connection the parent opened is never used in the child and a lock a
parent thread held at fork time cannot block it. A fork waits until no
thread of the process is inside a call to SQLite (:class:`_ForkGuard`):
SQLite keeps the state of a process's connections and file locks in the
process's memory, and a child forked while a thread wrote inherits that
state half-changed (the child hung, or was refused the file for its whole busy timeout).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

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
    leaves_to_queue,
    load_delivery,
    load_outcomes,
    load_raw,
    new_token,
    prunable,
)
from .clock import LeaseClock

__all__ = ["SQLiteStore"]

#: The tables. ``due_at`` is set only while an event waits in the queue,
#: ``lease_expires`` only while a worker holds it: the two partial indexes find
#: a receiver's due events and expired leases without a scan. Only events that
#: came through the queue (``background = 1``) are in the lease index: a
#: request that died mid-handler (inline dispatch) answered no 2xx, and
#: upstream's retry takes its event over. Each index costs every write that
#: changes its columns a page, so the listings' indexes hold columns that never
#: change once the row is written: ``(receiver, received_at, id, trigger_name)`` (written once,
#: by the insert, at the right edge of the tree, where its page is already in
#: the cache) serves the newest-first listing, its keyset pages and the hourly
#: counts, its trigger checked in the index, no row read for an event of
#: another trigger; a partial copy of it holds the failed events only (written
#: when an event fails or leaves that state, never on the path of one that
#: succeeds), for the failed view. The key is ``(id, receiver)``: a fenced write finds
#: its row by the id's prefix of it.
_EVENTS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    id TEXT NOT NULL,
    receiver TEXT NOT NULL DEFAULT 'moltin',
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
    background INTEGER,
    PRIMARY KEY (id, receiver)
)"""
_WATERMARKS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    receiver TEXT NOT NULL DEFAULT 'moltin',
    handler TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (receiver, handler, resource_type, resource_id)
)"""
#: Delivery attempts after an event's first (:meth:`SQLiteStore.record_delivery`): written on the cold
#: paths only, in their order (``rowid``), the newest ``MAX_DELIVERIES`` of each event kept. A table of
#: its own, created in place in a file of an earlier version.
_DELIVERIES_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    receiver TEXT NOT NULL,
    event_id TEXT NOT NULL,
    entry TEXT NOT NULL
)"""
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS webhook_receiver_events_queue ON webhook_receiver_events (receiver, due_at)"
    " WHERE due_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS webhook_receiver_events_leases ON webhook_receiver_events (receiver, lease_expires)"
    " WHERE background = 1 AND lease_expires IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS webhook_receiver_events_received ON webhook_receiver_events"
    " (receiver, received_at, id, trigger_name)",
    "CREATE INDEX IF NOT EXISTS webhook_receiver_events_failed ON webhook_receiver_events"
    " (receiver, received_at, id, trigger_name) WHERE status = 'failed'",
    "CREATE INDEX IF NOT EXISTS webhook_receiver_deliveries_event ON webhook_receiver_deliveries (receiver, event_id)",
)

_TABLE = "webhook_receiver_events"
_WATERMARKS = "webhook_receiver_watermarks"
_DELIVERIES = "webhook_receiver_deliveries"
_COLUMNS = "id, trigger_name, status, raw, outcomes, received_at, updated_at, attempts, due_at, error"


class _ForkGuard:
    """Counts this process's threads inside a call to SQLite; ``os.fork`` waits until none is.

    A fork is a snapshot of the process's memory, SQLite's own included: a
    thread inside a write at that moment leaves the child SQLite's mutexes
    held and its record of the file's locks half-changed, which no thread of
    the child will set right. So every store call runs inside :meth:`call`,
    and the fork (``gunicorn --preload`` making a worker, ``multiprocessing``)
    waits for the calls in flight, at most about a store's ``timeout``, and
    lets no new one start until it is done. A fork from inside a store call
    (a thread forking from within its own call) does not wait for itself.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._state = threading.Condition(threading.Lock())
        self._in_flight = 0
        self._forking = False
        self._held = False
        self._depth = threading.local()

    @contextmanager
    def call(self) -> Iterator[None]:
        """Run the body as one store call, which a fork waits for."""
        depth = self.enter()
        try:
            yield
        finally:
            self.leave(depth)

    def enter(self) -> int:
        """Start a store call (the hot path's form of :meth:`call`, with ``try``/``finally``).

        :returns: the depth to give :meth:`leave`.
        """
        depth: int = getattr(self._depth, "n", 0)
        if depth == 0:
            with self._state:
                while self._forking:
                    self._state.wait()
                self._in_flight += 1
        self._depth.n = depth + 1
        return depth

    def leave(self, depth: int) -> None:
        """End the store call :meth:`enter` started."""
        self._depth.n = depth
        if depth == 0:
            with self._state:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._state.notify_all()

    def before_fork(self) -> None:
        if getattr(self._depth, "n", 0):
            return  # forked from inside a store call: waiting for it would never end
        self._state.acquire()
        self._forking = True
        while self._in_flight:
            self._state.wait()
        self._held = True  # the lock is held across the fork: no call starts meanwhile

    def after_fork_in_parent(self) -> None:
        if self._held:
            self._held = False
            self._forking = False
            self._state.notify_all()
            self._state.release()

    def after_fork_in_child(self) -> None:
        self._reset()  # the parent's threads are not in the child: nothing is in flight


_FORK_GUARD = _ForkGuard()
if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(
        before=_FORK_GUARD.before_fork,
        after_in_parent=_FORK_GUARD.after_fork_in_parent,
        after_in_child=_FORK_GUARD.after_fork_in_child,
    )


class _Link:
    """What the views of one store (:meth:`SQLiteStore.for_receiver`) share: connections and the set-up lock."""

    def __init__(self) -> None:
        #: This process's connections, one per thread.
        self.local = threading.local()
        #: Held while a thread sets up a new connection (WAL mode, the schema).
        self.setup_lock = threading.Lock()
        #: Whether the schema is known to be in place (and migrated).
        self.schema_ready = False
        self.pid = os.getpid()

    def after_fork(self) -> None:
        """In a forked child: new connections, a new lock (idempotent, once per process).

        The connection the forking thread had is closed, never used: SQLite
        keeps the locks of a process's connections in the process's memory,
        which the child inherits, and only closing the connection there ends
        a lock it held (CPython frees the other threads' connections itself).
        Closing it touches nothing of the parent's: POSIX file locks are not
        inherited, and the parent's own lock on the file keeps SQLite from
        clearing the WAL.
        """
        if self.pid != os.getpid():
            inherited = getattr(self.local, "conn", None)
            self.local = threading.local()
            self.setup_lock = threading.Lock()
            self.pid = os.getpid()
            if inherited is not None:
                try:
                    inherited.close()
                except sqlite3.Error:
                    pass


class SQLiteStore(EventStore):
    """Events in a SQLite file.

    :param path: the database file; its folder must exist.
    :param lease_seconds: see :class:`~webhook_receiver.stores.EventStore`.
    :param timeout: how long to wait for another process's lock, in seconds.
    :param receiver: the receiver this object reads and writes as; the
        others sharing the file are reached with :meth:`for_receiver`.
    """

    name = "sqlite"
    reach = "machine"

    def __init__(
        self,
        path: str,
        *,
        lease_seconds: float = 60.0,
        timeout: float = 5.0,
        clock: LeaseClock | None = None,
        receiver: str = DEFAULT_RECEIVER,
    ) -> None:
        super().__init__(lease_seconds=lease_seconds)
        self.path = path
        self.timeout = timeout
        self.receiver = receiver
        #: Where times come from; leases are immune to clock steps and reboots (see :mod:`.clock`).
        self.clock = clock or LeaseClock()
        self._link = _Link()

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r} receiver={self.receiver!r} lease_seconds={self.lease_seconds}>"

    @property
    def location(self) -> str:
        """The database file."""
        return self.path

    def after_fork(self) -> None:
        """New connections and locks in a forked child; the parent's are left alone."""
        self._link.after_fork()

    # -- connections ---------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        link = self._link
        conn: sqlite3.Connection | None = getattr(link.local, "conn", None)
        if conn is None:
            _create_private(self.path)
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            try:
                with link.setup_lock:  # threads of one process set the file up one at a time
                    self._set_up(conn)
            except BaseException:
                conn.close()
                raise
            link.local.conn = conn
        return conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the schema, safe when several processes open a new file at once.

        Switching to WAL takes a lock that SQLite's busy timeout does not
        always wait for, so a "locked" answer is retried until the timeout;
        the schema is created (or migrated) in a ``BEGIN IMMEDIATE``
        transaction, which does wait.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        conn.execute("PRAGMA synchronous=NORMAL")
        if not self._link.schema_ready:
            conn.execute("BEGIN IMMEDIATE")
            try:
                _migrate(conn, self.receiver)
                conn.execute(_EVENTS_TABLE.format(name=_TABLE))
                conn.execute(_WATERMARKS_TABLE.format(name=_WATERMARKS))
                conn.execute(_DELIVERIES_TABLE.format(name=_DELIVERIES))
                for statement in _INDEXES:
                    conn.execute(statement)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self._link.schema_ready = True
            self._expire_other_boots(conn)

    def _expire_other_boots(self, conn: sqlite3.Connection) -> None:
        """Leases taken in an earlier boot have run out: their holders died with the machine."""
        if self.clock.boot is not None:
            conn.execute(
                f"UPDATE {_TABLE} SET lease_expires = 0 WHERE lease_expires IS NOT NULL"
                " AND (lease_boot IS NULL OR lease_boot != ?)",
                (self.clock.boot,),
            )

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        with _FORK_GUARD.call():
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._drop_connection()
                raise StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}") from None

    def _drop_connection(self) -> None:
        local = self._link.local
        conn = getattr(local, "conn", None)
        local.conn = None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def close(self) -> None:
        with _FORK_GUARD.call():
            self._drop_connection()

    @contextmanager
    def _autocommit(self) -> Iterator[sqlite3.Connection]:
        """A connection for one statement that is its own transaction."""
        with _FORK_GUARD.call():
            try:
                yield self._connection()
            except sqlite3.Error as exc:
                self._drop_connection()
                raise StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}") from None

    # -- the protocol ------------------------------------------------------------------

    def _new_token(self) -> tuple[str, float]:
        return new_token(), self.clock.lease() + self.lease_seconds

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        """The error a failed statement becomes; the connection, perhaps broken, is dropped."""
        self._drop_connection()
        return StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}")

    _INSERT_CLAIMED = (
        f"INSERT INTO {_TABLE} (id, receiver, trigger_name, status, raw, attempts, received_at, updated_at,"
        " lease_token, lease_expires, lease_boot) VALUES (?, ?, ?, 'processing', ?, 1, ?, ?, ?, ?, ?)"
    )

    _CLAIM_NEW = _INSERT_CLAIMED + " ON CONFLICT (id, receiver) DO NOTHING"
    _RECORD = f"UPDATE {_TABLE} SET outcomes = ?, updated_at = ? WHERE id = ? AND receiver = ? AND lease_token = ?"
    _FINISH = (
        f"UPDATE {_TABLE} SET status = ?, outcomes = ?, error = ?, due_at = ?, lease_token = NULL,"
        " lease_expires = NULL, updated_at = ? WHERE id = ? AND receiver = ? AND lease_token = ?"
    )
    #: The finish of a run that failed for good: the queue owes the event nothing more (a new 202 says again).
    _FINISH_FAILED = _FINISH.replace(" updated_at = ?", " background = NULL, updated_at = ?")

    def claim(self, event: Event) -> Claim:
        now = self.clock.wall()
        token, expires = self._new_token()
        boot = self.clock.boot
        new_row = (event.id, self.receiver, event.trigger, event.raw_json.decode(), now, now, token, expires, boot)
        depth = _FORK_GUARD.enter()
        try:  # the common case, a new event, is one statement (plain try: no context manager on the hot path)
            inserted = self._connection().execute(self._CLAIM_NEW, new_row).rowcount
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None
        finally:
            _FORK_GUARD.leave(depth)
        if inserted:
            return Claim(event.id, ClaimState.CLAIMED, token, attempt=1, trigger=event.trigger)
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT status, lease_expires, outcomes, attempts FROM {_TABLE} WHERE id = ? AND receiver = ?",
                (event.id, self.receiver),
            ).fetchone()
            if row is None:  # pruned in between: store it again
                conn.execute(self._INSERT_CLAIMED, new_row)
                return Claim(event.id, ClaimState.CLAIMED, token, attempt=1, trigger=event.trigger)
            status, lease_expires, outcomes, attempts = row
            if status == EventStatus.PROCESSED.value:
                return Claim(event.id, ClaimState.DONE)
            if (
                status == EventStatus.PROCESSING.value
                and lease_expires is not None
                and lease_expires > self.clock.lease()
            ):
                return Claim(event.id, ClaimState.BUSY)
            self._take(conn, event.id, token, expires, now, boot)
            return Claim(
                event.id,
                ClaimState.CLAIMED,
                token,
                attempt=attempts + 1,
                outcomes=load_outcomes(outcomes),
                trigger=event.trigger,
            )

    def _take(
        self, conn: sqlite3.Connection, event_id: str, token: str, expires: float, now: float, boot: str | None
    ) -> None:
        conn.execute(
            f"UPDATE {_TABLE} SET status = 'processing', due_at = NULL, lease_token = ?, lease_expires = ?,"
            " lease_boot = ?, attempts = attempts + 1, updated_at = ? WHERE id = ? AND receiver = ?",
            (token, expires, boot, now, event_id, self.receiver),
        )

    _DUE = f"SELECT id FROM {_TABLE} WHERE receiver = ? AND due_at <= ? ORDER BY due_at LIMIT 1"
    _EXPIRED = (
        f"SELECT id FROM {_TABLE} WHERE receiver = ? AND background = 1 AND lease_expires <= ?"
        " ORDER BY lease_expires LIMIT 1"
    )

    def claim_due(self) -> Claim | None:
        now, held_now = self.clock.wall(), self.clock.lease()
        due, expired = (self.receiver, now), (self.receiver, held_now)
        with self._autocommit() as conn:  # a read first: idle workers take no write lock
            if (
                conn.execute(self._DUE, due).fetchone() is None
                and conn.execute(self._EXPIRED, expired).fetchone() is None
            ):
                return None
        token, expires = self._new_token()
        with self._transaction() as conn:
            row = conn.execute(self._DUE, due).fetchone() or conn.execute(self._EXPIRED, expired).fetchone()
            if row is None:
                return None  # another worker was quicker
            event_id = row[0]
            self._take(conn, event_id, token, expires, now, self.clock.boot)
            trigger, raw, outcomes, attempts = conn.execute(
                f"SELECT trigger_name, raw, outcomes, attempts FROM {_TABLE} WHERE id = ? AND receiver = ?",
                (event_id, self.receiver),
            ).fetchone()
        return Claim(
            event_id,
            ClaimState.CLAIMED,
            token,
            attempt=attempts,
            outcomes=load_outcomes(outcomes),
            trigger=trigger,
            raw=load_raw(raw),
            by_queue=True,
        )

    def accept(self, event: Event) -> EventStatus | None:
        now = self.clock.wall()
        key = (event.id, self.receiver)
        with self._autocommit() as conn:
            inserted = conn.execute(
                f"INSERT INTO {_TABLE} (id, receiver, trigger_name, status, raw, received_at, updated_at, due_at,"
                " background) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, 1) ON CONFLICT (id, receiver) DO NOTHING",
                (*key, event.trigger, event.raw_json.decode(), now, now, now),
            ).rowcount
        if inserted:
            return None
        with self._transaction() as conn:
            row = conn.execute(f"SELECT status, background FROM {_TABLE} WHERE id = ? AND receiver = ?", key).fetchone()
            if row is None:
                return self.accept(event)
            status, background = row
            if status in (EventStatus.FAILED.value, EventStatus.RESOLVED.value):
                conn.execute(
                    f"UPDATE {_TABLE} SET status = 'pending', due_at = ?, background = 1, updated_at = ?"
                    " WHERE id = ? AND receiver = ?",
                    (now, now, *key),
                )
            elif status == EventStatus.PROCESSING.value and background != 1:
                # held by a request (claim): the queue takes it over if that lease runs out
                conn.execute(f"UPDATE {_TABLE} SET background = 1 WHERE id = ? AND receiver = ?", key)
            return EventStatus(status)

    def count_due(self) -> int:
        now, held_now = self.clock.wall(), self.clock.lease()
        with self._autocommit() as conn:
            due = conn.execute(
                f"SELECT count(*) FROM {_TABLE} WHERE receiver = ? AND due_at <= ?", (self.receiver, now)
            ).fetchone()[0]
            expired = conn.execute(
                f"SELECT count(*) FROM {_TABLE} WHERE receiver = ? AND background = 1 AND lease_expires <= ?",
                (self.receiver, held_now),
            ).fetchone()[0]
        return int(due) + int(expired)

    _BACKLOG_DUE = f"SELECT count(*), min(due_at) FROM {_TABLE} WHERE receiver = ? AND due_at <= ?"
    _BACKLOG_EXPIRED = (
        f"SELECT count(*), min(lease_expires) FROM {_TABLE} WHERE receiver = ? AND background = 1"
        " AND lease_expires <= ?"
    )
    # the status a literal: SQLite picks the partial index of failed events only then
    _BACKLOG_FAILED = f"SELECT count(*) FROM {_TABLE} WHERE receiver = ? AND status = 'failed'"

    def backlog_stats(self) -> BacklogStats:
        """Three index-only counts in one read transaction: the queue's, the leases' and the failed events' indexes."""
        now, held_now = self.clock.wall(), self.clock.lease()
        with self._transaction(write=False) as conn:
            due, oldest = conn.execute(self._BACKLOG_DUE, (self.receiver, now)).fetchone()
            expired, ran_out = conn.execute(self._BACKLOG_EXPIRED, (self.receiver, held_now)).fetchone()
            failed = conn.execute(self._BACKLOG_FAILED, (self.receiver,)).fetchone()[0]
        if ran_out is not None:  # a lease time (monotonic since boot) on the wall clock
            ran_out = now - (held_now - ran_out)
            oldest = ran_out if oldest is None else min(oldest, ran_out)
        return BacklogStats(int(due) + int(expired), oldest, int(failed))

    def renew(self, claim: Claim) -> bool:
        with self._autocommit() as conn:
            return (
                conn.execute(
                    f"UPDATE {_TABLE} SET lease_expires = ? WHERE id = ? AND receiver = ? AND lease_token = ?",
                    (self.clock.lease() + self.lease_seconds, claim.event_id, self.receiver, claim.token),
                ).rowcount
                == 1
            )

    def record(self, claim: Claim, run: Run) -> bool:
        outcomes = claim.with_run(run)
        parameters = (dump_outcomes(outcomes), run.finished_at, claim.event_id, self.receiver, claim.token)
        depth = _FORK_GUARD.enter()
        try:
            written: bool = self._connection().execute(self._RECORD, parameters).rowcount == 1
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None
        finally:
            _FORK_GUARD.leave(depth)
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
        if not ok and leaves_to_queue(claim, ok, retry_at):  # a success pays one test of ok, no call
            return self._finish_failed(claim, last, error)
        outcomes = claim.with_run(last)
        status = finished_status(ok, retry_at)
        parameters = (
            status.value,
            dump_outcomes(outcomes),
            error,
            retry_at if status is EventStatus.PENDING else None,
            self.clock.wall(),
            claim.event_id,
            self.receiver,
            claim.token,
        )
        statement = self._FINISH_FAILED if status is EventStatus.FAILED else self._FINISH
        depth = _FORK_GUARD.enter()
        try:  # one statement: the outcomes, the status, the lease
            written: bool = self._connection().execute(statement, parameters).rowcount == 1
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None
        finally:
            _FORK_GUARD.leave(depth)
        if written:
            claim.outcomes = outcomes
        return written

    def _finish_failed(self, claim: Claim, last: Run | None, error: str | None) -> bool:
        """A failed run of a request's claim: ``failed``, or ``pending`` and due now if it came through the queue.

        The row's ``background`` flag tells (set by :meth:`accept`, which
        answered a 202 for it); read and written in one transaction, under
        the claim's fence.
        """
        outcomes = claim.with_run(last)
        now = self.clock.wall()
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT background FROM {_TABLE} WHERE id = ? AND receiver = ? AND lease_token = ?",
                (claim.event_id, self.receiver, claim.token),
            ).fetchone()
            if row is None:
                return False
            requeued = row[0] == 1
            status = EventStatus.PENDING if requeued else EventStatus.FAILED
            conn.execute(
                self._FINISH if requeued else self._FINISH_FAILED,
                (
                    status.value,
                    dump_outcomes(outcomes),
                    error,
                    now if requeued else None,
                    now,
                    claim.event_id,
                    self.receiver,
                    claim.token,
                ),
            )
        claim.outcomes = outcomes
        claim.requeued = requeued
        return True

    def claim_many(self, events: Sequence[Event]) -> list[Claim]:
        """Claim *events* in one transaction: the new ones (the common case) in one ``executemany``.

        An event already stored (a redelivery) is found by its lease token
        not being this call's, and claimed on its own afterwards with
        :meth:`claim`, which reads its state (done, busy, or taken again).
        """
        if len(events) < 2:
            return [self.claim(event) for event in events]
        now = self.clock.wall()
        boot = self.clock.boot
        receiver = self.receiver
        rows = []
        for event in events:
            token, expires = self._new_token()
            rows.append((event.id, receiver, event.trigger, event.raw_json.decode(), now, now, token, expires, boot))
        mine: set[str] | None = None
        with self._transaction() as conn:
            inserted = conn.executemany(self._CLAIM_NEW, rows).rowcount
            if inserted != len(rows):  # some were stored already: which rows hold this call's tokens
                tokens = {row[6] for row in rows}
                mine = set()
                for start in range(0, len(rows), 400):  # within SQLite's limit of bound parameters
                    ids = [row[0] for row in rows[start : start + 400]]
                    found = conn.execute(
                        f"SELECT lease_token FROM {_TABLE} WHERE receiver = ? AND id IN ({', '.join('?' * len(ids))})",
                        (receiver, *ids),
                    ).fetchall()
                    mine.update(token for (token,) in found if token in tokens)
        claims = []
        for event, row in zip(events, rows):
            if mine is None or row[6] in mine:
                claims.append(Claim(event.id, ClaimState.CLAIMED, row[6], attempt=1, trigger=event.trigger))
            else:
                claims.append(self.claim(event))
        return claims

    def finish_many(self, finished: Sequence[tuple[Claim, Run | None]]) -> list[bool]:
        """Finish the claims as processed in one transaction (one ``executemany`` when every fence holds)."""
        if len(finished) < 2:
            return [self.finish(claim, ok=True, last=last) for claim, last in finished]
        now = self.clock.wall()
        receiver = self.receiver
        processed = EventStatus.PROCESSED.value
        outcomes = [claim.with_run(last) for claim, last in finished]
        parameters = [
            (processed, dump_outcomes(kept), None, None, now, claim.event_id, receiver, claim.token)
            for (claim, _), kept in zip(finished, outcomes)
        ]
        with self._transaction() as conn:
            if conn.executemany(self._FINISH, parameters).rowcount == len(parameters):
                written = [True] * len(parameters)
            else:  # a lease was taken over: undo, and write each on its own to know which
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                written = [conn.execute(self._FINISH, row).rowcount == 1 for row in parameters]
        for (claim, _), kept, ok in zip(finished, outcomes, written):
            if ok:
                claim.outcomes = kept
        return written

    def watermark(self, handler: str, resource_type: str, resource_id: str) -> float | None:
        with self._autocommit() as conn:
            row = conn.execute(
                f"SELECT updated_at FROM {_WATERMARKS} WHERE receiver = ? AND handler = ? AND"
                " resource_type = ? AND resource_id = ?",
                (self.receiver, handler, resource_type, resource_id),
            ).fetchone()
        return None if row is None else float(row[0])

    _RAISE_WATERMARK = (
        f"INSERT INTO {_WATERMARKS} (receiver, handler, resource_type, resource_id, updated_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (receiver, handler, resource_type, resource_id) DO UPDATE"
        f" SET updated_at = excluded.updated_at WHERE excluded.updated_at >= {_WATERMARKS}.updated_at"
    )

    def raise_watermark(self, handler: str, resource_type: str, resource_id: str, updated_at: float) -> bool:
        # One statement, so one atomic compare-and-set: a newer mark already kept changes no row.
        with self._autocommit() as conn:
            changed = conn.execute(
                self._RAISE_WATERMARK, (self.receiver, handler, resource_type, resource_id, updated_at)
            ).rowcount
        return bool(changed == 1)

    def get(self, event_id: str) -> StoredEvent | None:
        with self._autocommit() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM {_TABLE} WHERE id = ? AND receiver = ?", (event_id, self.receiver)
            ).fetchone()
        return None if row is None else _stored(row)

    def events(
        self,
        *,
        status: EventStatus | None = None,
        trigger: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        before: tuple[float, str] | None = None,
    ) -> list[StoredEvent]:
        where, params = ["receiver = ?"], [self.receiver]  # type: tuple[list[str], list[Any]]
        if status is not None:
            # a literal (one of the enum's values), not a parameter: SQLite picks a partial index only then
            where.append(f"status = '{EventStatus(status).value}'")
        if trigger is not None:
            where.append("trigger_name = ?")
            params.append(trigger)
        if since is not None:
            where.append("received_at >= ?")
            params.append(since)
        if before is not None:
            where.append("received_at <= ? AND (received_at < ? OR id < ?)")
            params.extend((before[0], before[0], before[1]))
        sql = f"SELECT {_COLUMNS} FROM {_TABLE} WHERE " + " AND ".join(where)
        sql += " ORDER BY received_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._autocommit() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_stored(row) for row in rows]

    def resolve(self, event_id: str) -> bool:
        with self._autocommit() as conn:
            changed = conn.execute(
                f"UPDATE {_TABLE} SET status = 'resolved', updated_at = ? WHERE id = ? AND receiver = ?"
                " AND status = 'failed'",
                (self.clock.wall(), event_id, self.receiver),
            ).rowcount
        return bool(changed == 1)

    def record_delivery(self, event_id: str, attempt: DeliveryAttempt) -> None:
        mine = (self.receiver, event_id)
        with self._transaction() as conn:
            conn.execute(
                f"INSERT INTO {_DELIVERIES} (receiver, event_id, entry) VALUES (?, ?, ?)",
                (*mine, dump_delivery(attempt)),
            )
            conn.execute(
                f"DELETE FROM {_DELIVERIES} WHERE receiver = ? AND event_id = ? AND rowid <= (SELECT rowid FROM"
                f" {_DELIVERIES} WHERE receiver = ? AND event_id = ? ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
                (*mine, *mine, MAX_DELIVERIES),
            )

    def deliveries(self, event_id: str) -> list[DeliveryAttempt]:
        with self._autocommit() as conn:
            rows = conn.execute(
                f"SELECT entry FROM {_DELIVERIES} WHERE receiver = ? AND event_id = ? ORDER BY rowid",
                (self.receiver, event_id),
            ).fetchall()
        return [load_delivery(row[0]) for row in rows]

    def change_marker(self) -> str | None:
        """``PRAGMA data_version`` (other connections' commits) and this connection's changes: no table is read."""
        with self._autocommit() as conn:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            serial = getattr(self._link.local, "serial", None)
            if serial is None or serial[0] is not conn:  # a connection's values mean nothing to another
                serial = self._link.local.serial = (conn, new_token())
            return f"{serial[1]}:{version}:{conn.total_changes}"

    def count_by_hour(self, since: float) -> list[HourCount]:
        # Two index-only scans in one read transaction: every event from the received index, the failed
        # ones from their partial index; no row is read (a status read from the rows would be one page each).
        hour = "CAST(received_at / 3600 AS INTEGER)"
        counts = f"SELECT {hour} AS hour, count(*) FROM {_TABLE} WHERE receiver = ? AND received_at >= ?"
        with self._transaction(write=False) as conn:
            received = conn.execute(counts + " GROUP BY hour ORDER BY hour", (self.receiver, since)).fetchall()
            failed = dict(
                conn.execute(counts + " AND status = 'failed' GROUP BY hour", (self.receiver, since)).fetchall()
            )
        return [HourCount(float(h * 3600), int(n), int(failed.get(h, 0))) for h, n in received]

    def prune(self, before: float, *, include_failed: bool = False, dry_run: bool = False) -> int:
        statuses = [s.value for s in prunable(include_failed)]
        where = f"receiver = ? AND received_at < ? AND status IN ({', '.join('?' for _ in statuses)})"
        params = (self.receiver, before, *statuses)
        if dry_run:
            with self._autocommit() as conn:
                found = conn.execute(f"SELECT count(*) FROM {_TABLE} WHERE {where}", params).fetchone()
            return int(found[0])
        with self._transaction() as conn:  # the events and their delivery logs together
            conn.execute(
                f"DELETE FROM {_DELIVERIES} WHERE receiver = ? AND event_id IN (SELECT id FROM {_TABLE} WHERE {where})",
                (self.receiver, *params),
            )
            return int(conn.execute(f"DELETE FROM {_TABLE} WHERE {where}", params).rowcount)


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def _migrate(conn: sqlite3.Connection, receiver: str) -> None:
    """Give a file of the schema before receivers (no ``receiver`` column) the new one, in place.

    Each table is rebuilt in the caller's transaction (SQLite cannot change
    a key in place): a new table with the ``receiver`` column in its key,
    the rows copied with their ``rowid`` (listings keep their order) and
    given to *receiver* (the one opening the file: the file was one
    receiver's before, such as the default ``webhook_receiver-<name>.sqlite3``),
    the old table and its indexes dropped, the new one renamed. A file
    already migrated, or new, is left alone.
    """
    for table, definition in ((_TABLE, _EVENTS_TABLE), (_WATERMARKS, _WATERMARKS_TABLE)):
        old = _columns(conn, table)
        if not old or "receiver" in old:
            continue
        staging = f"{table}_migrating"
        conn.execute(f"DROP TABLE IF EXISTS {staging}")
        conn.execute(definition.format(name=staging))
        kept = ", ".join(c for c in _columns(conn, staging) if c in old)
        rowid = "rowid, " if table == _TABLE else ""
        conn.execute(
            f"INSERT INTO {staging} ({rowid}receiver, {kept}) SELECT {rowid}?, {kept} FROM {table}", (receiver,)
        )
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"ALTER TABLE {staging} RENAME TO {table}")


def _create_private(path: str) -> None:
    """Create the database file readable by its owner only (SQLite gives ``-wal``/``-shm`` the same mode).

    The bodies it keeps hold customers' names, addresses and emails. An
    existing file is left as it is; a missing folder is left to the caller
    (SQLite's own error says so).
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except (FileExistsError, FileNotFoundError, NotADirectoryError):
        pass


def _stored(row: tuple[Any, ...]) -> StoredEvent:
    event_id, trigger, status, raw, outcomes, received_at, updated_at, attempts, due_at, error = row
    return StoredEvent(
        event_id,
        trigger,
        EventStatus(status),
        load_raw(raw),
        load_outcomes(outcomes),
        received_at,
        updated_at,
        attempts,
        due_at,
        error,
    )
