"""Worker control RPC and worker 0's whole-SBC API (``sbc run --workers N``), without processes.

Each test runs real :class:`ControlServer`s on abstract sockets of a fresh group, on the test's
loop, around fake worker apps: a :class:`FakeCalls` call control, a registry of its own (one
process's default registry cannot play three workers) and the attributes readiness reads. A
"stalled" worker is a socket that listens and never accepts: connecting succeeds, no answer comes.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvloop
from litestar import Litestar
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sbc.api.app import create_api
from sbc.b2bua.control import CallControlUnavailable, LiveCallList
from sbc.store.store import Store
from sbc.transport.steering import worker_for_call_id
from sbc.workers import WorkerInfo
from sbc.workers.api import WorkerCallControl, WorkerOps
from sbc.workers.control import ControlClient, ControlServer, control_name
from sbc.workers.merge import ExpositionMerger, merged_families
from tests.api_support import ADMIN, ADMIN_KEY, FakeCalls
from tests.test_ops_api import ready_app as ops_ready_app

#: Short, so a stalled worker costs the tests little; the production value is CALL_TIMEOUT_S.
TIMEOUT_S = 0.2


def _steered(label: str, index: int, count: int) -> str:
    """A call id that steers to worker ``index`` of ``count``, as the B2BUA's do
    (sbc.b2bua.call.new_call_ref), readable in a failure: ``label~k``."""
    return next(f"{label}~{k}" for k in range(10_000) if worker_for_call_id(f"{label}~{k}", count) == index)


#: Call "wI-N" (worker I's N-th call) of a group of three.
ID = {f"w{i}-{n}": _steered(f"w{i}-{n}", i, 3) for i in range(3) for n in range(2)}


def ready_app(**kw: Any) -> SimpleNamespace:
    """A worker app in the ready state, as far as :func:`sbc.readiness.readiness` looks: the ops
    tests' stand-in with one UDP listener and no TCP."""
    udp_only = {"settings": SimpleNamespace(listeners=["udp"], overload_protection=True), "tcp": None}
    return ops_ready_app(**{**udp_only, **kw})


@dataclass
class Worker:
    """One fake worker: its app, calls, metrics registry and (once started) control server."""

    info: WorkerInfo
    app: SimpleNamespace = field(default_factory=ready_app)
    calls: FakeCalls = field(default_factory=FakeCalls)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    server: ControlServer | None = None

    async def start(self) -> None:
        self.server = ControlServer(self.app, self.info, calls=self.calls, exposition=self.registry)
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None


@dataclass
class Group:
    workers: list[Worker]
    stalled: list[socket.socket] = field(default_factory=list)

    def client(self, index: int = 0) -> ControlClient:
        return ControlClient(self.workers[index].info, timeout=TIMEOUT_S)

    def call_control(self) -> WorkerCallControl:
        return WorkerCallControl(self.workers[0].calls, self.client())

    def ops(self) -> WorkerOps:
        w0 = self.workers[0]
        return WorkerOps(w0.app, self.client(), exposition=w0.registry)

    async def stall(self, index: int) -> None:
        """Make worker ``index`` one that accepts connections (in the backlog) and never answers."""
        await self.workers[index].stop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(control_name(self.workers[index].info.group, index))
        sock.listen(8)
        self.stalled.append(sock)


async def start_group(n: int, *, running: int | None = None) -> Group:
    name = f"t{os.getpid()}-{secrets.token_hex(4)}"
    workers = [Worker(WorkerInfo(i, n, name)) for i in range(n)]
    for w in workers[: n if running is None else running]:
        await w.start()
    return Group(workers)


@pytest.fixture
async def group3() -> AsyncIterator[Group]:
    g = await start_group(3)
    yield g
    for w in g.workers:
        await w.stop()
    for sock in g.stalled:
        sock.close()


def add_calls(g: Group) -> dict[int, list[str]]:
    """Interleaved calls: worker i's have setup times i, i+3, ... (ids ``w<i>-<n>``)."""
    ids: dict[int, list[str]] = {}
    for i, w in enumerate(g.workers):
        for n in range(2):
            customer = "acme" if n == 0 else "globex"
            call = w.calls.add(id=ID[f"w{i}-{n}"], setup_at=1_700_000_000.0 + i + 3 * n, customer=customer)
            ids.setdefault(i, []).append(call.id)
    return ids


# -- calls ------------------------------------------------------------------------------------


