"""SDP (RFC 8866, formerly RFC 4566): model, parser and serialiser for media anchoring.

The SBC parses the SDP offer/answer of each leg, rewrites connection addresses and ports to its
relay, and must forward everything else unchanged. So the model keeps every line: known line types
go into typed fields, unknown line types are kept verbatim in ``unknown`` (in their original order
within their section), and ``to_bytes()`` writes the RFC 8866 §5 order with CRLF line ends.
The contract is ``SessionDescription.parse(sd.to_bytes()) == sd``.

Leniency, chosen from what real endpoints send (each is documented where it is applied):

* LF-only line ends are accepted, as are empty lines (skipped); a bare CR is refused.
* A missing ``s=`` becomes ``s=-`` and a missing ``t=`` becomes ``t=0 0`` (the RFC's placeholder
  values), so the SDP the SBC sends on is always valid while the offer is still accepted.
* Session-level lines in a non-RFC order are accepted and written back in RFC order.
* An ``m=`` line without any format is accepted (some stacks decline streams with ``m=audio 0 RTP/AVP``).
* A ``c=`` address may be an FQDN, as the RFC 8866 grammar allows; anything that looks like an IP
  literal must be a valid address of the declared family.

Sans-I/O: pure functions over bytes/str, no sockets, no clock.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from sbc.sip.errors import SIPParseError

# Limits.
MAX_SDP_LINES = 1024
"""Most lines one SDP body may have. A plain audio offer has 10-20 lines; a WebRTC offer with
ICE candidates, simulcast and several video codecs stays under ~400. The cap bounds parse work
for a hostile body well inside that margin."""

MAX_SDP_BYTES = 65535
"""Largest SDP body accepted, in bytes: the largest UDP datagram. No legitimate offer is close;
the SIP parser bounds the message first, this guards direct callers."""

MAX_PORT = 65535
"""Highest transport port (16-bit field of UDP/TCP)."""

ADDRESS_CACHE_SIZE = 1024
"""Entries in the cache of validated ``c=`` addresses. Each call re-offers the same few peer
addresses; caching avoids re-running ``ipaddress`` (the slowest step of a parse) and the bound
keeps memory fixed whatever addresses hostile peers send."""

MAX_REPORTED_LINE = 60
"""Characters of an offending line quoted in an error reason: enough to recognise it in a log,
short enough that a hostile line cannot flood the Warning header or the log."""

# Vocabulary.
DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
"""The RFC 3264 §5.1 direction attributes."""

DEFAULT_DIRECTION = "sendrecv"
"""Direction when neither the media nor the session says (RFC 3264 §5.1)."""

HOLD_DIRECTIONS = frozenset({"sendonly", "inactive"})
"""Directions an offerer uses to put the other side on hold (RFC 3264 §8.4)."""

SESSION_ONLY_TYPES = frozenset("vosuepzrt")
"""Line types RFC 8866 §5 allows only before the first ``m=``; after it they mean a broken body."""

STATIC_PAYLOAD_TYPES: dict[str, tuple[str, int, str | None]] = {
    "0": ("PCMU", 8000, None),
    "3": ("GSM", 8000, None),
    "4": ("G723", 8000, None),
    "5": ("DVI4", 8000, None),
    "6": ("DVI4", 16000, None),
    "7": ("LPC", 8000, None),
    "8": ("PCMA", 8000, None),
    "9": ("G722", 8000, None),
    "10": ("L16", 44100, "2"),
    "11": ("L16", 44100, None),
    "12": ("QCELP", 8000, None),
    "13": ("CN", 8000, None),
    "14": ("MPA", 90000, None),
    "15": ("G728", 8000, None),
    "16": ("DVI4", 11025, None),
    "17": ("DVI4", 22050, None),
    "18": ("G729", 8000, None),
    "25": ("CelB", 90000, None),
    "26": ("JPEG", 90000, None),
    "28": ("nv", 90000, None),
    "31": ("H261", 90000, None),
    "32": ("MPV", 90000, None),
    "33": ("MP2T", 90000, None),
    "34": ("H263", 90000, None),
}
"""RFC 3551 §6 tables 4 and 5: payload types that may be used without an ``a=rtpmap`` line."""

_FQDN_RE = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?"
)
_IPV4ISH_RE = re.compile(r"[0-9.]+")


def _excerpt(line: str) -> str:
    """Quote at most MAX_REPORTED_LINE characters of ``line`` for an error reason."""
    return repr(line[:MAX_REPORTED_LINE])


def _is_digits(text: str) -> bool:
    """True for a non-empty run of ASCII digits (``str.isdigit`` alone accepts e.g. '²')."""
    return text.isascii() and text.isdigit()


@lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def _address_family(address: str) -> int:
    """Classify a connection address: 4 or 6 for an IP literal, 0 for an FQDN.

    Raises SIPParseError if the address is neither a valid IP literal nor a valid FQDN; an
    address made only of digits and dots, or containing a colon, must be a valid IP literal.
    """
    if ":" in address:
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise SIPParseError(f"invalid IPv6 address {_excerpt(address)} in SDP") from None
        return 6
    if _IPV4ISH_RE.fullmatch(address):
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise SIPParseError(f"invalid IPv4 address {_excerpt(address)} in SDP") from None
        return 4
    if _FQDN_RE.fullmatch(address):
        return 0
    raise SIPParseError(f"invalid address {_excerpt(address)} in SDP")


# Media addresses whose parse is remembered (ipaddress costs ~2 us a call; SDP repeats the
# same few addresses of each peer).
ADDRESS_CACHE_SIZE = 1024

@functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def _is_unspecified(address: str) -> bool:
    """True for 0.0.0.0 or :: (the RFC 2543 'hold' address); False for anything else, FQDNs included."""
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


@functools.lru_cache(maxsize=ADDRESS_CACHE_SIZE)
def _addrtype_for(address: str) -> str:
    """Return 'IP4' or 'IP6' for an IP literal. Raises ValueError if ``address`` is not one."""
    return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"


def _parse_port(text: str, what: str) -> int:
    """Parse a 0..MAX_PORT decimal port. Raises SIPParseError naming ``what`` otherwise."""
    if not _is_digits(text) or len(text) > 5:
        raise SIPParseError(f"non-numeric {what} {_excerpt(text)}")
    port = int(text)
    if port > MAX_PORT:
        raise SIPParseError(f"{what} {port} out of range")
    return port


def _attribute_line(attribute: tuple) -> str:
    """Serialise one (name, value) attribute back to its ``a=`` line."""
    name: str = attribute[0]
    value = attribute[1]
    return "a=" + name if value is None else f"a={name}:{value}"


def _direction_of(attributes: list) -> str | None:
    """Return the first direction attribute's name, or None if there is none."""
    name: str
    for name, value in attributes:
        if value is None and name in DIRECTIONS:
            return name
    return None


