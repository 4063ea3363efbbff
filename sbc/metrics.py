"""Prometheus metrics of one SBC process: every collector, defined here, by where its value comes from.

Three sources, chosen so that the SIP hot path pays as little as possible:

1. **Hot-path counters**, incremented where the event happens (SIP core, transports, B2BUA). Per-message
   ones go through a :class:`ChildCache` so a message costs one dict lookup and one ``inc()``, not a
   ``.labels()`` call that converts, validates and looks the child up under a lock (measured on the
   project machine: 0.55 µs against 1.9 µs per message, nearly all of the 0.55 µs being ``inc()``).
2. **Finished-call tallies**, fed from each :class:`~sbc.store.cdr.CdrRecord` by :class:`CdrMetrics`
   in the CDR writer task, off the SIP path, into plain dicts turned into families when scraped:
   per carrier and per trunk, durations and media quality (~9 µs per call).
3. **Scrape-time gauges**, read from live objects only when Prometheus asks (:class:`LiveCollector`):
   calls in progress, gateway health, relay counters, overload state, thread CPU. Nothing is counted
   twice and nothing costs anything between scrapes.

Label values are bounded: transport, method, status code, disposition, direction, and names that come
from provisioning (carrier, customer, trunk, gateway). Never a Call-ID, a number or a peer's address.
Provisioned names are capped as well (:data:`MAX_CARRIER_LABELS`, :data:`MAX_TRUNK_LABELS`): past the
cap a name is reported as :data:`OTHER_LABEL`, so a provisioning mistake cannot blow up the time-series
database. An empty label value means "none" (a call refused before a carrier was chosen).

==========================================  ==========================================  ========================================
name                                        labels                                      meaning
==========================================  ==========================================  ========================================
*hot path*
sbc_sip_messages_received_total             transport, kind (request/response)          SIP messages received
sbc_sip_messages_dropped_total              transport, reason                           dropped unanswered (malformed, not ours)
sbc_sip_requests_rejected_total             code                                        refused by the SIP core before routing
sbc_sip_responses_sent_total                code                                        SIP responses sent (every final/1xx)
sbc_sip_responses_received_total            code                                        responses received to our requests
sbc_sip_send_errors_total                   transport                                   sends that failed
sbc_tcp_connections                         -                                           open SIP TCP connections
sbc_tcp_connections_refused_total           -                                           refused by the per-source limit
sbc_call_attempts_total                     direction                                   calls accepted for routing
sbc_call_answers_total                      direction                                   calls answered (2xx relayed)
sbc_calls_ended_total                       direction, disposition                      calls ended
sbc_limit_rejections_total                  scope (customer/trunk/carrier/overload)     new calls refused by a limit
sbc_auth_failures_total                     reason                                      digest authentications that failed
sbc_dtmf_events_total                       from_side                                   RFC 4733 digits seen by the relay
sbc_event_loop_lag_seconds                  - (histogram)                               how late a 100 ms loop tick ran
sbc_sip_queue_delay_seconds                 - (histogram)                               largest SIP receive-queue delay per tick
sbc_gc_pause_seconds                        generation (histogram)                      cyclic GC pauses (each stops the loop)
*finished calls (from CDRs)*
sbc_carrier_calls_total                     direction, carrier, disposition             calls by carrier: ASR = answered / all
sbc_trunk_calls_total                       direction, customer, trunk, disposition     calls by customer trunk: ASR likewise
sbc_carrier_attempts_total                  carrier, code_class (2xx..6xx)              outbound tries per carrier (failover)
sbc_carrier_billable_seconds_total          direction, carrier                          answered time: ACD = this / answered
sbc_trunk_billable_seconds_total            direction, customer, trunk                  answered time per trunk
sbc_call_duration_seconds                   direction (histogram)                       billable duration of answered calls
sbc_call_rtp_packets_total                  carrier, from_side                          RTP packets the relay received
sbc_call_rtp_lost_total                     carrier, from_side                          RTP packets lost before the relay
sbc_call_rtp_jitter_seconds                 from_side (histogram)                       interarrival jitter per stream at end
sbc_call_rtp_loss_ratio                     from_side (histogram)                       lost / (received + lost) per stream
sbc_call_rtp_mos                            from_side (histogram)                       estimated MOS per stream
sbc_cdrs_observed_total                     -                                           CDRs counted into the above
*scrape time*
sbc_active_calls                            direction, state                            calls in progress
sbc_gateway_up                              carrier, gateway, transport                 1 up, 0 marked down by OPTIONS probes
sbc_gateway_probe_latency_seconds           carrier, gateway, transport                 smoothed OPTIONS round trip (EWMA)
sbc_gateway_probes_total                    carrier, gateway, transport                 OPTIONS probes answered or timed out
sbc_gateway_probe_failures_total            carrier, gateway, transport                 probes that failed
sbc_rtp_relay_packets_total                 way (in/out)                                packets through the relay engine
sbc_rtp_relay_sessions                      -                                           relay sessions allocated
sbc_rtp_relay_ports                         state (free/total)                          relay port pool
sbc_rtp_relay_events_dropped_total          -                                           relay events lost (queue full)
sbc_rtp_relay_kernel_flows                  -                                           stream directions the kernel fast path relays now
sbc_rtp_relay_kernel_packets_total          -                                           of sbc_rtp_relay_packets_total, relayed in the kernel
sbc_overloaded                              -                                           1 while shedding new calls
sbc_overload_severity                       -                                           0..1, share of new calls being shed
sbc_event_loop_lag_ewma_seconds             -                                           smoothed delay (loop lag or SIP queueing)
sbc_overload_episodes_total                 -                                           overload episodes entered
sbc_overload_shed_total                     -                                           new calls refused by overload
sbc_thread_cpu_seconds_total                thread (loop/relay/other)                   CPU time by thread role (psutil)
sbc_process_threads                         -                                           OS threads of the process (psutil)
sbc_provisioning_version                    -                                           store version routing with (-1: none)
sbc_build_info                              version, relay                              1; the running versions
==========================================  ==========================================  ========================================

Process CPU and memory are prometheus_client's own ``process_*`` families (``process_cpu_seconds_total``,
``process_resident_memory_bytes``, ``process_open_fds``...), registered by default: every dashboard knows
those names, so psutil adds only what they lack (CPU by thread role, thread count) under ``sbc_`` names,
never a second copy of the same figure.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

import psutil
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

log = logging.getLogger(__name__)

# prometheus_client would add a ``*_created`` series beside every counter and histogram child: in the
# text format Prometheus stores those as ordinary series, doubling cardinality for a figure nobody graphs.
disable_created_metrics()

#: Distinct carrier names one process reports before folding the rest into :data:`OTHER_LABEL`.
#: Each carrier costs about 2 directions x 6 dispositions series in ``sbc_carrier_calls_total``; 1000
#: carriers (far beyond any real interconnect list) stay near 12k series, Prometheus's comfort zone.
MAX_CARRIER_LABELS = 1000
#: Distinct (customer, trunk) pairs reported before folding, for the same reason: trunks are the most
#: numerous provisioned object, and 2000 x 12 series is already a large per-metric cardinality.
MAX_TRUNK_LABELS = 2000
#: The label value names past the caps are reported under (parentheses: not a valid provisioned name).
OTHER_LABEL = "(other)"

#: Answered-call durations: PSTN calls cluster between half a minute and a few minutes; the tail goes
#: to the 4 h default maximum call duration.
CALL_DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0)  # fmt: skip
#: Jitter: ITU-T G.114-style planning treats < 20 ms as good and > 50 ms as poor for voice.
JITTER_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
#: Loss ratio: G.711 without PLC degrades audibly from about 1 %; 5 % is poor.
LOSS_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
#: MOS: the E-model's bands (4.3+ very satisfied, 4.0 satisfied, 3.6 some, 3.1 many dissatisfied).
MOS_BUCKETS = (1.0, 2.0, 2.6, 3.1, 3.6, 4.0, 4.3, 4.5)
#: Loop lag and SIP queueing delay: sampled every 100 ms; the overload guard acts from 100 ms, SIP T1 is
#: 500 ms.
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# -- 1. hot path ---------------------------------------------------------------------------------


class HotChild:
    """One series of a :class:`HotCounter`: ``inc()`` is a plain attribute add."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HotCounter(Collector):
    """A labelled counter for what moves on every SIP message or call.

    prometheus_client's counter child takes a lock and checks its state on every ``inc()`` (410 ns
    against 60 ns here), and a call moves these counters about 25 times. Only the event loop's
    thread increments them; a scrape from another thread reads floats under the GIL, so at worst
    it misses an increment that lands during the scrape. Same exposition as a ``Counter``.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: list[str],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._children: dict[tuple[str, ...], HotChild] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: Any) -> HotChild:
        """The series for these label values (``str`` of each), created on first use."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values!r}")
        key = tuple(str(v) for v in values)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, HotChild())
        return child

    def collect(self) -> Iterator[Any]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            family.add_metric(key, child.value)
        yield family