async def test_live_calls_of_every_worker_merged_oldest_first(group3: Group) -> None:
    add_calls(group3)
    control = group3.call_control()
    calls = await control.live_calls()
    assert isinstance(calls, LiveCallList) and calls.missing == ()
    assert [c.id for c in calls] == [ID["w0-0"], ID["w1-0"], ID["w2-0"], ID["w0-1"], ID["w1-1"], ID["w2-1"]]
    # What crossed the socket is the same call, legs, attempts and media included.
    assert calls[1] == group3.workers[1].calls.calls[ID["w1-0"]]
    acme = await control.live_calls("acme")
    assert [c.id for c in acme] == [ID["w0-0"], ID["w1-0"], ID["w2-0"]]


async def test_hangup_ends_the_call_on_the_worker_that_holds_it(group3: Group) -> None:
    add_calls(group3)
    control = group3.call_control()
    w0, w1, w2 = (w.calls for w in group3.workers)
    assert await control.hangup(ID["w2-1"], "globex")
    assert w2.hung_up == [(ID["w2-1"], "globex")] and w1.hung_up == [] and w0.hung_up == []
    assert not await control.hangup(ID["w2-1"])  # gone now
    assert not await control.hangup(ID["w1-0"], "globex")  # acme's call: not for this customer
    assert ID["w1-0"] in w1.calls
    assert await control.hangup(ID["w0-0"])  # its own: no RPC needed
    assert w0.hung_up == [(ID["w0-0"], None)]
    originated = await control.originate(caller="+1", callee="+2", bridge_to="trunk:acme/pbx")
    assert originated.id in w0.calls  # originate runs on the API's worker


async def test_a_stalled_worker_gives_a_partial_answer_within_the_timeout(
    group3: Group, caplog: pytest.LogCaptureFixture
) -> None:
    add_calls(group3)
    await group3.stall(2)
    control = group3.call_control()
    started = time.monotonic()
    calls = await control.live_calls()
    assert time.monotonic() - started < TIMEOUT_S + 0.5
    assert [c.id for c in calls] == [ID["w0-0"], ID["w1-0"], ID["w0-1"], ID["w1-1"]] and calls.missing == (2,)
    assert "worker 2 did not answer live_calls (no answer within 0.2 s)" in caplog.text
    # A call that may be on the missing worker: not "no such call".
    with pytest.raises(CallControlUnavailable) as err:
        await control.hangup(ID["w2-0"])
    assert err.value.missing == (2,) and "worker(s) 2 did not answer" in err.value.message
    assert await control.hangup(ID["w1-1"])  # found on a worker that answered: fine
    # Logged once per outage, not per request; and once when it answers again.
    assert caplog.text.count("worker 2 did not answer") == 1


async def test_a_worker_that_is_not_running_is_missing_at_once() -> None:
    g = await start_group(2, running=1)
    try:
        started = time.monotonic()
        results, missing = await g.client().gather("ping")
        assert time.monotonic() - started < TIMEOUT_S
        assert results == {} and missing == {1: "not listening"}
    finally:
        await g.workers[0].stop()


# -- metrics ----------------------------------------------------------------------------------


def fill_metrics(w: Worker, *, calls: int, lag: float, messages: float, observations: list[float]) -> None:
    r = w.registry
    Counter("sbc_sip_messages_received_total", "m", ["transport"], registry=r).labels("udp").inc(messages)
    h = Histogram("sbc_event_loop_lag_seconds", "h", buckets=(0.01, 0.1), registry=r)
    for v in observations:
        h.observe(v)
    active = Gauge("sbc_active_calls", "a", ["direction"], registry=r)
    active.labels("inbound").set(calls)
    Gauge("sbc_event_loop_lag_ewma_seconds", "lag", registry=r).set(lag)
    Gauge("sbc_build_info", "b", ["version"], registry=r).labels("1.2").set(1)


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    family = name.removesuffix("_total").removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
    for s in families[family].samples:
        if s.name == name and s.labels == labels:
            return s.value
    raise KeyError((name, labels))


async def test_metrics_merge_sums_counts_and_keeps_per_process_gauges_per_worker(group3: Group) -> None:
    w0, w1, w2 = group3.workers
    fill_metrics(w0, calls=2, lag=0.004, messages=10, observations=[0.005])
    fill_metrics(w1, calls=3, lag=0.2, messages=5, observations=[0.05, 0.5])
    fill_metrics(w2, calls=0, lag=0.001, messages=1, observations=[])
    ops = group3.ops()
    merged, missing = await ops.metrics_text()
    assert missing == []
    f = merged_families(merged)
    assert sample(f, "sbc_sip_messages_received_total", transport="udp") == 16
    buckets = [sample(f, "sbc_event_loop_lag_seconds_bucket", le=le) for le in ("0.01", "0.1", "+Inf")]
    assert buckets == [1, 2, 3]
    assert sample(f, "sbc_event_loop_lag_seconds_count") == 3
    assert sample(f, "sbc_event_loop_lag_seconds_sum") == pytest.approx(0.555)
    assert sample(f, "sbc_active_calls", direction="inbound") == 5  # counts things: summed
    lags = {s.labels["worker"]: s.value for s in f["sbc_event_loop_lag_ewma_seconds"].samples}
    assert lags == {"0": 0.004, "1": 0.2, "2": 0.001}  # per process: one per worker
    assert [(s.labels, s.value) for s in f["sbc_build_info"].samples] == [({"version": "1.2"}, 1.0)]
    assert {s.labels["worker"]: s.value for s in f["sbc_worker_up"].samples} == {"0": 1, "1": 1, "2": 1}


