"""Parsers for the structured SIP header values the SBC reads (RFC 3261 §20, §25.1).

Each function takes one header *value* as the message layer hands it over: already unfolded (CRLF + WSP
became a single SP), stripped of leading/trailing whitespace, decoded from UTF-8 with
``errors="surrogateescape"``. LWS may still sit wherever the RFC 3261 grammar allows it (around '/',
';', '=', between a display name and '<'; see RFC 4475 §3.1.1.1 wsinv), and is accepted there.

Syntax errors raise :class:`~sbc.sip.errors.SIPParseError` (status 400) whose reason starts with the
header name, so the 400 and the log line name the culprit. Sans-I/O: no sockets, no clock.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal

from sbc.sip.errors import SIPParseError
from sbc.sip.uri import URI, format_host, parse_hostport, parse_uri, remember

try:  # the C splitter for the common Via shape (sbc/sip/_speedups.pyx); the full parser below
    from sbc.sip._speedups import split_simple_via as _split_simple_via
except ImportError:  # pragma: no cover - source checkout without a build
    _split_simple_via = None

CSEQ_MAX = 2**31 - 1
"""Largest CSeq sequence number: RFC 3261 §8.1.1.5 requires it to be less than 2**31."""

MAX_FORWARDS_MAX = 255
"""Largest Max-Forwards: RFC 3261 §20.22 gives the range 0-255; RFC 4475 §3.1.2.4 (scalar02) treats 300 as
out of range."""

DELTA_SECONDS_MAX = 2**32 - 1
"""Largest delta-seconds (Expires, Retry-After, Min-Expires, expires param): RFC 3261 §20.19 allows 0 to
(2**32)-1; RFC 4475 scalar02/scalarlg use values above it as the out-of-range cases."""

CONTENT_LENGTH_MAX = 2**32 - 1
"""Content-Length ceiling for the integer parse only (RFC 3261 §20.14 sets no maximum); the message layer
applies its much smaller datagram/stream buffer limit."""

PORT_MAX = 65535
"""Largest rport value: a 16-bit transport port (RFC 3581, RFC 768)."""

TTL_MAX = 255
"""Largest Via ttl: RFC 3261 §25.1 ``ttl = 1*3DIGIT ; 0 to 255``."""

CANONICAL_CACHE_MAX = 4096
"""Bound on remembered header-name spellings, so a peer sending endless random names cannot grow memory."""

COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",  # RFC 3841
    "b": "Referred-By",  # RFC 3892
    "c": "Content-Type",
    "d": "Request-Disposition",  # RFC 3841
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",  # RFC 3841
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",  # RFC 4474
    "o": "Event",  # RFC 6665
    "r": "Refer-To",  # RFC 3515
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",  # RFC 6665
    "v": "Via",
    "x": "Session-Expires",  # RFC 4028
    "y": "Identity",  # RFC 8224
}
"""Compact header names (RFC 3261 §7.3.3 and the extensions noted) to their canonical long names."""

_KNOWN_HEADERS = (
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Accept-Resource-Priority",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Answer-Mode",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-ID",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Diversion",
    "Error-Info",
    "Event",
    "Expires",
    "Feature-Caps",
    "Flow-Timer",
    "From",
    "Geolocation",
    "Geolocation-Error",
    "Geolocation-Routing",
    "History-Info",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Info-Package",
    "Join",
    "Max-Breadth",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Access-Network-Info",
    "P-Asserted-Identity",
    "P-Associated-URI",
    "P-Called-Party-ID",
    "P-Charging-Function-Addresses",
    "P-Charging-Vector",
    "P-Early-Media",
    "P-Preferred-Identity",
    "P-Visited-Network-ID",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Recv-Info",
    "Refer-Sub",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Remote-Party-ID",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Resource-Priority",
    "Retry-After",
    "Route",
    "RSeq",
    "Security-Client",
    "Security-Server",
    "Security-Verify",
    "Server",
    "Service-Route",
    "Session-Expires",
    "Session-ID",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Target-Dialog",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
)

_CANONICAL: dict[str, str] = {name.lower(): name for name in _KNOWN_HEADERS}
_CANONICAL.update(COMPACT_FORMS)
# Exact spelling -> canonical name. The message layer hands this dict to its C header splitter
# (sbc.sip._speedups.split_head) as a first-level lookup, so keep its name and shape.
_canonical_cache: dict[str, str] = {}

_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN_RE = re.compile(rf"[{_TOKEN_CHARS}]+")
# gen-value = token / host / quoted-string; host adds ':' '[' ']' so IPv6 addresses (received=, maddr=) fit.
_GEN_VALUE = rf"[{_TOKEN_CHARS}:\[\]]+"
_GEN_VALUE_RE = re.compile(_GEN_VALUE)
_QUOTED_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_COMMA_SPECIALS_RE = re.compile(r'[",<>]')
_SEMI_SPECIALS_RE = re.compile(r'[";]')
# generic-params written without LWS or quoted values (``tag=1;lr``), after the leading ';'.
_SIMPLE_PARAM = rf"[{_TOKEN_CHARS}]+(?:={_GEN_VALUE})?"
_SIMPLE_PARAMS_RE = re.compile(rf"{_SIMPLE_PARAM}(?:;{_SIMPLE_PARAM})*")
# Characters quote_string must backslash-escape: '"', '\' and the controls a quoted-pair may carry.
_QUOTE_ESCAPE_RE = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')
_CRLF_RE = re.compile(r"[\r\n]")
_VIA_PROTOCOL_RE = re.compile(
    rf"([{_TOKEN_CHARS}]+)[ \t]*/[ \t]*([{_TOKEN_CHARS}]+)[ \t]*/[ \t]*([{_TOKEN_CHARS}]+)"
)
_COLON_LWS_RE = re.compile(r"[ \t]*:[ \t]*")
_AUTH_SCHEME_RE = re.compile(r"([^ \t]+)[ \t]*")


def is_token(text: str) -> bool:
    """True for a non-empty RFC 3261 §25.1 token (method names, header names, parameter names,
    tags). Never raises."""
    return _TOKEN_RE.fullmatch(text) is not None


def canonical_name(name: str) -> str:
    """Return the canonical spelling of a header name (``cseq`` -> ``CSeq``, ``v`` -> ``Via``).

    Compact forms expand to their long name. Unknown names are returned exactly as given, so
    extension headers are forwarded as the peer spelt them. Never raises; O(1) after the first call for
    a given spelling (a bounded dict cache in front of the lowercase lookup).
    """
    # Annotated locals (here and below): compiled code works on dict-, list- and str-typed
    # locals in C (here the cache's get, len and store, which on the module global go through
    # attribute lookups; elsewhere str truthiness, indexing, comparisons and methods). Plain
    # Python ignores the annotations.
    cache: dict = _canonical_cache
    cached = cache.get(name)
    if cached is not None:
        return cached
    result = _CANONICAL.get(name.lower(), name)
    if len(cache) < CANONICAL_CACHE_MAX:
        cache[name] = result
    return result


def _quoted_end(text: str, start: int, what: str) -> int:
    """Index just past the quoted-string starting at ``text[start] == '"'``; raise if unterminated."""
    match = _QUOTED_RE.match(text, start)
    if match is None:
        raise SIPParseError(f"{what}: unterminated quoted string")
    return match.end()


def split_commas(value: str, what: str = "header") -> list[str]:
    """Split a list-valued header on commas outside quoted strings and outside ``<...>``.

    Each element is stripped. Empty elements are kept as ``''`` so callers whose grammar forbids them
    (Via, Contact: RFC 4475 badinv01) can refuse, and callers that tolerate them can skip them; an
    empty or blank value gives ``[]``. Backslash escapes inside quotes are honoured, angle brackets
    inside quotes and quotes inside brackets are plain characters. Raises SIPParseError on an
    unterminated quoted string.
    """
    if "," not in value and '"' not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    items: list[str] = []
    char: str
    start = 0
    pos = 0
    in_angle = False
    search = _COMMA_SPECIALS_RE.search
    while True:
        match = search(value, pos)
        if match is None:
            break
        char = match.group()
        pos = match.end()
        if in_angle:
            if char == ">":
                in_angle = False
        elif char == '"':
            pos = _quoted_end(value, match.start(), what)
        elif char == "<":
            in_angle = True
        elif char == ",":
            items.append(value[start : match.start()].strip())
            start = pos
    last = value[start:].strip()
    if items or last:
        items.append(last)
    return items


def _split_semis(text: str, what: str) -> list[str]:
    """Split on ';' outside quoted strings."""
    if '"' not in text:
        return text.split(";")
    pieces: list[str] = []
    start = 0
    pos = 0
    while True:
        match = _SEMI_SPECIALS_RE.search(text, pos)
        if match is None:
            break
        if match.group() == '"':
            pos = _quoted_end(text, match.start(), what)
        else:
            pieces.append(text[start : match.start()])
            pos = start = match.end()
    pieces.append(text[start:])
    return pieces


def parse_params(text: str, what: str = "header") -> dict[str, str | None]:
    """Parse generic parameters ``;name[=value]...`` (RFC 3261 §25.1 generic-param).

    ``text`` is what follows the element, with or without its leading ';' (``''`` gives ``{}``).
    LWS around ';' and '=' is accepted. Names are lowercased; values are kept as written (a
    quoted-string keeps its quotes) so that re-serialising round-trips; a flag gets ``None``.

    Raises SIPParseError for an empty parameter (``;;``, a trailing ';': RFC 4475 badinv01), a name that
    is not a token, a duplicate name, ``name=`` with no value, an unterminated or trailing-garbage
    quoted string, or an unquoted value that is neither a token nor a host (``gen-value``).
    """
    piece: str
    name: str
    eq: str
    value: str
    text = text.strip()
    if not text:
        return {}
    if text[0] == ";":
        text = text[1:]
    params: dict[str, str | None] = {}
    if _SIMPLE_PARAMS_RE.fullmatch(text) is not None:
        # Fast path for what nearly every UA sends (no LWS, no quoted values): the regex has
        # checked every name and value, so only duplicates remain; those go the full way below.
        for piece in text.split(";"):
            name, eq, value = piece.partition("=")
            key = name.lower()
            if key in params:
                break
            params[key] = value if eq else None
        else:
            return params
        params = {}
    for piece in _split_semis(text, what):
        name, eq, value = piece.partition("=")
        name = name.strip()
        if not name:
            raise SIPParseError(f"{what}: empty parameter")
        if _TOKEN_RE.fullmatch(name) is None:
            raise SIPParseError(f"{what}: bad parameter name {name!r}")
        key = name.lower()
        if key in params:
            raise SIPParseError(f"{what}: duplicate parameter {key!r}")
        if not eq:
            params[key] = None
            continue
        value = value.strip()
        if not value:
            raise SIPParseError(f"{what}: parameter {key!r} has '=' but no value")
        if value[0] == '"':
            if _QUOTED_RE.fullmatch(value) is None:
                raise SIPParseError(f"{what}: bad quoted value for parameter {key!r}")
        elif _GEN_VALUE_RE.fullmatch(value) is None:
            raise SIPParseError(f"{what}: bad value for parameter {key!r}")
        params[key] = value
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Serialise generic parameters as ``;name=value;flag`` (values written as stored). Never raises."""
    # A list, not a generator expression: a cpdef function (headers.pxd) holds no closure.
    return "".join([f";{k}" if v is None else f";{k}={v}" for k, v in params.items()])


