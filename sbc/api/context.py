"""What every resource handler is given: the store, call control, gateway health, the caller.

Handlers declare ``ctx: ApiContext`` and ``principal: Principal`` parameters; litestar injects
them through the dependencies built here. Keeping them in one object lets tests build an app
around a real store and fake call control without a running SBC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Request
from litestar.exceptions import NotAuthorizedException
from litestar.params import QueryParameter
from pydantic import BaseModel

from sbc.b2bua.control import CallControl
from sbc.store.schema import SQL_INT_MAX
from sbc.store.store import Store

from .auth import KeyResolver, Principal
from .gateway_health import HealthSource

#: Page size when the client does not say, and the most one page may hold: bounds the memory
#: and time one request can take (the CDR listing shares these with Store.list_cdrs).
PAGE_DEFAULT = 100
PAGE_MAX = 1000


@dataclass(frozen=True, slots=True)
class ApiContext:
    """The SBC objects the API works with; ``calls``/``health`` are None when not wired."""

    store: Store
    keys: KeyResolver
    calls: CallControl | None = None
    health: HealthSource | None = None


def principal_of(request: Request[Any, Any, Any]) -> Principal:
    """The authenticated caller (set by :class:`sbc.api.auth.BearerAuthMiddleware`)."""
    user = request.scope.get("user")
    if not isinstance(user, Principal):  # a request the middleware let through (OPTIONS)
        raise NotAuthorizedException(detail="missing API key: send 'Authorization: Bearer <key>'")
    return user


@dataclass(frozen=True, slots=True)
class PageParams:
    """``limit``/``offset`` of a list request."""

    limit: int
    offset: int


def page_params(
    limit: Annotated[
        int, QueryParameter(ge=1, le=PAGE_MAX, description=f"items per page (1..{PAGE_MAX})")
    ] = PAGE_DEFAULT,
    offset: Annotated[int, QueryParameter(ge=0, le=SQL_INT_MAX, description="items to skip")] = 0,
) -> PageParams:
    """Dependency reading the pagination query parameters."""
    return PageParams(limit=limit, offset=offset)


def page_of(items: list[Any], params: PageParams) -> dict[str, Any]:
    """Build a page from up to ``limit + 1`` fetched items (the extra one says whether more exist)."""
    more = len(items) > params.limit
    return {
        "items": items[: params.limit],
        "limit": params.limit,
        "offset": params.offset,
        "next_offset": params.offset + params.limit if more else None,
    }


class PageMeta(BaseModel):
    """Pagination fields of every list response (the items come in ``items``).

    Lists are pages by ``limit``/``offset``; ``next_offset`` is the offset of the next page, or
    null on the last one (the API fetches one item more than asked to know). No total count:
    counting a large CDR table on every page costs more than the page.
    """

    limit: int
    offset: int
    next_offset: int | None


__all__ = [
    "PAGE_DEFAULT",
    "PAGE_MAX",
    "ApiContext",
    "PageMeta",
    "PageParams",
    "page_of",
    "page_params",
    "principal_of",
]
