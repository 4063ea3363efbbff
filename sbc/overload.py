"""Overload protection: shed new INVITEs with 503 + Retry-After while calls in progress keep working.

Three signals say the process cannot keep up:

* **event loop lag**: how late a callback scheduled for time T actually runs. Every SIP message, timer and
  API request of this process goes through the one loop, so lag is the direct measure of "falling
  behind"; once it approaches SIP's T1 (500 ms) peers start retransmitting and the load feeds on itself.
* **SIP queueing delay**: how long a SIP datagram waited in the kernel's socket buffer before the loop
  read it (the UDP transport's receive timestamp). Loop lag misses this queue: a loop busy with one
  datagram after another runs its timers nearly on time while the socket buffer behind it grows, and
  every datagram in it arrives late. Per 100 ms tick the controller acts on the larger of the two.
* **CPU**: the process's CPU as a percentage of the machine. The RTP relay threads run outside the loop,
  so a machine saturated by media shows here before (or without) the loop lagging. (A saturated loop
  thread is not a signal of its own: its share of one core reached 95 % at 500-600 calls/s while the
  SBC still kept up, and shed calls it could have carried; the queueing delay sees that loop directly.)

:class:`OverloadGuard` is the pure decision (samples and time in, verdicts out, a fake clock in tests);
:class:`OverloadMonitor` is the thin asyncio sampler that feeds it. Only new calls consult the guard
(:meth:`OverloadGuard.admit_new_call` on an initial INVITE): in-dialog requests (ACK, BYE, re-INVITE,
UPDATE) and media never do, because dropping them would break calls already paid for while saving little.

Shedding is a fraction, not all-or-nothing: a share ``p`` of new calls is refused. Refusing every call
empties the process, the guard clears, and every refused caller retries at once — an on/off oscillation
(RFC 6357 §5) — whereas a loss fraction settles near capacity and keeps admitting useful work (the
loss-based control of RFC 7339). ``p`` is the state of an integral controller (AIMD-like: additive
increase in proportion to how far the delay is past the target, a slow constant decrease once it is well
below): each tick it moves by the delay error and then stays where it is. A proportional controller
(shed fraction computed from the current delay) cannot hold the target: the fraction that must be shed
grows with the offered load (about half at twice the capacity), so it needs an ever larger delay to shed
more, and at twice the capacity only sheds enough once the queue is already near T1. The integral one
keeps raising ``p`` as long as the delay is past the target, whatever ``p`` that takes, and then holds
it: in steady state the delay sits near the target and ``p`` at the share the load requires.

The controller acts on a standing queue, not on a burst (the distinction CoDel, RFC 8289, draws between a
good and a bad queue): a delay between the target and twice it counts only once it has held across two
ticks (the smaller of the two is used), and the integral stops rising while that standing delay falls,
because the shedding in force is already draining the queue. Near capacity on a shared host single ticks
of 100-160 ms come and go with no queue behind them; acting on each shed 5-8 % of calls for seconds
(150 calls in a 20 s run at 94 % of the capacity, in the closed-loop model of the tests; 3 now). And
integrating while a queue drains overshoots: a one-second dip of the capacity to 80 % shed four times
the excess (917 calls against 224; twice now). A delay of twice the target or more counts at once, so a
real overload is met as quickly as before (at twice the capacity the queue peaks at the same 0.37 s).

A stall is not an overload either. When the loop itself ran late past the target right after a tick
within it (the process was not scheduled: a VM or container paused, the host busy elsewhere), that tick's
delay does not count, nor does the next one's (what the stall queued is still being read: the oldest
datagram of the next tick has waited about as long); the stall's delay becomes the level the tick after
is judged against. The backlog then drains if the process has the capacity (the delay falls below the
stall's: ``p`` holds at 0), and counts if it does not. Counting the stall itself shed 83-101 calls of a
20 s run at 1,500 calls/s after a 300 ms pause of one worker (``kill -STOP``), whose backlog drained in
0.2 s; judging the drain from the very next tick still shed 86 in one of three such runs on a slow host.

A 503 with Retry-After also makes an RFC 3263 proxy avoid this server for that long for *all* requests
(RFC 3261 §21.5.4), so Retry-After stays short and bounded: carriers should fail over for a moment, not
drop us from rotation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psutil

from . import metrics

log = logging.getLogger(__name__)

LAG_THRESHOLD_S = 0.1
"""The controller's target: ``p`` rises while the per-tick delay (loop lag or SIP queueing delay,
whichever is larger) exceeds this. 100 ms is where Kamailio's and Asterisk's scheduler/taskprocessor
alarms typically sit, a fifth of SIP T1 (RFC 3261 §17.1.1.1, 500 ms): far enough below T1 that a
request held this long is answered before its peer retransmits, high enough that a loop doing ordinary
work (and a 30 ms GC pause) never reaches it."""

LAG_CLEAR_RATIO = 0.5
"""``p`` falls only while the delay is below this share of the target (50 ms by default); between that
and the target it stays as it is. The dead band is where the controller rests: at a delay just under
the target the shedding in force is about right, and lowering it would only bring the delay back."""

INCREASE_GAIN = 0.05
"""Added to ``p`` per tick for each multiple of the target the delay reaches: at 200 ms +0.10 a tick
(1.0 a second), at 500 ms (T1) or more +0.25 a tick. A 300 ms queue that stands adds 0.15, which
:data:`DECREASE_STEP` takes away within 0.8 s once it is gone; a load twice the capacity reaches the
half it needs within about half a second, before the queue reaches T1."""

MAX_DELAY_RATIO = 5.0
"""The delay counts for at most this many targets per tick (500 ms by default, SIP T1): past T1 every
transaction retransmits anyway, and a huge delay that stands (a backlog that does not drain after a VM
pause) raises ``p`` by at most ``INCREASE_GAIN * MAX_DELAY_RATIO`` = 0.25 a tick instead of refusing
everything at once."""

DECREASE_STEP = 0.02
"""Taken from ``p`` per tick while the delay is below the clear level: 0.2 a second, so full shedding
takes 5 s to release. The decrease is slow and the increase fast (AIMD): re-admitting too quickly
rebuilds the backlog that shedding just drained, and callers refused a moment ago are retrying. It
replaces the hold time of the former on/off guard."""

IMMEDIATE_DELAY_RATIO = 2.0
"""A tick's delay of at least this many targets (200 ms by default) counts at once; a smaller one counts
only as far as the previous tick's delay was as high (a standing queue, not a burst). A stall's delay
does not count at once, whatever its size (see the module docstring)."""

LAG_SAMPLE_CAP_S = 10.0
"""A single delay sample is capped here, so one huge stall does not leave the smoothed delay exported
as a metric (``lag_ewma_s``) far off for minutes after the loop has recovered."""

LAG_EWMA_ALPHA = 0.2
"""Weight of each tick's delay in the smoothed delay exported as a metric (``lag_ewma_s``); at 100 ms
ticks the time constant is about half a second. The controller itself acts on every tick's delay: its
integral is the smoothing."""

CPU_THRESHOLD_PCT = 95.0
"""CPU (percent of the machine) above which the process counts as saturated: at 95 % the scheduler has no
slack left and the loop's latency is at the mercy of the relay threads."""

