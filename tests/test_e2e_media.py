"""Media through a running ``sbc run``, end to end: SIPp talks RTP, the SBC anchors it, the test listens.

A carrier SIPp (127.0.0.2) calls a DID that the SBC delivers to a PBX SIPp (127.0.0.3). The
caller plays G.711 RTP from a pcap this module writes (SIPp ``play_pcap_audio``), the callee
echoes it (``-rtp_echo``). What is checked, and how:

* **Signalling** (SIPp message logs): the SDP each endpoint received names the SBC's relay
  address and a port of its relay range, never the other endpoint's address or port.
* **Packets** (a packet socket on the loopback interface, filtered in the kernel to the ports
  involved): every RTP packet went endpoint -> relay -> other endpoint, in both directions,
  from the relay ports the SDP named, byte for byte unchanged, and none went directly between
  the endpoints. SIPp 3.6 keeps no RTP counters in its statistics, and the caller never reads
  its media socket, so the capture is how the test sees what arrived.
* **CDR** (the store ``sbc run`` wrote): the relay's per-direction packet counts match what was
  played, and loss, jitter and MOS are present and sane.

Then the cases the relay must get right in a call: media timeout (BYE both sides, CDR reason),
hold across the short timeout, RFC 4733 digits, early media, declined (port 0) streams, IPv6.
The media-timeout clock restarts at the answer and at every hold change: a silent call answered
after ringing longer than the timeout is still hung up after it, and a call resumed after a silent
hold is not hung up at once.

DTMF digits go into the CDR (``media["dtmf"]``) and the counter ``sbc_dtmf_events_total``; the
once-per-event test also runs the SBC's app in-process to watch the relay's events themselves.

The pcaps are written here, not taken from Debian's sip-tester (/usr/share/sip-tester): its
``g711a.pcap`` is PCMA while the scenarios offer PCMU, and each ``dtmf_2833_*.pcap`` holds one
digit cut from one capture, with that capture's timestamp: one digit played twice, or digits
out of the capture's order, repeat or go back in timestamp, which an RFC 4733 receiver (the
relay too) takes for a late retransmission of an event already reported.

``play_pcap_audio`` sends through a raw socket, and the capture is a packet socket: both need
root (CAP_NET_RAW); without it these tests skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from loadtest.ports import free_media_port, free_port
from rtp_relay_ext import LEG_A, LEG_B, DtmfEvent, RelayEngine
from sbc.app import SbcApp
from sbc.config import load_settings
from sbc.media.manager import CallMedia, MediaManager
from sbc.store.cdr import CdrRecord
from sbc.store.store import Store
from sbc.transport.steering import steering_available, worker_for_call_id
from tests.sbcproc import SbcProcess
from tests.sipp import (
    REPO,
    SIPP,
    LoggedMessage,
    SippProcess,
    SippResult,
    run_sipp,
    scenario_path,
    start_sipp,
    start_uas,
)


def _raw_sockets_allowed() -> bool:
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except (PermissionError, AttributeError, OSError):
        return False
    return True


#: The marks of every test here that runs SIPp with media (all but the manager's unit test).
E2E_MARKS = (
    pytest.mark.sipp,
    pytest.mark.skipif(SIPP is None, reason="SIPp (Debian sip-tester) is installed by scripts/test.sh"),
    pytest.mark.skipif(
        not _raw_sockets_allowed(),
        reason="play_pcap_audio and the loopback capture need raw sockets (root / CAP_NET_RAW)",
    ),
)
pytestmark = pytest.mark.timeout(90)


def e2e(test):
    """Mark ``test`` as an end-to-end media test (see :data:`E2E_MARKS`)."""
    for mark in E2E_MARKS:
        test = mark(test)
    return test


CARRIER = "127.0.0.2"
PBX = "127.0.0.3"
SBC_IP = "127.0.0.1"


def _kernel_status() -> str | None:
    """None if the relay's kernel fast path can attach on SBC_IP here, else why not."""
    with RelayEngine(SBC_IP, 49990, 49999, start=False, kernel="auto") as e:
        return None if e.kernel else e.kernel_status


KERNEL_STATUS = _kernel_status()
DID = "+14155550100"
CALLER = "+12125550199"

# -- RTP and pcap ---------------------------------------------------------------------------------

#: RFC 3551: PCMU is static payload type 0 with an 8 kHz clock; the scenarios' SDP offers it.
PCMU = 0
CLOCK_RATE = 8000
#: 20 ms packets (a=ptime:20 in the scenarios), 160 samples of one byte each.
PTIME_S = 0.02
SAMPLES_PER_PACKET = int(CLOCK_RATE * PTIME_S)
#: The telephone-event payload type the scenarios' SDP names (a=rtpmap:101 telephone-event/8000).
TELEPHONE_EVENT_PT = 101
#: RFC 4733 2.3: event codes of the DTMF digits.
DTMF_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}
#: RFC 4733 2.5.1.4: the final packet of an event is sent three times in all.
DTMF_END_REPEATS = 3
#: pcap link type of the files written here (DLT_EN10MB), which SIPp's pcap reader takes.
DLT_EN10MB = 1


def _ulaw(sample: int) -> int:
    """One 16-bit linear sample as a G.711 mu-law byte (ITU-T G.711, the classic Sun algorithm)."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), clip) + bias
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _tone(samples: int, start: int, freq: float = 440.0, amplitude: int = 8000) -> bytes:
    return bytes(
        _ulaw(int(amplitude * math.sin(2 * math.pi * freq * (start + i) / CLOCK_RATE)))
        for i in range(samples)
    )


def rtp_packet(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    """An RTP v2 packet (RFC 3550 5.1) without CSRCs or extensions."""
    return (
        struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
        + payload
    )


@dataclass
class RtpStream:
    """Packets to play, each with its send time in seconds from the start of the pcap."""

    packets: list[tuple[float, bytes]] = field(default_factory=list)
    ssrc: int = 0
    seq: int = 0
    ts: int = 0
    at: float = 0.0

    def audio(self, count: int) -> RtpStream:
        """Append ``count`` 20 ms PCMU packets of a tone; the first one of a talk spurt is marked."""
        for i in range(count):
            payload = _tone(SAMPLES_PER_PACKET, self.ts)
            self.packets.append(
                (self.at, rtp_packet(PCMU, self.seq, self.ts, self.ssrc, payload, marker=i == 0))
            )
            self.seq += 1
            self.ts += SAMPLES_PER_PACKET
            self.at += PTIME_S
        return self

    def digit(self, digit: str, updates: int = 5) -> RtpStream:
        """Append one RFC 4733 event: ``updates`` packets 20 ms apart (the first marked), all
        with the event's start timestamp and a growing duration, the last with the E bit and
        sent three times (RFC 4733 2.5.1.4); the copies share its sequence number, as in
        sip-tester's dtmf_2833_*.pcap captures."""
        event, volume = DTMF_CODES[digit], 10
        for i in range(1, updates + 1):
            duration = i * SAMPLES_PER_PACKET
            end = i == updates
            payload = struct.pack("!BBH", event, (0x80 if end else 0) | volume, duration)
            repeats = DTMF_END_REPEATS if end else 1
            for _ in range(repeats):
                self.packets.append(
                    (self.at, rtp_packet(TELEPHONE_EVENT_PT, self.seq, self.ts, self.ssrc, payload, i == 1))
                )
            self.seq += 1
            self.at += PTIME_S
        self.ts += updates * SAMPLES_PER_PACKET
        return self

    @property
    def duration_s(self) -> float:
        return self.at

    def unique(self, pt: int | None = None) -> list[bytes]:
        """The distinct packets (RFC 4733 repeats once), optionally only those of payload type ``pt``."""
        out = list(dict.fromkeys(data for _, data in self.packets))
        return [d for d in out if pt is None or d[1] & 0x7F == pt]


