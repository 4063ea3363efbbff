"""Tests of sbc.store: URL mapping, schema and integrity rules, store version, CDRs (SQLite files)."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.schema import CreateIndex, CreateTable

from routing.model import Snapshot
from sbc.store import CdrAttempt, CdrRecord, Store, StoreError, async_db_url
from sbc.store.cdr import CDR_PARAM_COLUMNS, to_json_text
from sbc.store.schema import (
    Base,
    CdrRow,
    CustomerRow,
    NumberRow,
    RouteRow,
    StoreVersionRow,
    TrunkRow,
)
from sbc.store.store import CDR_PAGE_MAX, SQLITE_BUSY_TIMEOUT_MS, _use_wal, bump_version
from tests.sbcproc import REPO

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)

EXPECTED_TABLES = {
    "store_version",
    "carriers",
    "gateways",
    "customers",
    "trunks",
    "trunk_credentials",
    "trunk_targets",
    "numbers",
    "routes",
    "route_carriers",
    "cdrs",
    "api_keys",
    "applications",
}


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    """An empty migrated store, on SQLite and on PostgreSQL (tests/pg_fixtures.py)."""
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()


def make_cdr(**overrides: object) -> CdrRecord:
    values: dict[str, object] = {
        "call_id": "abc@192.0.2.1",
        "direction": "outbound",
        "caller": "+14155550100",
        "callee": "+442079460000",
        "setup_time": T0,
        "answer_time": T0 + timedelta(seconds=3),
        "end_time": T0 + timedelta(seconds=63, microseconds=500000),
        "disposition": "answered",
        "sip_code": 200,
        "hangup_by": "caller",
        "customer": "acme",
        "carrier": "alpha",
        "trunk": "main",
        "gateway": "192.0.2.10:5060;transport=udp",
        "attempts": (
            CdrAttempt(carrier="beta", gateway="198.51.100.7:5060", code=503, reason="Service Unavailable"),
            CdrAttempt(carrier="alpha", gateway="192.0.2.10:5060", code=200, reason="OK"),
        ),
        "media": {"a_leg": {"loss_pct": 0.1, "jitter_ms": 4.5, "mos": 4.3}},
    }
    values.update(overrides)
    return CdrRecord(**values)  # type: ignore[arg-type]


# --- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite+pysqlite:///x.db", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("postgresql://u:p@db/sbc", "postgresql+asyncpg"),
        ("postgres://u:p@db/sbc", "postgresql+asyncpg"),
        ("postgresql+psycopg2://u:p@db/sbc", "postgresql+asyncpg"),
        ("postgresql+asyncpg://u:p@db/sbc", "postgresql+asyncpg"),
        ("postgresql+psycopg://u:p@db/sbc", "postgresql+psycopg"),
    ],
)
def test_async_db_url_maps_to_async_driver(given: str, driver: str) -> None:
    url = async_db_url(given)
    assert url.drivername == driver
    assert url.database in ("x.db", "sbc")


def test_async_db_url_refuses_other_backends_without_leaking_password() -> None:
    with pytest.raises(StoreError) as info:
        async_db_url("mysql://root:hunter2@db/sbc")
    assert "hunter2" not in str(info.value)
    assert "unsupported database" in str(info.value)
    with pytest.raises(StoreError):
        async_db_url("not a url at all")


# --- schema -----------------------------------------------------------------------------------


async def test_open_creates_tables_and_version_row(store: Store) -> None:
    async with store.engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        number_indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("numbers"))
        cdr_indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("cdrs"))
        number_uniques = await conn.run_sync(lambda c: inspect(c).get_unique_constraints("numbers"))
    assert tables == EXPECTED_TABLES | {"alembic_version"}  # the schema comes from the migrations
    assert ["e164"] in [u["column_names"] for u in number_uniques]  # unique => indexed lookup
    assert {"customer_id"} <= {c for ix in number_indexes for c in ix["column_names"]}
    cdr_index_columns = [ix["column_names"] for ix in cdr_indexes]
    assert ["setup_time"] in cdr_index_columns
    assert ["customer"] in cdr_index_columns
    assert await store.version() == 0
    assert await store.load_snapshot() == Snapshot()


async def test_sqlite_pragmas_are_set(store: Store) -> None:
    if store.dialect != "sqlite":
        pytest.skip("SQLite pragmas")
    async with store.engine.connect() as conn:
        journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        busy = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
        sync = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
        fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
    assert journal == "wal"
    assert busy == SQLITE_BUSY_TIMEOUT_MS
    assert sync == 1  # NORMAL
    assert fks == 1


async def test_reopen_keeps_data_and_version(db_url: str) -> None:
    url = db_url
    first = await Store.open(url)
    async with first.session() as session, session.begin():
        await session.run_sync(bump_version)
    await first.close()
    second = await Store.open(url)
    try:
        assert await second.version() == 1
    finally:
        await second.close()


def test_processes_opening_a_fresh_store_at_once_all_succeed(db_url: str) -> None:
    """``sbc run --workers N`` (or cluster nodes starting together) opens one fresh store from
    N processes at once: the schema migrated once, then every open creates the version row if
    missing. A read-then-insert made most of six SQLite opens fail with "database is locked"."""
    assert subprocess.run([sys.executable, "-m", "sbc", "migrate", "--db", db_url], cwd=REPO,
                          capture_output=True).returncode == 0  # fmt: skip
    code = (
        "import asyncio, sys\nfrom sbc.store.store import Store\n"
        "async def main():\n    s = await Store.open(sys.argv[1])\n    print(await s.version())\n    await s.close()\n"
        "asyncio.run(main())"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, db_url], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]  # fmt: skip
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err[-300:] for _, err in outs]
    assert {out.strip() for out, _ in outs} == {"0"}


def test_schema_compiles_for_postgresql() -> None:
    dialect = postgresql.dialect()
    ddl = [str(CreateTable(table).compile(dialect=dialect)) for table in Base.metadata.sorted_tables]
    assert len(ddl) == len(EXPECTED_TABLES)
    routes_index = next(ix for ix in RouteRow.__table__.indexes if ix.name == "uq_routes_prefix_global")
    index_sql = str(CreateIndex(routes_index).compile(dialect=dialect))
    assert "UNIQUE" in index_sql and "WHERE customer_id IS NULL" in index_sql
    assert any("TIMESTAMP WITH TIME ZONE" in sql for sql in ddl)


async def test_number_trunk_must_belong_to_number_customer(store: Store) -> None:
    async with store.session() as session, session.begin():
        acme, globex = CustomerRow(name="acme"), CustomerRow(name="globex")
        session.add_all([acme, globex])
        await session.flush()
        hq = TrunkRow(customer_id=globex.id, name="hq", allowed_cidrs=[])
        session.add(hq)
        await session.flush()
        ids = (acme.id, globex.id, hq.id)
    acme_id, globex_id, hq_id = ids
    async with store.session() as session:
        session.add(NumberRow(e164="+14155550100", customer_id=acme_id, trunk_id=hq_id))
        with pytest.raises(IntegrityError):
            await session.commit()
    async with store.session() as session:
        session.add(NumberRow(e164="+14155550100", trunk_id=hq_id))  # trunk without customer
        with pytest.raises(IntegrityError):
            await session.commit()
    async with store.session() as session, session.begin():
        session.add(NumberRow(e164="+14155550100", customer_id=globex_id, trunk_id=hq_id))
    # A trunk that still has numbers cannot be deleted (the DID would point nowhere).
    async with store.session() as session:
        trunk = await session.get(TrunkRow, hq_id)
        await session.delete(trunk)
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_global_route_prefix_is_unique(store: Store) -> None:
    async with store.session() as session, session.begin():
        session.add(RouteRow(prefix="44"))
    async with store.session() as session:
        session.add(RouteRow(prefix="44"))
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_store_version_has_one_row(store: Store) -> None:
    async with store.session() as session:
        session.add(StoreVersionRow(id=2, version=0))
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_bump_version_is_transactional(store: Store) -> None:
    async with store.session() as session:
        assert await session.run_sync(bump_version) == 1
        await session.rollback()
    assert await store.version() == 0
    async with store.session() as session, session.begin():
        assert await session.run_sync(bump_version) == 1
    async with store.session() as session, session.begin():
        assert await session.run_sync(bump_version) == 2
    assert await store.version() == 2
    assert (await store.load_snapshot()).version == 2


async def test_bump_version_recreates_missing_row(store: Store) -> None:
    async with store.session() as session, session.begin():
        await session.delete(await session.get(StoreVersionRow, 1))
    assert await store.version() == 0
    async with store.session() as session, session.begin():
        assert await session.run_sync(bump_version) == 1


def test_connections_putting_a_new_database_in_wal_mode_at_once_all_succeed(tmp_path: Path) -> None:
    """Connections switching a new file to WAL at once: SQLite answers one of two "database is
    locked" at once, busy timeout or not (about 3 % of connections in a race of three, which
    made nodes starting together fail). _use_wal looks again, and finds the mode the other set."""
    errors: list[BaseException] = []

    def connect(path: Path, barrier: threading.Barrier) -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            barrier.wait()
            _use_wal(conn.cursor())
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        except BaseException as e:  # collected, asserted below
            errors.append(e)
        finally:
            conn.close()

    for race in range(100):
        barrier = threading.Barrier(3)
        threads = [threading.Thread(target=connect, args=(tmp_path / f"{race}.db", barrier)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


# --- CDRs -------------------------------------------------------------------------------------


async def test_cdr_round_trip(store: Store) -> None:
    cdr = make_cdr()
    cdr_id = await store.write_cdr(cdr)
    assert isinstance(cdr_id, int)
    (back,) = await store.list_cdrs()
    assert back.id == cdr_id
    assert back == make_cdr(id=cdr_id)
    assert back.duration_s == pytest.approx(60.5)
    assert back.setup_time.tzinfo is not None and back.setup_time.utcoffset() == timedelta(0)
    assert back.attempts[0].code == 503
    assert back.media["a_leg"]["mos"] == 4.3
    assert await store.version() == 0  # CDRs are not provisioning


async def test_cdr_times_in_other_zones_are_stored_as_utc(store: Store) -> None:
    plus2 = timezone(timedelta(hours=2))
    local = T0.astimezone(plus2)
    await store.write_cdr(make_cdr(setup_time=local, answer_time=None, disposition="busy", sip_code=486))
    (back,) = await store.list_cdrs()
    assert back.setup_time == T0
    assert back.setup_time.tzinfo == UTC
    assert back.duration_s == 0.0


async def _write_through_orm(store: Store, cdr: CdrRecord) -> None:
    """The reference row: a CdrRow whose column types (UtcDateTime, JSON) convert the values."""
    values = {name: getattr(cdr, name) for name in CDR_PARAM_COLUMNS}
    values["attempts"] = [a.to_json() for a in cdr.attempts]
    values["media"] = dict(cdr.media)
    async with store.session() as session, session.begin():
        session.add(CdrRow(**values))


async def test_cdr_writes_store_what_the_orm_stores(store: Store) -> None:
    """write_cdrs and write_cdr bypass the ORM's type conversion: their rows must read back, sort
    and filter exactly like rows written through the ORM (SQLite compares the time text)."""
    plus2 = timezone(timedelta(hours=2))
    variants = [
        {},
        {
            "setup_time": (T0 + timedelta(seconds=1)).astimezone(plus2),
            "answer_time": None,
            "disposition": "busy",
            "sip_code": 486,
            "hangup_by": None,
            "media": {},
            "attempts": (),
        },
        {
            "setup_time": T0 + timedelta(seconds=2, microseconds=123456),
            "customer": None,
            "end_reason": "media timeout",
        },
    ]
    await store.write_cdrs([make_cdr(call_id=f"batch-{i}", **v) for i, v in enumerate(variants)])
    for i, v in enumerate(variants):
        await store.write_cdr(make_cdr(call_id=f"one-{i}", **v))
        await _write_through_orm(store, make_cdr(call_id=f"orm-{i}", **v))
    rows = await store.list_cdrs(limit=10)
    by_id = {r.call_id: r for r in rows}
    for i in range(len(variants)):
        orm = replace(by_id[f"orm-{i}"], id=None, call_id="x")
        for written in (by_id[f"batch-{i}"], by_id[f"one-{i}"]):
            assert replace(written, id=None, call_id="x") == orm
            assert written.setup_time.tzinfo == UTC
    # Bounds compare equal to the stored times, whichever way the row was written.
    since = await store.list_cdrs(since=T0 + timedelta(seconds=1))
    assert {r.call_id for r in since} == {f"{w}-{i}" for w in ("batch", "one", "orm") for i in (1, 2)}
    until = await store.list_cdrs(until=T0 + timedelta(seconds=2, microseconds=123456))
    assert {r.call_id for r in until} == {f"{w}-{i}" for w in ("batch", "one", "orm") for i in (0, 1)}


async def test_list_cdrs_filters_order_and_paging(store: Store) -> None:
    for i in range(5):
        start = T0 + timedelta(minutes=i)
        await store.write_cdr(
            make_cdr(
                call_id=f"call-{i}",
                setup_time=start,
                answer_time=None,
                end_time=start + timedelta(seconds=5),
                disposition="failed" if i % 2 else "no_answer",
                sip_code=503 if i % 2 else 480,
                hangup_by=None,
                customer="acme" if i < 3 else "globex",
                carrier="alpha" if i % 2 else "beta",
                direction="inbound" if i == 4 else "outbound",
            )
        )
    newest_first = [c.call_id for c in await store.list_cdrs()]
    assert newest_first == ["call-4", "call-3", "call-2", "call-1", "call-0"]
    assert [c.call_id for c in await store.list_cdrs(customer="acme")] == ["call-2", "call-1", "call-0"]
    assert [c.call_id for c in await store.list_cdrs(carrier="alpha")] == ["call-3", "call-1"]
    assert [c.call_id for c in await store.list_cdrs(direction="inbound")] == ["call-4"]
    assert [c.call_id for c in await store.list_cdrs(disposition="no_answer", customer="acme")] == [
        "call-2",
        "call-0",
    ]
    assert [c.call_id for c in await store.list_cdrs(call_id="call-3")] == ["call-3"]
    window = await store.list_cdrs(since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))
    assert [c.call_id for c in window] == ["call-2", "call-1"]  # since inclusive, until exclusive
    assert [c.call_id for c in await store.list_cdrs(limit=2, offset=1)] == ["call-3", "call-2"]
    assert await store.list_cdrs(customer="nobody") == []


async def test_list_cdrs_refuses_bad_arguments(store: Store) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.list_cdrs(limit=0)
    with pytest.raises(ValueError, match="limit"):
        await store.list_cdrs(limit=CDR_PAGE_MAX + 1)
    with pytest.raises(ValueError, match="offset"):
        await store.list_cdrs(offset=-1)
    with pytest.raises(ValueError, match="since"):
        await store.list_cdrs(since=datetime(2024, 1, 1))


async def test_naive_datetime_never_reaches_the_table(store: Store) -> None:
    async with store.session() as session:
        session.add(
            CdrRow(
                call_id="x",
                direction="inbound",
                caller="a",
                callee="b",
                attempts=[],
                setup_time=datetime(2024, 1, 1),
                end_time=datetime(2024, 1, 1),
                duration_s=0.0,
                disposition="failed",
                sip_code=500,
                media={},
            )
        )
        with pytest.raises(StatementError, match="naive datetime"):
            await session.commit()
    async with store.session() as session:
        assert (await session.scalars(select(CdrRow))).all() == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"direction": "sideways"}, "direction"),
        ({"disposition": "great"}, "disposition"),
        ({"hangup_by": "nobody"}, "hangup_by"),
        ({"sip_code": 99}, "sip_code"),
        ({"sip_code": 700}, "sip_code"),
        ({"call_id": ""}, "call_id"),
        ({"setup_time": datetime(2024, 5, 1, 12)}, "timezone-aware"),
        ({"end_time": T0 - timedelta(seconds=1)}, "end_time is before setup_time"),
        ({"answer_time": None}, "answer_time must be set"),
        ({"disposition": "busy", "sip_code": 486}, "answer_time must be set"),
        ({"answer_time": T0 + timedelta(hours=1)}, "between"),
        ({"duration_s": -1.0}, "negative"),
        ({"attempts": ({"code": 503},)}, "CdrAttempt"),
    ],
)
def test_cdr_record_refuses_inconsistent_values(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_cdr(**overrides)


@pytest.mark.parametrize(
    "value",
    [
        [],
        {},
        [{"carrier": "alpha", "gateway": None, "code": 503, "reason": "Service Unavailable"}],
        {"a_to_b": {"packets": 50, "loss_pct": 2.0, "jitter_ms": 0.1 + 0.2, "mos": 4.41, "ok": True}},
        {"dtmf": [{"digit": "#", "duration_ms": 120.0}], "name": "Zoë \"quoted\" \u2603\n", 7: [1e300, -0.0]},
        {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "big": 2**70},
    ],
)
def test_cdr_json_columns_are_what_json_dumps_writes(value: object) -> None:
    assert to_json_text(value) == json.dumps(value)


def test_cdr_json_refuses_what_json_dumps_refuses() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        to_json_text({"when": datetime.now(UTC)})


def test_cdr_attempt_refuses_bad_code() -> None:
    with pytest.raises(ValueError, match="SIP status code"):
        CdrAttempt(carrier="a", gateway=None, code=0)
    with pytest.raises(ValueError, match="SIP status code"):
        CdrAttempt(carrier="a", gateway=None, code=True)  # type: ignore[arg-type]


async def test_open_refuses_sqlite_file_in_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await Store.open(f"sqlite:///{tmp_path / 'nowhere' / 'sbc.db'}")
