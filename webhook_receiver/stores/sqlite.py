"""The embedded default store: one SQLite file (WAL mode) shared by the processes of one machine.

Claims are atomic across processes: each runs in a ``BEGIN IMMEDIATE``
transaction, which SQLite serialises with a file lock. Leases are wall-clock
times, so a worker on the same machine that died mid-handler is taken over
once its lease runs out.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

from ..errors import StoreUnavailable
from ..events import Event
from .base import (
    Claim,
    ClaimState,
    EventStatus,
    EventStore,
    Run,
    StoredEvent,
    dump_outcomes,
    finished_status,
    load_outcomes,
    load_raw,
    prunable,
)
from .clock import LeaseClock

__all__ = ["SQLiteStore"]

#: The table and its indexes. ``due_at`` is set only while an event waits in
#: the queue, ``lease_expires`` only while a worker holds it: the two partial
#: indexes find due events and expired leases without a scan. Only events
#: that came through the queue (``background = 1``) are in the lease index:
#: a request that died mid-handler (inline dispatch) answered no 2xx, and
#: upstream's retry takes its event over. Each index costs every write a page,
#: so there are no others: listings go by ``rowid``.
_SCHEMA = """
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

_TABLE = "webhook_receiver_events"
_COLUMNS = "id, trigger_name, status, raw, outcomes, received_at, updated_at, attempts, due_at, error"


