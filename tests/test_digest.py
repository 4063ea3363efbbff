"""Tests for sbc.sip.digest: RFC vectors, client/server round trips, and every way verification fails."""

from __future__ import annotations

import base64
import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbc.sip.digest import (
    NC_CACHE_SIZE,
    NONCE_CLOCK_SKEW_S,
    NONCE_TEXT_LEN,
    NONCE_TTL_S,
    REASON_BAD_NONCE,
    REASON_BAD_RESPONSE,
    REASON_MALFORMED,
    REASON_NO_CREDENTIALS,
    REASON_OK,
    REASON_OPAQUE_MISMATCH,
    REASON_REALM_MISMATCH,
    REASON_REPLAYED_NC,
    REASON_STALE_NONCE,
    REASON_UNKNOWN_USER,
    REASON_UNSUPPORTED_ALGORITHM,
    REASON_UNSUPPORTED_QOP,
    REASON_URI_MISMATCH,
    AuthResult,
    DigestAuthenticator,
    build_authorization,
    choose_challenge,
    digest_response,
    parse_challenges,
    pick_challenge,
)
from sbc.sip.headers import parse_auth_params
from sbc.sip.message import Request, Response, parse_message

SECRET = b"0123456789abcdef-cluster-secret"
REALM = "sbc.example.net"
RURI = "sip:+15551234567@sbc.example.net;user=phone"
USERS = {"trunk1": "s3cret", "bob": "hunter2"}
T0 = 1_700_000_000.0


def counter_bytes():
    """Deterministic random_bytes: successive calls give different bytes."""
    counter = itertools.count(1)

    def random_bytes(n: int) -> bytes:
        return next(counter).to_bytes(n, "big")

    return random_bytes


def make_auth(**kwargs) -> DigestAuthenticator:
    return DigestAuthenticator(SECRET, REALM, random_bytes=counter_bytes(), **kwargs)


def invite(uri: str = RURI, headers: list[tuple[str, str]] | None = None, method: str = "INVITE") -> Request:
    base = [
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds"),
        ("From", "<sip:trunk1@pbx.example.com>;tag=1928301774"),
        ("To", f"<{uri}>"),
        ("Call-ID", "a84b4c76e66710@pbx.example.com"),
        ("CSeq", f"2 {method}"),
        ("Max-Forwards", "70"),
    ]
    return Request(method, uri, base + (headers or []))


def lookup(username: str) -> str | None:
    return USERS.get(username)


def answer(
    auth: DigestAuthenticator,
    now: float = T0,
    *,
    username: str = "trunk1",
    password: str = "s3cret",
    uri: str = RURI,
    nc: int = 1,
    cnonce: str = "0a4f113b",
    proxy: bool = False,
    stale: bool = False,
) -> tuple[str, str]:
    """Challenge an INVITE and answer it the way a UA would: (header name, credentials)."""
    challenge = auth.challenge(invite(uri), now, proxy=proxy, stale=stale)
    picked = pick_challenge(challenge)
    assert picked is not None
    name, value = picked
    return name, build_authorization(value, "INVITE", uri, username, password, cnonce=cnonce, nc=nc)


def with_creds(creds: str, name: str = "Authorization", uri: str = RURI) -> Request:
    return invite(uri, [(name, creds)])


def replace_param(creds: str, key: str, value: str) -> str:
    """Rewrite one auth-param (quoted) in a credentials string."""
    scheme, params = parse_auth_params(creds)
    params[key] = value
    return scheme + " " + ", ".join(f'{k}="{v}"' for k, v in params.items())


def drop_param(creds: str, key: str) -> str:
    scheme, params = parse_auth_params(creds)
    params.pop(key)
    return scheme + " " + ", ".join(f'{k}="{v}"' for k, v in params.items())


# -- RFC vectors -----------------------------------------------------------------------------------

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)

# RFC 7616 §3.9.1. Its password is "Circle of Life" (lower-case "of"), unlike RFC 2617's
# "Circle Of Life": with the RFC 2617 spelling neither of the RFC 7616 responses comes out.
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_CHALLENGES = (
    f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}", '
    f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, '
    f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
)