async def test_merged_counters_stay_monotonic_through_a_missing_and_a_restarted_worker(group3: Group) -> None:
    w0, w1, w2 = group3.workers
    for w, n in ((w0, 10), (w1, 5), (w2, 1)):
        fill_metrics(w, calls=1, lag=0.0, messages=n, observations=[0.005])
    ops = group3.ops()
    await ops.metrics_text()
    await group3.stall(2)
    merged, missing = await ops.metrics_text()
    f = merged_families(merged)
    assert missing == [2]
    assert {s.labels["worker"]: s.value for s in f["sbc_worker_up"].samples} == {"0": 1, "1": 1, "2": 0}
    assert sample(f, "sbc_sip_messages_received_total", transport="udp") == 16  # worker 2's last count kept
    assert sample(f, "sbc_active_calls", direction="inbound") == 2  # a level is not kept stale
    assert {s.labels["worker"] for s in f["sbc_event_loop_lag_ewma_seconds"].samples} == {"0", "1"}
    # Worker 1 restarts: a new process, its counters from zero.
    await w1.stop()
    w1.registry = CollectorRegistry()
    fill_metrics(w1, calls=1, lag=0.0, messages=2, observations=[])
    await w1.start()
    f = merged_families((await ops.metrics_text())[0])
    assert sample(f, "sbc_sip_messages_received_total", transport="udp") == 10 + 5 + 2 + 1
    assert sample(f, "sbc_event_loop_lag_seconds_count") == 3  # 1 + 1 (before the restart) + 1 stale


def test_merger_restart_by_instance_and_by_a_series_going_down() -> None:
    text = "# TYPE x_total counter\nx_total {v}\n# TYPE g gauge\ng 7\n"
    merger = ExpositionMerger()

    def merged(**answers: tuple[float, str]) -> float:
        exposition = merger.merge(
            {int(k[1:]): (text.format(v=v), inst) for k, (v, inst) in answers.items()}, count=2
        )
        return sample(merged_families(exposition), "x_total")

    assert merged(w0=(1, "a"), w1=(100, "p")) == 101
    assert merged(w0=(2, "a"), w1=(3, "q")) == 105  # new instance: 100 carried + 3
    assert merged(w0=(3, "a"), w1=(1, "q")) == 107  # same instance but the series went down
    assert merged(w0=(4, "a")) == 108  # worker 1 missing: its last value stays


# -- readiness, health, the HTTP routes -------------------------------------------------------


