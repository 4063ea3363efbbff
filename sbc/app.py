"""Wiring: settings → listeners → SIP core, on one uvloop event loop.

The only place where sockets, the clock and the sans-I/O core meet: every input is handed to
:class:`sbc.core.SipCore` with ``loop.time()``, everything it wants sent is sent, and its next
timer is scheduled with ``call_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

from . import metrics
from .b2bua.auth import WallClockAuthenticator
from .b2bua.engine import B2BUA, B2BUAConfig
from .config import Settings, parse_port_range
from .core import SipCore
from .media.manager import MediaManager
from .overload import OverloadGuard, OverloadMonitor
from .resolver import DnsCache, nameservers, provisioned_names
from .sip.digest import DigestAuthenticator
from .sip.events import Address, Outgoing
from .sip.framing import FramingError
from .sip.timers import TimerConfig
from .store.cdr import CdrRecord
from .store.store import Store
from .transport.steering import place_this_process, worker_for_call_id
from .transport.tcp import TcpTransport
from .transport.udp import UdpListener, start_udp
from .workers import WorkerInfo
from .workers.bus import KIND_SIP, KIND_TCP_SEND, WorkerBus
from .workers.forward import FrameError, pack_message, unpack_message

log = logging.getLogger(__name__)

# Most CDRs written in one transaction: bounds a transaction's size after a burst.
CDR_BATCH_MAX = 500
# After the first CDR of a batch, the writer waits this long for more before it writes. Each
# write is several round trips to the database driver's thread (aiosqlite: a queue put and a
# GIL hand-over each), and without the wait batches were a few CDRs at 1,000 calls/s: those
# hand-overs were most of the signalling thread's futex calls. A CDR reaches the store at most
# this much later; stop() still writes everything queued.
CDR_BATCH_WINDOW_S = 0.1
# How often names asked for by calls (or past their TTL) are resolved: a new name costs at most
# this long of failed-over attempts.
DNS_REFRESH_INTERVAL_S = 2.0
# How long a provisioning load waits for its names before the tables go live anyway.
DNS_LOAD_WAIT_S = 5.0


class SbcApp:
    """One running SBC: transports, SIP core, timers. Use :meth:`start` and :meth:`stop`."""

    def __init__(self, settings: Settings, worker: WorkerInfo | None = None) -> None:
        self.settings = settings
        # One of several workers (sbc run --workers N), or None for a standalone SBC.
        self.worker = worker
        self.bus: WorkerBus | None = None
        self.control = None  # sbc.workers.control.ControlServer: what worker 0's API asks of this one
        self.core: SipCore | None = None
        self.udp: dict[tuple[str, int], UdpListener] = {}
        self._udp_default: UdpListener | None = None
        self.tcp: TcpTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        # Media anchoring; its relay wake-ups are batched and run by flush() (see _start_relay).
        self.media: MediaManager | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopped = asyncio.Event()
        self.store: Store | None = None
        self.b2bua: B2BUA | None = None
        self._cdr_queue: asyncio.Queue[CdrRecord] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._version = -1
        self.overload = OverloadGuard(lag_threshold_s=settings.overload_lag_ms / 1000.0)
        self._monitor: OverloadMonitor | None = None
        self.relay = None
        self._primary: dict[str, str] = {}
        self.dns = DnsCache(nameservers(settings.dns_servers))
        self.cluster = None  # sbc.cluster.RedisCluster with redis_url, else WorkerCluster with workers
        self.stopping = False  # set by stop(): /readyz turns 503 so no new calls are sent here
        self.api_server = None  # sbc.api.ops.HttpServer when api_listen is set

    def local_hosts(self) -> set[str]:
        hosts = {"localhost", socket.gethostname().lower()}
        for spec in self.settings.listeners:
            hosts.add(spec.host)
            if spec.host in ("0.0.0.0", "::"):
                hosts.update({"127.0.0.1", "::1"})
        if self.settings.advertised_host:
            hosts.add(self.settings.advertised_host)
        return hosts

    @property
    def provisioning_version(self) -> int:
        """The store version the B2BUA routes with; -1 until provisioning is first loaded."""
        return self._version

    async def start(self, settle: Callable[[], None] | None = None) -> None:
        """Bind every listener. Raises OSError when one cannot be bound.

        ``settle`` runs once everything is up, just before load sampling begins: :func:`serve` passes
        the collector's start (:meth:`GcPolicy.start`), whose full collection of the start-up heap
        blocks the loop for 100 ms or more, which the overload guard would otherwise count as lag."""
        s = self.settings
        self.loop = asyncio.get_running_loop()
        if self.worker is not None:
            # First: while this worker starts, worker 0's /readyz hears "not ready", not silence.
            from .workers.control import ControlServer

            self.control = ControlServer(self, self.worker)
            await self.control.start()
        self.core = SipCore(
            local_hosts=self.local_hosts(),
            timers=TimerConfig(t1=s.t1, t2=s.t2, t4=s.t4),
            user_agent=s.user_agent,
            admission=self.overload if s.overload_protection else None,
        )
        worker = self.worker
        if worker is not None:
            # Before anything makes a Call-ID: they must all steer back to this worker.
            place_this_process(worker.index, worker.count)
            self.bus = WorkerBus(worker)
            self.bus.on(KIND_SIP, self._on_diverted)
            self.bus.on(KIND_TCP_SEND, self._on_tcp_for_us)  # read from when provisioning is loaded
            self.core.divert = self._divert
        self.tcp = TcpTransport(
            self.on_message,
            max_message_size=s.max_message_size,
            idle_timeout=s.tcp_idle_timeout,
            max_per_source=s.max_connections_per_source,
            on_framing_error=self.on_framing_error,
            worker=worker.index if worker is not None else 0,
            send_elsewhere=self._send_via_worker if worker is not None else None,
        )
        # Provisioning is loaded before any listener binds, so the first INVITE is routed.
        self.store = await Store.open(s.db)
        wall_offset = time.time() - self.loop.time()
        secret = s.auth_secret.encode() if s.auth_secret else os.urandom(32)
        media = self._start_relay() if s.media_anchoring else None
        self.b2bua = B2BUA(
            self.core,
            local_address=self.local_address,
            cdr_sink=self._cdr_queue.put_nowait,
            config=B2BUAConfig(
                no_response_timeout_s=s.no_response_timeout,
                ring_timeout_s=s.ring_timeout,
                max_call_duration_s=s.max_call_duration,
                limit_reject_code=s.limit_reject_code,
            ),
            wall_offset=wall_offset,
            user_agent=s.user_agent,
            authenticator=WallClockAuthenticator(
                DigestAuthenticator(secret, s.realm, algorithms=tuple(s.auth_algorithms)), wall_offset
            ),
            media=media,
            resolve=self.dns.lookup,
        )
        if s.redis_url:
            # Cluster-wide limits and carrier health; attached before the first snapshot loads.
            # With workers, each one is a node of its own.
            from .cluster import RedisCluster

            self.cluster = RedisCluster(s.redis_url, prefix=s.redis_prefix)
        elif self.bus is not None:
            # Workers without Redis: the same mirrors, kept in step over the bus; worker 0 probes.
            from .cluster import WorkerCluster

            self.cluster = WorkerCluster(self.bus)
        if self.cluster is not None:
            self.cluster.attach(self.b2bua)
            await self.cluster.start()
        await self.reload(force=True)
        if self.bus is not None:
            self.bus.start()
        inherited = list(worker.fds) if worker is not None else []
        for spec in s.listeners:
            # A worker's socket, bound by the supervisor (family and type come from the descriptor).
            sock = socket.socket(fileno=inherited.pop(0)) if inherited else None
            if spec.transport == "udp":
                listener = await start_udp(spec, self.receive, self.flush, sock=sock)
                self.udp[listener.local] = listener
                self._udp_default = self._udp_default or listener
            elif spec.transport == "tcp":
                await self.tcp.listen(spec, sock=sock)
            else:
                raise OSError(f"transport {spec.transport} is not supported yet")
        self.flush()
        if s.api_listen and (worker is None or worker.index == 0):
            from .api.ops import HttpServer

            self.api_server = HttpServer(self._build_api(wall_offset))
            await self.api_server.start(s.api_listen)
        if settle is not None:
            settle()
        # Sampled even without protection (loop lag and CPU are metrics), and only from here: building
        # the API blocks the loop for most of a second, which would start the SBC in overload.
        self._monitor = OverloadMonitor(self.overload, queue_delay=self._take_queue_delay)
        self._monitor.start()
        self._tasks = [
            asyncio.create_task(self._write_cdrs()),
            asyncio.create_task(self._watch_store()),
            asyncio.create_task(self._refresh_dns()),
        ]
        log.info("sbc%s listening on %s", f" worker {worker.index} of {worker.count}" if worker else "",
                 ", ".join(str(x) for x in s.listeners))  # fmt: skip

    def _build_api(self, wall_offset: float) -> object:
        """The REST API (``sbc.api``) with the ops routes (/metrics, /healthz, /readyz) mounted.

        Call control is the B2BUA on this loop's clock (:class:`sbc.call_control.AppCallControl`);
        gateway health is the prober's table. A worker of ``sbc run --workers N`` (``self.worker``)
        serves the whole group instead: calls, metrics and readiness of every worker
        (:mod:`sbc.workers.api`). Without
        ``api_admin_key`` a random admin key is generated and logged once, for this run only.
        """
        from .api.app import create_api
        from .api.auth import generate_key
        from .api.gateway_health import HealthTableSource
        from .api.ops import ops_router
        from .call_control import AppCallControl

        assert self.store is not None and self.b2bua is not None
        admin_key = self.settings.api_admin_key
        if admin_key is None:
            admin_key = generate_key()
            log.warning("SBC_API_ADMIN_KEY is not set; admin API key for this run: %s", admin_key)
        calls, ops = AppCallControl(self), ops_router(self)
        worker = self.worker
        if worker is not None:  # sbc run --workers N: every worker's calls, metrics and readiness
            from .workers.api import worker_api_parts

            calls, ops = worker_api_parts(self, worker, calls)
        return create_api(
            self.store,
            admin_key=admin_key,
            calls=calls,
            health=HealthTableSource(self.b2bua.prober.table, wall_offset),
            extra_routes=[ops],
        )

    def _start_relay(self) -> MediaManager:
        """Start the native RTP relay and watch its event fd (media timeouts, DTMF)."""
        from rtp_relay_ext import RelayEngine

        s = self.settings
        lo, hi = parse_port_range(s.rtp_ports)
        if self.worker is not None:
            lo, hi = rtp_port_slice(lo, hi, self.worker.index, self.worker.count)
        self.relay = RelayEngine(
            s.rtp_ip,
            lo,
            hi,
            media_timeout=s.media_timeout,
            hold_timeout=s.media_hold_timeout,
            quarantine=s.rtp_port_quarantine,
            kernel=s.rtp_kernel_forward,
        )
        log.info("rtp relay on %s ports %d-%d (%s backend), kernel fast path: %s", s.rtp_ip, lo, hi,
                 self.relay.backend, self.relay.kernel_status)  # fmt: skip
        assert self.loop is not None
        self.loop.add_reader(self.relay.events_fd, self._on_relay_events)
        # Relay wake-ups wait for the flush that ends this input (a UDP batch, a timer pass):
        # one per batch, before the batch's SDP leaves. call_soon did the same one loop
        # iteration later, and that extra iteration split the next UDP batch in two.
        self.media = MediaManager(self.relay, s.rtp_advertised_ip or s.rtp_ip, batch_wakes=True)
        return self.media

    def _on_relay_events(self) -> None:
        assert self.relay is not None and self.b2bua is not None and self.loop is not None
        self.b2bua.on_media_events(self.relay.poll_events(), self.loop.time())
        self.flush()

    def local_address(self, transport: str) -> tuple[str, int]:
        """The address the SBC puts in Via/Contact for ``transport`` (its first listener)."""
        if transport == "udp" and self._udp_default is not None:
            host, port = self._udp_default.local
        elif self.tcp is not None and self.tcp.locals:
            host, port = self.tcp.locals[0]
        else:
            host, port = next(iter(self.udp)) if self.udp else ("127.0.0.1", 5060)
        if host in ("0.0.0.0", "::"):
            host = self.settings.advertised_host or self._primary_host(host)
        return host, port

    def _primary_host(self, wildcard: str) -> str:
        """The address of the interface the default route leaves by, for a wildcard listener
        without ``advertised_host`` (loopback when the machine has no route at all).

        A UDP ``connect`` only consults the routing table: no packet is sent. Cached: the
        B2BUA asks for every message."""
        cached = self._primary.get(wildcard)
        if cached is None:
            family, probe, fallback = (
                (socket.AF_INET6, "2001:db8::1", "::1") if wildcard == "::" else (socket.AF_INET, "192.0.2.1", "127.0.0.1")
            )  # fmt: skip
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.connect((probe, 9))
                    cached = s.getsockname()[0]
            except OSError:
                cached = fallback
            self._primary[wildcard] = cached
        return cached

    async def reload(self, force: bool = False) -> bool:
        """Load the store's provisioning into the B2BUA when its version changed."""
        assert self.store is not None and self.b2bua is not None
        version = await self.store.version()
        if version == self._version and not force:
            return False
        snapshot = await self.store.load_snapshot()
        # Names of gateways and targets resolve before the tables that use them go live.
        names = provisioned_names(snapshot)
        self.dns.forget_except(names)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.dns.refresh(names), DNS_LOAD_WAIT_S)
        self.b2bua.load(snapshot, self.loop.time())
        self.flush()
        self._version = snapshot.version
        log.info("provisioning version %d loaded", snapshot.version)
        return True

    async def _refresh_dns(self) -> None:
        """Re-resolve names whose TTL ran out and names calls asked for that were not cached."""
        while True:
            await asyncio.sleep(DNS_REFRESH_INTERVAL_S)
            try:
                await self.dns.refresh()
            except Exception:
                log.exception("DNS refresh failed; keeping the cached addresses")

    async def _watch_store(self) -> None:
        """Poll the store version: a change by `sbc provision`, the API or another node applies
        to new calls without a restart. A poll, not PostgreSQL LISTEN/NOTIFY: one indexed
        single-row read per interval, the same on SQLite and PostgreSQL, no connection held
        outside the pool (PgBouncer-safe), and nothing lost while reconnecting (README, Cluster)."""
        while True:
            await asyncio.sleep(self.settings.provision_poll_interval)
            try:
                await self.reload()
            except Exception:
                log.exception("reloading provisioning failed; keeping the previous tables")

    async def _write_cdrs(self) -> None:
        """Write queued CDRs in batches: whatever accumulated while the last batch was written."""
        assert self.store is not None
        queue = self._cdr_queue
        while True:
            batch = [await queue.get()]
            if not self.stopping and queue.qsize() < CDR_BATCH_MAX:
                await asyncio.sleep(CDR_BATCH_WINDOW_S)
            while not queue.empty() and len(batch) < CDR_BATCH_MAX:
                batch.append(queue.get_nowait())
            metrics.CDR_METRICS.observe_many(batch)
            try:
                await self.store.write_cdrs(batch)
            except Exception:
                # A batch the database refuses is retried row by row so one bad row loses only itself.
                for record in batch:
                    try:
                        await self.store.write_cdr(record)
                    except Exception:
                        log.exception("writing CDR for %s failed", record.call_id)
            finally:
                for _ in batch:
                    queue.task_done()

    # -- between workers (sbc run --workers N) ------------------------------------------------

    def _divert(self, call_id: str, data: bytes, source: Address) -> bool:
        """The core's ``divert``: hand a message of another worker's call to that worker."""
        assert self.worker is not None and self.bus is not None
        owner = worker_for_call_id(call_id, self.worker.count)
        if owner == self.worker.index:
            return False
        metrics.WORKER_DIVERTED.inc()
        self.bus.send(owner, KIND_SIP, pack_message(data, source))
        return True

    def _on_diverted(self, sender: int, payload: bytes) -> None:
        """A message another worker read for a call of ours: handle it as if we had read it."""
        frame = _unpack_or_count(payload)
        if frame is not None:
            self.on_message(*frame)

    def _send_via_worker(self, worker: int, data: bytes, dest: Address) -> bool:
        """The TCP transport's ``send_elsewhere``: the connection is another worker's."""
        assert self.bus is not None
        return self.bus.send(worker, KIND_TCP_SEND, pack_message(data, dest))

    def _on_tcp_for_us(self, sender: int, payload: bytes) -> None:
        """Another worker's answer for a peer on one of our TCP connections."""
        frame = _unpack_or_count(payload)
        if frame is not None:
            self.send(Outgoing(*frame))

    # -- the loop's side of the sans-I/O core -------------------------------------------------

    def on_message(self, data: bytes, source: Address) -> None:
        """A transport delivered one message: hand it to the core and send what it produced."""
        self.receive(data, source)
        self.flush()

    def receive(self, data: bytes, source: Address) -> None:
        """Hand one message to the core without flushing: a UDP batch flushes once at its end."""
        assert self.core is not None and self.loop is not None
        self.core.receive(data, source, self.loop.time())

    def _take_queue_delay(self) -> float:
        """The longest any SIP datagram waited in a UDP socket's kernel queue since the last call:
        the backlog the event loop's own lag cannot see (the overload monitor reads it every tick)."""
        return max((listener.take_queue_delay() for listener in self.udp.values()), default=0.0)

    def on_framing_error(self, err: FramingError, source: Address) -> None:
        """A stream lost framing: answer the request whose head we could read, then it closes."""
        assert self.core is not None and self.loop is not None
        data = err.head + b"\r\n\r\n"
        self.core.receive(
            data, Address(source.transport, source.host, source.port, source.conn_id), self.loop.time()
        )
        self.flush()

    def flush(self) -> None:
        """Send everything the core queued and reschedule its timer."""
        assert self.core is not None and self.loop is not None
        if self.media is not None:
            self.media.wake_owed()  # new relay sessions' sockets get armed before their SDP goes out
        for out in self.core.pop_outgoing():
            self.send(out)
        when = self.core.next_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = when
            if when is not None:
                self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        """Run the core's due timers on the clock of the input read so far. While a UDP socket
        still holds a backlog, the last datagram read was ``input_lag`` old: a response or ACK
        that arrived after it may be waiting unread, so a retransmission or timeout due in that
        window waits until the backlog is read (an INVITE re-sent to a PBX whose 100 Trying sat
        in our queue made SIPp abort the call at 800 calls/s)."""
        assert self.core is not None and self.loop is not None
        self._timer = None
        self._timer_at = None
        behind = max((listener.input_lag for listener in self.udp.values()), default=0.0)
        self.core.handle_timer(self.loop.time() - behind)
        self.flush()

    def send(self, out: Outgoing) -> None:
        dest = out.dest
        if dest.transport == "udp":
            listener = self._udp_default
            if listener is not None:
                listener.send(out.data, dest.host, dest.port)
        elif dest.transport == "tcp" and self.tcp is not None:
            if not self.tcp.send(out.data, dest):
                asyncio.ensure_future(self._send_tcp_new(out))
        else:
            log.warning("no %s transport to send to %s:%s", dest.transport, dest.host, dest.port)
            self._send_failed(out)

    async def _send_tcp_new(self, out: Outgoing) -> None:
        assert self.tcp is not None
        try:
            await self.tcp.send_to(out.data, out.dest.host, out.dest.port)
        except OSError as e:
            log.info("tcp send to %s:%s failed: %s", out.dest.host, out.dest.port, e)
            self._send_failed(out)

    def _send_failed(self, out: Outgoing) -> None:
        """Tell the core a request could not be sent (from the next loop turn: this may run inside
        :meth:`flush`), so the transaction fails with a transport error at once."""
        if out.key is not None and self.core is not None and self.loop is not None and not self.stopping:
            self.loop.call_soon(self._report_transport_error, out.key)

    def _report_transport_error(self, key: object) -> None:
        assert self.core is not None and self.loop is not None
        self.core.transport_error(key, self.loop.time())
        self.flush()

    async def stop(self) -> None:
        """Close listeners and connections, write the CDRs still queued, close the store."""
        self.stopping = True
        if self._timer is not None:
            self._timer.cancel()
        if self._monitor is not None:
            self._monitor.stop()
        if self.store is not None and self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._cdr_queue.join(), timeout=5.0)
        for task in self._tasks:
            task.cancel()
        if self.api_server is not None:
            await self.api_server.stop()
        for listener in self.udp.values():
            listener.close()
        if self.tcp is not None:
            await self.tcp.close()
        if self.cluster is not None:
            await self.cluster.close()  # this node's calls stop counting cluster-wide at once
        if self.bus is not None:
            self.bus.close()  # after the cluster's goodbye, which it carries
        if self.store is not None:
            await self.store.close()
        if self.relay is not None:
            assert self.loop is not None
            self.loop.remove_reader(self.relay.events_fd)
            self.relay.close()
        if self.control is not None:
            await self.control.close()  # answered "shutting down" until here
        self.stopped.set()


