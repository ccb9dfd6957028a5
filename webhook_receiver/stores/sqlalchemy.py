"""Events in your own database, through SQLAlchemy: PostgreSQL, MariaDB / MySQL or SQLite (extra ``[sqlalchemy]``).

::

    db = SQLAlchemy()
    store = SQLAlchemyStore(db)        # the app's engine, found in the app context

    app.config["WEBHOOK_RECEIVER_STORE"] = store
    # or a store on an engine of its own:
    app.config["WEBHOOK_RECEIVER_STORE"] = "postgresql+psycopg://user@host/shop"

With it, handlers registered with ``transactional=True`` are exactly once
in effect: a handler writes through ``db.session`` (or :attr:`SQLAlchemyStore.session`)
and does not commit; the receiver then checks, under a row lock, that its
lease on the event is still current, writes the handler's outcome (and,
after the last handler, the event's status) in the same transaction, and
commits once. A stale lease rolls everything back.

Leases are measured on the database server's clock, so machines whose clocks
disagree share them safely. Due events are taken with ``FOR UPDATE SKIP
LOCKED`` where the database has it (PostgreSQL, MariaDB 10.6+, MySQL 8); a
SQLite engine the store makes takes its write lock when a transaction
begins (``BEGIN IMMEDIATE``).

Every row carries the name of the receiver it belongs to: receivers sharing
one store (see :meth:`~webhook_receiver.stores.EventStore.for_receiver`)
never see each other's events or watermarks.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ..errors import StoreUnavailable
from ..events import Event
from ..redact import hide_passwords
from ..untrusted import logger, printable
from .base import (
    MAX_DELIVERIES,
    BacklogStats,
    Claim,
    ClaimState,
    DeliveryAttempt,
    EventStatus,
    EventStore,
    HandlerOutcome,
    HandlerTransaction,
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
from .sqlalchemy_schema import DEFAULT_PREFIX, PASSWORD_KEYS, build_metadata, check_tables, database_url, open_engine

try:
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.orm import Session
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the SQLAlchemy store needs the [sqlalchemy] extra: pip install 'webhook_receiver[sqlalchemy]'"
    ) from exc

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = ["DEFAULT_PREFIX", "SQLAlchemyStore", "build_metadata", "database_url"]

T = TypeVar("T")

_ATTEMPTS = 5  # a deadlock victim or a lost connection is tried again, this many times in all
_SET_UP_ATTEMPTS = 3  # creating the tables, which another process may be doing at the same moment
_POISON_ROWS = 20  # damaged rows claim_due marks failed in one call before it gives up for now
_STATUSES = frozenset(status.value for status in EventStatus)  # a row of another status is damaged
_current_session: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "webhook_receiver_session", default=None
)


def _server_now(dialect: str) -> Any:
    """The database server's clock, in epoch seconds, as an SQL expression."""
    if dialect == "postgresql":
        return sa.literal_column("CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)")
    if dialect in ("mysql", "mariadb"):
        return sa.literal_column("UNIX_TIMESTAMP(NOW(6))")
    if dialect == "sqlite":
        return sa.literal_column("((julianday('now') - 2440587.5) * 86400.0)")
    raise StoreUnavailable("sqlalchemy", f"no server clock known for the {dialect} dialect")


