"""Tests for sbc.sip.uri: parsing, serialisation and RFC 3261 §19.1.4 comparison of URIs."""

from __future__ import annotations

import ipaddress
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sbc.sip.uri as uri_module
from sbc.sip.errors import SIPParseError
from sbc.sip.uri import (
    URI,
    AbsoluteURI,
    SipURI,
    TelURI,
    format_host,
    parse_hostport,
    parse_uri,
    uri_equal,
)

TORTURE = Path(__file__).resolve().parents[2] / "shared" / "sip-torture"


def request_uri(name: str) -> str:
    """The Request-URI of a torture file (the text between the first two spaces of the request line)."""
    first_line = (TORTURE / name).read_bytes().split(b"\r\n", 1)[0].decode("utf-8", "surrogateescape")
    method, uri, version = first_line.split(" ")
    assert version == "SIP/2.0", first_line
    return uri


def sip(text: str) -> SipURI:
    uri = parse_uri(text)
    assert isinstance(uri, SipURI)
    return uri


# --------------------------------------------------------------------------------------------------------
# Valid SIP URIs


def test_basic_sip_uri_fields() -> None:
    uri = sip("sip:alice:secret@Atlanta.Example.COM:5061;transport=TCP;lr;maddr=239.255.255.1?subject=hi")
    assert uri == SipURI(
        "sip",
        "alice",
        "secret",
        "atlanta.example.com",
        5061,
        {"transport": "TCP", "lr": None, "maddr": "239.255.255.1"},
        {"subject": "hi"},
    )
    assert uri.transport == "tcp"
    assert uri.lr is True
    assert uri.maddr == "239.255.255.1"
    assert uri.host_port == ("atlanta.example.com", 5061)


def test_scheme_is_lowercased_and_sips_kept_apart() -> None:
    assert sip("SIP:bob@biloxi.com").scheme == "sip"
    assert sip("SiPs:bob@biloxi.com").scheme == "sips"


def test_defaults_when_parts_absent() -> None:
    uri = sip("sip:biloxi.com")
    assert (uri.user, uri.password, uri.port, uri.params, uri.headers) == (None, None, None, {}, {})
    assert uri.transport is None
    assert uri.lr is False
    assert uri.maddr is None


def test_empty_password_is_kept() -> None:
    uri = sip("sip:alice:@example.com")
    assert uri.user == "alice"
    assert uri.password == ""
    assert str(uri) == "sip:alice:@example.com"


def test_param_names_lowercased_values_kept() -> None:
    uri = sip("sip:a@b;Transport=UDP;LR;User=Phone")
    assert list(uri.params) == ["transport", "lr", "user"]
    assert uri.params["user"] == "Phone"
    assert uri.transport == "udp"


def test_params_are_insertion_ordered() -> None:
    uri = sip("sip:a@b;z=1;a=2;m")
    assert list(uri.params.items()) == [("z", "1"), ("a", "2"), ("m", None)]
    assert str(uri) == "sip:a@b;z=1;a=2;m"


def test_transport_flag_without_value_is_none() -> None:
    assert sip("sip:a@b;transport").transport is None


def test_question_mark_before_semicolon_makes_semicolon_part_of_headers() -> None:
    uri = sip("sip:a@b?x=1;y")
    assert uri.params == {}
    assert uri.headers == {"x": "1;y"}


def test_params_then_headers() -> None:
    uri = sip("sip:a@b;p=1?h1=v1&h2=v%20two")
    assert uri.params == {"p": "1"}
    assert uri.headers == {"h1": "v1", "h2": "v two"}


def test_header_without_equals_gets_empty_value() -> None:
    assert sip("sip:a@b?subject").headers == {"subject": ""}


def test_user_escapes_decoded() -> None:
    assert sip("sip:%61lice@example.com").user == "alice"
    assert sip("sip:%41%42@h").user == "AB"


def test_utf8_escapes_decode_to_text_and_reencode() -> None:
    uri = sip("sip:J%C3%B6rg@example.com")
    assert uri.user == "Jörg"
    assert str(uri) == "sip:J%C3%B6rg@example.com"


def test_invalid_utf8_escape_survives_round_trip() -> None:
    uri = sip("sip:%FF@example.com")
    assert uri.user == "\udcff"
    assert str(uri) == "sip:%FF@example.com"


def test_password_escapes_decoded() -> None:
    assert sip("sip:u:p%40ss@h").password == "p@ss"


def test_telephone_subscriber_user() -> None:
    uri = sip("sip:+1-212-555-1212:1234@gateway.com;user=phone")
    assert uri.user == "+1-212-555-1212"
    assert uri.password == "1234"
    assert uri.params == {"user": "phone"}


def test_hash_in_user_tolerated_and_escaped_on_output() -> None:
    uri = sip("sip:*21#@pbx.example.com")
    assert uri.user == "*21#"
    assert str(uri) == "sip:*21%23@pbx.example.com"
    assert parse_uri(str(uri)) == uri


def test_ipv4_host() -> None:
    assert sip("sip:u@192.0.2.1:5060").host_port == ("192.0.2.1", 5060)


def test_ipv6_host_keeps_brackets_and_is_lowercased() -> None:
    uri = sip("sip:u@[2001:DB8::A]:5070")
    assert uri.host == "[2001:db8::a]"
    assert uri.port == 5070


def test_ipv4_mapped_ipv6() -> None:
    assert sip("sip:ted@[::ffff:192.0.2.2]").host == "[::ffff:192.0.2.2]"


def test_trailing_dot_and_underscore_hostnames() -> None:
    assert sip("sip:example.com.").host == "example.com."
    assert sip("sip:pbx_1.example.com").host == "pbx_1.example.com"


def test_port_with_leading_zeros_and_limits() -> None:
    assert sip("sip:h:0005060").port == 5060
    assert sip("sip:h:65535").port == 65535
    assert sip("sip:h:0").port == 0


def test_copy_is_independent() -> None:
    uri = sip("sip:a@b;lr?h=1")
    dup = uri.copy()
    assert dup == uri
    dup.params["x"] = "1"
    dup.headers["y"] = "2"
    assert "x" not in uri.params
    assert "y" not in uri.headers


def test_repeated_parses_return_independent_objects() -> None:
    text = "sip:cache-test@example.com;lr?h=1"
    first = sip(text)
    first.params["mutated"] = "yes"
    first.headers.clear()
    first.host = "evil.example.com"
    second = sip(text)
    assert second == SipURI("sip", "cache-test", None, "example.com", None, {"lr": None}, {"h": "1"})
    assert second is not sip(text)
    tel = parse_uri("tel:+1;x=1")
    assert isinstance(tel, TelURI)
    tel.params.clear()
    assert parse_uri("tel:+1;x=1") == TelURI("+1", {"x": "1"})
    other = parse_uri("urn:x")
    assert isinstance(other, AbsoluteURI)
    other.value = "y"
    assert parse_uri("urn:x") == AbsoluteURI("urn", "x")


def test_parse_memo_is_bounded_and_errors_are_not_memoised() -> None:
    from sbc.sip import uri as uri_module

    for i in range(uri_module.PARSE_CACHE_MAX + 10):
        assert sip(f"sip:u{i}@h{i}.example.com:{i % 65536}").user == f"u{i}"
    assert len(uri_module._uri_cache) <= uri_module.PARSE_CACHE_MAX
    assert len(uri_module._hostport_cache) <= uri_module.PARSE_CACHE_MAX
    for _ in range(2):
        with pytest.raises(SIPParseError, match="^To: IPv6"):
            parse_uri("sip:2001:db8::1", what="To")
    with pytest.raises(SIPParseError, match="^From: "):
        parse_uri("sip:2001:db8::1", what="From")


def test_str_escapes_reserved_characters_in_user_and_password() -> None:
    uri = SipURI("sip", "a b@c:d", "p@ss:w", "example.com")
    text = str(uri)
    assert text == "sip:a%20b%40c%3Ad:p%40ss%3Aw@example.com"
    assert parse_uri(text) == uri


def test_str_escapes_params_and_headers() -> None:
    uri = SipURI("sip", None, None, "h", None, {"a;b": "c=d e"}, {"Route": "<sip:x;lr>"})
    text = str(uri)
    assert " " not in text and "<" not in text
    assert parse_uri(text) == uri


def test_str_brackets_bare_ipv6_host() -> None:
    assert str(SipURI(host="2001:db8::1", port=5060)) == "sip:[2001:db8::1]:5060"


