"""The API inside a real ``sbc run``: served on --api-listen under uvloop beside the SIP stack,
guarded by a generated admin key, and its writes reaching the routing of new calls live."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sbc.config import load_settings
from tests.sbcproc import SbcProcess, free_port, start_sbc, udp_exchange, wait_for

CARRIER = "127.0.0.2"  # the carrier's source address (inbound_cidrs)
DID = "+14155550100"
#: A relay port range of this file's own (other files use 41000+ and 47200+).
RTP_PORTS = "47400-47463"



def healthz(api: str) -> int | None:
    try:
        return httpx.get(f"{api}/healthz", timeout=1.0).status_code
    except httpx.HTTPError:
        return None


def provisioning_version(api: str) -> float | None:
    r = httpx.get(f"{api}/metrics", timeout=5.0)
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            if sample.name == "sbc_provisioning_version":
                return sample.value
    return None


def invite(sbc: SbcProcess, n: int) -> list[bytes]:
    message = (
        f"INVITE sip:{DID}@{sbc.host}:{sbc.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CARRIER}:5060;branch=z9hG4bKapi{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:+12125550199@{CARRIER}>;tag=api{n}\r\n"
        f"To: <sip:{DID}@{sbc.host}>\r\n"
        f"Call-ID: api-live-{n}@{CARRIER}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:+12125550199@{CARRIER}:5060>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return udp_exchange(sbc.host, sbc.port, message, timeout=1.0, src=CARRIER)


@pytest.fixture
def sbc_with_api(tmp_path: Path):  # type: ignore[no-untyped-def]
    api_port = free_port()
    sbc = start_sbc(
        tmp_path,
        extra_args=["--api-listen", f"127.0.0.1:{api_port}", "--rtp-ports", RTP_PORTS],
        env={"SBC_PROVISION_POLL_INTERVAL": "0.1"},
    )
    try:
        yield sbc, f"http://127.0.0.1:{api_port}"
    finally:
        assert sbc.stop() == 0, sbc.log()


def test_api_writes_reach_new_calls_without_restart(sbc_with_api) -> None:  # type: ignore[no-untyped-def]
    sbc, api = sbc_with_api
    assert wait_for(lambda: healthz(api) == 200), sbc.log()
    match = re.search(r"admin API key for this run: (\S+)", sbc.log())
    assert match, sbc.log()
    headers = {"Authorization": f"Bearer {match.group(1)}"}
    with httpx.Client(base_url=api, headers=headers, timeout=10) as client:
        assert client.get("/v1/customers", headers={"Authorization": "Bearer wrong"}).status_code == 401
        steps = [
            (
                "/v1/carriers",
                {"name": "telco", "inbound_cidrs": [f"{CARRIER}/32"], "gateways": [{"host": "127.0.0.4"}]},
            ),
            ("/v1/customers", {"name": "acme"}),
            (
                "/v1/trunks",
                {
                    "customer": "acme",
                    "name": "pbx",
                    "targets": [{"uri": f"sip:127.0.0.3:{free_port('127.0.0.3')}"}],
                },
            ),
            ("/v1/numbers", {"numbers": [DID]}),
        ]
        for path, body in steps:
            r = client.post(path, json=body)
            assert r.status_code == 201, r.text
        assert wait_for(lambda: provisioning_version(api) == len(steps)), sbc.log()
        # in the inventory, not assigned: the SBC answers 404
        assert any(b" 404 " in d.split(b"\r\n")[0] for d in invite(sbc, 1)), sbc.log()
        r = client.post(f"/v1/numbers/{DID}/purchase", json={"customer": "acme", "trunk": "pbx"})
        assert r.status_code == 200, r.text
        assert wait_for(lambda: provisioning_version(api) == len(steps) + 1), sbc.log()
        answers = [d.split(b"\r\n")[0] for d in invite(sbc, 2)]
        assert any(b" 100 " in a for a in answers) and not any(b" 404 " in a for a in answers), answers
        calls = client.get("/v1/calls")
        assert calls.status_code in (200, 503)  # 503 until the B2BUA implements CallControl
        carrier = client.get("/v1/carriers").json()["items"][0]
        assert carrier["gateways"][0]["health"] is None  # not probed (probe_interval_s 0)


def test_admin_key_setting_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SBC_API_ADMIN_KEY", "k" * 32)
    assert load_settings().api_admin_key == "k" * 32
    monkeypatch.setenv("SBC_API_ADMIN_KEY", "short")
    with pytest.raises(Exception, match="api_admin_key") as info:
        load_settings()
    assert "short" not in str(info.value)
