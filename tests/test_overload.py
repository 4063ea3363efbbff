"""Tests for sbc.overload: the guard with synthetic samples and a fake clock, and the asyncio monitor."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

import psutil
import pytest

from sbc import metrics
from sbc.overload import (
    CPU_CLEAR_PCT,
    CPU_DELAY_RATIO,
    CPU_SAMPLES_TO_ENTER,
    CPU_THRESHOLD_PCT,
    DECREASE_STEP,
    IMMEDIATE_DELAY_RATIO,
    INCREASE_GAIN,
    LAG_SAMPLE_CAP_S,
    LAG_THRESHOLD_S,
    LOOP_SAMPLE_INTERVAL_S,
    MAX_DELAY_RATIO,
    MAX_SHED_FRACTION,
    RETRY_AFTER_MAX_S,
    RETRY_AFTER_MIN_S,
    OverloadGuard,
    OverloadMonitor,
)

TICK = LOOP_SAMPLE_INTERVAL_S
CLEAR = LAG_THRESHOLD_S / 2  # the default clear level


def guard(**kwargs) -> OverloadGuard:
    return OverloadGuard(rng=random.Random(1234), **kwargs)


def ticks(g: OverloadGuard, lag: float, n: int, start: float, queue: float | None = None) -> float:
    """``n`` monitor ticks one TICK apart from ``start``: the queueing delay (when given), then the loop
    lag. Returns the time after the last."""
    now = start
    for _ in range(n):
        if queue is not None:
            g.record_queue_delay(queue, now)
        g.record_loop_lag(lag, now)
        now += TICK
    return now


def ticks_until_clear(g: OverloadGuard, start: float, limit: int = 1000) -> int:
    """Idle ticks until the guard stops shedding; how many."""
    for n in range(1, limit + 1):
        g.record_loop_lag(0.0, start + n * TICK)
        if not g.overloaded:
            return n
    raise AssertionError("still overloaded")


# -- the controller ----------------------------------------------------------------------------------


def test_idle_guard_admits_everything():
    g = guard()
    now = ticks(g, 0.001, 100, 0.0, queue=0.002)
    assert not g.overloaded
    assert all(g.admit_new_call(now) for _ in range(1000))
    state = g.state()
    assert state.admitted == 1000 and state.shed == 0
    assert state.shed_fraction == 0.0 and state.severity == 0.0
    assert state.reason is None and state.since is None and state.episodes == 0
    assert g.retry_after_s == RETRY_AFTER_MIN_S


def test_a_delay_at_the_target_is_not_above_it():
    g = guard()
    ticks(g, LAG_THRESHOLD_S, 100, 0.0, queue=LAG_THRESHOLD_S)
    assert not g.overloaded


def test_a_stall_whose_backlog_drains_sheds_nothing():
    """A 300 ms pause of a healthy process (a VM paused, the host busy elsewhere): the tick after it is
    300 ms late and so is what queued meanwhile; the backlog then drains, tick by tick, and no call is
    refused for it (counting the pause itself refused 83-101 calls of a 20 s run at 1,500/s)."""
    g = guard()
    now = ticks(g, 0.0, 10, 0.0, queue=0.02)
    now = ticks(g, 0.3, 1, now, queue=0.3)  # the stall
    assert not g.overloaded
    assert g.state().lag_last_s == pytest.approx(0.3)
    for queued in (0.25, 0.19, 0.12, 0.06, 0.02):  # the backlog drains: each tick's delay below the last
        now = ticks(g, 0.01, 1, now, queue=queued)
        assert not g.overloaded, queued
    assert g.state().episodes == 0 and all(g.admit_new_call(now) for _ in range(1000))


def test_a_stall_whose_backlog_drains_slowly_sheds_nothing():
    """On a slow host the tick after a stall reads datagrams that waited even a little longer than
    the stall's (the oldest still queued): that is the stall's backlog being read, not a new queue.
    Judged from that tick, one run in three shed 86 calls; judged a tick later, none."""
    g = guard()
    now = ticks(g, 0.0, 10, 0.0, queue=0.02)
    now = ticks(g, 0.27, 1, now, queue=0.31)
    for queued in (0.32, 0.28, 0.21, 0.14, 0.08, 0.03):
        now = ticks(g, 0.02, 1, now, queue=queued)
        assert not g.overloaded, queued


def test_a_stall_whose_backlog_stands_counts_from_the_second_tick():
    """The same pause, but the process cannot catch up: two ticks on, the delay is still at the
    stall's level or above, and the backlog counts at its full size."""
    g = guard()
    now = ticks(g, 0.0, 10, 0.0)
    now = ticks(g, 0.3, 1, now, queue=0.3)
    now = ticks(g, 0.01, 1, now, queue=0.31)
    assert not g.overloaded
    now = ticks(g, 0.01, 1, now, queue=0.32)
    assert g.shed_fraction == pytest.approx(INCREASE_GAIN * 3.2)
    state = g.state()
    assert state.reason == "lag" and state.since == pytest.approx(now - TICK) and state.episodes == 1
    # a loop that stays late (lag alone, no queue source) counts from its third tick the same way
    g = guard()
    now = ticks(g, 0.3, 2, 0.0)
    assert not g.overloaded
    ticks(g, 0.3, 1, now)
    assert g.shed_fraction == pytest.approx(INCREASE_GAIN * 3)
    # and a stall under CPU saturation is not exempt: CPU pushes p whatever the delay
    g = guard()
    for t in range(CPU_SAMPLES_TO_ENTER):
        g.record_cpu(100.0, float(t))
    ticks(g, 0.3, 1, 3.0, queue=0.3)
    assert g.shed_fraction == pytest.approx(INCREASE_GAIN * CPU_DELAY_RATIO)


