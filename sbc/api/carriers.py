"""``/v1/carriers``: PSTN carriers with their gateways and each gateway's live health.

Operator resource: admin keys only (403 for customer keys). Gateways are part of the carrier:
given whole on create and replaced whole by a PATCH that names them. Each gateway in a response
carries ``health`` ({up, latency_ms, last_probe}) from the OPTIONS prober, or null when the
carrier is not probed (routing then treats it as up). Names are immutable (CDRs and routes use
them).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from routing.model import Gateway
from sbc.provision import (
    CarrierSpec,
    Cidr,
    FailoverCode,
    GatewaySpec,
    MaxCalls,
    MaxCps,
    ProbeInterval,
    TechPrefix,
)
from sbc.store.schema import CarrierRow, GatewayRow, RouteCarrierRow

from .auth import admin_only
from .context import ApiContext, PageMeta, PageParams, page_of
from .errors import Conflict, FieldError, not_found
from .fields import Body
from .gateway_health import HealthSource
from .scope import check_id


class CarrierIn(CarrierSpec):
    """A new carrier: the same fields, defaults and checks as ``carriers[]`` in the provision file."""


class CarrierPatch(Body):
    """Changed fields; a field left out keeps its value. ``gateways`` replaces all gateways."""

    gateways: list[GatewaySpec] = []
    inbound_cidrs: list[Cidr] = []
    tech_prefix: TechPrefix = ""
    strip_plus: bool = False
    failover_codes: list[FailoverCode] = []
    probe_interval_s: ProbeInterval = 0.0
    max_calls: MaxCalls | None = None
    max_cps: MaxCps | None = None


class GatewayHealthOut(BaseModel):
    """Live probe state of a gateway."""

    up: bool
    latency_ms: float | None
    last_probe: datetime | None


class GatewayOut(BaseModel):
    """A gateway and its health (null: not probed, counted as up)."""

    host: str
    port: int
    transport: str
    priority: int
    weight: int
    health: GatewayHealthOut | None


class CarrierOut(BaseModel):
    """A carrier as the API returns it."""

    id: int
    name: str
    gateways: list[GatewayOut]
    inbound_cidrs: list[str]
    tech_prefix: str
    strip_plus: bool
    failover_codes: list[int]
    probe_interval_s: float
    max_calls: int | None
    max_cps: float | None


class CarrierPage(PageMeta):
    """A page of carriers, by name."""

    items: list[CarrierOut]


def _gateway_out(carrier: str, row: GatewayRow, health: HealthSource | None) -> GatewayOut:
    state = None
    if health is not None:
        gateway = Gateway(
            host=row.host, port=row.port, transport=row.transport, priority=row.priority, weight=row.weight
        )
        found = health.gateway_state(carrier, gateway)
        if found is not None:
            state = GatewayHealthOut(up=found.up, latency_ms=found.latency_ms, last_probe=found.last_probe)
    return GatewayOut(
        host=row.host,
        port=row.port,
        transport=row.transport,
        priority=row.priority,
        weight=row.weight,
        health=state,
    )


def carrier_out(row: CarrierRow, health: HealthSource | None) -> CarrierOut:
    """The API view of a carrier row (its gateways must be loaded)."""
    return CarrierOut(
        id=row.id,
        name=row.name,
        gateways=[_gateway_out(row.name, g, health) for g in row.gateways],
        inbound_cidrs=list(row.inbound_cidrs),
        tech_prefix=row.tech_prefix,
        strip_plus=row.strip_plus,
        failover_codes=list(row.failover_codes),
        probe_interval_s=row.probe_interval_s,
        max_calls=row.max_calls,
        max_cps=row.max_cps,
    )


def _gateway_rows(gateways: list[GatewaySpec]) -> list[GatewayRow]:
    """Rows for ``gateways``; 422 naming the first repeated (host, port, transport)."""
    seen: set[tuple[str, int, str]] = set()
    for i, g in enumerate(gateways):
        key = (g.host.lower(), g.port, g.transport)
        if key in seen:
            raise FieldError(f"gateways.{i}", f"duplicate gateway {g.host}:{g.port} ({g.transport})")
        seen.add(key)
    return [
        GatewayRow(
            position=i, host=g.host, port=g.port, transport=g.transport, priority=g.priority, weight=g.weight
        )
        for i, g in enumerate(gateways)
    ]


def _check_lists(cidrs: list[str], codes: list[int]) -> None:
    """422 for a CIDR or failover code given twice."""
    for i, cidr in enumerate(cidrs):
        if cidr in cidrs[:i]:
            raise FieldError(f"inbound_cidrs.{i}", f"duplicate CIDR {cidr}")
    for i, code in enumerate(codes):
        if code in codes[:i]:
            raise FieldError(f"failover_codes.{i}", f"duplicate failover code {code}")


async def _check_inbound_unique(session: AsyncSession, cidrs: list[str], carrier_id: int | None) -> None:
    """409 when another carrier already has one of ``cidrs`` as an inbound CIDR: a source address
    must identify one carrier. Overlapping but different networks are allowed, as in the
    provision file (source classification picks the longest prefix)."""
    if not cidrs:
        return
    wanted = set(cidrs)
    others = await session.execute(
        select(CarrierRow.name, CarrierRow.inbound_cidrs).where(CarrierRow.id != (carrier_id or 0))
    )
    for name, theirs in others:
        for cidr in theirs:
            if cidr in wanted:
                raise Conflict(detail=f"{cidr} is already an inbound CIDR of carrier {name!r}")


def _load(carrier_id: int) -> Select[tuple[CarrierRow]]:
    return select(CarrierRow).options(selectinload(CarrierRow.gateways)).where(CarrierRow.id == carrier_id)


class CarrierController(Controller):
    """CRUD of carriers (admin only)."""

    path = "/v1/carriers"
    tags = ["carriers"]
    guards = [admin_only]

    @post("/", summary="Create a carrier")
    async def create(self, ctx: NamedDependency[ApiContext], data: JSONBody[CarrierIn]) -> CarrierOut:
        """201 with the carrier; 409 for a taken name or an inbound CIDR another carrier has."""
        _check_lists(data.inbound_cidrs, data.failover_codes)
        gateways = _gateway_rows(data.gateways)
        async with ctx.store.provisioning() as session:
            if await session.scalar(select(CarrierRow.id).where(CarrierRow.name == data.name)):
                raise Conflict(detail=f"carrier {data.name!r} already exists")
            await _check_inbound_unique(session, data.inbound_cidrs, None)
            row = CarrierRow(**data.model_dump(exclude={"gateways"}))
            row.gateways = gateways
            session.add(row)
            await session.flush()
        return carrier_out(row, ctx.health)

    @get("/", summary="List carriers")
    async def list_carriers(
        self,
        ctx: NamedDependency[ApiContext],
        page: NamedDependency[PageParams],
        name: Annotated[str | None, QueryParameter(description="exact name")] = None,
    ) -> CarrierPage:
        """Carriers by name, with gateways and their health."""
        query = select(CarrierRow).options(selectinload(CarrierRow.gateways))
        if name is not None:
            query = query.where(CarrierRow.name == name)
        query = query.order_by(CarrierRow.name).limit(page.limit + 1).offset(page.offset)
        async with ctx.store.session() as session:
            rows = (await session.scalars(query)).all()
        return CarrierPage(**page_of([carrier_out(r, ctx.health) for r in rows], page))

    @get("/{carrier_id:int}", summary="Get a carrier")
    async def get_carrier(self, ctx: NamedDependency[ApiContext], carrier_id: FromPath[int]) -> CarrierOut:
        """The carrier with its gateways and their health; 404 for an unknown id."""
        check_id(carrier_id, "carrier")
        async with ctx.store.session() as session:
            row = (await session.scalars(_load(carrier_id))).first()
        if row is None:
            raise not_found("carrier")
        return carrier_out(row, ctx.health)

    @patch("/{carrier_id:int}", summary="Change a carrier")
    async def update(
        self, ctx: NamedDependency[ApiContext], carrier_id: FromPath[int], data: JSONBody[CarrierPatch]
    ) -> CarrierOut:
        """The changed carrier; 404 for an unknown id, 409 for a clashing inbound CIDR."""
        check_id(carrier_id, "carrier")
        fields = data.model_fields_set
        _check_lists(
            data.inbound_cidrs if "inbound_cidrs" in fields else [],
            data.failover_codes if "failover_codes" in fields else [],
        )
        gateways = _gateway_rows(data.gateways) if "gateways" in fields else None
        async with ctx.store.provisioning() as session:
            row = (await session.scalars(_load(carrier_id))).first()
            if row is None:
                raise not_found("carrier")
            if "inbound_cidrs" in fields:
                await _check_inbound_unique(session, data.inbound_cidrs, carrier_id)
            for field in fields - {"gateways"}:
                setattr(row, field, getattr(data, field))
            if gateways is not None:
                row.gateways = gateways
            await session.flush()
        return carrier_out(row, ctx.health)

    @delete("/{carrier_id:int}", summary="Delete a carrier")
    async def remove(self, ctx: NamedDependency[ApiContext], carrier_id: FromPath[int]) -> None:
        """204; 404 for an unknown id, 409 while routes still use the carrier."""
        check_id(carrier_id, "carrier")
        async with ctx.store.provisioning() as session:
            row = await session.get(CarrierRow, carrier_id)
            if row is None:
                raise not_found("carrier")
            used = await session.scalar(
                select(func.count())
                .select_from(RouteCarrierRow)
                .where(RouteCarrierRow.carrier_id == carrier_id)
            )
            if used:
                raise Conflict(detail=f"carrier {row.name!r} is used by {used} route(s): change them first")
            await session.delete(row)


__all__ = ["CarrierController", "CarrierIn", "CarrierOut", "CarrierPage", "CarrierPatch", "carrier_out"]