def _begin_immediate(engine: Engine) -> None:
    """Make a SQLite engine take the write lock when a transaction begins, as the store's claims need."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver's own BEGIN off; ours below
        dbapi_connection.execute("PRAGMA busy_timeout = 5000")
        dbapi_connection.execute("PRAGMA journal_mode = WAL")

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":  # one statement: atomic alone
            conn.exec_driver_sql("BEGIN IMMEDIATE")


class _Shared:
    """What a store and its copies for other receivers share: set-up state, and the process it belongs to."""

    def __init__(self) -> None:
        self.ready: set[int] = set()
        self.lock = threading.Lock()
        self.pid = os.getpid()


class SQLAlchemyStore(EventStore):
    """Events, their queue and handler outcomes in tables of a SQLAlchemy database.

    :param target: a Flask-SQLAlchemy ``db`` (the engine of the current app
        is used, so the store can be built before the app, as ``db`` is), an
        :class:`~sqlalchemy.engine.Engine`, or a database URL
        (``postgresql+psycopg://...``, ``mysql+pymysql://...``,
        ``sqlite:////path``; see :func:`database_url`) for an engine of the
        store's own.
    :param prefix: put before the table and index names.
    :param create_tables: create the tables on first use if they are missing;
        ``False`` when migrations create them (see :attr:`metadata`).
    :param lease_seconds: see :class:`~webhook_receiver.stores.EventStore`.
    :param engine_options: passed to :func:`~sqlalchemy.create_engine` with a URL.
    :raises ValueError: for a URL the store cannot use (see :func:`database_url`).
    """

    name = "sqlalchemy"
    transactional = True

    def __init__(
        self,
        target: Any,
        *,
        prefix: str = DEFAULT_PREFIX,
        create_tables: bool = True,
        lease_seconds: float = 60.0,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(lease_seconds=lease_seconds)
        self._db: Any = None
        self._own_engine: Engine | None = None
        self._autocommit: Engine | None = None  # for one-statement writes, on an engine the store made
        self._secret: str | None = None  # the URL's password, scrubbed from every message
        if isinstance(target, (str, sa.URL)):
            url = database_url(target)
            if url.get_backend_name() == "sqlite" and (url.database or ":memory:") == ":memory:":
                # SQLAlchemy gives each thread a connection, so each its own empty database
                raise ValueError(
                    "an in-memory SQLite database is one per connection, so each thread would see a store of"
                    " its own: use memory:// for a memory store, or a SQLite file (sqlite+pysqlite:////path)"
                )
            self._secret = url.password if isinstance(url.password, str) and url.password else None
            options = {"pool_reset_on_return": None, **(engine_options or {})}  # every transaction is ended
            self._own_engine = open_engine(url, options)
            if self._own_engine.dialect.name == "sqlite":
                _begin_immediate(self._own_engine)
            else:  # connections that stay in autocommit: no switching back and forth at each checkout
                self._autocommit = open_engine(url, {**options, "isolation_level": "AUTOCOMMIT"})
        elif isinstance(target, sa.Engine):
            self._own_engine = target
        elif hasattr(type(target), "engine") and hasattr(target, "session"):  # Flask-SQLAlchemy; no app needed
            self._db = target
        else:
            raise TypeError("SQLAlchemyStore takes a Flask-SQLAlchemy db, an Engine or a database URL")
        self.prefix = prefix
        self.create_tables = create_tables
        #: The store's tables, for migrations (see :func:`build_metadata`).
        self.metadata = build_metadata(prefix)
        self._events = self.metadata.tables[f"{prefix}events"]
        self._watermarks = self.metadata.tables[f"{prefix}watermarks"]
        self._deliveries = self.metadata.tables[f"{prefix}deliveries"]
        if self._own_engine is not None:
            _check_name_lengths(self.metadata, prefix, self._own_engine)
        self._shared = _Shared()
        self._apps: list[Any] = []
        self._app_engine: Engine | None = None
        self._built: dict[str, _Statements] = {}
        self._compiled: dict[int, Any] = {}
        #: The hot path's writes go straight to the driver (see _driver_execute).
        self._direct = self._autocommit is not None and self._autocommit.dialect.paramstyle == "pyformat"

    def __repr__(self) -> str:
        return (
            f"<SQLAlchemyStore {self.location} prefix={self.prefix!r} receiver={self.receiver!r}"
            f" lease_seconds={self.lease_seconds}>"
        )

    @property
    def reach(self) -> str:  # type: ignore[override]
        """``"machine"`` for a SQLite file, else ``"network"``."""
        try:
            return "machine" if self.engine.dialect.name == "sqlite" else "network"
        except RuntimeError:  # a db store outside an app context
            return "network"

    @property
    def location(self) -> str:
        """The database URL, with any password hidden (in the URL or its query, ``?pwd=`` and ``?pass=`` too)."""
        try:
            url = self.engine.url
        except RuntimeError:
            return "the Flask-SQLAlchemy db of the current app"
        query = {key: ("***" if key.lower() in PASSWORD_KEYS else value) for key, value in url.query.items()}
        return hide_passwords(self._scrub(url.set(query=query).render_as_string(hide_password=True)))

    def _scrub(self, text: str) -> str:
        """*text* with the URL's password, wherever it appears, as ``***``."""
        return text.replace(self._secret, "***") if self._secret else text

    # -- several receivers, several processes ------------------------------------------

    def for_receiver(self, receiver: str) -> EventStore:
        """This store's tables as the receiver named *receiver* sees them: its own rows only.

        The store returned shares this one's engines, prepared statements and
        set-up state.
        """
        if not receiver or len(receiver) > 100:
            raise ValueError("a receiver's name for the SQLAlchemy store has 1 to 100 characters")
        return super().for_receiver(receiver)

    def after_fork(self) -> None:
        """In a forked child: leave the parent's pooled connections to it, and start with fresh locks.

        ``engine.dispose(close=False)``, as SQLAlchemy documents for a fork:
        the child opens connections of its own and never closes (or uses) the
        parent's.
        """
        shared = self._shared
        if shared.pid != os.getpid():
            shared.pid = os.getpid()
            shared.lock = threading.Lock()
        engines = {id(e): e for e in (self._own_engine, self._autocommit, self._app_engine) if e is not None}
        for engine in engines.values():
            engine.dispose(close=False)
        for app in self._apps:
            try:
                with app.app_context():
                    for engine in self._db.engines.values():
                        engine.dispose(close=False)
            except Exception:  # noqa: BLE001 - an app this store no longer reaches has nothing to drop
                logger.debug("after fork: the engines of %s could not be reset", app, exc_info=True)

    # -- engines and transactions -------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine in use: the store's own, or ``db.engine`` of the current app.

        Outside an app context (background workers, the monitor), a ``db``
        store uses the engine of the one app it serves.

        :raises RuntimeError: for a ``db`` store outside an app context that
            serves no app, or several.
        """
        if self._own_engine is not None:
            return self._own_engine
        from flask import has_app_context

        if has_app_context():
            engine: Engine = self._db.engine
            return engine
        if self._app_engine is None:
            if len(self._apps) != 1:
                raise RuntimeError(
                    "outside an app context, a SQLAlchemyStore(db) finds its engine through the one app it serves"
                    f" ({len(self._apps)} here): push an app context"
                )
            with self._apps[0].app_context():
                self._app_engine = self._db.engine
        return self._app_engine

    def bind(self, app: Any) -> None:
        """Serve *app*: with a Flask-SQLAlchemy ``db``, its engine is used outside app contexts too."""
        if app not in self._apps:
            self._apps.append(app)
            self._app_engine = None

    @property
    def session(self) -> Session:
        """The session a transactional handler writes through.

        ``db.session`` for a store built on a Flask-SQLAlchemy ``db``; for a
        store on its own engine, the session of the running handler's
        transaction (:class:`~sqlalchemy.orm.Session`), which the receiver
        commits or rolls back.

        :raises RuntimeError: on its own engine, outside a transactional handler.
        """
        if self._db is not None:
            session: Session = self._db.session
            return session
        current = _current_session.get()
        if current is None:
            raise RuntimeError("SQLAlchemyStore.session is the session of a running transactional handler")
        return current

    def _set_up(self, engine: Engine) -> None:
        """Once per engine: create the tables (unless told not to) and check that they are this version's."""
        shared = self._shared
        if id(engine) in shared.ready:
            return
        with shared.lock:
            if id(engine) in shared.ready:
                return
            for attempt in range(1, _SET_UP_ATTEMPTS + 1):
                try:
                    if self.create_tables:
                        self.metadata.create_all(engine, checkfirst=True)
                    if not check_tables(engine, self._events, self._watermarks, self._deliveries):
                        return  # no tables yet (migrations make them): every query says so, until they exist
                    break
                except sa_exc.SQLAlchemyError as exc:
                    # Another process (a gunicorn worker starting beside this one) may be creating them.
                    if attempt == _SET_UP_ATTEMPTS:
                        raise self._unavailable(exc) from None
                    time.sleep(0.2 * attempt)
            shared.ready.add(id(engine))

    def _run(self, work: Callable[[Connection, Any], T], *, single: bool = False) -> T:
        """Run *work(connection, now)* in one transaction, tried again when chosen as a deadlock victim.

        :param single: *work* is one statement, atomic on its own: it runs in
            autocommit, without the round trips of ``BEGIN`` and ``COMMIT``.
        """
        engine = self.engine
        self._set_up(engine)
        now = _server_now(engine.dialect.name)
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                if single and self._autocommit is not None:
                    with self._autocommit.connect() as conn:
                        return work(conn, now)
                if single:
                    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                        return work(conn, now)
                with engine.begin() as conn:
                    return work(conn, now)
            except sa_exc.DBAPIError as exc:
                if attempt == _ATTEMPTS or not _retryable(exc):
                    raise self._unavailable(exc) from None
                time.sleep(0.01 * attempt)
            except sa_exc.SQLAlchemyError as exc:
                raise self._unavailable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _driver_execute(self, statement: Any, params: dict[str, Any]) -> bool:
        """One autocommit statement straight through the driver, compiled once: whether it wrote a row.

        The hot path's writes skip SQLAlchemy's execution machinery (some 60
        us a statement); only on an engine the store made, whose driver takes
        named parameters (psycopg, PyMySQL). A connection that fails in any
        way but a clean database error is never handed back to the pool; one
        that was lost makes the pool drop its idle ones too (the database
        restarted, or a proxy between dropped them all).
        """
        engine = self._autocommit
        assert engine is not None
        found = self._compiled.get(id(statement))
        if found is None:
            compiled = statement.compile(dialect=engine.dialect)
            bound = compiled.construct_params(params)
            # The statement's own constants, bound once: each call then only merges its parameters in, when they
            # all keep their names in the statement (else SQLAlchemy binds them each time).
            constants = {k: v for k, v in bound.items() if k not in params} if params.keys() <= bound.keys() else None
            found = self._compiled[id(statement)] = (str(compiled), compiled, constants, frozenset(params))
        sql, compiled, constants, names = found
        connection = engine.raw_connection()
        try:
            cursor: Any = connection.cursor()
            try:
                cursor.execute(
                    sql,
                    {**constants, **params}
                    if constants is not None and params.keys() == names
                    else compiled.construct_params(params),
                )
                if cursor.description is not None:  # RETURNING: a row when it inserted
                    written = cursor.fetchone() is not None
                else:
                    written = bool(cursor.rowcount == 1)
            finally:
                cursor.close()
        except BaseException as exc:
            lost = not isinstance(exc, engine.dialect.loaded_dbapi.Error) or _lost_connection(
                engine, exc, connection.dbapi_connection
            )
            if not lost:
                connection.close()  # a clean error of the database: the connection is fine
            else:
                connection.invalidate(exc if isinstance(exc, Exception) else None)  # closed, never pooled again
                if isinstance(exc, Exception):
                    engine.dispose()  # the idle ones are most likely dead too: new ones at the next checkout
            raise
        connection.close()
        return written

    def _direct_write(self, statement: Any, params: dict[str, Any]) -> bool:
        self._set_up(self.engine)
        assert self._autocommit is not None
        attempt = 1
        while True:
            try:
                return self._driver_execute(statement, params)
            except self._autocommit.dialect.loaded_dbapi.Error as exc:
                if attempt == _ATTEMPTS or not _retryable_driver(exc):
                    raise self._unavailable(exc) from None
                time.sleep(0.01 * attempt)
            attempt += 1

    def _write_one(self, statement: Any, params: dict[str, Any]) -> bool:
        """One statement in autocommit (a fenced update, or an insert unless taken): whether it wrote a row."""
        if self._direct:
            return self._direct_write(statement, params)

        def work(conn: Connection, now: Any) -> bool:
            result = conn.execute(statement, params)
            if result.returns_rows:
                return result.first() is not None
            return bool(result.rowcount == 1)

        return self._run(work, single=True)

    def _statements(self, dialect: str) -> _Statements:
        """The statements of the hot path, built once per dialect (SQLAlchemy then only binds them)."""
        found = self._built.get(dialect)
        if found is None:
            found = self._built[dialect] = _Statements(self._events, self._watermarks, dialect, self.lease_seconds)
        return found

    def close(self) -> None:
        for engine in (self._own_engine, self._autocommit):
            if engine is not None:
                engine.dispose()

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        """The error to raise, naming the driver's error but never the statement's parameters nor the password."""
        orig = getattr(exc, "orig", None) or exc
        message = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
        return StoreUnavailable("sqlalchemy", self._scrub(f"{type(orig).__name__}: {message[:200]}"))

    # -- taking events ---------------------------------------------------------------

    def _key(self, event_id: str) -> tuple[Any, Any]:
        events = self._events
        return events.c.receiver == self.receiver, events.c.id == event_id

    def claim(self, event: Event) -> Claim:
        token = new_token()
        events = self._events
        raw = event.raw_json.decode()
        wall = time.time()
        params = {
            "p_receiver": self.receiver,
            "p_id": event.id,
            "p_trigger": event.trigger,
            "p_raw": raw,
            "p_wall": wall,
            "p_token": token,
        }
        statements = self._statements(self.engine.dialect.name)
        # the usual case: a new event, one statement
        if statements.insert_claimed is not None and self._write_one(statements.insert_claimed, params):
            return Claim(event.id, ClaimState.CLAIMED, token, attempt=1, trigger=event.trigger)

        def work(conn: Connection, now: Any) -> Claim | str:
            row = conn.execute(
                sa.select(events.c.status, events.c.lease_expires > now, events.c.outcomes, events.c.attempts)
                .where(*self._key(event.id))
                .with_for_update()
            ).first()
            if row is None:  # new, on a database without a one-statement insert, or pruned in between
                conn.execute(statements.insert_claimed_plain, params)
                return Claim(event.id, ClaimState.CLAIMED, token, attempt=1, trigger=event.trigger)
            status, live, outcomes_text, attempts = row
            if status == EventStatus.PROCESSED.value:
                return Claim(event.id, ClaimState.DONE)
            if status == EventStatus.PROCESSING.value and live:
                return Claim(event.id, ClaimState.BUSY)
            outcomes = self._outcomes_or_reason(outcomes_text)
            if isinstance(outcomes, str):
                self._mark_unreadable(conn, event.id, outcomes, time.time())
                return outcomes
            self._take(conn, now, event.id, token, time.time())
            return Claim(
                event.id,
                ClaimState.CLAIMED,
                token,
                attempt=attempts + 1,
                outcomes=outcomes,
                trigger=event.trigger,
            )

        found = self._run(work)
        if isinstance(found, str):
            raise StoreUnavailable("sqlalchemy", f"{found}; the event is marked failed with the reason")
        return found

    @staticmethod
    def _outcomes_or_reason(text: Any) -> dict[str, HandlerOutcome] | str:
        """The stored outcomes, or why they cannot be read (a damaged row must fail alone)."""
        try:
            return load_outcomes(text)
        except Exception as exc:  # noqa: BLE001 - whatever the damage, it is this row's alone
            return f"the stored handler outcomes cannot be read ({type(exc).__name__})"

    def _mark_unreadable(
        self, conn: Connection, event_id: str, reason: str, wall: float, *, where: tuple[Any, ...] = ()
    ) -> None:
        events = self._events
        conn.execute(
            sa.update(events)
            .where(*(where or self._key(event_id)))
            .values(
                status=EventStatus.FAILED.value,
                error=reason,
                due_at=None,
                lease_token=None,
                lease_expires=None,
                updated_at=wall,
            )
        )
        logger.error("event %s failed without running: %s", event_id, reason)

    def _take(self, conn: Connection, now: Any, event_id: str, token: str, wall: float) -> None:
        events = self._events
        conn.execute(
            sa.update(events)
            .where(*self._key(event_id))
            .values(
                status=EventStatus.PROCESSING.value,
                due_at=None,
                lease_token=token,
                lease_expires=now + self.lease_seconds,
                attempts=events.c.attempts + 1,
                updated_at=wall,
            )
        )

    def claim_due(self) -> Claim | None:
        events = self._events
        token = new_token()
        mine = events.c.receiver == self.receiver
        # MariaDB / MySQL ids are bytes: read as they are, so that a row whose id is not UTF-8 fails alone
        binary_ids = self.engine.dialect.name in ("mysql", "mariadb")
        id_column = sa.type_coerce(events.c.id, sa.LargeBinary()) if binary_ids else events.c.id

        def work(conn: Connection, now: Any) -> Claim | None:
            wall = time.time()
            columns = (id_column, events.c.trigger_name, events.c.raw, events.c.outcomes, events.c.attempts)
            for _ in range(_POISON_ROWS):
                row = (
                    conn.execute(
                        sa.select(*columns)
                        .where(mine, events.c.due_at <= wall)
                        .order_by(events.c.due_at)
                        .limit(1)
                        .with_for_update(skip_locked=True)
                    ).first()
                    or conn.execute(
                        sa.select(*columns)
                        .where(mine, events.c.background, events.c.lease_expires <= now)
                        .order_by(events.c.lease_expires)
                        .limit(1)
                        .with_for_update(skip_locked=True)
                    ).first()
                )
                if row is None:
                    return None
                event_id, trigger, raw, outcomes_text, attempts = row
                if isinstance(event_id, (bytes, bytearray, memoryview)):
                    try:
                        event_id = bytes(event_id).decode()
                    except UnicodeDecodeError:  # damaged by hand or by another program: failed alone
                        where = (mine, id_column == bytes(event_id))
                        shown = bytes(event_id).decode(errors="replace")
                        self._mark_unreadable(conn, shown, "the stored id is not UTF-8", wall, where=where)
                        continue
                outcomes = self._outcomes_or_reason(outcomes_text)
                if isinstance(outcomes, str):  # failed alone, in this transaction; then the next due event
                    self._mark_unreadable(conn, event_id, outcomes, wall)
                    continue
                self._take(conn, now, event_id, token, wall)
                return Claim(
                    event_id,
                    ClaimState.CLAIMED,
                    token,
                    attempt=attempts + 1,
                    outcomes=outcomes,
                    trigger=trigger,
                    raw=load_raw(raw),
                    by_queue=True,
                )
            return None

        return self._run(work)

    def accept(self, event: Event) -> EventStatus | None:
        events = self._events
        wall = time.time()
        params = {
            "p_receiver": self.receiver,
            "p_id": event.id,
            "p_trigger": event.trigger,
            "p_raw": event.raw_json.decode(),
            "p_wall": wall,
        }
        statements = self._statements(self.engine.dialect.name)
        if statements.insert_pending is not None and self._write_one(statements.insert_pending, params):
            return None

        def work(conn: Connection, now: Any) -> EventStatus | None:
            row = conn.execute(
                sa.select(events.c.status, events.c.background).where(*self._key(event.id)).with_for_update()
            ).first()
            if row is None:
                conn.execute(statements.insert_pending_plain, params)
                return None
            status, background = row
            if status not in _STATUSES:  # damaged, or a newer version's: queued again as a failed event is
                status = EventStatus.FAILED.value
            if status in (EventStatus.FAILED.value, EventStatus.RESOLVED.value):
                conn.execute(
                    sa.update(events)
                    .where(*self._key(event.id))
                    .values(status=EventStatus.PENDING.value, due_at=wall, background=True, updated_at=wall)
                )
            elif status == EventStatus.PROCESSING.value and not background:
                # Held by a request (inline), which may have died: the queue takes it over once the lease
                # runs out, so that the 202 this answers is kept.
                conn.execute(sa.update(events).where(*self._key(event.id)).values(background=True))
            return EventStatus(status)

        return self._run(work)

    def count_due(self) -> int:
        events = self._events
        mine = events.c.receiver == self.receiver

        def work(conn: Connection, now: Any) -> int:
            due = conn.execute(sa.select(sa.func.count()).where(mine, events.c.due_at <= time.time())).scalar_one()
            expired = conn.execute(
                sa.select(sa.func.count()).where(mine, events.c.background, events.c.lease_expires <= now)
            ).scalar_one()
            return int(due) + int(expired)

        return self._run(work)

    def backlog_stats(self) -> BacklogStats:
        """One statement (one round trip, one snapshot): the queue's and the leases' indexes, and the failed events.

        On PostgreSQL and SQLite the failed events are counted from their
        partial index; MariaDB / MySQL have no partial indexes, and count them
        by reading the receiver's rows (see :doc:`operations`, Performance).
        An expired lease's age is measured on the server's clock, against
        which it was taken.
        """
        events = self._events
        mine = events.c.receiver == self.receiver

        def work(conn: Connection, now: Any) -> BacklogStats:
            wall = time.time()
            # The server's clock read once, as a subquery: PostgreSQL then bounds the lease index's scan by it
            # (a volatile function compared row by row would filter every background event's entry).
            server_now = sa.select(now).scalar_subquery()
            due = (mine, events.c.due_at <= wall)
            held = (mine, events.c.background, events.c.lease_expires <= server_now)
            failed = (mine, events.c.status == sa.literal_column(f"'{EventStatus.FAILED.value}'"))
            row = conn.execute(
                sa.select(
                    *(
                        sa.select(aggregate).where(*where).scalar_subquery()
                        for aggregate, where in (
                            (sa.func.count(), due),
                            (sa.func.min(events.c.due_at), due),
                            (sa.func.count(), held),
                            (sa.func.max(server_now - events.c.lease_expires), held),
                            (sa.func.count(), failed),
                        )
                    )
                )
            ).one()
            count_due, oldest, expired, overdue, count_failed = row
            oldest = None if oldest is None else float(oldest)
            if overdue is not None:  # the lease ran out this long ago, on the server's clock
                ran_out = (wall + time.time()) / 2 - float(overdue)  # read between the two: the middle errs least
                oldest = ran_out if oldest is None else min(oldest, ran_out)
            return BacklogStats(int(count_due) + int(expired), oldest, int(count_failed))

        return self._run(work, single=True)

    # -- writes under a claim (fenced) ------------------------------------------------

    def _fence(self, claim: Claim) -> dict[str, Any]:
        """The parameters that fence a write by the claim's token (``p_receiver``, ``p_event_id``, ``p_old_token``)."""
        return {"p_receiver": self.receiver, "p_event_id": claim.event_id, "p_old_token": claim.token}

    def _write_fenced(self, statement: Any, claim: Claim, params: dict[str, Any]) -> bool:
        return self._write_one(statement, {**params, **self._fence(claim)})

    def renew(self, claim: Claim) -> bool:
        return self._write_fenced(self._statements(self.engine.dialect.name).renew, claim, {})

    @staticmethod
    def _record_params(claim: Claim, run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
        """The parameters of the ``record`` statement, and the outcomes they write."""
        outcomes = claim.with_run(run)
        return {"p_outcomes": dump_outcomes(outcomes), "p_wall": run.finished_at}, outcomes

    @staticmethod
    def _finish_params(
        claim: Claim, ok: bool, last: Run | None, retry_at: float | None, error: str | None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The parameters of the ``finish`` statement, and the outcomes they write."""
        outcomes = claim.with_run(last)
        status = finished_status(ok, retry_at)
        params = {
            "p_status": status.value,
            "p_outcomes": dump_outcomes(outcomes),
            "p_error": error,
            "p_due_at": retry_at if status is EventStatus.PENDING else None,
            "p_wall": time.time(),
        }
        return params, outcomes

    def record(self, claim: Claim, run: Run) -> bool:
        params, outcomes = self._record_params(claim, run)
        written = self._write_fenced(self._statements(self.engine.dialect.name).record, claim, params)
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
        if not ok and leaves_to_queue(claim, ok, retry_at):
            return self._finish_failed(claim, last, error)
        params, outcomes = self._finish_params(claim, ok, last, retry_at, error)
        statements = self._statements(self.engine.dialect.name)
        failed = params["p_status"] == EventStatus.FAILED.value
        statement = statements.finish_failed if failed else statements.finish
        written = self._write_fenced(statement, claim, params)
        if written:
            claim.outcomes = outcomes
        return written

    def _finish_failed(self, claim: Claim, last: Run | None, error: str | None) -> bool:
        """A failed run of a request's claim: ``failed``, or ``pending`` and due now if it came through the queue.

        The row's ``background`` flag tells (set by :meth:`accept`, which
        answered a 202 for it): read under a row lock and the claim's fence,
        and written, in one transaction.
        """
        events = self._events
        statements = self._statements(self.engine.dialect.name)

        def work(conn: Connection, now: Any) -> tuple[bool, dict[str, Any]] | None:
            background = conn.execute(
                sa.select(events.c.background)
                .where(*self._key(claim.event_id), events.c.lease_token == claim.token)
                .with_for_update()
            ).first()
            if background is None:
                return None
            requeued = bool(background[0])
            params, outcomes = self._finish_params(claim, False, last, time.time() if requeued else None, error)
            statement = statements.finish if requeued else statements.finish_failed
            conn.execute(statement, {**params, **self._fence(claim)})
            return requeued, outcomes

        done = self._run(work)
        if done is None:
            return False
        claim.requeued, claim.outcomes = done
        return True

    # -- transactional handlers ----------------------------------------------------------

    def begin_handler(self, claim: Claim) -> HandlerTransaction:
        """Open the transaction of a transactional handler: ``db.session``, or a session of the store's own."""
        engine = self.engine
        self._set_up(engine)
        if self._db is not None:
            return _HandlerTransaction(self, self._db.session(), owned=False)
        session = Session(engine)
        return _HandlerTransaction(self, session, owned=True)

    # -- the out-of-order guard ------------------------------------------------------------

    def _mark_key(self, handler: str, resource_type: str, resource_id: str) -> tuple[str, str, str]:
        """The watermark's key as its columns can hold it (see :func:`_fit`)."""
        columns = self._watermarks.c
        return (
            _fit(handler, getattr(columns.handler.type, "length", None)),
            _fit(resource_type, getattr(columns.resource_type.type, "length", None)),
            _fit(resource_id, getattr(columns.resource_id.type, "length", None)),
        )

    def watermark(self, handler: str, resource_type: str, resource_id: str) -> float | None:
        marks = self._watermarks
        handler, resource_type, resource_id = self._mark_key(handler, resource_type, resource_id)
        value = self._run(
            lambda conn, now: conn.execute(
                sa.select(marks.c.updated_at).where(
                    marks.c.receiver == self.receiver,
                    marks.c.handler == handler,
                    marks.c.resource_type == resource_type,
                    marks.c.resource_id == resource_id,
                )
            ).scalar_one_or_none()
        )
        return None if value is None else float(value)

    def raise_watermark(self, handler: str, resource_type: str, resource_id: str, updated_at: float) -> bool:
        """A compare-and-set in two one-statement writes, neither of which can deadlock with another caller's.

        The first mark of a resource is an insert that does nothing when the
        row exists; otherwise an update that writes only where the kept time
        is not newer. Each is atomic on its own, so of two racing callers the
        older one is told ``False`` whichever writes first. A key longer than
        its column (``data.id`` is upstream's, of any length) is kept as its
        digest, never cut: MariaDB's ``INSERT IGNORE`` would cut it silently.
        """
        handler, resource_type, resource_id = self._mark_key(handler, resource_type, resource_id)
        params = {
            "p_receiver": self.receiver,
            "p_handler": handler,
            "p_type": resource_type,
            "p_resource": resource_id,
            "p_at": float(updated_at),
        }
        statements = self._statements(self.engine.dialect.name)
        if statements.insert_mark is not None:
            if self._write_one(statements.insert_mark, params):
                return True
        else:  # a database without a one-statement insert unless taken: an insert that may collide
            try:
                self._run(lambda conn, now: conn.execute(statements.insert_mark_plain, params))
                return True
            except StoreUnavailable:
                pass  # taken (or truly unavailable: the update below says which)
        return self._write_one(statements.raise_mark, params)

    # -- reading and housekeeping -----------------------------------------------------------

    _COLUMNS = (
        "id",
        "trigger_name",
        "status",
        "raw",
        "outcomes",
        "received_at",
        "updated_at",
        "attempts",
        "due_at",
        "error",
    )

    def _stored(self, row: Any) -> StoredEvent:
        event_id, trigger, status, raw, outcomes_text, received_at, updated_at, attempts, due_at, error = row
        outcomes = self._outcomes_or_reason(outcomes_text)
        if isinstance(outcomes, str):  # shown as it is: a damaged row is reported, never raised on
            error, outcomes = error or outcomes, {}
        if status not in _STATUSES:
            error = f"the stored status {printable(str(status))} is not known to this version" + (
                f"; {error}" if error else ""
            )
            status = EventStatus.FAILED.value
        return StoredEvent(
            id=event_id,
            trigger=trigger,
            status=EventStatus(status),
            raw=load_raw(raw),
            handlers=outcomes,
            received_at=float(received_at),
            updated_at=float(updated_at),
            attempts=int(attempts),
            due_at=None if due_at is None else float(due_at),
            error=error,
        )

    def get(self, event_id: str) -> StoredEvent | None:
        events = self._events
        columns = [events.c[name] for name in self._COLUMNS]
        row = self._run(lambda conn, now: conn.execute(sa.select(*columns).where(*self._key(event_id))).first())
        return None if row is None else self._stored(row)

    def events(
        self,
        *,
        status: EventStatus | None = None,
        trigger: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        before: tuple[float, str] | None = None,
    ) -> list[StoredEvent]:
        events = self._events
        query = sa.select(*[events.c[name] for name in self._COLUMNS]).where(events.c.receiver == self.receiver)
        if status is not None:
            # a literal, not a parameter: PostgreSQL and SQLite pick the partial index of failed events only then
            query = query.where(events.c.status == sa.literal_column(f"'{EventStatus(status).value}'"))
        if trigger is not None:
            query = query.where(events.c.trigger_name == trigger)
        if since is not None:
            query = query.where(events.c.received_at >= since)
        if before is not None:
            at, event_id = before
            query = query.where(events.c.received_at <= at, sa.or_(events.c.received_at < at, events.c.id < event_id))
        query = query.order_by(events.c.received_at.desc(), events.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        rows = self._run(lambda conn, now: conn.execute(query).all())
        return [self._stored(row) for row in rows]

    def resolve(self, event_id: str) -> bool:
        events = self._events
        statement = (
            sa.update(events)
            .where(*self._key(event_id), events.c.status == EventStatus.FAILED.value)
            .values(status=EventStatus.RESOLVED.value, updated_at=time.time())
        )
        return self._run(lambda conn, now: bool(conn.execute(statement).rowcount == 1))

    def record_delivery(self, event_id: str, attempt: DeliveryAttempt) -> None:
        log = self._deliveries
        mine = (log.c.receiver == self.receiver, log.c.event_id == event_id)
        entry = dump_delivery(attempt)

        def work(conn: Connection, now: Any) -> None:
            conn.execute(sa.insert(log).values(receiver=self.receiver, event_id=event_id, entry=entry))
            oldest_kept = conn.execute(
                sa.select(log.c.seq).where(*mine).order_by(log.c.seq.desc()).offset(MAX_DELIVERIES).limit(1)
            ).scalar_one_or_none()
            if oldest_kept is not None:
                conn.execute(sa.delete(log).where(*mine, log.c.seq <= oldest_kept))

        self._run(work)

    def deliveries(self, event_id: str) -> list[DeliveryAttempt]:
        log = self._deliveries
        query = (
            sa.select(log.c.entry)
            .where(log.c.receiver == self.receiver, log.c.event_id == event_id)
            .order_by(log.c.seq)
        )
        rows = self._run(lambda conn, now: conn.execute(query).all())
        return [load_delivery(row[0]) for row in rows]

    def change_marker(self) -> str | None:
        """On PostgreSQL, the WAL's insert position: it moves with every write to the database server.

        No table is read; a write anywhere on the server moves it (the list is
        then read again, as without a marker). Other databases: ``None``.
        """
        if self.engine.dialect.name != "postgresql":
            return None
        lsn = self._run(
            lambda conn, now: conn.execute(sa.text("SELECT pg_current_wal_insert_lsn()")).scalar_one(), single=True
        )
        return str(lsn)

    def count_by_hour(self, since: float) -> list[HourCount]:
        events = self._events
        dialect = self.engine.dialect.name
        hour: Any
        if dialect == "sqlite":  # no floor() before SQLite 3.35; a cast truncates, the same for positive times
            hour = sa.cast(events.c.received_at / 3600, sa.Integer)
        else:
            hour = sa.func.floor(events.c.received_at / 3600)
        hour = hour.label("hour")
        mine = (events.c.receiver == self.receiver, events.c.received_at >= since)
        # Two index scans that read no row where the database can (the received index, the failed
        # events' partial one), rather than one that reads each row's status.
        received = sa.select(hour, sa.func.count()).where(*mine).group_by(hour).order_by(hour)
        failed = (
            sa.select(hour, sa.func.count())
            .where(*mine, events.c.status == sa.literal_column(f"'{EventStatus.FAILED.value}'"))
            .group_by(hour)
        )

        def work(conn: Connection, now: Any) -> list[HourCount]:
            every = conn.execute(received).all()
            failures = {h: n for h, n in conn.execute(failed).all()}
            return [HourCount(float(h) * 3600, int(n), int(failures.get(h, 0))) for h, n in every]

        return self._run(work)

    def prune(self, before: float, *, include_failed: bool = False, dry_run: bool = False) -> int:
        events = self._events
        statuses = [status.value for status in prunable(include_failed)]
        where = (events.c.receiver == self.receiver, events.c.received_at < before, events.c.status.in_(statuses))

        log = self._deliveries
        pruned = sa.select(events.c.id).where(*where)

        def work(conn: Connection, now: Any) -> int:
            if dry_run:
                return int(conn.execute(sa.select(sa.func.count()).where(*where)).scalar_one())
            # the events' delivery logs first, in the same transaction
            conn.execute(sa.delete(log).where(log.c.receiver == self.receiver, log.c.event_id.in_(pruned)))
            return int(conn.execute(sa.delete(events).where(*where)).rowcount)

        return self._run(work)


def _check_name_lengths(metadata: sa.MetaData, prefix: str, engine: Engine) -> None:
    """Refuse a *prefix* that makes a table, key or index name longer than the database takes.

    Otherwise the store is built and every use fails (PostgreSQL takes 63
    characters, MariaDB / MySQL 64).

    :raises ValueError: naming the longest prefix that fits.
    """
    if engine.dialect.name == "sqlite":
        return
    # MariaDB / MySQL take 64 for tables and indexes (SQLAlchemy's 255 is for other names)
    limit = 64 if engine.dialect.name in ("mysql", "mariadb") else engine.dialect.max_identifier_length
    if not limit:
        return
    names = [table.name for table in metadata.tables.values()]
    for table in metadata.tables.values():
        names += [index.name for index in table.indexes if isinstance(index.name, str)]
        names += [str(table.primary_key.name)] if table.primary_key.name else []
    longest = max(names, key=len)
    if len(longest) > limit:
        raise ValueError(
            f"the table prefix {prefix!r} is too long for {engine.dialect.name}: the name {longest} would have"
            f" {len(longest)} characters, more than its {limit}; use a prefix of at most"
            f" {limit - (len(longest) - len(prefix))} characters"
        )


#: What a watermark key kept as its digest starts with; a key sent with this start is kept as its digest too.
_DIGEST = "#sha256:"


def _fit(text: str, length: int | None) -> str:
    """*text* as a key column of *length* characters holds it: itself, or its digest when it cannot be kept as it is.

    A text longer than the column, holding a NUL (which PostgreSQL's text
    cannot), or starting with :data:`_DIGEST` (so that no text sent as it is
    can equal another's digest) becomes ``#sha256:<hex>``, 72 characters:
    distinct texts keep distinct keys, where cutting them would merge them.
    """
    if (length is None or len(text) <= length) and "\x00" not in text and not text.startswith(_DIGEST):
        return text
    return _DIGEST + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class _Statements:
    """The hot path's statements for one dialect, with named parameters (``p_*``)."""

    def __init__(self, events: sa.Table, marks: sa.Table, dialect: str, lease_seconds: float) -> None:
        p = sa.bindparam
        now = _server_now(dialect)
        common: dict[str, Any] = {
            "receiver": p("p_receiver"),
            "id": p("p_id"),
            "trigger_name": p("p_trigger"),
            "raw": p("p_raw"),
            "received_at": p("p_wall"),
            "updated_at": p("p_wall"),
        }
        claimed = {
            **common,
            "status": EventStatus.PROCESSING.value,
            "attempts": 1,
            "lease_token": p("p_token"),
            "lease_expires": now + lease_seconds,
            "background": False,
        }
        pending = {
            **common,
            "status": EventStatus.PENDING.value,
            "attempts": 0,
            "due_at": p("p_wall"),
            "background": True,
        }
        #: Plain inserts, for a transaction that found no row.
        self.insert_claimed_plain = sa.insert(events).values(**claimed)
        self.insert_pending_plain = sa.insert(events).values(**pending)
        #: One-statement inserts that do nothing when the key is taken (``None`` where the dialect has none).
        self.insert_claimed: Any = _insert_unless_taken(events, dialect, claimed)
        self.insert_pending: Any = _insert_unless_taken(events, dialect, pending)
        fenced = sa.update(events).where(
            events.c.receiver == p("p_receiver"),
            events.c.id == p("p_event_id"),
            events.c.lease_token == p("p_old_token"),
        )
        self.renew = fenced.values(lease_expires=now + lease_seconds)
        self.record = fenced.values(outcomes=p("p_outcomes"), updated_at=p("p_wall"))
        finished: dict[str, Any] = {
            "status": p("p_status"),
            "outcomes": p("p_outcomes"),
            "error": p("p_error"),
            "due_at": p("p_due_at"),
            "lease_token": None,
            "lease_expires": None,
            "updated_at": p("p_wall"),
        }
        self.finish = fenced.values(**finished)
        #: The finish of a run that failed for good: the queue owes the event nothing more (a new 202 says again).
        self.finish_failed = fenced.values(**finished, background=False)
        mark: dict[str, Any] = {
            "receiver": p("p_receiver"),
            "handler": p("p_handler"),
            "resource_type": p("p_type"),
            "resource_id": p("p_resource"),
            "updated_at": p("p_at"),
        }
        self.insert_mark_plain = sa.insert(marks).values(**mark)
        self.insert_mark: Any = _insert_unless_taken(marks, dialect, mark)
        # Matched, not changed, rows count (MySQL: SQLAlchemy's FOUND_ROWS flag): the same time again is taken.
        self.raise_mark = (
            sa.update(marks)
            .where(
                marks.c.receiver == p("p_receiver"),
                marks.c.handler == p("p_handler"),
                marks.c.resource_type == p("p_type"),
                marks.c.resource_id == p("p_resource"),
                marks.c.updated_at <= p("p_at"),
            )
            .values(updated_at=p("p_at"))
        )


def _insert_unless_taken(table: sa.Table, dialect: str, values: dict[str, Any]) -> Any:
    keys = [c.name for c in table.primary_key.columns]
    if dialect in ("postgresql", "sqlite"):
        insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
        return insert(table).values(**values).on_conflict_do_nothing(index_elements=keys).returning(table.c[keys[-1]])
    if dialect in ("mysql", "mariadb"):
        ignore = sa.insert(table).values(**values).prefix_with("IGNORE")
        return ignore.execution_options(preserve_rowcount=True)
    return None


class _HandlerTransaction(HandlerTransaction):
    """A transactional handler's session: its writes, then the fenced outcome, committed once."""

    def __init__(self, store: SQLAlchemyStore, session: Session, *, owned: bool) -> None:
        self.store = store
        self.session = session
        self.owned = owned
        self.commits = 0
        sa.event.listen(session, "after_commit", self._committed)
        self._token = _current_session.set(session) if owned else None

    def _committed(self, session: Session) -> None:
        self.commits += 1

    def _close(self) -> None:
        sa.event.remove(self.session, "after_commit", self._committed)
        if self._token is not None:
            _current_session.reset(self._token)
            self._token = None
        if self.owned:
            self.session.close()

    def rollback(self) -> None:
        try:
            self.session.rollback()
        finally:
            self._close()

    def commit(self, claim: Claim, run: Run, *, finish: bool) -> bool:
        store = self.store
        events = store._events
        if self.commits:
            logger.warning(
                "transactional handler %s committed on its own: the writes it committed are not tied to its"
                " outcome, and may be done twice; let the receiver commit",
                run.name,
            )
        try:
            held = self.session.execute(
                sa.select(events.c.lease_token).where(*store._key(claim.event_id)).with_for_update()
            ).scalar_one_or_none()
            if held != claim.token:
                self.session.rollback()
                return False
            statements = store._statements(self.session.get_bind().dialect.name)
            if finish:
                params, outcomes = store._finish_params(claim, True, run, None, None)
            else:
                params, outcomes = store._record_params(claim, run)
            statement = statements.finish if finish else statements.record
            self.session.execute(statement, {**params, **store._fence(claim)})
            self.session.commit()
        except sa_exc.SQLAlchemyError as exc:
            self.session.rollback()
            raise store._unavailable(exc) from None
        finally:
            self._close()
        claim.outcomes = outcomes
        return True


#: PostgreSQL: serialization failure, deadlock; the server shutting the connection (admin, crash, cannot connect now).
_RETRYABLE_SQLSTATES = ("40001", "40P01", "57P01", "57P02", "57P03")
#: MySQL / MariaDB: deadlock, lock wait timeout, server gone away, connection lost, commands out of sync, killed.
_RETRYABLE_MYSQL = (1213, 1205, 2006, 2013, 2014, 2055, 4031, 1927)


def _retryable(exc: sa_exc.DBAPIError) -> bool:
    """A deadlock victim, a serialization failure or a lost connection: the transaction may be run again."""
    return bool(exc.connection_invalidated) or _retryable_driver(exc.orig)


def _retryable_driver(orig: BaseException | None) -> bool:
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in _RETRYABLE_SQLSTATES or (isinstance(code, str) and code.startswith("08")):  # 08: connection errors
        return True
    if any(cls.__name__ == "InterfaceError" for cls in type(orig).__mro__):  # the connection is closed
        return True
    if "connection is closed" in str(orig).lower() or "server closed the connection" in str(orig).lower():
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _RETRYABLE_MYSQL


def _lost_connection(engine: Engine, exc: BaseException, dbapi_connection: Any) -> bool:
    """Whether *exc* left the connection unusable (the dialect's own test, or an error that says so)."""
    try:
        if engine.dialect.is_disconnect(exc, dbapi_connection, None):  # type: ignore[arg-type]
            return True
    except Exception:  # noqa: BLE001 - a test that fails says nothing: assume the worst below
        return True
    code = getattr(exc, "sqlstate", None)
    if isinstance(code, str) and (code.startswith("08") or code.startswith("57P")):
        return True
    if any(cls.__name__ == "InterfaceError" for cls in type(exc).__mro__):
        return True
    args: tuple[Any, ...] = getattr(exc, "args", ())
    return bool(args) and args[0] in (2006, 2013, 2014, 2055, 4031, 1927)
