"""Operational faults become TransientError; bugs (missing tables, integrity) stay loud."""

from __future__ import annotations

import socket
import sqlite3

import pytest
import sqlalchemy as sa
from store_factories import make_result

from consumers.domain import TransientError
from consumers.store import TagStore
from consumers.store.errors import StoreUnusable, translate_errors


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_transient() -> None:
    store = TagStore(
        f"postgresql+psycopg://tagfleet:x@127.0.0.1:{_closed_port()}/tagfleet",
        connect_timeout_s=2,
    )
    calls = [
        store.ping,
        lambda: store.save([make_result()]),
        lambda: store.remove(["s3://bucket/a.jpg"], None),
        lambda: store.tags_for_asset("s3://bucket/a.jpg"),
        lambda: store.assets_with_label("red", 0.5),
        lambda: store.current_versions(["s3://bucket/a.jpg"]),
        store.upgrade,
    ]
    for call in calls:
        with pytest.raises(TransientError, match="refused|connect"):
            call()
    store.close()


def test_locked_sqlite_database_is_transient(sqlite_url: str) -> None:
    store = TagStore(sqlite_url, sqlite_busy_timeout_ms=100)
    store.upgrade()
    other = sqlite3.connect(sa.engine.make_url(sqlite_url).database or "")
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        with pytest.raises(TransientError, match="locked"):
            store.save([make_result()])
        other.rollback()
        assert store.save([make_result()]).inserted_tags == 5
    finally:
        other.close()
        store.close()


def test_missing_tables_are_not_transient(store_url: str) -> None:
    store = TagStore(store_url)  # never migrated
    try:
        with pytest.raises((sa.exc.DBAPIError, StoreUnusable)) as raised:
            store.tags_for_asset("s3://bucket/a.jpg")
        assert not isinstance(raised.value, TransientError)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("errcode", "expected"),
    [
        ("serialization_failure", TransientError),
        ("deadlock_detected", TransientError),
        ("lock_not_available", TransientError),
        ("admin_shutdown", TransientError),
        # the row's fault: the write stage dead-letters that item
        ("unique_violation", sa.exc.DBAPIError),
        ("foreign_key_violation", sa.exc.DBAPIError),
        ("string_data_right_truncation", sa.exc.DBAPIError),
        ("program_limit_exceeded", sa.exc.DBAPIError),
        # nobody's row: the service stops instead of dead-lettering good items
        ("undefined_table", StoreUnusable),
        ("insufficient_privilege", StoreUnusable),
        ("invalid_authorization_specification", StoreUnusable),
        ("feature_not_supported", StoreUnusable),
    ],
)
def test_postgres_errors_are_classified_by_sqlstate(
    pg_url: str, errcode: str, expected: type[Exception]
) -> None:
    store = TagStore(pg_url)
    raise_it = f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{errcode}'; END $$"
    try:
        with pytest.raises(expected) as raised, translate_errors("test"), store.engine.begin() as c:
            c.exec_driver_sql(raise_it)
        if expected is not TransientError:
            assert not isinstance(raised.value, TransientError)
        if expected is sa.exc.DBAPIError:
            assert not isinstance(raised.value, StoreUnusable)
    finally:
        store.close()


def test_a_revoked_grant_makes_the_store_unusable_not_the_item(pg_url: str) -> None:
    store = TagStore(pg_url)
    store.upgrade()
    try:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("REVOKE INSERT, UPDATE ON assets FROM CURRENT_USER")
        with pytest.raises(StoreUnusable, match="permission denied"):
            store.save([make_result()])
    finally:
        store.close()


def test_server_closing_the_connection(pg_url: str) -> None:
    """A backend killed mid-transaction is transient; the pool then reconnects (pre-ping)."""
    store = TagStore(pg_url)
    store.upgrade()
    admin = sa.create_engine(pg_url, poolclass=sa.NullPool)
    try:
        with pytest.raises(TransientError), translate_errors("test"), store.engine.begin() as c:
            pid = c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with admin.connect() as a:
                a.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
            c.exec_driver_sql("SELECT 1")

        # Every pooled connection killed while idle: the next call still works.
        with admin.connect() as a:
            a.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        store.ping()
        assert store.save([make_result()]).inserted_tags == 5
    finally:
        admin.dispose()
        store.close()
