"""Tests for sbc.sip.headers: structured header values (Via, name-addr, Contact, CSeq, params, auth)."""

from __future__ import annotations

import importlib.util
import re
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sbc.sip.errors import SIPParseError
from sbc.sip.headers import (
    COMPACT_FORMS,
    CONTENT_LENGTH_MAX,
    CSEQ_MAX,
    DELTA_SECONDS_MAX,
    MAX_FORWARDS_MAX,
    NameAddr,
    Via,
    canonical_name,
    format_params,
    parse_auth_params,
    parse_contact,
    parse_cseq,
    parse_name_addr,
    parse_params,
    parse_uint,
    parse_via,
    quote_string,
    split_commas,
    unquote_string,
)
from sbc.sip.uri import AbsoluteURI, SipURI, TelURI, parse_uri

TORTURE = Path(__file__).resolve().parents[2] / "shared" / "sip-torture"
_FOLD_RE = re.compile(rb"\r\n[ \t]+")


def torture_headers(name: str) -> list[tuple[str, str]]:
    """(header name, value) pairs of a torture file, unfolded and stripped the way the message layer
    hands values over. A test helper only: it knows nothing of bodies, start lines or limits."""
    head = (TORTURE / name).read_bytes().split(b"\r\n\r\n", 1)[0]
    lines = _FOLD_RE.sub(b" ", head).split(b"\r\n")[1:]
    pairs = []
    for line in lines:
        field_name, _, value = line.decode("utf-8", "surrogateescape").partition(":")
        pairs.append((field_name.strip(), value.strip()))
    return pairs


def values(name: str, header: str) -> list[str]:
    """Every value of ``header`` (long or compact name, any case) in a torture file."""
    wanted = canonical_name(header)
    return [v for n, v in torture_headers(name) if canonical_name(n).lower() == wanted.lower()]


def one(name: str, header: str) -> str:
    found = values(name, header)
    assert len(found) == 1, (name, header, found)
    return found[0]


# --------------------------------------------------------------------------------------------------------
# Header names


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("call-id", "Call-ID"),
        ("CALL-ID", "Call-ID"),
        ("cseq", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("max-forwards", "Max-Forwards"),
        ("MaX-fOrWaRdS", "Max-Forwards"),
        ("content-length", "Content-Length"),
        ("rack", "RAck"),
        ("rseq", "RSeq"),
        ("mime-version", "MIME-Version"),
        ("sip-etag", "SIP-ETag"),
        ("p-asserted-identity", "P-Asserted-Identity"),
        ("v", "Via"),
        ("V", "Via"),
        ("i", "Call-ID"),
        ("L", "Content-Length"),
        ("m", "Contact"),
        ("NewFangledHeader", "NewFangledHeader"),
        ("x-custom", "x-custom"),
    ],
)
def test_canonical_name(raw: str, canonical: str) -> None:
    assert canonical_name(raw) == canonical
    assert canonical_name(raw) == canonical  # cached path gives the same answer


def test_compact_forms_table() -> None:
    assert len(COMPACT_FORMS) == 20
    assert COMPACT_FORMS["i"] == "Call-ID"
    assert COMPACT_FORMS["y"] == "Identity"
    assert COMPACT_FORMS["n"] == "Identity-Info"
    assert all(len(k) == 1 and k.islower() for k in COMPACT_FORMS)
    for letter, name in COMPACT_FORMS.items():
        assert canonical_name(letter.upper()) == name
        assert canonical_name(name.upper()) == name


def test_canonical_name_cache_is_bounded() -> None:
    for i in range(10_000):
        assert canonical_name(f"X-Random-{i}") == f"X-Random-{i}"
    from sbc.sip import headers

    assert len(headers._canonical_cache) <= headers.CANONICAL_CACHE_MAX


# --------------------------------------------------------------------------------------------------------
# split_commas


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", []),
        ("   ", []),
        ("a", ["a"]),
        ("a, b ,c", ["a", "b", "c"]),
        ('"x, y" <sip:a@b>, <sip:c@d>', ['"x, y" <sip:a@b>', "<sip:c@d>"]),
        ("<sip:a,b@c>;p=1, <sip:d@e>", ["<sip:a,b@c>;p=1", "<sip:d@e>"]),
        (r'"a \", b", c', [r'"a \", b"', "c"]),
        (r'"a \\", c', [r'"a \\"', "c"]),
        ('<sip:a"b@c>, d', ['<sip:a"b@c>', "d"]),
        ('"<", x', ['"<"', "x"]),
        ("a,,b", ["a", "", "b"]),
        (",", ["", ""]),
        (";;,,;;,;", [";;", "", ";;", ";"]),
        ('Digest realm="a,b", nonce="c"', ['Digest realm="a,b"', 'nonce="c"']),
    ],
)
def test_split_commas(value: str, expected: list[str]) -> None:
    assert split_commas(value) == expected


@pytest.mark.parametrize("value", ['"abc', 'a, "b', r'"a\"', '"a", "b'])
def test_split_commas_unterminated_quote(value: str) -> None:
    with pytest.raises(SIPParseError, match="Contact: unterminated quoted string"):
        split_commas(value, what="Contact")


