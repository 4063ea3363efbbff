"""``/v1/routes``: outbound least-cost-routing entries (admin only).

A route is a number prefix (digits, no '+'; "" matches every number), an optional customer
scope and UTC time window, and the carriers to try with their priority and weight. Unique per
(prefix, customer). The carriers must exist and have gateways (422 naming the entry otherwise).
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from pydantic import BaseModel, Field
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from sbc.provision import Name, Prefix, RouteCarrierSpec, TimeWindow
from sbc.store.schema import CarrierRow, CustomerRow, GatewayRow, RouteCarrierRow, RouteRow

from .auth import admin_only
from .context import ApiContext, PageMeta, PageParams, page_of
from .errors import Conflict, FieldError, not_found
from .fields import Body
from .scope import check_id


class RouteIn(Body):
    """A new route."""

    prefix: Prefix
    customer: Name | None = None
    time_window: TimeWindow | None = None
    carriers: list[RouteCarrierSpec] = Field(min_length=1)


class RoutePatch(Body):
    """Changed fields; ``carriers`` replaces the list; ``time_window`` null means always."""

    time_window: TimeWindow | None = None
    carriers: list[RouteCarrierSpec] = Field(default=[], min_length=1)


class RouteCarrierOut(BaseModel):
    """A carrier's place in a route."""

    name: str
    priority: int
    weight: int


class RouteOut(BaseModel):
    """A route as the API returns it."""

    id: int
    prefix: str
    customer: str | None
    time_window: str | None
    carriers: list[RouteCarrierOut]


class RoutePage(PageMeta):
    """A page of routes, by prefix."""

    items: list[RouteOut]


def route_out(row: RouteRow) -> RouteOut:
    """The API view of a route row (customer and carriers loaded)."""
    return RouteOut(
        id=row.id,
        prefix=row.prefix,
        customer=row.customer.name if row.customer is not None else None,
        time_window=row.time_window,
        carriers=[
            RouteCarrierOut(name=rc.carrier.name, priority=rc.priority, weight=rc.weight)
            for rc in row.carriers
        ],
    )


def _load() -> Select[tuple[RouteRow]]:
    return select(RouteRow).options(
        selectinload(RouteRow.customer), selectinload(RouteRow.carriers).selectinload(RouteCarrierRow.carrier)
    )


async def _carrier_rows(session: AsyncSession, specs: list[RouteCarrierSpec]) -> list[RouteCarrierRow]:
    """Rows for a route's carriers; 422 naming the entry for an unknown, repeated or gateway-less carrier."""
    names = [s.name for s in specs]
    found = {
        c.name: c for c in (await session.scalars(select(CarrierRow).where(CarrierRow.name.in_(names)))).all()
    }
    with_gateways = set(
        (
            await session.scalars(
                select(GatewayRow.carrier_id).where(GatewayRow.carrier_id.in_([c.id for c in found.values()]))
            )
        ).all()
    )
    rows = []
    for i, spec in enumerate(specs):
        key = f"carriers.{i}.name"
        if spec.name in names[:i]:
            raise FieldError(key, f"carrier {spec.name!r} is already in this route")
        carrier = found.get(spec.name)
        if carrier is None:
            raise FieldError(key, f"unknown carrier {spec.name!r}")
        if carrier.id not in with_gateways:
            raise FieldError(key, f"carrier {spec.name!r} has no gateways to route to")
        rows.append(RouteCarrierRow(carrier=carrier, position=i, priority=spec.priority, weight=spec.weight))
    return rows


