"""The message model: header access and mutation, hot fields, serialisation, the C splitter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.bench_parse import INVITE, OK_200
from sbc.sip import message as m
from sbc.sip.errors import SIPParseError
from sbc.sip.message import Request, Response, make_response, parse_message
from tests.torture import load_manifest

needs_c = pytest.mark.skipif(m._split_head_c is None, reason="C splitter not built")


def test_hot_fields() -> None:
    msg = parse_message(INVITE)
    assert msg.call_id == "3848276298220188511@203.0.113.10"
    assert msg.cseq == (1, "INVITE")
    assert msg.branch == "z9hG4bK-524287-1---a1b2c3d4e5f60718"
    assert msg.from_tag == "9fxced76sl" and msg.to_tag is None
    assert msg.content_type == "application/sdp"
    ok = parse_message(OK_200)
    assert isinstance(ok, Response) and ok.status == 200 and ok.to_tag == "as7d8f9a0b"


def test_unusual_spellings_take_the_slow_paths() -> None:
    data = (
        b"INVITE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h ; branch = z9hG4bKx\r\nf: <sip:a@b> ; tag = 1\r\n"
        b"t: <sip:c@d;tag=uri-param-not-a-tag>\r\ni: abc\r\nCSEQ:  0010   INVITE\r\nl: 0\r\n\r\n"
    )
    msg = parse_message(data)
    assert msg.branch == "z9hG4bKx"
    assert msg.from_tag == "1"
    assert msg.to_tag is None  # a tag inside <URI> is a URI parameter
    assert msg.cseq == (10, "INVITE")
    assert msg.get("Call-ID") == msg.get("i") == "abc"


def test_set_add_remove_keep_order_and_cache_coherent() -> None:
    msg = parse_message(INVITE)
    assert msg.cseq == (1, "INVITE")
    msg.set("CSeq", "2 INVITE")
    assert msg.cseq == (2, "INVITE")
    msg.add("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKtop", first=True)
    assert msg.branch == "z9hG4bKtop"
    assert msg.remove_first("Via") == "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKtop"
    assert msg.branch == "z9hG4bK-524287-1---a1b2c3d4e5f60718"
    assert msg.remove("Supported") == 1 and "Supported" not in msg
    names = [n for n, _ in msg.headers]
    assert names.index("Via") < names.index("Call-ID")


def test_serialise_recomputes_content_length() -> None:
    msg = parse_message(INVITE)
    msg.body = b"v=0\r\n"
    again = parse_message(msg.to_bytes())
    assert again.get("Content-Length") == "5" and again.body == b"v=0\r\n"
    bare = Request("OPTIONS", "sip:x", [("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")])
    assert b"Content-Length: 0\r\n\r\n" in bare.to_bytes()


def test_make_response_copies_rfc3261_headers_and_adds_tag() -> None:
    req = parse_message(INVITE)
    resp = make_response(req, 486, to_tag="abc", headers=[("Retry-After", "5")])
    assert resp.status == 486 and resp.reason == "Busy Here"
    assert resp.to_tag == "abc" and resp.from_tag == req.from_tag
    assert resp.get("Via") == req.get("Via") and resp.call_id == req.call_id
    assert resp.get("Retry-After") == "5" and resp.get("Contact") is None


@pytest.mark.parametrize(
    "data, status",
    [
        (b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\nContent-Length: 10\r\n\r\nshort", 400),
        (b"INVITE sip:a@b SIP/3.0\r\n\r\n", 505),
        (b"INVITE sip:a@b\r\n\r\n", 400),
        (b"INV@TE sip:a@b SIP/2.0\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nNoColonHere\r\n\r\n", 400),
        (b"SIP/2.0 99 Low\r\n\r\n", 400),
        (b"SIP/2.0 2000 OK\r\n\r\n", 400),
        (b"SIP/1.0 200 OK\r\n\r\n", 505),
        (b"no blank line at all", 400),
    ],
)
def test_bad_framing(data: bytes, status: int) -> None:
    with pytest.raises(SIPParseError) as e:
        parse_message(data)
    assert e.value.status == status and e.value.reason


def test_stream_requires_content_length() -> None:
    with pytest.raises(SIPParseError, match="Content-Length"):
        parse_message(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n", stream=True)


def _outcome(data: bytes, *, use_c: bool):
    """What parse_message makes of ``data`` with or without the C splitter."""
    saved = m._split_head_c
    if not use_c:
        m._split_head_c = None
    try:
        msg = parse_message(data)
    except SIPParseError:
        return "refused"
    finally:
        m._split_head_c = saved
    return msg.start_line(), msg.headers, msg.body


@needs_c
@pytest.mark.parametrize("case", load_manifest(), ids=lambda c: c.file)
def test_c_splitter_matches_python_on_the_corpus(case) -> None:
    assert _outcome(case.data, use_c=True) == _outcome(case.data, use_c=False)


_line = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=30
)


@needs_c
@given(
    names=st.lists(st.sampled_from(["Via", "v", "To", "X-Odd", "content-length", "CSeq", " "]), max_size=8),
    values=st.lists(_line, min_size=8, max_size=8),
    folds=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_c_splitter_matches_python_on_generated_heads(names, values, folds) -> None:
    lines = ["INVITE sip:a@b SIP/2.0"]
    for name, value, fold in zip(names, values, folds, strict=False):
        lines.append(f"{name}:{value}")
        if fold:
            lines.append(f"  {value}")
    data = ("\r\n".join(lines) + "\r\n\r\nbody").encode("utf-8", "surrogateescape")
    assert _outcome(data, use_c=True) == _outcome(data, use_c=False)


@needs_c
def test_c_splitter_reuses_known_names_only_with_the_mapping_it_learnt_them_from() -> None:
    """The C splitter remembers spellings it has mapped (a memcmp instead of a new str and a dict
    lookup): a message parsed again maps alike, and a caller's own mapping is never overridden."""
    data = b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h\r\ncall-id: x\r\nCall-ID: y\r\nContent-Length: 0\r\n\r\n"
    first = parse_message(data)
    again = parse_message(data)
    assert again.headers == first.headers == _outcome(data, use_c=False)[1]
    assert [n for n, _ in again.headers] == ["Via", "Call-ID", "Call-ID", "Content-Length"]
    other = m._split_head_c(data, {"v": "Other"}, str)
    assert other[1][:3] == [("Other", "SIP/2.0/UDP h"), ("call-id", "x"), ("Call-ID", "y")]


