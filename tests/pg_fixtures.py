"""Fixtures that run store tests on PostgreSQL and Redis as well as SQLite.

``scripts/test.sh`` sources ``scripts/services.sh``, which starts a throw-away PostgreSQL and a
redis-server and exports :data:`PG_URL_ENV` and :data:`REDIS_URL_ENV`; tests that need them skip
only when those variables are unset (pytest run by hand without the services).

* ``db_url``: parametrized ``sqlite`` / ``postgresql``: a fresh SQLite file, or a fresh PostgreSQL
  database created for the test and dropped after it (``WITH (FORCE)``: a leaked connection
  cannot keep it alive). Every test that takes ``db_url`` (or a ``store`` built on it) runs on both.
* ``pg_url``: only the PostgreSQL database.
* ``redis_url`` and ``redis_prefix``: the Redis URL and a key prefix private to the test, so tests
  never see each other's keys on the shared server.

Registered in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

PG_URL_ENV = "SBC_TEST_PG_URL"
REDIS_URL_ENV = "SBC_TEST_REDIS_URL"
PG_URL: str | None = os.environ.get(PG_URL_ENV) or None
REDIS_URL: str | None = os.environ.get(REDIS_URL_ENV) or None

requires_pg = pytest.mark.skipif(PG_URL is None, reason=f"{PG_URL_ENV} unset: scripts/test.sh starts PostgreSQL")
requires_redis = pytest.mark.skipif(
    REDIS_URL is None, reason=f"{REDIS_URL_ENV} unset: scripts/test.sh starts redis-server"
)

#: Prefix of the databases the tests create, so a leftover one is recognisable.
TEST_DB_PREFIX = "sbc_t_"


def _admin_dsn() -> str:
    """The base database's URL in the form asyncpg accepts (no SQLAlchemy driver suffix)."""
    assert PG_URL is not None
    return make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)


def _in_thread(coro_fn, *args):  # type: ignore[no-untyped-def]
    """Run ``coro_fn(*args)`` on a fresh loop in a worker thread: safe whether or not the
    calling thread already runs an event loop (async tests set up sync fixtures inside one)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(coro_fn(*args))).result()


async def _execute(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_admin_dsn())
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_pg_database() -> URL:
    """Create an empty database on the test PostgreSQL and return its SQLAlchemy URL."""
    assert PG_URL is not None, f"{PG_URL_ENV} is not set"
    name = f"{TEST_DB_PREFIX}{uuid.uuid4().hex[:16]}"
    _in_thread(_execute, f'CREATE DATABASE "{name}" TEMPLATE template0')
    return make_url(PG_URL).set(database=name)


def drop_pg_database(url: URL | str) -> None:
    """Drop a database made by :func:`create_pg_database`, whoever is still connected to it."""
    name = make_url(url).database
    assert name and name.startswith(TEST_DB_PREFIX), f"refusing to drop {name!r}"
    _in_thread(_execute, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (skipped without the services)."""
    if PG_URL is None:
        pytest.skip(f"{PG_URL_ENV} unset: scripts/test.sh starts PostgreSQL")
    url = create_pg_database()
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        drop_pg_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=requires_pg)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store URL on each backend: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sbc.db'}"
        return
    url = create_pg_database()
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        drop_pg_database(url)


@pytest.fixture
def redis_url() -> str:
    """The test Redis (skipped without the services)."""
    if REDIS_URL is None:
        pytest.skip(f"{REDIS_URL_ENV} unset: scripts/test.sh starts redis-server")
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"
