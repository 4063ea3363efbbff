"""``sbc run --workers 2`` end to end: SIPp calls through two worker processes sharing one port.

The kernel steers each SIP datagram to the worker that owns its Call-ID; a message on a TCP
connection that another worker accepted is handed over the bus, and its answer goes back over
that connection. Every test checks that both workers held calls (by the CDRs' Call-IDs, with
the steering hash), so a mode where one worker quietly does everything cannot pass.
Addresses and the provision file are those of ``tests/test_e2e_calls.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sbc.transport.steering import steering_available, worker_for_call_id
from tests.sbcproc import free_port, start_sbc, udp_exchange, wait_for
from tests.sipp import SIPP, run_sipp, start_sipp, start_uas
from tests.test_e2e_calls import (
    CARRIER,
    DID,
    GW1,
    PBX,
    provision,
    sbc_target,
    start_provisioned,
    stop_and_read,
)

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is installed by scripts/test.sh"),
    pytest.mark.skipif(not steering_available(), reason="SIP steering needs clang and libbpf at build time"),
    pytest.mark.skipif(os.geteuid() != 0, reason="loading the steering program needs CAP_BPF"),
]

WORKERS = ["--workers", "2"]


def _answered_on_both_workers(rows: list, calls: int) -> None:
    assert len(rows) == calls
    assert {r.disposition for r in rows} == {"answered"}
    owners = {worker_for_call_id(r.call_id, 2) for r in rows}
    assert owners == {0, 1}, f"all calls on worker(s) {owners}"


def _calls_through(sbc, pbx, calls: int, transport: str = "u1") -> None:
    """``calls`` short calls from the carrier through ``sbc`` to ``pbx``; both SIPps succeed."""
    uac = run_sipp("uac_call", sbc_target(sbc), local_ip=CARRIER, service=DID, calls=calls, rate=40,
                   hold_ms=100, transport=transport, timeout_s=20, workdir=sbc.log_path.parent)  # fmt: skip
    pbx_result = pbx.wait(10)
    assert uac.returncode == 0, uac.explain() + sbc.log()[-3000:]
    assert pbx_result.returncode == 0, pbx_result.explain()


def _workers(sbc) -> list[psutil.Process]:
    return psutil.Process(sbc.proc.pid).children()


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_calls_from_one_carrier_socket_are_shared_by_both_workers(tmp_path, transport) -> None:
    """UDP: the steering program spreads one carrier's calls by Call-ID. TCP: one connection,
    accepted by one worker, carries every call; the other worker's calls are handed to it and
    its answers come back over the same connection."""
    calls = 24
    with start_uas("uas_answer", PBX, calls=calls, workdir=tmp_path) as pbx:
        sbc = start_provisioned(tmp_path, provision([(GW1, 5060)], pbx.local_port), extra_args=WORKERS)
        try:
            _calls_through(sbc, pbx, calls, transport)
        finally:
            rows = stop_and_read(sbc, tmp_path)
    _answered_on_both_workers(rows, calls)
    assert "Traceback" not in sbc.log()


def test_each_worker_opens_its_own_tcp_connection_to_a_tcp_pbx(tmp_path) -> None:
    """B-legs over TCP: a worker's outbound connection answers that worker's calls only."""
    calls = 16
    with start_uas("uas_answer", PBX, calls=calls, transport="t1", workdir=tmp_path) as pbx:
        yaml_text = provision([(GW1, 5060)], pbx.local_port).replace(
            f'uri: "sip:{PBX}:{pbx.local_port}"', f'uri: "sip:{PBX}:{pbx.local_port};transport=tcp"'
        )
        sbc = start_provisioned(tmp_path, yaml_text, extra_args=WORKERS)
        seen: set[tuple[int, int]] = set()  # (worker pid, local port) of connections to the PBX
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.05):
                for w in _workers(sbc):
                    with contextlib.suppress(psutil.Error):
                        seen.update((w.pid, c.laddr.port) for c in w.net_connections("tcp")
                                    if c.raddr and c.raddr.port == pbx.local_port)  # fmt: skip

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            uac = run_sipp("uac_call", sbc_target(sbc), local_ip=CARRIER, service=DID, calls=calls, rate=40,
                           hold_ms=300, timeout_s=20, workdir=tmp_path)  # fmt: skip
            pbx_result = pbx.wait(10)
        finally:
            done.set()
            watcher.join()
            rows = stop_and_read(sbc, tmp_path)
    assert uac.returncode == 0, uac.explain() + sbc.log()[-3000:]
    assert pbx_result.returncode == 0, pbx_result.explain()
    _answered_on_both_workers(rows, calls)
    assert len({pid for pid, _ in seen}) == 2, seen  # each worker had its own connection


def test_a_worker_that_dies_is_restarted_and_takes_calls_again(tmp_path) -> None:
    calls = 12
    with start_uas("uas_answer", PBX, calls=calls, workdir=tmp_path) as pbx:
        sbc = start_provisioned(tmp_path, provision([(GW1, 5060)], pbx.local_port), extra_args=WORKERS)
        try:
            before = wait_for(lambda: len(_workers(sbc)) == 2 and _workers(sbc))
            assert before, sbc.log()
            victim = before[1].pid
            os.kill(victim, signal.SIGKILL)

            def restarted() -> set[int] | None:
                pids = {p.pid for p in _workers(sbc)}
                return pids if len(pids) == 2 and victim not in pids else None

            assert wait_for(restarted), sbc.log()
            time.sleep(2.0)  # the new worker loads provisioning and binds its bus socket
            _calls_through(sbc, pbx, calls)
        finally:
            rows = stop_and_read(sbc, tmp_path)
    _answered_on_both_workers(rows, calls)
    assert "restarting" in sbc.log()


def test_sigterm_stops_every_worker(tmp_path) -> None:
    sbc = start_provisioned(tmp_path, provision([(GW1, 5060)], 5999), extra_args=WORKERS)
    workers = wait_for(lambda: len(_workers(sbc)) == 2 and _workers(sbc))
    assert workers, sbc.log()
    assert sbc.stop() == 0, sbc.log()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in workers)


def test_the_api_of_worker_0_shows_hangs_up_and_counts_the_calls_of_both_workers(tmp_path) -> None:
    """Calls held on both workers: ``GET /v1/calls`` lists all of them, ``DELETE`` ends one held
    by the other worker (BYE to both sides), ``/metrics`` counts every worker's calls once, and
    ``/readyz`` is ready with every worker answering."""
    calls = 8
    api_port = free_port("127.0.0.1")
    key = "e2e-admin-key-" + "w" * 24
    with start_uas("uas_answer", PBX, calls=calls, workdir=tmp_path) as pbx:
        sbc = start_provisioned(tmp_path, provision([(GW1, 5060)], pbx.local_port),
                                env={"SBC_API_ADMIN_KEY": key},
                                extra_args=[*WORKERS, "--api-listen", f"127.0.0.1:{api_port}"])  # fmt: skip
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers={"Authorization": f"Bearer {key}"},
                           timeout=10)  # fmt: skip
        try:

            def ready() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return api.get("/readyz").status_code == 200
                return False

            assert wait_for(ready, 20), sbc.log()[-3000:]  # worker 0 builds the API last
            uac = start_sipp("uac_call", sbc_target(sbc), local_ip=CARRIER, service=DID, calls=calls, rate=40,
                             hold_ms=6000, timeout_s=30, workdir=tmp_path)  # fmt: skip
            with uac:
                live = wait_for(lambda: len(page := api.get("/v1/calls").json()["items"]) == calls and page)
                assert live, api.get("/v1/calls").text
                owners = {worker_for_call_id(c["id"], 2) for c in live}
                assert owners == {0, 1}
                families = {f.name: f for f in text_string_to_metric_families(api.get("/metrics").text)}
                active = families["sbc_active_calls"].samples
                assert sum(x.value for x in active) == calls, active  # each worker's calls, once
                assert {x.labels["worker"]: x.value for x in families["sbc_worker_up"].samples} == {
                    "0": 1,
                    "1": 1,
                }
                victim = next(c["id"] for c in live if worker_for_call_id(c["id"], 2) == 1)
                assert api.delete(f"/v1/calls/{victim}").status_code == 204
                assert wait_for(lambda: len(api.get("/v1/calls").json()["items"]) == calls - 1)
                uac_result = uac.wait()
            pbx_result = pbx.wait(10)
        finally:
            api.close()
            rows = stop_and_read(sbc, tmp_path)
    # The one hung up by the API failed in the caller's scenario (a BYE where it waited to send one).
    assert uac_result.stats["SuccessfulCall(C)"] == calls - 1, uac_result.explain()
    assert pbx_result.returncode == 0 or pbx_result.stats.get("SuccessfulCall(C)", 0) >= calls - 1
    assert len(rows) == calls and {worker_for_call_id(r.call_id, 2) for r in rows} == {0, 1}
    assert sum(r.hangup_by == "api" for r in rows) == 1, [r.hangup_by for r in rows]


def _prefix_for(*owners: int) -> str:
    """A SIPp ``-cid_str`` prefix whose calls 1, 2, ... steer to ``owners`` in turn."""
    return next(
        p
        for p in (f"lim{k}" for k in range(10_000))
        if all(worker_for_call_id(f"{p}-{n}@{CARRIER}", 2) == w for n, w in enumerate(owners, 1))
    )


def test_a_carrier_max_calls_holds_across_both_workers(tmp_path) -> None:
    """max_calls 2 with one call up on each worker: a third call is refused whichever worker it
    reaches (each worker alone holds one call, so only the shared count refuses it)."""
    with start_uas("uas_answer", PBX, calls=2, workdir=tmp_path) as pbx:
        yaml_text = provision([(GW1, 5060)], pbx.local_port, carrier_extra="    max_calls: 2\n")
        sbc = start_provisioned(tmp_path, yaml_text, extra_args=WORKERS)
        try:
            held = start_sipp("uac_call", sbc_target(sbc), local_ip=CARRIER, service=DID, calls=2, rate=20,
                              hold_ms=5000, extra=["-cid_str", f"{_prefix_for(0, 1)}-%u@%s"],
                              workdir=tmp_path / "held")  # fmt: skip
            with held:
                assert wait_for(lambda: len(pbx.received("ACK")) == 2, 5), "the two calls were not answered"
                time.sleep(0.3)  # a few push periods: each worker has heard of the other's call
                over = [
                    run_sipp("uac_expect_503", sbc_target(sbc), local_ip=CARRIER, service=DID,
                             extra=["-cid_str", f"{_prefix_for(w)}-%u@%s"], workdir=tmp_path / f"over{w}")
                    for w in (0, 1)
                ]  # fmt: skip
                held_result = held.wait(15)
        finally:
            rows = stop_and_read(sbc, tmp_path)
    assert [o.returncode for o in over] == [0, 0], [o.explain() for o in over]
    assert held_result.returncode == 0, held_result.explain()
    assert sorted(r.sip_code for r in rows) == [200, 200, 503, 503]
    assert {worker_for_call_id(r.call_id, 2) for r in rows if r.sip_code == 503} == {0, 1}


def test_two_workers_start_on_a_fresh_store_and_both_answer(tmp_path) -> None:
    """No provisioning first: the supervisor migrates a new SQLite file and both workers open
    it at once (they raced for its first row once). OPTIONS steered to each worker is answered."""
    sbc = start_sbc(tmp_path, extra_args=WORKERS)
    try:
        for owner in (0, 1):
            call_id = next(
                c for c in (f"fresh-{k}" for k in range(1000)) if worker_for_call_id(c, 2) == owner
            )
            options = (
                f"OPTIONS sip:{sbc.host}:{sbc.port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{call_id}\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: {call_id}\r\n"
                "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode()
            answers = wait_for(lambda o=options: udp_exchange(sbc.host, sbc.port, o), 10)
            assert answers and answers[0].startswith(b"SIP/2.0 200"), sbc.log()[-3000:]
    finally:
        assert sbc.stop() == 0, sbc.log()
    assert "failed to start" not in sbc.log() and "Traceback" not in sbc.log()