class RouteController(Controller):
    """CRUD of routes."""

    path = "/v1/routes"
    tags = ["routes"]
    guards = [admin_only]

    @post("/", summary="Create a route")
    async def create(self, ctx: NamedDependency[ApiContext], data: JSONBody[RouteIn]) -> RouteOut:
        """201 with the route; 409 when (prefix, customer) exists; 422 for unknown carriers."""
        async with ctx.store.provisioning() as session:
            customer = None
            if data.customer is not None:
                customer = await session.scalar(select(CustomerRow).where(CustomerRow.name == data.customer))
                if customer is None:
                    raise FieldError("customer", f"unknown customer {data.customer!r}")
            clash = select(RouteRow.id).where(RouteRow.prefix == data.prefix)
            clash = clash.where(
                RouteRow.customer_id == customer.id
                if customer is not None
                else RouteRow.customer_id.is_(None)
            )
            if await session.scalar(clash):
                scope = f"customer {data.customer!r}" if data.customer else "all customers"
                raise Conflict(detail=f"a route for prefix {data.prefix!r} and {scope} already exists")
            row = RouteRow(prefix=data.prefix, customer=customer, time_window=data.time_window)
            row.carriers = await _carrier_rows(session, data.carriers)
            session.add(row)
            await session.flush()
            row = (await session.scalars(_load().where(RouteRow.id == row.id))).one()
        return route_out(row)

    @get("/", summary="List routes")
    async def list_routes(
        self,
        ctx: NamedDependency[ApiContext],
        page: NamedDependency[PageParams],
        prefix: Annotated[str | None, QueryParameter(description="exact prefix")] = None,
        customer: Annotated[
            str | None, QueryParameter(description="customer scope; '-' for global routes")
        ] = None,
        carrier: Annotated[str | None, QueryParameter(description="routes using this carrier")] = None,
    ) -> RoutePage:
        """Routes by prefix then id."""
        query = _load()
        if prefix is not None:
            query = query.where(RouteRow.prefix == prefix)
        if customer == "-":
            query = query.where(RouteRow.customer_id.is_(None))
        elif customer is not None:
            query = query.join(RouteRow.customer).where(CustomerRow.name == customer)
        if carrier is not None:
            query = query.where(
                RouteRow.id.in_(
                    select(RouteCarrierRow.route_id)
                    .join(RouteCarrierRow.carrier)
                    .where(CarrierRow.name == carrier)
                )
            )
        query = query.order_by(RouteRow.prefix, RouteRow.id).limit(page.limit + 1).offset(page.offset)
        async with ctx.store.session() as session:
            rows = (await session.scalars(query)).all()
        return RoutePage(**page_of([route_out(r) for r in rows], page))

    @get("/{route_id:int}", summary="Get a route")
    async def get_route(self, ctx: NamedDependency[ApiContext], route_id: FromPath[int]) -> RouteOut:
        """The route; 404 for an unknown id."""
        check_id(route_id, "route")
        async with ctx.store.session() as session:
            row = (await session.scalars(_load().where(RouteRow.id == route_id))).first()
        if row is None:
            raise not_found("route")
        return route_out(row)

    @patch("/{route_id:int}", summary="Change a route")
    async def update(
        self, ctx: NamedDependency[ApiContext], route_id: FromPath[int], data: JSONBody[RoutePatch]
    ) -> RouteOut:
        """The changed route; 404 for an unknown id, 422 for unknown carriers."""
        check_id(route_id, "route")
        fields = data.model_fields_set
        async with ctx.store.provisioning() as session:
            row = (await session.scalars(_load().where(RouteRow.id == route_id))).first()
            if row is None:
                raise not_found("route")
            if "time_window" in fields:
                row.time_window = data.time_window
            if "carriers" in fields:
                new = await _carrier_rows(session, data.carriers)
                # Old rows go first: (route, carrier) is unique and a carrier may stay in the route.
                row.carriers.clear()
                await session.flush()
                row.carriers.extend(new)
            await session.flush()
            row = (
                await session.scalars(
                    _load().where(RouteRow.id == route_id).execution_options(populate_existing=True)
                )
            ).one()
        return route_out(row)

    @delete("/{route_id:int}", summary="Delete a route")
    async def remove(self, ctx: NamedDependency[ApiContext], route_id: FromPath[int]) -> None:
        """204; 404 for an unknown id."""
        check_id(route_id, "route")
        async with ctx.store.provisioning() as session:
            row = await session.get(RouteRow, route_id)
            if row is None:
                raise not_found("route")
            await session.delete(row)


__all__ = ["RouteController", "RouteIn", "RouteOut", "RoutePage", "RoutePatch", "route_out"]