def quote_string(s: str) -> str:
    """Return ``s`` as a quoted-string: '"' and '\\' and control characters get a backslash.

    CR and LF cannot be carried by a quoted-pair (RFC 3261 §25.1), so each becomes a space: the result
    always fits on one header line, which keeps a display name from injecting headers. Never raises.
    """
    if _CRLF_RE.search(s) is not None:
        s = _CRLF_RE.sub(" ", s)
    if _QUOTE_ESCAPE_RE.search(s) is not None:
        s = _QUOTE_ESCAPE_RE.sub(lambda m: "\\" + m.group(), s)
    return f'"{s}"'


def unquote_string(s: str) -> str:
    """Return the text of a quoted-string with its quotes removed and quoted-pairs resolved.

    A value that does not start with '"' is returned unchanged (a token needs no unquoting). Raises
    SIPParseError when it starts with '"' but is not exactly one well-formed quoted-string.
    """
    if not s.startswith('"'):
        return s
    if _QUOTED_RE.fullmatch(s) is None:
        raise SIPParseError(f"malformed quoted string {s!r}")
    body: str = s[1:-1]
    if "\\" in body:
        body = _QUOTED_PAIR_RE.sub(r"\1", body)
    return body


@dataclass
class NameAddr:
    """A From/To/Contact/Route-style value: optional display name, a URI, header parameters.

    ``display_name`` is the unquoted text (``None`` when absent, ``''`` for ``""``); ``params`` are the
    header parameters after the URI (names lowercased, values as written).
    """

    display_name: str | None
    uri: URI
    params: dict[str, str | None] = field(default_factory=dict)

    def __init__(self, display_name: str | None, uri: URI, params: dict[str, str | None] | None = None) -> None:
        # Written out, not generated: see headers.pxd.
        self.display_name = display_name
        self.uri = uri
        self.params = {} if params is None else params

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3), or None."""
        return self.params.get("tag")

    def __str__(self) -> str:
        """Serialise in name-addr form, ``"Name" <uri>;params``, which is unambiguous for any URI."""
        if self.display_name is None:
            return f"<{self.uri}>{format_params(self.params)}"
        return f"{quote_string(self.display_name)} <{self.uri}>{format_params(self.params)}"


# The parsers and copies build values with these rather than by calling the class: compiled, each
# is an allocation and a store per field, where a call runs __init__ through the Python protocol
# (its arguments packed into a tuple and parsed again on every value).
def _new_name_addr(display_name: str | None, uri, params: dict) -> NameAddr:
    """``NameAddr(display_name, uri, params)``."""
    na: NameAddr = NameAddr.__new__(NameAddr)
    na.display_name = display_name
    na.uri = uri
    na.params = params
    return na


def _parse_bracketed(rest: str, display_name: str | None, what: str) -> NameAddr:
    """Parse ``<uri> [;params]`` (``rest`` starts with '<')."""
    gt = rest.find(">")
    if gt < 0:
        raise SIPParseError(f"{what}: '<' without '>'")
    inner = rest[1:gt]
    if not inner:
        raise SIPParseError(f"{what}: empty URI in '<>'")
    if inner[0] in " \t" or inner[-1] in " \t":
        # LAQUOT = SWS "<" and RAQUOT = ">" SWS: no LWS inside the brackets (RFC 4475 §3.1.2.14).
        raise SIPParseError(f"{what}: whitespace inside '<...>'")
    uri = parse_uri(inner, what=what)
    after = rest[gt + 1 :].lstrip()
    if after and after[0] != ";":
        raise SIPParseError(f"{what}: unexpected text after '>'")
    return _new_name_addr(display_name, uri, parse_params(after, what=what))


def parse_name_addr(value: str, what: str = "name-addr") -> NameAddr:
    """Parse one name-addr or addr-spec with its header parameters (RFC 3261 §20.10, §25.1).

    Accepts ``"Quoted \\"name\\"" <uri>;p=1``, ``token token <uri>``, ``name<uri>`` and the bare
    addr-spec ``sip:u@h;tag=1`` in which everything after the first ';' is a header parameter. ``what``
    (``"From"``, ``"To"``...) prefixes error reasons.

    Raises SIPParseError for: an empty value; an unterminated quoted display name (RFC 4475 quotbal); an
    unquoted display name that is not a sequence of tokens, e.g. containing ',' (baddn); a quoted
    display name not followed by '<'; '<' without '>'; whitespace just inside the brackets (badaspec);
    text after '>' that is not parameters; an addr-spec whose URI contains ',' or '?', which RFC 3261
    §20 requires to be enclosed in '<>' (regbadct); any invalid URI or parameter.
    """
    s = value.strip()
    if not s:
        raise SIPParseError(f"{what}: empty value")
    if s[0] == '"':
        end = _quoted_end(s, 0, what)
        rest = s[end:].lstrip()
        if not rest.startswith("<"):
            raise SIPParseError(f"{what}: quoted display name not followed by '<'")
        return _parse_bracketed(rest, unquote_string(s[:end]), what)
    lt = s.find("<")
    if lt >= 0 and ";" not in s[:lt]:
        words = s[:lt].split()
        for word in words:
            if _TOKEN_RE.fullmatch(word) is None:
                raise SIPParseError(f"{what}: display name must be tokens or a quoted string")
        return _parse_bracketed(s[lt:], " ".join(words) if words else None, what)
    semi = s.find(";")
    uri_text = (s if semi < 0 else s[:semi]).rstrip()
    if "," in uri_text or "?" in uri_text:
        raise SIPParseError(f"{what}: a URI containing ',' or '?' must be enclosed in '<>'")
    uri = parse_uri(uri_text, what=what)
    return _new_name_addr(None, uri, parse_params(s[semi:], what=what) if semi >= 0 else {})


def parse_contact(value: str, what: str = "Contact") -> list[NameAddr] | Literal["*"]:
    """Parse a whole Contact header value: ``*`` or one or more comma-separated name-addr/addr-spec.

    Returns ``"*"`` for the wildcard (RFC 3261 §10.2.2), else the contacts in order. Raises
    SIPParseError for an empty value, an empty element (``a,,b``), ``*`` mixed with contacts, or any
    element :func:`parse_name_addr` refuses.
    """
    s = value.strip()
    if s == "*":
        return "*"
    item: str
    items: list = split_commas(s, what=what)
    if not items:
        raise SIPParseError(f"{what}: empty value")
    contacts: list[NameAddr] = []
    for item in items:
        if not item:
            raise SIPParseError(f"{what}: empty element in list")
        if item == "*":
            raise SIPParseError(f"{what}: '*' mixed with other contacts")
        contacts.append(parse_name_addr(item, what=what))
    return contacts


_name_addr_cache: dict[str, NameAddr] = {}
_contact_cache: dict[str, list[NameAddr] | Literal["*"]] = {}


def name_addr_view(value: str, what: str = "name-addr") -> NameAddr:
    """:func:`parse_name_addr` for readers: one shared result per value, which callers must not
    change (``parse_name_addr`` hands out objects of their own).

    A call's From, To and Contact values are read by validation and then by the B2BUA (the
    legs' URIs, the caller's number, the remote target) in every message that carries them:
    eleven parses a call, six of seven of them values seen before. Successes are memoised
    (bounded by PARSE_CACHE_MAX); a bad value raises every time, naming ``what``.
    """
    cache: dict = _name_addr_cache
    na = cache.get(value)
    if na is None:
        return remember(cache, value, parse_name_addr(value, what=what))
    return na


def contact_view(value: str, what: str = "Contact") -> list[NameAddr] | Literal["*"]:
    """:func:`parse_contact` for readers, shared and memoised like :func:`name_addr_view`."""
    cache: dict = _contact_cache
    contacts = cache.get(value)
    if contacts is None:
        return remember(cache, value, parse_contact(value, what=what))
    return contacts


@dataclass
class Via:
    """One Via entry (RFC 3261 §20.42).

    ``protocol`` is name/version as written without LWS (``"SIP/2.0"``; the message layer checks the
    version), ``transport`` is upper case and may be any token (RFC 4475 transports), ``host`` keeps
    brackets for IPv6, ``params`` are generic parameters with lowercased names and values as written.
    """

    protocol: str = "SIP/2.0"
    transport: str = "UDP"
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    def __init__(
        self,
        protocol: str = "SIP/2.0",
        transport: str = "UDP",
        host: str = "",
        port: int | None = None,
        params: dict[str, str | None] | None = None,
    ) -> None:
        # Written out, not generated: see headers.pxd.
        self.protocol = protocol
        self.transport = transport
        self.host = host
        self.port = port
        self.params = {} if params is None else params

    @property
    def branch(self) -> str | None:
        """The branch parameter, or None (RFC 2543 peers may omit it)."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The received address without brackets (ready for a socket API), or None when absent."""
        value = self.params.get("received")
        if value is not None and value.startswith("["):
            return value[1:-1]
        return value

    def copy(self) -> Via:
        """Return an independent copy: mutating its params leaves this Via alone."""
        params: dict = self.params
        return _new_via(self.protocol, self.transport, self.host, self.port, params.copy())

    @property
    def rport(self) -> str | None:
        """RFC 3581 rport: None when absent, ``''`` when present as a flag (a request asking for it),
        else the port digits the server filled in."""
        if "rport" not in self.params:
            return None
        return self.params["rport"] or ""

    @property
    def maddr(self) -> str | None:
        """The maddr parameter, or None."""
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        """The ttl parameter as an int (validated 0-255 by :func:`parse_via`), or None."""
        value = self.params.get("ttl")
        return int(value) if value is not None else None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """``(host, port)`` of sent-by; port None when not written (RFC 3261 §18.2.2 applies defaults)."""
        return self.host, self.port

    def __str__(self) -> str:
        """Serialise as ``SIP/2.0/UDP host:port;params``."""
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {format_host(self.host)}{port}{format_params(self.params)}"