def test_password_without_user_is_not_written() -> None:
    assert str(SipURI(host="h", password="x")) == "sip:h"


# --------------------------------------------------------------------------------------------------------
# tel and other schemes


def test_tel_uri() -> None:
    uri = parse_uri("tel:+1-201-555-0123;EXT=1234;phone-context=example.com")
    assert uri == TelURI("+1-201-555-0123", {"ext": "1234", "phone-context": "example.com"})
    assert str(uri) == "tel:+1-201-555-0123;ext=1234;phone-context=example.com"


def test_tel_local_number_with_hash_escaped() -> None:
    uri = parse_uri("tel:*21%23;phone-context=+1")
    assert isinstance(uri, TelURI)
    assert uri.number == "*21#"
    assert str(uri) == "tel:*21%23;phone-context=+1"


@pytest.mark.parametrize("text", ["tel:", "tel:+", "tel:+abc", "tel:12 3", "tel:1;;x", "tel:%zz", "tel:12x"])
def test_bad_tel_uris(text: str) -> None:
    with pytest.raises(SIPParseError):
        parse_uri(text)


@pytest.mark.parametrize(
    ("text", "scheme", "value"),
    [
        ("isbn:2983792873", "isbn", "2983792873"),
        ("http://www.example.com", "http", "//www.example.com"),
        ("name:John_Smith", "name", "John_Smith"),
        ("soap.beep://192.0.2.103:3002", "soap.beep", "//192.0.2.103:3002"),
        ("nobodyKnowsThisScheme:totallyopaquecontent", "nobodyknowsthisscheme", "totallyopaquecontent"),
        ("urn:service:sos", "urn", "service:sos"),
    ],
)
def test_unknown_schemes_are_absolute_uris(text: str, scheme: str, value: str) -> None:
    uri = parse_uri(text)
    assert uri == AbsoluteURI(scheme, value)
    assert str(uri).lower() == text.lower()


def test_absolute_uri_needs_a_value() -> None:
    with pytest.raises(SIPParseError, match="empty"):
        parse_uri("isbn:")


def test_uri_type_alias_covers_all_kinds() -> None:
    for text in ("sip:a@b", "tel:+1", "mailto:a@b"):
        assert isinstance(parse_uri(text), URI)


# --------------------------------------------------------------------------------------------------------
# Bad URIs


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("sip:user@example.com; lr", "whitespace inside URI"),
        ("sip:user@example.com\t", "whitespace inside URI"),
        ("sip:us er@example.com", "whitespace inside URI"),
        ("<sip:user@example.com>", "'<' inside URI"),
        ("sip:user@example.com>", "'>' inside URI"),
        ('sip:"a"@example.com', "double quote"),
        ("sip:a\x00b@example.com", "control character"),
        ("user@example.com", "scheme"),
        (":user@example.com", "scheme"),
        ("1sip:user@example.com", "scheme"),
        ("", "scheme"),
        ("sip:", "empty host"),
        ("sip:user@", "empty host"),
        ("sip:user@:5060", "empty host"),
        ("sip:@example.com", "empty user"),
        ("sip::pw@example.com", "empty user"),
        ("sip:h:", "bad port"),
        ("sip:h:50a", "bad port"),
        ("sip:h:-1", "bad port"),
        ("sip:h:65536", "out of range"),
        ("sip:h:999999999999999999999999", "out of range"),
        ("sip:h:\u0665", "bad port"),
        ("sip:2001:db8::10", "IPv6 address not enclosed in brackets"),
        ("sip:user@2001:db8::10", "IPv6 address not enclosed in brackets"),
        ("sip:[2001:db8::10", "unterminated IPv6"),
        ("sip:[2001:db8:::192.0.2.1]", "malformed IPv6"),
        ("sip:[2001:db8::zz]", "malformed IPv6"),
        ("sip:[fe80::1%25eth0]", "malformed IPv6"),
        ("sip:[]", "malformed IPv6"),
        ("sip:[2001:db8::1]x", "unexpected text"),
        ("sip:[2001:db8::1]:x", "bad port"),
        ("sip:256.0.0.1", "malformed IPv4"),
        ("sip:1.2.3", "malformed IPv4"),
        ("sip:ex!ample.com", "bad host"),
        ("sip:-example.com", "bad host"),
        ("sip:example..com", "bad host"),
        ("sip:%zz@example.com", "bad %-escape in user part"),
        ("sip:a%4@example.com", "bad %-escape in user part"),
        ("sip:a%@example.com", "bad %-escape in user part"),
        ("sip:a:%g0@example.com", "bad %-escape in password"),
        ("sip:a@b;;lr", "empty URI parameter"),
        ("sip:a@b;", "empty URI parameter"),
        ("sip:a@b;=x", "empty URI parameter"),
        ("sip:a@b;maddr=", "empty value"),
        ("sip:a@b;lr;LR", "duplicate URI parameter"),
        ("sip:a@b;p=%zz", "bad %-escape in URI parameter value"),
        ("sip:a@b?", "empty URI headers"),
        ("sip:a@b?=x", "empty URI header name"),
        ("sip:a@b?x=1&x=2", "duplicate URI header"),
        ("sip:a@b?x=%z1", "bad %-escape in URI header value"),
    ],
)
def test_bad_uris_are_refused_with_a_precise_reason(text: str, reason: str) -> None:
    with pytest.raises(SIPParseError, match=reason) as info:
        parse_uri(text, what="Request-URI")
    assert info.value.status == 400
    assert info.value.reason.startswith("Request-URI: ")