def new_stream() -> RtpStream:
    """A stream with a random SSRC, sequence number and timestamp, as RFC 3550 5.1 wants."""
    rnd = random.Random()
    return RtpStream(ssrc=rnd.getrandbits(32), seq=rnd.getrandbits(15), ts=rnd.getrandbits(31))


def write_pcap(path: Path, stream: RtpStream, dport: int = 16384) -> Path:
    """Write ``stream`` as a pcap of Ethernet/IPv4/UDP frames (what SIPp's ``play_pcap_audio``
    reads). The addresses and ports in the file do not matter: SIPp sends each packet from its
    own media address to the one the far SDP named, keeping only the UDP payload and timing."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, DLT_EN10MB))
    base = 1_700_000_000.0
    for at, payload in stream.packets:
        udp = struct.pack("!HHHH", 16384, dport, 8 + len(payload), 0) + payload
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, socket.IPPROTO_UDP, 0,
            socket.inet_aton("192.0.2.1"), socket.inet_aton("192.0.2.2"),
        ) + udp  # fmt: skip
        frame = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip
        t = base + at
        sec = int(t)
        out += struct.pack("<IIII", sec, int(round((t - sec) * 1e6)), len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))
    return path


def with_pcap(name: str, dest_dir: Path, **pcaps: Path) -> Path:
    """The packaged scenario ``name`` with each ``play_pcap_audio="KEY.pcap"`` pointing at the
    absolute path given as ``KEY=path`` (SIPp reads the file relative to its working directory
    when it loads the scenario, and every SIPp run here gets a fresh directory)."""
    text = scenario_path(name).read_text()
    for key, path in pcaps.items():
        needle = f'play_pcap_audio="{key}.pcap"'
        assert needle in text, f"{name} plays no {key}.pcap"
        text = text.replace(needle, f'play_pcap_audio="{path}"')
    out = dest_dir / f"{name}.xml"
    out.write_text(text)
    return out


# -- capture on the loopback interface ------------------------------------------------------------

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
#: Ask for the kernel's arrival time of each packet (struct timespec in an SCM_TIMESTAMPNS
#: control message): the test's thread may read late on a loaded machine, the kernel stamps
#: on arrival, and the timeout tests compare packet times with SIPp's log.
SO_TIMESTAMPNS = SCM_TIMESTAMPNS = 35
#: Packet socket pkttype of a packet delivered to this host; loopback traffic is seen twice,
#: once as PACKET_OUTGOING (4) and once as PACKET_HOST (0): only arrivals are kept.
PACKET_HOST = 0
#: Kernel buffer for the capture socket: a few seconds of the packets it accepts even when
#: the test's thread is slow to read on a loaded machine.
CAPTURE_RCVBUF = 4 << 20


def _bpf_udp_ports(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """A classic BPF program accepting IPv4/IPv6 UDP packets on the loopback interface (which
    has a 14-byte Ethernet-like header) whose source or destination port lies in one of
    ``ranges``; everything else is dropped in the kernel, so other tests' traffic on the
    shared machine never reaches Python."""
    ranges = list(ranges)
    prog: list[list] = []  # [code, jt, jf, k], jt/jf may be labels until resolved
    labels: dict[str, int] = {}

    def op(code: int, k: int = 0, jt: object = 0, jf: object = 0) -> None:
        prog.append([code, jt, jf, k])

    def label(name: str) -> None:
        labels[name] = len(prog)

    ld_h, ld_b, ld_h_ind, ldx_msh = 0x28, 0x30, 0x48, 0xB1
    jeq, jge, jgt, jset, ret = 0x15, 0x35, 0x25, 0x45, 0x06

    def port_checks(load_code: int, offset: int) -> None:
        op(load_code, offset)
        for i, (lo, hi) in enumerate(ranges):
            nxt = f"r{len(prog)}_{i}"
            op(jge, lo, 0, nxt)
            op(jgt, hi, nxt, "accept")
            label(nxt)

    op(ld_h, 12)
    op(jeq, 0x0800, "v4", 0)
    op(jeq, 0x86DD, "v6", "drop")
    label("v4")
    op(ld_b, 23)
    op(jeq, socket.IPPROTO_UDP, 0, "drop")
    op(ld_h, 20)
    op(jset, 0x1FFF, "drop", 0)  # a non-first fragment has no UDP header
    op(ldx_msh, 14)
    port_checks(ld_h_ind, 14)
    port_checks(ld_h_ind, 16)
    op(ret, 0)
    label("v6")
    op(ld_b, 20)
    op(jeq, socket.IPPROTO_UDP, 0, "drop")
    port_checks(ld_h, 54)
    port_checks(ld_h, 56)
    label("drop")
    op(ret, 0)
    label("accept")
    op(ret, 0xFFFF)
    out = []
    for pc, (code, jt, jf, k) in enumerate(prog):
        jt = labels[jt] - pc - 1 if isinstance(jt, str) else jt
        jf = labels[jf] - pc - 1 if isinstance(jf, str) else jf
        assert 0 <= jt < 256 and 0 <= jf < 256, "BPF jump out of range"
        out.append((code, jt, jf, k))
    return out


@dataclass(frozen=True)
class Captured:
    """One UDP datagram that arrived on the loopback interface."""

    at: float  # arrival, Unix time (the kernel's stamp)
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes

    @property
    def pt(self) -> int:
        return self.payload[1] & 0x7F


class LoopbackCapture:
    """Record the UDP datagrams on ``lo`` whose source or destination port is in ``ranges``,
    from a thread, until :meth:`stop`. Use as a context manager."""

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        self.packets: list[Captured] = []
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        prog = _bpf_udp_ports(ranges)
        buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
        self._keep = buf
        fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CAPTURE_RCVBUF)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # Bound only now: with protocol 0 the socket received nothing before its filter was on.
        self.sock.bind(("lo", ETH_P_ALL))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.05)
            if ready:
                self._drain()
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                frame, ancillary, _, addr = self.sock.recvmsg(65535, 64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if addr[2] != PACKET_HOST:
                continue
            now = time.time()
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", data[:16])
                    now = sec + nsec / 1e9
            if frame[12:14] == b"\x08\x00":
                ihl = (frame[14] & 0x0F) * 4
                src_ip, dst_ip = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
                udp = frame[14 + ihl :]
            else:
                src_ip = socket.inet_ntop(socket.AF_INET6, frame[22:38])
                dst_ip = socket.inet_ntop(socket.AF_INET6, frame[38:54])
                udp = frame[54:]
            sport, dport = struct.unpack("!HH", udp[:4])
            self.packets.append(Captured(now, (src_ip, sport), (dst_ip, dport), udp[8:]))

    def stop(self) -> list[Captured]:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(5)
            self.sock.close()
        return self.packets

    def flow(self, src: tuple[str, int], dst: tuple[str, int]) -> list[Captured]:
        """The datagrams that went from ``src`` to ``dst`` (address, port), in arrival order."""
        return [p for p in self.packets if p.src == src and p.dst == dst]

    def between(self, a: str | tuple[str, int], b: str | tuple[str, int]) -> list[Captured]:
        """Datagrams exchanged directly between ``a`` and ``b`` (an address, or address and port)."""

        def match(end: tuple[str, int], want: str | tuple[str, int]) -> bool:
            return end == want if isinstance(want, tuple) else end[0] == want

        return [
            p
            for p in self.packets
            if (match(p.src, a) and match(p.dst, b)) or (match(p.src, b) and match(p.dst, a))
        ]

    def __enter__(self) -> LoopbackCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- ports, SBC, CDRs -----------------------------------------------------------------------------


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def relay_port_range() -> tuple[int, int]:
    """A block of RTP ports for one SBC, outside the default 20000-39999 that other SBCs on this
    shared machine use; the relay skips ports another process holds."""
    lo = random.randrange(40000, 45800, 64)
    return lo, lo + 63


@dataclass
class MediaSbc:
    """A running ``sbc run`` with media anchoring, its store and the ports it may relay on."""

    proc: SbcProcess
    ip: str
    port: int
    rtp_ports: tuple[int, int]
    pbx_port: int
    db_url: str

    @property
    def target(self) -> str:
        return _hostport(self.ip, self.port)

    def stop(self) -> int:
        """SIGTERM and wait for the clean exit (0: queued CDRs written). An SBC still running
        after :data:`SBC_STOP_TIMEOUT_S` gets SIGABRT, so that Python's faulthandler (on in
        its environment) writes every thread's stack to ``sbc.log`` before it dies; then
        SIGKILL. Returns the exit status (negative: the signal that ended it)."""
        p = self.proc.proc
        for sig in (signal.SIGTERM, signal.SIGABRT, signal.SIGKILL):
            if p.poll() is not None:
                break
            p.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(SBC_STOP_TIMEOUT_S)
        return p.wait()

    def cdrs(self) -> list[CdrRecord]:
        """Every CDR in the store, newest first (stop the SBC first: it writes them in batches)."""

        async def read() -> list[CdrRecord]:
            store = await Store.open(self.db_url, create=False)
            try:
                return await store.list_cdrs()
            finally:
                await store.close()

        return asyncio.run(read())


def provision_yaml(carrier: str, pbx: str, pbx_port: int) -> str:
    """Carrier ``carrier`` (recognised by that one address) calls :data:`DID`, which belongs to a
    customer trunk delivering to the PBX at ``pbx:pbx_port``. No OPTIONS probing: the callee
    SIPp would count each probe as a call."""
    cidr = f"{carrier}/128" if ":" in carrier else f"{carrier}/32"
    return f"""carriers:
  - name: e2e-carrier
    gateways: [{{host: "{carrier}", port: 5060, transport: udp}}]
    inbound_cidrs: ["{cidr}"]