def test_a_stall_on_a_queue_already_past_the_target_counts_at_once():
    """The stall rule is for a process that was keeping up: on a tick after one already past the
    target, a late loop is more of the same overload and counts as any delay does."""
    g = guard()
    now = ticks(g, 0.0, 1, 0.0, queue=0.15)
    now = ticks(g, 0.3, 1, now, queue=0.15)
    assert g.shed_fraction == pytest.approx(INCREASE_GAIN * 3)


def test_increase_grows_with_the_delay_up_to_max_ratio():
    """One step's increase is the gain times the delay's ratio to the target, capped; a delay under
    IMMEDIATE_DELAY_RATIO targets counts from its second tick (a standing queue), a larger one at once."""
    for delay, expected in [(0.15, 0.075), (0.2, 0.10), (0.3, 0.15), (0.5, 0.25), (5.0, 0.25), (1e9, 0.25)]:
        g = guard()
        ticks(g, 0.0, 1, 0.0, queue=delay)
        if delay < IMMEDIATE_DELAY_RATIO * LAG_THRESHOLD_S:
            assert g.shed_fraction == 0.0, delay  # one tick is a burst
            ticks(g, 0.0, 1, TICK, queue=delay)
        assert g.shed_fraction == pytest.approx(expected), delay
    assert pytest.approx(0.25) == INCREASE_GAIN * MAX_DELAY_RATIO


def test_sustained_delay_raises_p_every_tick_until_the_delay_falls():
    """Integral action: a constant 200 ms delay keeps adding 0.1 a tick, whatever p already is."""
    g = guard()
    now, fractions = 0.0, []
    for _ in range(8):
        now = ticks(g, 0.0, 1, now, queue=0.2)
        fractions.append(g.shed_fraction)
    assert fractions == pytest.approx([0.1 * k for k in range(1, 9)])
    # in the band between clear and target: p holds, for any length of time
    held = g.shed_fraction
    now = ticks(g, 0.07, 600, now)
    assert g.shed_fraction == pytest.approx(held)
    # below the clear level: p falls by DECREASE_STEP a tick (0.2 a second), no faster
    now = ticks(g, 0.0, 10, now)
    assert g.shed_fraction == pytest.approx(held - 10 * DECREASE_STEP)
    n = ticks_until_clear(g, now)
    assert n == pytest.approx((held - 10 * DECREASE_STEP) / DECREASE_STEP, abs=1)
    assert g.state().episodes == 1


def test_release_from_full_shedding_takes_seconds():
    g = guard()
    now = ticks(g, 1.0, 10, 0.0)
    assert g.shed_fraction == MAX_SHED_FRACTION
    n = ticks_until_clear(g, now)
    assert n * TICK == pytest.approx(MAX_SHED_FRACTION / DECREASE_STEP * TICK, abs=0.2)  # about 5 s


