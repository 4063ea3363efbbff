"""SIP digest authentication: challenging and verifying peers, and answering challenges.

The SBC authenticates customer trunks that carry credentials instead of (or besides) an IP ACL, and
authenticates itself to carriers that challenge its outbound INVITEs. Both directions speak RFC 3261
§22 digest, with the hash algorithms of RFC 8760 (SHA-256 next to MD5) and the semantics of RFC 2617
and RFC 7616 (qop, nonce-count, stale).

Server side (:class:`DigestAuthenticator`):

* Nonces are stateless: ``base64(timestamp || salt || HMAC-SHA256(secret, timestamp || salt || realm))``.
  Any node holding the same secret verifies any other node's nonce, so a cluster shares only the secret,
  and a nonce expires :data:`NONCE_TTL_S` after it was issued. The random salt makes every challenge's
  nonce unique even when two are issued in the same millisecond (on one node or on two), which keeps the
  nonce-count bookkeeping of one client apart from another's.
* Replay protection: for ``qop=auth`` the nonce-count must grow per nonce. The highest count seen is kept
  in a bounded LRU (:data:`NC_CACHE_SIZE` nonces). This state is per node: across a cluster, a request
  replayed to a *different* node within the nonce lifetime is not detected, and neither is a replay of a
  nonce evicted from the LRU. Requests without qop (RFC 2069 compatibility) carry no count; they are
  protected only by the nonce lifetime.
* ``-sess`` algorithms are refused by the server: it never offers them, and RFC 7616 §3.4 requires the
  client to answer with an algorithm the challenge offered. The client side (a carrier may challenge with
  MD5-sess) implements them per RFC 7616 §3.4.2.

The reasons in :class:`AuthResult` are for logs and metrics; a caller must not send them to the peer,
since "unknown user" versus "bad response" would let a scanner enumerate usernames.

Sans-I/O: no sockets, no clock (``now`` is an argument: wall-clock seconds, e.g. ``time.time()``, because
nodes of a cluster compare each other's nonce timestamps). Randomness comes from an injectable source.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .errors import SIPParseError
from .headers import parse_auth_params, quote_string, split_commas
from .message import Request, Response, make_response
from .uri import parse_uri, uri_equal

NONCE_TTL_S = 300.0
"""Nonce lifetime. Kamailio's auth module defaults ``nonce_expire`` to 300 s: long enough for the
INVITE → 401 → INVITE round trip even with UDP retransmissions (Timer B is 32 s) and for a UA to reuse the
nonce on a few following requests, short enough to bound how long a captured nonce is worth replaying."""

NONCE_CLOCK_SKEW_S = 5.0
"""How far in the future a nonce timestamp may lie and still be accepted. Nodes of a cluster issue each
other's nonces; NTP keeps them within milliseconds, this allows for a badly synchronised node. A larger
future timestamp cannot come from us, so it is refused as a forgery (it would also extend the lifetime)."""

NC_CACHE_SIZE = 65536
"""Nonces whose highest nonce-count is remembered (LRU). About 150 bytes each, so ~10 MB at most; at one
fresh nonce per challenged call and the 300 s lifetime it covers over 200 challenged calls per second
before an entry is evicted while still valid."""

MIN_SECRET_BYTES = 16
"""Shortest accepted HMAC key: 128 bits, so the key cannot be searched offline from observed nonces."""

NONCE_TIMESTAMP_BYTES = 8
"""Issue time in milliseconds as an unsigned 64-bit big-endian integer."""

NONCE_TIME_LIMIT_S = 2**63 / 1000
"""Times from here on are refused: their millisecond count could round past the 64-bit timestamp field."""

NONCE_SALT_BYTES = 8
"""Random bytes per nonce: 64 bits make two nonces issued in the same millisecond differ."""

NONCE_MAC_BYTES = 32
"""Full HMAC-SHA256 output; not truncated, its cost is negligible next to a SIP transaction."""

NONCE_BYTES = NONCE_TIMESTAMP_BYTES + NONCE_SALT_BYTES + NONCE_MAC_BYTES
"""Decoded nonce length: 48 bytes, which base64 encodes without padding into 64 characters."""

NONCE_TEXT_LEN = NONCE_BYTES * 4 // 3
"""Length of the nonce as sent; anything else is refused before decoding."""

NC_MAX = 0xFFFFFFFF
"""Largest nonce-count: ``nc-value = 8LHEX`` (RFC 2617 §3.2.2)."""

TO_TAG_BYTES = 6
"""Random bytes in the To tag of a challenge: 48 bits, above the 32 RFC 3261 §19.3 asks for."""

SERVER_ALGORITHMS: tuple[str, ...] = ("SHA-256", "MD5")
"""What :meth:`DigestAuthenticator.challenge` offers, one challenge each, most preferred first
(RFC 8760 §2.4). MD5 stays because most deployed SIP trunks and PBXs still only speak MD5."""

# Reasons an AuthResult carries (logs and metric labels; never sent to the peer).
REASON_OK = "ok"
REASON_NO_CREDENTIALS = "no credentials"
REASON_MALFORMED = "malformed credentials"
REASON_REALM_MISMATCH = "realm mismatch"
REASON_UNSUPPORTED_ALGORITHM = "unsupported algorithm"
REASON_UNSUPPORTED_QOP = "unsupported qop"
REASON_BAD_NONCE = "bad nonce"
REASON_URI_MISMATCH = "uri mismatch"
REASON_OPAQUE_MISMATCH = "opaque mismatch"
REASON_UNKNOWN_USER = "unknown user"
REASON_BAD_RESPONSE = "bad response"
REASON_STALE_NONCE = "stale nonce"
REASON_REPLAYED_NC = "replayed nonce-count"

_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
_CRLF_NUL_RE = re.compile(r"[\r\n\x00]")
# One comma-separated item of a challenge list: an item whose part before '=' holds whitespace
# ("Digest realm") or that has no '=' at all ("Basic") starts a new challenge (RFC 7235 §4.1).
_WSP_RE = re.compile(r"[ \t]")


@dataclass(frozen=True, slots=True)
class _Algorithm:
    name: str  # canonical spelling, as written in the algorithm parameter
    hash_name: str  # hashlib name
    sess: bool  # RFC 7616 §3.4.2: HA1 also hashes nonce and cnonce
    strength: int  # client preference: higher wins


def _algorithms() -> dict[str, _Algorithm]:
    table = [("MD5", "md5", 1), ("SHA-256", "sha256", 2)]
    try:  # RFC 8760 §2.3 adds SHA-512/256; available when OpenSSL provides it
        hashlib.new("sha512_256")
        table.append(("SHA-512-256", "sha512_256", 3))
    except ValueError:  # pragma: no cover - depends on the OpenSSL build
        pass
    out: dict[str, _Algorithm] = {}
    for name, hash_name, strength in table:
        out[name.lower()] = _Algorithm(name, hash_name, False, strength)
        out[name.lower() + "-sess"] = _Algorithm(name + "-sess", hash_name, True, strength)
    return out


_ALGORITHMS = _algorithms()


def _b(text: str) -> bytes:
    """Header text back to the octets it arrived as (values are decoded with surrogateescape)."""
    return text.encode("utf-8", "surrogateescape")


def _hex(hash_name: str, data: bytes) -> str:
    return hashlib.new(hash_name, data).hexdigest()


def digest_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """Compute the ``response`` value of RFC 2617 §3.2.2.1 / RFC 7616 §3.4.1 as lowercase hex.

    ``algorithm`` is any supported name, case-insensitive (MD5, SHA-256, SHA-512-256 and their -sess
    forms); ``qop`` is None (RFC 2069 form, nc/cnonce unused), ``"auth"`` or ``"auth-int"`` (which hashes
    ``body``); ``nc`` is the 8-hex-digit count as sent. Strings are hashed as the octets they arrived as.
    Raises ValueError for an unknown algorithm or qop. Pure.
    """
    alg = _ALGORITHMS.get(algorithm.lower())
    if alg is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    h = alg.hash_name
    ha1 = _hex(h, _b(f"{username}:{realm}:{password}"))
    if alg.sess:
        ha1 = _hex(h, _b(f"{ha1}:{nonce}:{cnonce}"))
    if qop is None or qop == "auth":
        ha2 = _hex(h, _b(f"{method}:{uri}"))
    elif qop == "auth-int":
        ha2 = _hex(h, _b(f"{method}:{uri}:") + _hex(h, body).encode("ascii"))
    else:
        raise ValueError(f"unsupported qop {qop!r}")
    if qop is None:
        return _hex(h, _b(f"{ha1}:{nonce}:{ha2}"))
    return _hex(h, _b(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The verdict of :meth:`DigestAuthenticator.verify`.

    ``ok`` is True only for valid, fresh, non-replayed credentials. ``username`` is the claimed user
    whenever the credentials could be read (also on failure, for logs), else None. ``reason`` is one of
    the ``REASON_*`` constants. ``stale`` is True when the credentials were right but the nonce had
    expired or its count was replayed: re-challenge with ``stale=True`` so the UA retries with the new
    nonce without asking its user again (RFC 7616 §3.3).
    """

    ok: bool
    username: str | None
    reason: str
    stale: bool = False