# --------------------------------------------------------------------------------------------------------
# parse_params / format_params


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        (";tag=1", {"tag": "1"}),
        ("tag=1", {"tag": "1"}),
        (";   tag    = 1918181833n", {"tag": "1918181833n"}),
        ("; newparam = newvalue ; secondparam ; q = 0.33", {"newparam": "newvalue", "secondparam": None, "q": "0.33"}),
        (';X="a;b=c"', {"x": '"a;b=c"'}),
        (';p=""', {"p": '""'}),
        (";received=[2001:db8::1];rport", {"received": "[2001:db8::1]", "rport": None}),
        (";received=2001:db8::9:255", {"received": "2001:db8::9:255"}),
        (";Lr", {"lr": None}),
    ],
)  # fmt: skip
def test_parse_params(text: str, expected: dict[str, str | None]) -> None:
    params = parse_params(text)
    assert params == expected
    assert list(params) == list(expected)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (";;", "empty parameter"),
        (";", "empty parameter"),
        (";a=1;", "empty parameter"),
        (";a;;b", "empty parameter"),
        (";=1", "empty parameter"),
        (";a b=1", "bad parameter name"),
        (';"a"=1', "bad parameter name"),
        (";a@b", "bad parameter name"),
        (";tag=", "'=' but no value"),
        (";tag = ", "'=' but no value"),
        (";a=1;A=2", "duplicate parameter 'a'"),
        (';a="x', "unterminated quoted string"),
        (';a="x"y', "bad quoted value"),
        (";a=x y", "bad value"),
        (";a=x,y", "bad value"),
        (";a=<x>", "bad value"),
        (";a=\u00e9", "bad value"),
    ],
)
def test_parse_params_refuses(text: str, reason: str) -> None:
    with pytest.raises(SIPParseError, match=f"^Via: .*{re.escape(reason)}"):
        parse_params(text, what="Via")


def test_format_params_round_trip() -> None:
    params = {"tag": "1", "lr": None, "x": '"a b"'}
    assert format_params(params) == ';tag=1;lr;x="a b"'
    assert parse_params(format_params(params)) == params
    assert format_params({}) == ""


# --------------------------------------------------------------------------------------------------------
# quote_string / unquote_string


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("", '""'),
        ("Alice", '"Alice"'),
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("BEL:\x07", '"BEL:\\\x07"'),
        ("\u00e9t\u00e9", '"\u00e9t\u00e9"'),
    ],
)
def test_quote_unquote(text: str, quoted: str) -> None:
    assert quote_string(text) == quoted
    assert unquote_string(quoted) == text


def test_quote_string_cannot_inject_headers() -> None:
    quoted = quote_string("evil\r\nVia: SIP/2.0/UDP attacker")
    assert "\r" not in quoted and "\n" not in quoted
    assert quoted == '"evil  Via: SIP/2.0/UDP attacker"'


def test_unquote_string_leaves_tokens_alone() -> None:
    assert unquote_string("token") == "token"
    assert unquote_string("") == ""


@pytest.mark.parametrize("text", ['"abc', '"abc\\"', '"a"b', '"a" "b"', '"'])
def test_unquote_string_refuses_malformed(text: str) -> None:
    with pytest.raises(SIPParseError, match="malformed quoted string"):
        unquote_string(text)


@given(st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=30))
def test_quote_unquote_property(text: str) -> None:
    assert unquote_string(quote_string(text)) == text


# --------------------------------------------------------------------------------------------------------
# parse_name_addr


def test_name_addr_quoted_display_name() -> None:
    na = parse_name_addr('"Bob Smith" <sip:bob@biloxi.com>;tag=a6c85cf')
    assert na == NameAddr("Bob Smith", SipURI("sip", "bob", None, "biloxi.com"), {"tag": "a6c85cf"})
    assert na.tag == "a6c85cf"
    assert str(na) == '"Bob Smith" <sip:bob@biloxi.com>;tag=a6c85cf'


def test_name_addr_token_display_name_is_normalised_to_single_spaces() -> None:
    na = parse_name_addr("Bob   Smith <sip:bob@biloxi.com>")
    assert na.display_name == "Bob Smith"
    assert str(na) == '"Bob Smith" <sip:bob@biloxi.com>'


def test_name_addr_without_display_name() -> None:
    na = parse_name_addr("<sip:bob@biloxi.com;transport=tcp>;expires=60")
    assert na.display_name is None
    assert isinstance(na.uri, SipURI) and na.uri.params == {"transport": "tcp"}
    assert na.params == {"expires": "60"}
    assert na.tag is None
    assert str(na) == "<sip:bob@biloxi.com;transport=tcp>;expires=60"


def test_name_addr_empty_quoted_display_name() -> None:
    na = parse_name_addr('"" <sip:a@b>')
    assert na.display_name == ""
    assert str(na) == '"" <sip:a@b>'


def test_addr_spec_params_belong_to_header() -> None:
    na = parse_name_addr("sip:alice@atlanta.com;tag=1928301774;lr")
    assert na.display_name is None
    assert na.uri == SipURI("sip", "alice", None, "atlanta.com")
    assert na.params == {"tag": "1928301774", "lr": None}
    assert str(na) == "<sip:alice@atlanta.com>;tag=1928301774;lr"


def test_addr_spec_with_lws_before_params() -> None:
    na = parse_name_addr("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n")
    assert na.tag == "1918181833n"


def test_name_addr_with_tel_and_absolute_uris() -> None:
    assert parse_name_addr("<tel:+12125551212>;tag=1").uri == TelURI("+12125551212")
    assert parse_name_addr("isbn:2983792873").uri == AbsoluteURI("isbn", "2983792873")


def test_name_addr_quoted_params_with_angle_brackets() -> None:
    na = parse_name_addr('<sip:a@b>;+sip.instance="<urn:uuid:0001>"')
    assert na.params == {"+sip.instance": '"<urn:uuid:0001>"'}