def _new_via(protocol: str, transport: str, host: str, port, params: dict) -> Via:
    """``Via(protocol, transport, host, port, params)`` (see :func:`_new_name_addr`)."""
    via: Via = Via.__new__(Via)
    via.protocol = protocol
    via.transport = transport
    via.host = host
    via.port = port
    via.params = params
    return via


def _check_via_params(params: dict[str, str | None]) -> None:
    for key in ("branch", "received", "maddr", "ttl"):
        if key in params and params[key] is None:
            raise SIPParseError(f"Via: {key} without a value")
    received = params.get("received")
    if received is not None:
        address = received[1:-1] if received.startswith("[") and received.endswith("]") else received
        try:
            if ":" in address:
                ipaddress.IPv6Address(address)
            else:
                ipaddress.IPv4Address(address)
        except ValueError:
            raise SIPParseError("Via: received is not an IP address") from None
    rport = params.get("rport")
    if rport is not None and not (rport.isascii() and rport.isdigit() and int(rport) <= PORT_MAX):
        raise SIPParseError("Via: bad rport")
    ttl = params.get("ttl")
    if ttl is not None and not (ttl.isascii() and ttl.isdigit() and len(ttl) <= 3 and int(ttl) <= TTL_MAX):
        raise SIPParseError("Via: bad ttl")