CPU_CLEAR_PCT = 85.0
"""While CPU is at or above this, ``p`` does not fall, whatever the delay: a 10-point band, so shedding
started by CPU is not released the moment the delay looks fine."""

CPU_SAMPLES_TO_ENTER = 3
"""Consecutive CPU samples (one per second) above :data:`CPU_THRESHOLD_PCT` before CPU pushes ``p`` up:
a single busy second, such as a provisioning reload or a burst of registrations, is not overload."""

CPU_DELAY_RATIO = 1.5
"""While CPU is saturated, each tick's delay counts as at least this many targets (150 ms by default):
``p`` rises by 0.075 a tick until CPU falls below the threshold, as for a moderate delay."""

MAX_SHED_FRACTION = 1.0
"""Upper bound of ``p``. Refusing costs work too (parsing the INVITE, a 503 and its ACK: about a tenth of
a call), so at several times the capacity only refusing nearly every new call keeps the delay bounded;
because ``p`` is released gradually this does not become the on/off pattern of RFC 6357 §5."""

RETRY_AFTER_MIN_S = 2
"""Retry-After when shedding starts: a caller retrying sooner would land in the same overloaded moment."""

RETRY_AFTER_MAX_S = 30
"""Retry-After at the maximum shed fraction. Proxies treat a 503 with Retry-After as the whole server
being unavailable for that long (RFC 3261 §21.5.4, RFC 3263 §4.3): beyond half a minute we would be
taken out of a carrier's rotation for longer than any overload we expect to last."""

