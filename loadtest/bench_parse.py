"""Parse and serialise rates for a realistic INVITE with SDP and its 200 OK.

Prints one JSON object. Each figure is the median of ``--repeats`` runs of ``--n``
operations, timed in this process's CPU time (one core), so a busy neighbour on this shared
machine costs spread, not a different median. Run: ``python -m loadtest parse``.

What is measured, so the figures mean what they say:
- ``invite_parse_per_s``: :func:`parse_message` plus reading the hot fields a transaction and
  dialog lookup need (Call-ID, CSeq, top Via branch, From/To tags) — the SBC's per-message path.
- ``invite_full_parse_per_s``: the same plus :meth:`validate`, which parses every header the SBC
  interprets (Via list, From/To/Contact name-addrs, Route, Request-URI); done for new requests.
- ``invite_serialise_per_s``: :meth:`to_bytes` of a parsed INVITE (header list to wire bytes).
- the same three for a 200 OK with SDP.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

from sbc.sip.message import parse_message

SDP = (
    "v=0\r\n"
    "o=carrier 1733000000 1733000000 IN IP4 203.0.113.10\r\n"
    "s=-\r\n"
    "c=IN IP4 203.0.113.10\r\n"
    "t=0 0\r\n"
    "m=audio 16384 RTP/AVP 0 8 18 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:18 G729/8000\r\n"
    "a=fmtp:18 annexb=no\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
)

INVITE = (
    "INVITE sip:+14155550100@198.51.100.20:5060;user=phone SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f60718;rport\r\n"
    "Max-Forwards: 69\r\n"
    "Contact: <sip:+12125550199@203.0.113.10:5060;transport=udp>\r\n"
    "To: <sip:+14155550100@198.51.100.20;user=phone>\r\n"
    'From: "NEW YORK NY" <sip:+12125550199@203.0.113.10;user=phone>;tag=9fxced76sl\r\n'
    "Call-ID: 3848276298220188511@203.0.113.10\r\n"
    "CSeq: 1 INVITE\r\n"
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, UPDATE, PRACK, INFO\r\n"
    "Supported: 100rel, timer, replaces\r\n"
    "Session-Expires: 1800;refresher=uac\r\n"
    "Min-SE: 90\r\n"
    "P-Asserted-Identity: <sip:+12125550199@203.0.113.10;user=phone>\r\n"
    "User-Agent: CarrierSwitch 9.2\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP)}\r\n"
    "\r\n" + SDP
).encode()

OK_200 = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f60718;rport=5060;received=203.0.113.10\r\n"
    "Record-Route: <sip:198.51.100.20;lr>\r\n"
    "Contact: <sip:198.51.100.20:5060;transport=udp>\r\n"
    "To: <sip:+14155550100@198.51.100.20;user=phone>;tag=as7d8f9a0b\r\n"
    'From: "NEW YORK NY" <sip:+12125550199@203.0.113.10;user=phone>;tag=9fxced76sl\r\n'
    "Call-ID: 3848276298220188511@203.0.113.10\r\n"
    "CSeq: 1 INVITE\r\n"
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, UPDATE, PRACK, INFO\r\n"
    "Supported: 100rel, timer\r\n"
    "Session-Expires: 1800;refresher=uac\r\n"
    "Require: timer\r\n"
    "Server: sbc/0.1\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP)}\r\n"
    "\r\n" + SDP
).encode()


def _hot(data: bytes):
    m = parse_message(data)
    return m.call_id, m.cseq, m.branch, m.from_tag, m.to_tag


def _full(data: bytes):
    return parse_message(data).validate()


def _rate(fn, arg, n: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(n):
            fn(arg)
        runs.append(n / (time.process_time() - t0))
    return statistics.median(runs)


def run(n: int = 20000, repeats: int = 5) -> dict:
    """Measure and return the figures (see the module docstring)."""
    invite = parse_message(INVITE)
    ok = parse_message(OK_200)
    assert invite.to_bytes() == INVITE and ok.to_bytes() == OK_200  # serialise is faithful

    def ser(msg):
        msg._cache.clear()
        return msg.to_bytes()

    _rate(_hot, INVITE, n // 4, 1)  # warm up
    return {
        "bench": "parse",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "n": n,
        "repeats": repeats,
        "invite_bytes": len(INVITE),
        "invite_parse_per_s": round(_rate(_hot, INVITE, n, repeats)),
        "invite_full_parse_per_s": round(_rate(_full, INVITE, n, repeats)),
        "invite_serialise_per_s": round(_rate(ser, invite, n, repeats)),
        "ok200_parse_per_s": round(_rate(_hot, OK_200, n, repeats)),
        "ok200_full_parse_per_s": round(_rate(_full, OK_200, n, repeats)),
        "ok200_serialise_per_s": round(_rate(ser, ok, n, repeats)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--n", type=int, default=20000, help="operations per timed run")
    p.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    a = p.parse_args(argv)
    print(json.dumps(run(a.n, a.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