def test_addr_spec_quoted_param_with_angle_bracket() -> None:
    na = parse_name_addr('sip:a@b;x="<y>"')
    assert na.uri == SipURI(host="b", user="a")
    assert na.params == {"x": '"<y>"'}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty value"),
        ('"Mr. J. User <sip:j.user@example.com>', "unterminated quoted string"),
        ("Bell, Alexander <sip:a.g.bell@example.com>;tag=43", "display name must be tokens"),
        ("Watson, Thomas <sip:t.watson@example.org>", "display name must be tokens"),
        ("J\u00f6rg <sip:j@example.org>", "display name must be tokens"),
        ('Bob "x" <sip:b@c>', "display name must be tokens"),
        ('"Watson, Thomas" < sip:t.watson@example.org >', "whitespace inside '<...>'"),
        ("<sip:a@b >", "whitespace inside '<...>'"),
        ("< sip:a@b>", "whitespace inside '<...>'"),
        ('"Bob" sip:b@c', "not followed by '<'"),
        ("<sip:a@b", "'<' without '>'"),
        ("Bob <sip:a@b;tag=1", "'<' without '>'"),
        ("<>", "empty URI"),
        ("<sip:a@b> x", "unexpected text after '>'"),
        ("<sip:a@b>;;", "empty parameter"),
        ("<sip:a@b>;tag", ""),  # flag tag parses; asserted separately below
        ("sip:user@example.com?Route=%3Csip:sip.example.com%3E", "must be enclosed in '<>'"),
        ("sip:a,b@example.com", "must be enclosed in '<>'"),
        ("sip:a@b c", "whitespace inside URI"),
        ("sip:a@b;tag=1 <x>", "bad value"),
        ("<sip:a@b:99999>", "port"),
        ("<<sip:a@b>>", "'<' inside URI"),
        ("a@b", "scheme"),
    ],
)
def test_name_addr_refuses(value: str, reason: str) -> None:
    if value == "<sip:a@b>;tag":
        assert parse_name_addr(value).params == {"tag": None}
        return
    with pytest.raises(SIPParseError, match=f"^From: .*{re.escape(reason)}") as info:
        parse_name_addr(value, what="From")
    assert info.value.status == 400


# --------------------------------------------------------------------------------------------------------
# parse_contact


def test_contact_star() -> None:
    assert parse_contact("*") == "*"
    assert parse_contact("  *  ") == "*"


def test_contact_list() -> None:
    contacts = parse_contact('"A, B" <sip:a@h1>;q=0.7, sip:b@h2;expires=60 , <sip:c@h3>')
    assert contacts != "*"
    assert [c.display_name for c in contacts] == ["A, B", None, None]
    assert [str(c.uri) for c in contacts] == ["sip:a@h1", "sip:b@h2", "sip:c@h3"]
    assert contacts[0].params == {"q": "0.7"}
    assert contacts[1].params == {"expires": "60"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty value"),
        ("<sip:a@b>,", "empty element"),
        ("<sip:a@b>,,<sip:c@d>", "empty element"),
        ("*, <sip:a@b>", "'*' mixed"),
        ("<sip:a@b>, *", "'*' mixed"),
        ('"Joe" <sip:joe@example.org>;;;;', "empty parameter"),
        ("*;expires=0", "scheme"),
        ('"x <sip:a@b>', "unterminated"),
    ],
)
def test_contact_refuses(value: str, reason: str) -> None:
    with pytest.raises(SIPParseError, match=f"^Contact: .*{re.escape(reason)}"):
        parse_contact(value)


# --------------------------------------------------------------------------------------------------------
# parse_via


def test_via_basic() -> None:
    (via,) = parse_via("SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport;received=192.0.2.1")
    assert via == Via(
        "SIP/2.0",
        "UDP",
        "pc33.atlanta.com",
        5066,
        {"branch": "z9hG4bK776asdhds", "rport": None, "received": "192.0.2.1"},
    )
    assert via.branch == "z9hG4bK776asdhds"
    assert via.rport == ""
    assert via.received == "192.0.2.1"
    assert via.maddr is None
    assert via.ttl is None
    assert via.sent_by == ("pc33.atlanta.com", 5066)
    assert str(via) == "SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport;received=192.0.2.1"


def test_via_properties_when_absent_and_present() -> None:
    (via,) = parse_via("SIP/2.0/udp Host.Example.com;rport=5070;maddr=224.2.0.1;ttl=16")
    assert via.transport == "UDP"
    assert via.host == "host.example.com"
    assert via.port is None
    assert via.branch is None
    assert via.received is None
    assert via.rport == "5070"
    assert via.maddr == "224.2.0.1"
    assert via.ttl == 16
    (bare,) = parse_via("SIP/2.0/TCP h")
    assert bare.rport is None


def test_via_lws_everywhere_the_grammar_allows() -> None:
    (via,) = parse_via("SIP  /   2.0   / UDP  192.0.2.2 ; branch = x ; rport")
    assert via == Via("SIP/2.0", "UDP", "192.0.2.2", None, {"branch": "x", "rport": None})
    (via,) = parse_via("SIP/2.0/UDP host : 5060;branch=x")
    assert via.sent_by == ("host", 5060)


def test_via_multiple_values_in_one_header() -> None:
    vias = parse_via(
        "SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bK2"
    )
    assert [v.sent_by for v in vias] == [("a.example.com", None), ("[2001:db8::1]", 5061)]
    assert [v.transport for v in vias] == ["UDP", "TCP"]


def test_via_received_ipv6_with_and_without_brackets() -> None:
    (with_delim,) = parse_via("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3-111")
    (no_delim,) = parse_via("SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3")
    assert with_delim.received == no_delim.received == "2001:db8::9:255"
    assert with_delim.params["received"] == "[2001:db8::9:255]"
    assert str(with_delim) == "SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3-111"


def test_via_str_brackets_bare_ipv6() -> None:
    assert str(Via(host="2001:db8::1", port=5060)) == "SIP/2.0/UDP [2001:db8::1]:5060"


