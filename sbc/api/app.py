"""The litestar application: resources under ``/v1``, bearer-key auth, OpenAPI at ``/schema``.

:func:`create_api` builds it around a :class:`~sbc.store.store.Store`; ``sbc run`` serves it on
``api_listen`` (see :mod:`sbc.api.server`) with the B2BUA as call control and the prober's table
as gateway health. Other route handlers (the operations endpoints ``/metrics``, ``/healthz``,
``/readyz``) are added through ``extra_routes``; the paths in ``public_paths`` need no key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from litestar import Litestar
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.pydantic import PydanticPlugin
from litestar.types import ControllerRouterHandler

from sbc.b2bua.control import CallControl
from sbc.store.store import Store

from .api_keys import ApiKeyController
from .applications import ApplicationController
from .auth import PUBLIC_PATHS, BearerAuthMiddleware, KeyResolver
from .calls import CallController
from .carriers import CarrierController
from .cdrs import CdrController
from .context import ApiContext, page_params, principal_of
from .customers import CustomerController
from .errors import EXCEPTION_HANDLERS
from .gateway_health import HealthSource
from .numbers import NumberController
from .routes import RouteController
from .trunks import TrunkController

log = logging.getLogger(__name__)

#: Version of the API's contract, shown in the OpenAPI document; paths carry the major (/v1).
API_VERSION = "1.0.0"

#: Every resource controller, in the order the docs list them.
RESOURCES: tuple[ControllerRouterHandler, ...] = (
    CarrierController,
    CustomerController,
    ApiKeyController,
    TrunkController,
    NumberController,
    RouteController,
    ApplicationController,
    CallController,
    CdrController,
)


def _log_unexpected(exc: Exception, scope: Any) -> None:
    """Log what became a 500 (litestar's own logging is off, see ``logging_config``); errors
    with a mapped status (4xx, 503) are answers, not faults, and are not logged here."""
    if not isinstance(exc, (HTTPException, *EXCEPTION_HANDLERS)):
        log.error("API error on %s %s", scope.get("method"), scope.get("path"), exc_info=exc)


def create_api(
    store: Store,
    *,
    admin_key: str,
    calls: CallControl | None = None,
    health: HealthSource | None = None,
    extra_routes: Sequence[ControllerRouterHandler] = (),
    public_paths: Sequence[str] = PUBLIC_PATHS,
    debug: bool = False,
) -> Litestar:
    """Build the API application.

    ``admin_key`` is the configured admin key (required: a caller with it may do anything).
    ``calls`` backs ``/v1/calls`` (503 without it); ``health`` adds live state to carriers'
    gateways (null without it). ``extra_routes`` are mounted beside the resources;
    ``public_paths`` are regexes of paths served without a key. The returned app keeps its
    :class:`ApiContext` in ``app.state.ctx``.
    """
    resolver = KeyResolver(store, admin_key)
    ctx = ApiContext(store=store, keys=resolver, calls=calls, health=health)

    def provide_ctx() -> ApiContext:
        return ctx

    openapi = OpenAPIConfig(
        title="sbc API",
        version=API_VERSION,
        description=(
            "Provisioning and call control of the sbc SIP trunking SBC. "
            "Authenticate with 'Authorization: Bearer <api key>'."
        ),
        path="/schema",
        render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        components=Components(security_schemes={"BearerAuth": SecurityScheme(type="http", scheme="bearer")}),
        security=[{"BearerAuth": []}],
        use_handler_docstrings=True,
    )
    dependencies: dict[str, Any] = {
        "ctx": Provide(provide_ctx, use_cache=True, sync_to_thread=False),
        "principal": Provide(principal_of, sync_to_thread=False),
        "page": Provide(page_params, sync_to_thread=False),
    }
    app = Litestar(
        route_handlers=[*RESOURCES, *extra_routes],
        dependencies=dependencies,
        middleware=[DefineMiddleware(BearerAuthMiddleware, resolver=resolver, exclude=list(public_paths))],
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi,
        # Not litestar's default: it would reconfigure the root logger, which belongs to sbc run.
        logging_config=None,
        after_exception=[_log_unexpected],
        # Bodies are validated strictly, as the provision file is: "10" is not a number.
        plugins=[PydanticPlugin(validate_strict=True)],
        debug=debug,
    )
    app.state.ctx = ctx
    return app


__all__ = ["API_VERSION", "RESOURCES", "create_api"]
