"""A real ``sbc run`` on loopback: the torture manifest over UDP and TCP, SIPp OPTIONS, SIGTERM."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from sbc.sip.message import Response, parse_message
from sbc.sip.framing import FramedMessage, StreamFramer
from tests.sbcproc import start_sbc, tcp_exchange, udp_exchange
from tests.test_core_torture import check_against_manifest
from tests.torture import load_manifest

CASES = load_manifest()
REQUEST_CASES = [c for c in CASES if not c.is_response]
RESPONSE_CASES = [c for c in CASES if c.is_response]
# "datagram shorter than Content-Length" only means something on UDP: on a stream the SBC
# rightly waits for the rest of the body.
UDP_ONLY = {"rfc4475/clerr.dat"}


@pytest.fixture(scope="module")
def sbc(tmp_path_factory):
    proc = start_sbc(tmp_path_factory.mktemp("sbc"))
    yield proc
    assert proc.stop() == 0, proc.log()


def _responses(datagrams: list[bytes]) -> list[Response]:
    out = [parse_message(d) for d in datagrams]
    assert all(isinstance(r, Response) for r in out)
    return out  # type: ignore[return-value]


@pytest.mark.parametrize("case", REQUEST_CASES, ids=lambda c: c.file)
def test_manifest_over_udp(sbc, case) -> None:
    responses = _responses(udp_exchange(sbc.host, sbc.port, case.data, timeout=1.0))
    check_against_manifest(case, responses, dropped=0)


@pytest.mark.parametrize("case", [c for c in REQUEST_CASES if c.file not in UDP_ONLY], ids=lambda c: c.file)
def test_manifest_over_tcp(sbc, case) -> None:
    raw = tcp_exchange(sbc.host, sbc.port, case.data, timeout=1.0)
    framed = [e.data for e in StreamFramer().feed(raw) if isinstance(e, FramedMessage)]
    responses = _responses(framed)
    if case.file.endswith("dblreq.dat"):
        # On a stream the octets past the first message are a second message: judge the first.
        first_call = parse_message(case.data).call_id
        responses = [r for r in responses if r.call_id == first_call]
    check_against_manifest(case, responses, dropped=0)


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
@pytest.mark.skipif(shutil.which("sipp") is None, reason="SIPp (Debian sip-tester) is installed by scripts/test.sh")
@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_options_gets_200(sbc, tmp_path, transport) -> None:
    scenario = tmp_path / "options.xml"
    scenario.write_text(SIPP_OPTIONS)
    result = subprocess.run(
        [
            "sipp", f"{sbc.host}:{sbc.port}", "-sf", str(scenario), "-m", "20", "-r", "50",
            "-t", transport, "-i", "127.0.0.1", "-p", "0", "-timeout", "15s", "-max_recv_loops", "1000",
            "-trace_err", "-error_file", str(tmp_path / "err.log"), "-nostdin",
        ],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
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