def test_one_huge_stall_does_not_keep_overload():
    g = guard()
    g.record_loop_lag(1e6, 0.0)
    assert g.state().lag_last_s == LAG_SAMPLE_CAP_S
    assert not g.overloaded  # a stall alone: the next ticks tell whether its backlog drains
    g.record_loop_lag(1e6, TICK)
    g.record_loop_lag(1e6, 2 * TICK)  # it did not: the loop is still stopped
    assert g.shed_fraction == pytest.approx(INCREASE_GAIN * MAX_DELAY_RATIO)
    assert ticks_until_clear(g, 2 * TICK) <= 13  # 0.25 / 0.02: about 1.3 s


def test_queue_delay_alone_drives_p():
    g = guard()
    now = ticks(g, 0.0, 5, 0.0, queue=0.3)
    assert g.shed_fraction == pytest.approx(5 * 0.15)
    state = g.state()
    assert state.reason == "lag"
    assert state.queue_delay_s == pytest.approx(0.3) and state.lag_last_s == 0.0
    assert state.lag_ewma_s > LAG_THRESHOLD_S
    # the queue drains: the delay source reports 0 and p comes down
    ticks(g, 0.0, 100, now, queue=0.0)
    assert not g.overloaded
    assert g.state().queue_delay_s == 0.0


def test_one_step_per_tick_on_the_larger_of_the_two():
    g = guard()
    now = ticks(g, 0.0, 1, 0.0, queue=0.3)  # already past the target: a late loop is no stall
    g.record_queue_delay(0.2, now)
    assert g.shed_fraction == pytest.approx(0.15)  # stored only: the step runs with the loop-lag sample
    g.record_loop_lag(0.4, now)
    assert g.shed_fraction == pytest.approx(0.15 + 0.2)  # one step on 400 ms: neither the sum nor two steps
    g = guard()
    now = ticks(g, 0.0, 1, 0.0, queue=0.3)
    g.record_queue_delay(0.4, now)
    g.record_loop_lag(0.2, now)
    assert g.shed_fraction == pytest.approx(0.15 + 0.2)
    # several queue samples in one tick keep the largest, and a tick consumes them
    g = guard()
    for delay in (0.1, 0.6, 0.3):
        g.record_queue_delay(delay, 0.0)
    g.record_loop_lag(0.0, 0.0)
    assert g.shed_fraction == pytest.approx(0.25)
    assert g.state().queue_delay_s == pytest.approx(0.6)
    g.record_loop_lag(0.0, TICK)
    assert g.shed_fraction == pytest.approx(0.25 - DECREASE_STEP)
    assert g.state().queue_delay_s == 0.0


def test_cpu_needs_consecutive_samples_then_pushes_p_without_delay():
    g = guard()
    t = 0.0
    for _ in range(CPU_SAMPLES_TO_ENTER - 1):
        g.record_cpu(99.0, t)
        t = ticks(g, 0.0, 10, t)
    g.record_cpu(50.0, t)  # the streak breaks
    t = ticks(g, 0.0, 10, t)
    for _ in range(CPU_SAMPLES_TO_ENTER - 1):
        g.record_cpu(99.0, t)
        t = ticks(g, 0.0, 10, t)
    assert not g.overloaded
    g.record_cpu(99.0, t)
    assert not g.overloaded  # CPU acts through the control step, at the next tick
    t = ticks(g, 0.0, 1, t)
    assert g.shed_fraction == pytest.approx(INCREASE_GAIN * CPU_DELAY_RATIO)
    assert g.state().reason == "cpu"
    t = ticks(g, 0.0, 9, t)  # still saturated: p keeps rising
    assert g.shed_fraction == pytest.approx(10 * INCREASE_GAIN * CPU_DELAY_RATIO)


def test_cpu_above_clear_blocks_the_decrease():
    g = guard()
    for t in range(CPU_SAMPLES_TO_ENTER):
        g.record_cpu(100.0, float(t))
    t = ticks(g, 0.0, 4, 3.0)
    p = g.shed_fraction
    assert p == pytest.approx(0.3)
    g.record_cpu(CPU_CLEAR_PCT, t)  # below the threshold, not below the clear level
    t = ticks(g, 0.0, 100, t)
    assert g.shed_fraction == pytest.approx(p)
    g.record_cpu(CPU_CLEAR_PCT - 5, t)
    t = ticks(g, 0.0, 5, t)
    assert g.shed_fraction == pytest.approx(p - 5 * DECREASE_STEP)