def _remove(attributes: list, names: frozenset) -> int:
    """Remove, in place, every attribute whose name is in ``names``; return how many went."""
    kept = [a for a in attributes if a[0] not in names]
    removed = len(attributes) - len(kept)
    if removed:
        attributes[:] = kept
    return removed


@dataclass
class Origin:
    """The ``o=`` line (RFC 8866 §5.2).

    ``sess_id`` is an opaque identifier and stays a string (it is only compared); ``sess_version``
    is an int because the SBC increments it when it rewrites the body (RFC 3264 §8).
    """

    username: str
    sess_id: str
    sess_version: int
    nettype: str
    addrtype: str
    address: str

    @classmethod
    def parse(cls, value: str) -> Origin:
        """Parse the value of an ``o=`` line (without ``o=``).

        Returns the Origin. Raises SIPParseError unless there are exactly six fields and
        sess-version is a decimal number.
        """
        return _parse_origin(cls, value)

    def __str__(self) -> str:
        """The ``o=`` line value as it is written on the wire."""
        return f"{self.username} {self.sess_id} {self.sess_version} {self.nettype} {self.addrtype} {self.address}"


@dataclass
class Connection:
    """A ``c=`` line (RFC 8866 §5.7).

    ``ttl`` (IPv4 multicast only) and ``count`` (number of multicast addresses) are kept as the
    raw digit strings of the ``/ttl/count`` suffix so they are forwarded exactly as received.
    """

    nettype: str
    addrtype: str
    address: str
    ttl: str | None = None
    count: str | None = None

    @classmethod
    def parse(cls, value: str) -> Connection:
        """Parse the value of a ``c=`` line (without ``c=``).

        Returns the Connection. Raises SIPParseError for a line that is not
        ``IN IP4|IP6 <address>[/ttl][/count]``, an address that is not a valid IP literal of the
        declared family (an FQDN is accepted), or a non-numeric ttl/count. A network or address
        type other than IN/IP4/IP6 gets status 488: it is legal SDP the SBC cannot anchor.
        """
        return _parse_connection(cls, value)

    @classmethod
    def from_address(cls, address: str) -> Connection:
        """Build a unicast ``IN IP4``/``IN IP6`` connection for an IP literal.

        Raises ValueError if ``address`` is not an IP address.
        """
        return cls("IN", _addrtype_for(address), address)

    def __str__(self) -> str:
        """The ``c=`` line value as it is written on the wire."""
        text = f"{self.nettype} {self.addrtype} {self.address}"
        if self.ttl is not None:
            text += "/" + self.ttl
        if self.count is not None:
            text += "/" + self.count
        return text


