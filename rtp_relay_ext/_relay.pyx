# cython: language_level=3
"""Python face of the native RTP relay engine (relay_engine.c) and the stats core (rtp_stats.c).

Python allocates sessions, points their legs at peers, reads stats and frees them;
packets never become Python objects.  Every call that touches a session takes the
owning worker's mutex with the GIL released, so it waits at most one wakeup's work.
"""

from libc.errno cimport errno
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from rtp_relay_ext.events import (
    LEG_A,
    LEG_B,
    DtmfEvent,
    MediaTimeout,
    PoolExhausted,
    RelayError,
    SessionNotFound,
)

LATCH_SYMMETRIC = 0
LATCH_STRICT = 1

NS_PER_SECOND = 1_000_000_000
# Relay port range when none is given: above the Linux ephemeral range's usual
# start is avoided (32768+), and rtpengine/Asterisk defaults sit at 10000-20000.
DEFAULT_PORT_MIN = 16384
DEFAULT_PORT_MAX = 32767
# Concurrent sessions when none is given: 4 sockets each, so 16k sessions need
# 64k descriptors, the largest hard limit commonly configured.
DEFAULT_MAX_SESSIONS = 16384
# Freed ports wait this long before reuse so late packets of the old call
# (and a re-INVITE glare) never reach a new one; rtpengine uses a similar delay.
DEFAULT_QUARANTINE = 10.0
# Media timeouts: rtpengine's defaults are 60 s for an active call and 3600 s on hold.
DEFAULT_MEDIA_TIMEOUT = 60.0
DEFAULT_HOLD_TIMEOUT = 3600.0
# Nap between polls while traffic flows (see relay_engine.c worker_main): bounds the
# added latency; 200 us is a tenth of the 2 ms p99 budget and one G.711 packet
# interval holds 100 such naps, so batches stay small and fair.
DEFAULT_POLL_INTERVAL = 0.0002
# Linux SCHED_FIFO priorities run 1..99.
MAX_RT_PRIORITY = 99
# DSCP EF (46) shifted into the TOS byte: RFC 4594 telephony class.
DEFAULT_TOS = 0xB8
# Payload clock of G.711 (RFC 3551 4.5.14) and the usual dynamic telephone-event type.
DEFAULT_CLOCK_RATE = 8000
DEFAULT_DTMF_PT = 101
# Events drained per poll_events() call: the C queue holds 4096.
cdef size_t EVENTS_PER_POLL = 4096
# Most session ids returned by one sessions_idle_since() call.
cdef size_t IDLE_QUERY_MAX = 65536
# inet_ntop buffer: INET6_ADDRSTRLEN is 46.
cdef enum:
    ADDR_TEXT_LEN = 64

_KIND_NAMES = {0: "rtp", 1: "dtmf", 2: "rtcp", 3: "not_rtp"}
# Backend names accepted by RelayEngine(backend=...) and the RTP_RELAY_BACKEND variable.
BACKEND_ENV = "RTP_RELAY_BACKEND"
_BACKENDS = {"auto": RR_BACKEND_AUTO, "epoll": RR_BACKEND_EPOLL, "io_uring": RR_BACKEND_IO_URING}
_BACKEND_NAMES = {RR_BACKEND_EPOLL: "epoll", RR_BACKEND_IO_URING: "io_uring"}
# Kernel fast path modes accepted by RelayEngine(kernel=...) and the RTP_RELAY_KERNEL variable.
KERNEL_ENV = "RTP_RELAY_KERNEL"
_KERNEL_MODES = {"off": RR_KERNEL_OFF, "auto": RR_KERNEL_AUTO, "on": RR_KERNEL_AUTO}
# Upper bounds (microseconds) of the timing histogram buckets in counters(); the last is open.
TIMING_BOUNDS_US = (100, 500, 1000, 2000, 10000)


def engine_version() -> str:
    """Return the engine's version string (proves the compiled module imports)."""
    return "0.2.0"


def io_uring_status() -> str | None:
    """None if the io_uring backend is built in and usable here, else why not (an errno text)."""
    import os
    if not rr_io_uring_built():
        return "not built in (liburing-dev was missing when the extension was compiled)"
    cdef int rc = rr_io_uring_status()
    if rc == 0:
        return None
    return f"the kernel refused it: {os.strerror(-rc)}"