def test_default_reason_prefix() -> None:
    with pytest.raises(SIPParseError, match=r"^URI: whitespace inside URI$"):
        parse_uri("sip:a b")


# --------------------------------------------------------------------------------------------------------
# host helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.COM", ("example.com", None)),
        ("example.com:5060", ("example.com", 5060)),
        ("192.0.2.1:5", ("192.0.2.1", 5)),
        ("[2001:DB8::1]", ("[2001:db8::1]", None)),
        ("[2001:db8::1]:5061", ("[2001:db8::1]", 5061)),
        ("[2001:db8::10:5070]", ("[2001:db8::10:5070]", None)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text", ["", ":5060", "2001:db8::1", "h:1:2", "[::1", "[::1]5060", "h:70000", "h h"])
def test_parse_hostport_refuses(text: str) -> None:
    with pytest.raises(SIPParseError, match="^Via: "):
        parse_hostport(text, what="Via")


def test_format_host() -> None:
    assert format_host("2001:db8::1") == "[2001:db8::1]"
    assert format_host("[2001:db8::1]") == "[2001:db8::1]"
    assert format_host("192.0.2.1") == "192.0.2.1"
    assert format_host("example.com") == "example.com"


# --------------------------------------------------------------------------------------------------------
# Comparison (RFC 3261 §19.1.4, the RFC's own examples first)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
        ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
         "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
        ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
         "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
        ("sip:user@example.com", "sip:%75se%72@example.com"),
        ("sip:u@[2001:db8::1]", "sip:u@[2001:DB8:0:0::1]"),
        ("sip:a@b;lr", "sip:a@b"),
        ("sip:a@b?Subject=x", "sip:a@b?subject=x"),
    ],
)  # fmt: skip
def test_equivalent_uris(a: str, b: str) -> None:
    assert uri_equal(parse_uri(a), parse_uri(b))
    assert uri_equal(parse_uri(b), parse_uri(a))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:a@b", "sips:a@b"),
        ("sip:a@b", "sip:a@b;user=phone"),
        ("sip:a@b", "sip:a@b;ttl=1"),
        ("sip:a@b", "sip:a@b;method=INVITE"),
        ("sip:a@b", "sip:a@b;maddr=192.0.2.1"),
        ("sip:a@b;lr", "sip:a@b;lr=on"),
        ("sip:a:x@b", "sip:a:y@b"),
        ("sip:a:x@b", "sip:a@b"),
        ("sip:a@b?x=1", "sip:a@b?x=2"),
        ("sip:a@b?x=1", "sip:a@b?x=1&y=2"),
        ("sip:a@b", "tel:+1"),
        ("sip:a@b", "foo:a@b"),
    ],
)
def test_different_uris(a: str, b: str) -> None:
    assert not uri_equal(parse_uri(a), parse_uri(b))
    assert not uri_equal(parse_uri(b), parse_uri(a))


