"""SIP, SIPS, tel and other URIs: parsing, serialisation and comparison.

Grammar: RFC 3261 §19.1 and §25.1 (SIP/SIPS URIs), RFC 3966 (tel URIs), RFC 5118 (IPv6 torture cases),
RFC 3986 (any other scheme, kept opaque). Sans-I/O: pure functions over ``str``; no DNS, no sockets.

Strings arrive decoded from UTF-8 with ``errors="surrogateescape"``, so a byte that is not UTF-8 is a lone
surrogate U+DC80..U+DCFF; escaping goes back through the same codec so such bytes survive a round trip.

Every syntax error raises :class:`~sbc.sip.errors.SIPParseError` with status 400 and a reason that names the
part that is wrong. An unknown scheme is *not* an error here: it parses into :class:`AbsoluteURI` and the
caller decides whether that deserves a 416 (RFC 3261 §8.2.2.1).
"""

from __future__ import annotations

import ipaddress
import re
import string
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar
from urllib.parse import quote, unquote_to_bytes

from sbc.sip.errors import SIPParseError

MAX_PORT = 65535
"""Largest port number: RFC 3261 writes ``port = 1*DIGIT`` but UDP/TCP/SCTP ports are 16-bit (RFC 768/793)."""

_MAX_PORT_DIGITS = len(str(MAX_PORT))
"""Digits (after leading zeros) above which a port is out of range without converting it to an int."""

IPV4_OCTET_MAX = 255
"""Largest value of one dotted-quad component (RFC 3261 IPv4address, RFC 791)."""

PARSE_CACHE_MAX = 4096
"""Entries kept by each memo of successful parses (URI text, host:port text). The same peers and dialog
URIs recur in every message, so a hit saves the whole parse; the memo is emptied when full, so a flood of
distinct URIs costs at most this many entries (same order as Kamailio's default DNS cache size)."""

_T = TypeVar("_T")


def remember(cache: dict, key: str, result: _T) -> _T:
    """Store ``result`` under ``key`` in ``cache``, one of the bounded parse memos (emptied whole
    once it holds PARSE_CACHE_MAX entries); return it. Only a miss calls this: a hit stays one
    dict lookup in the caller."""
    if len(cache) >= PARSE_CACHE_MAX:
        cache.clear()
    cache[key] = result
    return result

# Escaping: the characters each part may carry unescaped (RFC 3261 §25.1). ``quote`` always keeps
# ALPHA / DIGIT / "-" / "." / "_" / "~" safe, the rest of ``unreserved`` (``mark``) is listed here.
_MARK = "!*'()"
_USER_SAFE = _MARK + "&=+$,;?/"  # user-unreserved
_PASSWORD_SAFE = _MARK + "&=+$,"
_PARAM_SAFE = _MARK + "[]/:&+$"  # param-unreserved
_HEADER_SAFE = _MARK + "[]/?:+$"  # hnv-unreserved
_TEL_NUMBER_SAFE = "+-.()*"  # RFC 3966 visual separators and '*'; '#' must be written %23

# Characters that never appear in a URI (RFC 3986 §2: no CTL, SP, DQUOTE, "<", ">").
_FORBIDDEN_RE = re.compile(r'[\x00-\x20\x7f<>"]')
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_IPV4_RE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}")
_IPV6_CHARS_RE = re.compile(r"[0-9A-Fa-f:.]+")
# hostname = *( domainlabel "." ) toplabel [ "." ]; "_" tolerated because deployed SRV-style and PBX
# names carry it. All-numeric names are judged as IPv4 addresses instead.
_HOSTNAME_RE = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?)*\.?"
)
_NUMERIC_HOST_RE = re.compile(r"[0-9.]+")
# RFC 3966: global-number-digits = "+" *phonedigit DIGIT *phonedigit;
# local-number-digits = *phonedigit-hex (HEXDIG / "*" / "#") *phonedigit-hex.
_TEL_GLOBAL_RE = re.compile(r"\+[0-9\-.()]*[0-9][0-9\-.()]*")
_TEL_LOCAL_RE = re.compile(r"[0-9A-Fa-f*#\-.()]*[0-9A-Fa-f*#][0-9A-Fa-f*#\-.()]*")
_TEL_VISUAL_RE = re.compile(r"[\-.()]")

