"""``/v1/cdrs``: call detail records -- filtered lists, one record, CSV export.

CDRs are written by the running SBC (``Store.write_cdrs``); the API only reads them. Filters:
``since`` (inclusive) and ``until`` (exclusive) on the setup time (ISO 8601; without an offset
the time is UTC), ``number`` (caller or callee, any usual spelling), ``customer``,
``disposition``, ``direction``, ``carrier``, ``trunk``, ``call_id``. Newest first. A customer key
sees only its own CDRs.

CSV: ``GET /v1/cdrs.csv`` (or ``/v1/cdrs`` with ``Accept: text/csv``) streams *every* matching
CDR, not one page: it walks the table by a keyset cursor (setup time, id), so CDRs written
during the export neither repeat nor push rows out of it. Bound an export with since/until.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream
from pydantic import BaseModel

from sbc.store.cdr import CdrRecord
from sbc.store.store import CDR_PAGE_MAX

from .auth import Principal
from .context import ApiContext, PageMeta, PageParams, page_of
from .errors import not_found
from .fields import to_e164
from .scope import check_id

Disposition = Literal["answered", "busy", "no_answer", "cancelled", "rejected", "failed"]
Direction = Literal["inbound", "outbound"]
CSV_MEDIA_TYPE = "text/csv"

#: CSV columns, in order; attempts and media are JSON text in their cells.
CSV_COLUMNS: tuple[str, ...] = (
    "id",
    "call_id",
    "direction",
    "caller",
    "callee",
    "customer",
    "carrier",
    "trunk",
    "gateway",
    "setup_time",
    "answer_time",
    "end_time",
    "duration_s",
    "disposition",
    "sip_code",
    "hangup_by",
    "end_reason",
    "attempts",
    "media",
)


class CdrAttemptOut(BaseModel):
    """One try of an outbound leg (failover history)."""

    carrier: str | None
    gateway: str | None
    code: int
    reason: str


class CdrOut(BaseModel):
    """A finished call."""

    id: int
    call_id: str
    direction: str
    caller: str
    callee: str
    customer: str | None
    carrier: str | None
    trunk: str | None
    gateway: str | None
    attempts: list[CdrAttemptOut]
    setup_time: datetime
    answer_time: datetime | None
    end_time: datetime
    duration_s: float
    disposition: str
    sip_code: int
    hangup_by: str | None
    end_reason: str
    media: dict[str, Any]


class CdrPage(PageMeta):
    """A page of CDRs, newest first."""

    items: list[CdrOut]


def cdr_out(cdr: CdrRecord) -> CdrOut:
    """The API view of a CDR."""
    assert cdr.id is not None and cdr.duration_s is not None  # stored records have both
    return CdrOut(
        id=cdr.id,
        call_id=cdr.call_id,
        direction=cdr.direction,
        caller=cdr.caller,
        callee=cdr.callee,
        customer=cdr.customer,
        carrier=cdr.carrier,
        trunk=cdr.trunk,
        gateway=cdr.gateway,
        attempts=[CdrAttemptOut(**a.to_json()) for a in cdr.attempts],
        setup_time=cdr.setup_time,
        answer_time=cdr.answer_time,
        end_time=cdr.end_time,
        duration_s=cdr.duration_s,
        disposition=cdr.disposition,
        sip_code=cdr.sip_code,
        hangup_by=cdr.hangup_by,
        end_reason=cdr.end_reason,
        media=dict(cdr.media),
    )


def _aware(value: datetime | None) -> datetime | None:
    """A bound without an offset is UTC (what the README promises)."""
    if value is not None and value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value


def _spellings(number: str) -> list[str]:
    """The forms a number may have in CDRs (as signalled): given, E.164, E.164 without '+'."""
    forms = [number]
    try:
        e164 = to_e164(number)
    except ValueError:
        return forms
    return list(dict.fromkeys([number, e164, e164[1:]]))


def _csv_row(cdr: CdrRecord) -> list[Any]:
    def iso(value: datetime | None) -> str:
        return "" if value is None else value.isoformat()

    return [
        cdr.id,
        cdr.call_id,
        cdr.direction,
        cdr.caller,
        cdr.callee,
        cdr.customer or "",
        cdr.carrier or "",
        cdr.trunk or "",
        cdr.gateway or "",
        iso(cdr.setup_time),
        iso(cdr.answer_time),
        iso(cdr.end_time),
        cdr.duration_s,
        cdr.disposition,
        cdr.sip_code,
        cdr.hangup_by or "",
        cdr.end_reason,
        json.dumps([a.to_json() for a in cdr.attempts], separators=(",", ":")),
        json.dumps(dict(cdr.media), separators=(",", ":")),
    ]


class CdrFilters(BaseModel):
    """The filters of a CDR query, after scoping to the caller."""

    customer: str | None = None
    carrier: str | None = None
    trunk: str | None = None
    call_id: str | None = None
    direction: str | None = None
    disposition: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    number: list[str] | None = None
    nothing: bool = False  # a customer key asked for another customer: no rows at all

    def store_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``Store.list_cdrs``."""
        return self.model_dump(exclude={"nothing"})


