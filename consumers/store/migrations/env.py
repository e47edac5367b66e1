"""Alembic environment for the tag store.

Run from code (``consumers.store.migrate``), which passes an open connection in
``config.attributes["connection"]``; or by a developer with the Alembic CLI:
``alembic -c consumers/store/migrations/alembic.ini -x url=sqlite:///dev.db upgrade head``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context

from consumers.store.engine import create_store_engine
from consumers.store.models import Base

# Any constant: pg_advisory_xact_lock key so concurrent upgrades run one at a time.
_ADVISORY_LOCK_ID = 0x7461_6766  # "tagf"

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    url = url or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: pass -x url=... (or use consumers.store.migrate)")
    return url


def _configure(**kwargs: Any) -> None:
    context.configure(target_metadata=Base.metadata, compare_type=True, **kwargs)


def _run(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK_ID})
    # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_store_engine(_url())
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


def run_offline() -> None:
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