SIP_MESSAGES_RECEIVED = HotCounter(
    "sbc_sip_messages_received_total", "SIP messages received", ["transport", "kind"]
)
SIP_MESSAGES_DROPPED = Counter(
    "sbc_sip_messages_dropped_total",
    "SIP messages dropped without an answer (malformed responses, unparseable datagrams)",
    ["transport", "reason"],
)
SIP_REQUESTS_REJECTED = Counter(
    "sbc_sip_requests_rejected_total", "Requests refused by the SIP core before routing", ["code"]
)
SIP_RESPONSES_SENT = HotCounter("sbc_sip_responses_sent_total", "SIP responses sent", ["code"])
SIP_RESPONSES_RECEIVED = HotCounter("sbc_sip_responses_received_total", "SIP responses received", ["code"])
TCP_CONNECTIONS = Gauge("sbc_tcp_connections", "Open SIP TCP connections")
TCP_CONNECTIONS_REFUSED = Counter(
    "sbc_tcp_connections_refused_total", "TCP connections refused by the per-source limit"
)
WORKER_DIVERTED = Counter(
    "sbc_worker_diverted_messages_total",
    "SIP messages this worker read for a call another worker holds, and handed to it (sbc run --workers)",
)
SIP_SEND_ERRORS = Counter("sbc_sip_send_errors_total", "Failed sends", ["transport"])
# Not registered: the exported ``sbc_active_calls`` is counted at scrape time from the B2BUA's call
# table (by direction and state, and it cannot drift). Kept so the engine's inc()/dec() still work.
ACTIVE_CALLS = Gauge("sbc_active_calls", "Calls in progress (see LiveCollector)", registry=None)
CALL_ATTEMPTS = HotCounter("sbc_call_attempts_total", "New calls accepted for routing", ["direction"])
CALL_ANSWERS = HotCounter("sbc_call_answers_total", "Calls answered", ["direction"])
CALLS_ENDED = HotCounter("sbc_calls_ended_total", "Calls ended, by disposition", ["direction", "disposition"])
LIMIT_REJECTIONS = HotCounter("sbc_limit_rejections_total", "New calls refused by a limit", ["scope"])
AUTH_FAILURES = Counter("sbc_auth_failures_total", "Digest authentications that failed", ["reason"])
DTMF_EVENTS = Counter("sbc_dtmf_events_total", "RFC 4733 digits seen by the relay", ["from_side"])
EVENT_LOOP_LAG = Histogram(
    "sbc_event_loop_lag_seconds",
    "How late the overload monitor's 100 ms loop tick ran",
    buckets=LOOP_LAG_BUCKETS,
)
SIP_QUEUE_DELAY = Histogram(
    "sbc_sip_queue_delay_seconds",
    "Largest kernel queueing delay of a SIP datagram per 100 ms tick",
    buckets=LOOP_LAG_BUCKETS,
)
GC_PAUSE = Histogram(
    "sbc_gc_pause_seconds",
    "Cyclic garbage collections of the SBC process (they stop the event loop)",
    ["generation"],
    buckets=LOOP_LAG_BUCKETS,
)