def test_rfc2617_worked_example_md5_qop_auth():
    creds = build_authorization(
        RFC2617_CHALLENGE, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b"
    )
    scheme, params = parse_auth_params(creds)
    assert scheme == "Digest"
    assert params["response"] == "6629fae49393a05397450978507c4ef1"
    assert params["qop"] == "auth"
    assert params["nc"] == "00000001"
    assert params["cnonce"] == "0a4f113b"
    assert params["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
    assert params["realm"] == "testrealm@host.com"
    assert params["uri"] == "/dir/index.html"
    assert "algorithm" not in params  # the challenge named none, so none is echoed


def test_rfc7616_sha256_example_is_chosen_over_md5():
    creds = build_authorization(
        RFC7616_CHALLENGES, "GET", "/dir/index.html", "Mufasa", "Circle of Life", cnonce=RFC7616_CNONCE
    )
    _, params = parse_auth_params(creds)
    assert params["algorithm"] == "SHA-256"
    assert params["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert params["opaque"] == RFC7616_OPAQUE


def test_rfc7616_md5_example():
    md5_only = RFC7616_CHALLENGES.split(", Digest ")[1]
    creds = build_authorization(
        "Digest " + md5_only, "GET", "/dir/index.html", "Mufasa", "Circle of Life", cnonce=RFC7616_CNONCE
    )
    _, params = parse_auth_params(creds)
    assert params["algorithm"] == "MD5"
    assert params["response"] == "8ca523f5e9506fed4657c9700eebdbec"


def test_digest_response_sess_and_auth_int_follow_rfc7616_formulas():
    h = lambda s: hashlib.sha256(s.encode()).hexdigest()  # noqa: E731
    ha1 = h(h("u:r:p") + ":n:c")
    ha2 = h("INVITE:sip:a@b:" + hashlib.sha256(b"v=0\r\n").hexdigest())
    expected = h(f"{ha1}:n:00000001:c:auth-int:{ha2}")
    got = digest_response(
        "sha-256-sess", "u", "r", "p", "INVITE", "sip:a@b", "n", qop="auth-int", nc="00000001", cnonce="c",
        body=b"v=0\r\n",
    )  # fmt: skip
    assert got == expected


def test_digest_response_rejects_unknown_algorithm_and_qop():
    with pytest.raises(ValueError):
        digest_response("SHA-1", "u", "r", "p", "INVITE", "sip:a@b", "n")
    with pytest.raises(ValueError):
        digest_response("MD5", "u", "r", "p", "INVITE", "sip:a@b", "n", qop="auth-conf")


# -- challenge -----------------------------------------------------------------------------------


def test_challenge_401_offers_sha256_then_md5_with_one_fresh_nonce():
    auth = make_auth()
    resp = auth.challenge(invite(), T0)
    assert resp.status == 401
    values = resp.get_all("WWW-Authenticate")
    assert len(values) == 2
    parsed = [parse_auth_params(v) for v in values]
    assert [p["algorithm"] for _, p in parsed] == ["SHA-256", "MD5"]
    for scheme, params in parsed:
        assert scheme == "Digest"
        assert params["realm"] == REALM
        assert params["qop"] == "auth"
        assert params["opaque"] == auth.opaque
        assert "stale" not in params
        assert len(params["nonce"]) == NONCE_TEXT_LEN
    assert parsed[0][1]["nonce"] == parsed[1][1]["nonce"]
    assert resp.to_tag  # a final response needs a To tag (RFC 3261 §8.2.6.2)
    assert resp.call_id == "a84b4c76e66710@pbx.example.com"
    assert resp.get("Proxy-Authenticate") is None
    # the next challenge has a different nonce even at the same instant
    again = parse_auth_params(auth.challenge(invite(), T0).get("WWW-Authenticate"))[1]
    assert again["nonce"] != parsed[0][1]["nonce"]


def test_challenge_proxy_and_stale_variants():
    auth = make_auth()
    resp = auth.challenge(invite(), T0, proxy=True, stale=True, to_tag="abc")
    assert resp.status == 407
    assert resp.get("WWW-Authenticate") is None
    values = resp.get_all("Proxy-Authenticate")
    assert len(values) == 2
    assert all(parse_auth_params(v)[1]["stale"] == "true" for v in values)
    assert resp.to_tag == "abc"
    assert bytes(resp).startswith(b"SIP/2.0 407 Proxy Authentication Required\r\n")


def test_challenge_survives_serialisation():
    auth = make_auth()
    wire = auth.challenge(invite(), T0).to_bytes()
    resp = parse_message(wire)
    assert isinstance(resp, Response)
    assert pick_challenge(resp)[0] == "Authorization"


def test_constructor_refuses_weak_secret_and_bad_realm():
    with pytest.raises(ValueError):
        DigestAuthenticator(b"short", REALM)
    with pytest.raises(ValueError):
        DigestAuthenticator(SECRET, "")
    with pytest.raises(ValueError):
        DigestAuthenticator(SECRET, "a\r\nb")
    with pytest.raises(ValueError):
        DigestAuthenticator(SECRET, REALM, 0)
    with pytest.raises(ValueError):
        make_auth().new_nonce(-1.0)
    with pytest.raises(ValueError):
        make_auth().new_nonce(float("inf"))


# -- round trips -----------------------------------------------------------------------------------


def test_round_trip_picks_sha256():
    auth = make_auth()
    name, creds = answer(auth)
    assert name == "Authorization"
    assert parse_auth_params(creds)[1]["algorithm"] == "SHA-256"
    result = auth.verify(with_creds(creds), lookup, T0 + 1)
    assert result == AuthResult(True, "trunk1", REASON_OK, False)


def test_round_trip_md5_only_client():
    auth = make_auth()
    md5 = auth.challenge(invite(), T0).get_all("WWW-Authenticate")[1]
    creds = build_authorization(md5, "INVITE", RURI, "bob", "hunter2", cnonce="xyz")
    assert parse_auth_params(creds)[1]["algorithm"] == "MD5"
    assert auth.verify(with_creds(creds), lookup, T0 + 1).ok


def test_round_trip_without_qop_rfc2069():
    auth = make_auth()
    nonce = auth.new_nonce(T0)
    creds = build_authorization(
        f'Digest realm="{REALM}", nonce="{nonce}"', "INVITE", RURI, "trunk1", "s3cret", cnonce=""
    )
    params = parse_auth_params(creds)[1]
    assert {"qop", "nc", "cnonce", "algorithm"}.isdisjoint(params)
    assert auth.verify(with_creds(creds), lookup, T0 + 1).ok
    # no nonce-count to track, so a second request with the same credentials also passes
    assert auth.verify(with_creds(creds), lookup, T0 + 2).ok


def test_round_trip_proxy_authorization():
    auth = make_auth()
    name, creds = answer(auth, proxy=True)
    assert name == "Proxy-Authorization"
    request = with_creds(creds, name)
    assert auth.verify(request, lookup, T0).ok
    # asked to read only Authorization, the same request carries no credentials
    assert auth.verify(with_creds(creds, name), lookup, T0, proxy=False).reason == REASON_NO_CREDENTIALS
    assert auth.verify(with_creds(creds, "Authorization"), lookup, T0, proxy=True).reason == (
        REASON_NO_CREDENTIALS
    )


def test_credentials_for_another_realm_are_skipped_for_ours():
    auth = make_auth()
    _, ours = answer(auth)
    theirs = replace_param(ours, "realm", "other.example")
    request = invite(headers=[("Proxy-Authorization", theirs), ("Authorization", ours)])
    assert auth.verify(request, lookup, T0).ok


def test_nonce_verifies_on_another_node_with_the_same_secret():
    node_a, node_b = make_auth(), make_auth()
    _, creds = answer(node_a)
    assert node_b.verify(with_creds(creds), lookup, T0 + 5).ok
    other_secret = DigestAuthenticator(b"another-secret-0123456789", REALM)
    assert other_secret.verify(with_creds(creds), lookup, T0 + 5).reason == REASON_BAD_NONCE


def test_increasing_nonce_count_on_one_nonce_is_accepted():
    auth = make_auth()
    challenge = pick_challenge(auth.challenge(invite(), T0))[1]
    for nc in (1, 2, 5):
        creds = build_authorization(challenge, "INVITE", RURI, "trunk1", "s3cret", cnonce="c", nc=nc)
        assert auth.verify(with_creds(creds), lookup, T0 + nc).ok


def test_uri_compared_as_parsed_uris():
    auth = make_auth()
    # the digest-uri spells the same URI differently (host case, parameter case): RFC 3261 §19.1.4 equal
    same = "sip:+15551234567@SBC.example.net;USER=phone"
    challenge = pick_challenge(auth.challenge(invite(), T0))[1]
    creds = build_authorization(challenge, "INVITE", same, "trunk1", "s3cret", cnonce="c")
    assert auth.verify(with_creds(creds), lookup, T0).ok


# -- failures --------------------------------------------------------------------------------------


def test_no_credentials():
    auth = make_auth()
    result = auth.verify(invite(), lookup, T0)
    assert result == AuthResult(False, None, REASON_NO_CREDENTIALS, False)
    basic = auth.verify(with_creds("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="), lookup, T0)
    assert basic.reason == REASON_NO_CREDENTIALS


def test_unknown_user():
    auth = make_auth()
    _, creds = answer(auth, username="mallory", password="x")
    result = auth.verify(with_creds(creds), lookup, T0)
    assert result == AuthResult(False, "mallory", REASON_UNKNOWN_USER, False)


def test_wrong_password_is_bad_response():
    auth = make_auth()
    _, creds = answer(auth, password="wrong")
    result = auth.verify(with_creds(creds), lookup, T0)
    assert result == AuthResult(False, "trunk1", REASON_BAD_RESPONSE, False)


def test_tampered_response_and_other_method_are_bad_response():
    auth = make_auth()
    _, creds = answer(auth)
    response = parse_auth_params(creds)[1]["response"]
    flipped = ("0" if response[0] != "0" else "1") + response[1:]
    assert auth.verify(with_creds(replace_param(creds, "response", flipped)), lookup, T0).reason == (
        REASON_BAD_RESPONSE
    )
    # credentials computed for INVITE do not authorise a BYE
    assert auth.verify(invite(headers=[("Authorization", creds)], method="BYE"), lookup, T0).reason == (
        REASON_BAD_RESPONSE
    )
    # upper-case hex is the same response
    upper = replace_param(creds, "response", response.upper())
    assert auth.verify(with_creds(upper), lookup, T0).ok


def test_realm_mismatch():
    auth = make_auth()
    _, creds = answer(auth)
    result = auth.verify(with_creds(replace_param(creds, "realm", "evil.example")), lookup, T0)
    assert result == AuthResult(False, None, REASON_REALM_MISMATCH, False)


def test_unsupported_algorithms_including_sess():
    auth = make_auth()
    _, creds = answer(auth)
    for algorithm in ("SHA-1", "MD5-sess", "SHA-256-sess", "SHA-512-256", "AKAv1-MD5"):
        result = auth.verify(with_creds(replace_param(creds, "algorithm", algorithm)), lookup, T0)
        assert result.reason == REASON_UNSUPPORTED_ALGORITHM, algorithm
        assert not result.ok


def test_unsupported_qop():
    auth = make_auth()
    _, creds = answer(auth)
    for qop in ("auth-int", "auth-conf", "bogus"):
        assert auth.verify(with_creds(replace_param(creds, "qop", qop)), lookup, T0).reason == (
            REASON_UNSUPPORTED_QOP
        )


def test_algorithm_and_qop_are_case_insensitive():
    auth = make_auth()
    _, creds = answer(auth)
    variant = replace_param(replace_param(creds, "algorithm", "sha-256"), "qop", "AUTH")
    assert auth.verify(with_creds(variant), lookup, T0).ok


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: drop_param(c, "username"),
        lambda c: drop_param(c, "nonce"),
        lambda c: drop_param(c, "uri"),
        lambda c: drop_param(c, "response"),
        lambda c: drop_param(c, "nc"),
        lambda c: drop_param(c, "cnonce"),
        lambda c: replace_param(c, "nc", "1"),
        lambda c: replace_param(c, "nc", "0000000g"),
        lambda c: replace_param(c, "nc", "00000000"),
        lambda c: replace_param(c, "nc", "000000001"),
        lambda c: replace_param(c, "cnonce", ""),
        lambda c: replace_param(c, "response", ""),
        lambda c: drop_param(c, "realm"),
        lambda c: c + ", ,",
        lambda c: c.replace("username=", "username ", 1),
        lambda c: c + ', nonce="again"',
        lambda c: c[: c.rfind('"')],
    ],
)
def test_malformed_credentials(mutate):
    auth = make_auth()
    _, creds = answer(auth)
    result = auth.verify(with_creds(mutate(creds)), lookup, T0)
    assert not result.ok
    assert result.reason == REASON_MALFORMED
    assert not result.stale