def _parse_one_via(text: str) -> Via:
    if _split_simple_via is not None:
        simple: tuple = _split_simple_via(text)
        if simple is not None:
            transport, sent_by, params = simple
            host, port = parse_hostport(sent_by, what="Via")
            _check_via_params(params)
            return _new_via("SIP/2.0", transport, host, port, params)
    return _parse_one_via_fully(text)


def _parse_one_via_fully(text: str) -> Via:
    """One via-parm by the full grammar: the reference, and the path for every shape
    ``_speedups.split_simple_via`` leaves to it (LWS, quoting, anything it would refuse)."""
    match = _VIA_PROTOCOL_RE.match(text)
    if match is None:
        raise SIPParseError("Via: malformed sent-protocol")
    rest = text[match.end() :]
    stripped = rest.lstrip()
    if not stripped or stripped[0] == ";":
        raise SIPParseError("Via: missing sent-by host")
    if rest[0] not in " \t":
        raise SIPParseError("Via: malformed sent-protocol")
    semi = stripped.find(";")
    sent_by = (stripped if semi < 0 else stripped[:semi]).rstrip()
    if " " in sent_by or "\t" in sent_by:
        sent_by = _COLON_LWS_RE.sub(":", sent_by)  # COLON = SWS ":" SWS
        if " " in sent_by or "\t" in sent_by:
            raise SIPParseError("Via: whitespace inside sent-by")
    host, port = parse_hostport(sent_by, what="Via")
    params = parse_params(stripped[semi:], what="Via") if semi >= 0 else {}
    _check_via_params(params)
    protocol = f"{match.group(1)}/{match.group(2)}"
    return _new_via(protocol, match.group(3).upper(), host, port, params)