def test_via_unknown_protocol_kept_for_the_message_layer() -> None:
    (via,) = parse_via("SIP/7.0/UDP h;branch=x")
    assert via.protocol == "SIP/7.0"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty value"),
        ("SIP/2.0/UDP 192.0.2.15;;,;,,", "empty parameter"),
        ("SIP/2.0/UDP h;branch=x,", "empty element"),
        ("SIP/2.0/UDP h;branch=x,,SIP/2.0/UDP i", "empty element"),
        ("SIP/2.0/UDP", "missing sent-by host"),
        ("SIP/2.0/UDP ;branch=x", "missing sent-by host"),
        ("SIP/2.0/UDP;branch=x", "missing sent-by host"),
        ("SIP/2.0 h", "malformed sent-protocol"),
        ("SIP/2.0/ h", "missing sent-by host"),
        ("SIP/2.0/UDP:5060", "malformed sent-protocol"),
        ("SIP 2.0 UDP h", "malformed sent-protocol"),
        ("SIP/2.0/UDP h extra", "whitespace inside sent-by"),
        ("SIP/2.0/UDP h:", "bad port"),
        ("SIP/2.0/UDP h:abc", "bad port"),
        ("SIP/2.0/UDP h:70000", "out of range"),
        ("SIP/2.0/UDP 2001:db8::1", "IPv6 address not enclosed in brackets"),
        ("SIP/2.0/UDP [2001:db8:::1]", "malformed IPv6"),
        ("SIP/2.0/UDP h;branch", "branch without a value"),
        ("SIP/2.0/UDP h;branch=", "'=' but no value"),
        ("SIP/2.0/UDP h;branch=a;branch=b", "duplicate parameter"),
        ("SIP/2.0/UDP h;received", "received without a value"),
        ("SIP/2.0/UDP h;received=host.example.com", "received is not an IP address"),
        ("SIP/2.0/UDP h;received=[192.0.2.1", "received is not an IP address"),
        ("SIP/2.0/UDP h;received=2001:db8:::1", "received is not an IP address"),
        ("SIP/2.0/UDP h;rport=abc", "bad rport"),
        ("SIP/2.0/UDP h;rport=65536", "bad rport"),
        ("SIP/2.0/UDP h;ttl=256", "bad ttl"),
        ("SIP/2.0/UDP h;ttl=0001", "bad ttl"),
        ("SIP/2.0/UDP h;maddr", "maddr without a value"),
        ('SIP/2.0/UDP h;branch="x', "unterminated"),
    ],
)
def test_via_refuses(value: str, reason: str) -> None:
    with pytest.raises(SIPParseError, match=f"^Via: .*{re.escape(reason)}") as info:
        parse_via(value)
    assert info.value.status == 400


# --------------------------------------------------------------------------------------------------------
# Scalars: parse_uint, parse_cseq


@pytest.mark.parametrize(
    ("value", "maximum", "expected"),
    [
        ("0", MAX_FORWARDS_MAX, 0),
        ("70", MAX_FORWARDS_MAX, 70),
        ("0068", MAX_FORWARDS_MAX, 68),
        ("255", MAX_FORWARDS_MAX, 255),
        ("4294967295", DELTA_SECONDS_MAX, 2**32 - 1),
        ("000000000000000000000000000001", DELTA_SECONDS_MAX, 1),
        ("150", CONTENT_LENGTH_MAX, 150),
    ],
)
def test_parse_uint(value: str, maximum: int, expected: int) -> None:
    assert parse_uint(value, "Max-Forwards", maximum) == expected


@pytest.mark.parametrize(
    ("value", "maximum", "reason"),
    [
        ("", MAX_FORWARDS_MAX, "not an unsigned integer"),
        ("-1", MAX_FORWARDS_MAX, "not an unsigned integer"),
        ("+1", MAX_FORWARDS_MAX, "not an unsigned integer"),
        ("1.0", MAX_FORWARDS_MAX, "not an unsigned integer"),
        ("7 0", MAX_FORWARDS_MAX, "not an unsigned integer"),
        ("0x10", MAX_FORWARDS_MAX, "not an unsigned integer"),
        ("\u0663", MAX_FORWARDS_MAX, "not an unsigned integer"),
        ("\u00b2", MAX_FORWARDS_MAX, "not an unsigned integer"),
        ("300", MAX_FORWARDS_MAX, "out of range"),
        ("256", MAX_FORWARDS_MAX, "out of range"),
        ("4294967296", DELTA_SECONDS_MAX, "out of range"),
        ("1" + "0" * 100, DELTA_SECONDS_MAX, "out of range"),
        ("9" * 10_000, CONTENT_LENGTH_MAX, "out of range"),
    ],
    ids=lambda v: v[:20] if isinstance(v, str) else str(v),
)
def test_parse_uint_refuses(value: str, maximum: int, reason: str) -> None:
    with pytest.raises(SIPParseError, match=f"^Expires: .*{reason}"):
        parse_uint(value, "Expires", maximum)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1 INVITE", (1, "INVITE")),
        ("0009 INVITE", (9, "INVITE")),
        ("0 ACK", (0, "ACK")),
        ("2147483647 BYE", (CSEQ_MAX, "BYE")),
        ("139122385 !interesting-Method0123456789_*+`.%indeed'~", (139122385, "!interesting-Method0123456789_*+`.%indeed'~")),
        ("  5   register ", (5, "register")),
    ],
)  # fmt: skip
def test_parse_cseq(value: str, expected: tuple[int, str]) -> None:
    assert parse_cseq(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "expected a sequence number and a method"),
        ("INVITE", "expected a sequence number and a method"),
        ("1", "expected a sequence number and a method"),
        ("1 INVITE extra", "expected a sequence number and a method"),
        ("2147483648 INVITE", "out of range"),
        ("36893488147419103232 REGISTER", "out of range"),
        ("-1 INVITE", "not an unsigned integer"),
        ("x1 INVITE", "not an unsigned integer"),
        ("1 INV@ITE", "method is not a token"),
        ("1 \u00e9", "method is not a token"),
    ],
)
def test_parse_cseq_refuses(value: str, reason: str) -> None:
    with pytest.raises(SIPParseError, match=f"^CSeq: .*{reason}"):
        parse_cseq(value)


