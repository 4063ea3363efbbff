"""The REST API driving real calls: SIPp peers, a real ``sbc run`` with ``--api-listen``.

1. Carrier, customer, trunk, number and route are created through the API of a running SBC
   that started with an empty store; without a restart, a SIPp carrier's call reaches the SIPp
   PBX by the DID, and the PBX's call reaches the SIPp gateway by the route. Both CDRs are then
   read back through the API (JSON and CSV).
2. ``POST /v1/calls`` originates: the SBC calls the callee at a SIPp gateway (least-cost route),
   and when it answers calls the customer's PBX trunk and bridges the two. ``GET /v1/calls``
   shows both legs; ``DELETE /v1/calls/{id}`` sends BYE to both; the CDR says who hung up.

Addresses: SBC 127.0.0.1, carrier 127.0.0.2, PBX 127.0.0.3, gateway 127.0.0.4.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.sbcproc import SbcProcess, free_port, start_sbc, wait_for
from tests.sipp import SIPP, run_sipp, start_uas

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is installed by scripts/test.sh"),
]

CARRIER = "127.0.0.2"
PBX = "127.0.0.3"
GW = "127.0.0.4"
DID = "+14155550100"
CALLER = "+12125550199"
CALLEE_OUT = "+442071234567"
ADMIN_KEY = "e2e-admin-key-" + "k" * 24
#: A relay port range of this file's own (other files use 41000+, 47200+ and 47400+).
RTP_PORTS = "47600-47663"



@pytest.fixture
def sbc_api(tmp_path: Path) -> Iterator[tuple[SbcProcess, httpx.Client]]:
    """An SBC on an empty store with its API; the client carries the admin key."""
    api_port = free_port()
    sbc = start_sbc(
        tmp_path,
        extra_args=["--api-listen", f"127.0.0.1:{api_port}", "--rtp-ports", RTP_PORTS],
        env={"SBC_API_ADMIN_KEY": ADMIN_KEY, "SBC_PROVISION_POLL_INTERVAL": "0.1"},
    )
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    client = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", headers=headers, timeout=10)
    try:
        assert wait_for(lambda: _up(client)), sbc.log()
        yield sbc, client
    finally:
        client.close()
        assert sbc.stop() == 0, sbc.log()


def _up(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def post(client: httpx.Client, path: str, body: dict, status: int = 201) -> dict:
    r = client.post(path, json=body)
    assert r.status_code == status, (path, r.status_code, r.text)
    return r.json()


def provision_through_api(client: httpx.Client, pbx_port: int, gw_port: int) -> None:
    """Carrier (trusted at CARRIER, one gateway), customer, PBX trunk, DID bought for the
    trunk, and the route +44 through the carrier: everything a call needs, over HTTP."""
    post(client, "/v1/carriers", {
        "name": "telco", "inbound_cidrs": [f"{CARRIER}/32"],
        "gateways": [{"host": GW, "port": gw_port, "transport": "udp"}],
    })  # fmt: skip
    post(client, "/v1/customers", {"name": "acme"})
    post(client, "/v1/trunks", {
        "customer": "acme", "name": "pbx", "allowed_cidrs": [f"{PBX}/32"],
        "targets": [{"uri": f"sip:{PBX}:{pbx_port}"}],
    })  # fmt: skip
    post(client, "/v1/numbers", {"numbers": [DID]})
    post(client, f"/v1/numbers/{DID}/purchase", {"customer": "acme", "trunk": "pbx"}, status=200)
    post(client, "/v1/routes", {"prefix": "44", "carriers": [{"name": "telco"}]})


def cdrs_when(client: httpx.Client, count: int, **params: str) -> list[dict]:
    """The CDRs (newest first) once ``count`` of them match (the SBC writes them in batches)."""
    found: list[dict] = []

    def enough() -> bool:
        found[:] = client.get("/v1/cdrs", params=params).json()["items"]
        return len(found) >= count

    assert wait_for(enough), found
    return found


def test_calls_route_by_what_the_api_provisioned_without_restart(tmp_path: Path, sbc_api) -> None:  # type: ignore[no-untyped-def]
    sbc, client = sbc_api
    target = f"{sbc.host}:{sbc.port}"
    with start_uas("uas_answer", PBX, calls=1, workdir=tmp_path / "pbx") as pbx, \
         start_uas("uas_answer", GW, calls=1, workdir=tmp_path / "gw") as gw:  # fmt: skip
        # Before provisioning the carrier is a stranger: 403 (no trunk uses digest yet).
        stranger = run_sipp("uac_expect_403", target, local_ip=CARRIER, service=DID, workdir=tmp_path / "before")
        assert stranger.returncode == 0, stranger.explain() + sbc.log()
        provision_through_api(client, pbx.local_port, gw.local_port)
        # The SBC polls the store's version; the next call must route by the new tables.
        inbound = outbound = None
        for attempt in range(50):
            inbound = run_sipp("uac_call", target, local_ip=CARRIER, service=DID, hold_ms=100,
                               workdir=tmp_path / f"in{attempt}", timeout_s=10)  # fmt: skip
            if inbound.returncode == 0:
                break
            time.sleep(0.1)  # refused with 403 until the change is picked up (< 1 s)
        assert inbound is not None and inbound.returncode == 0, inbound.explain() + sbc.log()
        outbound = run_sipp("uac_call", target, local_ip=PBX, service=CALLEE_OUT, hold_ms=100,
                            workdir=tmp_path / "out")  # fmt: skip
        pbx_result, gw_result = pbx.wait(10), gw.wait(10)
    assert outbound.returncode == 0, outbound.explain() + sbc.log()
    assert pbx_result.returncode == 0, pbx_result.explain()
    assert gw_result.returncode == 0, gw_result.explain()
    assert DID in pbx_result.received("INVITE")[0].first_line
    assert CALLEE_OUT in gw_result.received("INVITE")[0].first_line

    answered = cdrs_when(client, 2, disposition="answered")
    by_direction = {c["direction"]: c for c in answered}
    assert by_direction["inbound"]["callee"] == DID and by_direction["inbound"]["trunk"] == "pbx"
    assert by_direction["outbound"]["carrier"] == "telco" and by_direction["outbound"]["customer"] == "acme"
    # The number filter and the CSV export see the same calls.
    # An attempt made while the SBC had only part of the provisioning (carrier known, number not yet
    # assigned) is refused with a CDR of its own; the answered one is the call that routed.
    items = client.get("/v1/cdrs", params={"number": DID}).json()["items"]
    assert [c["direction"] for c in items if c["disposition"] == "answered"] == ["inbound"]
    csv = client.get("/v1/cdrs.csv", params={"disposition": "answered"})
    assert csv.status_code == 200 and csv.text.count("\n") == 3, csv.text  # header + 2 rows


def test_originate_through_the_api_then_hang_up(tmp_path: Path, sbc_api) -> None:  # type: ignore[no-untyped-def]
    sbc, client = sbc_api
    with start_uas("uas_answer", PBX, calls=1, workdir=tmp_path / "pbx") as pbx, \
         start_uas("uas_answer", GW, calls=1, workdir=tmp_path / "gw") as gw:  # fmt: skip
        provision_through_api(client, pbx.local_port, gw.local_port)
        body = {"caller": CALLER, "callee": CALLEE_OUT, "bridge_to": "trunk:acme/pbx"}
        # The provisioning change reaches the engine within a poll; until then: no route (503).
        created: dict = {}

        def originate() -> bool:
            r = client.post("/v1/calls", json=body)
            if r.status_code == 201:
                created.update(r.json())
            return r.status_code == 201

        assert wait_for(originate), sbc.log()
        call_id = created["id"]
        assert created["direction"] == "originated" and created["callee"] == CALLEE_OUT

        def bridged() -> dict | None:
            r = client.get(f"/v1/calls/{call_id}")
            assert r.status_code == 200, r.text
            call = r.json()
            legs = call["legs"]
            return call if len(legs) == 2 and all(leg["state"] == "confirmed" for leg in legs) else None

        call = wait_for(bridged)
        assert call, client.get(f"/v1/calls/{call_id}").text + sbc.log()
        assert call["state"] == "confirmed" and call["carrier"] == "telco"
        assert call["answered_at"] is not None
        peers = sorted(leg["peer"].split(":")[0] for leg in call["legs"])
        assert peers == [PBX, GW]
        assert [c["id"] for c in client.get("/v1/calls").json()["items"]] == [call_id]

        r = client.delete(f"/v1/calls/{call_id}")
        assert r.status_code == 204, r.text
        # Both SIPp peers get the BYE and answer it: their scenarios end successfully.
        gw_result, pbx_result = gw.wait(10), pbx.wait(10)
    assert gw_result.returncode == 0, gw_result.explain() + sbc.log()
    assert pbx_result.returncode == 0, pbx_result.explain() + sbc.log()
    assert CALLEE_OUT in gw_result.received("INVITE")[0].first_line
    # The PBX is called from the callee's number: the party it is being connected to.
    assert CALLEE_OUT in pbx_result.received("INVITE")[0].headers("From")[0]
    assert client.get(f"/v1/calls/{call_id}").status_code == 404
    assert client.delete(f"/v1/calls/{call_id}").status_code == 404
    [cdr] = cdrs_when(client, 1, disposition="answered")
    assert (cdr["direction"], cdr["hangup_by"], cdr["carrier"]) == ("originated", "api", "telco")
    assert cdr["customer"] == "acme" and cdr["callee"] == CALLEE_OUT
