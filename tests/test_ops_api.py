"""The ops routes: /metrics, /healthz, /readyz, in their own app, mounted in another, and in `sbc run`."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from litestar import Litestar, get
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from sbc.api.ops import HttpServer, build_ops_app, ops_router, readiness
from sbc.overload import OverloadGuard
from tests.b2bua_harness import Net, establish_inbound
from tests.sbcproc import REPO, SbcProcess, free_port, start_sbc, udp_exchange, wait_for
from tests.sipp import SIPP, run_sipp, start_uas


def ready_app(**kw: Any) -> SimpleNamespace:
    """A stand-in for SbcApp in the ready state (every readiness input); ``kw`` overrides."""
    base: dict[str, Any] = {
        "settings": SimpleNamespace(listeners=["udp", "tcp"], overload_protection=True),
        "store": object(),
        "udp": {("127.0.0.1", 5060): object()},
        "tcp": SimpleNamespace(locals=[("127.0.0.1", 5060)]),
        "provisioning_version": 3,
        "stopping": False,
        "overload": OverloadGuard(),
        "b2bua": None,
        "relay": None,
    }
    base.update(kw)
    return SimpleNamespace(**base)


def overloaded_guard() -> OverloadGuard:
    guard = OverloadGuard(ewma_alpha=1.0)
    guard.record_queue_delay(0.5, 1.0)  # a queue of 500 ms counts at once (a stall would not)
    guard.record_loop_lag(0.0, 1.0)
    assert guard.overloaded
    return guard


@pytest.fixture
def app() -> SimpleNamespace:
    return ready_app()


@pytest.fixture
def client(app: SimpleNamespace) -> Iterator[TestClient]:
    with TestClient(build_ops_app(app)) as c:
        yield c


def test_healthz_is_200(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "alive"}


def test_readyz_200_when_everything_is_up(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["failing"] == []
    assert set(body["checks"]) == {"shutdown", "store", "sip_listeners", "provisioning", "overload"}
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("change", "failing", "why"),
    [
        ({"store": None}, "store", "store not open"),
        ({"udp": {}}, "sip_listeners", "1 of 2 SIP listeners bound"),
        ({"tcp": None}, "sip_listeners", "1 of 2 SIP listeners bound"),
        ({"provisioning_version": -1}, "provisioning", "provisioning not loaded"),
        ({"stopping": True}, "shutdown", "shutting down"),
        ({"overload": overloaded_guard()}, "overload", "overloaded: shedding new calls"),
    ],
)
def test_readyz_flips_to_503_naming_what_is_not_ready(
    app: SimpleNamespace, client: TestClient, change: dict, failing: str, why: str
) -> None:
    saved = {k: getattr(app, k) for k in change}
    for k, v in change.items():
        setattr(app, k, v)
    r = client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not ready"
    assert body["failing"] == [failing]
    assert body["checks"][failing] == why
    for k, v in saved.items():  # and back
        setattr(app, k, v)
    assert client.get("/readyz").status_code == 200


def test_overload_does_not_unready_when_protection_is_off() -> None:
    app = ready_app(overload=overloaded_guard())
    app.settings.overload_protection = False
    assert readiness(app)["overload"] is None


def test_readiness_of_an_empty_object_fails_every_input_check() -> None:
    checks = readiness(object())
    assert {k for k, v in checks.items() if v} == {"store", "sip_listeners", "provisioning"}


def test_metrics_content_type_and_body(app: SimpleNamespace) -> None:
    net = Net()
    establish_inbound(net)
    app.b2bua = net.b2bua
    with TestClient(build_ops_app(app)) as client:
        r = client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        [sample] = [s for s in families["sbc_active_calls"].samples if s.labels["state"] == "confirmed"]
        assert sample.labels["direction"] == "inbound" and sample.value == 1
        assert "sbc_sip_responses_sent" in families and "process_cpu_seconds" in families
        om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert om.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        assert om.text.endswith("# EOF\n")


class DenyAll(AbstractAuthenticationMiddleware):
    """An API-key middleware that knows no key: only routes excluded from auth get through."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        raise NotAuthorizedException("no key")


@get("/v1/secret", sync_to_thread=False)
def secret() -> str:
    return "secret"


def test_router_mounts_in_a_host_app_and_skips_its_authentication(app: SimpleNamespace) -> None:
    host = Litestar(
        route_handlers=[secret, ops_router(app)],
        middleware=[DefineMiddleware(DenyAll)],
        logging_config=None,
    )
    with TestClient(host) as client:
        assert client.get("/v1/secret").status_code == 401
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.get("/metrics").status_code == 200
    assert host.openapi_schema.paths["/readyz"].get.tags == ["ops"]  # documented with the REST API


async def test_http_server_serves_and_stops(app: SimpleNamespace) -> None:
    server = HttpServer(build_ops_app(app))
    host, port = await server.start("127.0.0.1:0")
    async with httpx.AsyncClient() as c:
        r = await c.get(f"http://{host}:{port}/readyz")
    assert r.status_code == 200
    busy = HttpServer(build_ops_app(app))
    with pytest.raises(OSError, match="cannot bind API address"):
        await busy.start(f"127.0.0.1:{port}")
    await server.stop()
    await server.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as c:
            await c.get(f"http://{host}:{port}/healthz")
    await asyncio.sleep(0)


# -- a real `sbc run` --------------------------------------------------------------------------