# --------------------------------------------------------------------------------------------------------
# parse_auth_params


def test_auth_digest_response() -> None:
    scheme, params = parse_auth_params(
        'Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", '
        'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41", '
        "algorithm=MD5"
    )
    assert scheme == "Digest"
    assert params == {
        "username": "bob",
        "realm": "biloxi.com",
        "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "uri": "sip:bob@biloxi.com",
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "0a4f113b",
        "response": "6629fae49393a05397450978507c4ef1",
        "opaque": "5ccc069c403ebaf9f0171e9517f40e41",
        "algorithm": "MD5",
    }


def test_auth_lws_and_escapes() -> None:
    scheme, params = parse_auth_params('digest  Realm = "a \\"b\\", c" ,  QOP="auth,auth-int"')
    assert scheme == "digest"
    assert params == {"realm": 'a "b", c', "qop": "auth,auth-int"}


def test_auth_scheme_only() -> None:
    assert parse_auth_params("Digest") == ("Digest", {})


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty value"),
        ("Di@gest realm=x", "bad auth scheme"),
        ("Digest realm", "without '='"),
        ("Digest dXNlcjpwYXNz", "without '='"),
        ("Digest realm=x,, nonce=y", "empty auth-param"),
        ("Digest realm=x,", "empty auth-param"),
        ("Digest realm=x, REALM=y", "duplicate auth-param"),
        ('Digest realm="x', "unterminated quoted string"),
        ('Digest realm="x"y', "bad quoted value"),
        ("Digest realm=", "bad value"),
        ("Digest realm=a b", "bad value"),
        ("Digest re alm=x", "bad auth-param name"),
    ],
)
def test_auth_refuses(value: str, reason: str) -> None:
    with pytest.raises(SIPParseError, match=f"^Authorization: .*{re.escape(reason)}"):
        parse_auth_params(value)


# --------------------------------------------------------------------------------------------------------
# Torture corpus: header values taken from the files themselves


def test_torture_wsinv() -> None:
    f = "rfc4475/wsinv.dat"
    to = parse_name_addr(one(f, "To"), what="To")
    assert to.uri == parse_uri("sip:vivekg@chair-dnrc.example.com")
    assert to.tag == "1918181833n"
    frm = parse_name_addr(one(f, "From"), what="From")
    assert frm.display_name == 'J Rosenberg \\"'
    assert frm.tag == "98asjd8"
    assert parse_uint(one(f, "Max-Forwards"), "Max-Forwards", MAX_FORWARDS_MAX) == 68
    assert parse_uint(one(f, "Content-Length"), "Content-Length", CONTENT_LENGTH_MAX) == 150
    assert parse_cseq(one(f, "CSeq")) == (9, "INVITE")
    vias = [v for value in values(f, "Via") for v in parse_via(value)]
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert all(v.protocol == "SIP/2.0" for v in vias)
    (contact,) = parse_contact(one(f, "Contact"))
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert one(f, "Subject") == ""
    assert split_commas(one(f, "Subject")) == []
    route = parse_name_addr(one(f, "Route"))
    assert isinstance(route.uri, SipURI) and route.uri.lr
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}


def test_torture_intmeth() -> None:
    f = "rfc4475/intmeth.dat"
    (via,) = parse_via(one(f, "Via"))
    assert via.branch == "z9hG4bK-.!%66*_+`'~"
    to = parse_name_addr(one(f, "To"), what="To")
    assert to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert isinstance(to.uri, SipURI) and to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert parse_name_addr(str(to)) == to
    frm = parse_name_addr(one(f, "From"), what="From")
    assert frm.display_name == "token1~` token2'+_ token3*%!.-"
    assert frm.tag == "_token~1'+`*%!-."
    assert (
        frm.params["fromparam''~+*_!.-%"] == '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"'
    )
    assert parse_cseq(one(f, "CSeq")) == (139122385, "!interesting-Method0123456789_*+`.%indeed'~")
    assert parse_uint(one(f, "Max-Forwards"), "Max-Forwards", MAX_FORWARDS_MAX) == 255


def test_torture_esc01() -> None:
    f = "rfc4475/esc01.dat"
    to = parse_name_addr(one(f, "To"))
    assert isinstance(to.uri, SipURI) and to.uri.user == "user"
    frm = parse_name_addr(one(f, "From"))
    assert isinstance(frm.uri, SipURI) and frm.uri.user == "I have spaces"
    (contact,) = parse_contact(one(f, "Contact"))
    assert isinstance(contact.uri, SipURI) and contact.uri.user == "caller" and contact.uri.lr


def test_torture_escnull_contacts() -> None:
    contacts = [c for v in values("rfc4475/escnull.dat", "Contact") for c in parse_contact(v)]
    assert [c.uri.user for c in contacts if isinstance(c.uri, SipURI)] == ["\x00", "\x00\x00"]


def test_torture_esc02_percent_in_quoted_display_name_and_branch() -> None:
    f = "rfc4475/esc02.dat"
    assert parse_name_addr(one(f, "To")).display_name == "%Z%45"
    assert parse_via(one(f, "Via"))[0].branch == "z9hG4bK209%fzsnel234"
    assert parse_cseq(one(f, "CSeq")) == (29344, "RE%47IST%45R")


def test_torture_lwsdisp_no_space_before_bracket() -> None:
    frm = parse_name_addr(one("rfc4475/lwsdisp.dat", "From"))
    assert frm.display_name == "caller"
    assert frm.tag == "323"