def test_tampered_nonce_is_bad_nonce():
    auth = make_auth()
    _, creds = answer(auth)
    nonce = parse_auth_params(creds)[1]["nonce"]
    raw = bytearray(base64.b64decode(nonce))
    raw[0] ^= 0x01  # move the timestamp: the MAC no longer matches
    for bad in (
        base64.b64encode(bytes(raw)).decode(),
        nonce[:-1] + ("A" if nonce[-1] != "A" else "B"),
        nonce[:-4],
        "!" * NONCE_TEXT_LEN,
        "é" * NONCE_TEXT_LEN,
        "dcd98b7102dd2f0e8b11d0f600bfb0c093",
    ):
        result = auth.verify(with_creds(replace_param(creds, "nonce", bad)), lookup, T0)
        assert result.reason == REASON_BAD_NONCE, bad
        assert not result.stale


def test_nonce_for_another_realm_is_bad_nonce():
    other = DigestAuthenticator(SECRET, "other.example", random_bytes=counter_bytes())
    auth = make_auth()
    _, creds = answer(other)
    result = auth.verify(with_creds(replace_param(creds, "realm", REALM)), lookup, T0)
    assert result.reason == REASON_BAD_NONCE


def test_nonce_from_the_future_is_refused():
    auth = make_auth()
    _, creds = answer(auth, now=T0 + NONCE_CLOCK_SKEW_S + 1)
    assert auth.verify(with_creds(creds), lookup, T0).reason == REASON_BAD_NONCE
    # within the allowed skew (a node whose clock runs slightly ahead) it passes
    _, creds = answer(auth, now=T0 + NONCE_CLOCK_SKEW_S - 1)
    assert auth.verify(with_creds(creds), lookup, T0).ok


