"""A real ``sbc run`` on loopback: the torture manifest over UDP and TCP, SIPp OPTIONS, SIGTERM."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from sbc.sip.framing import FramedMessage, StreamFramer
from sbc.sip.message import Response, parse_message
from tests.sbcproc import start_sbc, tcp_exchange, udp_exchange
from tests.test_core_torture import check_against_manifest
from tests.torture import load_manifest

CASES = load_manifest()
REQUEST_CASES = [c for c in CASES if not c.is_response]
RESPONSE_CASES = [c for c in CASES if c.is_response]
# Cases whose expectation is about datagrams. "Datagram shorter than Content-Length" (clerr):
# on a stream the SBC rightly waits for the rest of the body. A message without
# Content-Length (inv2543): on a stream it cannot be framed (RFC 3261 §18.3, §20.14), so the
# SBC answers 400 and closes the connection (test_stream_without_content_length_is_400).
UDP_ONLY = {"rfc4475/clerr.dat", "rfc4475/inv2543.dat"}


# Several torture messages share branch, sent-by and method, so RFC 3261 §17.2.3 makes the
# later one a retransmission of the earlier while its transaction lives (timer J = 64*T1 on
# UDP). The SBC under test runs with a short T1 and the test waits out timer J between them.
TEST_T1 = 0.01
TIMER_J = 64 * TEST_T1
_last_sent: dict[tuple, float] = {}


def _wait_for_fresh_transaction(data: bytes) -> None:
    try:
        msg = parse_message(data)
        via = msg.vias()[0]
        key = (msg.branch, via.host, via.port, msg.method)
    except Exception:
        return
    last = _last_sent.get(key)
    if last is not None:
        time.sleep(max(0.0, last + TIMER_J + 0.2 - time.monotonic()))
    _last_sent[key] = time.monotonic()


@pytest.fixture(scope="module")
def sbc(tmp_path_factory):
    proc = start_sbc(tmp_path_factory.mktemp("sbc"), env={"SBC_T1": str(TEST_T1)})
    yield proc
    assert proc.stop() == 0, proc.log()


def _responses(datagrams: list[bytes]) -> list[Response]:
    """Parse what came back; retransmissions of one response (timer G on UDP) count once."""
    out = [parse_message(d) for d in dict.fromkeys(datagrams)]
    assert all(isinstance(r, Response) for r in out)
    return out  # type: ignore[return-value]


@pytest.mark.parametrize("case", REQUEST_CASES, ids=lambda c: c.file)
def test_manifest_over_udp(sbc, case) -> None:
    _wait_for_fresh_transaction(case.data)
    responses = _responses(udp_exchange(sbc.host, sbc.port, case.data, timeout=1.0))
    check_against_manifest(case, responses, dropped=None)


@pytest.mark.parametrize("case", [c for c in REQUEST_CASES if c.file not in UDP_ONLY], ids=lambda c: c.file)
def test_manifest_over_tcp(sbc, case) -> None:
    raw = tcp_exchange(sbc.host, sbc.port, case.data, timeout=1.0)
    framed = [e.data for e in StreamFramer().feed(raw) if isinstance(e, FramedMessage)]
    responses = _responses(framed)
    if case.file.endswith("dblreq.dat"):
        # On a stream the octets past the first message are a second message: judge the first.
        first_call = parse_message(case.data).call_id
        responses = [r for r in responses if r.call_id == first_call]
    check_against_manifest(case, responses, dropped=None)


def test_stream_without_content_length_is_400(sbc) -> None:
    case = next(c for c in REQUEST_CASES if c.file == "rfc4475/inv2543.dat")
    raw = tcp_exchange(sbc.host, sbc.port, case.data, timeout=1.0)
    (resp,) = _responses([e.data for e in StreamFramer().feed(raw) if isinstance(e, FramedMessage)])
    assert resp.status == 400 and resp.call_id == "inv2543.1717@ift.client.example.com"


@pytest.mark.parametrize("case", RESPONSE_CASES, ids=lambda c: c.file)
def test_responses_are_never_answered(sbc, case) -> None:
    assert udp_exchange(sbc.host, sbc.port, case.data, timeout=0.3) == []


def test_sbc_survives_garbage_then_answers(sbc) -> None:
    for junk in (b"", b"\x00" * 100, b"INVITE\r\n\r\n", b"SIP/2.0 200\r\n\r\n", bytes(range(256)) * 10):
        udp_exchange(sbc.host, sbc.port, junk, timeout=0.05)
    assert tcp_exchange(sbc.host, sbc.port, b"\x00garbage with no end of headers" * 10, timeout=0.3) == b""
    assert sbc.proc.poll() is None
    opts = (
        f"OPTIONS sip:{sbc.host}:{sbc.port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-alive\r\n"
        "From: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: alive@t\r\nCSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    (resp,) = _responses(udp_exchange(sbc.host, sbc.port, opts))
    assert resp.status == 200


@pytest.mark.sipp
@pytest.mark.skipif(
    shutil.which("sipp") is None, reason="SIPp (Debian sip-tester) is installed by scripts/test.sh"
)
@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_options_gets_200(sbc, tmp_path, transport) -> None:
    scenario = tmp_path / "options.xml"
    scenario.write_text(SIPP_OPTIONS)
    result = subprocess.run(
        [
            "sipp",
            f"{sbc.host}:{sbc.port}",
            "-sf",
            str(scenario),
            "-m",
            "20",
            "-r",
            "50",
            "-t",
            transport,
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-timeout",
            "15s",
            "-max_recv_loops",
            "1000",
            "-trace_err",
            "-error_file",
            str(tmp_path / "err.log"),
            "-nostdin",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_sigterm_shuts_down_cleanly(tmp_path) -> None:
    proc = start_sbc(tmp_path)
    assert proc.stop() == 0
    assert "Traceback" not in proc.log()


SIPP_OPTIONS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="OPTIONS to the SBC">
  <send retrans="500">
    <![CDATA[
      OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Accept: application/sdp
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" />
</scenario>
"""
