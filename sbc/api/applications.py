"""``/v1/applications``: programmable call handlers that numbers can be delivered to.

An application is either webhook-driven (``call_hook``, optional ``fallback_url``, requests
signed with ``signing_secret``) or an inline ``flow`` (a JSON list of actions, each an object
with an ``action`` name); exactly one of ``call_hook`` and ``flow`` is set. ``status_hook`` (call
progress events) goes with either. The signing secret is write-only: responses only say whether
one is set. A customer key manages its own applications. Names are immutable (numbers and the
provision file refer to them).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.orm import selectinload

from sbc.provision import Name
from sbc.store.schema import ApplicationRow, CustomerRow, NumberRow

from .auth import Principal
from .context import ApiContext, PageMeta, PageParams, page_of
from .errors import Conflict, FieldError
from .fields import Body, Flow, Secret, WebhookUrl
from .scope import check_id, customer_filter, get_visible, owner_for_write


def _check_shape(call_hook: str | None, flow: Any, fallback_url: str | None) -> None:
    """422 unless exactly one of call_hook and flow is set, and fallback_url only with a hook."""
    if (call_hook is None) == (flow is None):
        raise FieldError("call_hook", "give exactly one of call_hook (webhook) and flow (inline actions)")
    if fallback_url is not None and call_hook is None:
        raise FieldError("fallback_url", "a fallback URL needs a call_hook")


class ApplicationIn(Body):
    """A new application. ``customer`` is required with an admin key, implied by a customer key."""

    name: Name
    customer: Name | None = None
    call_hook: WebhookUrl | None = None
    fallback_url: WebhookUrl | None = None
    status_hook: WebhookUrl | None = None
    signing_secret: Secret | None = None
    flow: Flow | None = None


class ApplicationPatch(Body):
    """Changed fields; a field left out keeps its value, null clears it. Switching between
    webhook and flow means setting one and nulling the other in the same request."""

    call_hook: WebhookUrl | None = None
    fallback_url: WebhookUrl | None = None
    status_hook: WebhookUrl | None = None
    signing_secret: Secret | None = None
    flow: Flow | None = None


class ApplicationOut(BaseModel):
    """An application as the API returns it (the signing secret never included)."""

    id: int
    customer: str
    name: str
    call_hook: str | None
    fallback_url: str | None
    status_hook: str | None
    flow: list[dict[str, Any]] | None
    has_signing_secret: bool


class ApplicationPage(PageMeta):
    """A page of applications, by customer then name."""

    items: list[ApplicationOut]


def application_out(row: ApplicationRow, customer: str) -> ApplicationOut:
    """The API view of an application row."""
    return ApplicationOut(
        id=row.id,
        customer=customer,
        name=row.name,
        call_hook=row.call_hook,
        fallback_url=row.fallback_url,
        status_hook=row.status_hook,
        flow=row.flow,
        has_signing_secret=row.signing_secret is not None,
    )


def _load() -> Select[tuple[ApplicationRow]]:
    return select(ApplicationRow).options(selectinload(ApplicationRow.customer))


class ApplicationController(Controller):
    """CRUD of applications, scoped to the caller's customer."""

    path = "/v1/applications"
    tags = ["applications"]

    @post("/", summary="Create an application")
    async def create(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        data: JSONBody[ApplicationIn],
    ) -> ApplicationOut:
        """201 with the application; 409 for a name the customer already uses."""
        _check_shape(data.call_hook, data.flow, data.fallback_url)
        async with ctx.store.provisioning() as session:
            customer = await owner_for_write(session, principal, data.customer)
            exists = await session.scalar(
                select(ApplicationRow.id).where(
                    ApplicationRow.customer_id == customer.id, ApplicationRow.name == data.name
                )
            )
            if exists:
                raise Conflict(detail=f"customer {customer.name!r} already has an application {data.name!r}")
            row = ApplicationRow(customer_id=customer.id, **data.model_dump(exclude={"customer"}))
            session.add(row)
            await session.flush()
        return application_out(row, customer.name)

    @get("/", summary="List applications")
    async def list_applications(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        page: NamedDependency[PageParams],
        customer: Annotated[str | None, QueryParameter(description="customer name")] = None,
        name: Annotated[str | None, QueryParameter(description="exact application name")] = None,
    ) -> ApplicationPage:
        """The caller's applications (an admin's: all, or one customer's)."""
        async with ctx.store.session() as session:
            customer_id = await customer_filter(session, principal, customer)
            if customer_id is False:
                return ApplicationPage(**page_of([], page))
            query = _load().join(ApplicationRow.customer)
            if customer_id is not None:
                query = query.where(ApplicationRow.customer_id == customer_id)
            if name is not None:
                query = query.where(ApplicationRow.name == name)
            query = (
                query.order_by(CustomerRow.name, ApplicationRow.name)
                .limit(page.limit + 1)
                .offset(page.offset)
            )
            rows = (await session.scalars(query)).all()
        return ApplicationPage(**page_of([application_out(r, r.customer.name) for r in rows], page))

    @get("/{application_id:int}", summary="Get an application")
    async def get_application(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        application_id: FromPath[int],
    ) -> ApplicationOut:
        """The application; 404 for an unknown id or another customer's."""
        check_id(application_id, "application")
        async with ctx.store.session() as session:
            row = await get_visible(
                session,
                _load().where(ApplicationRow.id == application_id),
                principal,
                ApplicationRow.customer_id,
                "application",
            )
        return application_out(row, row.customer.name)

    @patch("/{application_id:int}", summary="Change an application")
    async def update(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        application_id: FromPath[int],
        data: JSONBody[ApplicationPatch],
    ) -> ApplicationOut:
        """The changed application; 404 for an unknown or foreign id; 422 when the result would
        have both or neither of call_hook and flow."""
        check_id(application_id, "application")
        async with ctx.store.provisioning() as session:
            row = await get_visible(
                session,
                _load().where(ApplicationRow.id == application_id),
                principal,
                ApplicationRow.customer_id,
                "application",
            )
            for field in data.model_fields_set:
                setattr(row, field, getattr(data, field))
            _check_shape(row.call_hook, row.flow, row.fallback_url)
            await session.flush()
        return application_out(row, row.customer.name)

    @delete("/{application_id:int}", summary="Delete an application")
    async def remove(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        application_id: FromPath[int],
    ) -> None:
        """204; 404 for an unknown or foreign id, 409 while numbers are delivered to it."""
        check_id(application_id, "application")
        async with ctx.store.provisioning() as session:
            row = await get_visible(
                session,
                select(ApplicationRow).where(ApplicationRow.id == application_id),
                principal,
                ApplicationRow.customer_id,
                "application",
            )
            numbers = await session.scalar(
                select(func.count()).select_from(NumberRow).where(NumberRow.application_id == application_id)
            )
            if numbers:
                raise Conflict(
                    detail=f"application {row.name!r} still has {numbers} number(s): reassign them first"
                )
            await session.delete(row)


__all__ = [
    "ApplicationController",
    "ApplicationIn",
    "ApplicationOut",
    "ApplicationPage",
    "ApplicationPatch",
    "application_out",
]