class ChildCache(dict):
    """Children of one labelled metric by label value(s), created on first use.

    ``cache[200].inc()`` is a dict hit (~50 ns) where ``metric.labels(str(200)).inc()`` converts and
    looks the child up each time (under a lock for a prometheus_client metric). Keys are a single
    value (for a one-label metric) or a tuple; values are converted with ``str``. Only bounded keys belong here (status codes, transports):
    the cache never forgets. Two threads missing the same key at once only call ``labels()`` twice,
    which returns the same child.
    """

    __slots__ = ("metric",)

    def __init__(self, metric: Any) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, key: Any) -> Any:
        values = key if isinstance(key, tuple) else (key,)
        child = self.metric.labels(*(str(v) for v in values))
        self[key] = child
        return child


#: Per-message caches used by :mod:`sbc.core` (keys: int status code; (transport, kind)).
RESPONSES_SENT = ChildCache(SIP_RESPONSES_SENT)
RESPONSES_RECEIVED = ChildCache(SIP_RESPONSES_RECEIVED)
MESSAGES_RECEIVED = ChildCache(SIP_MESSAGES_RECEIVED)
#: Per-call caches for the B2BUA (keys: direction; (direction, disposition); limit scope).
ATTEMPTS_BY_DIRECTION = ChildCache(CALL_ATTEMPTS)
ANSWERS_BY_DIRECTION = ChildCache(CALL_ANSWERS)
ENDED_BY_DISPOSITION = ChildCache(CALLS_ENDED)
LIMIT_REJECTIONS_BY_SCOPE = ChildCache(LIMIT_REJECTIONS)


