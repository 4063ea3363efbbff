"""The persistent store: provisioning snapshot, store version, and CDRs over SQLAlchemy asyncio.

One :class:`Store` owns one :class:`~sqlalchemy.ext.asyncio.AsyncEngine`. SQLite (a file, the
default) serves a single machine; PostgreSQL serves a cluster of SBCs (``asyncpg`` driver). Both
get their schema from the Alembic migrations in :mod:`sbc.store.migrations`. Routing never talks to the store: it reads the immutable
:class:`routing.model.Snapshot` that :meth:`Store.load_snapshot` builds, and a node reloads that
snapshot when :meth:`Store.version` moves.

Transactions: every unit of work runs in one database transaction. On SQLite the driver's
"legacy" transaction handling (no BEGIN before SELECT) is switched off and SQLAlchemy emits BEGIN
itself, so the several SELECTs of a snapshot see one consistent state; on PostgreSQL snapshots are
read at REPEATABLE READ for the same reason.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert, or_, select, tuple_, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, selectinload

from routing.model import (
    Application,
    Carrier,
    Credential,
    Customer,
    Gateway,
    Number,
    Route,
    RouteCarrier,
    Snapshot,
    Trunk,
    TrunkTarget,
)
from sbc.store.cdr import CDR_PARAM_COLUMNS, CdrAttempt, CdrRecord, cdr_params
from sbc.store.migrations import SQLITE_MIGRATION_OPTION, migrate
from sbc.store.schema import (
    STORE_VERSION_ROW_ID,
    ApplicationRow,
    CarrierRow,
    CdrRow,
    CustomerRow,
    NumberRow,
    RouteCarrierRow,
    RouteRow,
    StoreVersionRow,
    TrunkRow,
)

#: Where the store lives when nothing is configured: a SQLite file in the working directory.
DEFAULT_DB_URL = "sqlite+aiosqlite:///sbc.db"

#: How long a SQLite connection waits for another writer's lock before failing with
#: "database is locked". Provisioning transactions and CDR inserts hold the write lock for
#: milliseconds; 5 s rides out a large provision file without losing a CDR write (the same
#: default as Python's sqlite3 module and Django).
SQLITE_BUSY_TIMEOUT_MS = 5000

#: Tries a new SQLite connection makes to find (or put) the database in WAL mode; see _use_wal.
SQLITE_WAL_SWITCH_ATTEMPTS = 3

#: list_cdrs page size when the caller does not say, and the most it may ask for in one call
#: (bounds the memory one API request can pin).
CDR_PAGE_DEFAULT = 100
CDR_PAGE_MAX = 1000

# Drivers for each backend: async ones are kept, sync ones are mapped to the async driver.
_SQLITE_ASYNC_DRIVER = "sqlite+aiosqlite"
_POSTGRES_ASYNC_DRIVER = "postgresql+asyncpg"
_ASYNC_DRIVERS = frozenset({"sqlite+aiosqlite", "postgresql+asyncpg", "postgresql+psycopg"})
_SYNC_TO_ASYNC = {
    "sqlite": _SQLITE_ASYNC_DRIVER,
    "sqlite+pysqlite": _SQLITE_ASYNC_DRIVER,
    "postgresql": _POSTGRES_ASYNC_DRIVER,
    "postgres": _POSTGRES_ASYNC_DRIVER,  # the spelling Heroku and many PaaS hand out
    "postgresql+psycopg2": _POSTGRES_ASYNC_DRIVER,
}


class StoreError(Exception):
    """The store cannot be used as asked (bad URL, unsupported backend)."""


def async_db_url(url: str | URL) -> URL:
    """Map a database URL to one with an asyncio driver.

    ``sqlite:///x.db`` becomes ``sqlite+aiosqlite:///x.db``; ``postgresql://`` (and
    ``postgres://``, ``postgresql+psycopg2://``) becomes ``postgresql+asyncpg://``; URLs that
    already name an async driver are returned unchanged. Raises :class:`StoreError` for any other
    backend or an unparsable URL (the message never contains the password).
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError; keep the URL text out of logs
        raise StoreError(f"not a database URL: {exc.__class__.__name__}") from None
    driver = parsed.drivername
    if driver in _ASYNC_DRIVERS:
        return parsed
    if driver in _SYNC_TO_ASYNC:
        return parsed.set(drivername=_SYNC_TO_ASYNC[driver])
    raise StoreError(
        f"unsupported database {parsed.render_as_string(hide_password=True)!r}: "
        "use sqlite:///FILE or postgresql://USER@HOST/DB"
    )