def test_cpu_at_threshold_is_not_above_it():
    g = guard()
    for t in range(10):
        g.record_cpu(CPU_THRESHOLD_PCT, float(t))
        ticks(g, 0.0, 10, float(t))
    assert not g.overloaded


def test_reason_says_what_pushed_p_last():
    g = guard()
    for t in range(CPU_SAMPLES_TO_ENTER):
        g.record_cpu(100.0, float(t))
    now = ticks(g, 0.0, 1, 3.0, queue=0.3)
    assert g.state().reason == "lag+cpu"
    g.record_cpu(10.0, now)
    now = ticks(g, 0.0, 1, now, queue=0.25)  # draining without the CPU: pushes nothing, the reason stays
    assert g.state().reason == "lag+cpu"
    now = ticks(g, 1.0, 1, now)
    assert g.state().reason == "lag"
    now = ticks(g, 0.07, 5, now)  # in the band: unchanged, and so is the reason
    assert g.state().reason == "lag"


def test_bad_samples_are_tamed():
    g = guard()
    g.record_loop_lag(float("nan"), 0.0)
    g.record_loop_lag(-5.0, 0.1)
    g.record_queue_delay(float("nan"), 0.2)
    g.record_queue_delay(-1.0, 0.2)
    g.record_loop_lag(0.0, 0.2)
    g.record_cpu(float("nan"), 0.3)
    g.record_cpu(-3.0, 0.3)
    state = g.state()
    assert state.lag_ewma_s == 0.0 and state.lag_last_s == 0.0 and state.queue_delay_s == 0.0
    assert state.cpu_pct == 0.0 and not state.overloaded
    g.record_queue_delay(float("inf"), 0.4)
    g.record_loop_lag(float("nan"), 0.4)  # the lag sample is ignored, the tick still runs on the queue
    state = g.state()
    assert state.queue_delay_s == LAG_SAMPLE_CAP_S and state.lag_last_s == 0.0
    assert g.shed_fraction == pytest.approx(INCREASE_GAIN * MAX_DELAY_RATIO)
    g.record_loop_lag(float("inf"), 0.5)
    assert g.state().lag_last_s == LAG_SAMPLE_CAP_S
    assert g.state().lag_ewma_s <= LAG_SAMPLE_CAP_S
    g.record_cpu(800.0, 0.6)  # an unnormalised multi-core figure
    assert g.state().cpu_pct == 100.0


def test_shed_fraction_is_bounded_by_max_shed_fraction():
    g = guard(max_shed_fraction=0.6)
    ticks(g, 2.0, 100, 0.0, queue=3.0)
    assert g.shed_fraction == pytest.approx(0.6)
    assert g.severity == pytest.approx(1.0)
    assert g.retry_after_s == RETRY_AFTER_MAX_S
    refused = sum(not g.admit_new_call(10.0) for _ in range(4000)) / 4000
    assert refused == pytest.approx(0.6, abs=0.03)
    full = guard()
    ticks(full, 2.0, 100, 0.0)
    assert full.shed_fraction == MAX_SHED_FRACTION == 1.0
    assert not any(full.admit_new_call(10.0) for _ in range(1000))


def test_retry_after_grows_with_p_and_is_bounded():
    g = guard()
    assert g.retry_after_s == RETRY_AFTER_MIN_S
    values = []
    now = 0.0
    for _ in range(12):
        now = ticks(g, 0.0, 1, now, queue=0.2)  # +0.1 a tick, up to 1.0
        values.append(g.retry_after_s)
        assert isinstance(g.retry_after_s, int)
    assert values == sorted(values)
    assert values[0] == RETRY_AFTER_MIN_S + round((RETRY_AFTER_MAX_S - RETRY_AFTER_MIN_S) * 0.1)
    assert values[-1] == RETRY_AFTER_MAX_S
    assert all(RETRY_AFTER_MIN_S <= v <= RETRY_AFTER_MAX_S for v in values)
    ticks_until_clear(g, now)
    assert g.retry_after_s == RETRY_AFTER_MIN_S