#: Allocations between young-generation collections (CPython's default is 700). Calls allocate
#: many short-lived objects, nearly all freed by reference counting; collecting every 700 made
#: the cyclic GC walk the growing older generations often enough to stall the loop for tens of
#: milliseconds: setup time p99 at 300-400 calls/s fell from 180-340 ms to 20-24 ms with this
#: and the start-up heap frozen (``python -m loadtest calls``, same CPU).
GC_THRESHOLDS = (50_000, 20, 100)

#: How often the heap is frozen (``gc.freeze``, constant time): whatever survived this long is
#: moved out of the collector's sight. Without it the call state of the last seconds piled up in
#: the older generations and every collection walked all of it while freeing nothing (calls make
#: no reference cycles): at 800 calls/s with 1,300 calls up, generation-1 collections stopped the
#: loop for 360-390 ms and a generation-2 one for 860 ms, each an overload episode of its own.
#: Freezing also resets the young generation's allocation count, so a heap frozen before 50,000
#: net allocations (:data:`GC_THRESHOLDS`) is never collected automatically at all. At 0.5 s a
#: worker at 750 calls/s still reached the threshold: 31 young collections in 18 s, each 10-50 ms
#: (26 ms on average) of stopped loop. At 0.1 s there were none, and a sweep at load freed nothing.
GC_FREEZE_INTERVAL_S = 0.1

#: How often everything frozen is collected once (unfreeze, full collection, freeze), so that a
#: reference cycle which outlived the freeze interval is still freed. It costs one pause the size
#: of the heap, logged with what it freed: 957 and 1,129 ms in the two workers with 1,600 calls up
#: at 1,500 calls/s, an overload episode of its own (it freed nothing: calls make no cycles).
GC_SWEEP_INTERVAL_S = 900.0

#: So a due sweep waits for a quiet moment, this many calls up or fewer (its pause grows with the
#: heap, most of which is the calls') ...
GC_SWEEP_QUIET_CALLS = 100

#: ... but no longer than this past its time: an SBC that is never that quiet still sweeps, six
#: times a day instead of ninety-six.
GC_SWEEP_MAX_DELAY_S = 4 * 3600.0

#: A collection longer than this is logged: it held every SIP message for that long.
GC_PAUSE_WARN_S = 0.1


class GcPolicy:
    """The cyclic garbage collector's schedule for a running SBC (see :data:`GC_FREEZE_INTERVAL_S`).

    Every collection is timed (``sbc_gc_pause_seconds``, and a warning past
    :data:`GC_PAUSE_WARN_S`): a collection stops the event loop, which the overload guard sees
    as lag.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        freeze_interval_s: float = GC_FREEZE_INTERVAL_S,
        sweep_interval_s: float = GC_SWEEP_INTERVAL_S,
        calls_up: Callable[[], int] | None = None,
        quiet_calls: int = GC_SWEEP_QUIET_CALLS,
        sweep_max_delay_s: float = GC_SWEEP_MAX_DELAY_S,
    ) -> None:
        self.loop = loop
        self.freeze_interval_s = freeze_interval_s
        self.sweep_interval_s = sweep_interval_s
        # How many calls are up (None: always quiet); a due sweep waits for quiet_calls or fewer,
        # at most sweep_max_delay_s (GC_SWEEP_QUIET_CALLS).
        self.calls_up = calls_up
        self.quiet_calls = quiet_calls
        self.sweep_max_delay_s = sweep_max_delay_s
        self._handle: asyncio.TimerHandle | None = None
        self._next_sweep = 0.0
        self._started = 0.0

    def start(self) -> None:
        """Collect and freeze what start-up allocated, then keep freezing on schedule."""
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        if self._time_gc not in gc.callbacks:
            gc.callbacks.append(self._time_gc)
        self._next_sweep = self.loop.time() + self.sweep_interval_s
        self._handle = self.loop.call_later(self.freeze_interval_s, self._tick)

    def stop(self) -> None:
        """Stop the schedule; idempotent. The collector keeps its thresholds."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._time_gc in gc.callbacks:
            gc.callbacks.remove(self._time_gc)

    def _tick(self) -> None:
        gc.freeze()
        now = self.loop.time()
        if now >= self._next_sweep and (
            self.calls_up is None
            or self.calls_up() <= self.quiet_calls
            or now >= self._next_sweep + self.sweep_max_delay_s
        ):
            self.sweep()
        self._handle = self.loop.call_later(self.freeze_interval_s, self._tick)

    def sweep(self) -> int:
        """Collect everything once, frozen objects included; return how many were freed."""
        self._next_sweep = self.loop.time() + self.sweep_interval_s
        started = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        log.info("gc: sweep of the whole heap freed %d objects in %.0f ms", freed,
                 (time.perf_counter() - started) * 1000)  # fmt: skip
        return freed

    def _time_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = info.get("generation", 2)
        metrics.GC_PAUSE.labels(str(generation)).observe(took)
        if took > GC_PAUSE_WARN_S:
            log.warning("gc: generation %s collection took %.0f ms (%s objects freed)",
                        generation, took * 1000, info.get("collected"))  # fmt: skip


