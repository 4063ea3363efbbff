"""SIP message model: parse from bytes, reach hot fields cheaply, serialise back.

Parsing is two-level, because most messages an SBC handles (retransmissions, ACKs, provisional
responses, in-dialog requests) only need a handful of fields:

* :func:`parse_message` frames the message, splits the start line and the header lines into
  ``(canonical name, raw value)`` pairs and checks what framing needs (version, Content-Length).
  Call-ID, CSeq, the top Via's branch and the From/To tags are then one cached lookup away.
* :meth:`Message.validate` parses every header the SBC interprets (Via, From, To, Contact, CSeq,
  Max-Forwards, Route, ...) with :mod:`sbc.sip.headers` and refuses what RFC 3261 forbids. The
  SBC runs it on requests that start new work, and ``sbc parse`` runs it on every file.

Header values are ``str`` decoded as UTF-8 with ``surrogateescape`` so that any octet survives a
round trip; bodies stay ``bytes``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from .errors import SIPParseError
from .headers import (
    CANONICAL_CACHE_MAX,
    _canonical_cache,
    canonical_name,
    contact_view,
    is_token,
    name_addr_view,
    parse_cseq,
    parse_uint,
    split_commas,
    via_view,
)
from .uri import SipURI, parse_uri

try:  # the C splitter built from _speedups.pyx; the Python twin below is the fallback
    from ._speedups import split_head as _split_head_c
except ImportError:  # pragma: no cover - source checkout without a build
    _split_head_c = None

SIP_VERSION = "SIP/2.0"
# RFC 3261 §20.22: Max-Forwards is 0-255 in practice (RFC 4475 §3.1.2.4 calls 300 invalid).
MAX_FORWARDS_LIMIT = 255
# RFC 3261 §20.14: Content-Length is a 32-bit value; larger cannot be framed.
CONTENT_LENGTH_LIMIT = 2**32 - 1
# RFC 3261 §20.19: Expires is delta-seconds, at most 2**32-1.
EXPIRES_LIMIT = 2**32 - 1
# Headers that RFC 3261 §7.3.1 allows only once; a second value is a 400 (RFC 4475 §3.3.8).
SINGLE_VALUE_HEADERS = frozenset(
    {"To", "From", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type", "Expires"}
)
# RFC 3261 §8.1.1: every request carries these; a request without one gets 400 (RFC 4475 §3.3.1).
MANDATORY_REQUEST_HEADERS = ("To", "From", "Call-ID", "CSeq", "Via")
# Headers whose values are name-addr lists that validate() checks.
_NAME_ADDR_LIST_HEADERS = ("Route", "Record-Route")
# Every header whose value Message.validate() parses.
_VALIDATED_HEADERS = frozenset(
    {"From", "To", "Contact", *_NAME_ADDR_LIST_HEADERS, "Via", "CSeq", "Max-Forwards", "Expires"}
)
# Header names already found to be tokens, so validate() runs the regex once per spelling; bounded
# like the name cache in headers.py (a flood of distinct names cannot grow it past that).
_VALID_HEADER_NAMES: set[str] = set()

# Exact spellings seen before map straight to their canonical name (bounded in headers.py).
_NAME_CACHE_GET = _canonical_cache.get

# Methods seen on nearly every message skip the token regex.
_COMMON_METHODS = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "UPDATE",
        "INFO",
        "NOTIFY",
        "SUBSCRIBE",
    }
)
_STATUS_LINE_RE = re.compile(r"SIP/(\d+)\.(\d+) (\d{3})(?: (.*))?\Z", re.S)
_VERSION_RE = re.compile(r"SIP/\d+\.\d+\Z")
_UNFOLD_RE = re.compile(r"(?:[ \t]*\r?\n[ \t]+)+")  # a run of folds, blank ones too, is one LWS
_TAG_RE = re.compile(r";\s*tag\s*=\s*([^;,\s>]+)", re.I)
_BRANCH_RE = re.compile(r";\s*branch\s*=\s*([^;,\s]+)", re.I)

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    """Return the RFC 3261 reason phrase for ``status`` (a generic one for unknown codes)."""
    phrase = REASON_PHRASES.get(status)
    if phrase is not None:
        return phrase
    return {1: "Trying", 2: "OK", 3: "Redirect", 4: "Client Error", 5: "Server Error"}.get(
        status // 100, "Global Failure"
    )


class Message:
    """A SIP request or response: ordered header list plus body.

    ``headers`` is a list of ``(canonical name, value)`` tuples in wire order; unknown headers and
    their order are preserved. Accessors canonicalise the name they are given, so compact forms
    (``"v"``, ``"i"``) work as well as long ones.
    """

    # Compiled (setup.py), these classes are extension types whose fields message.pxd declares:
    # a field added here must be added there too. Their own methods then read the fields as
    # struct members (2.4 % fewer instructions per call than slot descriptors).
    __slots__ = ("headers", "body", "_cache")

    def __init__(self, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        self.headers: list[tuple[str, str]] = headers if headers is not None else []
        self.body: bytes = body
        self._cache: dict[str, object] = {}

    # -- header access -------------------------------------------------------------------------

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of header ``name`` or ``default``."""
        # The str/list annotations on locals here and below are for the compiled build (setup.py):
        # Cython then compares, slices and searches them in C. Plain Python ignores them.
        cname: str = canonical_name(name)  # compiled, a direct call (message.pxd)
        for n, v in self.headers:
            if n == cname:
                return v
        return default

    def _first(self, cname: str) -> str | None:
        """First value of a header given by its canonical name (the hot-field path)."""
        for n, v in self.headers:
            if n == cname:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        """Return the value of every ``name`` header line, in order (not split on commas)."""
        name = canonical_name(name)
        return [v for n, v in self.headers if n == name]

    def values(self, name: str) -> list[str]:
        """Return every comma-separated value of header ``name`` across all its lines."""
        out: list[str] = []
        for v in self.get_all(name):
            out.extend(split_commas(v))
        return out

    def missing(self, names: Iterable[str]) -> list[str]:
        """The canonical header names among ``names`` with no header line, in the order given.

        One pass over the headers, where a get() per name walked the list once for each.
        """
        present = {n for n, _ in self.headers}
        return [n for n in names if n not in present]

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` header with one line holding ``value`` (at the first one's place)."""
        name = canonical_name(name)
        self._cache.clear()
        for i, (n, _) in enumerate(self.headers):
            if n == name:
                self.headers[i] = (name, value)
                self.headers[i + 1 :] = [h for h in self.headers[i + 1 :] if h[0] != name]
                return
        self.headers.append((name, value))

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Add a header line; ``first`` puts it above existing lines of the same name (for Via)."""
        name = canonical_name(name)
        self._cache.clear()
        if first:
            for i, (n, _) in enumerate(self.headers):
                if n == name:
                    self.headers.insert(i, (name, value))
                    return
        self.headers.append((name, value))

    def remove(self, name: str) -> int:
        """Remove every ``name`` header line; return how many were removed."""
        name = canonical_name(name)
        self._cache.clear()
        before = len(self.headers)
        self.headers = [h for h in self.headers if h[0] != name]
        return before - len(self.headers)

    def remove_first(self, name: str) -> str | None:
        """Remove the first value of ``name`` (the first comma-separated element); return it."""
        name = canonical_name(name)
        self._cache.clear()
        for i, (n, v) in enumerate(self.headers):
            if n == name:
                parts = split_commas(v)
                if len(parts) > 1:
                    self.headers[i] = (name, ", ".join(parts[1:]))
                else:
                    del self.headers[i]
                return parts[0]
        return None

    # -- hot fields ----------------------------------------------------------------------------

    @property
    def call_id(self) -> str:
        """The Call-ID; raises SIPParseError when absent."""
        v = self._first("Call-ID")
        if not v:
            raise SIPParseError("missing Call-ID")
        return v

    @property
    def cseq(self) -> tuple[int, str]:
        """``(sequence number, method)`` from CSeq; raises SIPParseError when absent or bad."""
        v: str
        num: str
        sp: str
        method: str
        c = self._cache.get("cseq")
        if c is None:
            v = self._first("CSeq")
            if v is None:
                raise SIPParseError("missing CSeq")
            num, sp, method = v.partition(" ")
            # Fast path for the canonical "123 INVITE"; anything unusual gets the full parser (which
            # gives the same result for any other method). A set lookup, not isalpha() and isupper():
            # compiled, each str method is a Python method call.
            if sp and len(num) < 10 and num.isdigit() and method in _COMMON_METHODS:
                c = (int(num), method)
            else:
                c = parse_cseq(v)
            self._cache["cseq"] = c
        return c  # type: ignore[return-value]

    @property
    def top_via(self) -> str:
        """The raw text of the topmost Via value; raises SIPParseError when there is no Via."""
        v: str = self._first("Via")
        if v is None:
            raise SIPParseError("missing Via")
        if "," in v:
            v = split_commas(v)[0]
        return v

    @property
    def branch(self) -> str | None:
        """The top Via's branch parameter, or None (RFC 2543 peers may omit it)."""
        b = self._cache.get("branch", False)
        if b is False:
            via: str = self.top_via
            i = via.find(";branch=")
            if i >= 0:  # fast path: no whitespace around '=' (what nearly every UA sends)
                i += 8
                j = via.find(";", i)
                b = via[i:j] if j >= 0 else via[i:]
                if not b or " " in b or "," in b:
                    b = None
            if b is None or b is False:
                m = _BRANCH_RE.search(via)
                b = m.group(1) if m else None
            self._cache["branch"] = b
        return b  # type: ignore[return-value]

    @property
    def from_tag(self) -> str | None:
        """The From header's tag parameter, or None."""
        return _tag_of(self._first("From"))

    @property
    def to_tag(self) -> str | None:
        """The To header's tag parameter, or None."""
        return _tag_of(self._first("To"))

    @property
    def content_type(self) -> str | None:
        """The media type of the body, lowercased without parameters, or None."""
        v: str = self.get("Content-Type")
        if v is None:
            return None
        return v.split(";", 1)[0].strip().lower()

    def vias(self) -> list:
        """Every Via value parsed (top first), shared with other readers of the same values
        (:func:`~sbc.sip.headers.via_view`: do not change them); raises SIPParseError on a bad one."""
        out = []
        for v in self.get_all("Via"):
            out.extend(via_view(v))
        return out

    # -- serialisation -------------------------------------------------------------------------

    def start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialise with CRLF line ends; Content-Length always states the body's real length."""
        n: str
        v: str
        body = self.body
        lines = [self.start_line()]
        has_length = False
        for n, v in self.headers:
            if n == "Content-Length":
                if has_length:
                    continue
                has_length = True
                v = str(len(body))
            lines.append(f"{n}: {v}")
        if not has_length:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body

    __bytes__ = to_bytes

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.headers)

    # -- validation ----------------------------------------------------------------------------

    def _validate_headers(self) -> None:
        # One pass over the header list collects the values of the headers checked below (the
        # checks then run in their fixed order, so a message with several faults always gets the
        # same reason): a get_all() per header name walked the list ten times.
        by_name: dict[str, list[str]] = {}
        for n, v in self.headers:
            if n not in _VALID_HEADER_NAMES:
                if not is_token(n):
                    raise SIPParseError(f"bad header name {n!r}")
                if len(_VALID_HEADER_NAMES) < CANONICAL_CACHE_MAX:
                    _VALID_HEADER_NAMES.add(n)
            if n in _VALIDATED_HEADERS:
                values = by_name.get(n)
                if values is None:
                    by_name[n] = [v]
                else:
                    values.append(v)
        for name in ("From", "To"):
            for v in by_name.get(name, ()):
                try:
                    name_addr_view(v)
                except SIPParseError as e:
                    raise SIPParseError(f"{name}: {e.reason}") from None
        for v in by_name.get("Contact", ()):
            try:
                contact_view(v)
            except SIPParseError as e:
                raise SIPParseError(f"Contact: {e.reason}") from None
        for name in _NAME_ADDR_LIST_HEADERS:
            for line in by_name.get(name, ()):
                for v in split_commas(line):
                    try:
                        name_addr_view(v)
                    except SIPParseError as e:
                        raise SIPParseError(f"{name}: {e.reason}") from None
        for line in by_name.get("Via", ()):
            for via in via_view(line):
                if not _VERSION_RE.match(via.protocol.replace(" ", "")):
                    raise SIPParseError(f"Via: bad protocol {via.protocol!r}")
        for v in by_name.get("CSeq", ()):
            parse_cseq(v)
        for v in by_name.get("Max-Forwards", ()):
            parse_uint(v, "Max-Forwards", MAX_FORWARDS_LIMIT)
        for v in by_name.get("Expires", ()):
            parse_uint(v, "Expires", EXPIRES_LIMIT)


def _tag_of(value: str | None) -> str | None:
    """The tag header parameter of a From/To value (never a tag inside the <URI>)."""
    tag: str
    if not value:
        return None
    gt = value.rfind(">")
    start = gt + 1 if gt >= 0 else 0
    i = value.find(";tag=", start)
    if i >= 0:  # fast path: ";tag=x" without whitespace
        i += 5
        j = value.find(";", i)
        tag = value[i:j] if j >= 0 else value[i:]
        if tag and " " not in tag:
            return tag
    m = _TAG_RE.search(value, start)
    return m.group(1) if m else None


class Request(Message):
    """A SIP request. ``uri`` is kept as text; :attr:`ruri` parses it on demand."""

    __slots__ = ("method", "uri")

    def __init__(
        self,
        method: str,
        uri: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        # Message.__init__ inlined: this runs once per parsed request.
        self.headers = headers if headers is not None else []
        self.body = body
        self._cache = {}
        self.method = method
        self.uri = uri

    is_request = True

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    @property
    def ruri(self):
        """The Request-URI parsed by :func:`sbc.sip.uri.parse_uri` (cached)."""
        u = self._cache.get("ruri")
        if u is None:
            u = self._cache["ruri"] = parse_uri(self.uri)
        return u

    def validate(self) -> Request:
        """Check the syntax of every header the SBC interprets; return self or raise SIPParseError.

        Raises (status 400) for a malformed Request-URI or header and for a CSeq method that
        differs from the request's. Presence and multiplicity of headers are semantic checks,
        left to :func:`sbc.sip.checks.check_request` (RFC 4475 §3.3 calls such messages valid).
        An unknown URI scheme parses; the UAS answers 416.
        """
        try:
            self.ruri  # noqa: B018
        except SIPParseError as e:
            raise SIPParseError(f"Request-URI: {e.reason}") from None
        if self.method == "ACK":
            # An ACK is never answered (RFC 3261 §17.2.1): a malformed one can only be dropped,
            # so only what matching it needs is checked (Via, CSeq; Call-ID and tags are read
            # raw). Full validation of every ACK cost a sixth of the validation CPU at load.
            for via in self.vias():
                if not _VERSION_RE.match(via.protocol.replace(" ", "")):
                    raise SIPParseError(f"Via: bad protocol {via.protocol!r}")
        else:
            self._validate_headers()
        if self.get("CSeq") is not None and self.cseq[1] != self.method:
            raise SIPParseError(f"CSeq method {self.cseq[1]!r} does not match {self.method!r}")
        return self

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    """A SIP response."""

    __slots__ = ("status", "reason")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        self.headers = headers if headers is not None else []
        self.body = body
        self._cache = {}
        self.status = status
        self.reason = reason_phrase(status) if reason is None else reason

    is_request = False

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    @property
    def reason_bytes(self) -> bytes:
        """The reason phrase exactly as received (any octets)."""
        return self.reason.encode("utf-8", "surrogateescape")

    def validate(self) -> Response:
        """Check every header the SBC interprets; return self or raise SIPParseError.

        Unlike requests, a response missing a mandatory header cannot be matched or answered,
        so absence is an error here.
        """
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            if self.get(name) is None:
                raise SIPParseError(f"missing {name}")
        self._validate_headers()
        return self

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


# The parser and make_response build messages with these rather than by calling the class:
# compiled, each is an allocation and a store per field, where a call runs __init__ through the
# Python protocol (its arguments packed into a tuple and parsed again on every message).
def _new_request(method: str, uri: str, headers: list, body: bytes) -> Request:
    """``Request(method, uri, headers, body)``."""
    req: Request = Request.__new__(Request)
    req.headers = headers
    req.body = body
    req._cache = {}
    req.method = method
    req.uri = uri
    return req


def _new_response(status: int, reason: str, headers: list, body: bytes) -> Response:
    """``Response(status, reason, headers, body)`` (``reason`` given)."""
    resp: Response = Response.__new__(Response)
    resp.headers = headers
    resp.body = body
    resp._cache = {}
    resp.status = status
    resp.reason = reason
    return resp


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    idx = data.find(b"\r\n\r\n")
    if idx >= 0:
        return data[:idx], data[idx + 4 :]
    idx = data.find(b"\n\n")  # tolerate bare-LF senders (RFC 3261 §7: receivers SHOULD)
    if idx >= 0:
        return data[:idx], data[idx + 2 :]
    if data.endswith(b"\r\n"):
        return data[:-2], b""
    raise SIPParseError("no empty line after the headers")


def _split_head_py(data: bytes) -> tuple[str, list[tuple[str, str]], bytes, list[str]]:
    """Pure-Python twin of ``_speedups.split_head`` (the reference, and the fallback)."""
    head_b, body = _split_head(data)
    head = head_b.decode("utf-8", "surrogateescape")
    if "\n " in head or "\n\t" in head:
        head = _UNFOLD_RE.sub(" ", head)
    lines = head.split("\r\n") if "\r\n" in head else head.split("\n")
    headers: list[tuple[str, str]] = []
    append = headers.append
    known = _NAME_CACHE_GET
    lengths: list[str] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise SIPParseError(f"header line without colon: {line[:40]!r}")
        cname = known(name)
        if cname is None:
            cname = canonical_name(name.rstrip(" \t"))
        value = value.strip(" \t")
        if cname == "Content-Length":
            lengths.append(value)
        append((cname, value))
    return lines[0], headers, body, lengths


def parse_message(data: bytes, stream: bool = False) -> Request | Response:
    """Parse one SIP message from ``data`` (a UDP datagram, or a message framed off a stream).

    Checks the start line, header-line syntax and Content-Length framing; header values are
    parsed later, on access or by :meth:`Message.validate`. Octets past Content-Length are
    ignored (RFC 3261 §18.3). Raises :class:`SIPParseError`: 505 for an unsupported SIP version,
    400 for everything else (including a datagram shorter than its Content-Length).
    ``stream`` marks a message framed off TCP/TLS, where Content-Length is mandatory.
    """
    start: str
    lengths: list
    parts: list
    method: str
    uri: str
    version: str
    # A tuple of bytes, not `in b"\r\n"`: bytes-in-bytes first tries the left side as an int,
    # raising and clearing a TypeError on every message. b"" keeps what the old test did.
    if data[:1] in (b"\r", b"\n", b""):
        data = data.lstrip(b"\r\n")
    split = None
    if _split_head_c is not None:
        try:
            split = _split_head_c(data, _canonical_cache, canonical_name)
        except ValueError:
            raise SIPParseError("header line without colon") from None
    if split is not None:
        start, headers, offset, lengths = split
        body = data[offset:]
    else:
        start, headers, body, lengths = _split_head_py(data)

    if start.startswith("SIP/"):
        if start.startswith("SIP/2.0 ") and start[8:11].isdigit() and (len(start) == 11 or start[11] == " "):
            # Fast path for the only version we speak; the regex below handles the rest.
            msg: Request | Response = _new_response(int(start[8:11]), start[12:], headers, b"")
        else:
            m = _STATUS_LINE_RE.match(start)
            if m is None:
                raise SIPParseError(f"bad status line {start[:60]!r}")
            if m.group(1) != "2" or m.group(2) != "0":
                raise SIPParseError(f"unsupported version in {start[:20]!r}", 505)
            msg = _new_response(int(m.group(3)), m.group(4) or "", headers, b"")
        if msg.status < 100:
            raise SIPParseError(f"status code {msg.status} out of range")
    else:
        parts = start.split(" ")
        if len(parts) != 3:
            parts = start.strip().split()
            if len(parts) != 3 or start.startswith(" "):
                raise SIPParseError(f"bad request line {start[:60]!r}")
        method, uri, version = parts
        if version != SIP_VERSION:
            if _VERSION_RE.match(version):
                raise SIPParseError(f"unsupported version {version!r}", 505)
            raise SIPParseError(f"bad request line {start[:60]!r}")
        if method not in _COMMON_METHODS and not is_token(method):
            raise SIPParseError(f"bad method {method[:20]!r}")
        msg = _new_request(method, uri, headers, b"")

    if len(lengths) == 1:
        length_value: str = lengths[0]
        length = (
            int(length_value)
            if length_value.isdigit()
            else parse_uint(length_value, "Content-Length", CONTENT_LENGTH_LIMIT)
        )
        if length > CONTENT_LENGTH_LIMIT:
            raise SIPParseError(f"Content-Length {length} out of range")
        if length > len(body):
            raise SIPParseError(f"body has {len(body)} octets, Content-Length says {length}")
        if length < len(body):
            body = body[:length]
    elif stream and not lengths:
        raise SIPParseError("missing Content-Length on a stream transport")
    # Several Content-Length values parse (RFC 4475 §3.3.9 calls the message valid); the body is
    # then everything that arrived, and check_request answers 400.
    msg.body = body
    return msg


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """Build a response to ``request`` per RFC 3261 §8.2.6.

    Copies Via (all, in order), From, To, Call-ID and CSeq; adds ``to_tag`` to To when the
    request's To has none (every final response except 100 needs one; the caller supplies it).
    """
    n: str
    v: str
    hdrs: list[tuple[str, str]] = []
    for n, v in request.headers:
        if n in ("Via", "From", "Call-ID", "CSeq"):
            hdrs.append((n, v))
        elif n == "To":
            if to_tag and _tag_of(v) is None:
                v = f"{v};tag={to_tag}"
            hdrs.append((n, v))
    hdrs.extend(headers)
    return _new_response(status, reason_phrase(status) if reason is None else reason, hdrs, body)


def request_uri_host(request: Request) -> tuple[str, int | None] | None:
    """Return (host, port) of a sip/sips Request-URI, or None for other schemes."""
    u = request.ruri
    if isinstance(u, SipURI):
        return u.host, u.port
    return None
