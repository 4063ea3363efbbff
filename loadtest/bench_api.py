"""REST API throughput and latency on a real port: one JSON line per run.

``python -m loadtest api [--numbers N] [--cdrs N] [--concurrency C] [--seconds S]`` fills a
SQLite store (N numbers: +14155550000 upward, every other one assigned to one of 10 customers;
N CDRs spread over a week, between those customers and numbers), starts the API in a child
process (uvicorn on uvloop, the same :class:`sbc.api.ops.HttpServer` that ``sbc run`` uses, one
process, the store on the same disk) and drives each endpoint in turn for S seconds with C
keep-alive connections from a minimal HTTP/1.1 client (this process, on uvloop), then prints::

    {"bench":"api","numbers":..,"cdrs":..,"concurrency":..,"seconds":..,
     "endpoints":{"number_lookup":{"requests":..,"errors":..,"rps":..,"p50_ms":..,"p99_ms":..},..}}

Endpoints: ``number_lookup`` GET /v1/numbers/{random number} (admin key); ``number_search``
GET /v1/numbers/available?prefix=<random 7 digits>&limit=20; ``cdr_list`` GET /v1/cdrs?limit=100
(newest page); ``cdr_by_number`` GET /v1/cdrs?number=<random>&limit=100; ``cdr_customer``
GET /v1/cdrs?limit=100 with a customer's key (auth cache and tenant filter). Latency is measured
by the client from send to full body, so it includes the client's own scheduling: on this 2-core
machine client and server share the CPU, and the figures are a floor of what the API does, not
a ceiling. Everything runs on 127.0.0.1 and the child is always ended.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

REPO = Path(__file__).resolve().parents[1]
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
CUSTOMERS = 10
FIRST_NUMBER = 14155550000
#: How long the child may take to open the store and bind its port.
SERVER_START_TIMEOUT_S = 30.0
#: Per-request timeout: a request slower than this counts as an error, not a latency.
REQUEST_TIMEOUT_S = 10.0
#: Warm-up requests per endpoint before timing (connections opened, caches filled).
WARMUP_REQUESTS = 50


async def fill(db: Path, numbers: int, cdrs: int) -> str:
    """Create the store and its data; return a customer's API key (customer c0)."""
    from sbc.api.auth import generate_key, hash_key
    from sbc.store.cdr import CdrRecord
    from sbc.store.schema import ApiKeyRow, CustomerRow, NumberRow, TrunkRow
    from sbc.store.store import Store

    store = await Store.open(f"sqlite:///{db}")
    key = generate_key()
    try:
        async with store.provisioning() as session:
            customers = [CustomerRow(name=f"c{i}") for i in range(CUSTOMERS)]
            session.add_all(customers)
            await session.flush()
            trunks = [TrunkRow(customer_id=c.id, name="pbx", allowed_cidrs=[]) for c in customers]
            session.add_all(trunks)
            await session.flush()
            rows = []
            for i in range(numbers):
                owner = (i // 2) % CUSTOMERS
                assigned = i % 2 == 0
                rows.append(
                    {
                        "e164": f"+{FIRST_NUMBER + i}",
                        "customer_id": customers[owner].id if assigned else None,
                        "trunk_id": trunks[owner].id if assigned else None,
                    }
                )
            await session.execute(insert(NumberRow), rows)
            session.add(
                ApiKeyRow(
                    name="bench",
                    customer_id=customers[0].id,
                    key_sha256=hash_key(key),
                    created_at=datetime.now(UTC),
                )
            )
        start = datetime(2026, 1, 1, tzinfo=UTC)
        rng = random.Random(1)
        batch: list[CdrRecord] = []
        for i in range(cdrs):
            setup = start + timedelta(seconds=i * 7 * 86400 / max(cdrs, 1))
            answered = rng.random() < 0.7
            batch.append(
                CdrRecord(
                    call_id=f"bench-{i}@127.0.0.1",
                    direction="inbound" if i % 3 else "outbound",
                    caller=f"+1212555{rng.randrange(10000):04d}",
                    callee=f"+{FIRST_NUMBER + rng.randrange(max(numbers, 1))}",
                    customer=f"c{i % CUSTOMERS}",
                    carrier="telco",
                    trunk="pbx",
                    setup_time=setup,
                    answer_time=setup + timedelta(seconds=3) if answered else None,
                    end_time=setup + timedelta(seconds=63),
                    disposition="answered" if answered else "no_answer",
                    sip_code=200 if answered else 480,
                    media={"a": {"mos": 4.2}},
                )
            )
            if len(batch) == 1000:
                await store.write_cdrs(batch)
                batch = []
        await store.write_cdrs(batch)
    finally:
        await store.close()
    return key


async def serve(db: str) -> None:
    """The child: the API on 127.0.0.1:<any port>; prints the URL, serves until SIGTERM."""
    from sbc.api.app import create_api
    from sbc.api.ops import HttpServer
    from sbc.store.store import Store

    store = await Store.open(f"sqlite:///{db}")
    server = HttpServer(create_api(store, admin_key=ADMIN_KEY))
    host, port = await server.start("127.0.0.1:0")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"http://{host}:{port}", flush=True)
    await stop.wait()
    await server.stop()
    await store.close()


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