@dataclass
class MediaDescription:
    """One media section: the ``m=`` line and the lines up to the next ``m=`` (RFC 8866 §5.14).

    ``port`` 0 means the stream is declined/disabled (RFC 3264 §5.1, §6). ``attributes`` keeps
    every ``a=`` line in order as (name, value); a property attribute has value None.
    ``unknown`` keeps lines of unknown type verbatim (``x=...``), written after the attributes.
    """

    media: str
    port: int
    proto: str
    fmts: list[str] = field(default_factory=list)
    port_count: int | None = None
    info: str | None = None
    connections: list[Connection] = field(default_factory=list)
    bandwidths: list[str] = field(default_factory=list)
    key: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def __init__(
        self,
        media: str,
        port: int,
        proto: str,
        fmts: list[str] | None = None,
        port_count: int | None = None,
        info: str | None = None,
        connections: list[Connection] | None = None,
        bandwidths: list[str] | None = None,
        key: str | None = None,
        attributes: list[tuple[str, str | None]] | None = None,
        unknown: list[str] | None = None,
    ) -> None:
        # Written out, not generated: see sdp.pxd.
        self.media = media
        self.port = port
        self.proto = proto
        self.fmts = [] if fmts is None else fmts
        self.port_count = port_count
        self.info = info
        self.connections = [] if connections is None else connections
        self.bandwidths = [] if bandwidths is None else bandwidths
        self.key = key
        self.attributes = [] if attributes is None else attributes
        self.unknown = [] if unknown is None else unknown

    @classmethod
    def parse_m_line(cls, value: str) -> MediaDescription:
        """Parse the value of an ``m=`` line into a MediaDescription with no other lines yet.

        Returns it. Raises SIPParseError if there are fewer than three fields (media, port,
        proto) or the port or port count is not a decimal number in range. No format at all is
        accepted (some stacks decline with ``m=audio 0 RTP/AVP``).
        """
        return _parse_m_line(cls, value)

    # Direction and hold.

    def direction(self, session: SessionDescription | None = None) -> str:
        """Return this stream's direction: its own attribute, else the session's, else sendrecv.

        A method rather than a property because the session-level fallback needs the session,
        and the media section keeps no back-reference (that would break equality and copying).
        """
        own = _direction_of(self.attributes)
        if own is not None:
            return own
        if session is not None:
            return session.direction
        return DEFAULT_DIRECTION

    def set_direction(self, direction: str) -> None:
        """Make ``direction`` this stream's only direction attribute.

        The first existing direction attribute is replaced in place (so the line keeps its
        position), any others are dropped; with none, the attribute is appended.
        Raises ValueError if ``direction`` is not one of DIRECTIONS.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"not an SDP direction: {direction!r}")
        result: list[tuple[str, str | None]] = []
        placed = False
        for attribute in self.attributes:
            if attribute[1] is None and attribute[0] in DIRECTIONS:
                if not placed:
                    result.append((direction, None))
                    placed = True
            else:
                result.append(attribute)
        if not placed:
            result.append((direction, None))
        self.attributes = result

    def is_held(self, session: SessionDescription | None = None) -> bool:
        """True if this stream puts the peer on hold.

        That is: direction sendonly or inactive (RFC 3264 §8.4), or the old RFC 2543 convention of
        a connection address of 0.0.0.0 (``::`` is treated alike). A declined stream (port 0) is
        not held: it is gone.
        """
        if self.port == 0:
            return False
        if self.direction(session) in HOLD_DIRECTIONS:
            return True
        connection = self.effective_connection(session)
        return connection is not None and _is_unspecified(connection.address)

    @property
    def declined(self) -> bool:
        """True if the port is 0: the stream is rejected or disabled (RFC 3264 §5.1, §6)."""
        return self.port == 0

    def decline(self) -> None:
        """Reject this stream in an answer: port 0, no port count (RFC 3264 §6). Formats stay."""
        self.port = 0
        self.port_count = None

    # Connection.

    def effective_connection(self, session: SessionDescription | None = None) -> Connection | None:
        """Return the connection that applies: the first media-level ``c=``, else the session's.

        Returns None if neither exists (invalid SDP for an active stream, tolerated here).
        """
        if self.connections:
            return self.connections[0]
        return session.connection if session is not None else None

    # Attributes.

    def attribute_values(self, name: str) -> list[str | None]:
        """Return the values of every attribute called ``name``, in order (None for a flag)."""
        return [value for attr_name, value in self.attributes if attr_name == name]

    def remove_attributes(self, names: Iterable[str]) -> int:
        """Remove every attribute whose name is in ``names`` (e.g. 'candidate'); return the count."""
        return _remove(self.attributes, frozenset(names))

    def rtpmap(self) -> dict[str, tuple[str, int, str | None]]:
        """Map payload type -> (encoding name, clock rate, encoding parameters/channels).

        Built from the ``a=rtpmap`` lines, plus the RFC 3551 static payload types listed in the
        ``m=`` line that have no ``a=rtpmap`` of their own (PCMU is often sent as just ``0``).
        An ``a=rtpmap`` line that does not parse (e.g. ``a=rtpmap:31 LPC`` with no clock rate)
        is skipped, not fatal: the codec table must not fail a call over one bad line.
        """
        table: dict[str, tuple[str, int, str | None]] = {}
        name: str
        encoding: str
        pieces: list
        for name, value in self.attributes:
            if name != "rtpmap" or not value:
                continue
            pt, _, encoding = value.partition(" ")
            pieces = encoding.strip().split("/")
            if not pt or len(pieces) < 2 or len(pieces) > 3 or not _is_digits(pieces[1]):
                continue
            table[pt] = (pieces[0], int(pieces[1]), pieces[2] if len(pieces) == 3 else None)
        if "RTP/" in self.proto:
            for pt in self.fmts:
                if pt not in table and pt in STATIC_PAYLOAD_TYPES:
                    table[pt] = STATIC_PAYLOAD_TYPES[pt]
        return table

    @property
    def rtcp_mux(self) -> bool:
        """True if ``a=rtcp-mux`` is present (RFC 5761: RTCP shares the RTP port)."""
        name: str
        for name, _ in self.attributes:  # noqa: SIM110 - a loop: any() over a generator is a closure
            if name == "rtcp-mux":
                return True
        return False

    def rtcp(self) -> tuple[int, Connection | None] | None:
        """Parse ``a=rtcp`` (RFC 3605): return (port, connection or None), or None if absent.

        Raises SIPParseError if the port is not numeric or the address part is malformed.
        """
        for name, value in self.attributes:
            if name == "rtcp":
                port_text, _, rest = (value or "").strip().partition(" ")
                port = _parse_port(port_text, "a=rtcp port")
                return port, (Connection.parse(rest) if rest.strip() else None)
        return None

    def _write(self, out: list) -> None:
        """Append this section's lines, in RFC 8866 order (m i c b k a), to ``out``."""
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        out.append(" ".join(["m=" + self.media, port, self.proto, *self.fmts]))
        if self.info is not None:
            out.append("i=" + self.info)
        for connection in self.connections:
            out.append(f"c={connection}")
        for bandwidth in self.bandwidths:
            out.append("b=" + bandwidth)
        if self.key is not None:
            out.append("k=" + self.key)
        for attribute in self.attributes:
            out.append(_attribute_line(attribute))
        out.extend(self.unknown)