class DigestAuthenticator:
    """Challenges requests and verifies their digest credentials for one realm.

    ``secret`` keys the nonce HMAC; nodes of a cluster that share it accept each other's nonces. It must
    be at least :data:`MIN_SECRET_BYTES` long, and ``realm`` non-empty, else ValueError. ``random_bytes``
    (default ``os.urandom``) supplies nonce salts and To tags; tests inject a deterministic one.
    The only state is the nonce-count LRU (see the module docstring); one instance serves one event loop.
    """

    def __init__(
        self,
        secret: bytes,
        realm: str,
        nonce_ttl_s: float = NONCE_TTL_S,
        *,
        nc_cache_size: int = NC_CACHE_SIZE,
        random_bytes: Callable[[int], bytes] = os.urandom,
        algorithms: tuple[str, ...] = SERVER_ALGORITHMS,
    ) -> None:
        if not algorithms or any(a not in SERVER_ALGORITHMS for a in algorithms):
            raise ValueError(f"digest algorithms must be a non-empty subset of {SERVER_ALGORITHMS}")
        self.algorithms = tuple(algorithms)
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"digest secret must be at least {MIN_SECRET_BYTES} bytes")
        if not realm or _CRLF_NUL_RE.search(realm):
            raise ValueError("digest realm must be non-empty, without CR, LF or NUL")
        if nonce_ttl_s <= 0:
            raise ValueError("nonce_ttl_s must be positive")
        if nc_cache_size < 1:
            raise ValueError("nc_cache_size must be at least 1")
        self._secret = bytes(secret)
        self.realm = realm
        self._realm_b = _b(realm)
        self.nonce_ttl_s = nonce_ttl_s
        self._nc_cache_size = nc_cache_size
        self._random_bytes = random_bytes
        self._nonce_counts: OrderedDict[str, int] = OrderedDict()
        # Opaque is constant per secret and realm: RFC 2617 lets the server put state in it, and a
        # stateless server needs none, but a wrong value shows a client answering someone else's challenge.
        self.opaque = hmac.new(self._secret, b"opaque\x00" + self._realm_b, hashlib.sha256).hexdigest()[:32]

    # -- nonces ----------------------------------------------------------------------------------

    def _mac(self, head: bytes) -> bytes:
        return hmac.new(self._secret, head + self._realm_b, hashlib.sha256).digest()

    def new_nonce(self, now: float) -> str:
        """Return a fresh nonce stamped with ``now`` (finite seconds >= 0; ValueError otherwise)."""
        if not 0 <= now < NONCE_TIME_LIMIT_S:
            raise ValueError("now must be a non-negative finite time")
        millis = int(now * 1000)
        head = struct.pack(">Q", millis) + self._random_bytes(NONCE_SALT_BYTES)
        if len(head) != NONCE_TIMESTAMP_BYTES + NONCE_SALT_BYTES:
            raise ValueError("random_bytes returned the wrong number of bytes")
        return base64.b64encode(head + self._mac(head)).decode("ascii")

    def nonce_issued_at(self, nonce: str, now: float) -> float | None:
        """Return when ``nonce`` was issued (seconds) if this realm's secret signed it, else None.

        None also for a timestamp more than :data:`NONCE_CLOCK_SKEW_S` after ``now``. Expiry is not
        checked here (an expired nonce still says who issued it). Never raises.
        """
        if len(nonce) != NONCE_TEXT_LEN or not nonce.isascii():
            return None
        try:
            raw = base64.b64decode(nonce.encode("ascii"), validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) != NONCE_BYTES:
            return None
        head, mac = raw[:-NONCE_MAC_BYTES], raw[-NONCE_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(head)):
            return None
        issued = struct.unpack(">Q", head[:NONCE_TIMESTAMP_BYTES])[0] / 1000
        if issued > now + NONCE_CLOCK_SKEW_S:
            return None
        return issued

    # -- challenge -------------------------------------------------------------------------------

    def challenge_values(self, now: float, *, stale: bool = False) -> list[str]:
        """The challenge header values (``algorithms`` in order), sharing one fresh nonce.

        Both carry ``qop="auth"`` and the opaque; ``stale=true`` when ``stale``. A shared nonce lets a
        client answer either; the count bookkeeping is per nonce, whichever algorithm it picked.
        """
        nonce = self.new_nonce(now)
        values = []
        for algorithm in self.algorithms:
            value = (
                f"Digest realm={quote_string(self.realm)}, nonce={quote_string(nonce)}, "
                f'opaque="{self.opaque}", algorithm={algorithm}, qop="auth"'
            )
            if stale:
                value += ", stale=true"
            values.append(value)
        return values

    def challenge(
        self,
        request: Request,
        now: float,
        *,
        stale: bool = False,
        proxy: bool = False,
        to_tag: str | None = None,
    ) -> Response:
        """Build the 401 (WWW-Authenticate) or, with ``proxy``, 407 (Proxy-Authenticate) for ``request``.

        One challenge per algorithm in ``algorithms`` order (RFC 8760 §2.4: most preferred first),
        one fresh nonce.
        ``stale`` marks a re-challenge after :meth:`verify` said ``stale``. The To tag is ``to_tag`` or
        a random one (the request's own tag wins when it has one, as for any in-dialog response).
        Raises ValueError only for a ``now`` that :meth:`new_nonce` refuses (negative, not finite).
        """
        header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        headers = [(header, value) for value in self.challenge_values(now, stale=stale)]
        tag = to_tag if to_tag is not None else self._random_bytes(TO_TAG_BYTES).hex()
        return make_response(request, 407 if proxy else 401, to_tag=tag, headers=headers)

    # -- verification ----------------------------------------------------------------------------

    def _select_credentials(self, request: Request, proxy: bool | None) -> tuple[dict[str, str] | None, str]:
        """The first Digest credentials for our realm, else None and why there are none."""
        if proxy is None:
            names: tuple[str, ...] = ("Authorization", "Proxy-Authorization")
        else:
            names = ("Proxy-Authorization",) if proxy else ("Authorization",)
        malformed = other_realm = False
        for name in names:
            # RFC 3261 §7.3.1: credentials are never comma-combined; each line is one credential.
            for value in request.get_all(name):
                try:
                    scheme, params = parse_auth_params(value)
                except SIPParseError:
                    malformed = True
                    continue
                if scheme.lower() != "digest":
                    continue  # Basic is forbidden in SIP (RFC 3261 §22.4): as if absent
                realm = params.get("realm")
                if realm == self.realm:
                    return params, REASON_OK
                if realm is None:
                    malformed = True
                else:
                    other_realm = True
        if malformed:
            return None, REASON_MALFORMED
        if other_realm:
            return None, REASON_REALM_MISMATCH
        return None, REASON_NO_CREDENTIALS

    def verify(
        self,
        request: Request,
        lookup: Callable[[str], str | None],
        now: float,
        *,
        proxy: bool | None = None,
    ) -> AuthResult:
        """Check the request's digest credentials for this realm; never raises for any request content.

        ``lookup(username)`` returns the user's cleartext password or None for an unknown user (its own
        exceptions propagate). ``proxy`` picks the header: False Authorization, True
        Proxy-Authorization, None (default) both, first match for our realm wins. Checks in order:
        presence and syntax, realm, algorithm (MD5 or SHA-256), qop (absent or auth, with an 8-hex-digit
        non-zero nc and a cnonce), nonce signature, uri equal to the Request-URI (RFC 2617 §3.2.2.5,
        compared as parsed URIs per RFC 3261 §19.1.4), opaque (when sent), user, response (constant-time),
        then expiry and the nonce-count, which are reported ``stale`` since the credentials were right.
        Only an accepted ``qop=auth`` request records its count; ACK and CANCEL must not be verified
        (RFC 3261 §22.1: they cannot be challenged).
        """
        creds, reason = self._select_credentials(request, proxy)
        if creds is None:
            return AuthResult(False, None, reason)
        username = creds.get("username")
        if username is None:
            return AuthResult(False, None, REASON_MALFORMED)
        for key in ("nonce", "uri", "response"):
            if not creds.get(key):
                return AuthResult(False, username, REASON_MALFORMED)
        alg = _ALGORITHMS.get(creds.get("algorithm", "MD5").lower())
        if alg is None or alg.name not in self.algorithms:
            return AuthResult(False, username, REASON_UNSUPPORTED_ALGORITHM)
        qop = creds.get("qop")
        nc = 0
        cnonce = ""
        if qop is not None:
            qop = qop.lower()
            if qop != "auth":
                return AuthResult(False, username, REASON_UNSUPPORTED_QOP)
            nc_text = creds.get("nc", "")
            cnonce = creds.get("cnonce", "")
            if not _NC_RE.fullmatch(nc_text) or not cnonce:
                return AuthResult(False, username, REASON_MALFORMED)
            nc = int(nc_text, 16)
            if nc == 0:
                return AuthResult(False, username, REASON_MALFORMED)
        nonce = creds["nonce"]
        issued = self.nonce_issued_at(nonce, now)
        if issued is None:
            return AuthResult(False, username, REASON_BAD_NONCE)
        if not self._uri_matches(creds["uri"], request):
            return AuthResult(False, username, REASON_URI_MISMATCH)
        opaque = creds.get("opaque")
        if opaque is not None and not hmac.compare_digest(_b(opaque), self.opaque.encode("ascii")):
            return AuthResult(False, username, REASON_OPAQUE_MISMATCH)
        password = lookup(username)
        # An unknown user still costs one hash, so response timing does not tell users apart.
        expected = digest_response(
            alg.name,
            username,
            self.realm,
            password if password is not None else "",
            request.method,
            creds["uri"],
            nonce,
            qop=qop,
            nc=creds.get("nc", ""),
            cnonce=cnonce,
        )
        if password is None:
            return AuthResult(False, username, REASON_UNKNOWN_USER)
        if not hmac.compare_digest(expected.encode("ascii"), _b(creds["response"].lower())):
            return AuthResult(False, username, REASON_BAD_RESPONSE)
        if now - issued > self.nonce_ttl_s:
            return AuthResult(False, username, REASON_STALE_NONCE, stale=True)
        if qop is not None and not self._record_nc(nonce, nc):
            return AuthResult(False, username, REASON_REPLAYED_NC, stale=True)
        return AuthResult(True, username, REASON_OK)

    @staticmethod
    def _uri_matches(digest_uri: str, request: Request) -> bool:
        try:
            return uri_equal(parse_uri(digest_uri), request.ruri)
        except SIPParseError:
            return False

    def _record_nc(self, nonce: str, nc: int) -> bool:
        """Remember ``nc`` for ``nonce`` if it is higher than any seen; False when it is not (replay).

        A nonce not in the LRU (new, evicted, or first seen on this node) accepts any count.
        """
        counts = self._nonce_counts
        seen = counts.get(nonce)
        if seen is not None and nc <= seen:
            counts.move_to_end(nonce)
            return False
        counts[nonce] = nc
        counts.move_to_end(nonce)
        while len(counts) > self._nc_cache_size:
            counts.popitem(last=False)
        return True


