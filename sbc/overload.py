"""Overload protection: shed new INVITEs with 503 + Retry-After while calls in progress keep working.

Two signals say the process cannot keep up:

* **event loop lag**: how late a callback scheduled for time T actually runs. Every SIP message, timer and
  API request of this process goes through the one loop, so lag is the direct measure of "falling
  behind"; once it approaches SIP's T1 (500 ms) peers start retransmitting and the load feeds on itself.
* **CPU**: the process's CPU as a percentage of the machine. The RTP relay threads run outside the loop,
  so a machine saturated by media shows here before (or without) the loop lagging.

:class:`OverloadGuard` is the pure decision (samples and time in, verdicts out, a fake clock in tests);
:class:`OverloadMonitor` is the thin asyncio sampler that feeds it. Only new calls consult the guard
(:meth:`OverloadGuard.admit_new_call` on an initial INVITE): in-dialog requests (ACK, BYE, re-INVITE,
UPDATE) and media never do, because dropping them would break calls already paid for while saving little.

Shedding is proportional, not all-or-nothing: a fraction of new calls that grows with the severity is
refused. Refusing every call empties the process, the guard clears, and every refused caller retries at
once — an on/off oscillation (RFC 6357 §5) — whereas a loss fraction settles near capacity and keeps
admitting useful work (the loss-based control of RFC 7339). A 503 with Retry-After also makes an RFC 3263
proxy avoid this server for that long for *all* requests (RFC 3261 §21.5.4), so Retry-After stays short
and bounded: carriers should fail over for a moment, not drop us from rotation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Protocol

import psutil

from . import metrics

log = logging.getLogger(__name__)

LAG_THRESHOLD_S = 0.1
"""Enter overload when the smoothed loop lag exceeds this. 100 ms is where Kamailio's and Asterisk's
scheduler/taskprocessor alarms typically sit, a fifth of SIP T1 (RFC 3261 §17.1.1.1, 500 ms): late
enough that ordinary GC pauses do not trip it, early enough to act before peers retransmit."""

LAG_CLEAR_S = 0.05
"""Leave overload only when the smoothed lag is below this: half the entry threshold, the hysteresis
band that keeps a process hovering at the threshold from flapping."""

LAG_SEVERE_S = 1.0
"""Smoothed lag at which severity reaches 1 (maximum shedding): two T1s, where every outstanding
transaction is retransmitting and each admitted call costs several times its normal work."""

LAG_SAMPLE_CAP_S = 10.0
"""A single lag sample is capped here, so one huge stall (a VM paused, a debugger) raises the average to
severe without keeping it there for minutes after the loop has recovered."""

LAG_EWMA_ALPHA = 0.2
"""Weight of each new lag sample in the moving average. At the 100 ms sampling interval the time constant
is about half a second: one 300 ms GC pause alone lifts the average to 60 ms (no overload), a stall that
lasts a few samples crosses the threshold."""

CPU_THRESHOLD_PCT = 95.0
"""Enter overload when process CPU (percent of the machine) stays above this: at 95 % the scheduler has no
slack left and the loop's latency is at the mercy of the relay threads."""

CPU_CLEAR_PCT = 85.0
"""Leave overload only when CPU is below this: a 10-point hysteresis band."""

CPU_SAMPLES_TO_ENTER = 3
"""Consecutive high CPU samples (one per second) needed to enter: a single busy second, such as a
provisioning reload or a burst of registrations, is not overload."""

HOLD_S = 5.0
"""Both signals must stay below their clear levels this long before overload ends, so the guard does not
release the moment shedding takes effect; comparable to the shortest Retry-After we send."""

MIN_SHED_FRACTION = 0.2
"""Share of new calls refused just after entering overload (severity 0), and during the hold period."""

MAX_SHED_FRACTION = 1.0
"""Share refused at severity 1: with the loop a second late, each further call only worsens every call."""

RETRY_AFTER_MIN_S = 2
"""Retry-After at severity 0: a caller retrying sooner would land in the same overloaded moment."""

RETRY_AFTER_MAX_S = 30
"""Retry-After ceiling. Proxies treat a 503 with Retry-After as the whole server being unavailable for
that long (RFC 3261 §21.5.4, RFC 3263 §4.3): beyond half a minute we would be taken out of a carrier's
rotation for longer than any overload we expect to last."""