def parse_via(value: str) -> list[Via]:
    """Parse a Via header value, which may hold several comma-separated via-parms (RFC 3261 §20.42).

    Accepts LWS around '/', ':', ';' and '=' (RFC 4475 wsinv), any transport token (transports), IPv6
    sent-by in brackets and ``received`` as an IPv6 address with or without brackets (RFC 5118 §4.5).

    Raises SIPParseError for an empty value or element (``,,``), a malformed sent-protocol, a missing
    host, a bare IPv6 sent-by, a bad port, empty/duplicate/malformed parameters (badinv01), ``branch``,
    ``received``, ``maddr`` or ``ttl`` without a value, a received that is not an IP address, an rport
    that is not a port number, or a ttl outside 0-255.

    Every call returns fresh objects the caller may mutate (``stamp_via`` does); readers use
    :func:`via_view`, which shares one parse per value.
    """
    return [v.copy() for v in via_view(value)]


def via_view(value: str) -> tuple[Via, ...]:
    """:func:`parse_via` for readers: one shared, memoised result per value (bounded by
    PARSE_CACHE_MAX), which callers must not change. One Via value is read several times: a
    request's by validation, the transaction layer and ``stamp_via``, the SBC's own Via by every
    response to the same request (100, 180, 200). A bad value raises every time.
    """
    cache: dict = _via_cache
    cached = cache.get(value)
    if cached is not None:
        return cached
    item: str
    items: list = split_commas(value, what="Via")
    if not items:
        raise SIPParseError("Via: empty value")
    vias: list[Via] = []
    for item in items:
        if not item:
            raise SIPParseError("Via: empty element in list")
        vias.append(_parse_one_via(item))
    return remember(cache, value, tuple(vias))