def kernel_built() -> bool:
    """True if the extension was compiled with the kernel fast path (clang and libbpf-dev)."""
    return rr_kernel_built() == 1


def io_uring_available() -> bool:
    """True if RelayEngine(backend="io_uring") can run in this process."""
    return rr_io_uring_status() == 0


def now() -> float:
    """Return the engine clock (CLOCK_MONOTONIC, same as time.monotonic()) in seconds."""
    return rr_now_ns() / NS_PER_SECOND


cdef int64_t _ns(object seconds) except? -1:
    if seconds is None:
        return -1
    if seconds < 0:
        raise ValueError("a time limit cannot be negative")
    return <int64_t>(seconds * NS_PER_SECOND)


cdef _raise(int rc, object sid=None):
    cdef int err = errno  # first: nothing since the failing C call has touched it
    if rc == RR_ERR_NO_SESSION:
        raise SessionNotFound(sid)
    if rc == RR_ERR_NO_SLOT:
        raise PoolExhausted("max_sessions reached")
    if rc == RR_ERR_NO_PORTS:
        raise PoolExhausted("no free relay port pair (range exhausted or in quarantine)")
    if rc == RR_ERR_ARG:
        raise ValueError("invalid argument")
    if rc == RR_ERR_STATE:
        raise RelayError("engine state does not allow this")
    if rc == RR_ERR_UNSUPPORTED:
        raise RelayError(f"io_uring backend unavailable: {io_uring_status()}")
    import os
    raise RelayError(f"socket operation failed ({os.strerror(err) if err else 'unknown'})")


cdef int _parse(object addr, rr_sockaddr *out) except -1:
    memset(out, 0, sizeof(rr_sockaddr))
    if addr is None:
        return 0
    host, port = addr
    if not 0 < port < 65536:
        raise ValueError(f"bad port {port!r}")
    if rr_parse_addr(str(host).encode(), <uint16_t>port, out) != 0:
        raise ValueError(f"not an IP address: {host!r}")
    return 0


cdef object _addr(const rr_sockaddr *a):
    cdef char buf[ADDR_TEXT_LEN]
    cdef uint16_t port = 0
    if a.sa.sa_family == 0 or rr_format_addr(a, buf, ADDR_TEXT_LEN, &port) != 0:
        return None
    return (buf.decode(), port)


cdef dict _report(const rr_stream_report *r):
    return {
        "packets": r.packets,
        "bytes": r.bytes,
        "expected": r.expected,
        "lost": r.lost,
        "loss_fraction": r.loss_fraction,
        "jitter_ms": r.jitter_ms,
        "duplicates": r.duplicates,
        "out_of_order": r.out_of_order,
        "non_rtp": r.non_rtp,
        "rtcp_packets": r.rtcp_packets,
        "rtcp_bytes": r.rtcp_bytes,
        "dtmf_packets": r.dtmf_packets,
        "seq_resets": r.seq_resets,
        "ssrc": r.ssrc,
        "extended_max_seq": r.extended_max_seq,
        "mos": r.mos,
    }


cdef dict _leg_stats(const rr_leg_info *li):
    d = _report(&li.stats)
    d["forwarded"] = li.forwarded
    d["kernel_forwarded"] = li.kernel_forwarded
    return d


cdef dict _leg(const rr_leg_info *li):
    d = _report(&li.stats)
    d.update(
        rtp_port=li.rtp_port,
        rtcp_port=li.rtcp_port,
        signalled_rtp=_addr(&li.signalled_rtp),
        signalled_rtcp=_addr(&li.signalled_rtcp),
        latched_rtp=_addr(&li.latched_rtp),
        latched_rtcp=_addr(&li.latched_rtcp),
        rtcp_mux=bool(li.rtcp_mux),
        strict=li.latch_mode == RR_LATCH_STRICT,
        last_packet=li.last_packet_ns / NS_PER_SECOND if li.last_packet_ns else None,
        forwarded=li.forwarded,
        kernel_forwarded=li.kernel_forwarded,
        kernel=bool(li.kernel),
        unknown_source=li.unknown_source,
        no_destination=li.no_destination,
        send_errors=li.send_errors,
        truncated=li.truncated,
    )
    return d