LOOP_SAMPLE_INTERVAL_S = 0.1
"""How often the monitor measures loop lag and runs a control step: ten wake-ups a second cost nothing
measurable and resolve stalls at the scale that matters for T1. The gains above are per tick of this
length."""

CPU_SAMPLE_INTERVAL_S = 1.0
"""How often the monitor reads process CPU: psutil's percentage is over the interval since the last call,
and below a second it is dominated by scheduler tick granularity."""


@dataclass(frozen=True, slots=True)
class OverloadState:
    """A snapshot of the guard for metrics and logs.

    ``reason`` is ``"lag"``, ``"cpu"`` or ``"lag+cpu"`` (what last pushed the shed fraction up; "lag"
    covers the SIP queueing delay too) while overloaded, else None; ``since`` is when the current
    episode began. ``lag_ewma_s`` is the smoothed per-tick delay (the larger of loop lag and queueing
    delay), ``lag_last_s`` the last loop-lag sample, ``queue_delay_s`` the last tick's largest SIP
    queueing delay. ``episodes``, ``admitted`` and ``shed`` are totals.
    """

    overloaded: bool
    reason: str | None
    since: float | None
    lag_ewma_s: float
    lag_last_s: float
    queue_delay_s: float
    cpu_pct: float
    severity: float
    shed_fraction: float
    retry_after_s: int
    episodes: int
    admitted: int
    shed: int


def _tame(delay_s: float) -> float:
    return min(max(delay_s, 0.0), LAG_SAMPLE_CAP_S)