# -- 2. finished calls ---------------------------------------------------------------------------


class LabelBudget:
    """Admits at most ``cap`` distinct names; later ones map to :data:`OTHER_LABEL`.

    Names already admitted stay admitted (a counter must keep its series). Callers pass ``""`` for
    "none", which takes a place like any name.
    """

    __slots__ = ("cap", "_seen")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._seen: set[Any] = set()

    def __call__(self, name: Any) -> Any:
        """The label value(s) to report for ``name`` (a string or a tuple of strings)."""
        if name in self._seen:
            return name
        if len(self._seen) < self.cap:
            self._seen.add(name)
            return name
        return OTHER_LABEL if not isinstance(name, tuple) else tuple(OTHER_LABEL for _ in name)

    def __len__(self) -> int:
        return len(self._seen)


class _Hist:
    """One histogram series accumulated in plain Python: per-bucket counts, sum and count."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, v: float) -> None:
        self.counts[bisect_left(self.bounds, v)] += 1  # bucket "le" holds v <= le
        self.total += v

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append((floatToGoString(bound), running))
        return out


class CdrMetrics(Collector):
    """Counts finished calls from their CDRs: per carrier and trunk (ASR, ACD), durations, media quality.

    The CDR writer calls :meth:`observe_many` for each batch. Figures accumulate in plain dicts and are
    turned into metric families only when scraped (:meth:`collect`): a CDR with one media stream costs
    ~9 µs of dict updates where ~18 locked prometheus_client updates measured ~22 µs. Updated and read on the event loop
    thread only. :meth:`observe` never raises: a CDR with odd figures is logged, never lost for the store.
    One instance per registry; the process's is :data:`CDR_METRICS` on the default registry.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        max_carriers: int = MAX_CARRIER_LABELS,
        max_trunks: int = MAX_TRUNK_LABELS,
    ) -> None:
        self.carriers = LabelBudget(max_carriers)
        self.trunks = LabelBudget(max_trunks)
        self.carrier_calls: dict[tuple[str, str, str], int] = {}
        self.trunk_calls: dict[tuple[str, str, str, str], int] = {}
        self.carrier_attempts: dict[tuple[str, str], int] = {}
        self.carrier_seconds: dict[tuple[str, str], float] = {}
        self.trunk_seconds: dict[tuple[str, str, str], float] = {}
        self.rtp_packets: dict[tuple[str, str], int] = {}
        self.rtp_lost: dict[tuple[str, str], int] = {}
        self.duration: dict[str, _Hist] = {}
        self.jitter: dict[str, _Hist] = {}
        self.loss: dict[str, _Hist] = {}
        self.mos: dict[str, _Hist] = {}
        self.observed = 0
        if registry is not None:
            registry.register(self)

    def observe_many(self, records: Iterable[Any]) -> None:
        """:meth:`observe` each record (the CDR writer's batch)."""
        for record in records:
            self.observe(record)

    def observe(self, cdr: Any) -> None:
        """Count one finished call (a :class:`~sbc.store.cdr.CdrRecord`). Never raises: malformed
        media figures leave that call's media uncounted (all its streams or none), not the call."""
        try:
            self._observe(cdr)
        except Exception:  # metrics must never cost a CDR
            log.exception("counting the CDR of %s failed", getattr(cdr, "call_id", "?"))

    def _observe(self, cdr: Any) -> None:
        direction, disposition = cdr.direction, cdr.disposition
        carrier = self.carriers(cdr.carrier or "")
        customer, trunk = self.trunks((cdr.customer or "", cdr.trunk or ""))
        _add(self.carrier_calls, (direction, carrier, disposition), 1)
        _add(self.trunk_calls, (direction, customer, trunk, disposition), 1)
        for attempt in cdr.attempts:
            if attempt.carrier:
                _add(self.carrier_attempts, (self.carriers(attempt.carrier), f"{attempt.code // 100}xx"), 1)
        if disposition == "answered":
            seconds = float(cdr.duration_s or 0.0)
            _hist(self.duration, direction, CALL_DURATION_BUCKETS).observe(seconds)
            _add(self.carrier_seconds, (direction, carrier), seconds)
            _add(self.trunk_seconds, (direction, customer, trunk), seconds)
        self.observed += 1
        streams = cdr.media.get("streams") if cdr.media else None
        if streams:  # last: the call is counted even when its media figures are malformed
            self._observe_media(carrier, streams)

    def _observe_media(self, carrier: str, streams: Mapping[str, Any]) -> None:
        # sbc.media.manager keeps per stream {"a_to_b": {...}, "b_to_a": {...}}; a_to_b is what the
        # relay received from leg A, the caller. Everything is parsed before anything is counted.
        rows = []
        for stream in streams.values():
            for way, side in (("a_to_b", "caller"), ("b_to_a", "callee")):
                f = stream.get(way) if isinstance(stream, Mapping) else None
                if f:
                    jitter, mos = f.get("jitter_ms"), f.get("mos")
                    rows.append((
                        side,
                        max(int(f.get("packets") or 0), 0),
                        max(int(f.get("lost") or 0), 0),
                        None if jitter is None else max(float(jitter), 0.0) / 1000.0,
                        float(mos) if mos else None,
                    ))  # fmt: skip
        for side, packets, lost, jitter_s, mos in rows:
            _add(self.rtp_packets, (carrier, side), packets)
            _add(self.rtp_lost, (carrier, side), lost)
            if packets == 0:
                continue  # a silent direction (hold, one-way) has no quality to speak of
            _hist(self.loss, side, LOSS_BUCKETS).observe(lost / (packets + lost))
            if jitter_s is not None:
                _hist(self.jitter, side, JITTER_BUCKETS).observe(jitter_s)
            if mos is not None:
                _hist(self.mos, side, MOS_BUCKETS).observe(mos)

    def collect(self) -> Iterator[Any]:
        """The finished-call families (see the module table), built from the tallies now."""
        yield _counter(
            "sbc_carrier_calls",
            "Finished calls by carrier (inbound: the carrier it came from; outbound: the last one tried)",
            ["direction", "carrier", "disposition"],
            self.carrier_calls,
        )
        yield _counter(
            "sbc_trunk_calls",
            "Finished calls by customer trunk",
            ["direction", "customer", "trunk", "disposition"],
            self.trunk_calls,
        )
        yield _counter(
            "sbc_carrier_attempts",
            "Outbound tries per carrier (each gateway tried during failover), by final answer class",
            ["carrier", "code_class"],
            self.carrier_attempts,
        )
        yield _counter(
            "sbc_carrier_billable_seconds",
            "Billable seconds of answered calls by carrier (ACD = rate of this / rate of answered calls)",
            ["direction", "carrier"],
            self.carrier_seconds,
        )
        yield _counter(
            "sbc_trunk_billable_seconds",
            "Billable seconds of answered calls by customer trunk",
            ["direction", "customer", "trunk"],
            self.trunk_seconds,
        )
        yield _histogram(
            "sbc_call_duration_seconds", "Billable duration of answered calls", "direction", self.duration
        )
        yield _counter(
            "sbc_call_rtp_packets",
            "RTP packets the relay received in finished calls, by the side that sent them",
            ["carrier", "from_side"],
            self.rtp_packets,
        )
        yield _counter(
            "sbc_call_rtp_lost",
            "RTP packets lost on the way to the relay in finished calls (sequence gaps)",
            ["carrier", "from_side"],
            self.rtp_lost,
        )
        yield _histogram(
            "sbc_call_rtp_jitter_seconds",
            "RFC 3550 interarrival jitter of each finished media stream and direction",
            "from_side",
            self.jitter,
        )
        yield _histogram(
            "sbc_call_rtp_loss_ratio",
            "Loss ratio lost/(received+lost) of each finished media stream and direction",
            "from_side",
            self.loss,
        )
        yield _histogram(
            "sbc_call_rtp_mos",
            "Estimated MOS of each finished media stream and direction",
            "from_side",
            self.mos,
        )
        yield CounterMetricFamily(
            "sbc_cdrs_observed", "CDRs counted into the call metrics", value=self.observed
        )