def test_torture_longreq() -> None:
    f = "rfc4475/longreq.dat"
    vias = [v for value in values(f, "Via") for v in parse_via(value)]
    assert len(vias) == 34
    assert vias[-1].received == "192.0.2.5"
    to = parse_name_addr(one(f, "To"))
    assert isinstance(to.uri, SipURI) and to.uri.port == 6000 and len(to.uri.params) == 3
    frm = parse_name_addr(one(f, "From"))
    assert frm.tag is not None and frm.tag.startswith("12982982")
    assert len(frm.params) == 3
    (contact,) = parse_contact(one(f, "Contact"))
    assert isinstance(contact.uri, SipURI) and contact.uri.user == "amazinglylongcallername" * 5


def test_torture_transports_unknown_transport_is_legal() -> None:
    vias = [parse_via(v)[0] for v in values("rfc4475/transports.dat", "Via")]
    assert [v.transport for v in vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_torture_semiuri_accept_list() -> None:
    accept = split_commas(one("rfc4475/semiuri.dat", "Accept"))
    assert accept == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_torture_badinv01_refused() -> None:
    f = "rfc4475/badinv01.dat"
    with pytest.raises(SIPParseError, match="^Via: empty parameter"):
        parse_via(one(f, "Via"))
    with pytest.raises(SIPParseError, match="^Contact: empty parameter"):
        parse_contact(one(f, "Contact"))


def test_torture_scalar02_out_of_range() -> None:
    f = "rfc4475/scalar02.dat"
    with pytest.raises(SIPParseError, match="^CSeq: value out of range"):
        parse_cseq(one(f, "CSeq"))
    with pytest.raises(SIPParseError, match="^Max-Forwards: value out of range"):
        parse_uint(one(f, "Max-Forwards"), "Max-Forwards", MAX_FORWARDS_MAX)
    with pytest.raises(SIPParseError, match="^Expires: value out of range"):
        parse_uint(one(f, "Expires"), "Expires", DELTA_SECONDS_MAX)
    # The contact itself is well formed; its expires value is out of range for the registrar to judge.
    (contact,) = parse_contact(one(f, "Contact"))
    expires = contact.params["expires"]
    assert expires == "280297596632815"
    with pytest.raises(SIPParseError, match="out of range"):
        parse_uint(expires, "Contact expires", DELTA_SECONDS_MAX)


def test_torture_scalarlg_out_of_range() -> None:
    f = "rfc4475/scalarlg.dat"
    with pytest.raises(SIPParseError, match="^CSeq: value out of range"):
        parse_cseq(one(f, "CSeq"))
    with pytest.raises(SIPParseError, match="^Retry-After: value out of range"):
        parse_uint(one(f, "Retry-After"), "Retry-After", DELTA_SECONDS_MAX)
    assert parse_via(one(f, "Via"))[0].received == "192.0.2.129"


def test_torture_quotbal_refused() -> None:
    with pytest.raises(SIPParseError, match="^To: unterminated quoted string"):
        parse_name_addr(one("rfc4475/quotbal.dat", "To"), what="To")


def test_torture_regbadct_refused() -> None:
    with pytest.raises(SIPParseError, match="must be enclosed in '<>'"):
        parse_contact(one("rfc4475/regbadct.dat", "Contact"))


def test_torture_regescrt_accepted_in_brackets() -> None:
    (contact,) = parse_contact(one("rfc4475/regescrt.dat", "Contact"))
    assert isinstance(contact.uri, SipURI)
    assert contact.uri.headers == {"Route": "<sip:sip.example.com>"}


def test_torture_badaspec_refused() -> None:
    f = "rfc4475/badaspec.dat"
    assert parse_name_addr(one(f, "From")).display_name == "Bell, Alexander"
    with pytest.raises(SIPParseError, match="^To: whitespace inside '<...>'"):
        parse_name_addr(one(f, "To"), what="To")


def test_torture_baddn_refused() -> None:
    f = "rfc4475/baddn.dat"
    for header in ("From", "To"):
        with pytest.raises(SIPParseError, match="display name must be tokens or a quoted string"):
            parse_name_addr(one(f, header), what=header)


def test_torture_unksm2_unknown_schemes_in_headers() -> None:
    f = "rfc4475/unksm2.dat"
    assert parse_name_addr(one(f, "To")).uri == AbsoluteURI("isbn", "2983792873")
    frm = parse_name_addr(one(f, "From"))
    assert frm.uri == AbsoluteURI("http", "//www.example.com") and frm.tag == "3234233"
    (contact,) = parse_contact(one(f, "Contact"))
    assert contact.uri == AbsoluteURI("name", "John_Smith")


def test_torture_cparam01_and_cparam02() -> None:
    (c1,) = parse_contact(one("rfc4475/cparam01.dat", "Contact"))
    assert c1.params == {"unknownparam": None}
    assert isinstance(c1.uri, SipURI) and c1.uri.params == {}
    (c2,) = parse_contact(one("rfc4475/cparam02.dat", "Contact"))
    assert c2.params == {}
    assert isinstance(c2.uri, SipURI) and c2.uri.params == {"unknownparam": None}


def test_torture_inv2543_no_branch() -> None:
    f = "rfc4475/inv2543.dat"
    (via,) = parse_via(one(f, "Via"))
    assert via.branch is None
    rr = parse_name_addr(one(f, "Record-Route"))
    assert isinstance(rr.uri, SipURI) and rr.uri.maddr == "ss1.example.com"
    to = parse_name_addr(one(f, "To"))
    assert to.params == {"user": "phone"}  # addr-spec: the ;user=phone is a header param here


def test_torture_badbranch_and_bcast() -> None:
    assert parse_via(one("rfc4475/badbranch.dat", "Via"))[0].branch == "z9hG4bK"
    hosts = [parse_via(v)[0].host for v in values("rfc4475/bcast.dat", "Via")]
    assert hosts == ["192.0.2.198", "255.255.255.255"]


def test_torture_regaut01_unknown_auth_scheme() -> None:
    assert parse_auth_params(one("rfc4475/regaut01.dat", "Authorization")) == (
        "NoOneKnowsThisScheme",
        {"opaque-data": "here"},
    )


def test_torture_multi01_each_value_parses() -> None:
    f = "rfc4475/multi01.dat"
    assert [parse_cseq(v) for v in values(f, "CSeq")] == [(5, "INVITE"), (59, "INVITE")]
    assert len(values(f, "To")) == 2  # duplicated single-value headers are the message layer's 400


@pytest.mark.parametrize(
    ("name", "hosts"),
    [
        ("rfc5118/ipv6-good.dat", ["[2001:db8::9:1]"]),
        ("rfc5118/ipv4-mapped-ipv6.dat", ["[::ffff:192.0.2.10]", "[::ffff:192.0.2.2]"]),
        ("rfc5118/mult-ip-in-header.dat", ["[2001:db8::9:1]", "192.0.2.1", "[2001:db8::9:255]"]),
    ],
)
def test_torture_rfc5118_vias(name: str, hosts: list[str]) -> None:
    vias = [parse_via(v)[0] for v in values(name, "Via")]
    assert [v.host for v in vias] == hosts


def test_torture_rfc5118_ports_and_contacts() -> None:
    (via, via2) = [parse_via(v)[0] for v in values("rfc5118/ipv4-mapped-ipv6.dat", "Via")]
    assert via.sent_by == ("[::ffff:192.0.2.10]", 19823)
    assert via2.port is None
    (contact,) = parse_contact(one("rfc5118/ipv4-mapped-ipv6.dat", "Contact"))
    assert contact.display_name == "T. desk phone"
    assert isinstance(contact.uri, SipURI) and contact.uri.host == "[::ffff:192.0.2.2]"
    (mult,) = parse_via(values("rfc5118/mult-ip-in-header.dat", "Via")[2])
    assert mult.received == "192.0.2.200"


@pytest.mark.parametrize(
    "name", ["rfc5118/via-received-param-with-delim.dat", "rfc5118/via-received-param-no-delim.dat"]
)
def test_torture_rfc5118_received(name: str) -> None:
    (via,) = parse_via(one(name, "Via"))
    assert via.received == "2001:db8::9:255"
    assert via.host == "[2001:db8::9:1]"


def test_torture_rfc5118_three_colon_to_refused() -> None:
    with pytest.raises(SIPParseError, match="malformed IPv6"):
        parse_name_addr(one("rfc5118/ipv6-bug-abnf-3-colons.dat", "To"), what="To")
    to = parse_name_addr(one("rfc5118/ipv6-correct-abnf-2-colons.dat", "To"), what="To")
    assert isinstance(to.uri, SipURI) and to.uri.host == "[2001:db8::192.0.2.1]"


# --------------------------------------------------------------------------------------------------------
# Property tests


_token = st.text(alphabet=string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=10)
_quoted = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=8
).map(quote_string)
_ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a.compressed}]")
_host = st.one_of(
    st.from_regex(r"([a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\.){0,3}[a-z][a-z0-9-]{0,5}[a-z0-9]", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    _ipv6,
)
_port = st.one_of(st.none(), st.integers(min_value=0, max_value=65535))
_generic_params = st.dictionaries(
    _token.map(str.lower).filter(lambda k: k not in {"branch", "received", "rport", "maddr", "ttl"}),
    st.one_of(st.none(), _token, _quoted),
    max_size=3,
)


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params: dict[str, str | None] = {}
    if draw(st.booleans()):
        params["branch"] = "z9hG4bK" + draw(_token)
    if draw(st.booleans()):
        params["received"] = draw(st.one_of(st.ip_addresses().map(str), _ipv6))
    if draw(st.booleans()):
        params["rport"] = draw(st.one_of(st.none(), st.integers(0, 65535).map(str)))
    if draw(st.booleans()):
        params["ttl"] = str(draw(st.integers(0, 255)))
    params.update(draw(_generic_params))
    return Via(
        draw(st.sampled_from(["SIP/2.0", "SIP/3.0"])),
        draw(st.one_of(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "WSS"]), _token.map(str.upper))),
        draw(_host),
        draw(_port),
        params,
    )


