"""Two ``sbc run`` nodes on one PostgreSQL and one Redis enforce one shared ``max_calls``.

The carrier (SIPp at 127.0.0.12) calls a DID through node A (127.0.0.10) and node B (127.0.0.11);
both deliver to the PBX (SIPp at 127.0.0.13). The carrier has ``max_calls: 2``, provisioned once
with ``sbc provision --db <PostgreSQL>``; each node alone would admit two calls, the cluster must
admit two in total. Needs the services of ``scripts/services.sh`` and SIPp.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sbc.store import Store
from tests.pg_fixtures import requires_pg, requires_redis
from tests.sbcproc import REPO, SbcProcess, start_sbc
from tests.sipp import SIPP, SippProcess, run_sipp, start_sipp, start_uas

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is installed by scripts/test.sh"),
    requires_pg,
    requires_redis,
]

NODE_A = "127.0.0.10"
NODE_B = "127.0.0.11"
CARRIER = "127.0.0.12"
PBX = "127.0.0.13"
NOBODY_GW = "127.0.0.14"
DID = "+14155550100"
#: The shared limit under test: small, so the test holds few calls.
MAX_CALLS = 2
#: How long the held calls last: long enough for the refused and admitted calls in between
#: (each SIPp run takes well under a second on loopback), short enough to keep the test quick.
HOLD_MS = 6000
#: Longest wait for the PBX to see an ACK (the call answered end to end).
ANSWER_TIMEOUT_S = 5.0


def provision_yaml(pbx_port: int) -> str:
    return f"""carriers:
  - name: telco
    gateways: [{{host: {NOBODY_GW}, port: 5060, transport: udp}}]
    inbound_cidrs: [{CARRIER}/32]
    max_calls: {MAX_CALLS}
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


def start_node(tmp_path: Path, host: str, rtp_ports: str, db: str, redis: str, prefix: str) -> SbcProcess:
    workdir = tmp_path / host
    workdir.mkdir()
    return start_sbc(
        workdir,
        host=host,
        extra_args=["--db", db, "--redis", redis, "--rtp-ip", host, "--rtp-ports", rtp_ports],
        env={"SBC_REDIS_PREFIX": prefix},
    )


def wait_acks(pbx: SippProcess, n: int) -> None:
    deadline = time.monotonic() + ANSWER_TIMEOUT_S
    while time.monotonic() < deadline and len(pbx.received("ACK")) < n:
        time.sleep(0.05)
    assert len(pbx.received("ACK")) >= n, f"the PBX saw {len(pbx.received('ACK'))} answered calls, wanted {n}"


def read_cdrs(db: str) -> list:
    async def read() -> list:
        store = await Store.open(db, create=False)
        try:
            return list(reversed(await store.list_cdrs(limit=100)))
        finally:
            await store.close()

    return asyncio.run(read())


def target(node: SbcProcess) -> str:
    return f"{node.host}:{node.port}"


def test_two_nodes_share_one_max_calls(tmp_path: Path, pg_url: str, redis_url: str) -> None:
    prefix = f"cl{uuid.uuid4().hex[:10]}"
    nodes: list[SbcProcess] = []
    with start_uas("uas_answer", PBX, calls=50, timeout_s=60, workdir=tmp_path / "pbx") as pbx:
        (tmp_path / "provision.yaml").write_text(provision_yaml(pbx.local_port))
        done = subprocess.run(
            [sys.executable, "-m", "sbc", "provision", str(tmp_path / "provision.yaml"), "--db", pg_url],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        try:
            nodes.append(start_node(tmp_path, NODE_A, "42000-42999", pg_url, redis_url, prefix))
            nodes.append(start_node(tmp_path, NODE_B, "43000-43999", pg_url, redis_url, prefix))
            a, b = nodes
            # One call held through A, one through B: below the shared limit, both answered.
            held_a = start_sipp("uac_call", target(a), local_ip=CARRIER, service=DID, hold_ms=HOLD_MS,
                                timeout_s=30, workdir=tmp_path / "held_a")  # fmt: skip
            with held_a:
                wait_acks(pbx, 1)
                held_b = start_sipp("uac_call", target(b), local_ip=CARRIER, service=DID, hold_ms=HOLD_MS,
                                    timeout_s=30, workdir=tmp_path / "held_b")  # fmt: skip
                with held_b:
                    wait_acks(pbx, 2)
                    # The cluster holds MAX_CALLS: a third call is refused on either node.
                    over_b = run_sipp("uac_expect_503", target(b), local_ip=CARRIER, service=DID,
                                      workdir=tmp_path / "over_b")  # fmt: skip
                    over_a = run_sipp("uac_expect_503", target(a), local_ip=CARRIER, service=DID,
                                      workdir=tmp_path / "over_a")  # fmt: skip
                    held_b_result = held_b.wait(30)
                held_a_result = held_a.wait(30)
            # The held calls have ended: B admits again (A's release reached it through Redis).
            again_b = run_sipp("uac_call", target(b), local_ip=CARRIER, service=DID, workdir=tmp_path / "again_b")
        finally:
            for node in nodes:
                node.stop()
    logs = "\n".join(node.log() for node in nodes)
    assert held_a_result.returncode == 0, held_a_result.explain() + logs
    assert held_b_result.returncode == 0, held_b_result.explain()
    for over in (over_b, over_a):
        assert over.returncode == 0, over.explain() + logs
        refusal = next(m for m in over.received() if m.status == 503)
        assert "limit reached" in refusal.first_line, refusal.first_line
    assert again_b.returncode == 0, again_b.explain() + logs
    assert logs.count("cluster: node") == 2, logs
    # Both nodes wrote their CDRs into the one PostgreSQL database.
    codes = sorted(row.sip_code for row in read_cdrs(pg_url))
    assert codes == [200, 200, 200, 503, 503], codes
