"""``/v1/customers``: tenants and their limits.

Admins create, change and delete customers; a customer key sees only its own customer (the list
holds just it, any other id is 404). Names are immutable: CDRs, metrics labels and the provision
file refer to customers by name, so a rename would cut a customer off its own history.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter
from pydantic import BaseModel
from sqlalchemy import func, select

from sbc.provision import MaxCalls, MaxCps, Name
from sbc.store.schema import CustomerRow, NumberRow, RouteRow

from .auth import Principal, admin_only
from .context import ApiContext, PageMeta, PageParams, page_of
from .errors import Conflict, not_found
from .fields import Body
from .scope import check_id, get_visible, visible


class CustomerIn(Body):
    """A new customer."""

    name: Name
    max_calls: MaxCalls | None = None
    max_cps: MaxCps | None = None


class CustomerPatch(Body):
    """Changed limits; a field left out keeps its value, null removes the limit."""

    max_calls: MaxCalls | None = None
    max_cps: MaxCps | None = None


class CustomerOut(BaseModel):
    """A customer as the API returns it."""

    id: int
    name: str
    max_calls: int | None
    max_cps: float | None


class CustomerPage(PageMeta):
    """A page of customers, by name."""

    items: list[CustomerOut]


def customer_out(row: CustomerRow) -> CustomerOut:
    """The API view of a customer row."""
    return CustomerOut(id=row.id, name=row.name, max_calls=row.max_calls, max_cps=row.max_cps)


class CustomerController(Controller):
    """CRUD of customers."""

    path = "/v1/customers"
    tags = ["customers"]

    @post("/", guards=[admin_only], summary="Create a customer")
    async def create(self, ctx: NamedDependency[ApiContext], data: JSONBody[CustomerIn]) -> CustomerOut:
        """201 with the customer; 409 when the name is taken."""
        async with ctx.store.provisioning() as session:
            if await session.scalar(select(CustomerRow.id).where(CustomerRow.name == data.name)):
                raise Conflict(detail=f"customer {data.name!r} already exists")
            row = CustomerRow(name=data.name, max_calls=data.max_calls, max_cps=data.max_cps)
            session.add(row)
            await session.flush()
        return customer_out(row)

    @get("/", summary="List customers")
    async def list_customers(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        page: NamedDependency[PageParams],
        name: Annotated[str | None, QueryParameter(description="exact name")] = None,
    ) -> CustomerPage:
        """Customers by name; a customer key sees only its own."""
        query = visible(select(CustomerRow), CustomerRow.id, principal)
        if name is not None:
            query = query.where(CustomerRow.name == name)
        query = query.order_by(CustomerRow.name).limit(page.limit + 1).offset(page.offset)
        async with ctx.store.session() as session:
            rows = (await session.scalars(query)).all()
        return CustomerPage(**page_of([customer_out(r) for r in rows], page))

    @get("/{customer_id:int}", summary="Get a customer")
    async def get_customer(
        self,
        ctx: NamedDependency[ApiContext],
        principal: NamedDependency[Principal],
        customer_id: FromPath[int],
    ) -> CustomerOut:
        """The customer; 404 for an unknown id or another customer's."""
        check_id(customer_id, "customer")
        async with ctx.store.session() as session:
            row = await get_visible(
                session,
                select(CustomerRow).where(CustomerRow.id == customer_id),
                principal,
                CustomerRow.id,
                "customer",
            )
        return customer_out(row)

    @patch("/{customer_id:int}", guards=[admin_only], summary="Change a customer's limits")
    async def update(
        self, ctx: NamedDependency[ApiContext], customer_id: FromPath[int], data: JSONBody[CustomerPatch]
    ) -> CustomerOut:
        """The changed customer; 404 for an unknown id."""
        check_id(customer_id, "customer")
        async with ctx.store.provisioning() as session:
            row = await session.get(CustomerRow, customer_id)
            if row is None:
                raise not_found("customer")
            for field in data.model_fields_set:
                setattr(row, field, getattr(data, field))
        return customer_out(row)

    @delete("/{customer_id:int}", guards=[admin_only], summary="Delete a customer")
    async def remove(self, ctx: NamedDependency[ApiContext], customer_id: FromPath[int]) -> None:
        """204; the customer's trunks, applications and API keys go with it. 409 while it still
        has numbers (release them first) or customer routes."""
        check_id(customer_id, "customer")
        async with ctx.store.provisioning() as session:
            row = await session.get(CustomerRow, customer_id)
            if row is None:
                raise not_found("customer")
            numbers = await session.scalar(
                select(func.count()).select_from(NumberRow).where(NumberRow.customer_id == customer_id)
            )
            if numbers:
                raise Conflict(
                    detail=f"customer {row.name!r} still has {numbers} number(s): release them first"
                )
            routes = await session.scalar(
                select(func.count()).select_from(RouteRow).where(RouteRow.customer_id == customer_id)
            )
            if routes:
                raise Conflict(detail=f"customer {row.name!r} still has {routes} route(s): delete them first")
            await session.delete(row)


__all__ = ["CustomerController", "CustomerIn", "CustomerOut", "CustomerPage", "CustomerPatch", "customer_out"]