def _add(tally: dict, key: Any, amount: float) -> None:
    tally[key] = tally.get(key, 0) + amount


def _hist(table: dict[str, _Hist], key: str, bounds: tuple[float, ...]) -> _Hist:
    h = table.get(key)
    if h is None:
        h = table[key] = _Hist(bounds)
    return h


def _counter(name: str, doc: str, labels: list[str], tally: dict) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, v in sorted(tally.items()):  # sorted: a copy, and a stable order for diffs
        family.add_metric(list(key), v)
    return family


def _histogram(name: str, doc: str, label: str, table: dict[str, _Hist]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for key, h in sorted(table.items()):
        family.add_metric([key], h.buckets(), h.total)
    return family


#: The process's finished-call metrics; the CDR writer calls ``CDR_METRICS.observe_many(batch)``.
CDR_METRICS = CdrMetrics()


# -- 3. scrape time ------------------------------------------------------------------------------


class LiveSource(Protocol):
    """What :class:`LiveCollector` reads (an :class:`sbc.app.SbcApp`); any attribute may be None.

    ``b2bua``: ``.calls`` (Call objects with ``direction`` and ``state``) and ``.prober.table.snapshot()``;
    ``relay``: ``counters()`` and ``worker_tids()``; ``overload``: ``state()``; ``provisioning_version``.
    """

    b2bua: Any
    relay: Any
    overload: Any


class LiveCollector(Collector):
    """Reads a running SBC at scrape time: calls, gateway health, relay, overload, threads.

    Runs on the event loop thread (the ops handler is synchronous on the loop), so reading the B2BUA's
    tables needs no locking. Each part is independent: one that fails is logged and left out, the rest
    of the scrape still answers.
    """

    def __init__(self, source: LiveSource, *, process: psutil.Process | None = None) -> None:
        self.source = source
        self._process = process
        self._loop_tid: int | None = None

    def collect(self) -> Iterator[Any]:
        """Yield the scrape-time families (see the module table)."""
        for part in (self._calls, self._gateways, self._relay, self._overload, self._threads, self._info):
            try:
                yield from part()
            except Exception:
                log.exception("metrics: %s failed", part.__name__)

    def _calls(self) -> Iterator[Any]:
        b2bua = getattr(self.source, "b2bua", None)
        family = GaugeMetricFamily("sbc_active_calls", "Calls in progress", labels=["direction", "state"])
        counts: dict[tuple[str, str], int] = {}
        if b2bua is not None:
            for call in list(b2bua.calls.values()):
                key = (call.direction, str(call.state))
                counts[key] = counts.get(key, 0) + 1
        for direction in ("inbound", "outbound"):  # always present: a dashboard shows 0, not "no data"
            counts.setdefault((direction, "routing"), 0)
        for (direction, state), n in sorted(counts.items()):
            family.add_metric([direction, state], n)
        yield family

    def _gateways(self) -> Iterator[Any]:
        b2bua = getattr(self.source, "b2bua", None)
        prober = getattr(b2bua, "prober", None)
        if prober is None:
            return
        labels = ["carrier", "gateway", "transport"]
        up = GaugeMetricFamily("sbc_gateway_up", "1 when the gateway answers OPTIONS probes", labels=labels)
        latency = GaugeMetricFamily(
            "sbc_gateway_probe_latency_seconds", "Smoothed OPTIONS round trip (EWMA, 1/8 gain)", labels=labels
        )
        probes = CounterMetricFamily("sbc_gateway_probes", "OPTIONS probes completed", labels=labels)
        failures = CounterMetricFamily("sbc_gateway_probe_failures", "OPTIONS probes failed", labels=labels)
        for status in prober.table.snapshot():
            gw = status.gateway
            values = [status.carrier, f"{gw.host}:{gw.port}", gw.transport.lower()]
            up.add_metric(values, 1.0 if status.up else 0.0)
            if status.ewma_latency_s is not None:
                latency.add_metric(values, status.ewma_latency_s)
            probes.add_metric(values, status.probes)
            failures.add_metric(values, status.failures)
        yield from (up, latency, probes, failures)

    def _relay(self) -> Iterator[Any]:
        relay = getattr(self.source, "relay", None)
        if relay is None:
            return
        c = relay.counters()
        packets = CounterMetricFamily("sbc_rtp_relay_packets", "Packets through the relay", labels=["way"])
        packets.add_metric(["in"], c["packets_in"])
        packets.add_metric(["out"], c["packets_out"])
        yield packets
        yield GaugeMetricFamily("sbc_rtp_relay_sessions", "Relay sessions allocated", value=c["sessions"])
        ports = GaugeMetricFamily("sbc_rtp_relay_ports", "Relay port pool", labels=["state"])
        ports.add_metric(["free"], c["ports_free"])
        ports.add_metric(["total"], c["ports_total"])
        yield ports
        yield CounterMetricFamily(
            "sbc_rtp_relay_events_dropped", "Relay events lost to a full queue", value=c["events_dropped"]
        )
        yield GaugeMetricFamily(
            "sbc_rtp_relay_kernel_flows",
            "Stream directions the kernel fast path relays now",
            value=c["kernel_flows"],
        )
        yield CounterMetricFamily(
            "sbc_rtp_relay_kernel_packets", "Packets the kernel fast path relayed", value=c["kernel_packets"]
        )

    def _overload(self) -> Iterator[Any]:
        guard = getattr(self.source, "overload", None)
        if guard is None:
            return
        s = guard.state()
        yield GaugeMetricFamily(
            "sbc_overloaded", "1 while new calls are being shed", value=float(s.overloaded)
        )
        yield GaugeMetricFamily(
            "sbc_overload_severity", "Shed fraction as a share of its maximum (0..1)", value=s.severity
        )
        yield GaugeMetricFamily(
            "sbc_event_loop_lag_ewma_seconds",
            "Smoothed per-tick delay of the overload guard (loop lag or SIP queueing delay, the larger)",
            value=s.lag_ewma_s,
        )
        yield CounterMetricFamily("sbc_overload_episodes", "Overload episodes entered", value=s.episodes)
        yield CounterMetricFamily("sbc_overload_shed", "New calls refused by overload", value=s.shed)

    def _threads(self) -> Iterator[Any]:
        if self._process is None:
            self._process = psutil.Process()
        if self._loop_tid is None:
            self._loop_tid = threading.get_native_id()  # collect() runs on the loop thread
        relay = getattr(self.source, "relay", None)
        relay_tids = set(relay.worker_tids()) if relay is not None else set()
        cpu = {"loop": 0.0, "relay": 0.0, "other": 0.0}
        threads = self._process.threads()
        for t in threads:
            role = "loop" if t.id == self._loop_tid else "relay" if t.id in relay_tids else "other"
            cpu[role] += t.user_time + t.system_time
        family = CounterMetricFamily(
            "sbc_thread_cpu_seconds",
            "CPU time by thread role: event loop, RTP relay workers, other",
            labels=["thread"],
        )
        for role, seconds in cpu.items():
            family.add_metric([role], seconds)
        yield family
        yield GaugeMetricFamily("sbc_process_threads", "OS threads of the process", value=len(threads))

    def _info(self) -> Iterator[Any]:
        version = getattr(self.source, "provisioning_version", None)
        if version is not None:
            yield GaugeMetricFamily(
                "sbc_provisioning_version",
                "Store version the B2BUA routes with (-1: not loaded)",
                value=version,
            )
        info = GaugeMetricFamily("sbc_build_info", "The running versions", labels=["version", "relay"])
        info.add_metric([_sbc_version(), _relay_version()], 1.0)
        yield info


@functools.cache
def _sbc_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sbc")
    except PackageNotFoundError:
        return "unknown"


@functools.cache
def _relay_version() -> str:
    try:
        from rtp_relay_ext import engine_version

        return str(engine_version())
    except ImportError:
        return "unknown"


class Exposition:
    """A collector of collectors: the default registry plus a running SBC's :class:`LiveCollector`.

    Given to prometheus_client's encoders (they only call ``collect()``), so one text or OpenMetrics
    document holds both without registering per-app collectors globally (several apps in one test
    process would collide there).
    """

    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Any]:
        """Every family of every collector, in order."""
        for c in self.collectors:
            yield from c.collect()


def exposition_for(source: LiveSource | None, registry: Any = REGISTRY) -> Exposition:
    """The collector /metrics encodes: ``registry`` (default: the process's) plus ``source``'s live view."""
    return Exposition(registry, LiveCollector(source)) if source is not None else Exposition(registry)