LOOP_SAMPLE_INTERVAL_S = 0.1
"""How often the monitor measures loop lag: ten wake-ups a second cost nothing measurable and resolve
stalls at the scale that matters for T1."""

CPU_SAMPLE_INTERVAL_S = 1.0
"""How often the monitor reads process CPU: psutil's percentage is over the interval since the last call,
and below a second it is dominated by scheduler tick granularity."""


@dataclass(frozen=True, slots=True)
class OverloadState:
    """A snapshot of the guard for metrics and logs.

    ``reason`` is ``"lag"``, ``"cpu"`` or ``"lag+cpu"`` (what tripped it) while overloaded, else None;
    ``since`` is when the current episode began; ``episodes``, ``admitted`` and ``shed`` are totals.
    """

    overloaded: bool
    reason: str | None
    since: float | None
    lag_ewma_s: float
    lag_last_s: float
    cpu_pct: float
    severity: float
    shed_fraction: float
    retry_after_s: int
    episodes: int
    admitted: int
    shed: int


class OverloadGuard:
    """Decides whether a new call may start, from loop-lag and CPU samples; pure (no clock, no I/O).

    Enters overload when the EWMA of loop lag exceeds ``lag_threshold_s`` or CPU exceeds
    ``cpu_threshold_pct`` for ``cpu_samples_to_enter`` consecutive samples. Leaves only after the lag EWMA
    is below ``lag_clear_s`` and CPU below ``cpu_clear_pct`` continuously for ``hold_s``. While overloaded
    :meth:`admit_new_call` refuses a fraction of calls between ``min_shed_fraction`` and
    ``max_shed_fraction`` by severity, drawing from ``rng`` (inject a seeded ``random.Random`` for
    deterministic tests). ``now`` arguments are seconds on one monotonic clock, non-decreasing.
    Raises ValueError for inconsistent thresholds.
    """

    def __init__(
        self,
        lag_threshold_s: float = LAG_THRESHOLD_S,
        cpu_threshold_pct: float = CPU_THRESHOLD_PCT,
        *,
        lag_clear_s: float = LAG_CLEAR_S,
        lag_severe_s: float = LAG_SEVERE_S,
        cpu_clear_pct: float = CPU_CLEAR_PCT,
        cpu_samples_to_enter: int = CPU_SAMPLES_TO_ENTER,
        hold_s: float = HOLD_S,
        ewma_alpha: float = LAG_EWMA_ALPHA,
        min_shed_fraction: float = MIN_SHED_FRACTION,
        max_shed_fraction: float = MAX_SHED_FRACTION,
        retry_after_min_s: int = RETRY_AFTER_MIN_S,
        retry_after_max_s: int = RETRY_AFTER_MAX_S,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < lag_clear_s < lag_threshold_s < lag_severe_s:
            raise ValueError("need 0 < lag_clear_s < lag_threshold_s < lag_severe_s")
        if not 0 < cpu_clear_pct < cpu_threshold_pct <= 100:
            raise ValueError("need 0 < cpu_clear_pct < cpu_threshold_pct <= 100")
        if cpu_samples_to_enter < 1 or hold_s < 0 or not 0 < ewma_alpha <= 1:
            raise ValueError("need cpu_samples_to_enter >= 1, hold_s >= 0, 0 < ewma_alpha <= 1")
        if not 0 <= min_shed_fraction <= max_shed_fraction <= 1:
            raise ValueError("need 0 <= min_shed_fraction <= max_shed_fraction <= 1")
        if not 1 <= retry_after_min_s <= retry_after_max_s:
            raise ValueError("need 1 <= retry_after_min_s <= retry_after_max_s")
        self.lag_threshold_s = lag_threshold_s
        self.cpu_threshold_pct = cpu_threshold_pct
        self.lag_clear_s = lag_clear_s
        self.lag_severe_s = lag_severe_s
        self.cpu_clear_pct = cpu_clear_pct
        self.cpu_samples_to_enter = cpu_samples_to_enter
        self.hold_s = hold_s
        self.ewma_alpha = ewma_alpha
        self.min_shed_fraction = min_shed_fraction
        self.max_shed_fraction = max_shed_fraction
        self.retry_after_min_s = retry_after_min_s
        self.retry_after_max_s = retry_after_max_s
        self._rng = rng if rng is not None else random.Random()
        self._lag_ewma = 0.0
        self._lag_last = 0.0
        self._cpu_pct = 0.0
        self._cpu_high = 0
        self._overloaded = False
        self._reason: str | None = None
        self._since: float | None = None
        self._clear_since: float | None = None
        self._episodes = 0
        self._admitted = 0
        self._shed = 0

    # -- samples ---------------------------------------------------------------------------------

    def record_loop_lag(self, lag_s: float, now: float) -> None:
        """Feed one loop-lag sample (seconds late). Negative becomes 0, above
        :data:`LAG_SAMPLE_CAP_S` is capped, NaN is ignored. May enter or leave overload."""
        if math.isnan(lag_s):
            return
        lag = min(max(lag_s, 0.0), LAG_SAMPLE_CAP_S)
        self._lag_last = lag
        self._lag_ewma += self.ewma_alpha * (lag - self._lag_ewma)
        self._evaluate(now)

    def record_cpu(self, pct: float, now: float) -> None:
        """Feed one CPU sample, percent of the machine (clamped to 0..100; NaN ignored).
        May enter or leave overload."""
        if math.isnan(pct):
            return
        self._cpu_pct = min(max(pct, 0.0), 100.0)
        self._cpu_high = self._cpu_high + 1 if self._cpu_pct > self.cpu_threshold_pct else 0
        self._evaluate(now)

    def _evaluate(self, now: float) -> None:
        lag_high = self._lag_ewma > self.lag_threshold_s
        cpu_high = self._cpu_high >= self.cpu_samples_to_enter
        if lag_high or cpu_high:
            reason = "lag+cpu" if lag_high and cpu_high else "lag" if lag_high else "cpu"
            if not self._overloaded:
                self._overloaded = True
                self._since = now
                self._episodes += 1
                log.warning(
                    "overload: entering (%s, lag %.3fs, cpu %.0f%%)", reason, self._lag_ewma, self._cpu_pct
                )
            self._reason = reason
            self._clear_since = None
            return
        if not self._overloaded:
            return
        if self._lag_ewma >= self.lag_clear_s or self._cpu_pct >= self.cpu_clear_pct:
            self._clear_since = None  # inside the hysteresis band: neither worse nor recovered
            return
        if self._clear_since is None:
            self._clear_since = now
        if now - self._clear_since >= self.hold_s:
            log.warning("overload: leaving after %.1fs", now - (self._since or now))
            self._overloaded = False
            self._reason = None
            self._since = None
            self._clear_since = None

    # -- verdicts --------------------------------------------------------------------------------

    @property
    def overloaded(self) -> bool:
        """True while in an overload episode (including its hold period)."""
        return self._overloaded

    @property
    def severity(self) -> float:
        """0..1: how far the worse signal lies between its clear level and its severe level."""
        lag = (self._lag_ewma - self.lag_clear_s) / (self.lag_severe_s - self.lag_clear_s)
        cpu = (self._cpu_pct - self.cpu_clear_pct) / (100.0 - self.cpu_clear_pct)
        return min(max(lag, cpu, 0.0), 1.0)

    @property
    def shed_fraction(self) -> float:
        """Share of new calls refused now: 0 when not overloaded, else min..max by severity."""
        if not self._overloaded:
            return 0.0
        span = self.max_shed_fraction - self.min_shed_fraction
        return self.min_shed_fraction + span * self.severity

    @property
    def retry_after_s(self) -> int:
        """Seconds for the Retry-After of a 503: the minimum when not overloaded, growing linearly with
        severity to the maximum. Always within [retry_after_min_s, retry_after_max_s]."""
        if not self._overloaded:
            return self.retry_after_min_s
        span = self.retry_after_max_s - self.retry_after_min_s
        return self.retry_after_min_s + round(span * self.severity)

    def admit_new_call(self, now: float) -> bool:
        """Whether a new call (initial INVITE) may proceed; False means answer 503 with
        ``Retry-After: retry_after_s``. Re-evaluates the hold period first (it may end between samples),
        then refuses with probability :attr:`shed_fraction`. Counts the verdict. Never raises."""
        self._evaluate(now)
        if self._overloaded and self._rng.random() < self.shed_fraction:
            self._shed += 1
            return False
        self._admitted += 1
        return True

    def state(self) -> OverloadState:
        """A snapshot for metrics; does not change the guard."""
        return OverloadState(
            overloaded=self._overloaded,
            reason=self._reason,
            since=self._since,
            lag_ewma_s=self._lag_ewma,
            lag_last_s=self._lag_last,
            cpu_pct=self._cpu_pct,
            severity=self.severity,
            shed_fraction=self.shed_fraction,
            retry_after_s=self.retry_after_s,
            episodes=self._episodes,
            admitted=self._admitted,
            shed=self._shed,
        )


class OverloadSink(Protocol):
    """What :class:`OverloadMonitor` feeds: an :class:`OverloadGuard` or a test recorder."""

    def record_loop_lag(self, lag_s: float, now: float) -> None: ...

    def record_cpu(self, pct: float, now: float) -> None: ...


class OverloadMonitor:
    """Samples event-loop lag and process CPU on the running loop and feeds them to ``guard``.

    Every ``interval_s`` a callback is scheduled with ``loop.call_at`` for an expected time; how late it
    runs (by ``loop.time()``) is the lag sample. Every ``cpu_interval_s`` it also reads
    ``process.cpu_percent()`` (default: this process) divided by the CPU count, i.e. percent of the
    machine, or the loop thread's share of one core when that is higher. ``now`` given to the guard
    is ``loop.time()``, so callers of ``admit_new_call`` use the same.
    """

    def __init__(
        self,
        guard: OverloadSink,
        interval_s: float = LOOP_SAMPLE_INTERVAL_S,
        process: psutil.Process | None = None,
        *,
        cpu_interval_s: float = CPU_SAMPLE_INTERVAL_S,
        cpu_count: int | None = None,
    ) -> None:
        if interval_s <= 0 or cpu_interval_s <= 0:
            raise ValueError("sampling intervals must be positive")
        self.guard = guard
        self.interval_s = interval_s
        self.cpu_interval_s = cpu_interval_s
        self._process = process
        self._cpu_count = cpu_count or psutil.cpu_count() or 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._expected = 0.0
        self._next_cpu = 0.0
        self._thread_mark: tuple[float, float] | None = None  # (loop time, loop thread CPU time)

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._handle is not None

    def start(self) -> None:
        """Begin sampling on the running loop. RuntimeError without a running loop or when started."""
        if self._handle is not None:
            raise RuntimeError("OverloadMonitor already started")
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self._process is None:
            self._process = psutil.Process()
        self._read_cpu()  # psutil's first reading has no interval behind it: prime and discard
        now = loop.time()
        self._next_cpu = now + self.cpu_interval_s
        self._schedule(now)

    def stop(self) -> None:
        """Stop sampling; idempotent."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        # From the actual time, not the previous expected one: after a stall, one late sample, no burst.
        self._expected = now + self.interval_s
        self._handle = self._loop.call_at(self._expected, self._tick)

    def _read_cpu(self) -> float | None:
        """The busier of the process (percent of the machine) and the loop's own thread (percent
        of one core). On a 2-core machine a saturated loop is only 50 % of the machine: by the
        process figure alone a Python SBC at its limit never looked overloaded, while its UDP
        receive queue grew until peers retransmitted (800 calls/s through ``sbc run``)."""
        assert self._process is not None and self._loop is not None
        wall, thread = self._loop.time(), time.thread_time()  # the monitor runs on the loop's thread
        loop_pct = None
        if self._thread_mark is not None and wall > self._thread_mark[0]:
            loop_pct = 100.0 * (thread - self._thread_mark[1]) / (wall - self._thread_mark[0])
        self._thread_mark = (wall, thread)
        try:
            machine_pct = self._process.cpu_percent(None) / self._cpu_count
        except psutil.Error as e:  # the process table can refuse (containers, permissions)
            log.debug("overload: cpu_percent failed: %s", e)
            return loop_pct
        return machine_pct if loop_pct is None else max(machine_pct, loop_pct)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        try:
            lag = max(0.0, now - self._expected)
            metrics.EVENT_LOOP_LAG.observe(lag)  # every sample, so a scrape sees spikes between scrapes
            self.guard.record_loop_lag(lag, now)
            if now >= self._next_cpu:
                self._next_cpu = now + self.cpu_interval_s
                pct = self._read_cpu()
                if pct is not None:
                    self.guard.record_cpu(pct, now)
        finally:  # a failing guard is logged by the loop; sampling goes on
            if self._handle is not None:
                self._schedule(now)
