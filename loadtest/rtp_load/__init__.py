"""RTP load generator: N concurrent G.711 calls through rtp_relay_ext sessions.

``python -m loadtest.rtp_load --streams N --seconds S`` starts a RelayEngine in
this process, allocates N sessions, points them at the native generator's
loopback sockets, sends 20 ms G.711 packets (172 bytes, 50 pps) both ways for S
seconds and prints one JSON object: counts, loss, relayed pps, added latency
percentiles (send stamp in the payload to receive) and the CPU of the relay's
worker threads (plus, with the kernel fast path, its BPF program's run time).  Only 127.0.0.1 is ever addressed; the run is bounded by S plus
a short drain and stops by itself.

What the latency includes: the sender stamps CLOCK_REALTIME just before each
sendmmsg batch; the receiver takes the kernel's arrival stamp (SO_TIMESTAMPNS),
set when the relay's send delivers the datagram into the generator's socket.
So it is generator batch position (a few us per packet ahead in the batch) +
time queued in the relay socket + relay processing, and never the generator's
own receive delay.  The sender's schedule lateness (tx_late_*) and the CPU left
to the relay (other_cpu_cores: everything on the machine outside this process)
are reported so a starved generator or a busy machine is visible in the figures.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass

from rtp_relay_ext import LEG_A, LEG_B, TIMING_BOUNDS_US, RelayEngine

from ._gen import Generator

HOST = "127.0.0.1"
PTIME_NS = 20_000_000  # 20 ms packetisation, the G.711 default (RFC 3551)
G711_PAYLOAD = 160  # 8000 Hz x 20 ms, one byte per sample -> 172-byte RTP packets
# Generator pacing tick: packets due within a tick go out in one sendmmsg burst.
# 0.5 ms keeps the burst at ~100 packets at 2000 calls and adds at most 0.5 ms of
# schedule skew (not latency: the stamp is taken at send time).
TICK_NS = 500_000
# Time after the last send before counting: anything later than this is lost.
DRAIN_NS = 500_000_000
# Generator sockets per side; each receives ~1/K of the traffic, so K sockets of
# GEN_RCVBUF absorb relay bursts without drops while costing few syscalls.
SOCKETS_PER_SIDE = 4
GEN_RCVBUF = 16 * 1024 * 1024
# Generator sender threads: at 2000 calls (200k pps out) the loopback send path alone
# needs about a core, and one late sender shows up as latency (its send stamp is taken
# per batch); two keep each under half a core on this 2-core machine.
GEN_SENDERS = 2
# Ports per call: RTP+RTCP on each of two legs.
PORTS_PER_CALL = 4
# Spare relay ports beyond the need, so a port held by another process is skipped.
PORT_SLACK = 256
DEFAULT_PORT_MIN = 30000
# Bounds that keep a run a load test of this machine, not an accident.
MAX_CALLS = 8000
MAX_SECONDS = 300.0


@dataclass(frozen=True)
class ThreadCpu:
    """CPU seconds (user + system) of a set of threads, read from /proc/self/task."""

    user: float
    system: float

    @classmethod
    def read(cls, tids: list[int]) -> ThreadCpu:
        tick = os.sysconf("SC_CLK_TCK")
        user = system = 0.0
        for tid in tids:
            with open(f"/proc/self/task/{tid}/stat") as f:
                # fields after the parenthesised command name; utime and stime are 14 and 15
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11]) / tick
            system += int(fields[12]) / tick
        return cls(user, system)


@dataclass(frozen=True)
class MachineCpu:
    """Machine-wide CPU seconds from /proc/stat (includes softirq work done for loopback)."""

    busy: float
    softirq: float

    @classmethod
    def read(cls) -> MachineCpu:
        tick = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            parts = f.readline().split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[:8])
        return cls((user + nice + system + irq + softirq + steal) / tick, softirq / tick)


def process_cpu() -> float:
    """CPU seconds (user + system) of this whole process, all threads."""
    t = os.times()
    return t.user + t.system


def io_uring_kernel_tids() -> list[int]:
    """Threads io_uring created for this process (iou-wrk-*, iou-sqp-*): relay work if any."""
    tids = []
    for name in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{name}/comm") as f:
                if f.read().startswith("iou-"):
                    tids.append(int(name))
        except OSError:
            continue  # exited meanwhile
    return tids


def _delta(before: list[int], after: list[int]) -> list[int]:
    return [b - a for a, b in zip(before, after, strict=True)]


def raise_fd_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


BPF_STATS = "/proc/sys/kernel/bpf_stats_enabled"


def _write_bpf_stats(value: str) -> None:
    with open(BPF_STATS, "w") as f:
        f.write(value)


def _enable_bpf_stats() -> str | None:
    """Switch on BPF run-time accounting; returns the old setting to restore (None: could not)."""
    try:
        with open(BPF_STATS) as f:
            old = f.read().strip()
        _write_bpf_stats("1")
    except OSError:
        return None
    return old


def run(
    calls: int,
    seconds: float,
    *,
    workers: int = 1,
    port_min: int = DEFAULT_PORT_MIN,
    rt_priority: int = 0,
    backend: str | None = None,
    relay_cpus: list[int] | None = None,
    generator_cpu: int = -1,
    poll_interval: float | None = None,
    kernel: str | None = None,
    senders: int = GEN_SENDERS,
) -> dict:
    """Run one load test and return its result (the JSON object printed by main).

    ``backend``: relay I/O backend ("epoll", "io_uring", "auto"; None = the
    engine's default).  ``relay_cpus`` pins the relay workers, ``generator_cpu``
    (>= 0) the generator's two threads.  ``poll_interval`` overrides the relay's
    busy-poll nap (seconds).  ``kernel`` is the relay's kernel fast path mode
    ("auto", "on", "off"; None = the engine's default): with it on, the BPF
    program's run time (kernel.bpf_stats_enabled, switched on for the run) counts
    as relay CPU beside the worker threads'.
    """
    if not 1 <= calls <= MAX_CALLS:
        raise ValueError(f"calls must be 1..{MAX_CALLS}")
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be in (0, {MAX_SECONDS}]")
    fd_limit = raise_fd_limit(calls * PORTS_PER_CALL + 2 * SOCKETS_PER_SIDE + 64)
    port_max = min(65535, port_min + calls * PORTS_PER_CALL + PORT_SLACK)
    options = {} if poll_interval is None else {"poll_interval": poll_interval}
    engine = RelayEngine(
        HOST,
        port_min,
        port_max,
        workers=workers,
        max_sessions=calls,
        quarantine=0,
        media_timeout=0,
        hold_timeout=0,
        rt_priority=rt_priority,
        backend=backend,
        worker_cpus=relay_cpus,
        kernel=kernel,
        **options,
    )
    stats_was = _enable_bpf_stats() if engine.kernel else None
    try:
        gen = Generator(calls, SOCKETS_PER_SIDE, GEN_RCVBUF)
        sessions = []
        for call in range(calls):
            sid = engine.allocate()
            (a_rtp, _), (b_rtp, _) = engine.ports(sid)
            a_port, b_port = gen.peer_ports(call)
            engine.set_peer(sid, LEG_A, (HOST, a_port))
            engine.set_peer(sid, LEG_B, (HOST, b_port))
            gen.set_target(call, a_rtp, b_rtp)
            sessions.append(sid)
        tids = engine.worker_tids() + io_uring_kernel_tids()
        load_before = os.getloadavg()[0]
        c0 = engine.counters()
        t_cpu0 = ThreadCpu.read(tids)
        m_cpu0 = MachineCpu.read()
        p_cpu0 = process_cpu()
        wall0 = time.monotonic()
        g = gen.run(seconds, PTIME_NS, G711_PAYLOAD, TICK_NS, DRAIN_NS, rt_priority, generator_cpu, senders)
        wall = time.monotonic() - wall0
        late_tids = [t for t in io_uring_kernel_tids() if t not in tids]  # none expected: reported
        t_cpu1 = ThreadCpu.read(tids)
        m_cpu1 = MachineCpu.read()
        p_cpu1 = process_cpu()
        c1 = engine.counters()
        relay_backend = engine.backend
        kernel_on, kernel_status = engine.kernel, engine.kernel_status
        drops = {"unknown_source": 0, "send_errors": 0, "no_destination": 0}
        for sid in sessions:
            info = engine.session_info(sid)
            for direction in ("a_to_b", "b_to_a"):
                for key in drops:
                    drops[key] += info[direction][key]
    finally:
        engine.close()
        if stats_was is not None:
            _write_bpf_stats(stats_was)
    relayed = c1["packets_out"] - c0["packets_out"]
    send_s = g["send_seconds"] or seconds
    thread_cpu = (t_cpu1.user - t_cpu0.user) + (t_cpu1.system - t_cpu0.system)
    # The kernel path runs in the sender's softirq context (charged to the generator's
    # threads); its own cost is the program's run time, which bpf_stats measures.
    kernel_prog_cpu = (c1["kernel_run_ns"] - c0["kernel_run_ns"]) / 1e9
    kernel_packets = c1["kernel_packets"] - c0["kernel_packets"]
    relay_cpu = thread_cpu + kernel_prog_cpu
    recv_calls = c1["recv_calls"] - c0["recv_calls"]
    send_calls = c1["send_calls"] - c0["send_calls"]
    wakeups = c1["wakeups"] - c0["wakeups"]
    return {
        "benchmark": "rtp_load",
        "streams": calls,
        "directions": 2 * calls,
        "seconds": seconds,
        "backend": relay_backend,
        "kernel": kernel_on,
        "kernel_status": kernel_status,
        "workers": workers,
        "relay_pinned_workers": c1["pinned_workers"],
        "generator_pinned_threads": g["pinned_threads"],
        "relay_realtime_workers": c1["realtime_workers"],
        "generator_realtime_threads": g["realtime_threads"],
        "packets_sent": g["sent"],
        "packets_received": g["received"],
        "loss": (g["sent"] - g["received"]) / g["sent"] if g["sent"] else 0.0,
        "streams_with_loss": g["streams_with_loss"],
        "send_errors": g["send_errors"],
        "relay_drops": drops,
        "relayed_pps": round(relayed / send_s),
        "latency_p50_ms": g["latency_p50_us"] / 1000,
        "latency_p99_ms": g["latency_p99_us"] / 1000,
        "latency_p999_ms": g["latency_p999_us"] / 1000,
        "latency_max_ms": g["latency_max_us"] / 1000,
        "relay_cpu_cores": round(relay_cpu / wall, 3),
        "relay_thread_cpu_cores": round(thread_cpu / wall, 3),
        "kernel_packets": kernel_packets,
        "kernel_to_worker": c1["kernel_to_worker"] - c0["kernel_to_worker"],
        "kernel_prog_cpu_cores": round(kernel_prog_cpu / wall, 4),
        "kernel_prog_ns_per_packet": round(kernel_prog_cpu / kernel_packets * 1e9) if kernel_packets else None,
        "relay_cpu_us_per_packet": round(relay_cpu / relayed * 1e6, 2) if relayed else None,
        "relay_cpu_user_s": round(t_cpu1.user - t_cpu0.user, 2),
        "relay_cpu_system_s": round(t_cpu1.system - t_cpu0.system, 2),
        "generator_senders": senders,
        "generator_cpu_cores": round((g["sender_cpu_s"] + g["receiver_cpu_s"]) / wall, 3),
        "generator_tx_late_p99_ms": g["tx_late_p99_us"] / 1000,
        "generator_tx_late_max_ms": g["tx_late_max_us"] / 1000,
        "machine_busy_cores": round((m_cpu1.busy - m_cpu0.busy) / wall, 3),
        "machine_softirq_cores": round((m_cpu1.softirq - m_cpu0.softirq) / wall, 3),
        "other_cpu_cores": round(((m_cpu1.busy - m_cpu0.busy) - (p_cpu1 - p_cpu0)) / wall, 3),
        "load_average_before": round(load_before, 2),
        "relay_late_naps": _delta(c0["late_naps"], c1["late_naps"]),
        "relay_round_work": _delta(c0["round_work"], c1["round_work"]),
        "relay_round_stall": _delta(c0["round_stall"], c1["round_stall"]),
        "relay_timing_bounds_us": list(TIMING_BOUNDS_US),
        "unaccounted_io_uring_threads": len(late_tids),
        # epoll: epoll_wait + recvmmsg + sendmmsg; io_uring: one io_uring_enter per round
        # (wakeups) + the submitting ones (send_calls); its recv_calls are completions
        "relay_syscalls_per_packet": round(
            (wakeups + send_calls + (recv_calls if relay_backend == "epoll" else 0)) / relayed, 3
        )
        if relayed
        else None,
        "relay_packets_per_wakeup": round(relayed / wakeups, 1) if wakeups else None,
        "fd_limit": fd_limit,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }
