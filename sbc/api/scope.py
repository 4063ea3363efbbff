"""Tenant scoping: which rows a caller may see, and whose customer a write belongs to.

One place decides this so every resource applies the same rule: an admin sees everything; a
customer key sees only rows of its customer, and anything else is answered exactly like an id
that does not exist (404 for a path, "unknown customer" for a body field).
"""

from __future__ import annotations

from typing import Any, TypeVar

from litestar.exceptions import NotAuthorizedException
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from sbc.store.schema import SQL_INT_MAX, CustomerRow

from .auth import Principal
from .errors import FieldError, not_found

T = TypeVar("T")


def visible(query: Select[Any], column: InstrumentedAttribute[Any], principal: Principal) -> Select[Any]:
    """``query`` restricted to rows whose ``column`` (a customer id) is the caller's customer."""
    if principal.is_admin:
        return query
    return query.where(column == principal.customer_id)


def check_id(value: int, what: str) -> int:
    """A path id outside what the database can hold cannot exist: 404, not a driver overflow."""
    if not 1 <= value <= SQL_INT_MAX:
        raise not_found(what)
    return value


async def get_visible(
    session: AsyncSession,
    query: Select[tuple[T]],
    principal: Principal,
    customer_column: InstrumentedAttribute[Any] | None,
    what: str,
) -> T:
    """The one row of ``query`` the caller may see; 404 when there is none.

    ``customer_column`` is the row's customer id column (None for operator resources, which
    only admins reach through a guard).
    """
    if customer_column is not None:
        query = visible(query, customer_column, principal)
    row = (await session.scalars(query)).first()
    if row is None:
        raise not_found(what)
    return row


async def owner_for_write(
    session: AsyncSession, principal: Principal, name: str | None, key: str = "customer"
) -> CustomerRow:
    """The customer a new or moved object belongs to.

    An admin must name it (``key`` in the body); a customer key may omit it or give its own name.
    Raises :class:`FieldError` (422) naming ``key`` for a missing or unknown customer, including
    another customer's name given with a customer key (indistinguishable from unknown), and 401
    when the caller's own customer has been deleted since its key was checked.
    """
    if principal.is_admin:
        if name is None:
            raise FieldError(key, "required with an admin key: the customer this belongs to")
        row = await session.scalar(select(CustomerRow).where(CustomerRow.name == name))
        if row is None:
            raise FieldError(key, f"unknown customer {name!r}")
        return row
    if name is not None and name != principal.customer:
        raise FieldError(key, f"unknown customer {name!r}")
    row = await session.get(CustomerRow, principal.customer_id)
    if row is None:
        raise NotAuthorizedException(detail="the customer of this API key no longer exists")
    return row


async def customer_filter(session: AsyncSession, principal: Principal, name: str | None) -> int | None | bool:
    """Resolve a ``?customer=NAME`` list filter to a customer id.

    Returns the id to filter on, None for "no filter" (admin without the parameter), or False
    when nothing can match (unknown name, or another customer's name with a customer key).
    """
    if not principal.is_admin:
        if name is not None and name != principal.customer:
            return False
        return principal.customer_id
    if name is None:
        return None
    found = await session.scalar(select(CustomerRow.id).where(CustomerRow.name == name))
    return False if found is None else found


__all__ = ["check_id", "customer_filter", "get_visible", "owner_for_write", "visible"]