def test_wrong_uri():
    auth = make_auth()
    _, creds = answer(auth, uri="sip:+15550000000@sbc.example.net;user=phone")
    result = auth.verify(with_creds(creds), lookup, T0)
    assert result == AuthResult(False, "trunk1", REASON_URI_MISMATCH, False)
    for bad in ("not a uri", "sip:", "sips:+15551234567@sbc.example.net;user=phone"):
        assert auth.verify(with_creds(replace_param(creds, "uri", bad)), lookup, T0).reason == (
            REASON_URI_MISMATCH
        )


def test_opaque_mismatch_and_absent_opaque():
    auth = make_auth()
    _, creds = answer(auth)
    result = auth.verify(with_creds(replace_param(creds, "opaque", "deadbeef")), lookup, T0)
    assert result.reason == REASON_OPAQUE_MISMATCH
    # RFC 2069-era clients do not return opaque; that alone is not a failure
    assert auth.verify(with_creds(drop_param(creds, "opaque")), lookup, T0).ok


def test_expiry_with_fake_clock_then_stale_rechallenge():
    auth = make_auth()
    _, creds = answer(auth)
    assert auth.verify(with_creds(creds), lookup, T0 + NONCE_TTL_S).ok  # the last valid instant
    _, creds = answer(auth)
    result = auth.verify(with_creds(creds), lookup, T0 + NONCE_TTL_S + 0.01)
    assert result == AuthResult(False, "trunk1", REASON_STALE_NONCE, True)
    # the caller re-challenges with stale=true; the UA retries with the new nonce and gets in
    later = T0 + NONCE_TTL_S + 1
    rechallenge = auth.challenge(with_creds(creds), later, stale=True)
    picked = pick_challenge(rechallenge)
    assert picked is not None and "stale=true" in picked[1]
    assert parse_challenges(picked[1])[0].stale
    fresh = build_authorization(picked[1], "INVITE", RURI, "trunk1", "s3cret", cnonce="c2")
    assert auth.verify(with_creds(fresh), lookup, later).ok