def test_tel_comparison() -> None:
    assert uri_equal(parse_uri("tel:+1-201-555-0123"), parse_uri("tel:+1(201)5550123"))
    assert uri_equal(
        parse_uri("tel:7042;phone-context=EXAMPLE.com"), parse_uri("tel:7042;phone-context=example.com")
    )
    assert not uri_equal(parse_uri("tel:+12015550123"), parse_uri("tel:+12015550124"))
    assert not uri_equal(parse_uri("tel:7042;phone-context=a"), parse_uri("tel:7042"))


def test_absolute_uri_comparison() -> None:
    assert uri_equal(parse_uri("HTTP://x/a"), parse_uri("http://x/a"))
    assert not uri_equal(parse_uri("http://x/a"), parse_uri("http://x/A"))
    assert not uri_equal(parse_uri("http://x"), parse_uri("sip:x"))


# --------------------------------------------------------------------------------------------------------
# Torture corpus (RFC 4475, RFC 5118): the Request-URIs of the files


def test_torture_esc01_escaped_request_uri_and_to() -> None:
    uri = sip(request_uri("rfc4475/esc01.dat"))
    assert uri.user == "sips:user@example.com"
    assert uri.host == "example.net"
    assert uri_equal(parse_uri("sip:%75se%72@example.com"), parse_uri("sip:user@example.com"))


def test_torture_esc01_contact_uri_escaped_params() -> None:
    uri = sip("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    assert uri.user == "caller"
    assert uri.lr
    assert uri.params == {"lr": None, "name": "value%41"}
    assert parse_uri(str(uri)) == uri


def test_torture_escnull() -> None:
    assert sip("sip:null-%00-null@example.com").user == "null-\x00-null"
    assert sip("sip:%00%00@host5.example.com").user == "\x00\x00"


def test_torture_intmeth_unusual_userinfo() -> None:
    uri = sip(request_uri("rfc4475/intmeth.dat"))
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert uri.params == {} and uri.headers == {}
    assert str(uri) == request_uri("rfc4475/intmeth.dat")


def test_torture_semiuri_semicolon_in_user() -> None:
    uri = sip(request_uri("rfc4475/semiuri.dat"))
    assert uri.user == "user;par=u@example.net"
    assert uri.host == "example.com"
    assert uri.params == {}


def test_torture_wsinv_unknown_param() -> None:
    uri = sip(request_uri("rfc4475/wsinv.dat"))
    assert uri.params == {"unknownparam": None}


def test_torture_escruri_headers_decoded() -> None:
    uri = sip(request_uri("rfc4475/escruri.dat"))
    assert uri.headers == {"Route": "<sip:example.com>"}


def test_torture_regescrt_headers_round_trip() -> None:
    uri = sip("sip:user@example.com?Route=%3Csip:sip.example.com%3E")
    assert uri.headers == {"Route": "<sip:sip.example.com>"}
    assert str(uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def test_torture_cparam02_url_param() -> None:
    assert sip("sip:+19725552222@gw1.example.net;unknownparam").params == {"unknownparam": None}


def test_torture_inv2543_user_phone() -> None:
    assert sip("sip:+16505552222@ss1.example.net;user=phone").params == {"user": "phone"}


def test_torture_novel_and_unknown_schemes() -> None:
    assert parse_uri(request_uri("rfc4475/novelsc.dat")) == AbsoluteURI("soap.beep", "//192.0.2.103:3002")
    assert isinstance(parse_uri(request_uri("rfc4475/unkscm.dat")), AbsoluteURI)


def test_torture_ltgtruri_refused() -> None:
    with pytest.raises(SIPParseError, match="'<'"):
        parse_uri(request_uri("rfc4475/ltgtruri.dat"))


def test_torture_lwsruri_refused() -> None:
    line = (TORTURE / "rfc4475/lwsruri.dat").read_bytes().split(b"\r\n", 1)[0].decode()
    uri_text = line.removeprefix("INVITE ").removesuffix(" SIP/2.0")
    assert uri_text == "sip:user@example.com; lr"
    with pytest.raises(SIPParseError, match="whitespace"):
        parse_uri(uri_text)


@pytest.mark.parametrize(
    ("name", "host", "port"),
    [
        ("rfc5118/ipv6-good.dat", "[2001:db8::10]", None),
        ("rfc5118/port-ambiguous.dat", "[2001:db8::10:5070]", None),
        ("rfc5118/port-unambiguous.dat", "[2001:db8::10]", 5070),
        ("rfc5118/ipv6-correct-abnf-2-colons.dat", "[2001:db8::192.0.2.1]", None),
        ("rfc5118/via-received-param-no-delim.dat", "[2001:db8::10]", None),
        ("rfc5118/ipv6-in-sdp.dat", "[2001:db8::10]", None),
    ],
)
def test_torture_rfc5118_valid_request_uris(name: str, host: str, port: int | None) -> None:
    assert sip(request_uri(name)).host_port == (host, port)


def test_torture_rfc5118_ipv6_bad_refused() -> None:
    with pytest.raises(SIPParseError, match="IPv6 address not enclosed in brackets"):
        parse_uri(request_uri("rfc5118/ipv6-bad.dat"))


def test_torture_rfc5118_three_colons_refused() -> None:
    # RFC 5118 §4.10 allows either answer; this parser refuses what ipaddress calls malformed.
    with pytest.raises(SIPParseError, match="malformed IPv6"):
        parse_uri(request_uri("rfc5118/ipv6-bug-abnf-3-colons.dat"))


# --------------------------------------------------------------------------------------------------------
# Property tests: parse(str(x)) == x


_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FF), min_size=1, max_size=12
)
_label = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=10)
_domain = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(_label, min_size=0, max_size=3),
    st.text(alphabet=string.ascii_lowercase, min_size=2, max_size=6),
)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a.compressed}]")
_host = st.one_of(_domain, _ipv4, _ipv6)
_port = st.one_of(st.none(), st.integers(min_value=0, max_value=65535))
_param_name = _text.map(str.lower).filter(lambda s: s == s.lower())
_params = st.dictionaries(_param_name, st.one_of(st.none(), _text), max_size=4)
_headers = st.dictionaries(
    _text, st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8), max_size=3
)