class OverloadGuard:
    """Decides whether a new call may start; an integral controller of the shed fraction ``p``, pure
    (no clock, no I/O).

    One control step per tick (the monitor's 100 ms), on the tick's delay: the larger of the loop
    lag (:meth:`record_loop_lag`, which runs the step) and the largest SIP queueing delay since the
    previous tick (:meth:`record_queue_delay`, fed just before). The standing delay ``d`` is that
    delay when it is at least :data:`IMMEDIATE_DELAY_RATIO` targets, else the smaller of it and the
    previous tick's. If ``d`` exceeds ``lag_threshold_s`` (the target) and is not below the previous
    tick's ``d`` (a queue still growing or standing, not draining), ``p`` rises by
    ``increase_gain * min(d / target, max_ratio)``; if it is below
    ``lag_clear_s`` (default half the target), ``p`` falls by ``decrease_step``; in between it stays.
    A stall, a loop lag past the target on a tick that follows one whose delay was within it, does not
    count, nor does the tick after it: the stall's delay becomes the previous standing delay, so the
    backlog it left counts only if the delay has not fallen below it a tick later.
    CPU above ``cpu_threshold_pct`` for ``cpu_samples_to_enter`` consecutive samples makes ``d`` count as
    at least ``cpu_delay_ratio`` targets; CPU at or above ``cpu_clear_pct`` stops ``p`` from falling.
    ``p`` stays within [0, ``max_shed_fraction``]; the guard is overloaded while ``p > 0``.

    :meth:`admit_new_call` refuses with probability ``p``, drawing from ``rng`` (inject a seeded
    ``random.Random`` for deterministic tests). ``now`` arguments are seconds on one monotonic clock,
    non-decreasing; they only date episodes. Raises ValueError for inconsistent settings.
    """

    def __init__(
        self,
        lag_threshold_s: float = LAG_THRESHOLD_S,
        cpu_threshold_pct: float = CPU_THRESHOLD_PCT,
        *,
        lag_clear_s: float | None = None,
        increase_gain: float = INCREASE_GAIN,
        max_ratio: float = MAX_DELAY_RATIO,
        decrease_step: float = DECREASE_STEP,
        cpu_clear_pct: float = CPU_CLEAR_PCT,
        cpu_samples_to_enter: int = CPU_SAMPLES_TO_ENTER,
        cpu_delay_ratio: float = CPU_DELAY_RATIO,
        ewma_alpha: float = LAG_EWMA_ALPHA,
        max_shed_fraction: float = MAX_SHED_FRACTION,
        retry_after_min_s: int = RETRY_AFTER_MIN_S,
        retry_after_max_s: int = RETRY_AFTER_MAX_S,
        rng: random.Random | None = None,
    ) -> None:
        if lag_clear_s is None:
            lag_clear_s = lag_threshold_s * LAG_CLEAR_RATIO
        if not 0 < lag_clear_s < lag_threshold_s < math.inf:
            raise ValueError("need 0 < lag_clear_s < lag_threshold_s (finite)")
        if not 0 < increase_gain <= 1 or not 0 < decrease_step <= 1:
            raise ValueError("need 0 < increase_gain <= 1 and 0 < decrease_step <= 1")
        if not 1 <= max_ratio < math.inf or not 1 < cpu_delay_ratio < math.inf:
            raise ValueError("need 1 <= max_ratio and 1 < cpu_delay_ratio (finite)")
        if not 0 < cpu_clear_pct < cpu_threshold_pct <= 100:
            raise ValueError("need 0 < cpu_clear_pct < cpu_threshold_pct <= 100")
        if cpu_samples_to_enter < 1 or not 0 < ewma_alpha <= 1:
            raise ValueError("need cpu_samples_to_enter >= 1 and 0 < ewma_alpha <= 1")
        if not 0 < max_shed_fraction <= 1:
            raise ValueError("need 0 < max_shed_fraction <= 1")
        if not 1 <= retry_after_min_s <= retry_after_max_s:
            raise ValueError("need 1 <= retry_after_min_s <= retry_after_max_s")
        self.lag_threshold_s = lag_threshold_s
        self.cpu_threshold_pct = cpu_threshold_pct
        self.lag_clear_s = lag_clear_s
        self.increase_gain = increase_gain
        self.max_ratio = max_ratio
        self.decrease_step = decrease_step
        self.cpu_clear_pct = cpu_clear_pct
        self.cpu_samples_to_enter = cpu_samples_to_enter
        self.cpu_delay_ratio = cpu_delay_ratio
        self.ewma_alpha = ewma_alpha
        self.max_shed_fraction = max_shed_fraction
        self.retry_after_min_s = retry_after_min_s
        self.retry_after_max_s = retry_after_max_s
        self._rng = rng if rng is not None else random.Random()
        self._p = 0.0
        self._pending_queue = 0.0  # largest queueing delay since the last control step
        self._queue_last = 0.0
        self._lag_ewma = 0.0
        self._lag_last = 0.0
        # The previous tick's delay; before the first tick, none: a first tick short of the immediate
        # level is a burst (start-up work finishing), not yet a standing queue.
        self._delay_prev = 0.0
        self._standing_prev = 0.0  # the previous tick's standing delay
        self._stall_ticks = 0  # ticks still held for a stall's backlog (see _step)
        self._cpu_pct = 0.0
        self._cpu_high = 0
        self._reason: str | None = None
        self._since: float | None = None
        self._episodes = 0
        self._admitted = 0
        self._shed = 0

    # -- samples ---------------------------------------------------------------------------------

    def record_queue_delay(self, delay_s: float, now: float) -> None:
        """Feed the largest queueing delay (seconds) of a SIP datagram received since the previous
        tick, just before that tick's :meth:`record_loop_lag`. Negative becomes 0, above
        :data:`LAG_SAMPLE_CAP_S` is capped, NaN is ignored; several calls in one tick keep the largest.
        Stored only: the control step runs in :meth:`record_loop_lag`."""
        if math.isnan(delay_s):
            return
        self._pending_queue = max(self._pending_queue, _tame(delay_s))

    def record_loop_lag(self, lag_s: float, now: float) -> None:
        """Feed one loop-lag sample (seconds late) and run one control step on the larger of it and
        the queueing delay recorded since the previous step. Negative becomes 0, above
        :data:`LAG_SAMPLE_CAP_S` is capped; a NaN lag is ignored (the step runs on the queueing delay
        alone). May start or end an overload episode."""
        if not math.isnan(lag_s):
            lag = self._lag_last = _tame(lag_s)
            delay = max(lag, self._pending_queue)
        else:
            lag, delay = 0.0, self._pending_queue
        self._queue_last = self._pending_queue
        self._pending_queue = 0.0
        self._lag_ewma += self.ewma_alpha * (delay - self._lag_ewma)
        self._step(delay, lag, now)

    def record_cpu(self, pct: float, now: float) -> None:
        """Feed one CPU sample, percent of the machine (clamped to 0..100; NaN ignored). Takes effect
        at the next control step."""
        if math.isnan(pct):
            return
        self._cpu_pct = min(max(pct, 0.0), 100.0)
        self._cpu_high = self._cpu_high + 1 if self._cpu_pct > self.cpu_threshold_pct else 0

    def _step(self, delay: float, lag: float, now: float) -> None:
        target = self.lag_threshold_s
        previous, self._delay_prev = self._delay_prev, delay
        if lag > target and previous <= target:
            # A stall: the loop itself did not run. Its backlog is judged two ticks on, against
            # this delay: the next tick's oldest datagram waited about as long as this one's.
            self._stall_ticks = 2
            self._standing_prev = delay
        if self._stall_ticks:
            self._stall_ticks -= 1
            standing, draining = min(delay, previous), True
        else:
            standing = delay if delay >= IMMEDIATE_DELAY_RATIO * target else min(delay, previous)
            draining = standing < self._standing_prev
            self._standing_prev = standing
        lag_high = standing > target
        cpu_high = self._cpu_high >= self.cpu_samples_to_enter
        effective = max(standing, self.cpu_delay_ratio * target) if cpu_high else standing
        before = self._p
        if effective > target:
            if cpu_high or not draining:  # a draining queue holds p where it is
                self._p += self.increase_gain * min(effective / target, self.max_ratio)
                self._reason = "lag+cpu" if lag_high and cpu_high else "lag" if lag_high else "cpu"
        elif effective < self.lag_clear_s and self._cpu_pct < self.cpu_clear_pct:
            self._p -= self.decrease_step
        self._p = min(max(self._p, 0.0), self.max_shed_fraction)
        if before == 0.0 and self._p > 0.0:
            self._since = now
            self._episodes += 1
            log.warning(
                "overload: entering (%s, delay %.3fs, cpu %.0f%%), shedding %.0f%% of new calls",
                self._reason,
                delay,
                self._cpu_pct,
                100.0 * self._p,
            )
        elif before > 0.0 and self._p == 0.0:
            log.warning(
                "overload: leaving after %.1fs", now - (self._since if self._since is not None else now)
            )
            self._reason = None
            self._since = None

    # -- verdicts --------------------------------------------------------------------------------

    @property
    def overloaded(self) -> bool:
        """True while shedding: the shed fraction is above 0."""
        return self._p > 0.0

    @property
    def severity(self) -> float:
        """0..1: the shed fraction as a share of ``max_shed_fraction``."""
        return self._p / self.max_shed_fraction

    @property
    def shed_fraction(self) -> float:
        """Share of new calls refused now (the controller's ``p``), 0..``max_shed_fraction``."""
        return self._p

    @property
    def retry_after_s(self) -> int:
        """Seconds for the Retry-After of a 503: the minimum when not overloaded, growing linearly with
        severity to the maximum. Always within [retry_after_min_s, retry_after_max_s]."""
        if not self.overloaded:
            return self.retry_after_min_s
        span = self.retry_after_max_s - self.retry_after_min_s
        return self.retry_after_min_s + round(span * self.severity)

    def admit_new_call(self, now: float) -> bool:
        """Whether a new call (initial INVITE) may proceed; False means answer 503 with
        ``Retry-After: retry_after_s``. Refuses with probability :attr:`shed_fraction` (the rng is not
        drawn from when that is 0). Counts the verdict. Never raises."""
        if self._p > 0.0 and self._rng.random() < self._p:
            self._shed += 1
            return False
        self._admitted += 1
        return True

    def state(self) -> OverloadState:
        """A snapshot for metrics; does not change the guard."""
        return OverloadState(
            overloaded=self.overloaded,
            reason=self._reason,
            since=self._since,
            lag_ewma_s=self._lag_ewma,
            lag_last_s=self._lag_last,
            queue_delay_s=self._queue_last,
            cpu_pct=self._cpu_pct,
            severity=self.severity,
            shed_fraction=self.shed_fraction,
            retry_after_s=self.retry_after_s,
            episodes=self._episodes,
            admitted=self._admitted,
            shed=self._shed,
        )