def test_expired_nonce_with_wrong_password_is_not_stale():
    auth = make_auth()
    _, creds = answer(auth, password="wrong")
    result = auth.verify(with_creds(creds), lookup, T0 + NONCE_TTL_S + 60)
    assert result.reason == REASON_BAD_RESPONSE
    assert not result.stale  # stale would make the UA retry silently with the same wrong password


def test_custom_ttl():
    auth = make_auth(nonce_ttl_s=10)
    _, creds = answer(auth)
    assert auth.verify(with_creds(creds), lookup, T0 + 11).reason == REASON_STALE_NONCE


def test_replayed_nonce_count():
    auth = make_auth()
    _, creds = answer(auth, nc=3)
    assert auth.verify(with_creds(creds), lookup, T0).ok
    replay = auth.verify(with_creds(creds), lookup, T0 + 1)
    assert replay == AuthResult(False, "trunk1", REASON_REPLAYED_NC, True)
    # the caller re-challenges with stale=true: the legitimate UA gets a fresh nonce, a replayer
    # holding only the captured request cannot compute an answer to it
    assert auth.verify(with_creds(answer(auth, nc=3)[1]), lookup, T0 + 2).ok


def test_replay_sequence_on_one_nonce():
    auth = make_auth()
    challenge = pick_challenge(auth.challenge(invite(), T0))[1]

    def send(nc: int) -> AuthResult:
        creds = build_authorization(challenge, "INVITE", RURI, "trunk1", "s3cret", cnonce="c", nc=nc)
        return auth.verify(with_creds(creds), lookup, T0)

    assert send(5).ok
    assert send(5).reason == REASON_REPLAYED_NC
    assert send(2).reason == REASON_REPLAYED_NC
    assert send(6).ok