def test_episodes_are_counted_once_each_and_logged(caplog):
    caplog.set_level(logging.WARNING, logger="sbc.overload")
    g = guard()
    now = ticks(g, 0.0, 3, 0.0, queue=0.3)
    now = ticks(g, 0.07, 20, now)  # the band: still the same episode
    now = ticks(g, 0.0, 5, now)
    now = ticks(g, 0.0, 3, now, queue=0.3)  # worse again before p reached 0: still the same episode
    assert g.state().episodes == 1
    start = g.state().since
    assert start == 0.0
    now += ticks_until_clear(g, now) * TICK
    assert g.state().episodes == 1 and g.state().since is None
    ticks(g, 0.0, 1, now, queue=0.3)
    assert g.state().episodes == 2 and g.state().since == pytest.approx(now)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("entering" in m for m in messages) == 2
    leaving = [m for m in messages if "leaving" in m]
    assert len(leaving) == 1 and "leaving after" in leaving[0]


def test_shedding_fraction_is_deterministic_with_a_seeded_rng():
    def run() -> list[bool]:
        g = OverloadGuard(rng=random.Random(7))
        ticks(g, 0.0, 5, 0.0, queue=0.2)  # p = 0.5
        assert g.shed_fraction == pytest.approx(0.5)
        return [g.admit_new_call(1.0) for _ in range(10_000)]

    first = run()
    assert first == run()
    assert sum(not v for v in first) == pytest.approx(5000, abs=200)


def test_clear_level_defaults_to_half_the_target():
    g = OverloadGuard(lag_threshold_s=0.2)
    assert g.lag_clear_s == pytest.approx(0.1)
    assert guard().lag_clear_s == pytest.approx(CLEAR)
    small = OverloadGuard(lag_threshold_s=0.02)  # overload_lag_ms = 20: no longer refused
    assert small.lag_clear_s == pytest.approx(0.01)
    g = guard(lag_clear_s=0.02)
    now = ticks(g, 0.0, 1, 0.0, queue=0.3)
    ticks(g, 0.03, 50, now)  # above the explicit clear level: p holds
    assert g.shed_fraction == pytest.approx(0.15)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lag_threshold_s": 0.0},
        {"lag_threshold_s": float("inf")},
        {"lag_threshold_s": float("nan")},
        {"lag_clear_s": 0.0},
        {"lag_clear_s": 0.1},  # not below the target
        {"lag_threshold_s": 0.04, "lag_clear_s": 0.05},
        {"increase_gain": 0.0},
        {"increase_gain": 1.5},
        {"decrease_step": 0.0},
        {"decrease_step": -0.1},
        {"max_ratio": 0.5},
        {"max_ratio": float("inf")},
        {"cpu_delay_ratio": 1.0},
        {"cpu_threshold_pct": 101.0},
        {"cpu_clear_pct": 96.0},
        {"cpu_samples_to_enter": 0},
        {"ewma_alpha": 0.0},
        {"ewma_alpha": 1.5},
        {"max_shed_fraction": 0.0},
        {"max_shed_fraction": 1.1},
        {"retry_after_min_s": 0},
        {"retry_after_min_s": 40},
    ],
)
def test_inconsistent_settings_refused(kwargs):
    with pytest.raises(ValueError):
        OverloadGuard(**kwargs)


def closed_loop(
    g: OverloadGuard,
    offered: int,
    capacity: Callable[[float], float],
    seconds: float,
    jitter: random.Random | None = None,
    refuse_cost: float = 0.1,
) -> tuple[list[float], list[float], list[int], int]:
    """A toy model of the SBC: ``offered`` calls/s, each admitted call adding ``1 / capacity(now)``
    seconds of work to a FIFO backlog and each refused one a tenth of that (parse, 503, ACK); the
    process does 100 ms of work per 100 ms tick and the queueing delay a datagram sees is the
    backlog. With ``jitter``, each tick's delay also carries host noise with no queue behind it, as
    measured at 1,500 calls/s with two workers on this 2-core machine: 80 % of ticks 0-40 ms, 17 %
    40-90 ms, 3 % 90-160 ms. Returns the delays, shed fractions and admitted calls per tick, and
    the calls refused."""
    backlog = 0.0  # seconds of queued work
    delays, fractions, admitted_per_tick, refused = [], [], [], 0
    for k in range(round(seconds / TICK)):
        now = k * TICK
        arrivals = round(offered * TICK)
        admitted = sum(g.admit_new_call(now) for _ in range(arrivals))
        refused += arrivals - admitted
        work = (admitted + refuse_cost * (arrivals - admitted)) / capacity(now)
        backlog = max(0.0, backlog + work - TICK)
        delay = backlog
        if jitter is not None:
            u = jitter.random()
            low, high = (0.0, 0.04) if u < 0.8 else (0.04, 0.09) if u < 0.97 else (0.09, 0.16)
            delay += jitter.uniform(low, high)
        g.record_queue_delay(delay, now)
        g.record_loop_lag(0.0, now)
        delays.append(delay)
        fractions.append(g.shed_fraction)
        admitted_per_tick.append(admitted)
    return delays, fractions, admitted_per_tick, refused