def _rewritten(connection: Connection, addrtype: str, address: str) -> Connection:
    """``connection`` pointed at ``address``; a hold address (0.0.0.0, ``::``) stays as it is."""
    if _is_unspecified(connection.address):
        return connection
    return Connection("IN", addrtype, address)


@dataclass
class SessionDescription:
    """A whole SDP body (RFC 8866 §5).

    ``times`` holds the raw ``t=`` and ``r=`` lines (with their ``t=``/``r=`` prefix) in order,
    because they interleave and the SBC never interprets them. ``unknown`` keeps session-level
    lines of unknown type verbatim; they are written after the session attributes.
    """

    origin: Origin
    session_name: str = "-"
    version: int = 0
    info: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[str] = field(default_factory=list)
    times: list[str] = field(default_factory=lambda: ["t=0 0"])
    timezones: list[str] = field(default_factory=list)
    key: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def __init__(
        self,
        origin: Origin,
        session_name: str = "-",
        version: int = 0,
        info: str | None = None,
        uri: str | None = None,
        emails: list[str] | None = None,
        phones: list[str] | None = None,
        connection: Connection | None = None,
        bandwidths: list[str] | None = None,
        times: list[str] | None = None,
        timezones: list[str] | None = None,
        key: str | None = None,
        attributes: list[tuple[str, str | None]] | None = None,
        media: list[MediaDescription] | None = None,
        unknown: list[str] | None = None,
    ) -> None:
        # Written out, not generated: see sdp.pxd.
        self.origin = origin
        self.session_name = session_name
        self.version = version
        self.info = info
        self.uri = uri
        self.emails = [] if emails is None else emails
        self.phones = [] if phones is None else phones
        self.connection = connection
        self.bandwidths = [] if bandwidths is None else bandwidths
        self.times = ["t=0 0"] if times is None else times
        self.timezones = [] if timezones is None else timezones
        self.key = key
        self.attributes = [] if attributes is None else attributes
        self.media = [] if media is None else media
        self.unknown = [] if unknown is None else unknown

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse an SDP body.

        Accepts CRLF or LF line ends and skips empty lines. Bytes are decoded as UTF-8 (RFC 8866
        §5's charset default) with surrogateescape, so any byte survives a round trip.
        Returns the SessionDescription; a missing ``s=`` is read as ``s=-`` and a missing ``t=``
        as ``t=0 0`` (common in the wild; the RFC placeholders keep what we forward valid).

        Raises SIPParseError (status 400 unless stated) for: a body over MAX_SDP_BYTES or
        MAX_SDP_LINES; a NUL or bare CR; a line not of the form ``x=`` with one lower-case
        letter; a first line other than ``v=0``; a missing or duplicate ``o=``; a duplicate
        ``s=``/``i=``/``u=``/``c=``/``k=`` where only one is allowed; a session-only line type
        after the first ``m=``; an ``r=`` before any ``t=``; an empty attribute name; a
        malformed ``o=``, ``c=``, ``m=`` or ``b=`` line (see Origin.parse, Connection.parse,
        MediaDescription.parse_m_line).
        """
        return _parse(cls, data)

    def to_bytes(self) -> bytes:
        """Serialise in RFC 8866 order (v o s i u e p c b t/r z k a, then each media section) with CRLF.

        Returns the body, ending in CRLF. Raises ValueError if a field holds a CR or LF (which
        parse never produces; it guards values a caller set by hand from splitting into lines).
        """
        out: list = [f"v={self.version}", f"o={self.origin}", "s=" + self.session_name]
        if self.info is not None:
            out.append("i=" + self.info)
        if self.uri is not None:
            out.append("u=" + self.uri)
        for email in self.emails:
            out.append("e=" + email)
        for phone in self.phones:
            out.append("p=" + phone)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        for bandwidth in self.bandwidths:
            out.append("b=" + bandwidth)
        out.extend(self.times)
        for timezone in self.timezones:
            out.append("z=" + timezone)
        if self.key is not None:
            out.append("k=" + self.key)
        for attribute in self.attributes:
            out.append(_attribute_line(attribute))
        out.extend(self.unknown)
        media: MediaDescription
        for media in self.media:
            media._write(out)
        text: str = "\r\n".join(out)
        if text.count("\n") != len(out) - 1 or text.count("\r") != len(out) - 1:
            raise ValueError("an SDP field contains a line break")
        return (text + "\r\n").encode("utf-8", "surrogateescape")

    # Session-level helpers.

    @property
    def direction(self) -> str:
        """The session-level direction attribute, or sendrecv if there is none (RFC 3264 §5.1)."""
        return _direction_of(self.attributes) or DEFAULT_DIRECTION

    def attribute_values(self, name: str) -> list[str | None]:
        """Return the values of every session-level attribute called ``name``, in order."""
        return [value for attr_name, value in self.attributes if attr_name == name]

    def remove_attributes(self, names: Iterable[str]) -> int:
        """Remove attributes named in ``names`` at session level and in every media section.

        Used when anchoring, e.g. ``remove_attributes({"candidate", "ice-ufrag", "ice-pwd"})``.
        Returns the number of lines removed.
        """
        wanted = frozenset(names)
        removed = _remove(self.attributes, wanted)
        m: MediaDescription
        for m in self.media:
            removed += _remove(m.attributes, wanted)
        return removed

    def set_address(self, address: str) -> None:
        """Point the whole session at ``address`` (the relay), as an anchoring SBC must.

        Rewrites the ``o=`` address, the session ``c=`` and every media ``c=`` (declined ones
        too, so no internal address leaks), and the address part of ``a=rtcp`` lines; ``IP4`` or
        ``IP6`` is chosen from ``address`` and any multicast ttl/count is dropped. A ``c=`` of
        0.0.0.0 or ``::`` is left alone: it signals hold (RFC 2543) and reveals nothing. If there
        is no session ``c=`` and some media section has none either, a session ``c=`` is added
        so every stream has one. Ports are not touched: assign ``MediaDescription.port``.
        Raises ValueError if ``address`` is not an IP literal.
        """
        addrtype = _addrtype_for(address)
        self.origin.addrtype = addrtype
        self.origin.address = address

        if self.connection is not None:
            self.connection = _rewritten(self.connection, addrtype, address)
        else:
            for media in self.media:
                if not media.connections:
                    self.connection = Connection("IN", addrtype, address)
                    break
        for media in self.media:
            media.connections = [_rewritten(c, addrtype, address) for c in media.connections]
            for position, (name, value) in enumerate(media.attributes):
                if name == "rtcp" and value is not None:
                    port_text, _, rest = value.strip().partition(" ")
                    if rest.strip():
                        media.attributes[position] = ("rtcp", f"{port_text} IN {addrtype} {address}")

    def bump_version(self) -> None:
        """Increment the ``o=`` sess-version: required whenever the SDP changes (RFC 3264 §8)."""
        self.origin.sess_version += 1


def _parse(cls, data) -> SessionDescription:
    """SessionDescription.parse (``cls`` is the class it was called on); a module function so
    compiled callers (sbc.media.manager) call it directly."""
    # Locals are annotated where compiled code gains from it: Cython reads a str-typed
    # variable's characters and length in C (the annotations do nothing in Python).
    text: str
    line: str
    value: str
    name: str
    attr_value: str
    if isinstance(data, str):
        text = data
        if len(text) > MAX_SDP_BYTES:
            raise SIPParseError(f"SDP body longer than {MAX_SDP_BYTES} characters")
    else:
        if len(data) > MAX_SDP_BYTES:
            raise SIPParseError(f"SDP body longer than {MAX_SDP_BYTES} bytes")
        text = data.decode("utf-8", "surrogateescape")
    if "\x00" in text:
        raise SIPParseError("NUL character in SDP")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            raise SIPParseError("bare CR in SDP")
    lines: list = text.split("\n")
    if len(lines) > MAX_SDP_LINES and any(lines[MAX_SDP_LINES:]):
        raise SIPParseError(f"SDP has more than {MAX_SDP_LINES} lines")

    index = 0
    while index < len(lines) and not lines[index]:
        index += 1
    if index == len(lines):
        raise SIPParseError("empty SDP body")
    first = lines[index]
    if not first.startswith("v="):
        raise SIPParseError(f"SDP must begin with a v= line, got {_excerpt(first)}")
    if first[2:].strip() != "0":
        raise SIPParseError(f"unsupported SDP version {_excerpt(first[2:])}")

    origin: Origin | None = None
    session_name: str | None = None
    info: str | None = None
    uri: str | None = None
    emails: list[str] = []
    phones: list[str] = []
    connection: Connection | None = None
    bandwidths: list[str] = []
    times: list[str] = []
    timezones: list[str] = []
    key: str | None = None
    attributes: list[tuple[str, str | None]] = []
    unknown: list[str] = []
    media_list: list[MediaDescription] = []
    current: MediaDescription | None = None

    for line in lines[index + 1 :]:
        if not line:
            continue
        kind = line[0]
        if len(line) < 2 or line[1] != "=" or not ("a" <= kind <= "z"):
            raise SIPParseError(f"malformed SDP line {_excerpt(line)}: expected '<letter>=<value>'")
        value = line[2:]
        if kind == "a":
            name, colon, attr_value = value.partition(":")
            if not name:
                raise SIPParseError(f"empty attribute name in {_excerpt(line)}")
            (current.attributes if current is not None else attributes).append(
                (name, attr_value if colon else None)
            )
        elif kind == "m":
            current = _parse_m_line(MediaDescription, value)
            media_list.append(current)
        elif kind == "c":
            parsed = _parse_connection(Connection, value)
            if current is not None:
                current.connections.append(parsed)
            elif connection is not None:
                raise SIPParseError("duplicate session-level c= line")
            else:
                connection = parsed
        elif kind == "b":
            if ":" not in value:
                raise SIPParseError(
                    f"malformed b= line {_excerpt(line)}: expected '<bwtype>:<bandwidth>'"
                )
            (current.bandwidths if current is not None else bandwidths).append(value)
        elif current is not None:
            if kind == "i":
                if current.info is not None:
                    raise SIPParseError("duplicate media-level i= line")
                current.info = value
            elif kind == "k":
                if current.key is not None:
                    raise SIPParseError("duplicate media-level k= line")
                current.key = value
            elif kind in SESSION_ONLY_TYPES:
                raise SIPParseError(f"{kind}= line not allowed in a media section: {_excerpt(line)}")
            else:
                current.unknown.append(line)
        elif kind == "o":
            if origin is not None:
                raise SIPParseError("duplicate o= line")
            origin = _parse_origin(Origin, value)
        elif kind == "s":
            if session_name is not None:
                raise SIPParseError("duplicate s= line")
            session_name = value
        elif kind == "t":
            times.append(line)
        elif kind == "r":
            if not times:
                raise SIPParseError("r= line before any t= line")
            times.append(line)
        elif kind == "i":
            if info is not None:
                raise SIPParseError("duplicate session-level i= line")
            info = value
        elif kind == "u":
            if uri is not None:
                raise SIPParseError("duplicate u= line")
            uri = value
        elif kind == "e":
            emails.append(value)
        elif kind == "p":
            phones.append(value)
        elif kind == "z":
            timezones.append(value)
        elif kind == "k":
            if key is not None:
                raise SIPParseError("duplicate session-level k= line")
            key = value
        elif kind == "v":
            raise SIPParseError("duplicate v= line")
        else:
            unknown.append(line)

    if origin is None:
        raise SIPParseError("SDP has no o= line")
    # Positional, in the order of the fields (a call with 15 keywords costs parsing them by name):
    # origin, session_name, version, info, uri, emails, phones, connection, bandwidths, times,
    # timezones, key, attributes, media, unknown.
    return cls(
        origin,
        "-" if session_name is None else session_name,
        0,
        info,
        uri,
        emails,
        phones,
        connection,
        bandwidths,
        times or ["t=0 0"],
        timezones,
        key,
        attributes,
        media_list,
        unknown,
    )


def _parse_origin(cls, value: str) -> Origin:
    """Origin.parse (``cls`` is the class it was called on), called directly by _parse."""
    parts: list = value.split()
    if len(parts) != 6:
        raise SIPParseError(f"malformed o= line {_excerpt(value)}: expected 6 fields")
    if not _is_digits(parts[2]):
        raise SIPParseError(f"non-numeric o= sess-version {_excerpt(parts[2])}")
    return cls(parts[0], parts[1], int(parts[2]), parts[3], parts[4], parts[5])


def _parse_connection(cls, value: str) -> Connection:
    """Connection.parse (``cls`` is the class it was called on), called directly by _parse."""
    parts: list = value.split()
    if len(parts) != 3:
        raise SIPParseError(
            f"malformed c= line {_excerpt(value)}: expected '<nettype> <addrtype> <address>'"
        )
    nettype: str = parts[0]
    addrtype: str = parts[1]
    spec: str = parts[2]
    if nettype != "IN":
        raise SIPParseError(f"unsupported c= network type {_excerpt(nettype)}", status=488)
    if addrtype != "IP4" and addrtype != "IP6":
        raise SIPParseError(f"unsupported c= address type {_excerpt(addrtype)}", status=488)
    address, slash, suffix = spec.partition("/")
    ttl = count = None
    if slash:
        extras = suffix.split("/")
        x: str
        for x in extras:
            if not _is_digits(x):
                raise SIPParseError(f"malformed c= line {_excerpt(value)}: non-numeric ttl or count")
        if addrtype == "IP4" and len(extras) <= 2:
            ttl = extras[0]
            count = extras[1] if len(extras) == 2 else None
        elif addrtype == "IP6" and len(extras) == 1:
            count = extras[0]
        else:
            raise SIPParseError(f"malformed c= line {_excerpt(value)}: too many '/' fields")
    family = _address_family(address)
    if family and family != (4 if addrtype == "IP4" else 6):
        raise SIPParseError(f"c= address {_excerpt(address)} is not an {addrtype} address")
    return cls(nettype, addrtype, address, ttl, count)


def _parse_m_line(cls, value: str) -> MediaDescription:
    """MediaDescription.parse_m_line (``cls`` is the class it was called on), called directly by
    _parse."""
    parts: list = value.split()
    if len(parts) < 3:
        raise SIPParseError(
            f"malformed m= line {_excerpt(value)}: expected '<media> <port> <proto> <fmt>...'"
        )
    port_text, slash, count_text = parts[1].partition("/")
    port = _parse_port(port_text, "m= port")
    port_count = None
    if slash:
        if not _is_digits(count_text) or int(count_text) == 0:
            raise SIPParseError(f"invalid m= port count {_excerpt(count_text)}")
        port_count = int(count_text)
    return cls(parts[0], port, parts[2], parts[3:], port_count)