def test_failed_attempt_does_not_burn_the_nonce_count():
    auth = make_auth()
    challenge = pick_challenge(auth.challenge(invite(), T0))[1]
    forged = build_authorization(challenge, "INVITE", RURI, "trunk1", "guess", cnonce="c", nc=0xFFFFFFFF)
    assert auth.verify(with_creds(forged), lookup, T0).reason == REASON_BAD_RESPONSE
    genuine = build_authorization(challenge, "INVITE", RURI, "trunk1", "s3cret", cnonce="c", nc=1)
    assert auth.verify(with_creds(genuine), lookup, T0).ok


def test_nonce_count_lru_is_bounded():
    assert NC_CACHE_SIZE >= 1024
    auth = make_auth(nc_cache_size=2)
    first = answer(auth)[1]
    assert auth.verify(with_creds(first), lookup, T0).ok
    for _ in range(2):
        assert auth.verify(with_creds(answer(auth)[1]), lookup, T0).ok
    assert len(auth._nonce_counts) == 2
    # the first nonce was evicted: per-node replay protection forgets it (documented limitation)
    assert auth.verify(with_creds(first), lookup, T0).ok


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_authorization_never_raises(value):
    auth = make_auth()
    for name in ("Authorization", "Proxy-Authorization"):
        result = auth.verify(invite(headers=[(name, value)]), lookup, T0)
        assert isinstance(result, AuthResult)
        assert not result.ok


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["username", "realm", "nonce", "uri", "response", "nc", "cnonce", "qop", "algorithm"]
            ),
            st.text(alphabet=st.characters(blacklist_characters='"\\\r\n'), max_size=40),
        ),
        max_size=10,
    )
)
def test_structured_garbage_never_raises(pairs):
    auth = make_auth()
    value = "Digest " + ", ".join(f'{k}="{v}"' for k, v in pairs)
    result = auth.verify(with_creds(value), lookup, T0)
    assert not result.ok


