"""Tests for sbc.sip.multipart: Content-Type parsing, multipart bodies and finding the SDP."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbc.sip.errors import SIPParseError
from sbc.sip.multipart import (
    MAX_BODY_PARTS,
    MAX_MULTIPART_DEPTH,
    MAX_PART_HEADERS,
    BodyPart,
    build_multipart,
    find_sdp,
    parse_content_type,
    parse_multipart,
    rewrite_sdp,
)

MPART01 = Path("/work/shared/sip-torture/rfc4475/mpart01.dat")
MPART01_TYPE = "multipart/mixed;boundary=7a9cbec02ceef655"  # from its Content-Type header

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
ISUP = bytes(range(256))  # binary ISUP-like payload, CR/LF octets included


def crlf(*lines: str) -> bytes:
    return "\r\n".join(lines).encode()


# parse_content_type


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/sdp", ("application/sdp", {})),
        ("Application/SDP", ("application/sdp", {})),
        (MPART01_TYPE, ("multipart/mixed", {"boundary": "7a9cbec02ceef655"})),
        (
            'multipart/mixed ; Boundary="unique-boundary-1" ; charset=utf-8',
            ("multipart/mixed", {"boundary": "unique-boundary-1", "charset": "utf-8"}),
        ),
        ('multipart/mixed;boundary="a;b=c\\"d"', ("multipart/mixed", {"boundary": 'a;b=c"d'})),
        ("text/plain;", ("text/plain", {})),
        (
            "multipart/related;type=application/sdp;boundary=XyZ",
            ("multipart/related", {"type": "application/sdp", "boundary": "XyZ"}),
        ),
    ],
)
def test_parse_content_type(value: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_content_type(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "expected 'type/subtype'"),
        ("application", "expected 'type/subtype'"),
        ("application/", "expected 'type/subtype'"),
        ("app lication/sdp", "expected 'type/subtype'"),
        ("multipart/mixed; boundary", "no '='"),
        ("multipart/mixed; =x", "parameter name"),
        ('multipart/mixed; boundary="abc', "unterminated quoted string"),
        ("multipart/mixed; boundary=a; boundary=b", "duplicate Content-Type parameter"),
    ],
)
def test_parse_content_type_bad(value: str, reason: str) -> None:
    with pytest.raises(SIPParseError, match=reason) as caught:
        parse_content_type(value)
    assert caught.value.status == 400


# parse_multipart


def test_rfc4475_mpart01_parts_and_no_sdp() -> None:
    body = MPART01.read_bytes().split(b"\r\n\r\n", 1)[1]
    parts = parse_multipart(MPART01_TYPE, body)
    assert len(parts) == 2
    text, binary = parts
    assert text.headers == [("Content-Type", "text/plain"), ("Content-Transfer-Encoding", "binary")]
    assert text.body == b"Hello"
    assert text.content_type == "text/plain"
    assert binary.content_type == "application/octet-stream"
    assert binary.body.startswith(b"0\x82\x01R\x06\t*\x86H\x86\xf7\r\x01\x07\x02")
    assert binary.body.endswith(b"\x99\xd0\x05")  # the CRLF before the closing delimiter is not content
    assert b"\n" in binary.body  # binary content with LF octets is kept intact
    assert find_sdp(MPART01_TYPE, body) is None


def test_sdp_beside_isup_with_preamble_and_epilogue() -> None:
    body = (
        b"This is a preamble, ignored.\r\n"
        b"--unique-boundary-1\r\n"
        b"Content-Type: application/SDP; charset=utf-8\r\n"
        b"Content-Disposition: session; handling=required\r\n"
        b"\r\n" + SDP + b"\r\n"
        b"--unique-boundary-1  \r\n"  # transport padding after the boundary
        b"Content-Type: application/ISUP; version=itu-t92+\r\n"
        b"Content-Disposition: signal; handling=optional\r\n"
        b"\r\n" + ISUP + b"\r\n"
        b"--unique-boundary-1--\r\n"
        b"epilogue, ignored\r\n--unique-boundary-1\r\n"
    )
    content_type = "multipart/mixed; boundary=unique-boundary-1"
    sdp_part, isup_part = parse_multipart(content_type, body)
    assert sdp_part.content_type == "application/sdp"
    assert sdp_part.header("content-disposition") == "session; handling=required"
    assert sdp_part.body == SDP
    assert isup_part.content_type == "application/isup"
    assert isup_part.body == ISUP
    assert find_sdp(content_type, body) == SDP


def test_lf_only_body_and_folded_header_and_part_without_headers() -> None:
    body = (
        b"--b\n"
        b"Content-Type:\n application/sdp\n"
        b"\n" + SDP.replace(b"\r\n", b"\n") + b"\n"
        b"--b\n"
        b"\n"
        b"no headers here\n"
        b"--b\n"
        b"--b--"
    )
    first, second, third = parse_multipart("multipart/mixed;boundary=b", body)
    assert first.headers == [("Content-Type", "application/sdp")]
    assert first.body == SDP.replace(b"\r\n", b"\n")
    assert second.headers == [] and second.body == b"no headers here"
    assert second.content_type == "text/plain"  # RFC 2046 default
    assert third == BodyPart([], b"")


def test_boundary_prefix_inside_content_is_not_a_delimiter() -> None:
    body = crlf("--abc", "", "line one", "--abcdef is not a delimiter", "--abc--", "")
    (part,) = parse_multipart("multipart/mixed;boundary=abc", body)
    assert part.body == b"line one\r\n--abcdef is not a delimiter"


def test_compact_content_type_header_in_part() -> None:
    body = crlf("--b", "c: application/sdp", "", SDP.decode(), "--b--")
    (part,) = parse_multipart("multipart/mixed;boundary=b", body)
    assert part.content_type == "application/sdp"
    assert part.body == SDP
    assert find_sdp("multipart/mixed;boundary=b", body) == SDP


def test_nested_multipart_is_one_level_and_find_sdp_recurses() -> None:
    inner = build_multipart(
        [
            BodyPart([("Content-Type", "text/plain")], b"plain"),
            BodyPart([("Content-Type", "application/sdp")], SDP),
        ],
        "inner",
    )
    outer = build_multipart(
        [
            BodyPart([("Content-Type", "application/pidf+xml")], b"<presence/>"),
            BodyPart([("Content-Type", 'multipart/alternative; boundary="inner"')], inner),
        ],
        "outer",
    )
    parts = parse_multipart("multipart/mixed; boundary=outer", outer)
    assert [p.content_type for p in parts] == ["application/pidf+xml", "multipart/alternative"]
    assert parts[1].body == inner  # nested multipart stays raw
    assert find_sdp("multipart/mixed; boundary=outer", outer) == SDP


def test_multipart_alternative_prefers_the_last_sdp() -> None:
    plain_sdp = SDP
    srtp_sdp = SDP.replace(b"RTP/AVP", b"RTP/SAVP")
    body = build_multipart(
        [
            BodyPart([("Content-Type", "application/sdp")], plain_sdp),
            BodyPart([("Content-Type", "application/sdp")], srtp_sdp),
        ],
        "alt",
    )
    assert find_sdp("multipart/alternative;boundary=alt", body) == srtp_sdp
    assert find_sdp("multipart/mixed;boundary=alt", body) == plain_sdp


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/sdp", SDP, SDP),
        ("Application/SDP; charset=utf-8", SDP, SDP),
        ("application/sdp", b"", None),
        ("text/plain", SDP, None),
        ("application/isup", ISUP, None),
    ],
)
def test_find_sdp_single_part(content_type: str, body: bytes, expected: bytes | None) -> None:
    assert find_sdp(content_type, body) == expected


def test_find_sdp_related_with_nothing_sdp_returns_none() -> None:
    body = build_multipart([BodyPart([("Content-Type", "application/pidf+xml")], b"<x/>")], "r")
    assert find_sdp("multipart/related; type=application/pidf+xml; boundary=r", body) is None


def test_find_sdp_depth_limit() -> None:
    body = build_multipart([BodyPart([("Content-Type", "application/sdp")], SDP)], "level0")
    content_type = "multipart/mixed;boundary=level0"
    for level in range(1, MAX_MULTIPART_DEPTH + 1):
        body = build_multipart([BodyPart([("Content-Type", content_type)], body)], f"level{level}")
        content_type = f"multipart/mixed;boundary=level{level}"
    # MAX_MULTIPART_DEPTH + 1 multipart levels: the SDP is one level too deep.
    assert find_sdp(content_type, body) is None
    inner_type = "multipart/mixed;boundary=level3"
    inner = parse_multipart(content_type, body)[0].body
    assert find_sdp(inner_type, inner) == SDP


# Bad multipart input.


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("multipart/mixed", b"--b\r\n\r\nx\r\n--b--\r\n", "no boundary parameter"),
        ("multipart/mixed; charset=utf-8", b"", "no boundary parameter"),
        ("application/sdp", SDP, "is not multipart"),
        ("multipart/mixed;boundary=" + "x" * 71, b"", "invalid multipart boundary"),
        ('multipart/mixed;boundary="ends with space "', b"", "invalid multipart boundary"),
        ("multipart/mixed;boundary=b", b"no delimiter at all", "no boundary delimiter"),
        ("multipart/mixed;boundary=b", b"--bc\r\nx\r\n", "no boundary delimiter"),
        ("multipart/mixed;boundary=b", b"--b\r\n\r\nunterminated part\r\n", "no closing delimiter"),
        ("multipart/mixed;boundary=b", b"--b\r\n\r\nx\r\n--b\r\n\r\ny", "no closing delimiter"),
        ("multipart/mixed;boundary=b", b"--b\r\nContent-Type: text/plain\r\nbody\r\n--b--", "no empty line"),
        ("multipart/mixed;boundary=b", b"--b\r\nnot a header\r\n\r\nbody\r\n--b--", "malformed header line"),
    ],
)
def test_bad_multipart(content_type: str, body: bytes, reason: str) -> None:
    with pytest.raises(SIPParseError, match=reason) as caught:
        parse_multipart(content_type, body)
    assert caught.value.status == 400


def test_bad_multipart_propagates_through_find_sdp() -> None:
    with pytest.raises(SIPParseError, match="no closing delimiter"):
        find_sdp("multipart/mixed;boundary=b", b"--b\r\nContent-Type: application/sdp\r\n\r\n" + SDP)


def test_part_and_header_limits() -> None:
    at_limit = build_multipart([BodyPart([], b"x")] * MAX_BODY_PARTS, "b")
    assert len(parse_multipart("multipart/mixed;boundary=b", at_limit)) == MAX_BODY_PARTS
    with pytest.raises(SIPParseError, match="more than 64 parts"):
        parse_multipart(
            "multipart/mixed;boundary=b", build_multipart([BodyPart([], b"x")] * (MAX_BODY_PARTS + 1), "b")
        )
    headers = [("X-H", str(i)) for i in range(MAX_PART_HEADERS + 1)]
    with pytest.raises(SIPParseError, match="more than 32 headers"):
        parse_multipart("multipart/mixed;boundary=b", build_multipart([BodyPart(headers, b"x")], "b"))


# build_multipart


def test_build_multipart_layout() -> None:
    body = build_multipart([BodyPart([("Content-Type", "text/plain")], b"Hello")], "xyz")
    assert body == b"--xyz\r\nContent-Type: text/plain\r\n\r\nHello\r\n--xyz--\r\n"


@pytest.mark.parametrize(
    ("parts", "boundary", "reason"),
    [
        ([], "", "invalid multipart boundary"),
        ([], "x" * 71, "invalid multipart boundary"),
        ([], "bad\nboundary", "invalid multipart boundary"),
        ([BodyPart([("Content-Type", "text/plain\r\nX: injected")], b"")], "b", "invalid body part header"),
        ([BodyPart([("Bad Name", "x")], b"")], "b", "invalid body part header"),
        ([BodyPart([], b"contains\r\n--b\r\n")], "b", "contains the multipart boundary"),
    ],
)
def test_build_multipart_refuses_bad_input(parts: list[BodyPart], boundary: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        build_multipart(parts, boundary)


_header = st.tuples(
    st.sampled_from(["Content-Type", "Content-Disposition", "Content-ID", "X-Custom"]),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20),
)
_part = st.builds(BodyPart, st.lists(_header, max_size=3), st.binary(max_size=200))


@given(st.lists(_part, min_size=1, max_size=6))
def test_build_then_parse_round_trips(parts: list[BodyPart]) -> None:
    boundary = "sbc-boundary-0123456789"
    body = build_multipart(parts, boundary)
    assert parse_multipart(f'multipart/mixed; boundary="{boundary}"', body) == parts


@given(st.binary(max_size=400))
def test_arbitrary_bodies_parse_or_raise_sip_parse_error(body: bytes) -> None:
    try:
        parts = parse_multipart("multipart/mixed;boundary=b", b"--b\r\n" + body)
    except SIPParseError:
        return
    assert all(isinstance(part.body, bytes) for part in parts)


def _sip_i(sdp: bytes) -> bytes:
    return (
        b"--b1\r\nContent-Type: application/sdp\r\n\r\n" + sdp + b"\r\n"
        b"--b1\r\nContent-Type: application/ISUP; version=itu-t92+\r\n"
        b"Content-Disposition: signal; handling=optional\r\n\r\n" + ISUP + b"\r\n--b1--\r\n"
    )


def test_rewrite_sdp_replaces_the_sdp_part_and_keeps_the_rest_octet_exact() -> None:
    content_type = "multipart/mixed; boundary=b1"
    out = rewrite_sdp(content_type, _sip_i(SDP), lambda sdp: b"v=0\r\nREWRITTEN\r\n")
    sdp_part, isup_part = parse_multipart(content_type, out)
    assert sdp_part.body == b"v=0\r\nREWRITTEN\r\n"
    assert isup_part.body == ISUP and isup_part.header("Content-Disposition") == "signal; handling=optional"
    # plain SDP, a body without SDP and multipart/signed are handled as they should be
    assert rewrite_sdp("application/sdp", SDP, lambda sdp: b"X") == b"X"
    no_sdp = b"--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b1--\r\n"
    assert rewrite_sdp(content_type, no_sdp, lambda sdp: b"X") is no_sdp
    signed = "multipart/signed; boundary=b1; protocol=application/pkcs7-signature"
    assert rewrite_sdp(signed, _sip_i(SDP), lambda sdp: b"X") == _sip_i(SDP)


def test_rewrite_sdp_descends_nested_multiparts() -> None:
    inner = _sip_i(SDP)
    outer = (
        b"--outer\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n" + inner + b"\r\n"
        b"--outer\r\nContent-Type: text/plain\r\n\r\nnote\r\n--outer--\r\n"
    )
    out = rewrite_sdp("multipart/related; boundary=outer", outer, lambda sdp: b"NEW")
    assert find_sdp("multipart/related; boundary=outer", out) == b"NEW"


def test_rewrite_sdp_refuses_a_malformed_body() -> None:
    with pytest.raises(SIPParseError):
        rewrite_sdp("multipart/mixed; boundary=b1", b"no delimiter at all", lambda sdp: sdp)
