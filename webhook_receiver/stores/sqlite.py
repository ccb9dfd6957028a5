"""The embedded default store: one SQLite file (WAL mode) shared by the processes of one machine.

Claims are atomic across processes: each runs in a ``BEGIN IMMEDIATE``
transaction, which SQLite serialises with a file lock. Leases are wall-clock
times, so a worker on the same machine that died mid-handler is taken over
once its lease runs out.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from ..errors import StoreUnavailable
from ..events import Event
from .base import Claim, ClaimState, EventStatus, EventStore, HandlerOutcome, Run, StoredEvent

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_events (
    id TEXT PRIMARY KEY,
    trigger_name TEXT NOT NULL,
    status TEXT NOT NULL,
    raw TEXT NOT NULL,
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    lease_token TEXT,
    lease_expires REAL
);
CREATE INDEX IF NOT EXISTS webhook_events_received ON webhook_events (received_at);
CREATE TABLE IF NOT EXISTS webhook_outcomes (
    event_id TEXT NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    ok INTEGER NOT NULL,
    error TEXT,
    attempts INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    PRIMARY KEY (event_id, name)
);
"""


class SQLiteStore(EventStore):
    """Events in a SQLite file.

    :param path: the database file; its folder must exist.
    :param lease_seconds: see :class:`~webhook_receiver.stores.EventStore`.
    :param timeout: how long to wait for another process's lock, in seconds.
    """

    name = "sqlite"

    def __init__(self, path: str, *, lease_seconds: float = 60.0, timeout: float = 5.0) -> None:
        super().__init__(lease_seconds=lease_seconds)
        self.path = path
        self.timeout = timeout
        self._local = threading.local()
        self._setup_lock = threading.Lock()
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r} lease_seconds={self.lease_seconds}>"

    # -- connections ---------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            try:
                with self._setup_lock:  # threads of one process set the file up one at a time
                    self._set_up(conn)
            except BaseException:
                conn.close()
                raise
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """WAL mode and the schema, safe when several processes open a new file at once.

        Switching to WAL takes a lock that SQLite's busy timeout does not
        always wait for, so a "locked" answer is retried until the timeout;
        the schema is created in a ``BEGIN IMMEDIATE`` transaction, which
        does wait.
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
        conn.execute("PRAGMA foreign_keys=ON")
        if not self._schema_ready:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self._schema_ready = True

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
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
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def close(self) -> None:
        self._drop_connection()

    # -- the protocol ------------------------------------------------------------------

    def claim(self, event: Event) -> Claim:
        now = time.time()
        token = uuid.uuid4().hex
        expires = now + self.lease_seconds
        with self._transaction() as conn:
            inserted = conn.execute(
                "INSERT INTO webhook_events (id, trigger_name, status, raw, received_at, updated_at,"
                " lease_token, lease_expires) VALUES (?, ?, 'processing', ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                (event.id, event.trigger, json.dumps(event.raw), now, now, token, expires),
            ).rowcount
            if inserted:
                return Claim(event.id, ClaimState.CLAIMED, token)
            status, lease_expires = conn.execute(
                "SELECT status, lease_expires FROM webhook_events WHERE id = ?", (event.id,)
            ).fetchone()
            if status == EventStatus.PROCESSED.value:
                return Claim(event.id, ClaimState.DONE)
            if status == EventStatus.PROCESSING.value and lease_expires is not None and lease_expires > now:
                return Claim(event.id, ClaimState.BUSY)
            conn.execute(
                "UPDATE webhook_events SET status = 'processing', lease_token = ?, lease_expires = ?,"
                " updated_at = ? WHERE id = ?",
                (token, expires, now, event.id),
            )
            succeeded = frozenset(
                name for (name,) in conn.execute(
                    "SELECT name FROM webhook_outcomes WHERE event_id = ? AND ok = 1", (event.id,))
            )
            return Claim(event.id, ClaimState.CLAIMED, token, succeeded)

    def record(self, claim: Claim, name: str, *, ok: bool, error: str | None,
               started_at: float, finished_at: float) -> None:
        with self._transaction() as conn:
            self._record(conn, claim, Run(name, ok, error, started_at, finished_at))

    def finish(self, claim: Claim, *, ok: bool, last: Run | None = None) -> None:
        with self._transaction() as conn:  # one write for the last outcome and the status
            if last is not None:
                self._record(conn, claim, last)
            self._set_finished(conn, claim, ok)

    def _finish(self, claim: Claim, *, ok: bool) -> None:
        with self._transaction() as conn:
            self._set_finished(conn, claim, ok)

    @staticmethod
    def _record(conn: sqlite3.Connection, claim: Claim, run: Run) -> None:
        conn.execute(
            "INSERT INTO webhook_outcomes (event_id, name, ok, error, attempts, started_at, finished_at)"
            " VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT (event_id, name) DO UPDATE SET ok = excluded.ok,"
            " error = excluded.error, attempts = attempts + 1, started_at = excluded.started_at,"
            " finished_at = excluded.finished_at",
            (claim.event_id, run.name, int(run.ok), run.error, run.started_at, run.finished_at),
        )
        conn.execute("UPDATE webhook_events SET updated_at = ? WHERE id = ?", (run.finished_at, claim.event_id))

    @staticmethod
    def _set_finished(conn: sqlite3.Connection, claim: Claim, ok: bool) -> None:
        status = EventStatus.PROCESSED if ok else EventStatus.FAILED
        conn.execute(
            "UPDATE webhook_events SET status = ?, lease_token = NULL, lease_expires = NULL,"
            " updated_at = ? WHERE id = ? AND lease_token = ?",
            (status.value, time.time(), claim.event_id, claim.token),
        )

    def accept(self, event: Event) -> EventStatus | None:
        now = time.time()
        with self._transaction() as conn:
            row = conn.execute("SELECT status FROM webhook_events WHERE id = ?", (event.id,)).fetchone()
            if row is not None:
                return EventStatus(row[0])
            conn.execute(
                "INSERT INTO webhook_events (id, trigger_name, status, raw, received_at, updated_at)"
                " VALUES (?, ?, 'pending', ?, ?, ?)",
                (event.id, event.trigger, json.dumps(event.raw), now, now),
            )
            return None

    def get(self, event_id: str) -> StoredEvent | None:
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT id, trigger_name, status, raw, received_at, updated_at FROM webhook_events"
                " WHERE id = ?", (event_id,)).fetchone()
            if row is None:
                return None
            return self._stored(conn, row)

    def events(self, *, status: EventStatus | None = None, trigger: str | None = None,
               since: float | None = None, limit: int | None = None) -> list[StoredEvent]:
        where, params = [], []  # type: tuple[list[str], list[Any]]
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if trigger is not None:
            where.append("trigger_name = ?")
            params.append(trigger)
        if since is not None:
            where.append("received_at >= ?")
            params.append(since)
        sql = "SELECT id, trigger_name, status, raw, received_at, updated_at FROM webhook_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY received_at DESC, rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._transaction(write=False) as conn:
            return [self._stored(conn, row) for row in conn.execute(sql, params).fetchall()]

    def prune(self, before: float) -> int:
        with self._transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM webhook_events WHERE received_at < ? AND status IN ('processed', 'failed')",
                (before,))
            return cursor.rowcount

    def _stored(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> StoredEvent:
        event_id, trigger, status, raw, received_at, updated_at = row
        handlers = {
            name: HandlerOutcome(name, bool(ok), error, attempts, started, finished)
            for name, ok, error, attempts, started, finished in conn.execute(
                "SELECT name, ok, error, attempts, started_at, finished_at FROM webhook_outcomes"
                " WHERE event_id = ? ORDER BY started_at", (event_id,))
        }
        return StoredEvent(event_id, trigger, EventStatus(status), json.loads(raw), handlers,
                           received_at, updated_at)
