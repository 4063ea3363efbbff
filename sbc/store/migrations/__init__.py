"""Schema migrations of the store (Alembic), driven from code: no ``alembic.ini`` at run time.

The one schema path for SQLite and PostgreSQL alike: :meth:`sbc.store.Store.open` and
``sbc migrate`` call :func:`migrate`, which brings the database to the newest revision in
``versions/`` (an empty database gets every table; an up-to-date one is left alone). There is no
``create_all`` any more, so a test that passes on a migrated database proves the migrations, not
just the models. ``tests/test_migrations.py`` checks that an empty database migrated to head has
exactly the schema of :mod:`sbc.store.schema` (Alembic's ``compare_metadata`` finds nothing).

Regenerating after a change to :mod:`sbc.store.schema` (developers; see ``__main__.py``)::

    python -m sbc.store.migrations revision -m "add applications"   # a new revision from the models
    python -m sbc.store.migrations initial       # rewrite 0001 from the models (before a release only)
    python -m sbc.store.migrations check         # exit 1 and list the differences when head != models

Concurrency: several ``sbc run`` nodes may start at once against one PostgreSQL. The whole
upgrade runs in one transaction (PostgreSQL has transactional DDL) that first takes a
transaction-level advisory lock, so the nodes migrate one after the other and the later ones find
the database at head. On SQLite the transaction is ``BEGIN IMMEDIATE`` (the write lock up front,
so two processes cannot both read "no tables" and then both create them) with foreign keys off:
a future batch migration recreates tables, and SQLite's ``DROP TABLE`` with foreign keys on would
fire ``ON DELETE CASCADE`` into the children; ``PRAGMA foreign_key_check`` runs before commit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

#: The folder holding ``env.py``, ``script.py.mako`` and ``versions/`` (shipped as package data).
MIGRATIONS_DIR = Path(__file__).resolve().parent
#: The first revision: the schema as it was when migrations were introduced.
INITIAL_REVISION = "0001"
#: Key of the PostgreSQL advisory lock held while migrating: any bigint constant private to this
#: program works; this one is the ASCII of "sbcmigr" so it is recognisable in ``pg_locks``.
MIGRATION_LOCK_KEY = int.from_bytes(b"sbcmigr", "big")
#: Execution option that makes the SQLite BEGIN hook (``sbc.store.store``) switch foreign keys
#: off and take the write lock at once: both only possible before the transaction starts.
SQLITE_MIGRATION_OPTION = "sbc_sqlite_migration"
#: Table that existed before migrations did: its presence without ``alembic_version`` marks a
#: database made by the old ``create_all`` path, adopted as :data:`INITIAL_REVISION`.
LEGACY_MARKER_TABLE = "store_version"


class MigrationError(Exception):
    """A migration left the database inconsistent (the transaction was rolled back)."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic :class:`~alembic.config.Config` for this package's migrations.

    ``connection`` (a sync connection, e.g. inside ``AsyncConnection.run_sync``) is handed to
    ``env.py``, which runs every operation on it inside the caller's transaction.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # New revision files are "0002_add_applications.py": ordered by name, like the revisions.
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = connection
    return cfg


def script_directory() -> ScriptDirectory:
    """The revisions shipped with this package."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The newest revision: what :func:`migrate` brings a database to."""
    head = script_directory().get_current_head()
    assert head is not None, "no migration in sbc/store/migrations/versions"
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at; ``None`` for an empty (or pre-migration) database."""
    return MigrationContext.configure(connection).get_current_revision()


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


def _check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        bad = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if bad:
            raise MigrationError(f"migration broke {len(bad)} foreign key reference(s), e.g. {tuple(bad[0])}")


def upgrade_sync(connection: Connection, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade to ``revision`` on ``connection``, which must be inside a transaction the caller
    commits. Returns ``(before, after)`` revisions. A database built by the pre-migration
    ``create_all`` path (store tables but no ``alembic_version``) is first stamped
    :data:`INITIAL_REVISION`. Raises Alembic/SQLAlchemy errors or :class:`MigrationError`; the
    caller's transaction must then be rolled back."""
    _lock(connection)
    before = current_revision(connection)
    cfg = alembic_config(connection)
    if before is None and inspect(connection).has_table(LEGACY_MARKER_TABLE):
        command.stamp(cfg, INITIAL_REVISION)
    command.upgrade(cfg, revision)
    _check_foreign_keys(connection)
    return before, current_revision(connection)


def downgrade_sync(connection: Connection, revision: str) -> tuple[str | None, str | None]:
    """Downgrade to ``revision`` (``"base"`` drops every table); as :func:`upgrade_sync`."""
    _lock(connection)
    before = current_revision(connection)
    command.downgrade(alembic_config(connection), revision)
    _check_foreign_keys(connection)
    return before, current_revision(connection)


async def _run(engine: AsyncEngine, fn: Any, revision: str) -> tuple[str | None, str | None]:
    async with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            await conn.execution_options(**{SQLITE_MIGRATION_OPTION: True})
        try:
            async with conn.begin():
                return await conn.run_sync(fn, revision)
        finally:
            if sqlite:
                # Its foreign_keys pragma is off: never hand this connection back to the pool.
                await conn.invalidate()


async def migrate(engine: AsyncEngine, revision: str = "head") -> tuple[str | None, str | None]:
    """Upgrade the database behind ``engine`` to ``revision`` in one transaction.

    Returns ``(before, after)`` revisions (equal when there was nothing to do). Safe to call from
    several processes at once (see the module docstring). On any error nothing is changed and
    the error propagates.
    """
    return await _run(engine, upgrade_sync, revision)


async def downgrade(engine: AsyncEngine, revision: str) -> tuple[str | None, str | None]:
    """Downgrade the database behind ``engine`` to ``revision`` in one transaction."""
    return await _run(engine, downgrade_sync, revision)


__all__ = [
    "INITIAL_REVISION",
    "MIGRATIONS_DIR",
    "MIGRATION_LOCK_KEY",
    "SQLITE_MIGRATION_OPTION",
    "MigrationError",
    "alembic_config",
    "current_revision",
    "downgrade",
    "downgrade_sync",
    "head_revision",
    "migrate",
    "script_directory",
    "upgrade_sync",
]
