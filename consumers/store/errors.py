"""Which database errors may pass (retry) and which are bugs (stay loud).

:func:`translate_errors` turns the first kind into :class:`consumers.domain.TransientError`,
chained to the original, and lets everything else through unchanged: a missing table, a
syntax error or an integrity violation is a bug or a missing migration, and retrying it would
only hide it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy.exc as sa_exc

from consumers.domain import TransientError
from consumers.ports import StoreUnusable

__all__ = ["SchemaMissing", "StoreUnusable", "is_transient", "is_unusable", "translate_errors"]

# SQLSTATE classes and codes (PostgreSQL appendix A) worth a retry: connection exceptions,
# insufficient resources, system I/O errors, serialization failure, deadlock, lock not
# available, statement timeout, shutdown or startup in progress, and read-only transaction
# (we reached a standby during a failover).
_PG_TRANSIENT_CLASSES = ("08", "53", "58")
_PG_TRANSIENT_CODES = frozenset(
    {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "57P05", "25006"}
)

# SQLite primary result codes worth a retry: busy/locked (another writer), I/O error, disk
# full, cannot open the file (a mount that went away), WAL protocol error.
_SQLITE_TRANSIENT_CODES = frozenset({5, 6, 10, 13, 14, 15})


class SchemaMissing(StoreUnusable):
    """The database is not at this code's schema (tables dropped, an old backup restored)."""


# SQLSTATE classes of errors no row of ours can cause: feature not supported, invalid
# authorization, invalid catalog (database) name, syntax error or access rule violation
# (insufficient privilege, undefined table or column), insufficient privilege's class 42 too.
_PG_UNUSABLE_CLASSES = ("0A", "28", "3D", "42")
# SQLite primary result codes of the same kind: permission denied, read-only, authorization.
_SQLITE_UNUSABLE_CODES = frozenset({3, 8, 23})


def is_unusable(exc: BaseException) -> bool:
    """True when ``exc`` says the store refuses writes whatever the row (see
    :class:`StoreUnusable`), so it must not be blamed on the item being written."""
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        return code is not None and (code & 0xFF) in _SQLITE_UNUSABLE_CODES
    sqlstate: Any = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return bool(sqlstate) and sqlstate[:2] in _PG_UNUSABLE_CLASSES


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (a SQLAlchemy or DBAPI error) may succeed if tried again later."""
    if isinstance(exc, sa_exc.TimeoutError):  # the connection pool is exhausted
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        if code is None:
            return "locked" in str(orig) or "busy" in str(orig)
        return (code & 0xFF) in _SQLITE_TRANSIENT_CODES
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate:
        return sqlstate[:2] in _PG_TRANSIENT_CLASSES or sqlstate in _PG_TRANSIENT_CODES
    # No SQLSTATE: the client library failed before the server answered (connection refused,
    # server closed the connection, timeout). Only OperationalError means that.
    return isinstance(exc, sa_exc.OperationalError)


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Run the block; re-raise transient database errors as ``TransientError`` and those
    no row can cause as :class:`StoreUnusable`."""
    try:
        yield
    except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if is_transient(exc):
            raise TransientError(f"store {what}: {detail}") from exc
        if is_unusable(exc):
            raise StoreUnusable(f"store {what}: {detail}") from exc
        raise