# RFC 3261 §19.1.4: these parameters make URIs differ when present in only one of them. ``transport``
# is added because the same section lists ``sip:bob@biloxi.com`` and ``...;transport=udp`` as different.
_PARAMS_THAT_MUST_BOTH_APPEAR = frozenset({"user", "ttl", "method", "maddr", "transport"})


def _error(what: str, problem: str) -> SIPParseError:
    return SIPParseError(f"{what}: {problem}")


def _unescape(text: str, what: str, part: str) -> str:
    """Decode ``%HH`` escapes; raise SIPParseError naming ``part`` if a '%' starts no valid escape."""
    if "%" not in text:
        return text
    if _BAD_ESCAPE_RE.search(text) is not None:
        raise _error(what, f"bad %-escape in {part}")
    return unquote_to_bytes(text.encode("utf-8", "surrogateescape")).decode("utf-8", "surrogateescape")


# Per ``safe`` set: a regex matching text that needs no escaping at all (the usual case), so that
# serialising a URI skips the encode + urllib.parse.quote round trip (a third of URI serialisation).
_PLAIN_RE: dict[str, re.Pattern[str]] = {}  # without the C speedups: a regex per safe set
_PLAIN_TABLE: dict[str, bytes] = {}  # with them: a table per safe set (see _escape)

try:  # sbc/sip/_speedups.pyx; the regex check in _escape is the fallback
    from sbc.sip._speedups import all_in as _all_in
except ImportError:  # pragma: no cover - source checkout without a build
    _all_in = None


def _plain_table(safe: str) -> bytes:
    """The 128-byte table of what needs no escaping (the unreserved set plus ``safe``), for
    ``_speedups.all_in``."""
    plain = set(string.ascii_letters + string.digits + "-_.~" + safe)
    return bytes(1 if chr(c) in plain else 0 for c in range(128))


def _escape(text: str, safe: str) -> str:
    """Percent-encode every octet of ``text`` outside the unreserved set plus ``safe``."""
    if _all_in is not None:
        table = _PLAIN_TABLE.get(safe)
        if table is None:
            table = _PLAIN_TABLE[safe] = _plain_table(safe)
        if _all_in(text, table):
            return text
    else:
        plain = _PLAIN_RE.get(safe)
        if plain is None:
            plain = _PLAIN_RE[safe] = re.compile("[A-Za-z0-9_.~" + re.escape(safe) + "-]*")
        if plain.fullmatch(text) is not None:
            return text
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that did not come from surrogateescape decoding
        data = text.encode("utf-8", "surrogatepass")
    return quote(data, safe=safe)


def _parse_port(text: str, what: str) -> int:
    if not text or not (text.isascii() and text.isdigit()):
        raise _error(what, f"bad port {text!r}")
    digits = text.lstrip("0") or "0"
    if len(digits) > _MAX_PORT_DIGITS or int(digits) > MAX_PORT:
        raise _error(what, f"port {text} out of range")
    return int(digits)