def test_malformed_request_uri_is_uri_mismatch_not_exception():
    auth = make_auth()
    _, creds = answer(auth)
    request = invite(headers=[("Authorization", creds)])
    request.uri = "sip:bad host@"
    assert auth.verify(request, lookup, T0).reason == REASON_URI_MISMATCH


# -- client side -----------------------------------------------------------------------------------


def test_parse_challenges_splits_several_in_one_value_and_skips_other_schemes():
    value = (
        'Basic realm="x", Digest realm="a\\"b", nonce=n1, qop="auth", stale=TRUE, '
        'Bearer abc==, Digest realm="c", nonce="n2", algorithm=SHA-256, Digest realm="no-nonce"'
    )
    challenges = parse_challenges(value)
    assert [(c.realm, c.nonce, c.algorithm, c.qop, c.stale) for c in challenges] == [
        ('a"b', "n1", None, ("auth",), True),
        ("c", "n2", "SHA-256", (), False),
    ]
    assert challenges[1].text == 'Digest realm="c", nonce="n2", algorithm=SHA-256'


@pytest.mark.parametrize("junk", ["", ",,,", 'Digest realm="unterminated', "nonce=x", "Digest", "Digest ,"])
def test_parse_challenges_junk_gives_nothing(junk):
    assert parse_challenges(junk) == []


def test_choose_prefers_strength_then_plain_then_order():
    value = (
        'Digest realm="r", nonce="1", algorithm=MD5, '
        'Digest realm="r", nonce="2", algorithm=SHA-256-sess, '
        'Digest realm="r", nonce="3", algorithm=SHA-256, '
        'Digest realm="r", nonce="4", algorithm=SHA-256, '
        'Digest realm="r", nonce="5", algorithm=SHA-1'
    )
    assert choose_challenge(parse_challenges(value)).nonce == "3"
    assert choose_challenge(parse_challenges('Digest realm="r", nonce="5", algorithm=SHA-1')) is None
    assert choose_challenge(parse_challenges('Digest realm="r", nonce="6", qop="auth-conf"')) is None


def test_client_sha512_256_when_offered():
    value = 'Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth", Digest realm="r", nonce="m"'
    creds = build_authorization(value, "INVITE", "sip:x@y", "u", "p", cnonce="c")
    params = parse_auth_params(creds)[1]
    assert params["algorithm"] == "SHA-512-256"

    def h(s: str) -> str:
        return hashlib.new("sha512_256", s.encode()).hexdigest()

    expected = h(f"{h('u:r:p')}:n:00000001:c:auth:{h('INVITE:sip:x@y')}")
    assert params["response"] == expected


