"""MIME multipart bodies (RFC 2046 §5.1) as SIP uses them (RFC 3261 §7.4, RFC 5621).

SIP INVITEs carry SDP either as the whole body (``application/sdp``) or as one part of a
multipart body (e.g. SDP beside ISUP in SIP-I, beside a PIDF-LO location in emergency calls).
The SBC needs the SDP part to anchor media; ``find_sdp`` gets it, ``parse_multipart`` and
``build_multipart`` take bodies apart and put them together.

Nesting: ``parse_multipart`` parses one level and returns a nested multipart part as an
ordinary BodyPart whose body is the raw inner multipart (so a rebuilt body keeps its
structure); ``find_sdp`` recurses into nested parts, at most MAX_MULTIPART_DEPTH deep.

Sans-I/O: pure functions over bytes, no sockets, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from sbc.sip.errors import SIPParseError

MAX_BOUNDARY_LENGTH = 70
"""Longest boundary RFC 2046 §5.1.1 allows."""

MAX_BODY_PARTS = 64
"""Most parts one multipart body may have. SIP bodies carry two or three (SDP + ISUP, SDP +
PIDF-LO); the cap bounds the work a hostile body can cause."""

MAX_PART_HEADERS = 32
"""Most header lines one body part may have. Real parts have one to four (Content-Type,
Content-Disposition, Content-ID, Content-Transfer-Encoding)."""

MAX_MULTIPART_DEPTH = 4
"""Deepest nesting ``find_sdp`` follows. SIP needs two levels at most (multipart/mixed holding a
multipart/alternative); the cap stops a recursion bomb."""

DEFAULT_PART_TYPE = "text/plain"
"""Type of a part without Content-Type (RFC 2046 §5.1: 'text/plain; charset=US-ASCII')."""

SDP_TYPE = "application/sdp"

# RFC 2046 §5.1.1 bchars: the characters a boundary may use (it may not end with a space).
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# RFC 2045 token: the characters of a media type, subtype or parameter name.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")


@dataclass(slots=True)
class BodyPart:
    """One part of a multipart body: its headers, in order as (name, value), and its raw octets."""

    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """Return the first header called ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for header_name, value in self.headers:
            if header_name.lower() == wanted:
                return value
        return None

    @property
    def content_type_value(self) -> str:
        """The part's whole Content-Type value, parameters included ('text/plain' if absent or
        empty); ``c`` is the SIP compact form (RFC 3261 §20.15)."""
        return self.header("Content-Type") or self.header("c") or DEFAULT_PART_TYPE

    @property
    def content_type(self) -> str:
        """The part's media type, lower-cased, without parameters ('text/plain' if absent).

        Raises SIPParseError if the Content-Type header is malformed.
        """
        return parse_content_type(self.content_type_value)[0]


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into (media type, parameters).

    The media type ('type/subtype') and parameter names are lower-cased (RFC 2045 §5.1: they are
    case-insensitive); parameter values keep their case (a boundary is case-sensitive), with the
    quotes of a quoted-string removed and its backslash escapes resolved.
    Raises SIPParseError for a missing or malformed type/subtype, a parameter without '=' or
    with an empty name, an unterminated quoted string, or a duplicate parameter (two boundaries
    would let two parsers split the body differently).
    """
    media_type, _, rest = value.partition(";")
    media_type = media_type.strip().lower()
    main, slash, sub = media_type.partition("/")
    if not slash or not _TOKEN_RE.fullmatch(main) or not _TOKEN_RE.fullmatch(sub):
        raise SIPParseError(f"malformed Content-Type {value[:60]!r}: expected 'type/subtype'")
    params: dict[str, str] = {}
    position, length = 0, len(rest)
    while position < length:
        char = rest[position]
        if char in " \t;":
            position += 1
            continue
        equals = rest.find("=", position)
        if equals < 0:
            raise SIPParseError(f"malformed Content-Type parameter {rest[position:][:60]!r}: no '='")
        name = rest[position:equals].strip().lower()
        if not _TOKEN_RE.fullmatch(name):
            raise SIPParseError(f"malformed Content-Type parameter name {name[:60]!r}")
        position = equals + 1
        while position < length and rest[position] in " \t":
            position += 1
        if position < length and rest[position] == '"':
            position += 1
            chars: list[str] = []
            while True:
                if position >= length:
                    raise SIPParseError(f"unterminated quoted string in Content-Type parameter {name!r}")
                char = rest[position]
                if char == "\\" and position + 1 < length:
                    chars.append(rest[position + 1])
                    position += 2
                elif char == '"':
                    position += 1
                    break
                else:
                    chars.append(char)
                    position += 1
            param_value = "".join(chars)
        else:
            end = rest.find(";", position)
            end = length if end < 0 else end
            param_value = rest[position:end].strip()
            position = end
        if name in params:
            raise SIPParseError(f"duplicate Content-Type parameter {name!r}")
        params[name] = param_value
    return media_type, params


def _boundary_of(content_type: str) -> tuple[str, bytes]:
    """Return (media type, boundary as bytes) of a multipart Content-Type.

    Raises SIPParseError if the type is not multipart/* or the boundary is missing or invalid.
    """
    media_type, params = parse_content_type(content_type)
    if not media_type.startswith("multipart/"):
        raise SIPParseError(f"Content-Type {media_type!r} is not multipart")
    boundary = params.get("boundary")
    if boundary is None:
        raise SIPParseError("multipart Content-Type has no boundary parameter")
    if not _BOUNDARY_RE.fullmatch(boundary):
        raise SIPParseError(f"invalid multipart boundary {boundary[:80]!r}")
    return media_type, boundary.encode("ascii")


def _delimiter_end(body: bytes, after: int) -> tuple[int, bool] | None:
    """Check what follows a ``--boundary`` that ends at ``after``.

    Returns (offset just past the delimiter line, is_closing) if it is a real delimiter: '--'
    (closing) or optional transport padding (spaces, tabs) then CRLF/LF or the end of the body.
    Returns None if the boundary is only the prefix of a longer line.
    """
    closing = body.startswith(b"--", after)
    position = after + 2 if closing else after
    length = len(body)
    while position < length and body[position] in b" \t":
        position += 1
    if position == length:
        return position, closing
    if body.startswith(b"\r\n", position):
        return position + 2, closing
    if body[position] == 0x0A:
        return position + 1, closing
    return None


def _parse_part(raw: bytes) -> BodyPart:
    """Split one encapsulation into headers and body at the first empty line.

    Returns the BodyPart (no headers if the part starts with an empty line; empty if ``raw`` is).
    Raises SIPParseError for a header line without ':', too many headers, or headers that are
    not followed by an empty line.
    """
    if not raw:
        return BodyPart([], b"")
    if raw.startswith(b"\r\n"):
        return BodyPart([], raw[2:])
    if raw.startswith(b"\n"):
        return BodyPart([], raw[1:])
    crlf = raw.find(b"\r\n\r\n")
    lf = raw.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        head, body = raw[:crlf], raw[crlf + 4 :]
    elif lf >= 0:
        head, body = raw[:lf], raw[lf + 2 :]
    else:
        raise SIPParseError("multipart body part has no empty line after its headers")
    headers: list[tuple[str, str]] = []
    for line in head.decode("utf-8", "surrogateescape").replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or not _TOKEN_RE.fullmatch(name):
            raise SIPParseError(f"malformed header line {line[:60]!r} in multipart body part")
        if len(headers) == MAX_PART_HEADERS:
            raise SIPParseError(f"multipart body part has more than {MAX_PART_HEADERS} headers")
        headers.append((name, value.strip()))
    return BodyPart(headers, body)


def parse_multipart(content_type: str, body: bytes) -> list[BodyPart]:
    """Split a multipart body (one level; nested multiparts stay raw parts) into its parts.

    The boundary comes from ``content_type``. The preamble before the first delimiter and the
    epilogue after the closing one are ignored. CRLF and LF line ends are both accepted; the line
    end before each delimiter belongs to the delimiter (RFC 2046 §5.1.1), so part bodies come
    back octet-exact. A delimiter straight after the previous delimiter line ("--b\r\n--b--")
    is accepted as closing an empty part. Returns the parts in order.
    Raises SIPParseError if the Content-Type is not multipart or has no valid boundary, the
    body has no delimiter or never closes, it has more than MAX_BODY_PARTS parts, or a part's
    headers are malformed (see ``_parse_part``).
    """
    _, boundary = _boundary_of(content_type)
    dash = b"--" + boundary
    search = b"\n" + dash

    # The first delimiter may open the body (no line end before it) or follow a preamble.
    found = None
    if body.startswith(dash):
        found = _delimiter_end(body, len(dash))
    position = 0
    while found is None:
        hit = body.find(search, position)
        if hit < 0:
            raise SIPParseError("multipart body has no boundary delimiter")
        found = _delimiter_end(body, hit + len(search))
        position = hit + 1
    start, closing = found

    parts: list[BodyPart] = []
    position = start
    while not closing:
        if len(parts) == MAX_BODY_PARTS:
            raise SIPParseError(f"multipart body has more than {MAX_BODY_PARTS} parts")
        # Lenient: a delimiter straight after the previous delimiter line (no line end of its
        # own) closes an empty part, as several stacks write "--b\r\n--b--" for one.
        found = _delimiter_end(body, start + len(dash)) if body.startswith(dash, start) else None
        end = start
        while found is None:
            hit = body.find(search, position)
            if hit < 0:
                raise SIPParseError("multipart body has no closing delimiter")
            found = _delimiter_end(body, hit + len(search))
            position = hit + 1
            end = hit - 1 if hit > start and body[hit - 1] == 0x0D else hit
        parts.append(_parse_part(body[start:end]))
        start, closing = found
        position = start
    return parts


def build_multipart(parts: list[BodyPart], boundary: str) -> bytes:
    """Serialise ``parts`` as a multipart body delimited by ``boundary``, with CRLF line ends.

    Each part is written as its headers, an empty line and its body octets unchanged; the body
    ends with the closing delimiter and CRLF. ``parse_multipart`` of the result gives back
    ``parts``. Raises ValueError for a boundary that RFC 2046 §5.1.1 does not allow, a header
    name or value with a line break, or a part containing the delimiter ('--' + boundary).
    """
    if not _BOUNDARY_RE.fullmatch(boundary):
        raise ValueError(f"invalid multipart boundary {boundary!r}")
    dash = b"--" + boundary.encode("ascii")
    out: list[bytes] = []
    for part in parts:
        lines = []
        for name, value in part.headers:
            if not _TOKEN_RE.fullmatch(name) or "\r" in value or "\n" in value:
                raise ValueError(f"invalid body part header {name!r}: {value!r}")
            lines.append(f"{name}: {value}\r\n")
        head = "".join(lines).encode("utf-8", "surrogateescape")
        if dash in head or dash in part.body:
            raise ValueError("a body part contains the multipart boundary delimiter")
        out.append(dash + b"\r\n" + head + b"\r\n" + part.body + b"\r\n")
    out.append(dash + b"--\r\n")
    return b"".join(out)


def _find_sdp_in(content_type: str, body: bytes, depth: int) -> bytes | None:
    """Search ``body`` of ``content_type`` for SDP, descending at most ``depth`` more levels."""
    media_type = parse_content_type(content_type)[0]
    if media_type == SDP_TYPE:
        return body or None
    if not media_type.startswith("multipart/") or depth == 0:
        return None
    parts = parse_multipart(content_type, body)
    if media_type == "multipart/alternative":
        # RFC 2046 §5.1.4: alternatives come in increasing faithfulness; take the last we understand.
        parts = parts[::-1]
    for part in parts:
        found = _find_sdp_in(part.content_type_value, part.body, depth - 1)
        if found is not None:
            return found
    return None


def find_sdp(content_type: str, body: bytes) -> bytes | None:
    """Return the SDP of a SIP message body, or None if it carries none.

    ``content_type`` is the message's Content-Type value. If it is application/sdp the body
    itself is returned; if it is any multipart/* (mixed, alternative, related, signed...) the
    first application/sdp part is returned, searching nested multiparts depth-first up to
    MAX_MULTIPART_DEPTH levels (for multipart/alternative the last alternative wins, as RFC 2046
    §5.1.4 says). An empty SDP body counts as none. Raises SIPParseError if the Content-Type or
    a multipart body on the way is malformed.
    """
    return _find_sdp_in(content_type, body, MAX_MULTIPART_DEPTH)


def rewrite_sdp(content_type: str, body: bytes, rewrite: Callable[[bytes], bytes]) -> bytes:
    """``body`` of ``content_type`` with every application/sdp in it replaced by ``rewrite(sdp)``.

    For a media anchor behind an SBC: a SIP-I INVITE (SDP beside ISUP in multipart/mixed) must
    have its SDP rewritten like a plain one, the other parts relayed octet-exact. Nested
    multiparts are descended up to MAX_MULTIPART_DEPTH levels and rebuilt with their own
    boundaries (the Content-Type values stay valid). multipart/signed is returned unchanged:
    rewriting would break the signature. A body with no SDP comes back as it is. Raises
    SIPParseError for a malformed multipart body or Content-Type.
    """
    return _rewrite_sdp_in(content_type, body, rewrite, MAX_MULTIPART_DEPTH)


def _rewrite_sdp_in(content_type: str, body: bytes, rewrite: Callable[[bytes], bytes], depth: int) -> bytes:
    media_type = parse_content_type(content_type)[0]
    if media_type == SDP_TYPE:
        return rewrite(body) if body else body
    if not media_type.startswith("multipart/") or media_type == "multipart/signed" or depth == 0:
        return body
    _, boundary = _boundary_of(content_type)
    parts = parse_multipart(content_type, body)
    changed = False
    for part in parts:
        new = _rewrite_sdp_in(part.content_type_value, part.body, rewrite, depth - 1)
        if new is not part.body:
            part.body = new
            changed = True
    if not changed:
        return body
    try:
        return build_multipart(parts, boundary.decode("ascii"))
    except ValueError as e:  # a rewritten part that happens to contain the boundary
        raise SIPParseError(f"multipart body cannot be rebuilt: {e}") from None