@given(vias())
def test_via_round_trip(via: Via) -> None:
    assert parse_via(str(via)) == [via]


@given(st.lists(vias(), min_size=1, max_size=4))
def test_via_list_round_trip(items: list[Via]) -> None:
    assert parse_via(" , ".join(str(v) for v in items)) == items


@st.composite
def name_addrs(draw: st.DrawFn) -> NameAddr:
    uri = SipURI(
        draw(st.sampled_from(["sip", "sips"])),
        draw(st.one_of(st.none(), _token)),
        None,
        draw(_host),
        draw(_port),
        draw(st.dictionaries(_token.map(str.lower), st.one_of(st.none(), _token), max_size=2)),
    )
    display = draw(
        st.one_of(
            st.none(),
            st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",))),
        )
    )
    return NameAddr(display, uri, draw(_generic_params))


@given(name_addrs())
def test_name_addr_round_trip(na: NameAddr) -> None:
    assert parse_name_addr(str(na)) == na


@given(st.lists(name_addrs(), min_size=1, max_size=4))
def test_contact_list_round_trip(items: list[NameAddr]) -> None:
    assert parse_contact(", ".join(str(c) for c in items)) == items


@given(st.text(max_size=60))
def test_parsers_only_raise_sipparseerror(text: str) -> None:
    for parser in (parse_via, parse_name_addr, parse_contact, parse_cseq, parse_auth_params, parse_params):
        try:
            parser(text)
        except SIPParseError as exc:
            assert exc.status == 400


