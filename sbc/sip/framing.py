"""Cut SIP messages out of a byte stream (TCP, TLS): RFC 3261 §18.3 and RFC 5626 §3.5.1 keep-alives.

Sans-I/O like the rest of :mod:`sbc.sip`: feed it the bytes a connection delivered, get back
what it found. It never parses more than the header block it needs to find Content-Length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Largest message accepted by default. Kamailio's default TCP buffer is 64 KiB (BUF_SIZE) and
# SIPp's is similar; a real INVITE with SDP is 1-4 KiB, so 64 KiB leaves room for large
# multipart bodies while bounding what one connection can make us buffer.
DEFAULT_MAX_MESSAGE_SIZE = 65535

_CONTENT_LENGTH_RE = re.compile(rb"(?:^|\r?\n)(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I)


@dataclass(frozen=True, slots=True)
class FramedMessage:
    """One complete message's octets, as they will be handed to :func:`parse_message`."""

    data: bytes


@dataclass(frozen=True, slots=True)
class KeepAlivePing:
    """A double-CRLF ping (RFC 5626 §3.5.1): the peer expects a single CRLF pong."""


@dataclass(frozen=True, slots=True)
class FramingError:
    """The stream cannot be framed any further; the connection must be closed.

    ``status`` is the response worth sending first when a request's headers could be read
    (400 for a missing or bad Content-Length, 513 when the message is too large).
    """

    reason: str
    status: int
    head: bytes = b""


StreamEvent = FramedMessage | KeepAlivePing | FramingError


class StreamFramer:
    """Accumulates stream bytes and yields whole messages.

    After a :class:`FramingError` the framer stays broken (``broken`` is True) and ignores
    further input: a stream that lost framing cannot be resynchronised safely.
    """

    __slots__ = ("_buf", "max_size", "broken")

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self.max_size = max_size
        self.broken = False

    @property
    def buffered(self) -> int:
        """Octets held waiting for the rest of a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Add ``data``; return every complete message, ping or error now available, in order."""
        if self.broken:
            return []
        buf = self._buf
        buf += data
        events: list[StreamEvent] = []
        while buf:
            # Between messages: CRLFCRLF is a ping; a lone CRLF is a pong or padding (ignored).
            if buf.startswith(b"\r\n\r\n"):
                del buf[:4]
                events.append(KeepAlivePing())
                continue
            if buf.startswith(b"\r\n"):
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    break  # maybe the start of a ping: wait for more
                del buf[:2]
                continue
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_size:
                    return self._fail(events, "headers exceed the maximum message size", 513)
                break
            head = bytes(buf[:end])
            m = _CONTENT_LENGTH_RE.search(head)
            if m is None:
                return self._fail(events, "missing Content-Length on a stream transport", 400, head)
            raw = m.group(1).strip()
            if not raw.isdigit():
                return self._fail(events, f"bad Content-Length {raw[:20]!r}", 400, head)
            total = end + 4 + int(raw)
            if total > self.max_size:
                return self._fail(events, "message exceeds the maximum message size", 513, head)
            if len(buf) < total:
                break
            events.append(FramedMessage(bytes(buf[:total])))
            del buf[:total]
        return events

    def _fail(
        self, events: list[StreamEvent], reason: str, status: int, head: bytes = b""
    ) -> list[StreamEvent]:
        self.broken = True
        self._buf.clear()
        events.append(FramingError(reason, status, head))
        return events


__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FramedMessage",
    "FramingError",
    "KeepAlivePing",
    "StreamEvent",
    "StreamFramer",
]
