"""``/v1/calls``: live calls -- list, originate, hang up -- through :class:`CallControl`.

The API never touches SIP: it asks the call-control object (the B2BUA in ``sbc run``, a fake in
tests) and maps :class:`OriginateError` to its HTTP status. Without call control (an API
served apart from the SIP stack) these endpoints answer 503.

In ``sbc run --workers N`` the calls live in N processes and the list is gathered from all of
them (:mod:`sbc.workers.api`). A worker that does not answer within the short RPC timeout (it is
restarting, or stalled) does not hold up the request: the list is answered with the other
workers' calls and ``missing_workers`` names the absent ones (empty when complete), so a client
can tell "no such call" from "not every worker was asked". Looking up or hanging up one call that
was not found while a worker was missing answers 503 (try again), not 404.

Origination: the SBC calls ``callee`` (through least-cost routing, or the gateways of
``carrier``), and when it answers calls ``bridge_to`` and joins the two. ``bridge_to`` is one
of the customer's trunks as ``trunk:CUSTOMER/NAME``, or (admin keys only) a ``sip:`` URI: a
customer key must not make the SBC send INVITEs to arbitrary hosts. Picking the carrier is an
operator decision too (admin only).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, PermissionDeniedException
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from pydantic import BaseModel, Field
from sqlalchemy import select

from sbc.b2bua.control import CallControl, CallControlUnavailable, LiveCall, OriginateError
from sbc.provision import Name, check_sip_uri
from sbc.store.schema import CarrierRow, CustomerRow, TrunkRow

from .auth import Principal
from .context import ApiContext, PageMeta, PageParams, page_of
from .errors import FieldError, not_found
from .fields import Body, E164In

#: ``bridge_to`` naming a trunk: ``trunk:CUSTOMER/NAME`` (the form CallControl.originate takes).
TRUNK_SCHEME = "trunk:"
#: Longest call id accepted in a path (the B2BUA's ids are far shorter; bounds the lookup).
CALL_ID_MAX_LEN = 256


class LiveLegOut(BaseModel):
    """One SIP leg of a live call."""

    side: str
    call_id: str
    peer: str
    remote_uri: str
    state: str


class LiveCallOut(BaseModel):
    """A call in progress."""

    id: str
    direction: str
    state: str
    caller: str
    callee: str
    customer: str | None
    carrier: str | None
    trunk: str | None
    gateway: str | None
    setup_at: datetime
    answered_at: datetime | None
    legs: list[LiveLegOut]
    attempts: list[dict[str, Any]]
    media: dict[str, Any]


class LiveCallPage(PageMeta):
    """A page of live calls, oldest first."""

    items: list[LiveCallOut]
    missing_workers: list[int] = Field(
        default_factory=list,
        description="workers (sbc run --workers N) that did not answer in time: their calls are "
        "not in this list; empty when the list is complete",
    )


class OriginateIn(Body):
    """An outbound call to place and bridge."""

    caller: E164In
    callee: E164In
    bridge_to: str = Field(min_length=1, max_length=512, description="trunk:CUSTOMER/NAME or a sip: URI")
    carrier: Name | None = None
    customer: Name | None = None


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def call_out(call: LiveCall) -> LiveCallOut:
    """The API view of a live call."""
    return LiveCallOut(
        id=call.id,
        direction=call.direction,
        state=call.state,
        caller=call.caller,
        callee=call.callee,
        customer=call.customer,
        carrier=call.carrier,
        trunk=call.trunk,
        gateway=call.gateway,
        setup_at=datetime.fromtimestamp(call.setup_at, UTC),
        answered_at=_ts(call.answered_at),
        legs=[
            LiveLegOut(
                side=leg.side, call_id=leg.call_id, peer=leg.peer, remote_uri=leg.remote_uri, state=leg.state
            )
            for leg in call.legs
        ],
        attempts=[dict(a) for a in call.attempts],
        media=dict(call.media),
    )


def _control(ctx: ApiContext) -> CallControl:
    if ctx.calls is None:
        raise HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail="call control is not available")
    return ctx.calls


def _missing(calls: list[LiveCall]) -> list[int]:
    """The workers a ``live_calls`` answer lacks (see :class:`sbc.b2bua.control.LiveCallList`)."""
    return list(getattr(calls, "missing", ()))


def _unavailable(message: str) -> HTTPException:
    return HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=message)


class CallController(Controller):
    """Live calls."""

    path = "/v1/calls"
    tags = ["calls"]

    @get("/", summary="List live calls")
    async def list_calls(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        page: NamedDependency[PageParams],
        customer: Annotated[str | None, QueryParameter(description="customer name (admin)")] = None,
        direction: Annotated[
            str | None, QueryParameter(description="inbound, outbound or originated")
        ] = None,
        call_state: Annotated[
            str | None,
            QueryParameter(name="state", description="routing, early, answered, confirmed or ending"),
        ] = None,
    ) -> LiveCallPage:
        """Calls in progress, oldest first; a customer key sees only its own."""
        control = _control(ctx)
        if not principal.is_admin:
            if customer is not None and customer != principal.customer:
                return LiveCallPage(**page_of([], page))
            customer = principal.customer
        calls = await control.live_calls(customer)
        missing = _missing(calls)
        if direction is not None:
            calls = [c for c in calls if c.direction == direction]
        if call_state is not None:
            calls = [c for c in calls if c.state == call_state]
        window = calls[page.offset : page.offset + page.limit + 1]
        return LiveCallPage(**page_of([call_out(c) for c in window], page), missing_workers=missing)

    @get("/{call_id:str}", summary="Get a live call")
    async def get_call(
        self, ctx: NamedDependency[ApiContext], principal: NamedDependency[Principal], call_id: FromPath[str]
    ) -> LiveCallOut:
        """The call; 404 when it is not live or (customer key) not the caller's; 503 when it was
        not found but a worker did not answer."""
        control = _control(ctx)
        calls = await control.live_calls(None if principal.is_admin else principal.customer)
        for call in calls:
            if call.id == call_id:
                return call_out(call)
        if missing := _missing(calls):
            workers = ", ".join(str(i) for i in missing)
            raise _unavailable(
                f"call not found on the workers that answered; worker(s) {workers} did not answer"
            )
        raise not_found("call")

    @post("/", summary="Originate a call")
    async def originate(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        data: JSONBody[OriginateIn],
    ) -> LiveCallOut:
        """201 with the new call (state ``routing``); 422 for an unusable number, trunk or URI,
        403 when a customer key names a carrier or a sip: URI, 503 when no route or gateway
        can take the call (or call control is absent)."""
        control = _control(ctx)
        customer = data.customer
        if not principal.is_admin:
            if data.carrier is not None:
                raise PermissionDeniedException(detail="only an admin key may pick the carrier")
            if customer is not None and customer != principal.customer:
                raise FieldError("customer", f"unknown customer {customer!r}")
            customer = principal.customer
        async with ctx.store.session() as session:
            customer_query = select(CustomerRow.id).where(CustomerRow.name == customer)
            if customer is not None and principal.is_admin and await session.scalar(customer_query) is None:
                raise FieldError("customer", f"unknown customer {customer!r}")
            carrier_query = select(CarrierRow.id).where(CarrierRow.name == data.carrier)
            if data.carrier is not None and await session.scalar(carrier_query) is None:
                raise FieldError("carrier", f"unknown carrier {data.carrier!r}")
            if data.bridge_to.startswith(TRUNK_SCHEME):
                owner, _, trunk = data.bridge_to[len(TRUNK_SCHEME) :].partition("/")
                visible = principal.is_admin or owner == principal.customer
                found = visible and await session.scalar(
                    select(TrunkRow.id)
                    .join(TrunkRow.customer)
                    .where(CustomerRow.name == owner, TrunkRow.name == trunk)
                )
                if not found:
                    raise FieldError("bridge_to", f"unknown trunk {owner + '/' + trunk!r}")
                # A call bridged to a customer's trunk is that customer's call (its limits, its
                # key sees it, its CDR) unless the admin named another.
                customer = customer or owner
            elif not principal.is_admin:
                raise PermissionDeniedException(
                    detail="a customer key can bridge only to its trunks (trunk:CUSTOMER/NAME)"
                )
            else:
                try:
                    check_sip_uri(data.bridge_to)
                except ValueError as exc:
                    raise FieldError("bridge_to", str(exc)) from None
        try:
            call = await control.originate(
                caller=data.caller,
                callee=data.callee,
                bridge_to=data.bridge_to,
                carrier=data.carrier,
                customer=customer,
            )
        except OriginateError as exc:
            raise HTTPException(status_code=exc.status, detail=exc.message) from None
        return call_out(call)

    @delete("/{call_id:str}", summary="Hang up a live call")
    async def hangup(
        self, ctx: NamedDependency[ApiContext], principal: NamedDependency[Principal], call_id: FromPath[str]
    ) -> None:
        """204; the call ends (BYE or CANCEL) with ``hangup_by="api"`` in its CDR. 404 when it
        is not live or (customer key) not the caller's; 503 when it was not found but a worker
        did not answer."""
        control = _control(ctx)
        if len(call_id) > CALL_ID_MAX_LEN:
            raise not_found("call")
        try:
            ended = await control.hangup(call_id, None if principal.is_admin else principal.customer)
        except CallControlUnavailable as exc:
            raise _unavailable(exc.message) from None
        if not ended:
            raise not_found("call")


__all__ = ["CallController", "LiveCallOut", "LiveCallPage", "LiveLegOut", "OriginateIn", "call_out"]