def test_closed_loop_at_twice_the_capacity_settles_near_the_target():
    """The model at 1,000 calls/s offered with a capacity of 500/s, for 60 s.

    Work balances at p* = (1 - 500/1000) / (1 - 0.1) = 0.56. The controller overshoots at onset (the
    queue built before shedding took hold has to drain) and then cycles around p* — it acts on a queue
    that integrates the load, so it is never exactly still — with the delay kept under twice the target
    and the calls admitted within a few percent of what the capacity allows: not shedding much more than
    needed."""
    capacity, offered, refuse_cost = 500.0, 1000, 0.1
    g = guard()
    delays, fractions, admitted_per_tick, _ = closed_loop(g, offered, lambda now: capacity, 60.0)
    p_star = (1 - capacity / offered) / (1 - refuse_cost)
    assert max(delays) < 0.5  # never near T1, even at onset
    assert max(delays[300:]) < 2 * LAG_THRESHOLD_S
    assert min(fractions[300:]) > 0.0 and max(fractions[300:]) < MAX_SHED_FRACTION  # never on/off
    mean_p = sum(fractions[-100:]) / 100  # over the last 10 s: the cycle's phase at the end is chance
    assert 0.4 < mean_p < 0.65
    assert mean_p == pytest.approx(p_star, abs=0.05)
    # goodput: the ideal is offered * (1 - p*), 444 calls/s (the refusals take the rest of the capacity)
    calls_per_s = sum(admitted_per_tick[300:]) / 30.0
    assert 0.95 * offered * (1 - p_star) < calls_per_s < capacity
    assert g.state().episodes == 1
    # the same with host noise on top: still under T1, still near p*
    delays, fractions, _, _ = closed_loop(guard(), offered, lambda now: capacity, 60.0, random.Random(7))
    assert max(delays) < 0.5
    assert sum(fractions[-100:]) / 100 == pytest.approx(p_star, abs=0.07)


def test_near_capacity_bursts_without_a_queue_shed_nothing():
    """1,500 calls/s against a capacity of 1,595 (94 %) with the measured host noise, ten 20 s runs:
    ticks of 100-160 ms come and go, but none is a standing queue. Acting on each such tick shed
    about 150 calls a run (5-8 % for about half a second, over and over)."""
    refused = sum(
        closed_loop(guard(), 1500, lambda now: 1595.0, 20.0, random.Random(seed))[3] for seed in range(10)
    )
    assert refused <= 0.0002 * 1500 * 20 * 10  # at most 60 of 300,000


def test_a_short_capacity_dip_sheds_about_what_it_must():
    """The host slows to 80 % of the capacity for one second in a 20 s run at 94 %: about 220 calls'
    work too many (1,500 - 0.8 x 1,595 = 224). Integrating the delay while the queue drained shed four
    times that (917 a run over these ten seeds); holding p while it drains, about twice (501)."""
    excess = 1500 - 0.8 * 1595.0
    refused = []
    for seed in range(10):
        delays, _, _, n = closed_loop(
            guard(), 1500, lambda now: 1595.0 * (0.8 if 5.0 <= now < 6.0 else 1.0), 20.0, random.Random(seed)
        )
        refused.append(n)
        assert max(delays) < 0.3
    assert min(refused) > 0
    assert sum(refused) / len(refused) < 2.5 * excess


def test_a_burst_of_one_tick_below_twice_the_target_sheds_nothing():
    g = guard()
    now = ticks(g, 0.0, 10, 0.0)
    now = ticks(g, 0.0, 1, now, queue=0.19)  # one tick: a burst, no standing queue
    assert not g.overloaded
    now = ticks(g, 0.0, 1, now, queue=0.02)
    assert not g.overloaded
    now = ticks(g, 0.0, 2, now, queue=0.15)  # held across two ticks: counts, at the smaller
    assert g.shed_fraction == pytest.approx(INCREASE_GAIN * 1.5)
    now = ticks(g, 0.0, 1, now, queue=0.3)  # twice the target or more counts at once
    assert g.shed_fraction == pytest.approx(INCREASE_GAIN * (1.5 + 3.0))