def _check_sqlite_directory(url: URL) -> None:
    """Refuse a SQLite file whose directory does not exist, with a message that says so.

    SQLite would only say "unable to open database file" (and aiosqlite's worker thread then
    outlives the failed connection); naming the directory tells the operator what to fix.
    """
    database = url.database
    if (
        url.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or database.startswith("file:")
    ):
        return
    directory = Path(database).parent
    if not directory.is_dir():
        raise StoreError(f"directory {str(directory)!r} of the SQLite database does not exist")


def _use_wal(cursor: Any) -> None:
    """Put the database in write-ahead-log mode: readers (snapshot loads, CDR listings) never
    block the writer nor the writer them; the default rollback journal locks the whole file.

    The mode is a property of the file, so a connection only switches a database not in it yet.
    Two connections switching a new database at once both read its header, then both want the
    exclusive lock: SQLite answers one of them "database is locked" at once, whatever the busy
    timeout (a lock upgrade that waited would deadlock). By then the other one is switching it,
    and a second look, which waits for that like any reader, finds WAL. Nodes or workers starting
    together on a new file met this (tests/test_migrations.py, 3 % of connections in a race of three).
    """
    for attempt in range(SQLITE_WAL_SWITCH_ATTEMPTS):
        try:
            cursor.execute("PRAGMA journal_mode")
            if cursor.fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == SQLITE_WAL_SWITCH_ATTEMPTS - 1:
                raise


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    """Set per-connection pragmas and take over BEGIN from the sqlite3 driver."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop the driver from issuing its own (late, DML-only) BEGIN; _on_begin issues it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # Wait for a competing writer instead of failing at once with "database is locked".
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _use_wal(cursor)
            # In WAL mode NORMAL never corrupts the database; a power loss may drop the last
            # commits but an application crash loses nothing. FULL would fsync every CDR insert.
            cursor.execute("PRAGMA synchronous=NORMAL")
            # SQLite leaves foreign keys unenforced unless asked, per connection.
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(SQLITE_MIGRATION_OPTION):
            # A migration (sbc.store.migrations): foreign keys off while tables are recreated
            # (only possible outside a transaction), and the write lock before the first read.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        # Deferred BEGIN: a read-only transaction takes no write lock; writers that must not
        # deadlock on lock upgrade write first (see bump_version).
        conn.exec_driver_sql("BEGIN")


def bump_version(session: Session) -> int:
    """Increment ``store_version`` inside the caller's transaction and return the new value.

    Every provisioning transaction calls this first: the UPDATE takes the write lock (SQLite) or
    the row lock (PostgreSQL) at once, which serialises provisioning writers across processes
    and nodes before they read anything they are about to change. The row is created if missing.
    """
    result = session.execute(
        update(StoreVersionRow)
        .where(StoreVersionRow.id == STORE_VERSION_ROW_ID)
        .values(version=StoreVersionRow.version + 1)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        session.execute(insert(StoreVersionRow).values(id=STORE_VERSION_ROW_ID, version=1))
    return int(
        session.scalar(select(StoreVersionRow.version).where(StoreVersionRow.id == STORE_VERSION_ROW_ID))
    )


class Store:
    """Persistent provisioning data and CDRs behind one async engine.

    Build it with :meth:`open`; release it with :meth:`close`. Methods are safe to call
    concurrently from tasks of one event loop: each runs in its own session and transaction.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        """Wrap an engine that :meth:`open` created; prefer :meth:`open`."""
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._cdr_insert_sql: str | None = None  # write_cdrs' statement, compiled on first use

    @classmethod
    async def open(cls, url: str | URL = DEFAULT_DB_URL, *, create: bool = True, echo: bool = False) -> Store:
        """Connect to the database at ``url`` and return a ready store.

        ``url`` may use a sync driver name (see :func:`async_db_url`); a SQLite file's directory
        must exist (the file is created). With ``create`` (the default) the schema is migrated
        to the newest revision (:func:`sbc.store.migrations.migrate`: the one schema path for
        SQLite and PostgreSQL, safe when several nodes start at once) and the ``store_version``
        row is created if missing; ``create=False`` touches nothing. Raises :class:`StoreError`
        for a bad URL and SQLAlchemy's or Alembic's errors when the database cannot be reached
        or migrated; the engine is disposed in that case.
        """
        parsed = async_db_url(url)
        _check_sqlite_directory(parsed)
        engine = create_async_engine(parsed, echo=echo)
        if engine.dialect.name == "sqlite":
            _install_sqlite_hooks(engine)
        try:
            if create:
                await migrate(engine)
                await _ensure_version_row(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> AsyncEngine:
        """The underlying engine (for migrations and tests)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """Backend name: ``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    def session(self) -> AsyncSession:
        """A new session; use ``async with store.session() as s:``. Objects stay usable after commit."""
        return self._sessions()

    @asynccontextmanager
    async def _read_session(self) -> AsyncIterator[AsyncSession]:
        """A session whose queries all see one consistent database state."""
        async with self._sessions() as session:
            if self.dialect == "postgresql":
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    async def close(self) -> None:
        """Close every pooled connection. The store must not be used afterwards."""
        await self._engine.dispose()

    async def version(self) -> int:
        """The current store version (0 for a store never provisioned)."""
        async with self._sessions() as session:
            value = await session.scalar(
                select(StoreVersionRow.version).where(StoreVersionRow.id == STORE_VERSION_ROW_ID)
            )
        return int(value or 0)

    async def load_snapshot(self) -> Snapshot:
        """Read all provisioning into an immutable :class:`routing.model.Snapshot`.

        The snapshot and its ``version`` come from one transaction, so they always agree. Lists
        are ordered by natural key (carrier, customer and trunk name; e164; route prefix then
        customer) sorted in Python, so the order does not depend on the database's collation;
        gateways, credentials, targets and route carriers keep their provisioned order.
        """
        async with self._read_session() as session:
            return await session.run_sync(_load_snapshot_sync)

    @asynccontextmanager
    async def provisioning(self) -> AsyncIterator[AsyncSession]:
        """One provisioning write: a transaction that bumps the store version first.

        Yields a session inside a transaction whose first statement is :func:`bump_version` (so
        concurrent writers are serialised before they read). The transaction commits when the
        block exits normally and rolls back on any exception, which propagates: nothing is ever
        half written. Every node polling :meth:`version` reloads its snapshot after a commit.
        """
        async with self._sessions() as session, session.begin():
            await session.run_sync(bump_version)
            yield session

    async def write_cdr(self, cdr: CdrRecord) -> int:
        """Insert ``cdr`` in its own transaction and return its new id: the statement and row
        conversion of :meth:`write_cdrs`, for one row (the running SBC retries a refused batch
        row by row through this).

        CDRs are not provisioning: the store version does not move. Raises SQLAlchemy errors if
        the database refuses the row (nothing is written then).
        """
        async with self._engine.begin() as conn:
            result = await conn.exec_driver_sql(
                self._cdr_insert() + " RETURNING id", cdr_params(cdr, self.dialect == "sqlite")
            )
            return result.scalar_one()

    async def write_cdrs(self, cdrs: Sequence[CdrRecord]) -> None:
        """Insert many CDRs in one transaction (one executemany): what the running SBC does.

        At hundreds of calls per second one transaction per CDR costs more than the call
        itself (a commit, an fsync in WAL mode). All rows or none are written; raises
        SQLAlchemy errors like :meth:`write_cdr`.
        """
        if not cdrs:
            return
        naive_utc = self.dialect == "sqlite"
        rows = [cdr_params(c, naive_utc) for c in cdrs]
        async with self._engine.begin() as conn:
            await conn.exec_driver_sql(self._cdr_insert(), rows)

    def _cdr_insert(self) -> str:
        """The CDR INSERT in the driver's own parameter style, compiled once. Rows go to the
        driver as tuples, converted the way the column types would (see cdr_params): through
        the ORM each row cost 50-60 us of the signalling thread, 5 % of a call at load."""
        if self._cdr_insert_sql is None:
            self._cdr_insert_sql = str(
                insert(CdrRow.__table__).compile(
                    dialect=self._engine.dialect, column_keys=list(_CDR_COLUMNS), for_executemany=True
                )
            )
        return self._cdr_insert_sql

    async def list_cdrs(
        self,
        *,
        customer: str | None = None,
        carrier: str | None = None,
        trunk: str | None = None,
        call_id: str | None = None,
        direction: str | None = None,
        disposition: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        number: str | Sequence[str] | None = None,
        before: tuple[datetime, int] | None = None,
        limit: int = CDR_PAGE_DEFAULT,
        offset: int = 0,
    ) -> list[CdrRecord]:
        """Return CDRs matching every given filter, newest ``setup_time`` first (then highest id).

        ``since`` is inclusive and ``until`` exclusive, both on ``setup_time`` and both must be
        timezone-aware. ``number`` matches CDRs whose caller or callee equals it (or any of
        several spellings given as a sequence: CDRs keep numbers as signalled). ``before`` is a
        keyset cursor ``(setup_time, id)`` of the last row of a previous page: only older rows
        are returned, so paging through a table that is being written neither repeats nor skips
        rows that existed when paging started. Raises ValueError when ``limit`` is outside
        1..:data:`CDR_PAGE_MAX`, ``offset`` is negative, or a bound is naive.
        """
        if not 1 <= limit <= CDR_PAGE_MAX:
            raise ValueError(f"limit {limit} outside 1..{CDR_PAGE_MAX}")
        if offset < 0:
            raise ValueError(f"offset {offset} is negative")
        for name, bound in (("since", since), ("until", until), ("before", before[0] if before else None)):
            if bound is not None and bound.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware")
        # Core rows, not ORM objects: a page of CDRs is read-only, and mapping 1000 ORM instances
        # costs several times the query itself.
        query = select(CdrRow.__table__)
        if number is not None:
            spellings = [number] if isinstance(number, str) else list(number)
            query = query.where(or_(CdrRow.caller.in_(spellings), CdrRow.callee.in_(spellings)))
        if before is not None:
            query = query.where(tuple_(CdrRow.setup_time, CdrRow.id) < tuple_(*before))
        for column, wanted in (
            (CdrRow.customer, customer),
            (CdrRow.carrier, carrier),
            (CdrRow.trunk, trunk),
            (CdrRow.call_id, call_id),
            (CdrRow.direction, direction),
            (CdrRow.disposition, disposition),
        ):
            if wanted is not None:
                query = query.where(column == wanted)
        if since is not None:
            query = query.where(CdrRow.setup_time >= since)
        if until is not None:
            query = query.where(CdrRow.setup_time < until)
        query = query.order_by(CdrRow.setup_time.desc(), CdrRow.id.desc()).limit(limit).offset(offset)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [_cdr_from_row(row) for row in rows]

    async def get_cdr(self, cdr_id: int, *, customer: str | None = None) -> CdrRecord | None:
        """The CDR with id ``cdr_id`` (only if it belongs to ``customer`` when given), or None."""
        query = select(CdrRow.__table__).where(CdrRow.id == cdr_id)
        if customer is not None:
            query = query.where(CdrRow.customer == customer)
        async with self._sessions() as session:
            row = (await session.execute(query)).first()
        return None if row is None else _cdr_from_row(row)


def _cdr_from_row(row: Any) -> CdrRecord:
    """A CDR from a ``cdrs`` row (an ORM object or a Core row: both have the column attributes)."""
    return CdrRecord(
        id=row.id,
        call_id=row.call_id,
        direction=row.direction,
        caller=row.caller,
        callee=row.callee,
        customer=row.customer,
        carrier=row.carrier,
        trunk=row.trunk,
        gateway=row.gateway,
        attempts=tuple(CdrAttempt.from_json(a) for a in row.attempts),
        setup_time=row.setup_time,
        answer_time=row.answer_time,
        end_time=row.end_time,
        duration_s=row.duration_s,
        disposition=row.disposition,
        sip_code=row.sip_code,
        hangup_by=row.hangup_by,
        end_reason=row.end_reason or "",
        media=row.media,
    )


def _carrier_from_row(row: CarrierRow) -> Carrier:
    return Carrier(
        id=row.id,
        name=row.name,
        gateways=tuple(
            Gateway(host=g.host, port=g.port, transport=g.transport, priority=g.priority, weight=g.weight)
            for g in row.gateways
        ),
        inbound_cidrs=tuple(row.inbound_cidrs),
        tech_prefix=row.tech_prefix,
        strip_plus=row.strip_plus,
        failover_codes=tuple(row.failover_codes),
        probe_interval_s=row.probe_interval_s,
        max_calls=row.max_calls,
        max_cps=row.max_cps,
    )


def _trunk_from_row(row: TrunkRow, customer: str) -> Trunk:
    return Trunk(
        id=row.id,
        name=row.name,
        customer=customer,
        allowed_cidrs=tuple(row.allowed_cidrs),
        credentials=tuple(Credential(username=c.username, password=c.password) for c in row.credentials),
        targets=tuple(TrunkTarget(uri=t.uri, priority=t.priority, weight=t.weight) for t in row.targets),
        max_calls=row.max_calls,
        max_cps=row.max_cps,
    )


def _customer_from_row(row: CustomerRow) -> Customer:
    trunks = sorted((_trunk_from_row(t, row.name) for t in row.trunks), key=lambda t: t.name)
    return Customer(
        id=row.id, name=row.name, max_calls=row.max_calls, max_cps=row.max_cps, trunks=tuple(trunks)
    )


def _route_from_row(row: RouteRow) -> Route:
    return Route(
        id=row.id,
        prefix=row.prefix,
        customer=row.customer.name if row.customer is not None else None,
        time_window=row.time_window,
        carriers=tuple(
            RouteCarrier(name=rc.carrier.name, priority=rc.priority, weight=rc.weight) for rc in row.carriers
        ),
    )


def _application_from_row(row: ApplicationRow, customer: str) -> Application:
    return Application(
        id=row.id,
        name=row.name,
        customer=customer,
        call_hook=row.call_hook,
        fallback_url=row.fallback_url,
        status_hook=row.status_hook,
        signing_secret=row.signing_secret,
        flow=tuple(row.flow) if row.flow is not None else None,
    )


def _load_snapshot_sync(session: Session) -> Snapshot:
    """Build the snapshot with a sync session (run through ``AsyncSession.run_sync``)."""
    version = session.scalar(
        select(StoreVersionRow.version).where(StoreVersionRow.id == STORE_VERSION_ROW_ID)
    )
    # .all() at once: every query's rows (and eager loads) are read before the next query runs.
    carrier_rows = session.scalars(select(CarrierRow).options(selectinload(CarrierRow.gateways))).all()
    customer_rows = session.scalars(
        select(CustomerRow).options(
            selectinload(CustomerRow.trunks).selectinload(TrunkRow.credentials),
            selectinload(CustomerRow.trunks).selectinload(TrunkRow.targets),
        )
    ).all()
    number_rows = session.execute(
        select(NumberRow.e164, CustomerRow.name, TrunkRow.name, ApplicationRow.name, NumberRow.media_endpoint)
        .outerjoin(CustomerRow, NumberRow.customer_id == CustomerRow.id)
        .outerjoin(TrunkRow, NumberRow.trunk_id == TrunkRow.id)
        .outerjoin(ApplicationRow, NumberRow.application_id == ApplicationRow.id)
    ).all()
    application_rows = session.execute(
        select(ApplicationRow, CustomerRow.name).join(ApplicationRow.customer)
    ).all()
    route_rows = session.scalars(
        select(RouteRow).options(
            selectinload(RouteRow.customer),
            selectinload(RouteRow.carriers).selectinload(RouteCarrierRow.carrier),
        )
    ).all()
    carriers = sorted((_carrier_from_row(r) for r in carrier_rows), key=lambda c: c.name)
    customers = sorted((_customer_from_row(r) for r in customer_rows), key=lambda c: c.name)
    numbers = sorted(
        (
            Number(e164=e164, customer=customer, trunk=trunk, application=app, media_endpoint=media)
            for e164, customer, trunk, app, media in number_rows
        ),
        key=lambda n: n.e164,
    )
    routes = sorted((_route_from_row(r) for r in route_rows), key=lambda r: (r.prefix, r.customer or ""))
    applications = sorted(
        (_application_from_row(row, customer) for row, customer in application_rows),
        key=lambda a: (a.customer, a.name),
    )
    return Snapshot(
        carriers=tuple(carriers),
        customers=tuple(customers),
        numbers=tuple(numbers),
        routes=tuple(routes),
        version=int(version or 0),
        applications=tuple(applications),
    )


__all__ = [
    "CDR_PAGE_DEFAULT",
    "CDR_PAGE_MAX",
    "DEFAULT_DB_URL",
    "SQLITE_BUSY_TIMEOUT_MS",
    "Store",
    "StoreError",
    "async_db_url",
    "bump_version",
]


async def _ensure_version_row(engine: AsyncEngine) -> None:
    """Create the ``store_version`` row if it is missing, safely when several processes open a
    fresh store at once (``sbc run --workers N``, cluster nodes starting together): one
    ``INSERT ... ON CONFLICT DO NOTHING``, not a read then a write. On SQLite a transaction that
    reads and then writes while another process writes fails at once with "database is locked"
    (the busy timeout cannot help a lock upgrade); on PostgreSQL the second insert would violate
    the primary key."""
    if engine.dialect.name == "sqlite":  # async_db_url admits only SQLite and PostgreSQL
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    statement = dialect_insert(StoreVersionRow).values(id=STORE_VERSION_ROW_ID, version=0)
    async with engine.begin() as conn:
        await conn.execute(statement.on_conflict_do_nothing(index_elements=["id"]))


# The cdrs columns write_cdrs fills, in statement order (all but the id): the order of
# sbc.store.cdr.cdr_params, which is compiled with the signalling path and cannot see the table.
_CDR_COLUMNS = tuple(c.name for c in CdrRow.__table__.columns if c.name != "id")
if _CDR_COLUMNS != CDR_PARAM_COLUMNS:  # not an assert: python -O must not skip it
    raise RuntimeError("sbc.store.cdr.CDR_PARAM_COLUMNS must follow the cdrs table's columns")