def test_client_md5_sess_against_formula():
    value = 'Digest realm="r", nonce="n", algorithm=MD5-sess, qop="auth"'
    creds = build_authorization(value, "INVITE", "sip:x@y", "u", "p", cnonce="c", nc=2)
    params = parse_auth_params(creds)[1]

    def h(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1 = h(f"{h('u:r:p')}:n:c")
    assert params["algorithm"] == "MD5-sess"
    assert params["nc"] == "00000002"
    assert params["response"] == h(f"{ha1}:n:00000002:c:auth:{h('INVITE:sip:x@y')}")


def test_client_auth_int_uses_body():
    value = 'Digest realm="r", nonce="n", qop="auth-int"'
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    creds = build_authorization(value, "INVITE", "sip:x@y", "u", "p", cnonce="c", body=body)
    params = parse_auth_params(creds)[1]
    assert params["qop"] == "auth-int"

    def h(data: bytes) -> str:
        return hashlib.md5(data).hexdigest()

    ha2 = h(b"INVITE:sip:x@y:" + h(body).encode())
    assert params["response"] == h(f"{h(b'u:r:p')}:n:00000001:c:auth-int:{ha2}".encode())
    other = build_authorization(value, "INVITE", "sip:x@y", "u", "p", cnonce="c", body=b"")
    assert parse_auth_params(other)[1]["response"] != params["response"]


def test_client_prefers_auth_over_auth_int():
    creds = build_authorization('Digest realm="r", nonce="n", qop="auth-int,auth"', "INVITE", "sip:x@y", "u", "p",
                                cnonce="c")  # fmt: skip
    assert parse_auth_params(creds)[1]["qop"] == "auth"


def test_client_escapes_quotes_in_username():
    auth = DigestAuthenticator(SECRET, REALM, random_bytes=counter_bytes())
    challenge = pick_challenge(auth.challenge(invite(), T0))[1]
    creds = build_authorization(challenge, "INVITE", RURI, 'we"ird\\user', "pw", cnonce="c")
    assert parse_auth_params(creds)[1]["username"] == 'we"ird\\user'
    result = auth.verify(with_creds(creds), {'we"ird\\user': "pw"}.get, T0)
    assert result.ok and result.username == 'we"ird\\user'


@pytest.mark.parametrize(
    ("kwargs", "value"),
    [
        ({"nc": 0}, 'Digest realm="r", nonce="n", qop="auth"'),
        ({"nc": 2**32}, 'Digest realm="r", nonce="n", qop="auth"'),
        ({"cnonce": ""}, 'Digest realm="r", nonce="n", qop="auth"'),
        ({"cnonce": ""}, 'Digest realm="r", nonce="n", algorithm=MD5-sess'),
        ({"cnonce": "a\r\nX-Injected: 1"}, 'Digest realm="r", nonce="n", qop="auth"'),
        ({}, 'Basic realm="r"'),
        ({}, 'Digest realm="r", nonce="n", algorithm=SHA-1'),
        ({}, ""),
    ],
)
def test_build_authorization_refuses(kwargs, value):
    args = {"cnonce": "c", **kwargs}
    with pytest.raises(ValueError):
        build_authorization(value, "INVITE", "sip:x@y", "u", "p", **args)


def test_build_authorization_refuses_crlf_in_uri():
    with pytest.raises(ValueError):
        build_authorization('Digest realm="r", nonce="n"', "INVITE", "sip:x@y\r\nX: 1", "u", "p", cnonce="c")


def test_pick_challenge_from_several_headers():
    resp = Response(
        401,
        headers=[
            ("WWW-Authenticate", 'Digest realm="carrier", nonce="m", algorithm=MD5, qop="auth"'),
            ("WWW-Authenticate", 'Basic realm="carrier"'),
            ("WWW-Authenticate", 'Digest realm="carrier", nonce="s", algorithm=SHA-256, qop="auth"'),
        ],
    )
    assert pick_challenge(resp) == (
        "Authorization",
        'Digest realm="carrier", nonce="s", algorithm=SHA-256, qop="auth"',
    )


def test_pick_challenge_407_and_non_challenges():
    resp = Response(407, headers=[("Proxy-Authenticate", 'Digest realm="p", nonce="n"')])
    assert pick_challenge(resp) == ("Proxy-Authorization", 'Digest realm="p", nonce="n"')
    # a 407 is answered from Proxy-Authenticate only
    assert (
        pick_challenge(Response(407, headers=[("WWW-Authenticate", 'Digest realm="p", nonce="n"')])) is None
    )
    assert pick_challenge(Response(401)) is None
    assert pick_challenge(Response(401, headers=[("WWW-Authenticate", 'garbage ,,, "')])) is None
    assert (
        pick_challenge(Response(403, headers=[("WWW-Authenticate", 'Digest realm="p", nonce="n"')])) is None
    )
    assert pick_challenge(Response(200)) is None