@pytest.mark.parametrize(
    "folded",
    [b"Via: :\r\n \r\n :", b"Via: : \r\n\t \r\n  :", b"Via:\r\n :", b"Subject: a\r\n  \r\n b"],
)
def test_blank_fold_lines_collapse_to_one_space_in_both_splitters(folded) -> None:
    """A run of folds (blank continuation lines included) is one LWS (RFC 3261 §7.3.1);
    hypothesis once found the Python twin keeping two spaces where C kept one."""
    data = b"OPTIONS sip:a@b SIP/2.0\r\n" + folded + b"\r\nContent-Length: 0\r\n\r\n"
    assert _outcome(data, use_c=True) == _outcome(data, use_c=False)


@needs_c
@given(values=st.lists(st.text(alphabet="ab:\r\n", max_size=12), min_size=1, max_size=6))
def test_c_splitter_ends_lines_at_crlf_only(values) -> None:
    """The C splitter finds line ends with memchr for LF and a look back for CR: only a CR LF
    pair ends a line; a bare CR or LF stays in its value (as it always has: the Python twin
    differs there, so the reference here is a plain split on CR LF)."""
    lines = ["OPTIONS sip:a@b SIP/2.0"] + [f"X-{i}:{v}" for i, v in enumerate(values)]
    data = ("\r\n".join(lines) + "\r\nContent-Length:0\r\n\r\n").encode()
    head = data[: data.index(b"\r\n\r\n")].decode()
    expected = [tuple(line.split(":", 1)) for line in head.split("\r\n")[1:]]
    if any(len(pair) != 2 for pair in expected):
        with pytest.raises(ValueError, match="colon"):
            m._split_head_c(data, {}, str)
        return
    result = m._split_head_c(data, {}, str)
    assert result[0] == "OPTIONS sip:a@b SIP/2.0"
    assert result[1] == expected
