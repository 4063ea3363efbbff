"""The SIPp scenarios of loadtest/scenarios, played SIPp against SIPp with no SBC in between.

These prove the XML: every caller scenario completes against its callee, and every check a
scenario makes (answer direction, Retry-After, digest credentials, the expected final code)
really fails a call when it is not met. The SBC tests then only have to put the SBC in the middle.
Addresses: 127.0.0.2 plays the carrier (caller), 127.0.0.3 the PBX (callee); ports are free ones.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from tests.sbcproc import udp_exchange
from tests.sipp import (
    REPO,
    SCENARIOS,
    SIPP,
    parse_message_log,
    percentile,
    reject_scenario,
    run_sipp,
    scenario_path,
    start_uas,
    topology_leaks,
)

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is installed by scripts/test.sh"),
]

CARRIER = "127.0.0.2"
PBX = "127.0.0.3"
DID = "+14155550100"
EXPECT_CODES = sorted(int(p.stem.rsplit("_", 1)[1]) for p in SCENARIOS.glob("uac_expect_*.xml"))


def _pair(tmp_path, uac: str, uas: str | object, *, calls=1, rate=10.0, hold_ms=0, uas_keys=None,
          uac_keys=None, uac_extra=(), uas_extra=(), transport="u1", timeout_s=8.0):  # fmt: skip
    """Start ``uas`` on the PBX address, run ``uac`` from the carrier address at it; return both results."""
    with start_uas(
        uas, PBX, calls=calls, keys=uas_keys, extra=uas_extra, hold_ms=hold_ms,
        transport=transport, timeout_s=timeout_s, workdir=tmp_path,
    ) as uas_proc:  # fmt: skip
        uac_result = run_sipp(
            uac, f"{PBX}:{uas_proc.local_port}", local_ip=CARRIER, calls=calls, rate=rate,
            service=DID, hold_ms=hold_ms, keys=uac_keys, extra=uac_extra, transport=transport,
            timeout_s=timeout_s, workdir=tmp_path,
        )  # fmt: skip
        uas_result = uas_proc.wait(timeout_s)
    return uac_result, uas_result


def _methods(messages, direction):
    return [m.method or str(m.status) for m in messages if m.direction == direction]


def test_every_scenario_file_is_packaged_and_named_after_itself() -> None:
    names = sorted(p.stem for p in SCENARIOS.glob("*.xml"))
    for required in (
        "uac_call", "uas_answer", "uas_answer_bye", "uac_call_wait_bye", "uas_503", "uas_486",
        "uas_silent", "uas_ring_no_answer", "uac_cancel", "uac_reinvite_hold",
        "uas_answer_reinvite", "uac_auth_call", "uas_auth_answer", "uac_expect_404",
        "uac_expect_403", "uac_expect_503",
    ):  # fmt: skip
        assert required in names
    for name in names:
        assert f'<scenario name="{name}">' in scenario_path(name).read_text(), name


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_call_answered_and_hung_up_by_caller(tmp_path, transport) -> None:
    uac, uas = _pair(tmp_path, "uac_call", "uas_answer", hold_ms=100, transport=transport)
    assert uac.returncode == 0, uac.explain()
    if transport == "t1":
        # SIPp to SIPp over TCP the caller exits (closing the connection) right after the 200 for
        # its BYE, and the callee may see the close before it ends the call: FailedTcpClosed. An
        # SBC in the middle keeps its connections, so this is a quirk of the direct pairing only.
        assert uas.successful + uas.stats.get("FailedTcpClosed(C)", 0) == 1, uas.explain()
    else:
        assert uas.returncode == 0, uas.explain()
    assert (uac.successful, uac.failed) == (1, 0)
    assert _methods(uas.messages(), "received") == ["INVITE", "ACK", "BYE"]
    assert _methods(uas.messages(), "sent") == ["100", "180", "200", "200"]
    invite = uas.received("INVITE")[0]
    assert invite.first_line == f"INVITE sip:{DID}@{PBX}:{uas.args[uas.args.index('-p') + 1]} SIP/2.0"
    assert "m=audio 6" in invite.body and "a=rtpmap:0 PCMU/8000" in invite.body
    assert invite.headers("From")[0].startswith("<sip:+12125550199@127.0.0.2:")
    # The ACK and BYE go to the callee's Contact, in the dialog the 200 made.
    bye = uas.received("BYE")[0]
    assert bye.first_line.startswith(f"BYE sip:answer@{PBX}:")
    assert ";tag=" in bye.headers("To")[0]
    (setup_ms,) = uac.response_times("setup")
    assert 0 <= setup_ms < 1000


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_callee_hangs_up(tmp_path, transport) -> None:
    uac, uas = _pair(tmp_path, "uac_call_wait_bye", "uas_answer_bye", hold_ms=100, transport=transport)
    assert uac.returncode == 0, uac.explain()
    assert uas.returncode == 0, uas.explain()
    assert _methods(uac.messages(), "received") == ["100", "180", "200", "BYE"]
    (bye,) = uac.received("BYE")
    # The callee's BYE swaps the dialog's From/To (RFC 3261 12.2.1.1) and targets our Contact.
    assert bye.first_line.startswith(f"BYE sip:+12125550199@{CARRIER}:")
    assert bye.headers("From")[0].startswith(f"<sip:{DID}@{PBX}:") and ";tag=" in bye.headers("From")[0]
    assert bye.headers("To")[0].startswith("<sip:+12125550199@") and ";tag=" in bye.headers("To")[0]


@pytest.mark.parametrize("callee", ["uas_ring_no_answer", "uas_ring_no_answer_487_first"])
def test_caller_cancels_while_ringing(tmp_path, callee) -> None:
    uac, uas = _pair(tmp_path, "uac_cancel", callee)
    assert uac.returncode == 0, uac.explain()
    assert uas.returncode == 0, uas.explain()
    received = uac.received()
    assert sorted(str(m.status) for m in received if m.status and m.status >= 200) == ["200", "487"]
    invite, cancel, ack = (
        next(m for m in uac.messages() if m.method == x) for x in ("INVITE", "CANCEL", "ACK")
    )
    # CANCEL and the 487's ACK repeat the INVITE's branch and Request-URI (RFC 3261 9.1, 17.1.1.3).
    branch = re.search(r"branch=([^;]+)", invite.headers("Via")[0])[1]
    assert branch in cancel.headers("Via")[0] and branch in ack.headers("Via")[0]
    assert invite.first_line.split()[1] == cancel.first_line.split()[1] == ack.first_line.split()[1]
    assert ack.headers("CSeq") == ["1 ACK"] and ";tag=" in ack.headers("To")[0]
    assert uac.response_times("ring")


def test_hold_and_resume_with_reinvites(tmp_path) -> None:
    uac, uas = _pair(tmp_path, "uac_reinvite_hold", "uas_answer_reinvite", hold_ms=50)
    assert uac.returncode == 0, uac.explain()
    assert uas.returncode == 0, uas.explain()
    invites = uas.received("INVITE")
    assert [i.headers("CSeq")[0] for i in invites] == ["1 INVITE", "2 INVITE", "3 INVITE"]
    assert [
        "a=sendrecv" in invites[0].body,
        "a=sendonly" in invites[1].body,
        "a=sendrecv" in invites[2].body,
    ] == [True] * 3
    answers = [
        m
        for m in uas.messages()
        if m.direction == "sent" and m.status == 200 and "INVITE" in m.headers("CSeq")[0]
    ]
    assert [re.search(r"a=(sendrecv|sendonly|recvonly|inactive)", a.body)[1] for a in answers] == [
        "sendrecv", "recvonly", "sendrecv",
    ]  # fmt: skip
    # Each new answer has a higher o= version (RFC 3264 8).
    versions = [int(re.search(r"o=\S+ \S+ (\d+)", a.body)[1]) for a in answers]
    assert versions == sorted(set(versions))
    assert len(uac.response_times("reinvite")) == 2


def test_hold_answer_direction_is_checked(tmp_path) -> None:
    # A callee that ignores the hold (answers a=sendrecv to a=sendonly) must fail the caller's call.
    text = scenario_path("uas_answer_reinvite").read_text().replace("a=[$answer_dir]", "a=sendrecv")
    bad = tmp_path / "uas_ignores_hold.xml"
    bad.write_text(text.replace('name="uas_answer_reinvite"', 'name="uas_ignores_hold"'))
    uac, _ = _pair(tmp_path, "uac_reinvite_hold", bad, hold_ms=50)
    assert uac.returncode == 1 and uac.failed == 1, uac.explain()
    assert uac.stats["FailedRegexpDoesntMatch(C)"] == 1


@pytest.mark.parametrize("code", EXPECT_CODES)
def test_expect_variant_gets_its_code(tmp_path, code) -> None:
    headers = ["Retry-After: 30"] if code == 503 else []
    uas = reject_scenario(code, "Test Reject", tmp_path, headers)
    uac, uas_result = _pair(tmp_path, f"uac_expect_{code}", uas)
    assert uac.returncode == 0, uac.explain()
    assert uas_result.returncode == 0, uas_result.explain()
    (ack,) = uas_result.received("ACK")
    invite = uas_result.received("INVITE")[0]
    assert ack.headers("Via")[0] == invite.headers("Via")[0]
    assert ack.first_line.split()[1] == invite.first_line.split()[1]
    assert uac.response_times("final")


@pytest.mark.parametrize(("uac", "uas"), [("uac_expect_503", "uas_503"), ("uac_expect_486", "uas_486")])
def test_packaged_reject_callees(tmp_path, uac, uas) -> None:
    uac_result, uas_result = _pair(tmp_path, uac, uas)
    assert uac_result.returncode == 0, uac_result.explain()
    assert uas_result.returncode == 0, uas_result.explain()


def test_expect_503_requires_retry_after(tmp_path) -> None:
    uac, _ = _pair(tmp_path, "uac_expect_503", reject_scenario(503, "Service Unavailable", tmp_path))
    assert uac.returncode == 1 and uac.stats["FailedRegexpHdrNotFound(C)"] == 1, uac.explain()


def test_expect_fails_on_another_code(tmp_path) -> None:
    uac, _ = _pair(tmp_path, "uac_expect_404", "uas_486")
    assert uac.returncode == 1 and uac.failed == 1, uac.explain()
    assert uac.stats["FailedUnexpectedMessage(C)"] == 1
    assert uac.error_codes() == {"486": 1}


def test_auth_call_with_right_credentials(tmp_path) -> None:
    uac, uas = _pair(
        tmp_path, "uac_auth_call", "uas_auth_answer", hold_ms=50,
        uas_keys={"auth_user": "pbx1", "auth_pass": "s3cret-pw"},
        uac_extra=["-au", "pbx1", "-ap", "s3cret-pw"],
    )  # fmt: skip
    assert uac.returncode == 0, uac.explain()
    assert uas.returncode == 0, uas.explain()
    first, second = uas.received("INVITE")
    assert not first.headers("Authorization")
    (auth,) = second.headers("Authorization")
    assert auth.startswith('Digest username="pbx1",realm="sipp.test"') and "qop=auth" in auth
    # Without -auth_uri SIPp puts remote_ip:remote_port, not the Request-URI, in the digest uri.
    assert f'uri="sip:{PBX}:' in auth
    assert second.headers("CSeq") == ["2 INVITE"]


def test_auth_digest_uri_follows_auth_uri(tmp_path) -> None:
    with start_uas("uas_auth_answer", PBX, keys={"auth_user": "pbx1", "auth_pass": "s3cret-pw"},
                   timeout_s=8, workdir=tmp_path) as uas:  # fmt: skip
        target = f"{PBX}:{uas.local_port}"
        uac = run_sipp("uac_auth_call", target, local_ip=CARRIER, service=DID, timeout_s=8, workdir=tmp_path,
                       extra=["-au", "pbx1", "-ap", "s3cret-pw", "-auth_uri", f"{DID}@{target}"])  # fmt: skip
        uas_result = uas.wait(8)
    assert uac.returncode == 0 and uas_result.returncode == 0, uac.explain() + uas_result.explain()
    (auth,) = uas_result.received("INVITE")[1].headers("Authorization")
    assert f'uri="sip:{DID}@{target}"' in auth


def test_auth_call_with_wrong_password_fails_both_sides(tmp_path) -> None:
    uac, uas = _pair(
        tmp_path, "uac_auth_call", "uas_auth_answer",
        uas_keys={"auth_user": "pbx1", "auth_pass": "s3cret-pw"},
        uac_extra=["-au", "pbx1", "-ap", "not-the-password"],
    )  # fmt: skip
    assert uac.returncode == 1, uac.explain()
    # The callee refuses with 403 and counts the call failed (here on the caller's abort: a SIPp
    # caller answers an unexpected 403 with a BYE; a real UA would ACK it and trip check_it).
    assert uas.returncode == 1 and uas.failed == 1, uas.explain()
    answers = [m.status for m in uas.messages() if m.direction == "sent" and "INVITE" in m.headers("CSeq")[0]]
    assert answers[:2] == [401, 403] and 200 not in answers


def test_auth_call_answers_a_407_with_proxy_authorization(tmp_path) -> None:
    # SIPp's verifyauth reads only Authorization, so this callee checks nothing: the point is
    # that the caller answers a 407 challenge with Proxy-Authorization.
    text = scenario_path("uas_auth_answer").read_text()
    text = text.replace("401 Unauthorized", "407 Proxy Authentication Required")
    text = text.replace("WWW-Authenticate:", "Proxy-Authenticate:")
    text = text.replace('<nop test="auth_ok" next="authorized"/>', '<nop next="authorized"/>')
    proxy = tmp_path / "uas_auth_407.xml"
    proxy.write_text(text.replace('name="uas_auth_answer"', 'name="uas_auth_407"'))
    uac, uas = _pair(tmp_path, "uac_auth_call", proxy, uas_keys={"auth_user": "u", "auth_pass": "p"},
                     uac_extra=["-au", "pbx1", "-ap", "s3cret-pw"])  # fmt: skip
    assert uac.returncode == 0, uac.explain()
    second = uas.received("INVITE")[1]
    assert second.headers("Proxy-Authorization")[0].startswith('Digest username="pbx1"')
    assert not second.headers("Authorization")


def test_silent_callee_sends_nothing(tmp_path) -> None:
    with start_uas("uas_silent", PBX, calls=100, timeout_s=8, workdir=tmp_path) as uas:
        uac = run_sipp(
            "uac_call", f"{PBX}:{uas.local_port}", local_ip=CARRIER, service=DID, timeout_s=8,
            extra=["-max_invite_retrans", "1"], workdir=tmp_path,
        )  # fmt: skip
        assert uas.running()
        uas_result = uas.stop()
    assert uac.returncode == 1 and uac.stats["FailedMaxUDPRetrans(C)"] == 1, uac.explain()
    received = uas_result.messages()
    assert [m.method for m in received] == ["INVITE", "INVITE"]  # the INVITE and its retransmission
    assert all(m.direction == "received" for m in received)


@pytest.mark.parametrize("callee", ["uas_answer", "uas_503", "uas_ring_no_answer"])
def test_callees_answer_options_probes_between_calls(tmp_path, callee) -> None:
    uac_scenario = {
        "uas_answer": "uac_call",
        "uas_503": "uac_expect_503",
        "uas_ring_no_answer": "uac_cancel",
    }[callee]
    with start_uas(callee, PBX, calls=3, timeout_s=8, workdir=tmp_path) as uas:
        options = (
            f"OPTIONS sip:{PBX}:{uas.local_port} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-probe1\r\nFrom: <sip:sbc@127.0.0.1>;tag=p1\r\n"
            f"To: <sip:{PBX}>\r\nCall-ID: probe-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        (reply,) = udp_exchange(PBX, uas.local_port, options, timeout=1.0)
        assert reply.startswith(b"SIP/2.0 200") and b"Call-ID: probe-1@127.0.0.1" in reply
        uac = run_sipp(uac_scenario, f"{PBX}:{uas.local_port}", local_ip=CARRIER, service=DID, timeout_s=8,
                       workdir=tmp_path)  # fmt: skip
        (reply,) = udp_exchange(PBX, uas.local_port, options.replace(b"probe-1", b"probe-2"), timeout=1.0)
        assert reply.startswith(b"SIP/2.0 200")
        uas_result = uas.wait(8)
    assert uac.returncode == 0 and uas_result.returncode == 0, uac.explain() + uas_result.explain()
    # The two probes count as calls, successful ones.
    assert (uas_result.successful, uas_result.failed) == (3, 0)
    assert len(uas_result.received("INVITE")) == 1


def test_topology_check_finds_what_a_direct_call_leaks(tmp_path) -> None:
    # With no SBC between them the callee sees the caller's addresses: the check must say so.
    # Through the SBC the same check must come back empty.
    uac, uas = _pair(tmp_path, "uac_call", "uas_answer")
    assert uac.returncode == 0, uac.explain()
    invite = uas.received("INVITE")[0]
    call_id = invite.headers("Call-ID")[0]
    leaks = topology_leaks(uas.received(), [CARRIER, call_id, "SIPpTag00"])
    assert any("Via" in leak for leak in leaks) and any("Contact" in leak for leak in leaks)
    assert any("c=IN IP4 127.0.0.2" in leak for leak in leaks)
    assert any(call_id in leak for leak in leaks)
    assert topology_leaks(uas.received(), ["198.51.100.99"]) == []
    assert parse_message_log(uas.messages_path)[0].method == "INVITE"


def test_load_smoke_100_calls(tmp_path) -> None:
    t0 = time.monotonic()
    uac, uas = _pair(tmp_path, "uac_call", "uas_answer", calls=100, rate=100, hold_ms=200, timeout_s=9)
    assert uac.returncode == 0 and uas.returncode == 0, uac.explain() + uas.explain()
    assert (uac.successful, uac.failed, uas.successful) == (100, 0, 100)
    setup = uac.response_times("setup")
    assert len(setup) == 100 and percentile(setup, 99) < 500
    assert time.monotonic() - t0 < 9


def test_hard_deadline_stops_a_stuck_caller(tmp_path) -> None:
    # A caller parked on INVITE retransmissions (timer B is 32 s) outlives a soft -timeout: the
    # harness must stop it at the deadline and still report what SIPp counted.
    with start_uas("uas_silent", PBX, calls=100, timeout_s=8, workdir=tmp_path) as uas:
        t0 = time.monotonic()
        uac = run_sipp("uac_call", f"{PBX}:{uas.local_port}", local_ip=CARRIER, service=DID,
                       timeout_s=1, recv_timeout_ms=60_000, workdir=tmp_path)  # fmt: skip
        elapsed = time.monotonic() - t0
    assert uac.timed_out and elapsed < 8, uac.explain()
    assert uac.created == 1 and uac.successful == 0


BENCH_KEYS = {
    "bench", "rate", "seconds", "hold_ms", "calls", "ok", "failed", "retransmissions", "setup_p50_ms",
    "setup_p99_ms", "sbc_cpu_pct", "sbc_rss_mb", "peak_concurrent",
}  # fmt: skip


def test_bench_provision_file_is_valid() -> None:
    import yaml

    from loadtest.bench_calls import NUMBERS, provision_yaml
    from sbc.provision import parse_provision

    doc = parse_provision(yaml.safe_load(provision_yaml(5080)))
    assert [n.e164 for n in doc.numbers] == list(NUMBERS) and len(NUMBERS) == 100
    assert NUMBERS[0] == "+14155550100" and NUMBERS[-1] == "+14155550199"
    assert doc.carriers[0].inbound_cidrs == ["127.0.0.2/32"]
    assert doc.customers[0].trunks[0].targets[0].uri == "sip:127.0.0.3:5080"


def test_bench_calls_direct_prints_one_json_line(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loadtest", "calls", "--direct", "--rate", "20", "--seconds", "1",
         "--hold-ms", "100", "--trace-msg", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.strip().splitlines()
    result = json.loads(line)
    assert result.keys() >= BENCH_KEYS
    assert (result["bench"], result["mode"], result["calls"], result["ok"], result["failed"]) == (
        "calls", "direct", 20, 20, 0,
    )  # fmt: skip
    assert result["setup_source"] == "message_log_us" and 0 < result["setup_p50_ms"] < 100
    assert list(tmp_path.iterdir()) == []  # the run cleaned up after itself


@pytest.mark.parametrize("callee, outcome", [("uas_answer", "200"), ("uas_503", "503")])
def test_call_or_503_accepts_either_answer(tmp_path, callee, outcome) -> None:
    uac, uas = _pair(tmp_path, "uac_call_or_503", callee, hold_ms=100)
    assert uac.returncode == 0, uac.explain()
    assert (uac.successful, uac.failed) == (1, 0)
    finals = [m.status for m in uac.messages() if m.direction == "received" and (m.status or 0) >= 200]
    assert str(finals[0]) == outcome
    sent = _methods(uac.messages(), "sent")
    assert sent == (["INVITE", "ACK", "BYE"] if outcome == "200" else ["INVITE", "ACK"])
