"""The SQLAlchemy store's tables and the database URLs it takes.

The layout (:func:`build_metadata`), the check of tables an earlier version
made (refused with the SQL that upgrades them), and the URLs people type
(:func:`database_url`). Used by :mod:`webhook_receiver.stores.sqlalchemy`.
"""

from __future__ import annotations

import importlib.util
import re
from typing import TYPE_CHECKING, Any

from .base import DEFAULT_RECEIVER

try:
    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.dialects import mysql
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the SQLAlchemy store needs the [sqlalchemy] extra: pip install 'webhook_receiver[sqlalchemy]'"
    ) from exc

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

__all__ = [
    "DEFAULT_PREFIX",
    "PASSWORD_KEYS",
    "build_metadata",
    "check_tables",
    "database_url",
    "open_engine",
    "upgrade_statements",
]

#: The prefix of the store's table names.
DEFAULT_PREFIX = "webhook_receiver_"

#: What psycopg and PyMySQL take as a password in a URL's query.
PASSWORD_KEYS = ("password", "passwd")

#: Why a database URL with two ``@`` before its path is refused (the message quotes no part of it).
_TWO_ATS = (
    "the database URL has an '@' after the one that ends the user name and password: write an '@'"
    " inside the password, the user name or the query as %40 (urllib.parse.quote does it)"
)


class _Utf8Bytes(sa.types.TypeDecorator[str]):
    """Text kept as its UTF-8 bytes (MariaDB / MySQL keys): compared byte for byte, case, accents, spaces and all."""

    impl = mysql.VARBINARY
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return value.encode() if isinstance(value, str) else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        # A key that is not UTF-8 (a row damaged by hand) is shown with U+FFFD rather than failing every listing.
        return bytes(value).decode(errors="replace") if isinstance(value, (bytes, bytearray, memoryview)) else value


def _key_text(length: int) -> Any:
    """A key column of *length* characters: ``VARCHAR`` (binary comparison already), ``VARBINARY`` on MySQL."""
    return sa.String(length).with_variant(_Utf8Bytes(length * 4), "mysql", "mariadb")


#: MariaDB / MySQL tables in utf8mb4, whatever the database's default: bodies kept byte for byte.
_MYSQL_TABLE: dict[str, Any] = {
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
    "mariadb_charset": "utf8mb4",
    "mariadb_collate": "utf8mb4_bin",
}