def _unpack_or_count(payload: bytes) -> tuple[bytes, Address] | None:
    """A bus frame's message and address; None (counted as dropped) for a frame that is not one."""
    try:
        return unpack_message(payload)
    except FrameError:
        metrics.SIP_MESSAGES_DROPPED.labels("bus", "bad-frame").inc()
        return None


def rtp_port_slice(lo: int, hi: int, index: int, count: int) -> tuple[int, int]:
    """Worker ``index``'s share of the RTP port range ``lo``-``hi``: ``count`` even-aligned
    slices of equal size (the last one takes the remainder), so the workers' relays never
    allocate the same port. Raises ValueError when a slice would hold no port pair."""
    per = ((hi - lo + 1) // count) & ~1
    if per < 2:
        raise ValueError(f"RTP ports {lo}-{hi} are too few for {count} workers")
    start = lo + index * per
    return start, hi if index == count - 1 else start + per - 1


async def serve(settings: Settings, worker: WorkerInfo | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down cleanly."""
    app = SbcApp(settings, worker)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Before the sockets open: a SIGTERM that arrives once the SBC answers must stop it cleanly.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gc_policy = GcPolicy(loop, calls_up=lambda: len(app.b2bua.calls) if app.b2bua is not None else 0)
    await app.start(settle=gc_policy.start)
    await stop.wait()
    log.info("shutting down")
    gc_policy.stop()
    await app.stop()
