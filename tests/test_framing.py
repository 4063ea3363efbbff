"""Stream framing: Content-Length framing, keep-alives, limits, split deliveries."""

from __future__ import annotations

from sbc.sip.framing import FramedMessage, FramingError, KeepAlivePing, StreamFramer

MSG = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK1\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)


def test_one_message() -> None:
    assert StreamFramer().feed(MSG) == [FramedMessage(MSG)]


def test_byte_by_byte() -> None:
    f = StreamFramer()
    events = []
    for i in range(len(MSG)):
        events += f.feed(MSG[i : i + 1])
    assert events == [FramedMessage(MSG)]
    assert f.buffered == 0


def test_two_messages_in_one_read_and_compact_length() -> None:
    compact = MSG.replace(b"Content-Length", b"l")
    assert StreamFramer().feed(MSG + compact) == [FramedMessage(MSG), FramedMessage(compact)]


def test_keepalive_ping_and_pong() -> None:
    f = StreamFramer()
    assert f.feed(b"\r\n\r\n") == [KeepAlivePing()]
    assert f.feed(b"\r\n") == []  # a pong (or half a ping): nothing yet
    assert f.feed(MSG) == [FramedMessage(MSG)]
    assert f.feed(b"\r\n\r\n" + MSG) == [KeepAlivePing(), FramedMessage(MSG)]


def test_missing_content_length_breaks_the_stream() -> None:
    f = StreamFramer()
    (err,) = f.feed(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n")
    assert isinstance(err, FramingError) and err.status == 400 and err.head.startswith(b"OPTIONS")
    assert f.broken and f.feed(MSG) == []


def test_negative_content_length() -> None:
    (err,) = StreamFramer().feed(MSG.replace(b"Content-Length: 5", b"Content-Length: -999"))
    assert isinstance(err, FramingError) and "Content-Length" in err.reason


def test_oversize_message_is_refused_with_513() -> None:
    f = StreamFramer(max_size=2000)
    (err,) = f.feed(MSG.replace(b"Content-Length: 5", b"Content-Length: 5000"))
    assert isinstance(err, FramingError) and err.status == 513


def test_endless_headers_are_bounded() -> None:
    f = StreamFramer(max_size=2000)
    events = []
    for _ in range(100):
        events += f.feed(b"X-Junk: " + b"a" * 50 + b"\r\n")
    assert len(events) == 1 and isinstance(events[0], FramingError) and events[0].status == 513
