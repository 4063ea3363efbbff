"""Calls end to end: SIPp as carrier, PBX and gateways, a real ``sbc run`` in the middle.

Addresses on loopback: the SBC listens on 127.0.0.1; the carrier calls from 127.0.0.2; the
PBX (a trunk trusted by address) is 127.0.0.3; two carrier gateways are 127.0.0.4 and
127.0.0.5; a PBX that authenticates with digest calls from 127.0.0.6; 127.0.0.9 is nobody.
Every test writes its own provision file, starts its own SBC and reads the CDRs it wrote.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sbc.store import Store
from tests.dns_server import DnsServer
from tests.sbcproc import REPO, SbcProcess, start_sbc
from tests.sipp import SIPP, LoggedMessage, free_port, run_sipp, start_sipp, start_uas, topology_leaks

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is installed by scripts/test.sh"),
]

CARRIER = "127.0.0.2"
PBX = "127.0.0.3"
GW1 = "127.0.0.4"
GW2 = "127.0.0.5"
AUTH_PBX = "127.0.0.6"
STRANGER = "127.0.0.9"
DID = "+14155550100"
UNASSIGNED = "+14155550999"
CALLEE_OUT = "+442071234567"
CALLER = "+12125550199"
AUTH_USER, AUTH_PASS = "acme-pbx", "s3cret-pass"
# SBC timers shortened so failure paths finish within a test's budget.
FAST_ENV = {
    "SBC_NO_RESPONSE_TIMEOUT": "1.0",  # a silent gateway is given up after 1 s
}


def provision(gateways: list[tuple[str, int]], pbx_port: int, *, carrier_extra: str = "",
              trunk_extra: str = "", second_carrier: tuple[str, int] | None = None,
              digest_trunk: bool = True) -> str:  # fmt: skip
    """A provision file: one carrier (gateways as given) trusted at CARRIER, a customer with a
    PBX trunk (by address) and a digest trunk, DID -> PBX trunk, and the route +44 -> carrier."""
    gws = ", ".join(
        f"{{host: {h}, port: {p}, transport: udp, priority: {i}, weight: 1}}" for i, (h, p) in enumerate(gateways)
    )
    routes = "  - {prefix: '44', carriers: [{name: telco}]}\n"
    second = ""
    if second_carrier:
        h, p = second_carrier
        second = (
            "  - name: cheap\n"
            f"    gateways: [{{host: {h}, port: {p}, transport: udp}}]\n"
            "    tech_prefix: '99#'\n"
            "    strip_plus: true\n"
        )
        routes += "  - {prefix: '4420', carriers: [{name: cheap}]}\n"
    remote = (
        "      - name: remote\n"
        f"        credentials: [{{username: {AUTH_USER}, password: {AUTH_PASS}}}]\n"
        f'        targets: [{{uri: "sip:{PBX}:{pbx_port}"}}]\n'
    ) if digest_trunk else ""
    return f"""carriers:
  - name: telco
    gateways: [{gws}]
    inbound_cidrs: [{CARRIER}/32]
{carrier_extra}{second}customers:
  - name: acme
    trunks:
      - name: pbx
        allowed_cidrs: [{PBX}/32]
        targets: [{{uri: "sip:{PBX}:{pbx_port}"}}]
{trunk_extra}{remote}numbers:
  - {{e164: "{DID}", customer: acme, trunk: pbx}}