def asgi_client(app: Litestar) -> httpx.AsyncClient:
    """A client calling ``app`` on this loop (litestar's test client runs it on a thread of its
    own, whose loop could not reach the control servers while this one waits for the answer)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sbc")


async def test_readyz_needs_every_worker_ready_and_answering(group3: Group) -> None:
    w0, w1, _w2 = group3.workers
    fill_metrics(w0, calls=1, lag=0.0, messages=1, observations=[])
    fill_metrics(w1, calls=1, lag=0.0, messages=2, observations=[])
    app = Litestar(route_handlers=[group3.ops().router()], logging_config=None, openapi_config=None)
    async with asgi_client(app) as client:
        r = await client.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json()["checks"]["worker_1"] == "ok" and r.json()["checks"]["worker_2"] == "ok"
        w1.app.provisioning_version = -1
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["failing"] == ["worker_1"]
        assert r.json()["checks"]["worker_1"] == "provisioning: provisioning not loaded"
        w1.app.provisioning_version = 4
        await group3.stall(2)
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["failing"] == ["worker_2"]
        assert r.json()["checks"]["worker_2"] == "not answering: no answer within 0.2 s"
        w0.app.stopping = True  # worker 0's own checks are there as in one process
        assert (await client.get("/readyz")).json()["failing"] == ["shutdown", "worker_2"]
        # Liveness stays 200 (the supervisor restarts workers) and says who answers.
        r = await client.get("/healthz")
        assert r.status_code == 200
        assert r.json() == {"status": "alive", "workers": {"count": 3, "answering": [0, 1], "missing": [2]}}
        r = await client.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        assert 'sbc_worker_up{worker="2"} 0.0' in r.text
        assert 'sbc_sip_messages_received_total{transport="udp"} 3.0' in r.text
        r = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
        assert r.text.endswith("# EOF\n") and 'sbc_sip_messages_received_total{transport="udp"} 3.0' in r.text


async def test_calls_api_shows_every_worker_and_names_the_missing(group3: Group, tmp_path: Path) -> None:
    add_calls(group3)
    store = await Store.open(f"sqlite:///{tmp_path / 'api.db'}")
    try:
        api = create_api(store, admin_key=ADMIN_KEY, calls=group3.call_control())
        async with asgi_client(api) as client:
            page = (await client.get("/v1/calls", headers=ADMIN)).json()
            assert len(page["items"]) == 6 and page["missing_workers"] == []
            assert (await client.get(f"/v1/calls/{ID['w2-1']}", headers=ADMIN)).json()["id"] == ID["w2-1"]
            assert (await client.delete(f"/v1/calls/{ID['w1-0']}", headers=ADMIN)).status_code == 204
            assert group3.workers[1].calls.hung_up == [(ID["w1-0"], None)]
            assert (await client.delete(f"/v1/calls/{ID['w1-0']}", headers=ADMIN)).status_code == 404
            await group3.stall(2)
            page = (await client.get("/v1/calls", headers=ADMIN)).json()
            assert [c["id"] for c in page["items"]] == [ID["w0-0"], ID["w0-1"], ID["w1-1"]]
            assert page["missing_workers"] == [2]
            r = await client.get(f"/v1/calls/{ID['w2-1']}", headers=ADMIN)
            assert r.status_code == 503 and "worker(s) 2 did not answer" in r.json()["detail"]
            assert (await client.delete(f"/v1/calls/{ID['w2-1']}", headers=ADMIN)).status_code == 503
    finally:
        await store.close()


# -- the wire ---------------------------------------------------------------------------------


async def raw_exchange(name: bytes, frames: list[bytes], expect: int | None = None) -> list[Any]:
    """Send ``frames`` on one connection; the decoded answers: ``expect`` of them, else all until
    the server closes the connection (``expect=0``: send and leave at once)."""
    reader, writer = await asyncio.open_unix_connection(sock=_connected(name))
    try:
        for frame in frames:
            writer.write(frame)
        await writer.drain()
        answers: list[Any] = []
        while expect is None or len(answers) < expect:
            try:
                header = await asyncio.wait_for(reader.readexactly(4), 2.0)
            except asyncio.IncompleteReadError:
                break
            (size,) = struct.unpack("!I", header)
            answers.append(json.loads(await reader.readexactly(size)))
        return answers
    finally:
        writer.close()


def _connected(name: bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(name)
    sock.setblocking(False)
    return sock


def frame(body: bytes | dict) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return struct.pack("!I", len(data)) + data


async def test_malformed_requests_get_error_answers_and_the_server_keeps_serving(group3: Group) -> None:
    name = control_name(group3.workers[1].info.group, 1)
    answers = await raw_exchange(
        name,
        [
            frame(b"{not json"),
            frame(b"\xff\xfe"),
            frame([1, 2]),
            frame({"id": 1, "op": "reboot"}),
            frame({"id": 2, "op": "live_calls", "args": {"customer": 5}}),
            frame({"id": 3, "op": "live_calls", "args": {"nope": 1}}),
            frame({"id": 4, "op": "hangup", "args": {}}),
            frame({"id": 5, "op": "ping", "args": []}),
            frame({"id": 6, "op": "ping"}),
        ],
        expect=9,
    )
    assert [a.get("id") for a in answers] == [None, None, None, 1, 2, 3, 4, 5, 6]
    assert all("error" in a for a in answers[:-1]) and "result" in answers[-1]
    assert answers[3]["error"] == "unknown op 'reboot'"
    # A length past the limit: an error answer, then the connection is closed.
    assert await raw_exchange(name, [struct.pack("!I", 2**31), frame({"id": 7, "op": "ping"})]) == [
        {"id": None, "error": "message of 2147483648 bytes is over the limit of 67108864"}
    ]
    # A peer that leaves mid-message costs nothing.
    assert await raw_exchange(name, [struct.pack("!I", 100) + b"{"], expect=0) == []
    results, missing = await group3.client().gather("ping")
    assert missing == {} and results[1]["index"] == 1
    assert group3.workers[1].server is not None and group3.workers[1].server.errors == 9


def test_round_trip_on_uvloop() -> None:
    """``sbc run`` runs on uvloop, whose unix-socket calls differ from asyncio's on abstract names."""

    async def main() -> Any:
        g = await start_group(2)
        try:
            return await g.client().gather("ping")
        finally:
            for w in g.workers:
                await w.stop()

    results, missing = uvloop.run(main())
    assert missing == {} and results[1]["checks"]["provisioning"] is None
