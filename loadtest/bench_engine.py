"""The SBC's signalling cost per call, without sockets: SipCore + B2BUA driven in-process.

Each call is a carrier -> SBC -> PBX call by DID: INVITE (with SDP), 100, 180, 200 (SDP), ACK,
BYE from the caller, 200 — twelve messages through the SBC. The fake carrier and PBX are built
here from the bytes the SBC emits; only the time spent inside the SBC (``receive``,
``handle_timer``, ``pop_outgoing``) is counted, in the CPU time of the calling (signalling)
thread: the relay's native threads run beside it on other cores, as in ``sbc run``. Media anchoring is off
unless ``--media`` (then a real relay engine allocates and frees ports for each call) and the
CDR sink just collects records (the store's cost is measured by the calls benchmark).

Prints one JSON object: calls, SBC CPU seconds, calls per CPU-second (the ceiling of one core
for signalling), microseconds per call and per message, each the median of ``--repeats`` runs,
and ``us_per_call_min``, the fastest run: on a shared host other tenants only ever add time, so
the minimum of many short runs (``--calls 1000 --repeats 15``) is the steadiest figure to compare
two builds alternated in one sitting.
Run: ``python -m loadtest engine [--calls N] [--media] [--profile]``.
"""

from __future__ import annotations

import argparse
import gc
import glob
import json
import os
import pickle
import random
import statistics
import subprocess
import sys
import tempfile
import time

from routing.model import Carrier, Customer, Number, Snapshot, Trunk, TrunkTarget
from sbc.app import GC_FREEZE_INTERVAL_S, GC_THRESHOLDS
from sbc.b2bua.engine import B2BUA, B2BUAConfig
from sbc.core import SipCore
from sbc.sip import randomness
from sbc.sip.events import Address
from sbc.sip.message import Request, Response, make_response, parse_message
from sbc.sip.timers import TimerConfig

SBC = Address("udp", "198.51.100.20", 5060)
CARRIER = Address("udp", "203.0.113.10", 5060)
PBX = Address("udp", "192.0.2.30", 5070)
DIDS = [f"+1415555{n:04d}" for n in range(100)]
#: The collector runs as in ``sbc run`` (sbc.app.GcPolicy): its thresholds, the start-up heap
#: frozen, and a freeze every GC_FREEZE_INTERVAL_S, here counted in calls at 1,500 calls/s.
FREEZE_EVERY_CALLS = round(1500 * GC_FREEZE_INTERVAL_S)