def _parse_host(text: str, what: str) -> str:
    """Validate one host; return it with domain names lowercased and IPv6 references kept in brackets."""
    if not text:
        raise _error(what, "empty host")
    if text[0] == "[":
        if text[-1] != "]":
            raise _error(what, "unterminated IPv6 reference")
        inner = text[1:-1]
        if _IPV6_CHARS_RE.fullmatch(inner) is None:
            raise _error(what, f"malformed IPv6 reference {text!r}")
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise _error(what, f"malformed IPv6 reference {text!r}") from None
        return text.lower()
    if ":" in text:
        raise _error(what, "IPv6 address not enclosed in brackets")
    if text[-1] in "0123456789." and _NUMERIC_HOST_RE.fullmatch(text) is not None:
        if _IPV4_RE.fullmatch(text) is None:
            raise _error(what, f"malformed IPv4 address {text!r}")
        for octet in text.split("."):  # a loop, not any(...): a cpdef function holds no generator
            if int(octet) > IPV4_OCTET_MAX:
                raise _error(what, f"malformed IPv4 address {text!r}")
        return text
    if _HOSTNAME_RE.fullmatch(text) is None:
        raise _error(what, f"bad host {text!r}")
    return text.lower()


_hostport_cache: dict[str, tuple[str, int | None]] = {}


def parse_hostport(text: str, what: str = "host") -> tuple[str, int | None]:
    """Parse ``host [":" port]`` as used in SIP URIs and Via sent-by (RFC 3261 §25.1, RFC 5118).

    Returns ``(host, port)``: domain names lowercased, an IPv6 reference kept with its brackets, port
    ``None`` when absent. Raises SIPParseError (reason prefixed with ``what``) for an empty host, a bare
    IPv6 address (RFC 5118 §4.2), a malformed IPv4/IPv6 address or hostname, or a bad/out-of-range port.
    Successful results are memoised (bounded by PARSE_CACHE_MAX); errors are always recomputed.
    """
    # Annotated locals (here and below): compiled code works on dict- and str-typed locals in C
    # (here the memo's get, which on the module global goes through attribute lookups). Plain
    # Python ignores the annotations.
    cache: dict = _hostport_cache
    cached = cache.get(text)
    if cached is not None:
        return cached
    return remember(cache, text, _parse_hostport(text, what))


def _parse_hostport(text: str, what: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _error(what, "unterminated IPv6 reference")
        host, rest = text[: end + 1], text[end + 1 :]
        if not rest:
            return _parse_host(host, what), None
        if rest[0] != ":":
            raise _error(what, "unexpected text after IPv6 reference")
        return _parse_host(host, what), _parse_port(rest[1:], what)
    colon = text.find(":")
    if colon < 0:
        return _parse_host(text, what), None
    if text.find(":", colon + 1) >= 0:
        raise _error(what, "IPv6 address not enclosed in brackets")
    return _parse_host(text[:colon], what), _parse_port(text[colon + 1 :], what)


def format_host(host: str) -> str:
    """Return ``host`` as it must be written in a URI or Via: a bare IPv6 address gets brackets.

    Anything else (a domain, an IPv4 address, an already bracketed reference) is returned unchanged.
    """
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def _parse_uri_params(text: str, what: str) -> dict[str, str | None]:
    """Parse ``name[=value]`` pieces separated by ';' (the leading ';' already removed), decoding escapes."""
    params: dict[str, str | None] = {}
    for piece in text.split(";"):
        name, eq, value = piece.partition("=")
        if not name:
            raise _error(what, "empty URI parameter")
        key = _unescape(name, what, "URI parameter name").lower()
        if key in params:
            raise _error(what, f"duplicate URI parameter {key!r}")
        if eq:
            if not value:
                raise _error(what, f"empty value for URI parameter {key!r}")
            params[key] = _unescape(value, what, "URI parameter value")
        else:
            params[key] = None
    return params


def _parse_uri_headers(text: str, what: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for piece in text.split("&"):
        name, _, value = piece.partition("=")
        if not name:
            raise _error(what, "empty URI header name")
        key = _unescape(name, what, "URI header name")
        if key in headers:
            raise _error(what, f"duplicate URI header {key!r}")
        headers[key] = _unescape(value, what, "URI header value")
    return headers


def _format_params(params: dict[str, str | None]) -> str:
    out = []
    for key, value in params.items():
        out.append(";" + _escape(key, _PARAM_SAFE))
        if value is not None:
            out.append("=" + _escape(value, _PARAM_SAFE))
    return "".join(out)


@dataclass
class SipURI:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1).

    ``user`` and ``password`` hold unescaped text (``None`` when absent; ``user`` is never ``''`` after
    parsing). ``host`` is lowercased for domain names and keeps brackets for IPv6 references. ``params``
    and ``headers`` are insertion-ordered and unescaped; parameter names are lowercased and a flag
    parameter such as ``lr`` has the value ``None``.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __init__(
        self,
        scheme: str = "sip",
        user: str | None = None,
        password: str | None = None,
        host: str = "",
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        # Written out, not generated: see uri.pxd (a compiled default_factory costs a module
        # lookup per instance).
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.headers = {} if headers is None else headers

    @property
    def transport(self) -> str | None:
        """The lowercased ``transport`` parameter, or None when absent or valueless."""
        value: str = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        """True when the loose-routing flag ``lr`` is present (RFC 3261 §19.1.1)."""
        return "lr" in self.params

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter, or None."""
        return self.params.get("maddr")

    @property
    def host_port(self) -> tuple[str, int | None]:
        """``(host, port)``; port is None when the URI names none (the caller applies SRV/defaults)."""
        return self.host, self.port

    def copy(self) -> SipURI:
        """Return an independent copy: mutating its params/headers leaves this URI alone."""
        params: dict = self.params
        headers: dict = self.headers
        return _new_sip_uri(
            self.scheme,
            self.user,
            self.password,
            self.host,
            self.port,
            params.copy(),
            headers.copy(),
        )

    def __str__(self) -> str:
        """Serialise to a valid URI, escaping user, password, parameters and headers where needed.

        A password is written only together with a user (``sip::pw@host`` is not a URI).
        """
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(_escape(self.user, _USER_SAFE))
            if self.password is not None:
                parts.append(":" + _escape(self.password, _PASSWORD_SAFE))
            parts.append("@")
        parts.append(format_host(self.host))
        if self.port is not None:
            parts.append(f":{self.port}")
        if self.params:
            parts.append(_format_params(self.params))
        if self.headers:
            parts.append("?")
            parts.append(
                "&".join(
                    _escape(k, _HEADER_SAFE) + "=" + _escape(v, _HEADER_SAFE) for k, v in self.headers.items()
                )
            )
        return "".join(parts)


@dataclass
class TelURI:
    """A ``tel:`` URI (RFC 3966): ``number`` as written (escapes decoded), parameters with lowercased names."""

    number: str
    params: dict[str, str | None] = field(default_factory=dict)

    def __init__(self, number: str, params: dict[str, str | None] | None = None) -> None:
        self.number = number
        self.params = {} if params is None else params

    def copy(self) -> TelURI:
        """Return an independent copy: mutating its params leaves this URI alone."""
        params: dict = self.params
        return _new_tel_uri(self.number, params.copy())

    def __str__(self) -> str:
        """Serialise back to ``tel:number;params``."""
        return "tel:" + _escape(self.number, _TEL_NUMBER_SAFE) + _format_params(self.params)


@dataclass
class AbsoluteURI:
    """Any other scheme (RFC 3986 absolute URI), kept opaque: ``value`` is everything after the ':'."""

    scheme: str
    value: str

    def copy(self) -> AbsoluteURI:
        """Return a copy (the parse memo hands out copies of every URI type)."""
        return AbsoluteURI(self.scheme, self.value)

    def __str__(self) -> str:
        """Serialise back to ``scheme:value``."""
        return f"{self.scheme}:{self.value}"


URI: TypeAlias = SipURI | TelURI | AbsoluteURI


# The parsers and copies build URIs with these rather than by calling the class: compiled, each is
# an allocation and a store per field, where a call runs __init__ through the Python protocol
# (its arguments packed into a tuple and parsed again on every URI).
def _new_sip_uri(
    scheme: str, user: str | None, password: str | None, host: str, port, params: dict, headers: dict
) -> SipURI:
    """``SipURI(scheme, user, password, host, port, params, headers)``."""
    uri: SipURI = SipURI.__new__(SipURI)
    uri.scheme = scheme
    uri.user = user
    uri.password = password
    uri.host = host
    uri.port = port
    uri.params = params
    uri.headers = headers
    return uri


def _new_tel_uri(number: str, params: dict) -> TelURI:
    """``TelURI(number, params)``."""
    uri: TelURI = TelURI.__new__(TelURI)
    uri.number = number
    uri.params = params
    return uri


def _copy_uri(uri):
    """``uri.copy()``, a direct call for the common SipURI (the memo holds any URI type)."""
    sip: SipURI
    if type(uri) is SipURI:
        sip = uri
        return sip.copy()
    return uri.copy()


def _check_chars(text: str, what: str) -> None:
    match = _FORBIDDEN_RE.search(text)
    if match is None:
        return
    char = match.group()
    if char in " \t\r\n":
        raise _error(what, "whitespace inside URI")
    if char in "<>":
        raise _error(what, f"{char!r} inside URI")
    if char == '"':
        raise _error(what, "double quote inside URI")
    raise _error(what, "control character inside URI")


def _parse_sip(scheme: str, rest: str, what: str) -> SipURI:
    user = password = None
    at = rest.find("@")
    if at >= 0:
        # Nothing after the host may hold an unescaped '@', so the first one ends the userinfo.
        userinfo, rest = rest[:at], rest[at + 1 :]
        user_text, colon, password_text = userinfo.partition(":")
        if not user_text:
            raise _error(what, "empty user part before '@'")
        user = _unescape(user_text, what, "user part")
        if colon:
            password = _unescape(password_text, what, "password")
    semi = rest.find(";")
    qmark = rest.find("?")
    if 0 <= qmark < semi or semi < 0:
        semi = -1
    end = semi if semi >= 0 else qmark
    hostport = rest if end < 0 else rest[:end]
    host, port = parse_hostport(hostport, what=what)
    params: dict[str, str | None] = {}
    headers: dict[str, str] = {}
    if semi >= 0:
        params = _parse_uri_params(rest[semi + 1 : qmark] if qmark >= 0 else rest[semi + 1 :], what)
    if qmark >= 0:
        if qmark == len(rest) - 1:
            raise _error(what, "empty URI headers after '?'")
        headers = _parse_uri_headers(rest[qmark + 1 :], what)
    return _new_sip_uri(scheme, user, password, host, port, params, headers)


def _parse_tel(rest: str, what: str) -> TelURI:
    number_text, semi, param_text = rest.partition(";")
    number: str = _unescape(number_text, what, "telephone number")
    if number.startswith("+"):
        if _TEL_GLOBAL_RE.fullmatch(number) is None:
            raise _error(what, f"bad global telephone number {number!r}")
    elif not number:
        raise _error(what, "empty telephone number")
    elif _TEL_LOCAL_RE.fullmatch(number) is None:
        raise _error(what, f"bad local telephone number {number!r}")
    params = _parse_uri_params(param_text, what) if semi else {}
    return _new_tel_uri(number, params)


_uri_cache: dict[str, URI] = {}


def parse_uri(text: str, what: str = "URI") -> URI:
    """Parse one URI (no angle brackets, no surrounding whitespace).

    Returns a :class:`SipURI` for ``sip``/``sips``, a :class:`TelURI` for ``tel`` and an
    :class:`AbsoluteURI` for any other syntactically valid scheme. ``what`` (e.g. ``"Request-URI"``,
    ``"To"``) prefixes every error reason so the 400 names the culprit.

    Raises SIPParseError (status 400) for: whitespace, control characters, '<', '>' or '"' inside; a missing
    or malformed scheme; an empty user part before '@'; a '%' not followed by two hex digits; an empty host;
    a bare IPv6 address (RFC 5118 §4.2) or malformed address in brackets (``[2001:db8:::1]`` is refused,
    which RFC 5118 §4.10 allows); a non-numeric or out-of-range port; an empty or duplicate parameter.

    Every call returns a fresh object the caller may mutate: successful parses are memoised (bounded by
    PARSE_CACHE_MAX) and a hit hands back a copy, because dialog URIs recur in every message.
    """
    cache: dict = _uri_cache
    cached = cache.get(text)
    if cached is not None:
        return _copy_uri(cached)
    uri = _parse_uri(text, what)
    remember(cache, text, _copy_uri(uri))
    return uri


def _parse_uri(text: str, what: str) -> URI:
    _check_chars(text, what)
    colon = text.find(":")
    if colon <= 0 or _SCHEME_RE.fullmatch(text, 0, colon) is None:
        raise _error(what, "missing or malformed URI scheme")
    scheme = text[:colon].lower()
    rest = text[colon + 1 :]
    if scheme == "sip" or scheme == "sips":
        return _parse_sip(scheme, rest, what)
    if scheme == "tel":
        return _parse_tel(rest, what)
    if not rest:
        raise _error(what, f"empty {scheme!r} URI")
    return AbsoluteURI(scheme, rest)


def _host_key(host: str) -> str:
    host = host.lower()
    if host.startswith("["):
        try:
            return "[" + ipaddress.IPv6Address(host[1:-1]).compressed + "]"
        except ValueError:
            return host
    return host


def _sip_equal(a: SipURI, b: SipURI) -> bool:
    if (
        a.scheme.lower() != b.scheme.lower()
        or a.user != b.user
        or a.password != b.password
        or a.port != b.port
        or _host_key(a.host) != _host_key(b.host)
    ):
        return False
    for key, value in a.params.items():
        if key in b.params:
            other = b.params[key]
            if value is None or other is None:
                if value is not other:
                    return False
            elif value.lower() != other.lower():
                return False
        elif key in _PARAMS_THAT_MUST_BOTH_APPEAR:
            return False
    for key in b.params:
        if key not in a.params and key in _PARAMS_THAT_MUST_BOTH_APPEAR:
            return False
    if a.headers or b.headers:
        return {k.lower(): v for k, v in a.headers.items()} == {k.lower(): v for k, v in b.headers.items()}
    return True


def _lower_params(params: dict[str, str | None]) -> dict[str, str | None]:
    return {k.lower(): (v.lower() if v is not None else None) for k, v in params.items()}


def uri_equal(a: URI, b: URI) -> bool:
    """Compare two URIs for equivalence.

    SIP/SIPS (RFC 3261 §19.1.4): schemes must match (sip never equals sips); user and password compare
    case-sensitively after unescaping (parsing already unescaped them); host compares case-insensitively
    (IPv6 by address value); a port present in only one URI differs. Parameters present in both must
    match case-insensitively; ``user``, ``ttl``, ``method``, ``maddr`` and ``transport`` present in only
    one make the URIs differ, other one-sided parameters are ignored. Headers must all match (names
    case-insensitive, values exact).

    tel (RFC 3966 §4): numbers equal ignoring visual separators and case; the same parameter names with
    case-insensitively equal values. Other schemes: scheme case-insensitive, the rest exact.
    URIs of different kinds are never equal. Never raises.
    """
    if isinstance(a, SipURI):
        return isinstance(b, SipURI) and _sip_equal(a, b)
    if isinstance(a, TelURI):
        return (
            isinstance(b, TelURI)
            and _TEL_VISUAL_RE.sub("", a.number).lower() == _TEL_VISUAL_RE.sub("", b.number).lower()
            and _lower_params(a.params) == _lower_params(b.params)
        )
    return isinstance(b, AbsoluteURI) and a.scheme.lower() == b.scheme.lower() and a.value == b.value
