"""``/v1/trunks``: customers' SIP trunks (IP ACL and/or digest credentials, delivery targets).

Credentials are write-only: a response lists each credential's username, never its password.
A customer key manages its own trunks, except ``allowed_cidrs`` (403): the source address of a
call decides which customer pays for it, so only the operator may bind addresses to a trunk.
Names are immutable (CDRs and numbers refer to them).
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.params import FromPath, JSONBody, QueryParameter
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from sbc.provision import Cidr, CredentialSpec, MaxCalls, MaxCps, Name, TargetSpec
from sbc.store.schema import CustomerRow, NumberRow, TrunkCredentialRow, TrunkRow, TrunkTargetRow

from .auth import Principal
from .context import ApiContext, PageMeta, PageParams, page_of
from .errors import Conflict, FieldError
from .fields import Body
from .scope import check_id, customer_filter, get_visible, owner_for_write


class TrunkIn(Body):
    """A new trunk. ``customer`` is required with an admin key, implied by a customer key."""

    name: Name
    customer: Name | None = None
    allowed_cidrs: list[Cidr] = []
    credentials: list[CredentialSpec] = []
    targets: list[TargetSpec] = []
    max_calls: MaxCalls | None = None
    max_cps: MaxCps | None = None


class TrunkPatch(Body):
    """Changed fields; a field left out keeps its value; lists replace the whole list."""

    allowed_cidrs: list[Cidr] = []
    credentials: list[CredentialSpec] = []
    targets: list[TargetSpec] = []
    max_calls: MaxCalls | None = None
    max_cps: MaxCps | None = None


class CredentialOut(BaseModel):
    """A digest credential without its password."""

    username: str


class TargetOut(BaseModel):
    """Where inbound calls are delivered."""

    uri: str
    priority: int
    weight: int


class TrunkOut(BaseModel):
    """A trunk as the API returns it (passwords never included)."""

    id: int
    customer: str
    name: str
    allowed_cidrs: list[str]
    credentials: list[CredentialOut]
    targets: list[TargetOut]
    max_calls: int | None
    max_cps: float | None


class TrunkPage(PageMeta):
    """A page of trunks, by customer then name."""

    items: list[TrunkOut]


def trunk_out(row: TrunkRow, customer: str) -> TrunkOut:
    """The API view of a trunk row (credentials and targets loaded)."""
    return TrunkOut(
        id=row.id,
        customer=customer,
        name=row.name,
        allowed_cidrs=list(row.allowed_cidrs),
        credentials=[CredentialOut(username=c.username) for c in row.credentials],
        targets=[TargetOut(uri=t.uri, priority=t.priority, weight=t.weight) for t in row.targets],
        max_calls=row.max_calls,
        max_cps=row.max_cps,
    )


def _load() -> Select[tuple[TrunkRow]]:
    return select(TrunkRow).options(
        selectinload(TrunkRow.credentials), selectinload(TrunkRow.targets), selectinload(TrunkRow.customer)
    )


def _check_acl_allowed(principal: Principal, cidrs_given: bool) -> None:
    if cidrs_given and not principal.is_admin:
        raise PermissionDeniedException(detail="allowed_cidrs can only be set with an admin key")


def _check_lists(cidrs: list[str], credentials: list[CredentialSpec], targets: list[TargetSpec]) -> None:
    """422 naming the first repeated CIDR, username or target URI."""
    for i, cidr in enumerate(cidrs):
        if cidr in cidrs[:i]:
            raise FieldError(f"allowed_cidrs.{i}", f"duplicate CIDR {cidr}")
    names = [c.username for c in credentials]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise FieldError(f"credentials.{i}.username", f"duplicate username {name!r}")
    uris = [t.uri for t in targets]
    for i, uri in enumerate(uris):
        if uri in uris[:i]:
            raise FieldError(f"targets.{i}.uri", f"duplicate target {uri!r}")


async def _check_usernames_free(
    session: AsyncSession, credentials: list[CredentialSpec], trunk_id: int | None
) -> None:
    """409 when a username belongs to another trunk: digest auth finds the trunk by username."""
    if not credentials:
        return
    query = select(TrunkCredentialRow.username).where(
        TrunkCredentialRow.username.in_([c.username for c in credentials])
    )
    if trunk_id is not None:
        query = query.where(TrunkCredentialRow.trunk_id != trunk_id)
    taken = await session.scalar(query)
    if taken is not None:
        raise Conflict(detail=f"username {taken!r} is already in use")


def _targets(targets: list[TargetSpec]) -> list[TrunkTargetRow]:
    return [
        TrunkTargetRow(position=i, uri=t.uri, priority=t.priority, weight=t.weight)
        for i, t in enumerate(targets)
    ]


def _credentials(credentials: list[CredentialSpec]) -> list[TrunkCredentialRow]:
    return [
        TrunkCredentialRow(position=i, username=c.username, password=c.password)
        for i, c in enumerate(credentials)
    ]


class TrunkController(Controller):
    """CRUD of trunks, scoped to the caller's customer."""

    path = "/v1/trunks"
    tags = ["trunks"]

    @post("/", summary="Create a trunk")
    async def create(
        self, ctx: NamedDependency[ApiContext], principal: NamedDependency[Principal], data: JSONBody[TrunkIn]
    ) -> TrunkOut:
        """201 with the trunk; 409 for a name the customer already uses or a taken username."""
        _check_acl_allowed(principal, bool(data.allowed_cidrs))
        _check_lists(data.allowed_cidrs, data.credentials, data.targets)
        async with ctx.store.provisioning() as session:
            customer = await owner_for_write(session, principal, data.customer)
            exists = await session.scalar(
                select(TrunkRow.id).where(TrunkRow.customer_id == customer.id, TrunkRow.name == data.name)
            )
            if exists:
                raise Conflict(detail=f"customer {customer.name!r} already has a trunk {data.name!r}")
            await _check_usernames_free(session, data.credentials, None)
            row = TrunkRow(
                customer_id=customer.id,
                name=data.name,
                allowed_cidrs=list(data.allowed_cidrs),
                max_calls=data.max_calls,
                max_cps=data.max_cps,
            )
            row.targets = _targets(data.targets)
            row.credentials = _credentials(data.credentials)
            session.add(row)
            await session.flush()
        return trunk_out(row, customer.name)

    @get("/", summary="List trunks")
    async def list_trunks(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        page: NamedDependency[PageParams],
        customer: Annotated[str | None, QueryParameter(description="customer name")] = None,
        name: Annotated[str | None, QueryParameter(description="exact trunk name")] = None,
    ) -> TrunkPage:
        """The caller's trunks (an admin's: all, or one customer's)."""
        async with ctx.store.session() as session:
            customer_id = await customer_filter(session, principal, customer)
            if customer_id is False:
                return TrunkPage(**page_of([], page))
            query = _load().join(TrunkRow.customer)
            if customer_id is not None:
                query = query.where(TrunkRow.customer_id == customer_id)
            if name is not None:
                query = query.where(TrunkRow.name == name)
            query = query.order_by(CustomerRow.name, TrunkRow.name).limit(page.limit + 1).offset(page.offset)
            rows = (await session.scalars(query)).all()
        return TrunkPage(**page_of([trunk_out(r, r.customer.name) for r in rows], page))

    @get("/{trunk_id:int}", summary="Get a trunk")
    async def get_trunk(
        self, ctx: NamedDependency[ApiContext], principal: NamedDependency[Principal], trunk_id: FromPath[int]
    ) -> TrunkOut:
        """The trunk; 404 for an unknown id or another customer's trunk."""
        check_id(trunk_id, "trunk")
        async with ctx.store.session() as session:
            row = await get_visible(
                session, _load().where(TrunkRow.id == trunk_id), principal, TrunkRow.customer_id, "trunk"
            )
        return trunk_out(row, row.customer.name)

    @patch("/{trunk_id:int}", summary="Change a trunk")
    async def update(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        trunk_id: FromPath[int],
        data: JSONBody[TrunkPatch],
    ) -> TrunkOut:
        """The changed trunk; 404 for an unknown or foreign id, 409 for a taken username."""
        check_id(trunk_id, "trunk")
        fields = data.model_fields_set
        _check_acl_allowed(principal, "allowed_cidrs" in fields)
        _check_lists(data.allowed_cidrs, data.credentials, data.targets)
        async with ctx.store.provisioning() as session:
            row = await get_visible(
                session, _load().where(TrunkRow.id == trunk_id), principal, TrunkRow.customer_id, "trunk"
            )
            for field in fields & {"max_calls", "max_cps"}:
                setattr(row, field, getattr(data, field))
            if "allowed_cidrs" in fields:
                row.allowed_cidrs = list(data.allowed_cidrs)
            if "targets" in fields:
                row.targets = _targets(data.targets)
            if "credentials" in fields:
                await _check_usernames_free(session, data.credentials, row.id)
                # Old rows go first: a username kept across the change must not collide with itself.
                row.credentials.clear()
                await session.flush()
                row.credentials.extend(_credentials(data.credentials))
            await session.flush()
        return trunk_out(row, row.customer.name)

    @delete("/{trunk_id:int}", summary="Delete a trunk")
    async def remove(
        self, ctx: NamedDependency[ApiContext], principal: NamedDependency[Principal], trunk_id: FromPath[int]
    ) -> None:
        """204; 404 for an unknown or foreign id, 409 while numbers are assigned to it."""
        check_id(trunk_id, "trunk")
        async with ctx.store.provisioning() as session:
            row = await get_visible(
                session,
                select(TrunkRow).where(TrunkRow.id == trunk_id),
                principal,
                TrunkRow.customer_id,
                "trunk",
            )
            numbers = await session.scalar(
                select(func.count()).select_from(NumberRow).where(NumberRow.trunk_id == trunk_id)
            )
            if numbers:
                raise Conflict(
                    detail=f"trunk {row.name!r} still has {numbers} number(s): reassign them first"
                )
            await session.delete(row)


__all__ = ["TrunkController", "TrunkIn", "TrunkOut", "TrunkPage", "TrunkPatch", "trunk_out"]