# -- client side -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """One Digest challenge from a WWW-Authenticate or Proxy-Authenticate value.

    ``algorithm`` is as sent (None when absent, meaning MD5); ``qop`` the offered options lowercased
    (empty: RFC 2069 challenge); ``text`` the challenge as received, for re-use and logs.
    """

    realm: str
    nonce: str
    algorithm: str | None
    qop: tuple[str, ...]
    opaque: str | None
    stale: bool
    text: str

    @property
    def supported(self) -> bool:
        """True when this module can answer it: a known algorithm, and no qop or auth/auth-int among it."""
        if _ALGORITHMS.get((self.algorithm or "MD5").lower()) is None:
            return False
        return not self.qop or "auth" in self.qop or "auth-int" in self.qop


def _split_challenges(value: str) -> list[str]:
    """Split a header value that may hold several challenges (RFC 7235 §4.1) into one text each."""
    try:
        items = split_commas(value, what="WWW-Authenticate")
    except SIPParseError:
        return []
    groups: list[list[str]] = []
    for item in items:
        if not item:
            continue  # the #rule allows empty list elements
        name, eq, _ = item.partition("=")
        if not eq or _WSP_RE.search(name.strip()):
            groups.append([item])
        elif groups:
            groups[-1].append(item)
        # a parameter before any scheme is junk: skipped
    return [", ".join(group) for group in groups]


def parse_challenges(value: str) -> list[DigestChallenge]:
    """Every well-formed Digest challenge in one WWW-Authenticate/Proxy-Authenticate value, in order.

    Other schemes, and Digest challenges that do not parse or lack realm or nonce, are skipped: a carrier
    sending one bad challenge next to a good one still gets answered. Never raises.
    """
    out: list[DigestChallenge] = []
    for text in _split_challenges(value):
        try:
            scheme, params = parse_auth_params(text)
        except SIPParseError:
            continue
        realm = params.get("realm")
        nonce = params.get("nonce")
        if scheme.lower() != "digest" or realm is None or not nonce:
            continue
        qop_text = params.get("qop")
        qop = tuple(q.strip().lower() for q in qop_text.split(",") if q.strip()) if qop_text else ()
        out.append(
            DigestChallenge(
                realm=realm,
                nonce=nonce,
                algorithm=params.get("algorithm"),
                qop=qop,
                opaque=params.get("opaque"),
                stale=params.get("stale", "").lower() == "true",
                text=text,
            )
        )
    return out


def choose_challenge(challenges: list[DigestChallenge]) -> DigestChallenge | None:
    """The challenge to answer: the strongest supported algorithm (SHA-512-256 > SHA-256 > MD5, plain
    before -sess), the first offered on a tie; None when none is supported. Never raises."""
    best: DigestChallenge | None = None
    best_rank = (-1, False)
    for challenge in challenges:
        if not challenge.supported:
            continue
        alg = _ALGORITHMS[(challenge.algorithm or "MD5").lower()]
        rank = (alg.strength, not alg.sess)
        if rank > best_rank:
            best, best_rank = challenge, rank
    return best


def build_authorization(
    challenge_header_value: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    *,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """Answer a challenge: return the Authorization (or Proxy-Authorization) header value.

    ``challenge_header_value`` may hold several challenges (several header values joined by commas);
    the strongest supported one is answered (:func:`choose_challenge`). qop: ``auth`` when offered, else
    ``auth-int`` (hashing ``body``, the request's body as sent), else the RFC 2069 form without qop, nc
    and cnonce. ``uri`` is the Request-URI of the request being sent; ``nc`` counts the requests sent
    with this nonce, starting at 1. ``algorithm`` and ``opaque`` are echoed when the challenge had them.

    Raises ValueError when no supported Digest challenge is present, ``nc`` is outside 1..2**32-1, the
    challenge needs a cnonce and ``cnonce`` is empty, or a value would contain CR, LF or NUL.
    """
    chosen = choose_challenge(parse_challenges(challenge_header_value))
    if chosen is None:
        raise ValueError("no supported Digest challenge")
    if not 1 <= nc <= NC_MAX:
        raise ValueError(f"nonce-count {nc} outside 1..{NC_MAX}")
    for what, text in (("method", method), ("uri", uri), ("username", username), ("cnonce", cnonce)):
        if _CRLF_NUL_RE.search(text):
            raise ValueError(f"{what} contains CR, LF or NUL")
    alg = _ALGORITHMS[(chosen.algorithm or "MD5").lower()]
    qop = "auth" if "auth" in chosen.qop else "auth-int" if "auth-int" in chosen.qop else None
    needs_cnonce = qop is not None or alg.sess
    if needs_cnonce and not cnonce:
        raise ValueError("this challenge needs a cnonce")
    nc_text = f"{nc:08x}"
    response = digest_response(
        alg.name,
        username,
        chosen.realm,
        password,
        method,
        uri,
        chosen.nonce,
        qop=qop,
        nc=nc_text,
        cnonce=cnonce,
        body=body,
    )
    parts = [
        f"username={quote_string(username)}",
        f"realm={quote_string(chosen.realm)}",
        f"nonce={quote_string(chosen.nonce)}",
        f"uri={quote_string(uri)}",
        f'response="{response}"',
    ]
    if chosen.algorithm is not None:
        parts.append(f"algorithm={alg.name}")
    if needs_cnonce:
        parts.append(f"cnonce={quote_string(cnonce)}")
    if chosen.opaque is not None:
        parts.append(f"opaque={quote_string(chosen.opaque)}")
    if qop is not None:
        parts.append(f"qop={qop}")
        parts.append(f"nc={nc_text}")
    return "Digest " + ", ".join(parts)


def pick_challenge(response: Response) -> tuple[str, str] | None:
    """For a 401 or 407, return (header to send, challenge text to answer); None when there is nothing.

    401 reads WWW-Authenticate and answers with Authorization; 407 reads Proxy-Authenticate and answers
    with Proxy-Authorization (RFC 3261 §22.2, §22.3). Across all header lines the strongest supported
    challenge wins. With several realms (a forking proxy) only that one realm is answered. None for
    other statuses or when no challenge is supported. Never raises.
    """
    if response.status == 401:
        source, target = "WWW-Authenticate", "Authorization"
    elif response.status == 407:
        source, target = "Proxy-Authenticate", "Proxy-Authorization"
    else:
        return None
    challenges = [c for value in response.get_all(source) for c in parse_challenges(value)]
    chosen = choose_challenge(challenges)
    return None if chosen is None else (target, chosen.text)
