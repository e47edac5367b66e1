"""Schema migrations (Alembic), run from code: ``tagfleet db upgrade`` and ``TagStore.upgrade``.

The Alembic environment and versions ship inside the package (``consumers/store/migrations``);
no ``alembic.ini`` is needed at run time. On PostgreSQL an upgrade holds an advisory lock, so
pods that start together migrate one at a time. Alembic keeps its running context in module
globals, so within one process migrations run one at a time too (a lock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from consumers.store.engine import create_store_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_ALEMBIC = threading.Lock()  # alembic.context is process-global


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic config for the packaged scripts, bound to ``connection`` when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``."""
    _with_engine(url, lambda engine: upgrade_engine(engine, revision))


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"``: drop everything)."""
    _with_engine(url, lambda engine: downgrade_engine(engine, revision))


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at; None for an empty (unmigrated) database."""
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def current_revision(conn: sa.Connection) -> str | None:
    """The revision of the database behind ``conn``; None when unmigrated."""
    return MigrationContext.configure(conn).get_current_revision()


def head() -> str:
    """The newest revision shipped with this code."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


def upgrade_engine(engine: sa.Engine, revision: str = "head") -> None:
    """``upgrade`` on an existing engine (keeps its connection settings, e.g. SQLite pragmas)."""
    with _ALEMBIC, engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)


def downgrade_engine(engine: sa.Engine, revision: str) -> None:
    """``downgrade`` on an existing engine."""
    with _ALEMBIC, engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def _with_engine(url: str, action: Callable[[sa.Engine], None]) -> None:
    engine = create_store_engine(url)
    try:
        action(engine)
    finally:
        engine.dispose()
