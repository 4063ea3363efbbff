"""``/v1/numbers``: the DID inventory, number search, purchase, reassignment and release.

Life of a number: an admin adds it to the **inventory** (``POST /v1/numbers`` with a list or a
range); anyone with a key can **search** available numbers (``GET /v1/numbers/available``); a
**purchase** assigns it to a customer and exactly one destination -- a trunk, an application of
that customer, or a media endpoint URL (``ws://``, ``wss://``, ``quic://``); it can be
**reassigned** (``PATCH``) to another destination (by an admin also to another customer) and
**released** back to the inventory. An admin may delete an unassigned number.

Numbers are stored and returned in E.164 (``+14155550100``); input in the usual spellings
(``14155550100``, ``+1 415 555 0100``, ``(415) 555-0100`` for NANP) is normalised, anything
else is 422. In paths the '+' may be left out.

Search: ``prefix`` matches the start of the number (digits, '+' optional); ``pattern`` matches
the whole number with ``x`` for any one digit and ``*`` for any run of digits (possibly none):
``*555*`` contains 555, ``1415555xxxx`` is an exact shape, ``+44*`` is every UK number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from pydantic import BaseModel
from sqlalchemy import Select, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from routing.numbers import is_canonical_e164
from sbc.provision import MediaEndpoint, Name
from sbc.store.schema import ApplicationRow, CustomerRow, NumberRow, TrunkRow

from .auth import Principal, admin_only
from .context import ApiContext, PageMeta, PageParams, page_of
from .errors import Conflict, FieldError, not_found
from .fields import PATTERN_RE, Body, E164In, to_e164
from .scope import customer_filter, owner_for_write

#: Most numbers one inventory request may add: one transaction of this size takes well under a
#: second on SQLite and keeps a typo in a range (an extra digit) from adding millions.
INVENTORY_MAX = 100_000
#: Numbers per ``IN (...)`` list when checking an inventory request for duplicates: below the
#: 999 bound parameters older SQLite builds allow per statement (SQLITE_MAX_VARIABLE_NUMBER).
IN_CHUNK = 500
#: The character after '9' in ASCII: every digit string starting with P sorts before P + ':'.
_AFTER_DIGITS = ":"

Status = Literal["available", "assigned"]


class NumberRange(Body):
    """``first`` to ``last`` inclusive, both E.164 of the same length."""

    first: E164In
    last: E164In


class InventoryIn(Body):
    """Numbers to add to the inventory: ``numbers`` (a list) or ``range``, not both."""

    numbers: list[E164In] | None = None
    range: NumberRange | None = None


class InventoryAdded(BaseModel):
    """How many numbers were added, and the lowest and highest of them."""

    added: int
    first: str
    last: str


class AssignIn(Body):
    """A purchase or reassignment: exactly one destination.

    ``customer`` is required with an admin key on purchase (on reassignment it defaults to the
    current customer); with a customer key it is implied. ``trunk`` and ``application`` are
    names of the customer's trunks and applications.
    """

    customer: Name | None = None
    trunk: Name | None = None
    application: Name | None = None
    media_endpoint: MediaEndpoint | None = None


class NumberOut(BaseModel):
    """A number: available (in the inventory) or assigned to a customer and one destination."""

    e164: str
    status: Status
    customer: str | None
    trunk: str | None
    application: str | None
    media_endpoint: str | None


class NumberPage(PageMeta):
    """A page of numbers, in ascending order."""

    items: list[NumberOut]


def _select() -> Select[tuple[str, str | None, str | None, str | None, str | None]]:
    return (
        select(NumberRow.e164, CustomerRow.name, TrunkRow.name, ApplicationRow.name, NumberRow.media_endpoint)
        .outerjoin(CustomerRow, NumberRow.customer_id == CustomerRow.id)
        .outerjoin(TrunkRow, NumberRow.trunk_id == TrunkRow.id)
        .outerjoin(ApplicationRow, NumberRow.application_id == ApplicationRow.id)
    )


def _out(row: Sequence[str | None]) -> NumberOut:
    e164, customer, trunk, application, media = row
    assert e164 is not None
    return NumberOut(
        e164=e164,
        status="available" if customer is None else "assigned",
        customer=customer,
        trunk=trunk,
        application=application,
        media_endpoint=media,
    )


def _path_e164(value: str) -> str:
    """The number in a path, normalised; 422 naming ``e164`` when it is not a number."""
    try:
        return to_e164(value)
    except ValueError as exc:
        raise FieldError("e164", str(exc)) from None


def _search(
    query: Select[tuple[str, str | None, str | None, str | None, str | None]],
    dialect: str,
    prefix: str | None,
    pattern: str | None,
) -> Select[tuple[str, str | None, str | None, str | None, str | None]]:
    """Add the prefix and pattern conditions (validated: digits, 'x', '*', optional '+')."""
    literal = ""
    if prefix is not None:
        if not prefix.lstrip("+").isdigit() or not PATTERN_RE.match(prefix):
            raise FieldError("prefix", "a prefix is digits, optionally after '+', e.g. 1415555")
        literal = "+" + prefix.lstrip("+")
        query = query.where(NumberRow.e164.startswith(literal))
    if pattern is not None:
        if not PATTERN_RE.match(pattern):
            raise FieldError(
                "pattern", "a pattern is digits, 'x' (one digit) and '*' (any digits), e.g. *555*"
            )
        like = pattern.lstrip("+").replace("x", "_").replace("*", "%")
        query = query.where(NumberRow.e164.like("+" + like))
        head = "+" + pattern.lstrip("+").split("x")[0].split("*")[0]
        if len(head) > len(literal):
            literal = head
    if dialect == "sqlite" and len(literal) > 1:
        # SQLite compares text bytewise, so a prefix is a range scan of the e164 unique index
        # (its LIKE only uses an index under a case-insensitive collation).
        query = query.where(NumberRow.e164 >= literal, NumberRow.e164 < literal + _AFTER_DIGITS)
    return query


async def _destination(
    session: AsyncSession, customer: CustomerRow, data: AssignIn
) -> tuple[int | None, int | None, str | None]:
    """(trunk_id, application_id, media_endpoint) for ``data``; 422 unless exactly one is given
    and it exists for ``customer``."""
    given = [k for k in ("trunk", "application", "media_endpoint") if getattr(data, k) is not None]
    if len(given) != 1:
        raise FieldError(
            given[1] if len(given) > 1 else "trunk",
            "give exactly one destination: trunk, application or media_endpoint",
        )
    if data.trunk is not None:
        trunk_id = await session.scalar(
            select(TrunkRow.id).where(TrunkRow.customer_id == customer.id, TrunkRow.name == data.trunk)
        )
        if trunk_id is None:
            raise FieldError("trunk", f"customer {customer.name!r} has no trunk {data.trunk!r}")
        return trunk_id, None, None
    if data.application is not None:
        app_id = await session.scalar(
            select(ApplicationRow.id).where(
                ApplicationRow.customer_id == customer.id, ApplicationRow.name == data.application
            )
        )
        if app_id is None:
            raise FieldError(
                "application", f"customer {customer.name!r} has no application {data.application!r}"
            )
        return None, app_id, None
    return None, None, data.media_endpoint


async def _read(session: AsyncSession, e164: str) -> NumberOut:
    row = (await session.execute(_select().where(NumberRow.e164 == e164))).one()
    return _out(row)


def _expand(data: InventoryIn) -> list[str]:
    """The numbers an inventory request names; 422 naming the field for a bad list or range."""
    if (data.numbers is None) == (data.range is None):
        raise FieldError("numbers", "give either numbers (a list) or range ({first, last})")
    if data.numbers is not None:
        if not data.numbers:
            raise FieldError("numbers", "the list is empty")
        if len(data.numbers) > INVENTORY_MAX:
            raise FieldError("numbers", f"at most {INVENTORY_MAX} numbers per request")
        seen: set[str] = set()
        for i, number in enumerate(data.numbers):
            if number in seen:
                raise FieldError(f"numbers.{i}", f"{number} is listed twice")
            seen.add(number)
        return list(data.numbers)
    assert data.range is not None
    first, last = data.range.first, data.range.last
    if len(first) != len(last):
        raise FieldError("range.last", "first and last must have the same number of digits")
    low, high = int(first[1:]), int(last[1:])
    if high < low:
        raise FieldError("range.last", "last is below first")
    if high - low + 1 > INVENTORY_MAX:
        raise FieldError("range.last", f"at most {INVENTORY_MAX} numbers per request")
    width = len(first) - 1
    numbers = [f"+{n:0{width}d}" for n in range(low, high + 1)]
    for number in numbers:
        if not is_canonical_e164(number):
            raise FieldError("range", f"{number} in the range is not a valid E.164 number")
    return numbers


class NumberController(Controller):
    """Inventory, search, purchase, reassignment and release of numbers."""

    path = "/v1/numbers"
    tags = ["numbers"]

    @post("/", guards=[admin_only], summary="Add numbers to the inventory (list or range)")
    async def add_inventory(
        self, ctx: NamedDependency[ApiContext], data: JSONBody[InventoryIn]
    ) -> InventoryAdded:
        """201 with the count; 409 (nothing added) when any number exists already."""
        numbers = _expand(data)
        async with ctx.store.provisioning() as session:
            existing: list[str] = []
            for start in range(0, len(numbers), IN_CHUNK):
                chunk = numbers[start : start + IN_CHUNK]
                existing.extend(
                    (await session.scalars(select(NumberRow.e164).where(NumberRow.e164.in_(chunk)))).all()
                )
            if existing:
                shown = ", ".join(sorted(existing)[:5])
                raise Conflict(detail=f"{len(existing)} number(s) exist already: {shown}")
            await session.execute(insert(NumberRow), [{"e164": n} for n in numbers])
        return InventoryAdded(added=len(numbers), first=min(numbers), last=max(numbers))

    @get("/", summary="List numbers")
    async def list_numbers(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        page: NamedDependency[PageParams],
        status: Annotated[Status | None, QueryParameter(description="available or assigned")] = None,
        customer: Annotated[str | None, QueryParameter(description="customer name")] = None,
        trunk: Annotated[str | None, QueryParameter(description="trunk name")] = None,
        application: Annotated[str | None, QueryParameter(description="application name")] = None,
        prefix: Annotated[str | None, QueryParameter(description="leading digits, e.g. 1415")] = None,
        pattern: Annotated[
            str | None, QueryParameter(description="digits, x = one digit, * = any digits")
        ] = None,
    ) -> NumberPage:
        """Numbers in ascending order. A customer key sees only its own (assigned) numbers;
        to find numbers to buy use /v1/numbers/available."""
        async with ctx.store.session() as session:
            customer_id = await customer_filter(session, principal, customer)
            if customer_id is False or (status == "available" and customer_id is not None):
                return NumberPage(**page_of([], page))
            query = _search(_select(), ctx.store.dialect, prefix, pattern)
            if customer_id is not None:
                query = query.where(NumberRow.customer_id == customer_id)
            if status == "available":
                query = query.where(NumberRow.customer_id.is_(None))
            elif status == "assigned":
                query = query.where(NumberRow.customer_id.is_not(None))
            if trunk is not None:
                query = query.where(TrunkRow.name == trunk)
            if application is not None:
                query = query.where(ApplicationRow.name == application)
            query = query.order_by(NumberRow.e164).limit(page.limit + 1).offset(page.offset)
            rows = (await session.execute(query)).all()
        return NumberPage(**page_of([_out(r) for r in rows], page))

    @get("/available", summary="Search available numbers")
    async def search_available(
        self,
        ctx: NamedDependency[ApiContext],
        page: NamedDependency[PageParams],
        prefix: Annotated[str | None, QueryParameter(description="leading digits, e.g. 1415")] = None,
        pattern: Annotated[
            str | None, QueryParameter(description="digits, x = one digit, * = any digits")
        ] = None,
    ) -> NumberPage:
        """Numbers in the inventory matching ``prefix`` and/or ``pattern``, ascending."""
        query = _search(_select(), ctx.store.dialect, prefix, pattern).where(NumberRow.customer_id.is_(None))
        query = query.order_by(NumberRow.e164).limit(page.limit + 1).offset(page.offset)
        async with ctx.store.session() as session:
            rows = (await session.execute(query)).all()
        return NumberPage(**page_of([_out(r) for r in rows], page))

    @get("/{e164:str}", summary="Get a number")
    async def get_number(
        self, ctx: NamedDependency[ApiContext], principal: NamedDependency[Principal], e164: FromPath[str]
    ) -> NumberOut:
        """The number; 404 when it does not exist or (customer key) is not the caller's."""
        number = _path_e164(e164)
        query = _select().where(NumberRow.e164 == number)
        if not principal.is_admin:
            query = query.where(NumberRow.customer_id == principal.customer_id)
        async with ctx.store.session() as session:
            row = (await session.execute(query)).first()
        if row is None:
            raise not_found("number")
        return _out(row)

    @post(
        "/{e164:str}/purchase",
        status_code=200,
        summary="Purchase a number: assign it to a customer and a destination",
    )
    async def purchase(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        e164: FromPath[str],
        data: JSONBody[AssignIn],
    ) -> NumberOut:
        """200 with the assigned number; 404 when it is not in the store, 409 when it is not
        available, 422 for a missing or unknown destination."""
        number = _path_e164(e164)
        async with ctx.store.provisioning() as session:
            row = await session.scalar(select(NumberRow).where(NumberRow.e164 == number))
            if row is None:
                raise not_found("number")
            if row.customer_id is not None:
                raise Conflict(detail=f"{number} is not available")
            customer = await owner_for_write(session, principal, data.customer)
            trunk_id, app_id, media = await _destination(session, customer, data)
            # Conditional on still being free: the version bump serialises writers already,
            # this keeps the rule in the statement that does the write.
            done = await session.execute(
                update(NumberRow)
                .where(NumberRow.id == row.id, NumberRow.customer_id.is_(None))
                .values(
                    customer_id=customer.id, trunk_id=trunk_id, application_id=app_id, media_endpoint=media
                )
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict(detail=f"{number} is not available")
            return await _read(session, number)

    @patch("/{e164:str}", summary="Reassign a number to another destination")
    async def reassign(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        e164: FromPath[str],
        data: JSONBody[AssignIn],
    ) -> NumberOut:
        """The number with its new destination; 404 when it is not the caller's (or, for an
        admin, not assigned), 422 for a missing or unknown destination. An admin may move it
        to another customer by naming ``customer``."""
        number = _path_e164(e164)
        async with ctx.store.provisioning() as session:
            row = await session.scalar(select(NumberRow).where(NumberRow.e164 == number))
            if (
                row is None
                or row.customer_id is None
                or (not principal.is_admin and row.customer_id != principal.customer_id)
            ):
                raise not_found("number")
            if principal.is_admin and data.customer is None:
                customer = await session.get(CustomerRow, row.customer_id)
                assert customer is not None  # the foreign key guarantees it
            else:
                customer = await owner_for_write(session, principal, data.customer)
            trunk_id, app_id, media = await _destination(session, customer, data)
            row.customer_id, row.trunk_id, row.application_id, row.media_endpoint = (
                customer.id,
                trunk_id,
                app_id,
                media,
            )
            await session.flush()
            return await _read(session, number)

    @post("/{e164:str}/release", status_code=200, summary="Release a number back to the inventory")
    async def release(
        self, ctx: NamedDependency[ApiContext], principal: NamedDependency[Principal], e164: FromPath[str]
    ) -> NumberOut:
        """200 with the now available number; 404 when it is not the caller's, 409 when an
        admin releases a number that is already available."""
        number = _path_e164(e164)
        async with ctx.store.provisioning() as session:
            row = await session.scalar(select(NumberRow).where(NumberRow.e164 == number))
            visible = row is not None and (
                principal.is_admin
                or (row.customer_id is not None and row.customer_id == principal.customer_id)
            )
            if row is None or not visible:
                raise not_found("number")
            if row.customer_id is None:
                raise Conflict(detail=f"{number} is already in the inventory")
            row.customer_id = row.trunk_id = row.application_id = None
            row.media_endpoint = None
            await session.flush()
            return await _read(session, number)

    @delete("/{e164:str}", guards=[admin_only], summary="Remove an unassigned number from the inventory")
    async def remove(self, ctx: NamedDependency[ApiContext], e164: FromPath[str]) -> None:
        """204; 404 for an unknown number, 409 while it is assigned (release it first)."""
        number = _path_e164(e164)
        async with ctx.store.provisioning() as session:
            row = await session.scalar(select(NumberRow).where(NumberRow.e164 == number))
            if row is None:
                raise not_found("number")
            if row.customer_id is not None:
                raise Conflict(detail=f"{number} is assigned: release it first")
            await session.delete(row)


__all__ = [
    "INVENTORY_MAX",
    "AssignIn",
    "InventoryAdded",
    "InventoryIn",
    "NumberController",
    "NumberOut",
    "NumberPage",
    "NumberRange",
]