def cdr_filters(
    principal: NamedDependency[Principal],
    since: FilterSince = None,
    until: FilterUntil = None,
    number: FilterNumber = None,
    customer: FilterName = None,
    disposition: FromQuery[Disposition | None] = None,
    direction: FromQuery[Direction | None] = None,
    carrier: FilterName = None,
    trunk: FilterName = None,
    call_id: FilterName = None,
) -> CdrFilters:
    """The query's filters (a dependency of the list and the export); a customer key is held to
    its own customer (naming another matches nothing)."""
    nothing = False
    if not principal.is_admin:
        nothing = customer is not None and customer != principal.customer
        customer = principal.customer
    return CdrFilters(
        customer=customer,
        carrier=carrier,
        trunk=trunk,
        call_id=call_id,
        direction=direction,
        disposition=disposition,
        since=_aware(since),
        until=_aware(until),
        number=_spellings(number) if number is not None else None,
        nothing=nothing,
    )


async def _csv_chunks(ctx: ApiContext, filters: CdrFilters) -> AsyncIterator[str]:
    """The CSV text, header first, one chunk per store page."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180 line breaks
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    if filters.nothing:
        return
    before: tuple[datetime, int] | None = None
    while True:
        page = await ctx.store.list_cdrs(**filters.store_kwargs(), before=before, limit=CDR_PAGE_MAX)
        if not page:
            return
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(_csv_row(c) for c in page)
        yield buffer.getvalue()
        last = page[-1]
        assert last.id is not None
        before = (last.setup_time, last.id)
        if len(page) < CDR_PAGE_MAX:
            return


def _csv_response(ctx: ApiContext, filters: CdrFilters) -> Stream:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Stream(
        _csv_chunks(ctx, filters),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="cdrs-{stamp}.csv"'},
    )


def _wants_csv(request: Request[Any, Any, State]) -> bool:
    accept = request.headers.get("accept", "")
    return CSV_MEDIA_TYPE in accept and "application/json" not in accept


FilterSince = Annotated[
    datetime | None, QueryParameter(description="setup time from (inclusive, ISO 8601, UTC if no offset)")
]
FilterUntil = Annotated[datetime | None, QueryParameter(description="setup time before (exclusive)")]
FilterNumber = Annotated[str | None, QueryParameter(description="caller or callee number", max_length=64)]
FilterName = Annotated[str | None, QueryParameter(max_length=256)]


class CdrController(Controller):
    """CDR queries and export."""

    path = "/v1"
    tags = ["cdrs"]
    dependencies = {"filters": Provide(cdr_filters, sync_to_thread=False)}  # noqa: RUF012

    @get("/cdrs", summary="List CDRs (JSON, or CSV with Accept: text/csv)")
    async def list_cdrs(
        self,
        request: Request[Any, Any, State],
        ctx: NamedDependency[ApiContext],
        page: NamedDependency[PageParams],
        filters: NamedDependency[CdrFilters],
    ) -> Response[CdrPage]:
        """A page of CDRs newest first (``Accept: text/csv``: every matching CDR as CSV)."""
        if _wants_csv(request):
            return _csv_response(ctx, filters)  # type: ignore[return-value]
        items: list[CdrRecord] = []
        if not filters.nothing:
            items = await ctx.store.list_cdrs(
                **filters.store_kwargs(), limit=min(page.limit + 1, CDR_PAGE_MAX), offset=page.offset
            )
            if page.limit == CDR_PAGE_MAX and len(items) == CDR_PAGE_MAX:
                # The store caps a query at CDR_PAGE_MAX; ask once more to know if a next page exists.
                extra = await ctx.store.list_cdrs(
                    **filters.store_kwargs(), limit=1, offset=page.offset + page.limit
                )
                items.extend(extra)
        return Response(CdrPage(**page_of([cdr_out(c) for c in items], page)))

    @get("/cdrs.csv", summary="Export CDRs as CSV", media_type=CSV_MEDIA_TYPE)
    async def export_csv(
        self,
        ctx: NamedDependency[ApiContext],
        filters: NamedDependency[CdrFilters],
    ) -> Stream:
        """Every matching CDR as CSV (RFC 4180), newest first, streamed."""
        return _csv_response(ctx, filters)

    @get("/cdrs/{cdr_id:int}", summary="Get a CDR")
    async def get_cdr(
        self, ctx: NamedDependency[ApiContext], principal: NamedDependency[Principal], cdr_id: FromPath[int]
    ) -> CdrOut:
        """One CDR; 404 for an unknown id or another customer's CDR."""
        check_id(cdr_id, "CDR")
        cdr = await ctx.store.get_cdr(cdr_id, customer=None if principal.is_admin else principal.customer)
        if cdr is None:
            raise not_found("CDR")
        return cdr_out(cdr)


__all__ = ["CSV_COLUMNS", "CdrController", "CdrOut", "CdrPage", "cdr_out"]