def test_views_share_one_parse_per_value_and_never_cache_errors() -> None:
    from sbc.sip.headers import contact_view, name_addr_view, parse_contact, parse_name_addr

    value = '"Alice" <sip:alice@example.com;user=phone>;tag=view1'
    first = name_addr_view(value, what="From")
    assert first is name_addr_view(value, what="To")  # one shared result per value
    assert first == parse_name_addr(value) and first is not parse_name_addr(value)
    contact = "<sip:pbx@192.0.2.30:5070>;expires=60, <sip:b@192.0.2.31>"
    assert contact_view(contact) is contact_view(contact)
    assert contact_view(contact) == parse_contact(contact)
    assert contact_view("*") == "*"
    for _ in range(2):  # a bad value raises each time, naming the caller's header
        with pytest.raises(SIPParseError, match="^To: "):
            name_addr_view('"unterminated <sip:a@b>', what="To")
        with pytest.raises(SIPParseError, match="^Contact: "):
            contact_view("<sip:a@b>,,<sip:c@d>")


def test_via_view_is_shared_and_parse_via_hands_out_copies() -> None:
    from sbc.sip.headers import parse_via, via_view

    value = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-view;rport, SIP/2.0/TCP [2001:db8::1];branch=z9hG4bK-2"
    shared = via_view(value)
    assert shared is via_view(value) and len(shared) == 2
    mine = parse_via(value)
    mine[0].params["received"] = "198.51.100.9"  # a copy: the shared parse is untouched
    assert "received" not in via_view(value)[0].params
    for _ in range(2):
        with pytest.raises(SIPParseError, match="^Via: "):
            via_view("SIP/2.0/UDP 192.0.2.1;branch")


# -- the C fast path for the common Via shape (sbc/sip/_speedups.pyx split_simple_via) ---------

VIA_SHAPES = [
    "SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-1-inv;rport",
    "SIP/2.0/udp host.example.com;Branch=z9hG4bKx;RPORT=5060;received=192.0.2.1",
    "SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bKv6",
    "SIP/2.0/TLS h;received=2001:db8::9;branch=x",
    "SIP/2.0/UDP h;received=010.0.0.1;branch=x",
    "SIP/2.0/UDP h;received=1.2.3;branch=x",
    "SIP/2.0/UDP h;received=256.1.1.1",
    "SIP/2.0/UDP h;received=example.com",
    "SIP/2.0/UDP h;rport=65535;ttl=255;maddr=224.2.0.1",
    "SIP/2.0/UDP h;rport=65536",
    "SIP/2.0/UDP h;rport=00005060",
    "SIP/2.0/UDP h;ttl=0255",
    "SIP/2.0/UDP h;ttl=256",
    "SIP/2.0/UDP h;branch",
    "SIP/2.0/UDP h;maddr",
    "SIP/2.0/UDP h;;branch=x",
    "SIP/2.0/UDP h;branch=x;",
    "SIP/2.0/UDP h;branch=x;branch=y",
    "SIP/2.0/UDP h;x=",
    "SIP/2.0/UDP h;=x",
    'SIP/2.0/UDP h;x="quoted;value"',
    "SIP/2.0/UDP h ; branch = x",
    "SIP / 2.0 / UDP h;branch=x",
    "SIP/2.0/UDP  h:5060",
    "SIP/2.0/UDP h : 5060;branch=x",
    "SIP/2.0/UDP h:99999",
    "SIP/2.0/UDP ::1",
    "SIP/2.0/UDP",
    "SIP/2.0/UDP ;branch=x",
    "SIP/2.0/X-1 h",
    "SIP/3.0/UDP h",
    "SIP/2.0/UDP h;extension=a:b[c]",
    "SIP/2.0/UDP h;x=a{b",
]


def _torture_vias() -> list[str]:
    """Every Via element of the torture corpus, as via_view hands them to the element parser."""
    from tests.torture import TORTURE_DIR

    values = []
    for path in sorted(TORTURE_DIR.rglob("*.dat")):
        for line in path.read_bytes().decode("utf-8", "surrogateescape").splitlines():
            name, colon, value = line.partition(":")
            if colon and name.strip().lower() in ("via", "v"):
                try:
                    values.extend(item for item in split_commas(value.strip(), what="Via") if item)
                except SIPParseError:
                    continue
    return values


def _outcome(parse, text: str):  # noqa: ANN001, ANN202
    try:
        return parse(text)
    except SIPParseError:
        return "refused"


def _same_as_full_parser(text: str) -> None:
    from sbc.sip import _speedups
    from sbc.sip.headers import _parse_one_via, _parse_one_via_fully

    full = _outcome(_parse_one_via_fully, text)
    assert _outcome(_parse_one_via, text) == full, text
    simple = _speedups.split_simple_via(text)
    if simple is not None and full != "refused":  # (sent-by is checked after the split, by both)
        assert (simple[0], simple[2]) == (full.transport, full.params), text


@pytest.mark.skipif(importlib.util.find_spec("sbc.sip._speedups") is None, reason="C speedups not built")
def test_via_fast_path_agrees_with_the_full_parser() -> None:
    from sbc.sip import _speedups

    corpus = _torture_vias()
    assert len(corpus) > 20  # the corpus was found
    taken = 0
    for text in VIA_SHAPES + corpus:
        _same_as_full_parser(text)
        taken += _speedups.split_simple_via(text) is not None
    assert taken >= 10  # the fast path is exercised, not only the fallback


@pytest.mark.skipif(importlib.util.find_spec("sbc.sip._speedups") is None, reason="C speedups not built")
@given(
    st.lists(
        st.sampled_from(
            ["SIP/2.0/", "UDP", "tcp", " ", "\t", ";", "=", ":", "[", "]", '"', ",", "branch", "rport",
             "received", "ttl", "maddr", "z9hG4bK", "host", "10.0.0.1", "0", "1", "255", "65536", "-", "."]
        ),  # fmt: skip
        max_size=14,
    ).map("".join)
)
def test_via_fast_path_agrees_on_generated_text(tail: str) -> None:
    _same_as_full_parser("SIP/2.0/" + tail)
    _same_as_full_parser(tail)