def build_metadata(prefix: str = DEFAULT_PREFIX) -> sa.MetaData:
    """The store's tables, ``<prefix>events``, ``<prefix>watermarks``, ``<prefix>deliveries``, in a ``MetaData``.

    For Alembic / Flask-Migrate, add it to ``target_metadata`` (or use a
    store's :attr:`SQLAlchemyStore.metadata`) and create the store with
    ``create_tables=False``. Both tables are keyed by the receiver's name
    first (column ``receiver``), so that receivers can share them.

    :param prefix: put before each table, key and index name.
    """
    metadata = sa.MetaData()
    long_text = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
    sa.Table(
        f"{prefix}events",
        metadata,
        sa.Column("receiver", _key_text(100), nullable=False, server_default=DEFAULT_RECEIVER),
        sa.Column("id", _key_text(200), nullable=False),
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
        sa.PrimaryKeyConstraint("receiver", "id", name=f"{prefix}events_key"),
        # Partial where the database has them (PostgreSQL, SQLite): an event handled in the request never
        # enters the queue's two indexes, so the hot path writes to the primary key and one index only.
        sa.Index(
            f"{prefix}events_due",
            "receiver",
            "due_at",
            postgresql_where=sa.text("due_at IS NOT NULL"),
            sqlite_where=sa.text("due_at IS NOT NULL"),
        ),
        sa.Index(
            f"{prefix}events_lease",
            "receiver",
            "lease_expires",
            postgresql_where=sa.text("background"),
            sqlite_where=sa.text("background = 1"),
        ),
        # The listing's: newest first, keyset pages by (received_at, id), the hourly counts. Its columns never
        # change once a row is written, so only the insert writes it.
        # The trigger last: a filter by trigger is checked in the index, reading no row of another trigger.
        sa.Index(f"{prefix}events_received", "receiver", "received_at", "id", "trigger_name"),
        # The failed view's, partial: written only when an event fails or leaves that state. Not on
        # MariaDB / MySQL, which have no partial indexes: there it would cost every insert a second copy.
        sa.Index(
            f"{prefix}events_failed",
            "receiver",
            "received_at",
            "id",
            "trigger_name",
            postgresql_where=sa.text("status = 'failed'"),
            sqlite_where=sa.text("status = 'failed'"),
        ).ddl_if(dialect=("postgresql", "sqlite")),  # type: ignore[arg-type]  # a tuple is documented
        **_MYSQL_TABLE,
    )
    sa.Table(
        f"{prefix}watermarks",
        metadata,
        sa.Column("receiver", _key_text(100), nullable=False, server_default=DEFAULT_RECEIVER),
        sa.Column("handler", _key_text(255), nullable=False),
        sa.Column("resource_type", _key_text(100), nullable=False),
        sa.Column("resource_id", _key_text(255), nullable=False),
        sa.Column("updated_at", sa.Float(53), nullable=False),
        sa.PrimaryKeyConstraint("receiver", "handler", "resource_type", "resource_id", name=f"{prefix}watermarks_key"),
        **_MYSQL_TABLE,
    )
    # Each event's delivery attempts after its first, in their order (seq); written on the cold paths only
    # (a redelivery, a replay), never by a first delivery. A table of its own: a table of an earlier
    # version gains it by a CREATE TABLE, no column changes.
    sa.Table(
        f"{prefix}deliveries",
        metadata,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
        sa.Column("receiver", _key_text(100), nullable=False),
        sa.Column("event_id", _key_text(200), nullable=False),
        sa.Column("entry", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("seq", name=f"{prefix}deliveries_key"),
        sa.Index(f"{prefix}deliveries_ev", "receiver", "event_id", "seq"),
        **_MYSQL_TABLE,
    )
    return metadata


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _misread_at(rest: str) -> bool:
    """Whether SQLAlchemy would misread an ``@`` of *rest* (a URL past its ``://``), found before it parses.

    A second ``@`` before the path makes the password's tail the port,
    quoted in the parser's error; an ``@`` in the path or query of a URL
    whose user has no password ends the user info there (the port's ``:``
    starts a password that runs on to it), and the host moves. A URL with
    no ``@`` before its path is left to the parser: its later ``@`` may end
    a password holding a ``/``, which SQLAlchemy reads right.
    """
    authority = re.split(r"[/?]", rest, maxsplit=1)[0]
    if authority.count("@") > 1:
        return True
    user_info, at, _ = authority.rpartition("@")
    return bool(at) and ":" not in user_info and "@" in rest[len(authority) :]


def database_url(url: str | sa.URL) -> sa.URL:
    """*url* as the store opens it: the installed driver chosen, a password in the query moved into the URL.

    ``postgres://`` (Heroku's form) and ``postgresql://`` use psycopg (or
    psycopg2, if that is the one installed); ``mysql://`` and ``mariadb://``
    use PyMySQL (or mysqlclient). A ``?password=`` is moved to the URL's
    password, which SQLAlchemy never shows. MariaDB / MySQL connections are
    made in ``utf8mb4``.

    :raises ValueError: for a URL that does not parse, a missing driver (the
        message names the URL to use), a MySQL charset other than utf8mb4, or
        an unencoded ``@`` in the password (SQLAlchemy would take the rest of
        the password for the host, and show it in every error).
    """
    if isinstance(url, str):
        scheme, sep, rest = url.partition("://")
        dialect = scheme.lower().partition("+")[0]
        if sep and dialect == "postgres":  # Heroku's DATABASE_URL
            url = f"postgresql{scheme[len('postgres') :]}://{rest}"
        if dialect != "sqlite" and _misread_at(rest):
            raise ValueError(_TWO_ATS)
        try:
            parsed = sa.make_url(url)
        except (sa_exc.ArgumentError, ValueError):  # ValueError: a port that is not a number, quoted in its message
            raise ValueError("the database URL does not parse (dialect+driver://user@host/database)") from None
    else:
        parsed = url
    backend, _, driver = parsed.drivername.partition("+")
    if backend != "sqlite" and ("@" in (parsed.host or "") or "@" in (parsed.database or "")):
        # SQLAlchemy ends the password at its first '@': the rest would be the host, shown in every message
        raise ValueError(_TWO_ATS)
    if backend == "postgresql" and not driver:
        driver = next((d for d, module in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")) if _installed(module)), "")
        if not driver:
            raise ValueError(
                "no PostgreSQL driver is installed: pip install 'webhook_receiver[sqlalchemy]' (psycopg),"
                " and use postgresql+psycopg://user@host/database"
            )
    elif backend in ("mysql", "mariadb") and not driver:
        driver = next((d for d, module in (("pymysql", "pymysql"), ("mysqldb", "MySQLdb")) if _installed(module)), "")
        if not driver:
            raise ValueError(
                f"no MySQL driver is installed: pip install 'webhook_receiver[sqlalchemy]' (PyMySQL),"
                f" and use {backend}+pymysql://user@host/database"
            )
    if driver:
        parsed = parsed.set(drivername=f"{backend}+{driver}")
    query = dict(parsed.query)
    for key in [key for key in query if key.lower() in PASSWORD_KEYS]:
        value = query.pop(key)
        parsed = parsed.set(password=value[-1] if isinstance(value, tuple) else value)
    if backend in ("mysql", "mariadb"):
        charset = query.setdefault("charset", "utf8mb4")
        if charset != "utf8mb4":
            raise ValueError(
                f"charset={charset} would change the bodies of events; leave it out (the store uses utf8mb4)"
            )
    return parsed.set(query=query)


def open_engine(url: sa.URL, options: dict[str, Any]) -> Engine:
    """An engine for *url*; a driver that is not installed, or an asyncio one, is refused with the URL of one to use.

    :raises ValueError: if the URL's driver cannot be imported, or is an
        asyncio driver (``postgresql+psycopg_async``, ``+asyncpg``,
        ``mysql+aiomysql``): the store's engine is called from plain threads.
    """
    backend = url.get_backend_name()
    alternatives = {
        "postgresql": "postgresql+psycopg",
        "mysql": "mysql+pymysql",
        "mariadb": "mariadb+pymysql",
        "sqlite": "sqlite+pysqlite",
    }
    hint = alternatives.get(backend, f"{backend}+<driver>")
    try:
        is_async = bool(getattr(url.get_dialect(), "is_async", False))
    except (ImportError, sa_exc.NoSuchModuleError):
        is_async = False  # create_engine below names what is missing
    if is_async:  # built, it would fail every delivery: the store calls its engine from plain threads
        raise ValueError(
            f"the {url.drivername} driver is an asyncio one, and the store is synchronous: use {hint}://..."
            " (the same database through a synchronous driver)"
        )
    try:
        return sa.create_engine(url, **options)
    except ImportError as exc:
        raise ValueError(
            f"the {url.drivername} driver is not installed ({type(exc).__name__}: {exc}): install it, or use"
            f" {hint}://... (pip install 'webhook_receiver[sqlalchemy]' installs psycopg and PyMySQL)"
        ) from None


def check_tables(engine: Engine, events: sa.Table, marks: sa.Table, deliveries: sa.Table | None = None) -> bool:
    """Whether the tables exist; refuse tables of an earlier version, naming the SQL that upgrades them.

    :param deliveries: the delivery log's table, checked too when given: made
        by this version, it is missing beside tables of an earlier one when
        the store does not create tables (``create_tables=False``).
    :raises RuntimeError: for tables without the ``receiver`` column, or
        (MariaDB / MySQL) bodies kept, or connections made, in a character
        set other than utf8mb4, or a missing delivery log's table.
    """
    if engine.dialect.name in ("mysql", "mariadb"):
        _check_connection_charset(engine)
    inspector = sa.inspect(engine)
    names = set(inspector.get_table_names())
    if events.name not in names or marks.name not in names:
        return False
    tables = (events, marks)
    old = [t for t in tables if "receiver" not in {c["name"] for c in inspector.get_columns(t.name)}]
    if old:
        statements = upgrade_statements(engine, inspector, old)
        raise RuntimeError(
            f"the tables {', '.join(t.name for t in old)} were made by an earlier version of webhook_receiver,"
            " without the receiver column that keeps receivers apart. Stop the app and run, in one"
            " maintenance window:\n\n" + ";\n".join(statements) + ";\n\n(then drop the *_before_receivers"
            " tables once you have checked the copies; see docs/stores.rst, 'Upgrading the tables')"
        )
    if deliveries is not None and deliveries.name not in names:
        dialect = engine.dialect
        statements = [str(sa.schema.CreateTable(deliveries).compile(dialect=dialect)).strip()]
        statements += [str(sa.schema.CreateIndex(index).compile(dialect=dialect)) for index in deliveries.indexes]
        raise RuntimeError(
            f"the table {deliveries.name} (each event's delivery attempts, new in this version) is missing and"
            " the store does not create tables (create_tables=False): create it with your migrations, or run:\n\n"
            + ";\n".join(statements)
            + ";\n"
        )
    if engine.dialect.name in ("mysql", "mariadb"):
        with engine.connect() as conn:
            charset = conn.execute(
                sa.text(
                    "SELECT CHARACTER_SET_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE()"
                    " AND TABLE_NAME = :table AND COLUMN_NAME = 'raw'"
                ),
                {"table": events.name},
            ).scalar_one_or_none()
        if charset is not None and charset != "utf8mb4":
            raise RuntimeError(
                f"the table {events.name} keeps bodies in {charset}, which changes some of them"
                f" (an emoji becomes '?'): run ALTER TABLE {events.name} CONVERT TO CHARACTER SET"
                " utf8mb4 COLLATE utf8mb4_bin"
            )
    return True


def _check_connection_charset(engine: Engine) -> None:
    """Refuse MariaDB / MySQL connections not in utf8mb4, which change bodies (an emoji becomes ``?``).

    A store on a URL of its own always gets utf8mb4 (:func:`database_url`);
    an :class:`~sqlalchemy.engine.Engine` or Flask-SQLAlchemy ``db`` brings
    the app's connections, whose URL may say ``?charset=utf8`` (utf8mb3).
    """
    with engine.connect() as conn:
        charset = conn.execute(sa.text("SELECT @@character_set_client")).scalar_one_or_none()
    if charset is not None and charset != "utf8mb4":
        raise RuntimeError(
            f"the database connections are in {charset}, which changes some bodies (an emoji becomes '?'):"
            " make them utf8mb4, with ?charset=utf8mb4 in the database URL (SQLALCHEMY_DATABASE_URI"
            " for Flask-SQLAlchemy)"
        )


def upgrade_statements(engine: Engine, inspector: Any, tables: list[sa.Table]) -> list[str]:
    """The SQL that brings *tables* of an earlier version to this one's layout, for this database.

    Each old table is renamed ``<name>_before_receivers`` (its indexes dropped
    first: their names are taken again), the new one created with its key and
    indexes, and every row copied with the receiver ``moltin``.
    """
    dialect = engine.dialect
    statements: list[str] = []
    for table in tables:
        before = f"{table.name}_before_receivers"
        for index in inspector.get_indexes(table.name):
            if index["name"]:
                statements.append(_drop_index(dialect.name, index["name"], table.name))
        statements.append(f"ALTER TABLE {table.name} RENAME TO {before}")
        statements.append(str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip())
        statements.extend(
            str(sa.schema.CreateIndex(index).compile(dialect=dialect))
            for index in table.indexes
            if _has_index(index, dialect.name)
        )
        columns = [c.name for c in table.columns if c.name != "receiver"]
        if dialect.name in ("mysql", "mariadb"):  # the old keys were text in the table's charset: as UTF-8 bytes
            keys = {c.name for c in table.primary_key.columns}
            selected = [f"CONVERT({c} USING utf8mb4)" if c in keys else c for c in columns]
        else:
            selected = columns
        statements.append(
            f"INSERT INTO {table.name} (receiver, {', '.join(columns)})"
            f" SELECT '{DEFAULT_RECEIVER}', {', '.join(selected)} FROM {before}"
        )
    return statements


def _has_index(index: sa.Index, dialect: str) -> bool:
    """Whether *index* is created on *dialect*: a partial one is not where there are none (MariaDB, MySQL)."""
    return dialect not in ("mysql", "mariadb") or index.dialect_options["postgresql"]["where"] is None


def _drop_index(dialect: str, index: str, table: str) -> str:
    return f"DROP INDEX {index} ON {table}" if dialect in ("mysql", "mariadb") else f"DROP INDEX {index}"
