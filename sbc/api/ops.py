"""Operations endpoints: ``/metrics`` (Prometheus), ``/healthz`` (liveness), ``/readyz`` (readiness).

:func:`ops_router` gives the three routes as a litestar :class:`~litestar.Router` for the main REST API
to mount; :func:`build_ops_app` wraps them in an app of their own (tests, or a process without the REST
API); :class:`HttpServer` serves an ASGI app on the SBC's own event loop.

The routes are unauthenticated (``opt={"exclude_from_auth": True}``, the key litestar's authentication
middleware skips): Prometheus and orchestrators' probes carry no API key, and none of the three reveals
a number, a Call-ID or a peer's address (:mod:`sbc.metrics` keeps label values to provisioned names).

Readiness answers "should new calls be sent here?", so ``/readyz`` is 503 when:

* the store is not open (no CDRs could be written, no provisioning reloaded);
* a configured SIP listener is not bound (the SBC is not reachable where it was told to be);
* provisioning has not been loaded yet (an INVITE would be refused for lack of routes);
* the process is shutting down (SIGTERM received: finish the calls in progress, take no new ones);
* overload protection is on and shedding new calls: a load balancer should send elsewhere for a moment.
  The guard's hysteresis (a 5 s hold before clearing) keeps this from flapping per probe.

A store that is open but momentarily unreachable (a PostgreSQL failover) does *not* make the SBC unready:
calls route from the in-memory snapshot and CDRs wait in the writer's queue, so taking the SBC out of
rotation would only turn a database blip into an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import uvicorn
from litestar import Litestar, Request, Response, Router, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from prometheus_client.exposition import choose_encoder

from ..metrics import LiveSource, exposition_for
from ..readiness import readiness

log = logging.getLogger(__name__)

#: The option litestar's AbstractAuthenticationMiddleware looks up to skip a route (its default
#: ``exclude_opt_key``); the REST API's key guard is expected to honour it too.
EXCLUDE_FROM_AUTH = {"exclude_from_auth": True}
#: How long :meth:`HttpServer.stop` waits for requests in flight before closing regardless.
SHUTDOWN_GRACE_S = 2.0
#: How long :meth:`HttpServer.start` waits for uvicorn's startup (lifespan) before giving up.
STARTUP_TIMEOUT_S = 10.0


def _json_checks(checks: Mapping[str, str | None]) -> dict[str, Any]:
    failing = {name: why for name, why in checks.items() if why is not None}
    return {
        "status": "not ready" if failing else "ready",
        "checks": {name: why or "ok" for name, why in checks.items()},
        "failing": sorted(failing),
    }


def ops_handlers(sbc_app: LiveSource) -> list[Any]:
    """The three route handlers bound to ``sbc_app`` (for a host app that takes a list)."""
    collector = exposition_for(sbc_app)

    @get(
        "/metrics",
        sync_to_thread=False,  # on the loop thread: reads the B2BUA's tables, which only the loop changes
        opt=EXCLUDE_FROM_AUTH,
        summary="Prometheus metrics",
        description="Text exposition (OpenMetrics when the Accept header asks for it).",
    )
    def metrics(request: Request) -> Response[bytes]:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        # The header given whole: litestar would append a second "charset" to a text/* media type.
        return Response(
            content=encoder(collector),
            media_type=content_type.split(";", 1)[0],
            headers={"content-type": content_type},
            status_code=HTTP_200_OK,
        )

    @get(
        "/healthz",
        sync_to_thread=False,
        opt=EXCLUDE_FROM_AUTH,
        summary="Liveness",
        description="200 while the process's event loop answers at all.",
    )
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @get(
        "/readyz",
        sync_to_thread=False,
        opt=EXCLUDE_FROM_AUTH,
        summary="Readiness",
        description="200 when store, SIP listeners and provisioning are up and the SBC is neither "
        "overloaded nor stopping; else 503 naming what is not ready.",
    )
    def readyz() -> Response[dict[str, Any]]:
        body = _json_checks(readiness(sbc_app))
        code = HTTP_200_OK if body["status"] == "ready" else HTTP_503_SERVICE_UNAVAILABLE
        return Response(content=body, status_code=code, headers={"Cache-Control": "no-store"})

    return [metrics, healthz, readyz]


def ops_router(sbc_app: LiveSource, path: str = "/") -> Router:
    """``/metrics``, ``/healthz`` and ``/readyz`` under ``path``, tagged ``ops`` in the OpenAPI schema."""
    return Router(path=path, route_handlers=ops_handlers(sbc_app), tags=["ops"])


def build_ops_app(sbc_app: LiveSource, extra: Sequence[Any] = ()) -> Litestar:
    """A litestar app serving only the ops routes (plus ``extra`` handlers) for ``sbc_app``.

    ``logging_config=None``: litestar's default would reconfigure the root logger, which belongs to
    ``sbc run``. No OpenAPI schema: the REST API carries it when both are served.
    """
    return Litestar(route_handlers=[ops_router(sbc_app), *extra], logging_config=None, openapi_config=None)


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handling: ``sbc run`` owns SIGTERM/SIGINT and stops us itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # uvicorn >= 0.29.0
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        return None


class HttpServer:
    """An ASGI app served by uvicorn on the running event loop, on a socket bound by :meth:`start`.

    Binding the socket here (not in uvicorn) makes a busy port an ``OSError`` at start, the same as a
    SIP listener, instead of uvicorn's ``sys.exit``.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.address: tuple[str, int] | None = None
        self._server: _QuietServer | None = None
        self._task: asyncio.Task | None = None

    async def start(self, listen: str) -> tuple[str, int]:
        """Serve on ``listen`` (``HOST:PORT``, ``[v6]:PORT``; port 0 picks one). Returns the bound
        address. Raises OSError when the address cannot be bound or the server does not start."""
        host, _, port = listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
        except (OSError, ValueError) as e:
            sock.close()
            raise OSError(f"cannot bind API address {listen}: {e}") from None
        self.address = sock.getsockname()[:2]
        config = uvicorn.Config(
            self.app,
            log_config=None,  # sbc run's logging stays as configured
            log_level="warning",  # not uvicorn's start/stop chatter: the address is logged below
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if self._task.done() or asyncio.get_running_loop().time() > deadline:
                await self.stop()
                sock.close()
                raise OSError(f"API server on {listen} did not start")
            await asyncio.sleep(0.01)
        log.info("HTTP API on %s:%s", *self.address)
        return self.address

    async def stop(self) -> None:
        """Stop accepting, finish requests in flight (up to :data:`SHUTDOWN_GRACE_S`); idempotent."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        task, self._server, self._task = self._task, None, None
        try:
            await asyncio.wait_for(task, timeout=SHUTDOWN_GRACE_S + 1.0)  # cancels it on timeout
        except (Exception, SystemExit) as e:  # uvicorn exits with SystemExit on a failed startup
            log.info("API server stopped with %r", e)
