"""Every file of the RFC 4475/5118 torture manifest through the parser."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sbc.__main__ import parse_file_report
from sbc.sip.errors import SIPParseError
from sbc.sip.message import Request, Response, parse_message
from sbc.sip.multipart import BodyPart, build_multipart, find_sdp, parse_multipart
from sbc.sip.sdp import SessionDescription
from tests.torture import TORTURE_DIR, load_manifest

CASES = load_manifest()


def test_manifest_is_complete() -> None:
    files = {c.file for c in CASES}
    on_disk = {str(p.relative_to(TORTURE_DIR)) for p in TORTURE_DIR.glob("rfc*/*.dat")}
    assert files == on_disk
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.file)
def test_parser_follows_manifest(case) -> None:
    try:
        msg = parse_message(case.data).validate()
    except SIPParseError as e:
        assert case.parse in ("invalid", "either"), f"{case.file} must parse: {e.reason}"
        assert e.reason, "a refusal names what is wrong"
        assert e.status in (400, 505)
        if "505" in case.expectation:
            assert e.status == 505
        return
    assert case.parse in ("valid", "either"), f"{case.file} must be refused"
    assert isinstance(msg, Response if case.is_response else Request)
    # Whatever parsed serialises and parses again to the same start line and header values.
    again = parse_message(msg.to_bytes())
    assert again.start_line() == msg.start_line()
    assert [(n, v) for n, v in again.headers if n != "Content-Length"] == [
        (n, v) for n, v in msg.headers if n != "Content-Length"
    ]
    assert again.body == msg.body


def _case(name: str):
    return next(c for c in CASES if c.file.endswith(name))


def test_wsinv_fields() -> None:
    msg = parse_message(_case("wsinv.dat").data).validate()
    assert msg.method == "INVITE"
    assert msg.cseq == (9, "INVITE")
    assert msg.to_tag == "1918181833n"
    assert msg.from_tag == "98asjd8"
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    vias = msg.vias()
    assert [v.transport for v in vias] == ["UDP", "TCP", "UDP"]
    assert vias[0].branch == "390skdjuw"
    assert msg.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert len(msg.body) == 150


def test_dblreq_ignores_octets_past_content_length() -> None:
    msg = parse_message(_case("dblreq.dat").data)
    assert msg.method == "REGISTER"
    assert msg.body == b""


def test_unreason_keeps_reason_bytes() -> None:
    data = _case("unreason.dat").data
    msg = parse_message(data).validate()
    assert isinstance(msg, Response)
    assert msg.status == 200
    first_line = data.split(b"\r\n", 1)[0]
    assert msg.reason_bytes == first_line.split(b" ", 2)[2]
    assert msg.to_bytes().split(b"\r\n", 1)[0] == first_line


def test_noreason_empty_reason() -> None:
    msg = parse_message(_case("noreason.dat").data)
    assert isinstance(msg, Response) and msg.status == 100 and msg.reason == ""


def test_mpart01_parts_are_found() -> None:
    # The manifest says "the SDP part is found", but RFC 4475's mpart01 carries text/plain and
    # an S/MIME blob, no SDP: the parts are found and find_sdp rightly reports none.
    msg = parse_message(_case("mpart01.dat").data).validate()
    parts = parse_multipart(msg.get("Content-Type"), msg.body)
    assert [p.content_type for p in parts] == ["text/plain", "application/octet-stream"]
    assert parts[0].body == b"Hello"
    assert find_sdp(msg.get("Content-Type"), msg.body) is None


def test_multipart_sdp_is_found_inside_a_real_message() -> None:
    sdp = (
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
    body = build_multipart([BodyPart([("Content-Type", "application/sdp")], sdp)], "b0undary")
    assert find_sdp("multipart/mixed; boundary=b0undary", body) == sdp
    assert SessionDescription.parse(find_sdp("multipart/mixed; boundary=b0undary", body)).media


def test_ipv6_in_sdp_understood() -> None:
    msg = parse_message(_case("ipv6-in-sdp.dat").data).validate()
    sdp = SessionDescription.parse(msg.body)
    conn = sdp.connection or sdp.media[0].connections[0]
    assert conn.addrtype == "IP6"


def test_port_ambiguous_has_no_port() -> None:
    msg = parse_message(_case("port-ambiguous.dat").data).validate()
    uri = msg.ruri
    assert uri.port is None
    assert uri.host.startswith("[") and uri.host.endswith("]")


def test_port_unambiguous_has_port() -> None:
    msg = parse_message(_case("port-unambiguous.dat").data).validate()
    assert msg.ruri.port == 5070


def test_badvers_is_505() -> None:
    with pytest.raises(SIPParseError) as e:
        parse_message(_case("badvers.dat").data)
    assert e.value.status == 505


def test_sbc_parse_command_prints_one_json_line_per_file() -> None:
    files = [str(c.path) for c in CASES]
    out = subprocess.run(
        [sys.executable, "-m", "sbc", "parse", *files], capture_output=True, text=True, check=False
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == len(CASES)
    by_file = {line["file"]: line for line in lines}
    for case in CASES:
        report = by_file[str(case.path)]
        assert report["kind"] == ("response" if case.is_response else "request")
        if case.parse == "valid":
            assert report["ok"] is True, report
        elif case.parse == "invalid":
            assert report["ok"] is False and report["error"], report
    assert out.returncode == 1  # some files are invalid


def test_parse_report_for_missing_file(tmp_path) -> None:
    report = parse_file_report(str(tmp_path / "nope.sip"))
    assert report["ok"] is False and "cannot read" in report["error"]