SDP_CARRIER = (
    "v=0\r\no=carrier 1 1 IN IP4 203.0.113.10\r\ns=-\r\nc=IN IP4 203.0.113.10\r\nt=0 0\r\n"
    "m=audio 16384 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)
SDP_PBX = SDP_CARRIER.replace("203.0.113.10", "192.0.2.30").replace("carrier", "pbx").replace("16384", "20000")

INVITE = (
    "INVITE sip:{did}@198.51.100.20:5060;user=phone SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-{n}-inv;rport\r\n"
    "Max-Forwards: 69\r\n"
    "Contact: <sip:+12125550199@203.0.113.10:5060;transport=udp>\r\n"
    "To: <sip:{did}@198.51.100.20;user=phone>\r\n"
    'From: "NEW YORK NY" <sip:+12125550199@203.0.113.10;user=phone>;tag=from{n}\r\n'
    "Call-ID: {n}-bench@203.0.113.10\r\n"
    "CSeq: 1 INVITE\r\n"
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, UPDATE, PRACK, INFO\r\n"
    "Supported: timer, replaces\r\n"
    "P-Asserted-Identity: <sip:+12125550199@203.0.113.10;user=phone>\r\n"
    "User-Agent: CarrierSwitch 9.2\r\n"
    "Content-Type: application/sdp\r\n"
    f"Content-Length: {len(SDP_CARRIER)}\r\n\r\n{SDP_CARRIER}"
)
IN_DIALOG = (
    "{method} {target} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK-{n}-{method};rport\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:{did}@198.51.100.20;user=phone>;tag={to_tag}\r\n"
    'From: "NEW YORK NY" <sip:+12125550199@203.0.113.10;user=phone>;tag=from{n}\r\n'
    "Call-ID: {n}-bench@203.0.113.10\r\n"
    "CSeq: {cseq} {method}\r\n"
    "Content-Length: 0\r\n\r\n"
)


def snapshot() -> Snapshot:
    trunk = Trunk("pbx", "bench", allowed_cidrs=("192.0.2.30/32",), targets=(TrunkTarget("sip:192.0.2.30:5070"),))
    return Snapshot(
        carriers=(Carrier("telco", inbound_cidrs=("203.0.113.0/24",)),),
        customers=(Customer("bench", trunks=(trunk,)),),
        numbers=tuple(Number(d, customer="bench", trunk="pbx") for d in DIDS),
    )


class Bench:
    """One SBC and the fake peers around it; ``sbc_cpu`` accumulates the SBC's own CPU time."""

    def __init__(self, media: bool) -> None:
        self.now = 1000.0
        self.core = SipCore(local_hosts={SBC.host}, timers=TimerConfig())
        self.cdrs: list = []
        manager = None
        self.relay = None
        if media:
            from rtp_relay_ext import RelayEngine
            from sbc.media.manager import MediaManager

            self.relay = RelayEngine("127.0.0.1", 30000, 39999, quarantine=0.0)
            manager = MediaManager(self.relay, "127.0.0.1")
        self.b2bua = B2BUA(
            self.core,
            local_address=lambda transport: (SBC.host, SBC.port),
            cdr_sink=self.cdrs.append,
            config=B2BUAConfig(),
            rng=random.Random(1),
            media=manager,
        )
        self.b2bua.load(snapshot(), self.now)
        self.sbc_cpu = 0.0
        self.messages = 0
        self.calls_done = 0
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        #: Each call's inputs in order: (data, source, now), or (None, None, now) for a timer pass.
        self.inputs: list[list[tuple[bytes | None, Address | None, float]]] = []

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()

    def to_sbc(self, data: bytes, source: Address) -> list:
        """Deliver ``data``; return what the SBC sent, parsed, with its destination."""
        self.inputs[-1].append((data, source, self.now))
        t0 = time.thread_time()
        self.core.receive(data, source, self.now)
        out = self.core.pop_outgoing()
        self.sbc_cpu += time.thread_time() - t0
        self.messages += 1
        return [(o.dest, o.data) for o in out]

    def replay(self, calls: list) -> None:
        """Feed recorded calls straight in: the SBC's own work with no fake peers around it."""
        core = self.core
        for inputs in calls:
            for data, source, now in inputs:
                if data is None:
                    core.handle_timer(now)
                else:
                    core.receive(data, source, now)
                    self.messages += 1
                core.pop_outgoing()
            self._call_done()

    def _call_done(self) -> None:
        self.calls_done += 1
        if self.calls_done % FREEZE_EVERY_CALLS == 0:
            gc.freeze()

    def call(self, n: int) -> None:
        self.inputs.append([])
        did = DIDS[n % len(DIDS)]
        sent = self.to_sbc(INVITE.format(n=n, did=did).encode(), CARRIER)
        invite = _find(sent, PBX, "INVITE")
        pbx_tag = f"pbx{n}"
        extra = [("Contact", "<sip:pbx@192.0.2.30:5070>")]
        self.to_sbc(make_response(invite, 100).to_bytes(), PBX)
        ringing = make_response(invite, 180, to_tag=pbx_tag, headers=extra)
        to_carrier = _find(self.to_sbc(ringing.to_bytes(), PBX), CARRIER, 180)
        ok = make_response(invite, 200, to_tag=pbx_tag, headers=[*extra, ("Content-Type", "application/sdp")], body=SDP_PBX.encode())
        ok200 = _find(self.to_sbc(ok.to_bytes(), PBX), CARRIER, 200)
        sbc_tag = ok200.to_tag
        target = "sip:sbc@198.51.100.20:5060"
        assert to_carrier.to_tag == sbc_tag
        ack = IN_DIALOG.format(method="ACK", target=target, n=n, did=did, to_tag=sbc_tag, cseq=1)
        self.to_sbc(ack.encode(), CARRIER)
        self.now += 1.0
        bye = IN_DIALOG.format(method="BYE", target=target, n=n, did=did, to_tag=sbc_tag, cseq=2)
        sent = self.to_sbc(bye.encode(), CARRIER)
        bye_b = _find(sent, PBX, "BYE")
        self.to_sbc(make_response(bye_b, 200).to_bytes(), PBX)
        self.inputs[-1].append((None, None, self.now))
        t0 = time.thread_time()
        self.core.handle_timer(self.now)
        self.core.pop_outgoing()
        self.sbc_cpu += time.thread_time() - t0
        self._call_done()


def _find(sent: list, dest: Address, what: str | int) -> Request | Response:
    for d, data in sent:
        if (d.host, d.port) != (dest.host, dest.port):
            continue
        msg = parse_message(data)
        if (isinstance(msg, Request) and msg.method == what) or (isinstance(msg, Response) and msg.status == what):
            return msg
    raise AssertionError(f"the SBC did not send {what} to {dest}: {[d for d, _ in sent]}")


def run_once(calls: int, media: bool) -> dict:
    bench = Bench(media)
    try:
        for n in range(calls):
            bench.call(n)
        _check_cdrs(bench, calls)
        return {"cpu_s": bench.sbc_cpu, "messages": bench.messages}
    finally:
        bench.close()


def _check_cdrs(bench: Bench, calls: int) -> None:
    assert len(bench.cdrs) == calls and all(c.disposition == "answered" for c in bench.cdrs)


#: The seed that --record and --replay share, so a replayed SBC draws the recorded tags and branches.
REPLAY_SEED = 20261203


def record(path: str, calls: int, media: bool) -> None:
    """Run ``calls`` calls with the fake peers and pickle what the SBC received, call by call."""
    randomness.seed(REPLAY_SEED)
    bench = Bench(media)
    try:
        for n in range(calls):
            bench.call(n)
        _check_cdrs(bench, calls)
    finally:
        bench.close()
    with open(path, "wb") as f:
        pickle.dump({"media": media, "calls": bench.inputs}, f)


def replay(path: str, calls: int) -> None:
    """Replay the first ``calls`` recorded calls into a fresh SBC (seeded as the recording was)."""
    with open(path, "rb") as f:
        rec = pickle.load(f)
    randomness.seed(REPLAY_SEED)
    bench = Bench(rec["media"])
    try:
        bench.replay(rec["calls"][:calls])
        _check_cdrs(bench, calls)
    finally:
        bench.close()


# The recording and its replays run alike. io_uring does not run under valgrind (the relay
# threads never wake), so the relay runs its epoll backend without the kernel path: the
# signalling thread's calls into it are the same.
_REPLAY_ENV = {**os.environ, "PYTHONHASHSEED": "0", "RTP_RELAY_BACKEND": "epoll", "RTP_RELAY_KERNEL": "off"}


def _callgrind_instructions(path: str, calls: int, workdir: str) -> int:
    """Instructions the main (signalling) thread executed replaying ``calls`` calls."""
    out = os.path.join(workdir, f"cg.{calls}")
    cmd = [
        "valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
        sys.executable, "-m", "loadtest", "engine", "--replay", path, "--calls", str(calls),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, env=_REPLAY_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    main_thread = sorted(glob.glob(out + "-*"))[0]  # -01: the thread that ran the interpreter
    with open(main_thread) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in {main_thread}")


def count_instructions(calls: int, media: bool) -> dict:
    """Instructions per call under callgrind: the same on a busy host as on a quiet one.

    Replays ``calls`` and ``calls // 4`` recorded calls and divides the difference, which
    cancels start-up, imports and the interpreter's warm-up.
    """
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as workdir:
        path = os.path.join(workdir, "calls.pickle")
        cmd = [sys.executable, "-m", "loadtest", "engine", "--record", path, "--calls", str(calls)]
        subprocess.run(cmd + (["--media"] if media else []), check=True, env=_REPLAY_ENV)
        few = calls // 4
        many_i = _callgrind_instructions(path, calls, workdir)
        few_i = _callgrind_instructions(path, few, workdir)
    per_call = (many_i - few_i) / (calls - few)
    return {
        "bench": "engine", "mode": "instructions", "media": media, "calls": calls,
        "instructions_per_call": round(per_call), "instructions_per_message": round(per_call / MESSAGES_PER_CALL),
    }  # fmt: skip


#: Messages the SBC receives per benchmark call (INVITE, 100, 180, 200, ACK, BYE, 200).
MESSAGES_PER_CALL = 7


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, help="calls per run (default 5000; 400 with --instructions)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--media", action="store_true", help="anchor media in a real relay engine")
    p.add_argument("--profile", action="store_true", help="print a cProfile of one run instead")
    p.add_argument(
        "--instructions",
        action="store_true",
        help="count the signalling thread's instructions per call under callgrind (repeatable on a shared host)",
    )
    p.add_argument("--record", metavar="FILE", help=argparse.SUPPRESS)
    p.add_argument("--replay", metavar="FILE", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.calls is None:
        args.calls = 400 if args.instructions else 5000
    if args.record:
        record(args.record, args.calls, args.media)
        return 0
    if args.replay:
        replay(args.replay, args.calls)
        return 0
    if args.instructions:
        print(json.dumps(count_instructions(args.calls, args.media)))
        return 0
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        run_once(args.calls, args.media)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(35)
        return 0
    run_once(min(500, args.calls), args.media)  # warm-up
    runs = [run_once(args.calls, args.media) for _ in range(args.repeats)]
    cpu = statistics.median(r["cpu_s"] for r in runs)
    fastest = min(r["cpu_s"] for r in runs)
    msgs = runs[0]["messages"]
    print(json.dumps({
        "bench": "engine", "calls": args.calls, "media": args.media, "repeats": args.repeats,
        "sbc_cpu_s": round(cpu, 4), "calls_per_cpu_s": round(args.calls / cpu, 1),
        "us_per_call": round(cpu / args.calls * 1e6, 1), "us_per_message": round(cpu / msgs * 1e6, 1),
        "us_per_call_min": round(fastest / args.calls * 1e6, 1),
        "spread_pct": round(100 * (max(r["cpu_s"] for r in runs) - fastest) / cpu, 1),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