def test_a_draining_queue_holds_p():
    g = guard()
    now = ticks(g, 0.0, 1, 0.0, queue=0.5)
    assert g.shed_fraction == pytest.approx(0.25)
    now = ticks(g, 0.0, 1, now, queue=0.4)  # above the target but falling: what is shed already drains it
    now = ticks(g, 0.0, 1, now, queue=0.3)
    assert g.shed_fraction == pytest.approx(0.25)
    now = ticks(g, 0.0, 1, now, queue=0.35)  # growing again: integrate
    assert g.shed_fraction == pytest.approx(0.25 + INCREASE_GAIN * 3.5)


# -- monitor ---------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.lags: list[tuple[float, float]] = []
        self.cpus: list[tuple[float, float]] = []
        self.queues: list[tuple[float, float]] = []
        self.events: list[str] = []

    def record_queue_delay(self, delay_s: float, now: float) -> None:
        self.queues.append((delay_s, now))
        self.events.append("queue")

    def record_loop_lag(self, lag_s: float, now: float) -> None:
        self.lags.append((lag_s, now))
        self.events.append("lag")

    def record_cpu(self, pct: float, now: float) -> None:
        self.cpus.append((pct, now))
        self.events.append("cpu")


class FakeProcess:
    def __init__(self, pct: float) -> None:
        self.pct = pct
        self.calls = 0

    def cpu_percent(self, interval=None) -> float:
        self.calls += 1
        return self.pct


class QueueSource:
    """A stand-in for the UDP transport's "largest queueing delay since the last call"."""

    def __init__(self, values: list[object]) -> None:
        self.values = values
        self.returned: list[object] = []

    def __call__(self) -> float:
        value = self.values[len(self.returned) % len(self.values)]
        self.returned.append(value)
        if isinstance(value, Exception):
            raise value
        return value  # type: ignore[return-value]


async def test_monitor_sees_a_blocked_loop():
    recorder = Recorder()
    process = FakeProcess(300.0)
    monitor = OverloadMonitor(recorder, interval_s=0.02, process=process, cpu_interval_s=0.05, cpu_count=4)
    monitor.start()
    assert monitor.running
    with pytest.raises(RuntimeError):
        monitor.start()
    await asyncio.sleep(0.1)
    asyncio.get_running_loop().call_soon(time.sleep, 0.3)  # block the loop for 300 ms
    await asyncio.sleep(0.2)
    monitor.stop()
    assert not monitor.running
    lags = [lag for lag, _ in recorder.lags]
    assert max(lags) >= 0.2
    assert all(lag >= 0.0 for lag in lags)
    times = [now for _, now in recorder.lags]
    assert times == sorted(times)
    assert recorder.queues == []  # no queue-delay source: not fed
    # CPU: primed once at start, then read, normalised to percent of the (fake) 4-CPU machine only
    assert process.calls >= 2
    assert recorder.cpus and all(pct == 75.0 for pct, _ in recorder.cpus)
    count = len(recorder.lags)
    await asyncio.sleep(0.1)
    assert len(recorder.lags) == count  # stopped means stopped
    monitor.stop()  # idempotent


async def test_monitor_feeds_the_queue_delay_before_each_lag_sample():
    recorder = Recorder()
    source = QueueSource([0.0, 0.25, 0.01])
    before = metrics.SIP_QUEUE_DELAY.collect()[0]
    count_before = next(s.value for s in before.samples if s.name.endswith("_count"))
    monitor = OverloadMonitor(recorder, interval_s=0.01, process=FakeProcess(0.0), queue_delay=source)
    monitor.start()
    await asyncio.sleep(0.15)
    monitor.stop()
    assert len(recorder.lags) >= 3
    lag_events = [e for e in recorder.events if e != "cpu"]
    assert lag_events == ["queue", "lag"] * len(recorder.lags)  # one of each per tick, queue first
    assert [now for _, now in recorder.queues] == [now for _, now in recorder.lags]
    # the first call at start() primes the source (discarded), then one call per tick
    assert len(source.returned) == len(recorder.queues) + 1
    assert [delay for delay, _ in recorder.queues] == source.returned[1:]
    after = metrics.SIP_QUEUE_DELAY.collect()[0]
    count_after = next(s.value for s in after.samples if s.name.endswith("_count"))
    assert count_after - count_before == len(recorder.queues)