cdef dict _info(const rr_session_info *info):
    """Session info keyed by direction: 'a_to_b' holds what leg A received and sent on to B."""
    return {
        "a_to_b": _leg(&info.leg[0]),
        "b_to_a": _leg(&info.leg[1]),
        "held": bool(info.held),
        "created": info.created_ns / NS_PER_SECOND,
        "timeout": info.timeout_ns / NS_PER_SECOND,
        "hold_timeout": info.hold_timeout_ns / NS_PER_SECOND,
    }


cdef class RelayEngine:
    """The relay: a port pool, a session table and native worker threads.

    Sessions are plain integer ids (slot and generation), so a stale id after
    ``free`` raises SessionNotFound instead of touching a newer call.  Methods
    are safe to call from any Python thread.

    The per-call control methods keep the GIL: they take a worker's lock for
    microseconds and never wait on Python.  Releasing it around each of them
    (about ten per call) handed the GIL to any thread waiting for it (the
    store's) and made the signalling thread queue to get it back.  Only start,
    stop and close, which join threads, release it.
    """

    cdef rr_engine *_e
    cdef readonly str bind_ip
    cdef readonly int port_min, port_max

    def __cinit__(self):
        self._e = NULL

    def __init__(
        self,
        bind_ip: str = "127.0.0.1",
        port_min: int = DEFAULT_PORT_MIN,
        port_max: int = DEFAULT_PORT_MAX,
        *,
        workers: int = 1,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        quarantine: float = DEFAULT_QUARANTINE,
        rcvbuf: int = 0,
        sndbuf: int = 0,
        tos: int = DEFAULT_TOS,
        media_timeout: float = DEFAULT_MEDIA_TIMEOUT,
        hold_timeout: float = DEFAULT_HOLD_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        rt_priority: int = 0,
        backend: str | None = None,
        worker_cpus: list[int] | tuple[int, ...] | None = None,
        kernel: str | None = None,
        start: bool = True,
    ) -> None:
        """Create the engine and (by default) start its worker threads.

        ``backend`` is "epoll", "io_uring" or "auto" (io_uring when built in and
        the kernel allows it, else epoll); None reads the RTP_RELAY_BACKEND
        environment variable, default "auto".  ``engine.backend`` tells which
        runs.  Asking for "io_uring" where it cannot run raises RelayError.
        ``worker_cpus`` pins worker i to CPU worker_cpus[i % len(worker_cpus)].

        ``kernel`` is the kernel fast path (README.md): "auto" (default; None reads
        RTP_RELAY_KERNEL) relays latched IPv4 RTP in a BPF program when the
        extension has it and the process may load it (CAP_BPF, CAP_NET_ADMIN,
        Linux 6.6+), else through the workers; "on" raises RelayError where it
        cannot; "off" never.  ``engine.kernel`` and ``engine.kernel_status`` tell.

        ``poll_interval`` (seconds, 0 = always block in epoll_wait) trades at most
        that much added latency for not paying a thread wakeup per packet under load.
        ``rt_priority`` > 0 runs the workers SCHED_FIFO at that priority when the
        process may (CAP_SYS_NICE); ``counters()['realtime_workers']`` tells.
        Raises ValueError for a bad address, range (fewer than two port pairs) or
        worker count, RelayError if the kernel refuses epoll/eventfd/threads.
        """
        cdef rr_config cfg
        cdef int err = 0
        memset(&cfg, 0, sizeof(cfg))
        if not 0 < port_min <= port_max < 65536:
            raise ValueError("port range must satisfy 0 < port_min <= port_max < 65536")
        _parse((bind_ip, 1), &cfg.bind_addr)
        cfg.port_min = port_min
        cfg.port_max = port_max
        cfg.workers = workers
        cfg.max_sessions = max_sessions
        cfg.quarantine_ns = _ns(quarantine)
        cfg.rcvbuf = rcvbuf
        cfg.sndbuf = sndbuf
        cfg.tos = tos
        cfg.default_timeout_ns = _ns(media_timeout)
        cfg.default_hold_timeout_ns = _ns(hold_timeout)
        cfg.poll_interval_ns = _ns(poll_interval)
        if not 0 <= rt_priority <= MAX_RT_PRIORITY:
            raise ValueError(f"rt_priority must be 0..{MAX_RT_PRIORITY}")
        cfg.rt_priority = rt_priority
        if backend is None:
            import os
            backend = os.environ.get(BACKEND_ENV, "auto") or "auto"
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {sorted(_BACKENDS)}, not {backend!r}")
        cfg.backend = _BACKENDS[backend]
        cpus = list(worker_cpus or ())
        if len(cpus) > RR_MAX_WORKERS:
            raise ValueError(f"at most {RR_MAX_WORKERS} worker_cpus")
        cfg.ncpus = len(cpus)
        for i, cpu in enumerate(cpus):
            cfg.cpus[i] = cpu
        if kernel is None:
            import os
            kernel = os.environ.get(KERNEL_ENV, "auto") or "auto"
        if kernel not in _KERNEL_MODES:
            raise ValueError(f"kernel must be one of {sorted(_KERNEL_MODES)}, not {kernel!r}")
        cfg.kernel = _KERNEL_MODES[kernel]
        self._e = rr_engine_new(&cfg, &err)
        if self._e == NULL:
            if err == RR_ERR_ARG:
                raise ValueError("invalid engine configuration (workers, max_sessions or port range)")
            _raise(err)
        self.bind_ip = bind_ip
        self.port_min = port_min
        self.port_max = port_max
        if kernel == "on" and not self.kernel:
            reason = self.kernel_status
            self.close()
            raise RelayError(f"kernel fast path unavailable: {reason}")
        if start:
            self.start()

    def __dealloc__(self):
        if self._e != NULL:
            with nogil:
                rr_engine_free(self._e)
            self._e = NULL

    cdef rr_engine *_engine(self) except NULL:
        if self._e == NULL:
            raise RelayError("engine is closed")
        return self._e

    @property
    def kernel(self) -> bool:
        """True when the kernel fast path is attached (latched RTP relayed in the kernel)."""
        cdef const char *why
        return rr_engine_kernel(self._engine(), &why) == 1

    @property
    def kernel_status(self) -> str:
        """Where the kernel fast path is attached, or why it is off."""
        cdef const char *why
        rr_engine_kernel(self._engine(), &why)
        return why.decode()

    @property
    def backend(self) -> str:
        """The I/O backend the workers run: "epoll" or "io_uring"."""
        return _BACKEND_NAMES[rr_engine_backend(self._engine())]

    def start(self) -> None:
        """Start the worker threads; RelayError if already running or a worker cannot set up its ring."""
        cdef int rc = rr_engine_start(self._engine())
        if rc != RR_OK:
            _raise(rc)

    def stop(self) -> None:
        """Stop and join the worker threads; sessions and sockets stay (packets queue in the kernel)."""
        cdef rr_engine *e = self._engine()
        with nogil:
            rr_engine_stop(e)

    def close(self) -> None:
        """Stop the workers and close every session's sockets; the engine is unusable after."""
        cdef rr_engine *e = self._e
        if e != NULL:
            self._e = NULL
            with nogil:
                rr_engine_free(e)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def allocate(
        self,
        *,
        clock_rate: int = DEFAULT_CLOCK_RATE,
        dtmf_pt: int | None = DEFAULT_DTMF_PT,
        timeout: float | None = None,
        hold_timeout: float | None = None,
        defer_wake: bool = False,
    ) -> int:
        """Open a session: an RTP/RTCP port pair for each leg, no peers yet.

        Returns the session id.  Raises PoolExhausted when no slot or no port
        pair outside quarantine is free.  Packets arriving before ``set_peer``
        latch their source (symmetric mode) but have nowhere to go until the
        other leg has an address: they are dropped and counted (no_destination).

        With io_uring a worker thread must be woken to arm the new sockets'
        receives.  ``defer_wake`` leaves that to :meth:`wake_owed`, so a caller
        that opens several sessions in one turn wakes each worker once; until
        then (or the worker's next round) datagrams wait in the sockets.
        """
        cdef rr_session_params p
        cdef uint64_t sid = 0
        cdef int rc
        cdef rr_engine *e = self._engine()
        p.clock_rate = clock_rate
        p.dtmf_pt = -1 if dtmf_pt is None else dtmf_pt
        p.timeout_ns = _ns(timeout)
        p.hold_timeout_ns = _ns(hold_timeout)
        p.defer_wake = 1 if defer_wake else 0
        rc = rr_session_alloc(e, &p, &sid)
        if rc != RR_OK:
            _raise(rc)
        return sid

    def wake_owed(self) -> int:
        """Wake the workers that ``allocate(defer_wake=True)`` left unwoken; how many were."""
        return rr_engine_wake_owed(self._engine())

    def free(self, session_id: int, *, stats_only: bool = False) -> dict:
        """Close a session's sockets and return its final info (as ``session_info``).

        ``stats_only`` returns only each direction's stream statistics (the ``stats`` keys
        of ``session_info`` plus ``forwarded`` and ``kernel_forwarded``) under ``a_to_b`` and
        ``b_to_a``: what a CDR keeps, without formatting the addresses and timers nobody
        reads once the call is over (a third of the signalling thread's cost of a free).
        Its ports go back to the pool after the quarantine.  SessionNotFound if unknown.
        """
        cdef rr_session_info info
        cdef int rc
        cdef rr_engine *e = self._engine()
        cdef uint64_t sid = session_id
        rc = rr_session_free(e, sid, &info)
        if rc != RR_OK:
            _raise(rc, session_id)
        if stats_only:
            return {"a_to_b": _leg_stats(&info.leg[0]), "b_to_a": _leg_stats(&info.leg[1])}
        return _info(&info)

    def set_peer(
        self,
        session_id: int,
        leg: int,
        rtp: tuple[str, int] | None,
        rtcp: tuple[str, int] | None = None,
        *,
        rtcp_mux: bool = False,
        strict: bool = False,
    ) -> None:
        """Point ``leg`` at its peer's signalled address (SDP offer/answer, re-INVITE).

        ``rtcp`` defaults to the RTP port + 1; with ``rtcp_mux`` RTCP shares the
        RTP port both ways.  ``strict`` accepts packets only from the signalled
        address; otherwise the first packet's source is latched (symmetric RTP
        behind NAT).  Any previous latch is forgotten, so a re-INVITE that moves
        the media is followed.  Raises SessionNotFound, ValueError.
        """
        cdef rr_peer peer
        cdef int rc
        cdef rr_engine *e = self._engine()
        cdef uint64_t sid = session_id
        cdef int c_leg = leg
        if leg not in (LEG_A, LEG_B):
            raise ValueError("leg must be LEG_A or LEG_B")
        _parse(rtp, &peer.rtp)
        _parse(rtcp, &peer.rtcp)
        peer.rtcp_mux = 1 if rtcp_mux else 0
        peer.latch_mode = RR_LATCH_STRICT if strict else RR_LATCH_SYMMETRIC
        rc = rr_session_set_peer(e, sid, c_leg, &peer)
        if rc != RR_OK:
            _raise(rc, session_id)

    def set_hold(self, session_id: int, held: bool) -> None:
        """Mark the call held (the hold timeout applies) or resumed. SessionNotFound if unknown."""
        cdef int rc
        cdef rr_engine *e = self._engine()
        cdef uint64_t sid = session_id
        cdef int h = 1 if held else 0
        rc = rr_session_set_hold(e, sid, h)
        if rc != RR_OK:
            _raise(rc, session_id)

    def restart_idle(self, session_id: int) -> None:
        """Count the media timeout afresh from now and re-arm its report (the call was answered:
        silence while it rang must not count). Going on or off hold does this by itself."""
        cdef int rc
        cdef rr_engine *e = self._engine()
        cdef uint64_t sid = session_id
        rc = rr_session_restart_idle(e, sid)
        if rc != RR_OK:
            _raise(rc, session_id)

    def set_timeouts(self, session_id: int, timeout: float | None = None,
                     hold_timeout: float | None = None) -> None:
        """Change the media timeouts (seconds, 0 disables, None keeps) and re-arm the report."""
        cdef int rc
        cdef rr_engine *e = self._engine()
        cdef uint64_t sid = session_id
        cdef int64_t t = _ns(timeout)
        cdef int64_t h = _ns(hold_timeout)
        rc = rr_session_set_timeouts(e, sid, t, h)
        if rc != RR_OK:
            _raise(rc, session_id)

    def set_media(self, session_id: int, clock_rate: int, dtmf_pt: int | None) -> None:
        """Change the payload clock and telephone-event type after a re-INVITE changed codecs."""
        cdef int rc
        cdef rr_engine *e = self._engine()
        cdef uint64_t sid = session_id
        cdef unsigned int c = clock_rate
        cdef int pt = -1 if dtmf_pt is None else dtmf_pt
        rc = rr_session_set_media(e, sid, c, pt)
        if rc != RR_OK:
            _raise(rc, session_id)

    def session_info(self, session_id: int) -> dict:
        """Ports, peers (signalled and latched), counters and stats per direction.

        Keys: 'a_to_b' (packets received on leg A and sent to B: its ports are
        A's ports), 'b_to_a', 'held', 'created', 'timeout', 'hold_timeout'.
        """
        cdef rr_session_info info
        cdef int rc
        cdef rr_engine *e = self._engine()
        cdef uint64_t sid = session_id
        rc = rr_session_info_get(e, sid, &info)
        if rc != RR_OK:
            _raise(rc, session_id)
        return _info(&info)

    def stats(self, session_id: int) -> dict:
        """Same as session_info: per-direction stats ('a_to_b', 'b_to_a') plus session state."""
        return self.session_info(session_id)

    def ports(self, session_id: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """((A rtp, A rtcp), (B rtp, B rtcp)): what the SDP toward each peer advertises."""
        cdef uint16_t p[4]
        cdef int rc
        cdef rr_engine *e = self._engine()
        cdef uint64_t sid = session_id
        rc = rr_session_ports(e, sid, p)
        if rc != RR_OK:
            _raise(rc, session_id)
        return (p[0], p[1]), (p[2], p[3])

    def sessions_idle_since(self, since: float) -> list[int]:
        """Ids of sessions with no packet in either direction since ``since`` (engine clock)."""
        cdef rr_engine *e = self._engine()
        cdef uint64_t *ids = <uint64_t *>malloc(IDLE_QUERY_MAX * sizeof(uint64_t))
        cdef size_t n
        cdef int64_t t = <int64_t>(since * NS_PER_SECOND)
        if ids == NULL:
            raise MemoryError()
        try:
            n = rr_sessions_idle_since(e, t, ids, IDLE_QUERY_MAX)
            return [ids[i] for i in range(n)]
        finally:
            free(ids)

    @property
    def events_fd(self) -> int:
        """An eventfd that is readable while events wait; watch it with loop.add_reader."""
        return rr_engine_event_fd(self._engine())

    def poll_events(self) -> list:
        """Drain queued DtmfEvent / MediaTimeout events (never blocks)."""
        cdef rr_engine *e = self._engine()
        cdef rr_event *evs = <rr_event *>malloc(EVENTS_PER_POLL * sizeof(rr_event))
        cdef size_t n
        cdef size_t i
        if evs == NULL:
            raise MemoryError()
        out = []
        try:
            n = rr_events_poll(e, evs, EVENTS_PER_POLL)
            for i in range(n):
                if evs[i].type == RR_EVENT_DTMF:
                    out.append(DtmfEvent(
                        session_id=evs[i].session_id,
                        leg=evs[i].leg,
                        digit=chr(rr_dtmf_digit(evs[i].event)),
                        event=evs[i].event,
                        duration_ms=evs[i].duration * 1000.0 / evs[i].clock_rate,
                        volume=evs[i].volume,
                        end_seen=bool(evs[i].end_seen),
                        at=evs[i].at_ns / NS_PER_SECOND,
                    ))
                elif evs[i].type == RR_EVENT_TIMEOUT:
                    out.append(MediaTimeout(
                        session_id=evs[i].session_id,
                        idle=evs[i].idle_ns / NS_PER_SECOND,
                        held=bool(evs[i].held),
                        at=evs[i].at_ns / NS_PER_SECOND,
                    ))
        finally:
            free(evs)
        return out

    def counters(self) -> dict:
        """Engine-wide counters: wakeups, recv/send calls, packets, sessions, ports, timing.

        ``recv_calls``/``send_calls``: epoll backend, recvmmsg/sendmmsg calls; io_uring,
        receive completions and submitting io_uring_enter calls.  Where packets wait,
        bucketed by TIMING_BOUNDS_US: ``late_naps``, busy naps by how late they ended
        (wakeup scheduling delay); ``round_work``, rounds that moved packets by the
        worker's CPU time in them (queueing behind work); ``round_stall``, the same
        rounds by wall minus CPU time (preempted, or a control call held the lock).
        io_uring: ``control_wakes``, eventfd writes that woke a worker for control work;
        ``control_naps``, new sessions a napping worker armed unwoken (see the README).
        """
        cdef rr_engine_counters c
        cdef rr_engine *e = self._engine()
        rr_engine_counters_get(e, &c)
        return {
            "wakeups": c.wakeups,
            "recv_calls": c.recv_calls,
            "send_calls": c.send_calls,
            "packets_in": c.packets_in,
            "packets_out": c.packets_out,
            "events_dropped": c.events_dropped,
            "sessions": c.sessions,
            "ports_free": c.ports_free,
            "ports_total": c.ports_total,
            "ports_spare": c.ports_spare,
            "spare_hits": c.spare_hits,
            "spare_misses": c.spare_misses,
            "spare_drained": c.spare_drained,
            "realtime_workers": c.realtime_workers,
            "pinned_workers": c.pinned_workers,
            "recv_errors": c.recv_errors,
            "control_wakes": c.control_wakes,
            "control_naps": c.control_naps,
            "late_naps": [c.late[i] for i in range(RR_LATE_BUCKETS)],
            "round_work": [c.work[i] for i in range(RR_LATE_BUCKETS)],
            "round_stall": [c.stall[i] for i in range(RR_LATE_BUCKETS)],
            "kernel_flows": c.kernel_flows,
            "kernel_installs": c.kernel_installs,
            "kernel_withdrawals": c.kernel_withdrawals,
            "kernel_packets": c.kernel_packets,
            "kernel_bytes": c.kernel_bytes,
            "kernel_to_worker": c.kernel_to_worker,
            "kernel_run_ns": c.kernel_run_ns,
            "kernel_run_cnt": c.kernel_run_cnt,
        }

    def worker_tids(self) -> list[int]:
        """Kernel thread ids of the running workers (for /proc/self/task/TID/stat CPU accounting)."""
        cdef rr_engine *e = self._engine()
        return [rr_engine_worker_tid(e, i) for i in range(rr_engine_worker_count(e))]


cdef class StreamStatsFeeder:
    """One direction's stats state fed by hand: the engine's own C code, no sockets.

    For tests and offline analysis: ``feed`` takes a datagram and its arrival time
    (seconds) and returns the packet kind and any completed DTMF events.
    """

    cdef rr_stream_stats _s
    cdef int _mux

    def __init__(self, clock_rate: int = DEFAULT_CLOCK_RATE, dtmf_pt: int | None = DEFAULT_DTMF_PT,
                 rtcp_mux: bool = False) -> None:
        if clock_rate <= 0:
            raise ValueError("clock_rate must be positive")
        rr_stream_init(&self._s, clock_rate, -1 if dtmf_pt is None else dtmf_pt)
        self._mux = 1 if rtcp_mux else 0

    def feed(self, packet: bytes, arrival: float) -> tuple[str, list]:
        """Account one packet; returns (kind, [(digit, duration_ms, volume, end_seen), ...])."""
        cdef rr_dtmf_event d[2]
        cdef int nd = 0
        cdef const uint8_t[:] view = packet
        cdef size_t n = len(packet)
        cdef const uint8_t *ptr = &view[0] if n else NULL
        cdef uint8_t empty = 0
        if ptr == NULL:
            ptr = &empty
        kind = rr_stream_on_packet(&self._s, ptr, n, <int64_t>(arrival * NS_PER_SECOND), self._mux, d, &nd)
        events = [
            (chr(rr_dtmf_digit(d[i].event)), d[i].duration * 1000.0 / self._s.clock_rate,
             d[i].volume, bool(d[i].end_seen))
            for i in range(nd)
        ]
        return _KIND_NAMES[kind], events

    def report(self) -> dict:
        """Stats as the engine reports them for a direction (see RelayEngine.session_info)."""
        cdef rr_stream_report r
        rr_stream_report_get(&self._s, &r)
        return _report(&r)


def mos_g711(loss_fraction: float, jitter_ms: float, base_delay_ms: float = RR_MOS_BASE_DELAY_MS) -> float:
    """E-model (ITU-T G.107, simplified) MOS-CQE for G.711 with PLC; see README.md for the formula."""
    return rr_mos_g711(loss_fraction, jitter_ms, base_delay_ms)