customers:
  - name: e2e
    trunks:
      - name: pbx
        allowed_cidrs: ["{pbx}/{cidr.rsplit("/", 1)[1]}"]
        targets: [{{uri: "sip:{_hostport(pbx, pbx_port)}"}}]
numbers:
  - {{e164: "{DID}", customer: e2e, trunk: pbx}}
routes: []
"""


#: Settings of the SBC under test: a short media timeout so the timeout tests take seconds,
#: and a hold timeout far longer than any test.
MEDIA_TIMEOUT_S = 2.0
MEDIA_HOLD_TIMEOUT_S = 60.0
SBC_START_TIMEOUT_S = 15.0
#: A clean stop takes well under a second; the SBC waits at most 5 s for the store.
SBC_STOP_TIMEOUT_S = 10.0


def provision(tmp_path: Path, carrier: str, pbx: str, pbx_port: int) -> str:
    """Apply :func:`provision_yaml` with ``sbc provision`` to a fresh SQLite store; its URL."""
    db_url = f"sqlite:///{tmp_path / 'sbc.db'}"
    path = tmp_path / "provision.yaml"
    path.write_text(provision_yaml(carrier, pbx, pbx_port))
    prov = subprocess.run(
        [sys.executable, "-m", "sbc", "provision", str(path), "--db", db_url],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert prov.returncode == 0, prov.stderr
    return db_url


def start_media_sbc(tmp_path: Path, ip: str = SBC_IP, carrier: str = CARRIER, pbx: str = PBX,
                    env: dict[str, str] | None = None) -> MediaSbc:  # fmt: skip
    """Provision carrier -> DID -> PBX trunk (the PBX's SIP port is picked now, the callee SIPp
    binds it later) and start ``sbc run`` on ``ip`` with media anchored on ``ip``."""
    pbx_port = free_port(pbx)
    db_url = provision(tmp_path, carrier, pbx, pbx_port)
    port = free_port(ip)
    rtp = relay_port_range()
    log_path = tmp_path / "sbc.log"
    args = [
        sys.executable, "-m", "sbc", "run",
        "--sip-listen", f"udp:{_hostport(ip, port)}", "--sip-listen", f"tcp:{_hostport(ip, port)}",
        "--api-listen", "", "--db", db_url, "--rtp-ip", ip, "--rtp-ports", f"{rtp[0]}-{rtp[1]}",
    ]  # fmt: skip
    full_env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PYTHONFAULTHANDLER": "1",
        "SBC_MEDIA_TIMEOUT": str(MEDIA_TIMEOUT_S),
        "SBC_MEDIA_HOLD_TIMEOUT": str(MEDIA_HOLD_TIMEOUT_S),
        # The packet capture that proves each hop sees what the relay threads send; packets the
        # kernel fast path relays are rewritten after the capture point and never sent again,
        # so these tests run the relay without it (test_kernel_fast_path_carries_the_audio on).
        "SBC_RTP_KERNEL_FORWARD": "off",
        **(env or {}),
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=tmp_path)
    sbc = MediaSbc(SbcProcess(proc, ip, port, log_path), ip, port, rtp, pbx_port, db_url)
    deadline = time.monotonic() + SBC_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sbc exited with {proc.returncode}:\n{sbc.proc.log()}")
        try:
            with socket.create_connection((ip, port), timeout=0.2):
                return sbc
        except OSError:
            time.sleep(0.05)
    sbc.stop()
    raise RuntimeError(f"sbc did not start:\n{sbc.proc.log()}")


@pytest.fixture
def sbc(tmp_path) -> Iterator[MediaSbc]:
    proc = start_media_sbc(tmp_path)
    yield proc
    proc.stop()


# -- reading SDP out of SIPp's message logs -------------------------------------------------------


@dataclass(frozen=True)
class SdpMedia:
    media: str
    address: str
    port: int
    direction: str


def sdp_media(msg: LoggedMessage) -> list[SdpMedia]:
    """Each m= line of a logged message's SDP with its effective address and direction."""
    body = msg.body
    session_c = re.search(r"^c=IN IP[46] (\S+)", body.split("\nm=", 1)[0], re.M)
    out = []
    for block in re.split(r"\n(?=m=)", body)[1:]:
        m = re.match(r"m=(\w+) (\d+) ", block)
        assert m, block
        c = re.search(r"^c=IN IP[46] (\S+)", block, re.M) or session_c
        d = re.search(r"^a=(sendrecv|sendonly|recvonly|inactive)\s*$", block, re.M)
        out.append(SdpMedia(m[1], c[1] if c else "", int(m[2]), d[1] if d else "sendrecv"))
    return out


def _answer_to_invite(messages: list[LoggedMessage], status: int = 200) -> list[LoggedMessage]:
    """The ``status`` responses received to INVITEs, one per CSeq (a retransmitted 200, when the
    ACK was slow on a loaded machine, is logged again)."""
    out: dict[str, LoggedMessage] = {}
    for m in messages:
        if m.direction == "received" and m.status == status and m.headers("CSeq")[0].endswith("INVITE"):
            out.setdefault(m.headers("CSeq")[0], m)
    return list(out.values())


def _requests(result: SippResult, method: str) -> list[LoggedMessage]:
    """The ``method`` requests ``result``'s SIPp received, one per CSeq (retransmissions once)."""
    out: dict[str, LoggedMessage] = {}
    for m in result.received(method):
        out.setdefault(m.headers("CSeq")[0], m)
    return list(out.values())


def _epoch(msg: LoggedMessage) -> float:
    """When SIPp logged ``msg``, as Unix time (SIPp writes local time with microseconds)."""
    return datetime.strptime(msg.timestamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def _echo_args(ip: str, media_port: int) -> list[str]:
    return ["-mi", ip, "-mp", str(media_port), "-rtp_echo"]


def _play_args(ip: str, media_port: int) -> list[str]:
    return ["-mi", ip, "-mp", str(media_port)]


# -- the tests ------------------------------------------------------------------------------------

#: Share of the played packets that must be seen on every hop: loopback loses nothing, but a
#: loaded machine can drop from a full socket buffer, and the issue asks for >= 90 %.
MIN_DELIVERED = 0.9


def _hold_ms(stream: RtpStream, extra_s: float = 0.8) -> int:
    """How long the caller keeps the call up after starting the play: the pcap plus the echo's
    way back."""
    return int((stream.duration_s + extra_s) * 1000)


@dataclass
class CallRun:
    """One call played through the SBC (or directly), with what both SIPps and the capture saw."""

    uac: SippResult
    uas: SippResult
    cap: LoopbackCapture
    caller_at: tuple[str, int]  # the caller's media address and port
    callee_at: tuple[str, int]

    def legs(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """The relay's (address, port) facing the caller and facing the callee, from the SDP of
        the caller's first 200 (or 183) and of the callee's first INVITE."""
        answers = _answer_to_invite(self.uac.messages()) or _answer_to_invite(self.uac.messages(), 183)
        a = sdp_media(answers[0])[0]
        b = sdp_media(_requests(self.uas, "INVITE")[0])[0]
        return (a.address, a.port), (b.address, b.port)

    def hops(self) -> dict[str, list[Captured]]:
        """The datagrams of the four hops of an anchored call, caller -> relay -> callee and back."""
        leg_a, leg_b = self.legs()
        return {
            "caller -> relay": self.cap.flow(self.caller_at, leg_a),
            "relay -> callee": self.cap.flow(leg_b, self.callee_at),
            "callee -> relay": self.cap.flow(self.callee_at, leg_b),
            "relay -> caller": self.cap.flow(leg_a, self.caller_at),
        }


def run_call(
    tmp_path: Path,
    target: str,
    uac_scenario: str | Path,
    uas_scenario: str | Path,
    *,
    uas_port: int,
    hold_ms: int,
    uas_hold_ms: int = 0,
    caller_echo: bool = False,
    callee_echo: bool = True,
    uac_keys: dict[str, str] | None = None,
    capture_ranges: Iterable[tuple[int, int]] = (),
    caller_ip: str = CARRIER,
    callee_ip: str = PBX,
    timeout_s: float = 15.0,
    uac_extra: Sequence[str] = (),
) -> CallRun:
    """Start the callee SIPp on ``callee_ip:uas_port``, run the caller SIPp from ``caller_ip`` at
    ``target`` to the end, and capture the media ports of both and ``capture_ranges`` meanwhile.
    The one echoing (``-rtp_echo``) sends back whatever reaches its media port; the other's
    media port only receives (SIPp binds it but never reads it)."""
    caller_at = (caller_ip, free_media_port(caller_ip))
    callee_at = (callee_ip, free_media_port(callee_ip))
    ranges = [*capture_ranges, (caller_at[1], caller_at[1] + 3), (callee_at[1], callee_at[1] + 3)]
    with LoopbackCapture(ranges) as cap:
        with _start_callee(
            uas_scenario, callee_ip, uas_port, hold_ms=uas_hold_ms, timeout_s=timeout_s + 5, workdir=tmp_path,
            extra=_echo_args(*callee_at) if callee_echo else _play_args(*callee_at),
        ) as uas:  # fmt: skip
            uac = run_sipp(
                uac_scenario, target, local_ip=caller_ip, local_port=free_port(caller_ip), service=DID,
                caller=CALLER, hold_ms=hold_ms, keys=uac_keys, timeout_s=timeout_s, workdir=tmp_path,
                extra=[*(_echo_args(*caller_at) if caller_echo else _play_args(*caller_at)), *uac_extra],
            )  # fmt: skip
            uas_result = uas.wait(10)
        time.sleep(0.2)  # the last echoes still on their way
    return CallRun(uac, uas_result, cap, caller_at, callee_at)


def _start_callee(scenario: str | Path, ip: str, port: int, **kwargs) -> SippProcess:
    """:func:`tests.sipp.start_uas`, which checks the bind in /proc/net/udp (IPv4 only); for an
    IPv6 address the bind is checked in /proc/net/udp6 here."""
    if ":" not in ip:
        return start_uas(scenario, ip, port, **kwargs)
    proc = start_sipp(scenario, None, local_ip=ip, local_port=port, rate=None, caller=None, **kwargs)
    packed = socket.inet_pton(socket.AF_INET6, ip)
    want = (
        "".join(f"{int.from_bytes(packed[i : i + 4], 'little'):08X}" for i in range(0, 16, 4))
        + f":{port:04X}"
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not proc.running():
            raise RuntimeError(f"SIPp UAS exited at start:\n{proc.wait(0).explain()}")
        with open("/proc/net/udp6") as f:
            if any(line.split()[1] == want for line in f.readlines()[1:]):
                return proc
        time.sleep(0.02)
    raise RuntimeError(f"SIPp UAS did not bind {ip}:{port}:\n{proc.stop().explain()}")


@e2e
def test_audio_flows_both_ways_through_the_relay(tmp_path, sbc) -> None:
    stream = new_stream().audio(100)
    scenario = with_pcap("uac_audio", tmp_path, uac_audio=write_pcap(tmp_path / "audio.pcap", stream))
    call = run_call(tmp_path, sbc.target, scenario, "uas_answer", uas_port=sbc.pbx_port,
                    hold_ms=_hold_ms(stream), capture_ranges=[sbc.rtp_ports])  # fmt: skip
    assert sbc.stop() == 0, sbc.proc.log()
    assert call.uac.returncode == 0, call.uac.explain()
    assert call.uas.returncode == 0, call.uas.explain()

    # What each side was told: the relay, never the other endpoint.
    (answer,) = _answer_to_invite(call.uac.messages())
    (offer,) = _requests(call.uas, "INVITE")
    (to_caller,) = sdp_media(answer)
    (to_callee,) = sdp_media(offer)
    for seen in (to_caller, to_callee):
        assert seen.address == SBC_IP and sbc.rtp_ports[0] <= seen.port <= sbc.rtp_ports[1], seen
    assert to_caller.port != to_callee.port
    assert PBX not in answer.body and CARRIER not in offer.body  # c=, o=, a=rtcp: all rewritten

    played = stream.unique()
    hops = call.hops()
    counts = {hop: len(pkts) for hop, pkts in hops.items()}
    assert all(n >= MIN_DELIVERED * len(played) for n in counts.values()), counts
    # The relay forwards RTP untouched: every packet on every hop is one the caller played.
    for hop, pkts in hops.items():
        assert {p.payload for p in pkts} <= set(played), hop
    assert call.cap.between(CARRIER, PBX) == [], "media went around the relay"

    (cdr,) = sbc.cdrs()
    assert (cdr.disposition, cdr.hangup_by) == ("answered", "caller")
    stats = cdr.media["streams"]["0"]
    a_to_b, b_to_a = stats["a_to_b"], stats["b_to_a"]
    assert a_to_b["packets"] == counts["caller -> relay"], (stats, counts)
    assert b_to_a["packets"] == counts["callee -> relay"], (stats, counts)
    for direction in (a_to_b, b_to_a):
        assert direction["bytes"] == direction["packets"] * (12 + SAMPLES_PER_PACKET)
        assert 0 <= direction["lost"] <= (1 - MIN_DELIVERED) * len(played)
        assert 0 <= direction["jitter_ms"] < 50
        assert 1.0 <= direction["mos"] <= 4.5
        if direction["lost"] == 0:
            assert direction["mos"] > 4.0


@e2e
@pytest.mark.skipif(KERNEL_STATUS is not None, reason=f"kernel path: {KERNEL_STATUS}")
@pytest.mark.parametrize(("workers", "owner"), [(1, 0), (2, 0), (2, 1)])
def test_kernel_fast_path_carries_the_audio(tmp_path, workers: int, owner: int) -> None:
    """The same call with the relay's kernel fast path on: once both sources latched, the
    BPF program relays the audio; the CDR counts every packet the endpoints sent the relay
    (the kernel's stats merged with the threads'), most of them relayed in the kernel, and
    its loss and jitter say nothing went missing. (Delivery from the relay ports to each
    endpoint is checked socket by socket in tests/test_relay_kernel.py: the capture here
    sees packets before the kernel rewrites them.)

    With two workers each relay attaches its own program to the interface and a packet that is
    not one of a program's flows passes on to the next: the call is made once with a Call-ID
    that steers to each worker (SIPp's ``-cid_str``), so both places in the chain are tried."""
    if workers > 1 and (not steering_available() or os.geteuid() != 0):
        pytest.skip("several workers need the SIP steering program and CAP_BPF")
    sbc = start_media_sbc(tmp_path, env={"SBC_RTP_KERNEL_FORWARD": "on", "SBC_WORKERS": str(workers)})
    prefix = next(
        p for p in (f"w{i}" for i in range(1000)) if worker_for_call_id(f"{p}-1@{CARRIER}", workers) == owner
    )
    try:
        stream = new_stream().audio(100)
        scenario = with_pcap("uac_audio", tmp_path, uac_audio=write_pcap(tmp_path / "audio.pcap", stream))
        call = run_call(tmp_path, sbc.target, scenario, "uas_answer", uas_port=sbc.pbx_port,
                        hold_ms=_hold_ms(stream), capture_ranges=[sbc.rtp_ports],
                        uac_extra=["-cid_str", f"{prefix}-%u@%s"])  # fmt: skip
        assert sbc.stop() == 0, sbc.proc.log()
    finally:
        sbc.stop()
    assert sbc.proc.log().count("kernel fast path: attached to lo ingress") == workers
    assert call.uac.returncode == 0 and call.uas.returncode == 0, call.uac.explain() + call.uas.explain()
    counts = {hop: len(pkts) for hop, pkts in call.hops().items()}
    (cdr,) = sbc.cdrs()
    assert cdr.call_id == f"{prefix}-1@{CARRIER}"
    assert (cdr.disposition, cdr.hangup_by) == ("answered", "caller")
    stats = cdr.media["streams"]["0"]
    for direction, hop in (("a_to_b", "caller -> relay"), ("b_to_a", "callee -> relay")):
        st = stats[direction]
        assert st["packets"] == counts[hop] >= MIN_DELIVERED * len(stream.unique()), (stats, counts)
        assert st["kernel_forwarded"] >= st["packets"] - 20, stats  # the threads only until latched
        assert st["bytes"] == st["packets"] * (12 + SAMPLES_PER_PACKET)
        assert 0 <= st["lost"] <= (1 - MIN_DELIVERED) * len(stream.unique())
        assert 0 <= st["jitter_ms"] < 50 and 1.0 <= st["mos"] <= 4.5


@e2e
def test_without_the_sbc_the_capture_sees_media_go_direct(tmp_path) -> None:
    """The same scenario pair SIPp to SIPp: the audio goes straight between the endpoints and
    the checks above would say so (proves the scenarios and the capture, as
    test_sipp_scenarios proves the signalling-only ones)."""
    stream = new_stream().audio(25)
    scenario = with_pcap("uac_audio", tmp_path, uac_audio=write_pcap(tmp_path / "audio.pcap", stream))
    port = free_port(PBX)
    call = run_call(
        tmp_path, f"{PBX}:{port}", scenario, "uas_answer", uas_port=port, hold_ms=_hold_ms(stream)
    )
    assert call.uac.returncode == 0 and call.uas.returncode == 0, call.uac.explain() + call.uas.explain()
    (answer,) = _answer_to_invite(call.uac.messages())
    assert sdp_media(answer)[0] == SdpMedia("audio", PBX, call.callee_at[1], "sendrecv")
    there = call.cap.flow(call.caller_at, call.callee_at)
    back = call.cap.flow(call.callee_at, call.caller_at)
    assert min(len(there), len(back)) >= MIN_DELIVERED * len(stream.unique()), (len(there), len(back))


def _rtp(packets: Iterable[Captured]) -> list[Captured]:
    """The RTP among captured datagrams (version 2; RTCP's payload types 200-204 excluded)."""
    return [p for p in packets if len(p.payload) >= 12 and p.payload[0] >> 6 == 2 and not 72 <= p.pt <= 76]


#: How late after the media timeout the SBC's BYE may come: the relay scans every 100 ms, then
#: the event crosses to the loop; the rest is slack for this shared 2-core machine under load
#: (still far below the 60 s hold timeout, so it tells which timeout fired).
TIMEOUT_SLACK_S = 2.5


@e2e
@pytest.mark.parametrize("talk_packets", [25, 0], ids=["talk-then-silence", "never-talks"])
def test_silent_call_is_hung_up_after_the_media_timeout(tmp_path, sbc, talk_packets) -> None:
    """A call whose RTP stops (the caller talks, then neither side sends), or never starts, is
    ended by the SBC one media timeout after the last packet: BYE to both sides, and the CDR
    says why and who."""
    if talk_packets:
        stream = new_stream().audio(talk_packets)
        uac = with_pcap("uac_audio_wait_bye", tmp_path, uac_audio=write_pcap(tmp_path / "audio.pcap", stream))
    else:
        uac = "uac_call_wait_bye"
    call = run_call(tmp_path, sbc.target, uac, "uas_answer", uas_port=sbc.pbx_port, hold_ms=0,
                    capture_ranges=[sbc.rtp_ports], timeout_s=MEDIA_TIMEOUT_S + 8)  # fmt: skip
    assert sbc.stop() == 0, sbc.proc.log()
    # Both sides got the SBC's BYE and answered it: their scenarios end on that.
    assert call.uac.returncode == 0, call.uac.explain()
    assert call.uas.returncode == 0, call.uas.explain()
    (bye,) = _requests(call.uac, "BYE")
    (bye_b,) = _requests(call.uas, "BYE")
    (answer,) = _answer_to_invite(call.uac.messages())
    rtp = _rtp(call.cap.packets)
    if talk_packets:
        hops = call.hops()
        assert all(len(p) >= MIN_DELIVERED * talk_packets for p in hops.values()), hops
        silent_since = max(p.at for p in rtp)
        idle = _epoch(bye) - silent_since
        assert MEDIA_TIMEOUT_S - 0.3 <= idle <= MEDIA_TIMEOUT_S + TIMEOUT_SLACK_S, idle
    else:
        assert rtp == []
        # The relay counts from its session's creation: after the INVITE left, before the 200.
        invite = next(m for m in call.uac.messages() if m.method == "INVITE")
        assert _epoch(bye) - _epoch(invite) >= MEDIA_TIMEOUT_S - 0.05
        assert _epoch(bye) - _epoch(answer) <= MEDIA_TIMEOUT_S + TIMEOUT_SLACK_S
    assert abs(_epoch(bye_b) - _epoch(bye)) < 1.0

    (cdr,) = sbc.cdrs()
    assert (cdr.disposition, cdr.hangup_by, cdr.end_reason) == ("answered", "sbc", "media timeout")
    stats = cdr.media["streams"]["0"]
    assert stats["a_to_b"]["packets"] == (len(call.hops()["caller -> relay"]) if talk_packets else 0)


@e2e
def test_silent_call_answered_late_is_hung_up_after_the_media_timeout(tmp_path, sbc) -> None:
    """The callee rings (180) for longer than the media timeout, then answers; nobody ever sends
    RTP. A dead media path must not keep the call up until SBC_MAX_CALL_DURATION."""
    text = scenario_path("uas_answer").read_text()
    late = text.replace(
        '  <send retrans="500" start_rtd="answer_to_ack">',
        '  <pause/>\n\n  <send retrans="500" start_rtd="answer_to_ack">',
    )
    assert late != text
    uas = tmp_path / "uas_answer_late.xml"
    uas.write_text(late)
    ring_ms = int((MEDIA_TIMEOUT_S + 1.0) * 1000)
    call = run_call(tmp_path, sbc.target, "uac_call_wait_bye", uas, uas_port=sbc.pbx_port, hold_ms=0,
                    uas_hold_ms=ring_ms, timeout_s=ring_ms / 1000 + MEDIA_TIMEOUT_S + 4)  # fmt: skip
    assert sbc.stop() == 0, sbc.proc.log()
    (answer,) = _answer_to_invite(call.uac.messages())
    byes = call.uac.received("BYE")
    assert byes, "no BYE: the silent call stayed up"
    assert _epoch(byes[0]) - _epoch(answer) <= MEDIA_TIMEOUT_S + TIMEOUT_SLACK_S
    (cdr,) = sbc.cdrs()
    assert cdr.end_reason == "media timeout"


@e2e
@pytest.mark.parametrize("hold_dir", ["sendonly", "inactive"])
def test_held_call_survives_the_media_timeout(tmp_path, sbc, hold_dir) -> None:
    """Held and silent for longer than the media timeout: the hold timeout applies and the call
    stays up until the caller hangs up. (A hold is answered recvonly: that answer must not
    undo the hold, see test_manager_applies_the_hold_timeout_while_either_side_holds.)"""
    stream = new_stream().audio(10)
    uac = with_pcap("uac_audio_hold", tmp_path, uac_audio=write_pcap(tmp_path / "audio.pcap", stream))
    held_ms = int((MEDIA_TIMEOUT_S + 1.5) * 1000)
    call = run_call(tmp_path, sbc.target, uac, "uas_answer_reinvite", uas_port=sbc.pbx_port, hold_ms=held_ms,
                    uac_keys={"hold_dir": hold_dir}, capture_ranges=[sbc.rtp_ports],
                    timeout_s=held_ms / 1000 + 8)  # fmt: skip
    assert sbc.stop() == 0, sbc.proc.log()
    assert call.uac.returncode == 0, call.uac.explain()
    assert call.uas.returncode == 0, call.uas.explain()
    # Only the caller's own BYE (CSeq 3, after the hold re-INVITE), none from the SBC.
    assert call.uac.received("BYE") == []
    (bye,) = _requests(call.uas, "BYE")
    assert bye.headers("CSeq") == ["3 BYE"]
    # The hold went through the SBC both ways with its direction.
    invites = _requests(call.uas, "INVITE")
    assert [sdp_media(i)[0].direction for i in invites] == ["sendrecv", hold_dir]
    answers = _answer_to_invite(call.uac.messages())
    expect = {"sendonly": "recvonly", "inactive": "inactive"}[hold_dir]
    assert [sdp_media(a)[0].direction for a in answers] == ["sendrecv", expect]
    # And the call really was silent for longer than the media timeout while held.
    rtp = _rtp(call.cap.packets)
    assert len(rtp) >= 2 * MIN_DELIVERED * len(stream.unique())
    assert _epoch(bye) - max(p.at for p in rtp) > MEDIA_TIMEOUT_S + 0.5

    (cdr,) = sbc.cdrs()
    assert (cdr.disposition, cdr.hangup_by) == ("answered", "caller")
    assert cdr.end_reason != "media timeout"


@e2e
def test_resumed_call_counts_the_media_timeout_afresh(tmp_path, sbc) -> None:
    """Held and silent past the media timeout, then resumed: the endpoints need a moment to
    start RTP again, and the timeout must count from the resume, not from the last packet
    before the hold. The caller stays silent 1 s after the resume (less than the timeout)."""
    stream = new_stream().audio(10)
    uac = with_pcap("uac_audio_hold_resume", tmp_path, uac_audio=write_pcap(tmp_path / "audio.pcap", stream))
    held_ms = int((MEDIA_TIMEOUT_S + 1.5) * 1000)
    call = run_call(tmp_path, sbc.target, uac, "uas_answer_reinvite", uas_port=sbc.pbx_port, hold_ms=held_ms,
                    uac_keys={"hold_dir": "sendonly"}, timeout_s=held_ms / 1000 + 8)  # fmt: skip
    assert sbc.stop() == 0, sbc.proc.log()
    assert call.uac.received("BYE") == [], "the SBC hung up the resumed call"
    assert call.uac.returncode == 0, call.uac.explain()
    assert [b.headers("CSeq") for b in _requests(call.uas, "BYE")] == [["4 BYE"]]
    (cdr,) = sbc.cdrs()
    assert (cdr.hangup_by, cdr.end_reason) == ("caller", "bye")


@e2e
def test_early_media_reaches_the_caller_through_the_relay(tmp_path, sbc) -> None:
    """The callee plays an announcement after a 183 with SDP and answers only later; the caller
    echoes it. Both directions flow through the relay before the 200."""
    stream = new_stream().audio(50)
    uas = with_pcap("uas_early_media", tmp_path, uas_early_media=write_pcap(tmp_path / "early.pcap", stream))
    call = run_call(tmp_path, sbc.target, "uac_call", uas, uas_port=sbc.pbx_port, hold_ms=300,
                    uas_hold_ms=_hold_ms(stream), caller_echo=True, callee_echo=False,
                    capture_ranges=[sbc.rtp_ports])  # fmt: skip
    assert sbc.stop() == 0, sbc.proc.log()
    assert call.uac.returncode == 0, call.uac.explain()
    assert call.uas.returncode == 0, call.uas.explain()
    (progress,) = _answer_to_invite(call.uac.messages(), 183)
    (answer,) = _answer_to_invite(call.uac.messages())
    early, final = sdp_media(progress)[0], sdp_media(answer)[0]
    assert early.address == SBC_IP and sbc.rtp_ports[0] <= early.port <= sbc.rtp_ports[1]
    assert (final.address, final.port) == (early.address, early.port)
    assert PBX not in progress.body

    played = stream.unique()
    hops = call.hops()
    counts = {hop: len(pkts) for hop, pkts in hops.items()}
    assert all(n >= MIN_DELIVERED * len(played) for n in counts.values()), counts
    assert {p.payload for p in hops["relay -> caller"]} <= set(played)
    # Early: the announcement reached the caller, and its echo the callee, before the answer.
    answered_at = _epoch(answer)
    for hop in ("relay -> caller", "relay -> callee"):
        before = [p for p in hops[hop] if p.at < answered_at]
        assert len(before) >= MIN_DELIVERED * len(played), (hop, len(before))
    assert call.cap.between(CARRIER, PBX) == []

    (cdr,) = sbc.cdrs()
    stats = cdr.media["streams"]["0"]
    assert stats["b_to_a"]["packets"] == counts["callee -> relay"]
    assert stats["a_to_b"]["packets"] == counts["caller -> relay"]


def _with_video(text: str, port: str) -> str:
    """A scenario whose first SDP (the INVITE's, or the callee's answer) gets a second m= line,
    video on ``port`` (``0`` declines it, RFC 3264 6)."""
    anchor = "      a=sendrecv\n\n    ]]>"
    assert anchor in text
    video = f"      a=sendrecv\n      m=video {port} RTP/AVP 31\n      a=rtpmap:31 H261/90000\n\n    ]]>"
    return text.replace(anchor, video, 1)


@e2e
@pytest.mark.parametrize("declined_by", ["offer", "answer"])
def test_declined_video_stream_stays_declined_and_audio_flows(tmp_path, sbc, declined_by) -> None:
    """A video stream with port 0 is passed on declined (no relay ports for it) and the audio
    beside it is anchored as usual: offered declined, or offered and declined in the answer."""
    stream = new_stream().audio(25)
    uac_path = with_pcap("uac_audio", tmp_path, uac_audio=write_pcap(tmp_path / "audio.pcap", stream))
    offered = "0" if declined_by == "offer" else "[media_port+2]"
    uac_path.write_text(_with_video(uac_path.read_text(), offered))
    uas_path = tmp_path / "uas_answer_no_video.xml"
    uas_path.write_text(_with_video(scenario_path("uas_answer").read_text(), "0"))
    call = run_call(tmp_path, sbc.target, uac_path, uas_path, uas_port=sbc.pbx_port, hold_ms=_hold_ms(stream),
                    capture_ranges=[sbc.rtp_ports])  # fmt: skip
    assert sbc.stop() == 0, sbc.proc.log()
    assert call.uac.returncode == 0, call.uac.explain()
    assert call.uas.returncode == 0, call.uas.explain()
    (offer,) = _requests(call.uas, "INVITE")
    (answer,) = _answer_to_invite(call.uac.messages())
    audio_b, video_b = sdp_media(offer)
    audio_a, video_a = sdp_media(answer)
    assert (audio_a.address, audio_b.address) == (SBC_IP, SBC_IP) and audio_a.port and audio_b.port
    assert video_a.port == 0
    if declined_by == "offer":
        assert video_b.port == 0
    else:
        # Offered with a port: the callee is offered the relay's, never the caller's.
        assert video_b.address == SBC_IP and sbc.rtp_ports[0] <= video_b.port <= sbc.rtp_ports[1]
    counts = {hop: len(pkts) for hop, pkts in call.hops().items()}
    assert all(n >= MIN_DELIVERED * len(stream.unique()) for n in counts.values()), counts

    (cdr,) = sbc.cdrs()
    streams = cdr.media["streams"]
    assert streams["0"]["a_to_b"]["packets"] == counts["caller -> relay"]
    if declined_by == "offer":
        assert set(streams) == {"0"}
    else:
        assert streams["1"]["a_to_b"]["packets"] == streams["1"]["b_to_a"]["packets"] == 0


def _dtmf_stream() -> tuple[RtpStream, str]:
    """Audio with four RFC 4733 digits in it, one of them twice in a row (two events)."""
    digits = "155#"
    stream = new_stream().audio(10)
    for d in digits:
        stream.digit(d).audio(5)
    return stream.audio(5), digits


@e2e
def test_dtmf_events_pass_through_the_relay_unchanged(tmp_path, sbc) -> None:
    """RFC 4733 digits inside a call's audio reach the callee exactly as sent (the relay reads
    them, it does not regenerate or drop the repeated end packets), and the CDR counts them."""
    stream, digits = _dtmf_stream()
    uac = with_pcap("uac_audio", tmp_path, uac_audio=write_pcap(tmp_path / "dtmf.pcap", stream))
    call = run_call(tmp_path, sbc.target, uac, "uas_answer", uas_port=sbc.pbx_port, hold_ms=_hold_ms(stream),
                    capture_ranges=[sbc.rtp_ports])  # fmt: skip
    assert sbc.stop() == 0, sbc.proc.log()
    assert call.uac.returncode == 0 and call.uas.returncode == 0, call.uac.explain() + call.uas.explain()
    sent_events = [data for _, data in stream.packets if data[1] & 0x7F == TELEPHONE_EVENT_PT]
    hops = call.hops()
    to_callee = [p.payload for p in hops["relay -> callee"] if p.pt == TELEPHONE_EVENT_PT]
    # Every telephone-event packet, the three copies of each end packet included, in order.
    assert to_callee == sent_events
    (cdr,) = sbc.cdrs()
    stats = cdr.media["streams"]["0"]
    caller_events = sum(p.pt == TELEPHONE_EVENT_PT for p in hops["caller -> relay"])
    # The final packet's copies share one sequence number: counted once, the others as duplicates.
    assert caller_events == len(sent_events)
    assert stats["a_to_b"]["dtmf_packets"] == len(stream.unique(TELEPHONE_EVENT_PT))
    assert stats["a_to_b"]["duplicates"] == len(sent_events) - len(stream.unique(TELEPHONE_EVENT_PT))
    # The digits themselves, once per event, in the CDR (the caller sent them; the echo back from
    # the callee is reported too, from the callee).
    from_caller = [d["digit"] for d in cdr.media["dtmf"] if d["from"] == "caller"]
    assert "".join(from_caller) == digits
    assert all(d["duration_ms"] > 0 for d in cdr.media["dtmf"])


@e2e
async def test_dtmf_digits_are_reported_once_per_event(tmp_path) -> None:
    """The relay's DTMF reports reach the running SBC once per event and direction (the final
    packet's three copies make one digit; the same digit twice is two events). They are counted
    in ``sbc_dtmf_events_total{from_side}``, and that counter is all the SBC does with them, so
    this test runs the SBC's app in-process and watches its B2BUA receive the relay's events."""

    def counted(side: str) -> float:
        return REGISTRY.get_sample_value("sbc_dtmf_events_total", {"from_side": side}) or 0.0

    pbx_port = free_port(PBX)
    db_url = await asyncio.to_thread(provision, tmp_path, CARRIER, PBX, pbx_port)
    port, rtp = free_port(SBC_IP), relay_port_range()
    settings = load_settings(
        {"sip_listen": [f"udp:{SBC_IP}:{port}"], "api_listen": "", "db": db_url, "rtp_ip": SBC_IP,
         "rtp_ports": f"{rtp[0]}-{rtp[1]}"}
    )  # fmt: skip
    app = SbcApp(settings)
    await app.start()
    seen: list[DtmfEvent] = []
    relay_events = app.b2bua.on_media_events

    def spy(events: list, now: float) -> None:
        seen.extend(e for e in events if isinstance(e, DtmfEvent))
        relay_events(events, now)

    app.b2bua.on_media_events = spy
    before = counted("caller"), counted("callee")
    try:
        stream, digits = _dtmf_stream()
        uac = with_pcap("uac_audio", tmp_path, uac_audio=write_pcap(tmp_path / "dtmf.pcap", stream))
        call = await asyncio.to_thread(
            run_call,
            tmp_path,
            f"{SBC_IP}:{port}",
            uac,
            "uas_answer",
            uas_port=pbx_port,
            hold_ms=_hold_ms(stream),
        )
    finally:
        await app.stop()
    assert call.uac.returncode == 0 and call.uas.returncode == 0, call.uac.explain() + call.uas.explain()
    for leg in (LEG_A, LEG_B):  # the caller's digits, and the callee's echo of them
        events = [e for e in seen if e.leg == leg]
        assert "".join(e.digit for e in events) == digits, events
        assert all(e.end_seen and e.duration_ms == 100.0 for e in events), events
    assert (counted("caller") - before[0], counted("callee") - before[1]) == (len(digits), len(digits))


@e2e
def test_ipv6_audio_flows_both_ways_through_the_relay(tmp_path) -> None:
    """The same call on ::1: SIP over IPv6, c=IN IP6 in every SDP, the relay on ::1. Caller and
    callee share the address, so "never the other endpoint" is about ports here."""
    ip = "::1"
    sbc = start_media_sbc(tmp_path, ip=ip, carrier=ip, pbx=ip)
    try:
        stream = new_stream().audio(50)
        uac = with_pcap("uac_audio", tmp_path, uac_audio=write_pcap(tmp_path / "audio.pcap", stream))
        call = run_call(tmp_path, sbc.target, uac, "uas_answer", uas_port=sbc.pbx_port, hold_ms=_hold_ms(stream),
                        capture_ranges=[sbc.rtp_ports], caller_ip=ip, callee_ip=ip)  # fmt: skip
    finally:
        status = sbc.stop()
    assert status == 0, sbc.proc.log()
    assert call.uac.returncode == 0, call.uac.explain()
    assert call.uas.returncode == 0, call.uas.explain()
    (answer,) = _answer_to_invite(call.uac.messages())
    (offer,) = _requests(call.uas, "INVITE")
    assert "c=IN IP6 ::1" in answer.body and "c=IN IP6 ::1" in offer.body
    for msg, hidden in ((answer, call.callee_at[1]), (offer, call.caller_at[1])):
        (m,) = sdp_media(msg)
        assert m.address == ip and sbc.rtp_ports[0] <= m.port <= sbc.rtp_ports[1] and m.port != hidden
    counts = {hop: len(pkts) for hop, pkts in call.hops().items()}
    assert all(n >= MIN_DELIVERED * len(stream.unique()) for n in counts.values()), counts
    assert call.cap.between(call.caller_at, call.callee_at) == []
    (cdr,) = sbc.cdrs()
    assert cdr.media["streams"]["0"]["b_to_a"]["packets"] == counts["callee -> relay"]


def _sdp(port: int, direction: str) -> bytes:
    return (
        f"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
    ).encode()


def test_manager_applies_the_hold_timeout_while_either_side_holds() -> None:
    """The unit behind test_held_call_survives_the_media_timeout[sendonly]: a hold offer
    (sendonly) answered recvonly keeps the session held; it was un-held by the answer, so a
    held silent call was hung up at the short media timeout. Resumed only once both sides
    are back to sendrecv."""
    lo, hi = relay_port_range()
    engine = RelayEngine(SBC_IP, lo, hi, quarantine=0.1)
    try:
        manager, media = MediaManager(engine, SBC_IP), CallMedia()

        def held_after(side: str, direction: str) -> bool:
            manager.rewrite(media, side, _sdp(4000 if side == "a" else 5000, direction), owner="call")
            return engine.stats(media.sessions[0])["held"]

        steps = [
            ("a", "sendrecv", False), ("b", "sendrecv", False),  # call set up
            ("a", "sendonly", True), ("b", "recvonly", True),  # caller holds, callee answers
            ("a", "sendrecv", True), ("b", "sendrecv", False),  # resume: held until answered
            ("b", "inactive", True), ("a", "inactive", True),  # callee holds, inactive both ways
            ("b", "sendrecv", True), ("a", "sendrecv", False),
        ]  # fmt: skip
        assert [held_after(side, d) for side, d, _ in steps] == [want for _, _, want in steps]
        manager.free(media)
    finally:
        engine.close()