CARRIER = "127.0.0.2"
PBX = "127.0.0.3"
DID = "+14155550100"


def provision_file(tmp_path: Path, pbx_port: int) -> Path:
    path = tmp_path / "provision.yaml"
    path.write_text(
        f"""carriers:
  - name: telco
    gateways: [{{host: 127.0.0.4, port: 5060, transport: udp}}]
    inbound_cidrs: [{CARRIER}/32]
customers:
  - name: acme
    trunks:
      - name: pbx
        allowed_cidrs: [{PBX}/32]
        targets: [{{uri: "sip:{PBX}:{pbx_port}"}}]
numbers:
  - {{e164: "{DID}", customer: acme, trunk: pbx}}
routes: []
"""
    )
    return path


def scrape(api: str) -> dict[tuple[str, frozenset], float]:
    r = httpx.get(f"http://{api}/metrics", timeout=5.0)
    assert r.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(r.text)
        for s in f.samples
    }



#: A relay port range of this file's own (the relay tests use 41000 and up).
RTP_PORTS = "47200-47263"


def start_with_api(tmp_path: Path, api_port: int) -> SbcProcess:
    return start_sbc(tmp_path, extra_args=["--api-listen", f"127.0.0.1:{api_port}", "--rtp-ports", RTP_PORTS])


def test_sbc_run_serves_ops_routes(tmp_path: Path) -> None:
    api_port = free_port()
    api = f"127.0.0.1:{api_port}"
    sbc = start_with_api(tmp_path, api_port)
    try:
        assert wait_for(lambda: _get(api, "/healthz") == 200)
        assert _get(api, "/readyz") == 200
        options = (
            f"OPTIONS sip:{sbc.host}:{sbc.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKops1\r\nMax-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:{sbc.host}>\r\nCall-ID: ops-1\r\n"
            f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        assert udp_exchange(sbc.host, sbc.port, options)[0].startswith(b"SIP/2.0 200")
        s = scrape(api)
        assert (
            s[("sbc_sip_messages_received_total", frozenset({("transport", "udp"), ("kind", "request")}))]
            >= 1
        )
        assert s[("sbc_sip_responses_sent_total", frozenset({("code", "200")}))] >= 1
        assert s[("sbc_provisioning_version", frozenset())] == 0
        assert ("sbc_rtp_relay_ports", frozenset({("state", "total")})) in s
        assert s[("sbc_thread_cpu_seconds_total", frozenset({("thread", "loop")}))] > 0
        assert s[("sbc_event_loop_lag_seconds_count", frozenset())] >= 1
    finally:
        assert sbc.stop() == 0, sbc.log()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{api}/healthz", timeout=1.0)


@pytest.mark.sipp
@pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is installed by scripts/test.sh")
def test_sbc_run_counts_a_real_call(tmp_path: Path) -> None:
    """SIPp carrier -> sbc run -> SIPp PBX: after the call the scrape shows it by carrier and trunk,
    with its duration, and no call is left active."""
    api_port = free_port()
    api = f"127.0.0.1:{api_port}"
    with start_uas("uas_answer", PBX, calls=1, workdir=tmp_path) as pbx:
        done = subprocess.run(
            [sys.executable, "-m", "sbc", "provision", str(provision_file(tmp_path, pbx.local_port)),
             "--db", f"sqlite:///{tmp_path / 'sbc.db'}"],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        sbc = start_with_api(tmp_path, api_port)
        try:
            uac = run_sipp("uac_call", f"{sbc.host}:{sbc.port}", local_ip=CARRIER, service=DID, hold_ms=300,
                           workdir=tmp_path)  # fmt: skip
            assert uac.returncode == 0, uac.explain()
            pbx.wait(10)
            calls = ("sbc_carrier_calls_total", frozenset(
                {("direction", "inbound"), ("carrier", "telco"), ("disposition", "answered")}))  # fmt: skip
            s = wait_for(lambda: (lambda x: x if x.get(calls) else None)(scrape(api)))
            assert s and s[calls] == 1
            trunk = frozenset(
                {
                    ("direction", "inbound"),
                    ("customer", "acme"),
                    ("trunk", "pbx"),
                    ("disposition", "answered"),
                }
            )
            assert s[("sbc_trunk_calls_total", trunk)] == 1
            assert s[("sbc_call_duration_seconds_count", frozenset({("direction", "inbound")}))] == 1
            assert s[("sbc_call_duration_seconds_sum", frozenset({("direction", "inbound")}))] >= 0.25
            assert s[("sbc_call_attempts_total", frozenset({("direction", "inbound")}))] == 1
            assert s[("sbc_sip_responses_received_total", frozenset({("code", "200")}))] >= 2  # INVITE, BYE
            active = [v for (n, _), v in s.items() if n == "sbc_active_calls"]
            assert active and sum(active) == 0
        finally:
            assert sbc.stop() == 0, sbc.log()


def _get(api: str, path: str) -> int | None:
    try:
        return httpx.get(f"http://{api}{path}", timeout=1.0).status_code
    except httpx.HTTPError:
        return None


def test_busy_api_port_stops_sbc_run_at_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:  # the SIP listeners bind first: start_sbc may see them before the process gives up
            sbc = start_with_api(tmp_path, port)
        except RuntimeError as e:
            assert "cannot bind API address" in str(e)
            return
        assert sbc.proc.wait(10) == 1
        assert "cannot bind API address" in sbc.log()
