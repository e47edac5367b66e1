"""Migrations: versioned, run from code, reversible, and equal to the models."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from store_factories import make_result

from consumers.store import TagStore, current, migrate, upgrade
from consumers.store.models import Base

STORE_TABLES = {"assets", "function_results", "tags"}


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_packaged_scripts_are_found() -> None:
    assert (migrate.MIGRATIONS_DIR / "env.py").is_file()
    assert (migrate.MIGRATIONS_DIR / "script.py.mako").is_file()
    assert migrate.head() == "0007"


def test_upgrade_from_empty_down_to_base_and_up_again(store_url: str) -> None:
    assert current(store_url) is None

    upgrade(store_url)
    assert current(store_url) == migrate.head()
    assert _tables(store_url) >= STORE_TABLES
    upgrade(store_url)  # already at head: nothing to do

    migrate.downgrade(store_url, "base")
    assert current(store_url) is None
    assert not STORE_TABLES & _tables(store_url)

    store = TagStore(store_url)
    try:
        store.upgrade()
        assert store.save([make_result()]).inserted_tags == 5
    finally:
        store.close()


def test_migrations_create_exactly_the_models(store_url: str) -> None:
    upgrade(store_url)
    engine = sa.create_engine(store_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()


def test_pods_upgrading_together_migrate_once(pg_url: str) -> None:
    """Two processes upgrade at once on PostgreSQL: the advisory lock makes one wait, then
    find the schema at head; neither fails on "relation already exists".
    """
    code = "import sys; from consumers.store import upgrade; upgrade(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, pg_url], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]

    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert current(pg_url) == migrate.head()


def test_threads_upgrading_together_take_turns(store_url: str) -> None:
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        upgrade(store_url)

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(run) for _ in range(2)]:
            future.result()
    assert current(store_url) == migrate.head()
