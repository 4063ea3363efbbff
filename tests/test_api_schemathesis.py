"""Property-based run of the API against its own OpenAPI document: no input may cause a 5xx.

The API is served for real (uvicorn on uvloop, in a child process, on a loopback port, over a
real store with a small provisioned world), and schemathesis generates requests for every
operation from ``/schema/openapi.json``, with the admin key so the handlers run rather than the
auth check. Bounded: :data:`EXAMPLES` per operation keeps the whole run under a minute on the
project's 2-core machine. A 503 is what /v1/calls answers without call control, and is what the
fake call control answers for refused originations; every other 5xx fails the test.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from sbc.api.app import create_api
from sbc.api.ops import HttpServer
from sbc.b2bua.control import OriginateError
from sbc.store.store import Store
from tests.api_support import ADMIN, ADMIN_KEY, FakeCalls, FakeHealth, bearer

REPO = Path(__file__).resolve().parents[1]

#: Generated requests per operation (about 35 operations).
EXAMPLES = 20
#: Schemathesis phases run: the schema's examples, fuzzing (EXAMPLES cases per operation) and
#: coverage (boundary values, missing/wrong-typed fields, unsupported methods: the cases most
#: likely to find a 500).
PHASES = os.environ.get("SBC_SCHEMATHESIS_PHASES", "examples,fuzzing,coverage").split(",")
#: Statuses that are answers, not failures: 503 is call control's "cannot now" (see module doc).
ALLOWED_5XX = frozenset({503})


class ServedApi:
    """The API served by a child process (``python -m tests.test_api_schemathesis DB``) on a
    loopback port: generating requests and serving them then use both cores, as a real client
    and server would."""

    def __init__(self, db: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.log_path = db.parent / "server.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.test_api_schemathesis", str(db)],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                cwd=REPO,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()  # the child prints its address once serving
        if not line.startswith("http://"):
            self.proc.kill()
            raise RuntimeError(f"API did not start: {line!r}")
        self.base_url = line

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _serve(db: str) -> None:
    """The child: store, fake call control (one live call, one refused callee), uvicorn on uvloop."""
    store = await Store.open(f"sqlite:///{db}")
    calls = FakeCalls()
    calls.add()
    calls.refuse["+442079460000"] = OriginateError(503, "no route")
    server = HttpServer(create_api(store, admin_key=ADMIN_KEY, calls=calls, health=FakeHealth()))
    host, port = await server.start("127.0.0.1:0")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"http://{host}:{port}", flush=True)
    await stop.wait()
    await server.stop()
    await store.close()


def provision(base_url: str) -> None:
    """A small world so generated ids and names sometimes hit real rows."""
    with httpx.Client(base_url=base_url, headers=ADMIN, timeout=10) as client:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            r = client.post(path, json=body)
            assert r.status_code == 201, r.text
            return r.json()

        post(
            "/v1/carriers",
            {"name": "telco", "gateways": [{"host": "192.0.2.10"}], "inbound_cidrs": ["192.0.2.0/28"]},
        )
        post("/v1/customers", {"name": "acme"})
        post("/v1/trunks", {"customer": "acme", "name": "pbx", "targets": [{"uri": "sip:198.51.100.7"}]})
        post("/v1/applications", {"customer": "acme", "name": "ivr", "flow": [{"action": "say"}]})
        post("/v1/routes", {"prefix": "1", "carriers": [{"name": "telco"}]})
        post("/v1/numbers", {"range": {"first": "+14155550100", "last": "+14155550199"}})
        r = client.post("/v1/numbers/+14155550100/purchase", json={"customer": "acme", "trunk": "pbx"})
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    api = ServedApi(tmp_path_factory.mktemp("api") / "api.db")
    try:
        provision(api.base_url)
        yield api
    finally:
        api.close()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """One keep-alive session for every generated request (not a connection per request)."""
    with requests.Session() as session:
        session.trust_env = False  # no proxy lookup from the environment on every request
        yield session


@pytest.fixture(scope="module")
def api_schema(served: ServedApi) -> Any:
    loaded = schemathesis.openapi.from_url(f"{served.base_url}/schema/openapi.json")
    loaded.config.phases.update(phases=PHASES)
    return loaded


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same requests every run: a failure here is a bug, not bad luck
)
def test_no_server_errors(case: Any, served: ServedApi, http: requests.Session) -> None:
    response = case.call(base_url=served.base_url, session=http, headers=bearer(ADMIN_KEY), timeout=30)
    assert response.status_code < 500 or response.status_code in ALLOWED_5XX, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}\n"
        f"server log: {served.log_path.read_text(errors='replace')[-2000:]}"
    )


def test_every_operation_requires_a_key(served: ServedApi) -> None:
    """No operation of the document is reachable without a key (the docs themselves are)."""
    doc = httpx.get(f"{served.base_url}/schema/openapi.json", timeout=10).json()
    with httpx.Client(base_url=served.base_url, timeout=10) as client:
        for path, operations in doc["paths"].items():
            concrete = path.replace("{e164}", "+14155550100").replace("{call_id}", "x")
            for part in (
                "carrier_id",
                "customer_id",
                "trunk_id",
                "route_id",
                "application_id",
                "key_id",
                "cdr_id",
            ):
                concrete = concrete.replace("{" + part + "}", "1")
            for method in operations:
                r = client.request(method.upper(), concrete)
                assert r.status_code == 401, (method, path, r.status_code)


if __name__ == "__main__":
    import uvloop

    uvloop.run(_serve(sys.argv[1]))