class OverloadSink(Protocol):
    """What :class:`OverloadMonitor` feeds: an :class:`OverloadGuard` or a test recorder.
    ``record_queue_delay`` is called only when the monitor has a ``queue_delay`` source."""

    def record_queue_delay(self, delay_s: float, now: float) -> None: ...

    def record_loop_lag(self, lag_s: float, now: float) -> None: ...

    def record_cpu(self, pct: float, now: float) -> None: ...


class OverloadMonitor:
    """Samples event-loop lag, SIP queueing delay and process CPU on the running loop and feeds them to
    ``guard``.

    Every ``interval_s`` a callback is scheduled with ``loop.call_at`` for an expected time; how late it
    runs (by ``loop.time()``) is the lag sample. In that tick, first ``queue_delay()`` (when given: the
    largest queueing delay, in seconds, of the datagrams received since its previous call; an exception
    from it counts as 0) goes to ``guard.record_queue_delay``, then the lag to ``guard.record_loop_lag``,
    which runs the control step; both are observed in histograms. Every ``cpu_interval_s`` it also reads
    ``process.cpu_percent()`` (default: this process) divided by the CPU count, i.e. percent of the
    machine. ``now`` given to the guard is ``loop.time()``, so callers of ``admit_new_call`` use the same.
    """

    def __init__(
        self,
        guard: OverloadSink,
        interval_s: float = LOOP_SAMPLE_INTERVAL_S,
        process: psutil.Process | None = None,
        *,
        cpu_interval_s: float = CPU_SAMPLE_INTERVAL_S,
        cpu_count: int | None = None,
        queue_delay: Callable[[], float] | None = None,
    ) -> None:
        if interval_s <= 0 or cpu_interval_s <= 0:
            raise ValueError("sampling intervals must be positive")
        self.guard = guard
        self.interval_s = interval_s
        self.cpu_interval_s = cpu_interval_s
        self._process = process
        self._cpu_count = cpu_count or psutil.cpu_count() or 1
        self._queue_delay = queue_delay
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._expected = 0.0
        self._next_cpu = 0.0

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
        if self._queue_delay is not None:
            self._read_queue_delay()  # likewise: what queued before sampling began is not this tick's
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
        """The process's CPU as a percentage of the machine, or None when psutil cannot tell."""
        assert self._process is not None
        try:
            return self._process.cpu_percent(None) / self._cpu_count
        except psutil.Error as e:  # the process table can refuse (containers, permissions)
            log.debug("overload: cpu_percent failed: %s", e)
            return None

    def _read_queue_delay(self) -> float:
        """The source's largest queueing delay since its previous call; 0.0 when it fails or returns
        something that is not a non-negative number."""
        assert self._queue_delay is not None
        try:
            delay = float(self._queue_delay())
        except Exception as e:  # a transport being replaced, closed, ...: sampling goes on
            log.debug("overload: queue_delay failed: %s", e)
            return 0.0
        return delay if delay > 0.0 else 0.0  # NaN compares false

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        try:
            lag = max(0.0, now - self._expected)
            metrics.EVENT_LOOP_LAG.observe(lag)  # every sample, so a scrape sees spikes between scrapes
            if self._queue_delay is not None:
                queued = self._read_queue_delay()
                metrics.SIP_QUEUE_DELAY.observe(queued)
                self.guard.record_queue_delay(queued, now)
            self.guard.record_loop_lag(lag, now)
            if now >= self._next_cpu:
                self._next_cpu = now + self.cpu_interval_s
                pct = self._read_cpu()
                if pct is not None:
                    self.guard.record_cpu(pct, now)
        finally:  # a failing guard is logged by the loop; sampling goes on
            if self._handle is not None:
                self._schedule(now)