routes:
{routes}"""


def start_provisioned(
    tmp_path: Path, yaml_text: str, env: dict | None = None, extra_args: list[str] | None = None
) -> SbcProcess:
    """Provision the SBC's SQLite file from ``yaml_text`` and start ``sbc run`` on it."""
    (tmp_path / "provision.yaml").write_text(yaml_text)
    done = subprocess.run(
        [sys.executable, "-m", "sbc", "provision", str(tmp_path / "provision.yaml"),
         "--db", f"sqlite:///{tmp_path / 'sbc.db'}"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return start_sbc(tmp_path, extra_args=extra_args, env={**FAST_ENV, **(env or {})})


def cdrs(tmp_path: Path) -> list:
    """Every CDR the SBC wrote, oldest first."""

    async def read() -> list:
        store = await Store.open(f"sqlite:///{tmp_path / 'sbc.db'}", create=False)
        try:
            return list(reversed(await store.list_cdrs(limit=1000)))
        finally:
            await store.close()

    return asyncio.run(read())


def sbc_target(sbc: SbcProcess) -> str:
    return f"{sbc.host}:{sbc.port}"


def first(messages: list[LoggedMessage], method_or_status: str | int) -> LoggedMessage:
    for m in messages:
        if m.method == method_or_status or m.status == method_or_status:
            return m
    raise AssertionError(f"no {method_or_status} in {[m.first_line for m in messages]}")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def stop_and_read(sbc: SbcProcess, tmp_path: Path) -> list:
    """Stop the SBC (SIGTERM flushes the CDR queue) and return its CDRs."""
    assert sbc.stop() == 0, sbc.log()
    return cdrs(tmp_path)


# --- inbound: carrier -> SBC -> PBX by DID ------------------------------------------------------


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_inbound_did_reaches_pbx_and_hides_topology(tmp_path, transport) -> None:
    with start_uas("uas_answer", PBX, calls=1, transport=transport, workdir=tmp_path) as pbx:
        yaml_text = provision([(GW1, 5060)], pbx.local_port)
        if transport == "t1":
            yaml_text = yaml_text.replace(f'uri: "sip:{PBX}:{pbx.local_port}"', f'uri: "sip:{PBX}:{pbx.local_port};transport=tcp"')
        sbc = start_provisioned(tmp_path, yaml_text)
        try:
            uac = run_sipp("uac_call", sbc_target(sbc), local_ip=CARRIER, service=DID, hold_ms=200,
                           transport=transport, workdir=tmp_path)  # fmt: skip
            pbx_result = pbx.wait(10)
        finally:
            rows = stop_and_read(sbc, tmp_path)
    assert uac.returncode == 0, uac.explain()
    assert pbx_result.returncode == 0, pbx_result.explain()
    # The PBX saw the call addressed to the DID, from the SBC, with the caller's number.
    invite = first(pbx_result.received(), "INVITE")
    assert DID in invite.first_line
    assert CALLER in invite.headers("From")[0]
    # Topology hiding, both ways: nothing of the carrier reaches the PBX and vice versa.
    carrier_secrets = [CARRIER, first(uac.messages(), "INVITE").headers("Call-ID")[0], "SIPpTag00"]
    pbx_secrets = [PBX, first(pbx_result.received(), "INVITE").headers("Call-ID")[0], "SIPpTag01"]
    assert topology_leaks(pbx_result.received(), carrier_secrets) == []
    assert topology_leaks(uac.received(), pbx_secrets) == []
    # The SBC answered 100 Trying at once and gave the carrier its own Contact.
    assert any(m.status == 100 for m in uac.received())
    ok = first(uac.received(), 200)
    assert f"{sbc.host}:{sbc.port}" in ok.headers("Contact")[0]
    [row] = rows
    assert (row.direction, row.callee, row.customer, row.trunk, row.disposition) == (
        "inbound", DID, "acme", "pbx", "answered")
    assert row.sip_code == 200 and row.hangup_by == "caller" and row.duration_s >= 0.15
    assert row.answer_time is not None and row.end_time >= row.answer_time


def test_unassigned_number_gets_404_and_a_cdr(tmp_path) -> None:
    sbc = start_provisioned(tmp_path, provision([(GW1, 5060)], 5999))
    try:
        uac = run_sipp("uac_expect_404", sbc_target(sbc), local_ip=CARRIER, service=UNASSIGNED, workdir=tmp_path)
    finally:
        rows = stop_and_read(sbc, tmp_path)
    assert uac.returncode == 0, uac.explain()
    assert [(r.callee, r.sip_code, r.disposition) for r in rows] == [(UNASSIGNED, 404, "rejected")]


def test_unknown_source_gets_403_when_no_trunk_uses_digest(tmp_path) -> None:
    """With digest trunks provisioned a stranger is challenged (it may be one of them) and gets
    403 for bad credentials (test_outbound_wrong_password_is_refused); without any, 403 at once."""
    sbc = start_provisioned(tmp_path, provision([(GW1, 5060)], 5999, digest_trunk=False))
    try:
        uac = run_sipp("uac_expect_403", sbc_target(sbc), local_ip=STRANGER, service=DID, workdir=tmp_path)
    finally:
        sbc.stop()
    assert uac.returncode == 0, uac.explain()


def test_callee_hangs_up(tmp_path) -> None:
    with start_uas("uas_answer_bye", PBX, calls=1, hold_ms=300, workdir=tmp_path) as pbx:
        sbc = start_provisioned(tmp_path, provision([(GW1, 5060)], pbx.local_port))
        try:
            uac = run_sipp("uac_call_wait_bye", sbc_target(sbc), local_ip=CARRIER, service=DID, workdir=tmp_path)
            pbx_result = pbx.wait(10)
        finally:
            rows = stop_and_read(sbc, tmp_path)
    assert uac.returncode == 0, uac.explain()
    assert pbx_result.returncode == 0, pbx_result.explain()
    [row] = rows
    assert (row.disposition, row.hangup_by) == ("answered", "callee")


def test_cancel_before_answer(tmp_path) -> None:
    with start_uas("uas_ring_no_answer", PBX, calls=1, workdir=tmp_path) as pbx:
        sbc = start_provisioned(tmp_path, provision([(GW1, 5060)], pbx.local_port))
        try:
            uac = run_sipp("uac_cancel", sbc_target(sbc), local_ip=CARRIER, service=DID, hold_ms=300,
                           workdir=tmp_path)  # fmt: skip
            pbx_result = pbx.wait(10)
        finally:
            rows = stop_and_read(sbc, tmp_path)
    assert uac.returncode == 0, uac.explain()
    assert pbx_result.returncode == 0, pbx_result.explain()
    assert [m.method for m in pbx_result.received() if m.method] == ["INVITE", "CANCEL", "ACK"]
    [row] = rows
    assert (row.sip_code, row.disposition, row.hangup_by) == (487, "cancelled", "caller")


def test_reinvite_hold_and_resume(tmp_path) -> None:
    with start_uas("uas_answer_reinvite", PBX, calls=1, workdir=tmp_path) as pbx:
        sbc = start_provisioned(tmp_path, provision([(GW1, 5060)], pbx.local_port))
        try:
            uac = run_sipp("uac_reinvite_hold", sbc_target(sbc), local_ip=CARRIER, service=DID, hold_ms=200,
                           workdir=tmp_path)  # fmt: skip
            pbx_result = pbx.wait(10)
        finally:
            rows = stop_and_read(sbc, tmp_path)
    assert uac.returncode == 0, uac.explain()
    assert pbx_result.returncode == 0, pbx_result.explain()
    invites = [m for m in pbx_result.received() if m.method == "INVITE"]
    assert len(invites) == 3
    assert "a=sendonly" in invites[1].body and "a=sendrecv" in invites[2].body
    # The re-INVITEs are in the SBC's dialog with the PBX: one Call-ID, growing CSeq.
    assert len({m.headers("Call-ID")[0] for m in invites}) == 1
    [row] = rows
    assert row.disposition == "answered"


def test_limit_exceeded_gets_503_with_retry_after(tmp_path) -> None:
    with start_uas("uas_answer", PBX, calls=1, workdir=tmp_path) as pbx:
        extra = "    max_calls: 1\n"
        sbc = start_provisioned(tmp_path, provision([(GW1, 5060)], pbx.local_port, carrier_extra=extra))
        try:
            held = start_sipp("uac_call", sbc_target(sbc), local_ip=CARRIER, service=DID, hold_ms=2500,
                              workdir=tmp_path / "held")  # fmt: skip
            with held:
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not pbx.received("ACK"):
                    time.sleep(0.05)
                assert pbx.received("ACK"), "the first call was not answered"
                over = run_sipp("uac_expect_503", sbc_target(sbc), local_ip=CARRIER, service=DID,
                                workdir=tmp_path / "over")  # fmt: skip
                held_result = held.wait(10)
        finally:
            rows = stop_and_read(sbc, tmp_path)
    assert over.returncode == 0, over.explain()
    assert held_result.returncode == 0, held_result.explain()
    assert sorted(r.sip_code for r in rows) == [200, 503]


# --- outbound: PBX -> SBC -> carrier by least-cost route ------------------------------------------


def test_outbound_digest_auth_and_longest_prefix(tmp_path) -> None:
    with start_uas("uas_answer", GW1, calls=1, workdir=tmp_path / "gw1") as gw1, \
         start_uas("uas_answer", GW2, calls=1, workdir=tmp_path / "gw2") as gw2:  # fmt: skip
        yaml_text = provision([(GW1, gw1.local_port)], 5999, second_carrier=(GW2, gw2.local_port))
        sbc = start_provisioned(tmp_path, yaml_text)
        try:
            uac = run_sipp(
                "uac_auth_call", sbc_target(sbc), local_ip=AUTH_PBX, service=CALLEE_OUT, hold_ms=200,
                extra=["-au", AUTH_USER, "-ap", AUTH_PASS, "-auth_uri", f"{CALLEE_OUT}@{sbc_target(sbc)}"],
                workdir=tmp_path,
            )  # fmt: skip
            gw2_result = gw2.wait(10)
            gw1.stop()
        finally:
            rows = stop_and_read(sbc, tmp_path)
    assert uac.returncode == 0, uac.explain()
    assert gw2_result.returncode == 0, gw2_result.explain()
    # +4420 is longer than +44: the "cheap" carrier took the call, with its number format.
    assert not gw1.received("INVITE")
    invite = first(gw2_result.received(), "INVITE")
    assert invite.first_line.startswith("INVITE sip:99#442071234567@")
    assert topology_leaks(gw2_result.received(), [AUTH_PBX, AUTH_USER, "Authorization"]) == []
    [row] = rows
    assert (row.direction, row.customer, row.trunk, row.carrier) == ("outbound", "acme", "remote", "cheap")
    assert row.disposition == "answered"


def test_outbound_wrong_password_is_refused(tmp_path) -> None:
    sbc = start_provisioned(tmp_path, provision([(GW1, 5060)], 5999))
    try:
        uac = run_sipp(
            "uac_auth_call", sbc_target(sbc), local_ip=AUTH_PBX, service=CALLEE_OUT,
            extra=["-au", AUTH_USER, "-ap", "wrong", "-auth_uri", f"{CALLEE_OUT}@{sbc_target(sbc)}"],
            workdir=tmp_path, timeout_s=5,
        )  # fmt: skip
    finally:
        sbc.stop()
    assert uac.returncode != 0
    finals = [m.status for m in uac.received() if m.status and m.status >= 400]
    assert finals == [401, 403], finals


def test_failover_after_503_to_the_next_gateway(tmp_path) -> None:
    with start_uas("uas_503", GW1, calls=1, workdir=tmp_path / "gw1") as gw1, \
         start_uas("uas_answer", GW2, calls=1, workdir=tmp_path / "gw2") as gw2:  # fmt: skip
        sbc = start_provisioned(tmp_path, provision([(GW1, gw1.local_port), (GW2, gw2.local_port)], 5999))
        try:
            uac = run_sipp("uac_call", sbc_target(sbc), local_ip=PBX, service=CALLEE_OUT, hold_ms=100,
                           workdir=tmp_path)  # fmt: skip
            gw1_result, gw2_result = gw1.wait(10), gw2.wait(10)
        finally:
            rows = stop_and_read(sbc, tmp_path)
    assert uac.returncode == 0, uac.explain()
    assert gw1_result.returncode == 0 and gw2_result.returncode == 0
    # The caller never saw the 503.
    assert not [m for m in uac.received() if m.status == 503]
    [row] = rows
    assert [a.code for a in row.attempts] == [503, 200]
    assert row.gateway.startswith(GW2) and row.disposition == "answered"


def test_failover_when_a_gateway_never_answers(tmp_path) -> None:
    with start_uas("uas_silent", GW1, calls=1000, workdir=tmp_path / "gw1") as gw1, \
         start_uas("uas_answer", GW2, calls=1, workdir=tmp_path / "gw2") as gw2:  # fmt: skip
        sbc = start_provisioned(tmp_path, provision([(GW1, gw1.local_port), (GW2, gw2.local_port)], 5999))
        try:
            started = time.monotonic()
            uac = run_sipp("uac_call", sbc_target(sbc), local_ip=PBX, service=CALLEE_OUT, hold_ms=100,
                           workdir=tmp_path)  # fmt: skip
            elapsed = time.monotonic() - started
            gw2_result = gw2.wait(10)
            gw1.stop()
        finally:
            rows = stop_and_read(sbc, tmp_path)
    assert uac.returncode == 0, uac.explain()
    assert gw2_result.returncode == 0, gw2_result.explain()
    # The silent gateway got the INVITE; with no provisional response there is nothing to CANCEL
    # (RFC 3261 9.1), the attempt is abandoned after the no-response timeout.
    assert gw1.received("INVITE")
    assert 1.0 <= elapsed < 6.0
    [row] = rows
    assert [a.code for a in row.attempts][-1] == 200 and len(row.attempts) == 2
    assert row.attempts[0].code in (408, 0)


def test_failover_at_once_when_a_tcp_gateway_refuses_the_connection(tmp_path) -> None:
    """Gateway 1 is TCP on a port where nothing listens: the refused connection fails the attempt
    at once (RFC 3261 §17.1.4), well before the 5 s no-response timeout, and gateway 2 answers."""
    closed = free_port(GW1)
    with start_uas("uas_answer", GW2, calls=1, workdir=tmp_path / "gw2") as gw2:
        yaml_text = provision([(GW1, closed), (GW2, gw2.local_port)], 5999).replace(
            f"{{host: {GW1}, port: {closed}, transport: udp", f"{{host: {GW1}, port: {closed}, transport: tcp", 1
        )
        assert "transport: tcp" in yaml_text
        sbc = start_provisioned(tmp_path, yaml_text, env={"SBC_NO_RESPONSE_TIMEOUT": "5.0"})
        try:
            started = time.monotonic()
            uac = run_sipp("uac_call", sbc_target(sbc), local_ip=PBX, service=CALLEE_OUT, hold_ms=100,
                           workdir=tmp_path)  # fmt: skip
            elapsed = time.monotonic() - started
            gw2_result = gw2.wait(10)
        finally:
            rows = stop_and_read(sbc, tmp_path)
    assert uac.returncode == 0, uac.explain()
    assert gw2_result.returncode == 0, gw2_result.explain()
    assert elapsed < 3.0, elapsed
    [row] = rows
    assert [a.code for a in row.attempts] == [503, 200]
    assert row.attempts[0].gateway.startswith(GW1) and row.gateway.startswith(GW2)


def test_no_failover_after_486(tmp_path) -> None:
    with start_uas("uas_486", GW1, calls=1, workdir=tmp_path / "gw1") as gw1, \
         start_uas("uas_answer", GW2, calls=1, workdir=tmp_path / "gw2") as gw2:  # fmt: skip
        sbc = start_provisioned(tmp_path, provision([(GW1, gw1.local_port), (GW2, gw2.local_port)], 5999))
        try:
            uac = run_sipp("uac_expect_486", sbc_target(sbc), local_ip=PBX, service=CALLEE_OUT, workdir=tmp_path)
            gw1.wait(10)
            gw2.stop()
        finally:
            rows = stop_and_read(sbc, tmp_path)
    assert uac.returncode == 0, uac.explain()
    assert not gw2.received("INVITE")
    [row] = rows
    assert (row.sip_code, row.disposition) == (486, "busy")


def test_outbound_bye_from_the_carrier_side(tmp_path) -> None:
    with start_uas("uas_answer_bye", GW1, calls=1, hold_ms=300, workdir=tmp_path / "gw1") as gw1:
        sbc = start_provisioned(tmp_path, provision([(GW1, gw1.local_port)], 5999))
        try:
            uac = run_sipp("uac_call_wait_bye", sbc_target(sbc), local_ip=PBX, service=CALLEE_OUT, workdir=tmp_path)
            gw1_result = gw1.wait(10)
        finally:
            rows = stop_and_read(sbc, tmp_path)
    assert uac.returncode == 0, uac.explain()
    assert gw1_result.returncode == 0, gw1_result.explain()
    [row] = rows
    assert (row.direction, row.carrier, row.hangup_by) == ("outbound", "telco", "callee")


def test_trunk_target_by_host_name_through_the_sbcs_nameserver(tmp_path) -> None:
    """The PBX is ``pbx.customer.test`` in provisioning: the SBC asks its nameserver (a real DNS
    server on loopback, given by SBC_DNS_SERVERS) before the tables go live, and the call by
    DID reaches the address the name has."""
    dns = DnsServer()
    try:
        with start_uas("uas_answer", PBX, calls=1, workdir=tmp_path) as pbx:
            dns.zone[("pbx.customer.test", "A")] = (300, [PBX])
            yaml_text = provision([(GW1, 5060)], pbx.local_port).replace(
                f'uri: "sip:{PBX}:{pbx.local_port}"', f'uri: "sip:pbx.customer.test:{pbx.local_port}"'
            )
            sbc = start_provisioned(tmp_path, yaml_text, env={"SBC_DNS_SERVERS": f"127.0.0.1:{dns.port}"})
            try:
                uac = run_sipp("uac_call", sbc_target(sbc), local_ip=CARRIER, service=DID, hold_ms=100,
                               workdir=tmp_path)  # fmt: skip
                pbx_result = pbx.wait(10)
            finally:
                rows = stop_and_read(sbc, tmp_path)
    finally:
        dns.close()
    assert uac.returncode == 0, uac.explain()
    assert pbx_result.returncode == 0, pbx_result.explain()
    assert first(pbx_result.received(), "INVITE").first_line.startswith(f"INVITE sip:{DID}@pbx.customer.test:")
    assert ("pbx.customer.test", "A") in dns.queries
    assert [r.disposition for r in rows] == ["answered"]
