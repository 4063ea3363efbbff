"""The REST API and ops routes of ``sbc run --workers N``: one view of every worker, from worker 0.

Worker 0 serves the API on ``--api-listen``; the calls live in all N workers. What changes against a
single process (:func:`worker_api_parts` gives both pieces to :meth:`sbc.app.SbcApp._build_api`):

* **Calls** go through :class:`WorkerCallControl`: ``GET /v1/calls`` merges this worker's calls
  with the others' (over :mod:`sbc.workers.control`), oldest first; ``DELETE /v1/calls/{id}``
  ends the call on whichever worker holds it; ``POST /v1/calls`` originates here (the Call-IDs
  worker 0 makes steer back to it). A worker that does not answer within the RPC timeout is left
  out and named in the list's ``missing_workers`` (see :mod:`sbc.api.calls`), and logged.
* **/metrics** merges every worker's exposition into one (:mod:`sbc.workers.merge`), with
  ``sbc_worker_up{worker}`` saying which answered.
* **/readyz** is 200 only when this worker is ready and every other worker answers its ping and
  is ready itself; each other worker is one check, ``worker_<i>``, saying why not (its failing
  checks, or that it did not answer). Taking the SBC out of rotation while a worker restarts is
  right: the calls the kernel steers to that worker would fail meanwhile.
* **/healthz** stays 200 while worker 0 answers (liveness: a failure makes an orchestrator kill the
  whole SBC and every call in it, when one missing worker is the supervisor's to restart), and its
  body lists which workers answered a ping.

The API handlers never touch another worker's B2BUA: everything crosses the control socket as JSON.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from litestar import Request, Response, Router, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from prometheus_client.exposition import choose_encoder, generate_latest

from ..api.ops import EXCLUDE_FROM_AUTH, _json_checks
from ..b2bua.control import CallControl, CallControlUnavailable, LiveCall, LiveCallList
from ..metrics import exposition_for
from ..readiness import readiness
from ..transport.steering import worker_for_call_id
from . import WorkerInfo
from .control import ControlClient, call_from_json
from .merge import ExpositionMerger

log = logging.getLogger(__name__)


class WorkerCallControl:
    """The :class:`~sbc.b2bua.control.CallControl` of worker 0's API: ``local`` (this worker's
    own, normally :class:`sbc.call_control.AppCallControl`) plus the other workers via ``client``.
    """

    def __init__(self, local: CallControl, client: ControlClient) -> None:
        self.local = local
        self.client = client
        self.info: WorkerInfo = client.info

    async def live_calls(self, customer: str | None = None) -> LiveCallList:
        """Every worker's calls, oldest first; ``missing`` names the workers that did not answer
        (or answered something that is not a call list)."""
        own, (results, missing) = await asyncio.gather(
            self.local.live_calls(customer), self.client.gather("live_calls", customer=customer)
        )
        calls: list[LiveCall] = list(own)
        for index, rows in sorted(results.items()):
            try:
                calls.extend(call_from_json(row) for row in rows)
            except (TypeError, KeyError, ValueError) as e:
                log.warning("worker %d answered live_calls with a malformed call: %s", index, e)
                missing[index] = "malformed answer"
        calls.sort(key=lambda c: c.setup_at)
        return LiveCallList(calls, missing=sorted(missing))

    async def originate(
        self,
        *,
        caller: str,
        callee: str,
        bridge_to: str,
        carrier: str | None = None,
        customer: str | None = None,
    ) -> LiveCall:
        """Originate on this worker (its Call-IDs steer its calls' SIP back to it)."""
        return await self.local.originate(
            caller=caller, callee=callee, bridge_to=bridge_to, carrier=carrier, customer=customer
        )

    async def hangup(self, call_id: str, customer: str | None = None) -> bool:
        """End the call on the worker that holds it: call ids steer like Call-IDs
        (:func:`sbc.b2bua.call.new_call_ref`), so the hash names the holder. False when it
        answered that it has no such call; :class:`CallControlUnavailable` when it did not answer
        (the call may well be there)."""
        holder = worker_for_call_id(call_id, self.info.count)
        if holder == self.info.index:
            return await self.local.hangup(call_id, customer)
        results, missing = await self.client.gather("hangup", [holder], call_id=call_id, customer=customer)
        if any(result is True for result in results.values()):
            return True
        if missing:
            workers = ", ".join(str(i) for i in sorted(missing))
            raise CallControlUnavailable(
                f"call not found on the workers that answered; worker(s) {workers} did not answer",
                sorted(missing),
            )
        return False


class WorkerOps:
    """``/metrics``, ``/healthz`` and ``/readyz`` for the whole group, served by one worker.

    ``app`` is this worker's :class:`sbc.app.SbcApp` (its readiness and, unless ``exposition`` is
    given, its metrics); ``client`` asks the others.
    """

    def __init__(self, app: Any, client: ControlClient, *, exposition: Any = None) -> None:
        self.app = app
        self.client = client
        self.info: WorkerInfo = client.info
        self.exposition = exposition if exposition is not None else exposition_for(app)
        self.merger = ExpositionMerger()
        self._instance = f"worker-{self.info.index}"  # this process never restarts under itself
        self._scrape = asyncio.Lock()

    async def metrics_text(self) -> tuple[Any, list[int]]:
        """The merged exposition (a collector for prometheus_client's encoders) and the workers
        missing from it."""
        async with self._scrape:  # the merger's counter history: one scrape at a time
            own = generate_latest(self.exposition).decode()
            results, missing = await self.client.gather("metrics")
            answers: dict[int, tuple[str, str | None]] = {self.info.index: (own, self._instance)}
            for index, result in results.items():
                if isinstance(result, dict) and isinstance(result.get("text"), str):
                    instance = result.get("instance")
                    answers[index] = (result["text"], instance if isinstance(instance, str) else None)
                else:
                    missing[index] = "malformed answer"
            # Parsing is pure Python and holds the GIL either way; in a thread the loop still
            # gets its turns (every 5 ms switch interval) instead of one stall per scrape.
            merged = await asyncio.to_thread(self.merger.merge, answers, self.info.count)
            return merged, sorted(missing)

    async def pings(self) -> tuple[dict[int, Any], dict[int, str]]:
        """Every other worker's ping answer, and why the missing ones are missing."""
        return await self.client.gather("ping")

    async def checks(self) -> dict[str, str | None]:
        """This worker's readiness checks plus one ``worker_<i>`` check per other worker."""
        checks = dict(readiness(self.app))
        results, missing = await self.pings()
        for index in self.client.others:
            name = f"worker_{index}"
            if index in missing:
                checks[name] = f"not answering: {missing[index]}"
                continue
            theirs = results[index].get("checks") if isinstance(results[index], dict) else None
            if not isinstance(theirs, dict):
                checks[name] = "not answering: malformed answer"
                continue
            failing = [f"{k}: {v}" for k, v in sorted(theirs.items()) if v is not None]
            checks[name] = "; ".join(failing) if failing else None
        return checks

    def router(self, path: str = "/") -> Router:
        """The three routes, as :func:`sbc.api.ops.ops_router` gives them for one process."""

        @get("/metrics", opt=EXCLUDE_FROM_AUTH, summary="Prometheus metrics",
             description="Text exposition (OpenMetrics when the Accept header asks for it) of every "
             "worker, merged; sbc_worker_up says which answered.")  # fmt: skip
        async def metrics(request: Request) -> Response[bytes]:
            encoder, content_type = choose_encoder(request.headers.get("accept", ""))
            merged, _missing = await self.metrics_text()
            return Response(
                content=encoder(merged),
                media_type=content_type.split(";", 1)[0],
                headers={"content-type": content_type},
                status_code=HTTP_200_OK,
            )

        @get("/healthz", opt=EXCLUDE_FROM_AUTH, summary="Liveness",
             description="200 while this process answers; the body lists the workers that answer a ping.")  # fmt: skip
        async def healthz() -> dict[str, Any]:
            results, missing = await self.pings()
            answering = sorted([self.info.index, *results])
            return {
                "status": "alive",
                "workers": {"count": self.info.count, "answering": answering, "missing": sorted(missing)},
            }

        @get("/readyz", opt=EXCLUDE_FROM_AUTH, summary="Readiness",
             description="200 when this worker is ready and every other worker answers and is ready; "
             "else 503 naming what is not ready (worker_<i> for another worker).")  # fmt: skip
        async def readyz() -> Response[dict[str, Any]]:
            body = _json_checks(await self.checks())
            code = HTTP_200_OK if body["status"] == "ready" else HTTP_503_SERVICE_UNAVAILABLE
            return Response(content=body, status_code=code, headers={"Cache-Control": "no-store"})

        return Router(path=path, route_handlers=[metrics, healthz, readyz], tags=["ops"])


def worker_api_parts(app: Any, info: WorkerInfo, local: CallControl) -> tuple[WorkerCallControl, Router]:
    """What :meth:`sbc.app.SbcApp._build_api` uses instead of the single-process call control
    and ops router when ``app`` is worker ``info`` of a group: the fan-out call control around
    ``local`` and the group's ops routes."""
    client = ControlClient(info)
    return WorkerCallControl(local, client), WorkerOps(app, client).router()