@st.composite
def sip_uris(draw: st.DrawFn) -> SipURI:
    user = draw(st.one_of(st.none(), _text))
    password = draw(st.one_of(st.none(), st.text(max_size=8).filter(lambda s: max(s, default="") < "\ud800")))
    return SipURI(
        draw(st.sampled_from(["sip", "sips"])),
        user,
        password if user is not None else None,
        draw(_host),
        draw(_port),
        draw(_params),
        draw(_headers),
    )


@given(sip_uris())
def test_sip_uri_round_trip(uri: SipURI) -> None:
    text = str(uri)
    assert not any(c.isspace() for c in text)
    parsed = parse_uri(text)
    assert parsed == uri
    assert uri_equal(parsed, uri)


@given(st.text(max_size=40))
def test_parse_uri_never_raises_anything_but_sipparseerror(text: str) -> None:
    try:
        uri = parse_uri(text)
    except SIPParseError as exc:
        assert exc.status == 400
    else:
        assert isinstance(uri, (SipURI, TelURI, AbsoluteURI))


@given(st.from_regex(r"sips?:[a-z%0-9@:;=?&\[\].]{0,30}", fullmatch=True))
def test_parse_uri_fuzz_sipish(text: str) -> None:
    try:
        uri = parse_uri(text)
    except SIPParseError:
        return
    assert parse_uri(str(uri)) == uri


@given(st.ip_addresses(v=6))
def test_any_ipv6_address_in_brackets_parses(address: ipaddress.IPv6Address) -> None:
    assert sip(f"sip:u@[{address.exploded}]:5060").port == 5060


@pytest.mark.skipif(uri_module._all_in is None, reason="C speedups not built")
@given(st.text(max_size=20), st.sampled_from(["_USER_SAFE", "_PASSWORD_SAFE", "_PARAM_SAFE", "_HEADER_SAFE"]))
def test_escape_c_check_agrees_with_the_regex(text: str, safe_name: str) -> None:
    """_escape's C check (_speedups.all_in) leaves exactly what the regex fallback leaves."""
    safe = getattr(uri_module, safe_name)
    saved = uri_module._all_in
    try:
        with_c = uri_module._escape(text, safe)
        uri_module._all_in = None
        assert uri_module._escape(text, safe) == with_c
    finally:
        uri_module._all_in = saved