async def test_monitor_treats_a_failing_queue_delay_source_as_zero(caplog):
    caplog.set_level(logging.DEBUG, logger="sbc.overload")
    recorder = Recorder()
    source = QueueSource([RuntimeError("socket closed"), float("nan"), -1.0, 0.3])
    monitor = OverloadMonitor(recorder, interval_s=0.01, process=FakeProcess(0.0), queue_delay=source)
    monitor.start()
    await asyncio.sleep(0.1)
    monitor.stop()
    assert len(recorder.queues) >= 4
    # an exception, NaN and a negative value all count as no queueing; a real value goes through
    fed = [delay for delay, _ in recorder.queues]
    wanted = [value if isinstance(value, float) and value > 0 else 0.0 for value in source.returned[1:]]
    assert fed == wanted and 0.3 in fed
    assert any("queue_delay failed" in r.getMessage() for r in caplog.records)
    assert len(recorder.lags) == len(recorder.queues)  # the tick went on


async def test_monitor_drives_a_real_guard_into_overload():
    g = OverloadGuard(rng=random.Random(1))
    monitor = OverloadMonitor(g, interval_s=0.02, process=FakeProcess(0.0), cpu_count=1)
    monitor.start()
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.05)
    loop.call_soon(time.sleep, 0.3)
    await asyncio.sleep(0.1)
    assert not g.overloaded  # one 300 ms stall, then the loop keeps up: nothing to shed

    done = asyncio.Event()

    def busy(turn: int) -> None:  # a loop falling further behind: 150, 200, ... 400 ms of work a turn
        time.sleep(0.15 + 0.05 * turn)
        if turn < 5:
            loop.call_soon(busy, turn + 1)  # the monitor's tick runs between two turns
        else:
            done.set()

    loop.call_soon(busy, 0)
    await asyncio.wait_for(done.wait(), 10)
    monitor.stop()
    assert g.overloaded
    assert g.state().reason == "lag"
    assert not all(g.admit_new_call(loop.time()) for _ in range(200))


async def test_monitor_drives_a_real_guard_from_the_queue_delay():
    g = OverloadGuard(rng=random.Random(1))
    monitor = OverloadMonitor(
        g, interval_s=0.01, process=FakeProcess(0.0), cpu_count=1, queue_delay=lambda: 0.4
    )
    monitor.start()
    await asyncio.sleep(0.1)
    monitor.stop()
    state = g.state()
    assert state.overloaded and state.reason == "lag"
    assert state.queue_delay_s == pytest.approx(0.4)
    assert state.lag_last_s < 0.4


async def test_monitor_keeps_sampling_when_the_guard_raises():
    class Flaky(Recorder):
        def record_loop_lag(self, lag_s: float, now: float) -> None:
            super().record_loop_lag(lag_s, now)
            if len(self.lags) == 1:
                raise RuntimeError("boom")

    flaky = Flaky()
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        monitor = OverloadMonitor(flaky, interval_s=0.01, process=FakeProcess(0.0))
        monitor.start()
        await asyncio.sleep(0.1)
        monitor.stop()
    finally:
        loop.set_exception_handler(None)
    assert len(flaky.lags) >= 2
    assert errors and isinstance(errors[0]["exception"], RuntimeError)


async def test_monitor_skips_cpu_when_psutil_refuses():
    class Refusing(FakeProcess):
        def cpu_percent(self, interval=None) -> float:
            self.calls += 1
            raise psutil.AccessDenied()

    recorder = Recorder()
    process = Refusing(0.0)
    monitor = OverloadMonitor(recorder, interval_s=0.01, process=process, cpu_interval_s=0.02)
    monitor.start()
    await asyncio.sleep(0.08)
    monitor.stop()
    assert process.calls >= 2 and recorder.cpus == []
    assert len(recorder.lags) >= 3


def test_monitor_needs_a_running_loop_and_positive_intervals():
    with pytest.raises(RuntimeError):
        OverloadMonitor(Recorder(), process=FakeProcess(0.0)).start()
    with pytest.raises(ValueError):
        OverloadMonitor(Recorder(), interval_s=0)
    with pytest.raises(ValueError):
        OverloadMonitor(Recorder(), cpu_interval_s=-1)