_via_cache: dict[str, tuple[Via, ...]] = {}


def parse_uint(value: str, name: str, maximum: int) -> int:
    """Parse an unsigned decimal (``1*DIGIT``, leading zeros allowed: ``0068`` is 68) no larger than
    ``maximum``; use CSEQ_MAX, MAX_FORWARDS_MAX, DELTA_SECONDS_MAX or CONTENT_LENGTH_MAX.

    Returns the int. Raises SIPParseError naming ``name`` for an empty value, a sign, a non-ASCII digit,
    any other character, or a value above ``maximum`` (checked on the digit count first, so a
    100-digit value costs nothing).
    """
    s = value.strip()
    if not s or not (s.isascii() and s.isdigit()):
        raise SIPParseError(f"{name}: not an unsigned integer")
    digits = s.lstrip("0") or "0"
    if len(digits) > len(str(maximum)) or int(digits) > maximum:
        raise SIPParseError(f"{name}: value out of range (max {maximum})")
    return int(digits)


def parse_cseq(value: str) -> tuple[int, str]:
    """Parse a CSeq value ``1*DIGIT LWS Method`` (RFC 3261 §20.16).

    Returns ``(sequence, method)`` with the method as written (methods are case-sensitive). Raises
    SIPParseError when there are not exactly two parts, the number is not digits or is 2**31 or more
    (§8.1.1.5; RFC 4475 scalar02), or the method is not a token.
    """
    parts = value.split()
    if len(parts) != 2:
        raise SIPParseError("CSeq: expected a sequence number and a method")
    number = parse_uint(parts[0], "CSeq", CSEQ_MAX)
    if _TOKEN_RE.fullmatch(parts[1]) is None:
        raise SIPParseError("CSeq: method is not a token")
    return number, parts[1]


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Parse an Authorization/Proxy-Authorization/WWW-Authenticate/Proxy-Authenticate value.

    Returns ``(scheme, params)``: the scheme as written (compare it case-insensitively), parameter
    names lowercased, quoted values unquoted. A scheme alone gives ``{}``. Raises SIPParseError for an
    empty value, a scheme or parameter name that is not a token, an element without '=', an empty
    element, a duplicate parameter, an empty or malformed value.
    """
    s = value.strip()
    match = _AUTH_SCHEME_RE.match(s)
    if match is None:
        raise SIPParseError("Authorization: empty value")
    scheme = match.group(1)
    if _TOKEN_RE.fullmatch(scheme) is None:
        raise SIPParseError("Authorization: bad auth scheme")
    params: dict[str, str] = {}
    rest = s[match.end() :]
    if not rest:
        return scheme, params
    item: str
    name: str
    eq: str
    raw: str
    for item in split_commas(rest, what="Authorization"):
        name, eq, raw = item.partition("=")
        name = name.strip()
        if not item:
            raise SIPParseError("Authorization: empty auth-param")
        if not eq:
            raise SIPParseError("Authorization: auth-param without '='")
        if _TOKEN_RE.fullmatch(name) is None:
            raise SIPParseError(f"Authorization: bad auth-param name {name!r}")
        key = name.lower()
        if key in params:
            raise SIPParseError(f"Authorization: duplicate auth-param {key!r}")
        raw = raw.strip()
        if raw.startswith('"'):
            if _QUOTED_RE.fullmatch(raw) is None:
                raise SIPParseError(f"Authorization: bad quoted value for {key!r}")
            params[key] = unquote_string(raw)
        elif not raw or '"' in raw or " " in raw or "\t" in raw:
            raise SIPParseError(f"Authorization: bad value for {key!r}")
        else:
            params[key] = raw
    return scheme, params
