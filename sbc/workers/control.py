"""Requests between the workers of one ``sbc run --workers N``: live calls, hang-up, metrics, readiness.

Only worker 0 serves the REST API and ``/metrics``, but the calls live in every worker. Each worker
runs a :class:`ControlServer` on an abstract Unix stream socket, ``\\0sbc-<group>-<index>-ctl``
(abstract, so nothing is left on the file system after a crash; the bus, :mod:`sbc.workers.bus`,
is socket pairs the supervisor makes), and worker 0's API asks the others through a :class:`ControlClient`
(:mod:`sbc.workers.api`). The bus stays for what must never wait (SIP messages); this is for
questions that want an answer.

**Wire format.** Each message is a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
A request is ``{"id": ID, "op": OP, "args": {...}}``; its answer is ``{"id": ID, "result": ...}``
or ``{"id": ID, "error": "why"}``. Length-prefixed rather than newline-delimited: one worker's
metrics exposition is megabytes with a thousand carriers, and the reader needs no line limit. The
client opens one connection per request (connecting to an abstract socket costs microseconds, and a
restarted worker is found again with no reconnection logic); the server answers any number of
requests on one connection, in order.

=========== ============================ ==========================================================
op          args                         result
=========== ============================ ==========================================================
live_calls  customer (str or null)       the worker's live calls, each a LiveCall as a JSON object
hangup      call_id (str), customer      true when this worker held the call and ended it
metrics     -                            {"text": its Prometheus text exposition, "instance": ID}
ping        -                            {"checks": its readiness checks (:mod:`sbc.readiness`),
                                         "instance": ID, "index": its worker index}
=========== ============================ ==========================================================

``instance`` is new each time a worker process starts (pid and start time): worker 0 uses it to keep
the merged counters continuous across a worker's restart (:mod:`sbc.workers.merge`).

**Timeouts.** Every request is given :data:`CALL_TIMEOUT_S` from connect to answer. A worker that
does not answer in time (restarting, or its loop stalled under load) raises
:class:`WorkerUnavailable`; :meth:`ControlClient.gather` returns what the others answered and which
workers were missing, so an API request is never held up by one worker. A worker going missing,
and answering again, is logged once each way.

**Trust.** An abstract socket has no file permissions: any process in the network namespace may
connect. The server serves only peers running as its own user or root (``SO_PEERCRED``); the
supervisor starts every worker as one user.

**Bad input.** A request that is not JSON, not an object, names an unknown op or carries bad
arguments gets an error answer and the connection stays usable; a length over :data:`MAX_MESSAGE`
gets an error answer and the connection is closed (the stream cannot be resynchronised). Nothing a
peer sends raises out of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client.exposition import generate_latest

from ..b2bua.control import CallControl, LiveCall, LiveLeg
from ..metrics import exposition_for
from ..readiness import readiness
from . import WorkerInfo

log = logging.getLogger(__name__)

#: How long one request may take, connect to answer. Under the 1 s default timeout of Kubernetes
#: probes (``/readyz`` asks every worker) and far above a healthy worker's answer (well under 10 ms;
#: a metrics exposition of a few thousand series takes tens of ms), with room for loop lags up to
#: the 100 ms at which the overload guard starts shedding.
CALL_TIMEOUT_S = 0.5
#: Largest message either side accepts: a worker's exposition at the metrics module's label caps
#: (1,000 carriers, 2,000 trunks, about 12 series each) is some MB; a live-call list of 10,000
#: calls about 10 MB.
MAX_MESSAGE = 64 * 1024 * 1024
#: A server connection with no request (or a request body not arriving) for this long is closed:
#: a stuck or hostile peer cannot hold connections open.
IDLE_TIMEOUT_S = 10.0
#: Longest string argument accepted (call ids and customer names are far shorter).
MAX_ARG_LEN = 1024

_HEADER = struct.Struct("!I")
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def control_name(group: str, index: int) -> bytes:
    """The abstract socket address of worker ``index``'s control server in ``group``."""
    return f"\0sbc-{group}-{index}-ctl".encode()


class WorkerUnavailable(Exception):
    """The worker did not answer: nothing listening, the connection lost, or no answer in time."""


class RpcError(Exception):
    """The worker answered with an error, or with something that is not an answer."""


class BadArguments(ValueError):
    """A request's arguments are not what its op takes (answered as an error)."""


