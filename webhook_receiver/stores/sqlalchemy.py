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
"""

from __future__ import annotations

import contextvars
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ..errors import StoreUnavailable
from ..events import Event
from ..untrusted import logger
from .base import (
    Claim,
    ClaimState,
    EventStatus,
    EventStore,
    HandlerTransaction,
    Run,
    StoredEvent,
    dump_outcomes,
    finished_status,
    load_outcomes,
    load_raw,
    prunable,
)

try:
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.dialects import mysql, postgresql, sqlite
    from sqlalchemy.orm import Session
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the SQLAlchemy store needs the [sqlalchemy] extra: pip install 'webhook_receiver[sqlalchemy]'"
    ) from exc

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

__all__ = ["DEFAULT_PREFIX", "SQLAlchemyStore", "build_metadata"]

#: The prefix of the store's table names.
DEFAULT_PREFIX = "webhook_receiver_"

T = TypeVar("T")

_ATTEMPTS = 3  # a transaction chosen as a deadlock victim is tried again this many times in all
_current_session: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
    "webhook_receiver_session", default=None
)


def build_metadata(prefix: str = DEFAULT_PREFIX) -> sa.MetaData:
    """The store's tables, ``<prefix>events`` and ``<prefix>watermarks``, in a :class:`~sqlalchemy.MetaData`.

    For Alembic / Flask-Migrate, add it to ``target_metadata`` (or use a
    store's :attr:`SQLAlchemyStore.metadata`) and create the store with
    ``create_tables=False``.

    :param prefix: put before each table and index name.
    """
    metadata = sa.MetaData()
    long_text = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
    sa.Table(
        f"{prefix}events",
        metadata,
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("trigger_name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("raw", long_text, nullable=False),
        sa.Column("outcomes", long_text),
        sa.Column("received_at", sa.Float(53), nullable=False),
        sa.Column("updated_at", sa.Float(53), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("due_at", sa.Float(53)),
        sa.Column("error", sa.Text),
        sa.Column("lease_token", sa.String(64)),
        sa.Column("lease_expires", sa.Float(53)),
        sa.Column("background", sa.Boolean, nullable=False, default=False),
        # Partial where the database has them (PostgreSQL, SQLite): an event handled in the request never
        # enters the queue's two indexes, so the hot path writes to the primary key and one index only.
        sa.Index(
            f"{prefix}events_due",
            "due_at",
            postgresql_where=sa.text("due_at IS NOT NULL"),
            sqlite_where=sa.text("due_at IS NOT NULL"),
        ),
        sa.Index(
            f"{prefix}events_lease",
            "lease_expires",
            postgresql_where=sa.text("background"),
            sqlite_where=sa.text("background = 1"),
        ),
        sa.Index(f"{prefix}events_received", "received_at"),
    )
    sa.Table(
        f"{prefix}watermarks",
        metadata,
        sa.Column("handler", sa.String(255), primary_key=True),
        sa.Column("resource_type", sa.String(100), primary_key=True),
        sa.Column("resource_id", sa.String(255), primary_key=True),
        sa.Column("updated_at", sa.Float(53), nullable=False),
    )
    return metadata


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


class SQLAlchemyStore(EventStore):
    """Events, their queue and handler outcomes in tables of a SQLAlchemy database.

    :param target: a Flask-SQLAlchemy ``db`` (the engine of the current app
        is used, so the store can be built before the app, as ``db`` is), an
        :class:`~sqlalchemy.engine.Engine`, or a database URL
        (``postgresql+psycopg://...``, ``mysql+pymysql://...``,
        ``sqlite:////path``) for an engine of the store's own.
    :param prefix: put before the table and index names.
    :param create_tables: create the tables on first use if they are missing;
        ``False`` when migrations create them (see :attr:`metadata`).
    :param lease_seconds: see :class:`~webhook_receiver.stores.EventStore`.
    :param engine_options: passed to :func:`~sqlalchemy.create_engine` with a URL.
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
        if isinstance(target, (str, sa.URL)):
            options = {"pool_reset_on_return": None, **(engine_options or {})}  # every transaction is ended
            self._own_engine = sa.create_engine(target, **options)
            if self._own_engine.dialect.name == "sqlite":
                _begin_immediate(self._own_engine)
            else:  # connections that stay in autocommit: no switching back and forth at each checkout
                self._autocommit = sa.create_engine(target, **{**options, "isolation_level": "AUTOCOMMIT"})
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
        self._ready: set[int] = set()
        self._ready_lock = threading.Lock()
        self._apps: list[Any] = []
        self._app_engine: Engine | None = None
        self._built: dict[str, _Statements] = {}
        self._compiled: dict[int, Any] = {}
        #: The hot path's writes go straight to the driver (see _driver_execute).
        self._direct = self._autocommit is not None and self._autocommit.dialect.paramstyle == "pyformat"

    def __repr__(self) -> str:
        return f"<SQLAlchemyStore {self.location} prefix={self.prefix!r} lease_seconds={self.lease_seconds}>"

    @property
    def reach(self) -> str:  # type: ignore[override]
        """``"machine"`` for a SQLite file, else ``"network"``."""
        try:
            return "machine" if self.engine.dialect.name == "sqlite" else "network"
        except RuntimeError:  # a db store outside an app context
            return "network"

    @property
    def location(self) -> str:
        """The database URL, with any password hidden."""
        try:
            return self.engine.url.render_as_string(hide_password=True)
        except RuntimeError:
            return "the Flask-SQLAlchemy db of the current app"

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
        if not self.create_tables or id(engine) in self._ready:
            return
        with self._ready_lock:
            if id(engine) not in self._ready:
                for attempt in range(1, _ATTEMPTS + 1):
                    try:
                        self.metadata.create_all(engine, checkfirst=True)
                        break
                    except sa_exc.SQLAlchemyError as exc:
                        # Another process (a gunicorn worker starting beside this one) may be creating them.
                        if attempt == _ATTEMPTS:
                            raise _unavailable(exc) from None
                        time.sleep(0.2 * attempt)
                self._ready.add(id(engine))

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
                    raise _unavailable(exc) from None
            except sa_exc.SQLAlchemyError as exc:
                raise _unavailable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _driver_execute(self, statement: Any, params: dict[str, Any]) -> bool:
        """One autocommit statement straight through the driver, compiled once: whether it wrote a row.

        The hot path's two writes skip SQLAlchemy's execution machinery
        (some 60 us a statement); only on an engine the store made, whose
        driver takes named parameters (psycopg, PyMySQL).
        """
        assert self._autocommit is not None
        compiled = self._compiled.get(id(statement))
        if compiled is None:
            compiled = self._compiled[id(statement)] = statement.compile(dialect=self._autocommit.dialect)
        connection = self._autocommit.raw_connection()
        try:
            cursor: Any = connection.cursor()
            try:
                cursor.execute(str(compiled), compiled.construct_params(params))
                if cursor.description is not None:  # RETURNING: a row when it inserted
                    return cursor.fetchone() is not None
                return bool(cursor.rowcount == 1)
            finally:
                cursor.close()
        finally:
            connection.close()

    def _direct_write(self, statement: Any, params: dict[str, Any]) -> bool:
        self._set_up(self.engine)
        assert self._autocommit is not None
        attempt = 1
        while True:
            try:
                return self._driver_execute(statement, params)
            except self._autocommit.dialect.loaded_dbapi.Error as exc:
                if attempt == _ATTEMPTS or not _retryable_driver(exc):
                    raise _unavailable(exc) from None
            attempt += 1

    def _statements(self, dialect: str) -> _Statements:
        """The statements of the hot path, built once per dialect (SQLAlchemy then only binds them)."""
        found = self._built.get(dialect)
        if found is None:
            found = self._built[dialect] = _Statements(self._events, dialect, self.lease_seconds)
        return found

    def close(self) -> None:
        for engine in (self._own_engine, self._autocommit):
            if engine is not None:
                engine.dispose()

    # -- taking events ---------------------------------------------------------------

    def _insert_new(self, statement: Any, params: dict[str, Any]) -> bool | None:
        """Insert a row unless its id is taken, in one statement: whether it was inserted (``None``: cannot tell)."""
        if statement is None:
            return None
        if self._direct:
            return self._direct_write(statement, params)

        def work(conn: Connection, now: Any) -> bool:
            result = conn.execute(statement, params)
            if result.returns_rows:
                return result.first() is not None
            return bool(result.rowcount == 1)

        return self._run(work, single=True)

    def claim(self, event: Event) -> Claim:
        token = secrets.token_hex(16)
        events = self._events
        raw = event.raw_json.decode()
        wall = time.time()
        params = {"p_id": event.id, "p_trigger": event.trigger, "p_raw": raw, "p_wall": wall, "p_token": token}
        statements = self._statements(self.engine.dialect.name)
        if self._insert_new(statements.insert_claimed, params):  # the usual case: a new event, one statement
            return Claim(event.id, ClaimState.CLAIMED, token, attempt=1, trigger=event.trigger)

        def work(conn: Connection, now: Any) -> Claim:
            row = conn.execute(
                sa.select(events.c.status, events.c.lease_expires > now, events.c.outcomes, events.c.attempts)
                .where(events.c.id == event.id)
                .with_for_update()
            ).first()
            if row is None:  # new, on a database without a one-statement insert, or pruned in between
                conn.execute(statements.insert_claimed_plain, params)
                return Claim(event.id, ClaimState.CLAIMED, token, attempt=1, trigger=event.trigger)
            status, live, outcomes, attempts = row
            if status == EventStatus.PROCESSED.value:
                return Claim(event.id, ClaimState.DONE)
            if status == EventStatus.PROCESSING.value and live:
                return Claim(event.id, ClaimState.BUSY)
            self._take(conn, now, event.id, token, time.time())
            return Claim(
                event.id,
                ClaimState.CLAIMED,
                token,
                attempt=attempts + 1,
                outcomes=load_outcomes(outcomes),
                trigger=event.trigger,
            )

        return self._run(work)

    def _take(self, conn: Connection, now: Any, event_id: str, token: str, wall: float) -> None:
        events = self._events
        conn.execute(
            sa.update(events)
            .where(events.c.id == event_id)
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
        token = secrets.token_hex(16)

        def work(conn: Connection, now: Any) -> Claim | None:
            wall = time.time()
            columns = (events.c.id, events.c.trigger_name, events.c.raw, events.c.outcomes, events.c.attempts)
            row = (
                conn.execute(
                    sa.select(*columns)
                    .where(events.c.due_at <= wall)
                    .order_by(events.c.due_at)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
                or conn.execute(
                    sa.select(*columns)
                    .where(events.c.background, events.c.lease_expires <= now)
                    .order_by(events.c.lease_expires)
                    .limit(1)
                    .with_for_update(skip_locked=True)
                ).first()
            )
            if row is None:
                return None
            event_id, trigger, raw, outcomes, attempts = row
            self._take(conn, now, event_id, token, wall)
            return Claim(
                event_id,
                ClaimState.CLAIMED,
                token,
                attempt=attempts + 1,
                outcomes=load_outcomes(outcomes),
                trigger=trigger,
                raw=load_raw(raw),
            )

        return self._run(work)

    def accept(self, event: Event) -> EventStatus | None:
        events = self._events
        wall = time.time()
        params = {"p_id": event.id, "p_trigger": event.trigger, "p_raw": event.raw_json.decode(), "p_wall": wall}
        statements = self._statements(self.engine.dialect.name)
        if self._insert_new(statements.insert_pending, params):
            return None

        def work(conn: Connection, now: Any) -> EventStatus | None:
            row = conn.execute(sa.select(events.c.status).where(events.c.id == event.id).with_for_update()).first()
            if row is None:
                conn.execute(statements.insert_pending_plain, params)
                return None
            if row[0] == EventStatus.FAILED.value:
                conn.execute(
                    sa.update(events)
                    .where(events.c.id == event.id)
                    .values(status=EventStatus.PENDING.value, due_at=wall, background=True, updated_at=wall)
                )
            return EventStatus(row[0])

        return self._run(work)

    def count_due(self) -> int:
        events = self._events

        def work(conn: Connection, now: Any) -> int:
            due = conn.execute(sa.select(sa.func.count()).where(events.c.due_at <= time.time())).scalar_one()
            expired = conn.execute(
                sa.select(sa.func.count()).where(events.c.background, events.c.lease_expires <= now)
            ).scalar_one()
            return int(due) + int(expired)

        return self._run(work)

    # -- writes under a claim (fenced) ------------------------------------------------

    @staticmethod
    def _fence(claim: Claim) -> dict[str, Any]:
        """The parameters that fence a write by the claim's token (``p_event_id``, ``p_old_token``)."""
        return {"p_event_id": claim.event_id, "p_old_token": claim.token}

    def _write_fenced(self, statement: Any, claim: Claim, params: dict[str, Any]) -> bool:
        params = {**params, **self._fence(claim)}
        if self._direct:
            return self._direct_write(statement, params)
        return self._run(lambda conn, now: conn.execute(statement, params).rowcount == 1, single=True)

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
        params, outcomes = self._finish_params(claim, ok, last, retry_at, error)
        written = self._write_fenced(self._statements(self.engine.dialect.name).finish, claim, params)
        if written:
            claim.outcomes = outcomes
        return written

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

    def watermark(self, handler: str, resource_type: str, resource_id: str) -> float | None:
        marks = self._watermarks
        value = self._run(
            lambda conn, now: conn.execute(
                sa.select(marks.c.updated_at).where(
                    marks.c.handler == handler,
                    marks.c.resource_type == resource_type,
                    marks.c.resource_id == resource_id,
                )
            ).scalar_one_or_none()
        )
        return None if value is None else float(value)

    def raise_watermark(self, handler: str, resource_type: str, resource_id: str, updated_at: float) -> None:
        marks = self._watermarks
        key = (marks.c.handler == handler, marks.c.resource_type == resource_type, marks.c.resource_id == resource_id)
        raise_it = sa.update(marks).where(*key, marks.c.updated_at < updated_at).values(updated_at=updated_at)

        def work(conn: Connection, now: Any) -> None:
            if conn.execute(sa.select(marks.c.updated_at).where(*key).with_for_update()).first() is not None:
                conn.execute(raise_it)
                return
            try:
                with conn.begin_nested():  # a concurrent first mark: take the row it wrote
                    conn.execute(
                        sa.insert(marks).values(
                            handler=handler, resource_type=resource_type, resource_id=resource_id, updated_at=updated_at
                        )
                    )
            except sa_exc.IntegrityError:
                conn.execute(raise_it)

        self._run(work)

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
        event_id, trigger, status, raw, outcomes, received_at, updated_at, attempts, due_at, error = row
        return StoredEvent(
            id=event_id,
            trigger=trigger,
            status=EventStatus(status),
            raw=load_raw(raw),
            handlers=load_outcomes(outcomes),
            received_at=float(received_at),
            updated_at=float(updated_at),
            attempts=int(attempts),
            due_at=None if due_at is None else float(due_at),
            error=error,
        )

    def get(self, event_id: str) -> StoredEvent | None:
        events = self._events
        columns = [events.c[name] for name in self._COLUMNS]
        row = self._run(lambda conn, now: conn.execute(sa.select(*columns).where(events.c.id == event_id)).first())
        return None if row is None else self._stored(row)

    def events(
        self,
        *,
        status: EventStatus | None = None,
        trigger: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        events = self._events
        query = sa.select(*[events.c[name] for name in self._COLUMNS])
        if status is not None:
            query = query.where(events.c.status == status.value)
        if trigger is not None:
            query = query.where(events.c.trigger_name == trigger)
        if since is not None:
            query = query.where(events.c.received_at >= since)
        query = query.order_by(events.c.received_at.desc(), events.c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        rows = self._run(lambda conn, now: conn.execute(query).all())
        return [self._stored(row) for row in rows]

    def prune(self, before: float, *, include_failed: bool = False, dry_run: bool = False) -> int:
        events = self._events
        statuses = [status.value for status in prunable(include_failed)]
        where = (events.c.received_at < before, events.c.status.in_(statuses))

        def work(conn: Connection, now: Any) -> int:
            if dry_run:
                return int(conn.execute(sa.select(sa.func.count()).where(*where)).scalar_one())
            return int(conn.execute(sa.delete(events).where(*where)).rowcount)

        return self._run(work)


class _Statements:
    """The hot path's statements for one dialect, with named parameters (``p_*``)."""

    def __init__(self, events: sa.Table, dialect: str, lease_seconds: float) -> None:
        p = sa.bindparam
        now = _server_now(dialect)
        common: dict[str, Any] = {
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
        #: One-statement inserts that do nothing when the id is taken (``None`` where the dialect has none).
        self.insert_claimed: Any = self._insert_unless_taken(events, dialect, claimed)
        self.insert_pending: Any = self._insert_unless_taken(events, dialect, pending)
        fenced = sa.update(events).where(events.c.id == p("p_event_id"), events.c.lease_token == p("p_old_token"))
        self.renew = fenced.values(lease_expires=now + lease_seconds)
        self.record = fenced.values(outcomes=p("p_outcomes"), updated_at=p("p_wall"))
        self.finish = fenced.values(
            status=p("p_status"),
            outcomes=p("p_outcomes"),
            error=p("p_error"),
            due_at=p("p_due_at"),
            lease_token=None,
            lease_expires=None,
            updated_at=p("p_wall"),
        )

    @staticmethod
    def _insert_unless_taken(events: sa.Table, dialect: str, values: dict[str, Any]) -> Any:
        if dialect in ("postgresql", "sqlite"):
            insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
            return insert(events).values(**values).on_conflict_do_nothing(index_elements=["id"]).returning(events.c.id)
        if dialect in ("mysql", "mariadb"):
            ignore = sa.insert(events).values(**values).prefix_with("IGNORE")
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
                sa.select(events.c.lease_token).where(events.c.id == claim.event_id).with_for_update()
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
            raise _unavailable(exc) from None
        finally:
            self._close()
        claim.outcomes = outcomes
        return True


def _retryable(exc: sa_exc.DBAPIError) -> bool:
    """A deadlock victim, a serialization failure or a lost connection: the transaction may be run again."""
    return bool(exc.connection_invalidated) or _retryable_driver(exc.orig)


def _retryable_driver(orig: BaseException | None) -> bool:
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in ("40001", "40P01") or (isinstance(code, str) and code.startswith("08")):  # 08: connection errors
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in (1213, 1205, 2006, 2013)  # MySQL: deadlock, lock wait, gone away, lost


def _unavailable(exc: BaseException) -> StoreUnavailable:
    """The error to raise, naming the driver's error but never the statement's parameters."""
    orig = getattr(exc, "orig", None) or exc
    message = str(orig).strip().splitlines()[0] if str(orig).strip() else ""
    return StoreUnavailable("sqlalchemy", f"{type(orig).__name__}: {message[:200]}")