class SQLiteStore(EventStore):
    """Events in a SQLite file.

    :param path: the database file; its folder must exist.
    :param lease_seconds: see :class:`~webhook_receiver.stores.EventStore`.
    :param timeout: how long to wait for another process's lock, in seconds.
    """

    name = "sqlite"
    reach = "machine"

    def __init__(
        self, path: str, *, lease_seconds: float = 60.0, timeout: float = 5.0, clock: LeaseClock | None = None
    ) -> None:
        super().__init__(lease_seconds=lease_seconds)
        self.path = path
        self.timeout = timeout
        #: Where times come from; leases are immune to clock steps and reboots (see :mod:`.clock`).
        self.clock = clock or LeaseClock()
        self._local = threading.local()
        self._setup_lock = threading.Lock()
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r} lease_seconds={self.lease_seconds}>"

    @property
    def location(self) -> str:
        """The database file."""
        return self.path

    # -- connections ---------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            _create_private(self.path)
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

    @contextmanager
    def _autocommit(self) -> Iterator[sqlite3.Connection]:
        """A connection for one statement that is its own transaction."""
        try:
            yield self._connection()
        except sqlite3.Error as exc:
            self._drop_connection()
            raise StoreUnavailable(self.name, f"{type(exc).__name__}: {exc}") from None

    # -- the protocol ------------------------------------------------------------------

    def _new_token(self) -> tuple[str, float]:
        return secrets.token_hex(16), self.clock.lease() + self.lease_seconds

    _INSERT_CLAIMED = (
        f"INSERT INTO {_TABLE} (id, trigger_name, status, raw, attempts, received_at, updated_at, lease_token,"
        " lease_expires, lease_boot) VALUES (?, ?, 'processing', ?, 1, ?, ?, ?, ?, ?)"
    )

    def claim(self, event: Event) -> Claim:
        now = self.clock.wall()
        token, expires = self._new_token()
        boot = self.clock.boot
        new_row = (event.id, event.trigger, event.raw_json.decode(), now, now, token, expires, boot)
        with self._autocommit() as conn:  # the common case, a new event, is one statement
            inserted = conn.execute(self._INSERT_CLAIMED + " ON CONFLICT (id) DO NOTHING", new_row).rowcount
        if inserted:
            return Claim(event.id, ClaimState.CLAIMED, token, attempt=1, trigger=event.trigger)
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT status, lease_expires, outcomes, attempts FROM {_TABLE} WHERE id = ?", (event.id,)
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

    @staticmethod
    def _take(
        conn: sqlite3.Connection, event_id: str, token: str, expires: float, now: float, boot: str | None
    ) -> None:
        conn.execute(
            f"UPDATE {_TABLE} SET status = 'processing', due_at = NULL, lease_token = ?, lease_expires = ?,"
            " lease_boot = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?",
            (token, expires, boot, now, event_id),
        )

    _DUE = f"SELECT id FROM {_TABLE} WHERE due_at <= ? ORDER BY due_at LIMIT 1"
    _EXPIRED = f"SELECT id FROM {_TABLE} WHERE background = 1 AND lease_expires <= ? ORDER BY lease_expires LIMIT 1"

    def claim_due(self) -> Claim | None:
        now, held_now = self.clock.wall(), self.clock.lease()
        with self._autocommit() as conn:  # a read first: idle workers take no write lock
            if (
                conn.execute(self._DUE, (now,)).fetchone() is None
                and conn.execute(self._EXPIRED, (held_now,)).fetchone() is None
            ):
                return None
        token, expires = self._new_token()
        with self._transaction() as conn:
            row = conn.execute(self._DUE, (now,)).fetchone() or conn.execute(self._EXPIRED, (held_now,)).fetchone()
            if row is None:
                return None  # another worker was quicker
            event_id = row[0]
            self._take(conn, event_id, token, expires, now, self.clock.boot)
            trigger, raw, outcomes, attempts = conn.execute(
                f"SELECT trigger_name, raw, outcomes, attempts FROM {_TABLE} WHERE id = ?", (event_id,)
            ).fetchone()
        return Claim(
            event_id,
            ClaimState.CLAIMED,
            token,
            attempt=attempts,
            outcomes=load_outcomes(outcomes),
            trigger=trigger,
            raw=load_raw(raw),
        )

    def accept(self, event: Event) -> EventStatus | None:
        now = self.clock.wall()
        with self._autocommit() as conn:
            inserted = conn.execute(
                f"INSERT INTO {_TABLE} (id, trigger_name, status, raw, received_at, updated_at, due_at, background)"
                " VALUES (?, ?, 'pending', ?, ?, ?, ?, 1) ON CONFLICT (id) DO NOTHING",
                (event.id, event.trigger, event.raw_json.decode(), now, now, now),
            ).rowcount
        if inserted:
            return None
        with self._transaction() as conn:
            row = conn.execute(f"SELECT status FROM {_TABLE} WHERE id = ?", (event.id,)).fetchone()
            if row is None:
                return self.accept(event)
            if row[0] == EventStatus.FAILED.value:
                conn.execute(
                    f"UPDATE {_TABLE} SET status = 'pending', due_at = ?, background = 1, updated_at = ? WHERE id = ?",
                    (now, now, event.id),
                )
            return EventStatus(row[0])

    def count_due(self) -> int:
        now, held_now = self.clock.wall(), self.clock.lease()
        with self._autocommit() as conn:
            due = conn.execute(f"SELECT count(*) FROM {_TABLE} WHERE due_at <= ?", (now,)).fetchone()[0]
            expired = conn.execute(
                f"SELECT count(*) FROM {_TABLE} WHERE background = 1 AND lease_expires <= ?", (held_now,)
            ).fetchone()[0]
        return int(due) + int(expired)

    def renew(self, claim: Claim) -> bool:
        with self._autocommit() as conn:
            return (
                conn.execute(
                    f"UPDATE {_TABLE} SET lease_expires = ? WHERE id = ? AND lease_token = ?",
                    (self.clock.lease() + self.lease_seconds, claim.event_id, claim.token),
                ).rowcount
                == 1
            )

    def record(self, claim: Claim, run: Run) -> bool:
        outcomes = claim.with_run(run)
        with self._autocommit() as conn:
            written = (
                conn.execute(
                    f"UPDATE {_TABLE} SET outcomes = ?, updated_at = ? WHERE id = ? AND lease_token = ?",
                    (dump_outcomes(outcomes), run.finished_at, claim.event_id, claim.token),
                ).rowcount
                == 1
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
        due_at = retry_at if status is EventStatus.PENDING else None
        with self._autocommit() as conn:  # one statement: the outcomes, the status, the lease
            written = (
                conn.execute(
                    f"UPDATE {_TABLE} SET status = ?, outcomes = ?, error = ?, due_at = ?, lease_token = NULL,"
                    " lease_expires = NULL, updated_at = ? WHERE id = ? AND lease_token = ?",
                    (
                        status.value,
                        dump_outcomes(outcomes),
                        error,
                        due_at,
                        self.clock.wall(),
                        claim.event_id,
                        claim.token,
                    ),
                ).rowcount
                == 1
            )
        if written:
            claim.outcomes = outcomes
        return written

    def watermark(self, handler: str, resource_type: str, resource_id: str) -> float | None:
        with self._autocommit() as conn:
            row = conn.execute(
                "SELECT updated_at FROM webhook_receiver_watermarks WHERE handler = ? AND"
                " resource_type = ? AND resource_id = ?",
                (handler, resource_type, resource_id),
            ).fetchone()
        return None if row is None else float(row[0])

    def raise_watermark(self, handler: str, resource_type: str, resource_id: str, updated_at: float) -> None:
        with self._autocommit() as conn:
            conn.execute(
                "INSERT INTO webhook_receiver_watermarks (handler, resource_type, resource_id, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (handler, resource_type, resource_id) DO UPDATE"
                " SET updated_at = max(updated_at, excluded.updated_at)",
                (handler, resource_type, resource_id, updated_at),
            )

    def get(self, event_id: str) -> StoredEvent | None:
        with self._autocommit() as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM {_TABLE} WHERE id = ?", (event_id,)).fetchone()
        return None if row is None else _stored(row)

    def events(
        self,
        *,
        status: EventStatus | None = None,
        trigger: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[StoredEvent]:
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
        sql = f"SELECT {_COLUMNS} FROM {_TABLE}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY rowid DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._autocommit() as conn:
            rows = conn.execute(sql, params).fetchall()
        return [_stored(row) for row in rows]

    def prune(self, before: float, *, include_failed: bool = False, dry_run: bool = False) -> int:
        statuses = [s.value for s in prunable(include_failed)]
        where = f"received_at < ? AND status IN ({', '.join('?' for _ in statuses)})"
        with self._autocommit() as conn:
            if dry_run:
                found = conn.execute(f"SELECT count(*) FROM {_TABLE} WHERE {where}", (before, *statuses)).fetchone()
                return int(found[0])
            return int(conn.execute(f"DELETE FROM {_TABLE} WHERE {where}", (before, *statuses)).rowcount)


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
