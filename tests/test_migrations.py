"""Alembic migrations of the store, on SQLite and PostgreSQL (``db_url`` runs each test on both).

The drift check is the first test: an empty database migrated to head must have exactly the
schema of ``sbc.store.schema``. When it fails after a model change, add a revision:
``python -m sbc.store.migrations revision -m "what changed"`` (or, before the first release,
``python -m sbc.store.migrations initial``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from sbc.store import Store
from sbc.store.migrations import (
    INITIAL_REVISION,
    MIGRATIONS_DIR,
    MigrationError,
    current_revision,
    downgrade,
    head_revision,
    migrate,
)
from sbc.store.schema import STORE_VERSION_ROW_ID, Base, StoreVersionRow, TrunkRow
from sbc.store.store import async_db_url, bump_version
from tests.sbcproc import REPO

MODEL_TABLES = set(Base.metadata.tables)


def _diffs(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, Base.metadata)


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _bare(db_url: str) -> Store:
    """A store on ``db_url`` whose schema was not touched (the engine has the SQLite hooks)."""
    return await Store.open(db_url, create=False)


async def test_empty_database_migrates_to_exactly_the_models(db_url: str) -> None:
    store = await _bare(db_url)
    try:
        before, after = await migrate(store.engine)
        async with store.engine.connect() as conn:
            diffs = await conn.run_sync(_diffs)
            tables = await conn.run_sync(_tables)
    finally:
        await store.close()
    assert (before, after) == (None, head_revision())
    assert diffs == [], "models and migrations differ: python -m sbc.store.migrations revision -m MSG"
    assert tables == MODEL_TABLES | {"alembic_version"}


async def test_downgrade_to_base_and_up_again(db_url: str) -> None:
    store = await _bare(db_url)
    try:
        await migrate(store.engine)
        assert await downgrade(store.engine, "base") == (head_revision(), None)
        async with store.engine.connect() as conn:
            assert await conn.run_sync(_tables) == {"alembic_version"}
        await migrate(store.engine)
        async with store.engine.connect() as conn:
            assert await conn.run_sync(_diffs) == []
            assert await conn.run_sync(current_revision) == head_revision()
    finally:
        await store.close()


async def test_reopening_keeps_data_and_migrates_nothing(db_url: str) -> None:
    first = await Store.open(db_url)
    async with first.session() as session, session.begin():
        await session.run_sync(bump_version)
    await first.close()
    second = await Store.open(db_url)
    try:
        assert await migrate(second.engine) == (head_revision(), head_revision())
        assert await second.version() == 1
    finally:
        await second.close()


async def test_nodes_starting_together_migrate_one_after_the_other(db_url: str) -> None:
    stores = [await _bare(db_url) for _ in range(3)]
    try:
        # A task group, not gather: when one fails the others are cancelled before the stores
        # close, rather than left migrating (Alembic's context is process-global).
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(migrate(s.engine)) for s in stores]
        results = [t.result() for t in tasks]
        async with stores[0].engine.connect() as conn:
            assert await conn.run_sync(_diffs) == []
    finally:
        for s in stores:
            await s.close()
    head = head_revision()
    assert sorted(results, key=lambda r: r[0] or "") == [(None, head), (head, head), (head, head)]


async def test_database_made_by_create_all_is_adopted(db_url: str) -> None:
    engine = create_async_engine(async_db_url(db_url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
            await conn.execute(insert(StoreVersionRow).values(id=STORE_VERSION_ROW_ID, version=7))
    finally:
        await engine.dispose()
    store = await Store.open(db_url)
    try:
        assert await store.version() == 7
        async with store.engine.connect() as conn:
            assert await conn.run_sync(current_revision) == head_revision()
            assert await conn.run_sync(_diffs) == []
    finally:
        await store.close()


async def test_open_without_create_touches_nothing(db_url: str) -> None:
    store = await _bare(db_url)
    try:
        async with store.engine.connect() as conn:
            assert await conn.run_sync(_tables) == set()
    finally:
        await store.close()


async def test_sqlite_migration_refuses_broken_foreign_keys_and_keeps_them_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sbc.db'}"
    store = await Store.open(url)
    try:
        async with store.engine.connect() as conn:
            await conn.exec_driver_sql("COMMIT")  # PRAGMA foreign_keys is a no-op inside a transaction
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await conn.execute(
                insert(TrunkRow).values(id=1, customer_id=99, name="orphan", allowed_cidrs=[])
            )
            await conn.commit()
            await conn.invalidate()
        with pytest.raises(MigrationError, match="foreign key"):
            await migrate(store.engine)
        async with store.engine.connect() as conn:
            # The pooled connections never saw the migration's foreign_keys=OFF.
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await store.close()


def _sbc_migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sbc", "migrate", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_sbc_migrate_command(db_url: str) -> None:
    head = head_revision()
    first = _sbc_migrate("--db", db_url)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) | {"db": None} == {"db": None, "from": None, "to": head, "head": head}
    again = _sbc_migrate("--db", db_url)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["from"] == head
    down = _sbc_migrate("--db", db_url, "--downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["to"] is None


def test_sbc_migrate_reports_an_unusable_database(tmp_path: Path) -> None:
    done = _sbc_migrate("--db", f"sqlite:///{tmp_path / 'missing' / 'sbc.db'}")
    assert done.returncode == 1
    assert "does not exist" in done.stderr


def test_migrations_ship_with_the_package() -> None:
    """A non-editable install must carry env.py, the template and every revision."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    shipped = data["tool"]["setuptools"]["package-data"]["sbc.store.migrations"]
    assert {"script.py.mako", "versions/*.py"} <= set(shipped)
    assert (MIGRATIONS_DIR / "env.py").is_file() and (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert list((MIGRATIONS_DIR / "versions").glob(f"{INITIAL_REVISION}_*.py"))
