"""Engine construction: one code path for PostgreSQL and SQLite.

SQLite connections get WAL (readers never block the writer), a busy timeout, foreign keys and
SQLAlchemy-controlled transactions: ``BEGIN`` for reads, ``BEGIN IMMEDIATE`` for connections
taken from :func:`writer` (the write lock is taken up front, so two writers queue on the busy
timeout instead of failing on a lock upgrade).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

_WRITE = "tagfleet_write"


def create_store_engine(
    url: str | URL, *, sqlite_busy_timeout_ms: int = 5000, connect_timeout_s: int = 10
) -> sa.Engine:
    """An engine with ``pool_pre_ping``; ``postgresql://`` means psycopg 3."""
    u = make_url(url)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if u.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": connect_timeout_s}
    engine = sa.create_engine(u, **kwargs)
    if u.get_backend_name() == "sqlite":
        _configure_sqlite(engine, sqlite_busy_timeout_ms)
    return engine


def writer(engine: sa.Engine) -> sa.Engine:
    """The same engine and pool, marked so that SQLite transactions begin IMMEDIATE."""
    return engine.execution_options(**{_WRITE: True})


def _configure_sqlite(engine: sa.Engine, busy_timeout_ms: int) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # sqlite3 must not emit BEGIN: we do
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