class Connection:
    """A minimal HTTP/1.1 keep-alive client connection (GET only, Content-Length bodies).

    httpx costs the client about as much CPU per request as the API costs the server; on a
    2-core machine that halves what the server can show. This client costs a few percent.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        host, _, port = base_url.removeprefix("http://").partition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, f"{host}:{port}")

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        """Send one GET and read the whole response; returns (status, body)."""
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}", *(f"{k}: {v}" for k, v in headers.items())]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, _, rest = head.partition(b"\r\n")
        length = 0
        for line in rest.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await self.reader.readexactly(length) if length else b""
        return int(status_line.split()[1]), body

    def close(self) -> None:
        self.writer.close()


async def drive(
    base_url: str,
    make: Callable[[random.Random], tuple[str, dict[str, str]]],
    concurrency: int,
    seconds: float,
) -> dict[str, Any]:
    """Run ``concurrency`` connections for ``seconds``; each sends the requests ``make`` builds."""
    latencies: list[float] = []
    errors = 0
    connections = [await Connection.open(base_url) for _ in range(concurrency)]
    rng = random.Random(7)
    for i in range(WARMUP_REQUESTS):
        await connections[i % concurrency].get(*make(rng))
    deadline = time.perf_counter() + seconds

    async def worker(conn: Connection, seed: int) -> None:
        nonlocal errors
        local = random.Random(seed)
        while time.perf_counter() < deadline:
            path, headers = make(local)
            t0 = time.perf_counter()
            try:
                status, _ = await asyncio.wait_for(conn.get(path, headers), REQUEST_TIMEOUT_S)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                errors += 1
                return
            if status == 200:
                latencies.append(time.perf_counter() - t0)
            else:
                errors += 1

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c, i) for i, c in enumerate(connections)))
    finally:
        for conn in connections:
            conn.close()
    elapsed = time.perf_counter() - t0
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else 0.0,
    }


async def run_client(
    base_url: str, customer_key: str, numbers: int, concurrency: int, seconds: float
) -> dict[str, Any]:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    customer = {"Authorization": f"Bearer {customer_key}"}

    def number(rng: random.Random) -> str:
        return f"+{FIRST_NUMBER + rng.randrange(numbers)}"

    endpoints: dict[str, Callable[[random.Random], tuple[str, dict[str, str]]]] = {
        "number_lookup": lambda r: (f"/v1/numbers/{number(r)}", admin),
        "number_search": lambda r: (f"/v1/numbers/available?prefix={number(r)[1:8]}&limit=20", admin),
        "cdr_list": lambda r: ("/v1/cdrs?limit=100", admin),
        "cdr_by_number": lambda r: (f"/v1/cdrs?number=%2B{number(r)[1:]}&limit=100", admin),
        "cdr_customer": lambda r: ("/v1/cdrs?limit=100", customer),
    }
    return {name: await drive(base_url, make, concurrency, seconds) for name, make in endpoints.items()}


def start_server(db: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.bench_api", "--serve", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    line = proc.stdout.readline().strip()
    if not line.startswith("http://") or time.monotonic() > deadline:
        proc.kill()
        raise RuntimeError(f"API server did not start: {line!r}")
    return proc, line


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(numbers: int, cdrs: int, concurrency: int, seconds: float, workdir: str | None) -> dict[str, Any]:
    import uvloop

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        db = Path(tmp) / "bench.db"
        t0 = time.perf_counter()
        key = uvloop.run(fill(db, numbers, cdrs))
        fill_s = time.perf_counter() - t0
        proc, base_url = start_server(db)
        try:
            endpoints = uvloop.run(run_client(base_url, key, numbers, concurrency, seconds))
        finally:
            stop_server(proc)
    return {
        "bench": "api",
        "numbers": numbers,
        "cdrs": cdrs,
        "concurrency": concurrency,
        "seconds": seconds,
        "fill_s": round(fill_s, 2),
        "cpus": os.cpu_count(),
        "endpoints": endpoints,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--numbers", type=int, default=10_000, help="numbers in the store")
    p.add_argument("--cdrs", type=int, default=20_000, help="CDRs in the store")
    p.add_argument("--concurrency", type=int, default=16, help="concurrent connections")
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per endpoint")
    p.add_argument("--workdir", help="directory for the temporary store")
    p.add_argument("--serve", metavar="DB", help=argparse.SUPPRESS)  # the child process
    a = p.parse_args(argv)
    if a.serve:
        import uvloop

        uvloop.run(serve(a.serve))
        return 0
    if a.numbers < 1 or a.cdrs < 0 or a.concurrency < 1 or a.seconds <= 0:
        p.error("--numbers and --concurrency must be >= 1, --cdrs >= 0, --seconds > 0")
    print(json.dumps(run(a.numbers, a.cdrs, a.concurrency, a.seconds, a.workdir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