def encode(message: Any) -> bytes:
    """One frame: the length, then ``message`` as JSON. Raises ValueError (or TypeError) when it
    cannot be encoded or is over :data:`MAX_MESSAGE`."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE:
        raise ValueError(f"message of {len(body)} bytes is over the limit of {MAX_MESSAGE}")
    return _HEADER.pack(len(body)) + body


def call_to_json(call: LiveCall) -> dict[str, Any]:
    """A live call as a JSON-ready object (field names as in :class:`LiveCall`)."""
    return dataclasses.asdict(call)


def call_from_json(value: Any) -> LiveCall:
    """The :class:`LiveCall` :func:`call_to_json` made. Raises TypeError, KeyError or ValueError
    when ``value`` is not one."""
    if not isinstance(value, dict):
        raise TypeError("a live call is a JSON object")
    legs = tuple(LiveLeg(**leg) for leg in value["legs"])
    attempts = tuple(dict(a) for a in value.get("attempts") or ())
    return LiveCall(**{**value, "legs": legs, "attempts": attempts, "media": dict(value.get("media") or {})})


def _opt_str(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is not None and (not isinstance(value, str) or len(value) > MAX_ARG_LEN):
        raise BadArguments(f"{key} must be a string of at most {MAX_ARG_LEN} characters or null")
    return value


def _only(args: dict[str, Any], *keys: str) -> None:
    extra = sorted(set(args) - set(keys))
    if extra:
        raise BadArguments(f"unexpected argument(s): {', '.join(map(str, extra))}")


Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlServer:
    """This worker's answers to the others: its calls, hang-up, metrics and readiness.

    ``app`` is the worker's :class:`sbc.app.SbcApp` (readiness reads its attributes, see
    :func:`sbc.readiness.readiness`); ``calls`` defaults to the app's own call control and
    ``exposition`` to its metrics (:func:`sbc.metrics.exposition_for`); tests pass their own.
    Handlers run on the event loop, so they read the B2BUA's tables as the API does.
    """

    def __init__(
        self,
        app: Any,
        info: WorkerInfo,
        *,
        calls: CallControl | None = None,
        exposition: Any = None,
    ) -> None:
        if calls is None:
            from ..call_control import AppCallControl

            calls = AppCallControl(app)
        self.app = app
        self.info = info
        self.calls = calls
        self.exposition = exposition if exposition is not None else exposition_for(app)
        self.instance = f"{os.getpid()}-{time.time_ns()}"
        self.name = control_name(info.group, info.index)
        self.answered = 0  # requests answered with a result
        self.errors = 0  # requests answered with an error
        self.refused = 0  # connections from a peer of another user
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ops: dict[str, Handler] = {
            "live_calls": self._live_calls,
            "hangup": self._hangup,
            "metrics": self._metrics,
            "ping": self._ping,
        }

    async def start(self) -> None:
        """Bind ``\\0sbc-<group>-<index>-ctl`` and serve on the running loop. Raises OSError when
        the name is taken (another process is this worker)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.bind(self.name)
            self._server = await asyncio.start_unix_server(self._serve, sock=sock)
        except BaseException:
            sock.close()
            raise

    async def close(self) -> None:
        """Stop serving and close every connection; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), IDLE_TIMEOUT_S)

    def _trusted(self, writer: asyncio.StreamWriter) -> bool:
        sock = writer.get_extra_info("socket")
        try:
            _pid, uid, _gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
        except (OSError, AttributeError, struct.error):
            return False
        return uid in (os.geteuid(), 0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            if not self._trusted(writer):
                self.refused += 1
                log.warning("worker control: refused a connection from a process of another user")
                return
            while True:
                try:
                    header = await asyncio.wait_for(reader.readexactly(_HEADER.size), IDLE_TIMEOUT_S)
                    (size,) = _HEADER.unpack(header)
                    if size > MAX_MESSAGE:
                        self.errors += 1
                        error = f"message of {size} bytes is over the limit of {MAX_MESSAGE}"
                        writer.write(encode({"id": None, "error": error}))
                        await writer.drain()
                        return
                    body = await asyncio.wait_for(reader.readexactly(size), IDLE_TIMEOUT_S)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return  # the peer is done (or gone, or stuck)
                writer.write(await self._answer(body))
                await writer.drain()
        except ConnectionError:
            pass
        except Exception:
            log.exception("worker control: connection failed")
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, body: bytes) -> bytes:
        """The encoded answer to one request; never raises."""
        rid: Any = None
        try:
            try:
                request = json.loads(body)
            except Exception:  # ValueError, UnicodeDecodeError, RecursionError
                raise BadArguments("the request is not JSON") from None
            if not isinstance(request, dict):
                raise BadArguments("a request is a JSON object")
            rid = request.get("id")
            if isinstance(rid, bool) or not isinstance(rid, (int, str)):
                rid = None
            op, args = request.get("op"), request.get("args", {})
            handler = self._ops.get(op) if isinstance(op, str) else None
            if handler is None:
                raise BadArguments(f"unknown op {op!r}"[:200])
            if not isinstance(args, dict):
                raise BadArguments("args must be a JSON object")
            reply = encode({"id": rid, "result": await handler(args)})
        except BadArguments as e:
            self.errors += 1
            return encode({"id": rid, "error": str(e)})
        except Exception as e:
            self.errors += 1
            log.exception("worker control: request failed")
            return encode({"id": rid, "error": f"internal error: {type(e).__name__}"})
        self.answered += 1
        return reply

    async def _live_calls(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        _only(args, "customer")
        return [call_to_json(c) for c in await self.calls.live_calls(_opt_str(args, "customer"))]

    async def _hangup(self, args: dict[str, Any]) -> bool:
        _only(args, "call_id", "customer")
        call_id = _opt_str(args, "call_id")
        if call_id is None:
            raise BadArguments("call_id is required")
        return bool(await self.calls.hangup(call_id, _opt_str(args, "customer")))

    async def _metrics(self, args: dict[str, Any]) -> dict[str, Any]:
        _only(args)
        return {"text": generate_latest(self.exposition).decode(), "instance": self.instance}

    async def _ping(self, args: dict[str, Any]) -> dict[str, Any]:
        _only(args)
        return {"checks": readiness(self.app), "instance": self.instance, "index": self.info.index}


class ControlClient:
    """Asks the other workers of ``info``'s group; each request within ``timeout`` seconds."""

    def __init__(self, info: WorkerInfo, *, timeout: float = CALL_TIMEOUT_S) -> None:
        self.info = info
        self.timeout = timeout
        self._names = [control_name(info.group, i) for i in range(info.count)]
        self._ids = itertools.count(1)
        self._missing: set[int] = set()  # workers whose last answer was missing (logged once)

    @property
    def others(self) -> list[int]:
        """Every worker index but this one's."""
        return [i for i in range(self.info.count) if i != self.info.index]

    async def call(self, index: int, op: str, **args: Any) -> Any:
        """Worker ``index``'s result for ``op``. Raises :class:`WorkerUnavailable` when it did not
        answer within the timeout, :class:`RpcError` when it answered with an error."""
        try:
            return await asyncio.wait_for(self._call(index, op, args), self.timeout)
        except TimeoutError:
            raise WorkerUnavailable(f"no answer within {self.timeout:g} s") from None
        except (OSError, asyncio.IncompleteReadError) as e:
            reason = "not listening" if isinstance(e, (ConnectionRefusedError, FileNotFoundError)) else str(e)
            raise WorkerUnavailable(reason or type(e).__name__) from None

    async def _call(self, index: int, op: str, args: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, self._names[index])
            reader, writer = await asyncio.open_unix_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        try:
            rid = next(self._ids)
            writer.write(encode({"id": rid, "op": op, "args": args}))
            await writer.drain()
            (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
            if size > MAX_MESSAGE:
                raise RpcError(f"answer of {size} bytes is over the limit of {MAX_MESSAGE}")
            try:
                reply = json.loads(await reader.readexactly(size))
            except ValueError:
                raise RpcError("the answer is not JSON") from None
        finally:
            writer.close()
        if not isinstance(reply, dict) or reply.get("id") not in (rid, None):
            raise RpcError("not an answer to the request")
        if "error" in reply:
            raise RpcError(str(reply["error"]))
        if "result" not in reply:
            raise RpcError("an answer without a result")
        return reply["result"]

    async def gather(
        self, op: str, indices: Iterable[int] | None = None, **args: Any
    ) -> tuple[dict[int, Any], dict[int, str]]:
        """Ask every other worker (or those of ``indices``) at once; returns their results by
        index and, for those that did not answer or answered an error, why. Takes at most the
        timeout; never raises for a worker's failure."""
        targets = self.others if indices is None else list(indices)
        outcomes = await asyncio.gather(*(self.call(i, op, **args) for i in targets), return_exceptions=True)
        results: dict[int, Any] = {}
        missing: dict[int, str] = {}
        for index, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, (WorkerUnavailable, RpcError)):
                missing[index] = str(outcome)
            elif isinstance(outcome, BaseException):
                if isinstance(outcome, asyncio.CancelledError):
                    raise outcome
                missing[index] = f"{type(outcome).__name__}: {outcome}"
            else:
                results[index] = outcome
        self.note(op, results, missing)
        return results, missing

    def note(self, op: str, answered: Iterable[int], missing: dict[int, str]) -> None:
        """Log a worker that stops answering, and one that answers again, once each."""
        for index, why in sorted(missing.items()):
            if index not in self._missing:
                self._missing.add(index)
                log.warning("worker %d did not answer %s (%s): answering without it", index, op, why)
            else:
                log.debug("worker %d still not answering %s (%s)", index, op, why)
        for index in answered:
            if index in self._missing:
                self._missing.discard(index)
                log.info("worker %d answers again", index)
