"""Tests for sbc.overload: the guard with synthetic samples and a fake clock, and the asyncio monitor."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from sbc.overload import (
    CPU_CLEAR_PCT,
    CPU_SAMPLES_TO_ENTER,
    CPU_THRESHOLD_PCT,
    HOLD_S,
    LAG_CLEAR_S,
    LAG_SAMPLE_CAP_S,
    LAG_THRESHOLD_S,
    MAX_SHED_FRACTION,
    MIN_SHED_FRACTION,
    RETRY_AFTER_MAX_S,
    RETRY_AFTER_MIN_S,
    OverloadGuard,
    OverloadMonitor,
)

# The synthetic clock's step, near the monitor's 100 ms period; a power of two so sums stay exact.
INTERVAL = 0.125


def guard(**kwargs) -> OverloadGuard:
    return OverloadGuard(rng=random.Random(1234), **kwargs)


def feed_lag(g: OverloadGuard, lag: float, n: int, start: float) -> float:
    """Feed ``n`` lag samples one interval apart from ``start``; return the time after the last."""
    now = start
    for _ in range(n):
        g.record_loop_lag(lag, now)
        now += INTERVAL
    return now


def test_idle_guard_admits_everything():
    g = guard()
    now = feed_lag(g, 0.001, 100, 0.0)
    assert not g.overloaded
    assert all(g.admit_new_call(now) for _ in range(1000))
    state = g.state()
    assert state.admitted == 1000 and state.shed == 0
    assert state.shed_fraction == 0.0
    assert state.reason is None and state.since is None
    assert g.retry_after_s == RETRY_AFTER_MIN_S


def test_single_gc_pause_does_not_trip_but_sustained_lag_does():
    g = guard()
    now = feed_lag(g, 0.0, 10, 0.0)
    g.record_loop_lag(0.3, now)  # one 300 ms pause: EWMA 60 ms
    assert not g.overloaded
    now = feed_lag(g, 0.0, 20, now + INTERVAL)
    now = feed_lag(g, 0.3, 3, now)
    assert g.overloaded
    state = g.state()
    assert state.reason == "lag"
    assert state.episodes == 1
    assert state.since is not None
    assert state.lag_ewma_s > LAG_THRESHOLD_S
    assert state.lag_last_s == pytest.approx(0.3)


def test_cpu_needs_consecutive_samples():
    g = guard()
    t = 0.0
    for _ in range(CPU_SAMPLES_TO_ENTER - 1):
        g.record_cpu(99.0, t)
        t += 1
    g.record_cpu(50.0, t)  # the streak breaks
    t += 1
    for _ in range(CPU_SAMPLES_TO_ENTER - 1):
        g.record_cpu(99.0, t)
        t += 1
    assert not g.overloaded
    g.record_cpu(99.0, t)
    assert g.overloaded
    assert g.state().reason == "cpu"


def test_cpu_at_threshold_is_not_above_it():
    g = guard()
    for t in range(10):
        g.record_cpu(CPU_THRESHOLD_PCT, float(t))
    assert not g.overloaded


def test_both_signals_reason():
    g = guard()
    for t in range(CPU_SAMPLES_TO_ENTER):
        g.record_cpu(100.0, float(t))
    feed_lag(g, 1.0, 10, 3.0)
    assert g.state().reason == "lag+cpu"


def test_hysteresis_band_keeps_overload_and_hold_time_must_elapse():
    g = guard()
    now = feed_lag(g, 0.5, 20, 0.0)
    assert g.overloaded
    # lag settles between clear (50 ms) and threshold (100 ms): still overloaded, for any time
    now = feed_lag(g, 0.07, 600, now)
    assert g.overloaded
    # now clearly recovered: the hold starts with the first sample whose EWMA is below 50 ms
    while g.state().lag_ewma_s >= 0.05:
        g.record_loop_lag(0.0, now)
        now += INTERVAL
    cleared_at = now - INTERVAL
    while now - cleared_at < HOLD_S:
        assert g.overloaded, now - cleared_at
        g.record_loop_lag(0.0, now)
        now += INTERVAL
    g.record_loop_lag(0.0, now)
    assert not g.overloaded
    assert g.state().reason is None


def test_relapse_during_hold_restarts_hold():
    g = guard()
    now = feed_lag(g, 0.5, 20, 0.0)
    now = feed_lag(g, 0.0, 20, now)  # clear for a while, the hold under way
    while g.state().lag_ewma_s < LAG_CLEAR_S:  # back inside the band: the hold restarts
        now = feed_lag(g, 0.09, 1, now)
    assert g.state().lag_ewma_s < LAG_THRESHOLD_S
    now = feed_lag(g, 0.0, int((HOLD_S - 1) / INTERVAL), now)
    assert g.overloaded
    now = feed_lag(g, 0.0, int(2 / INTERVAL), now)
    assert not g.overloaded
    assert g.state().episodes == 1


def test_leaving_needs_cpu_below_clear_too():
    g = guard()
    now = feed_lag(g, 0.5, 20, 0.0)
    g.record_cpu(CPU_CLEAR_PCT + 5, now)  # below entry, above clear
    now = feed_lag(g, 0.0, 200, now)
    assert g.overloaded
    g.record_cpu(CPU_CLEAR_PCT - 5, now)
    now = feed_lag(g, 0.0, int(HOLD_S / INTERVAL) + 2, now)
    assert not g.overloaded


def test_hold_can_end_on_admit_without_new_samples():
    g = guard(hold_s=2.0)
    now = feed_lag(g, 0.5, 20, 0.0)
    now = feed_lag(g, 0.0, 15, now)  # the EWMA drops below clear, the hold starts
    assert g.overloaded
    assert g.admit_new_call(now + 10.0)
    assert not g.overloaded


def test_shedding_fraction_grows_with_severity():
    mild, severe = guard(), guard()
    feed_lag(mild, 0.15, 50, 0.0)  # EWMA ~ 150 ms: just over the threshold
    feed_lag(severe, 2.0, 50, 0.0)  # far beyond LAG_SEVERE_S
    assert mild.overloaded and severe.overloaded
    assert MIN_SHED_FRACTION < mild.shed_fraction < 0.5
    assert severe.shed_fraction == pytest.approx(MAX_SHED_FRACTION)
    trials = 4000
    mild_shed = sum(not mild.admit_new_call(5.0) for _ in range(trials)) / trials
    severe_shed = sum(not severe.admit_new_call(5.0) for _ in range(trials)) / trials
    assert mild_shed == pytest.approx(mild.shed_fraction, abs=0.03)
    assert 0 < mild_shed < 1  # some calls still get through: not all-or-nothing
    assert severe_shed == 1.0
    state = mild.state()
    assert state.shed + state.admitted == trials


def test_shedding_is_deterministic_with_a_seeded_rng():
    def run() -> list[bool]:
        g = OverloadGuard(rng=random.Random(7))
        feed_lag(g, 0.3, 30, 0.0)
        return [g.admit_new_call(3.0) for _ in range(200)]

    assert run() == run()
    verdicts = run()
    assert True in verdicts and False in verdicts


def test_minimum_shedding_during_hold():
    g = guard()
    now = feed_lag(g, 0.5, 20, 0.0)
    now = feed_lag(g, 0.0, 20, now)
    assert g.overloaded
    assert g.severity == 0.0
    assert g.shed_fraction == pytest.approx(MIN_SHED_FRACTION)
    assert g.retry_after_s == RETRY_AFTER_MIN_S


def test_retry_after_grows_and_is_bounded():
    values = []
    for lag in (0.12, 0.3, 0.6, 1.0, 5.0, 1e9, float("inf")):
        g = guard()
        feed_lag(g, lag, 100, 0.0)
        assert g.overloaded
        values.append(g.retry_after_s)
        assert isinstance(g.retry_after_s, int)
    assert values == sorted(values)
    assert values[0] > RETRY_AFTER_MIN_S - 1 and values[0] < RETRY_AFTER_MAX_S
    assert values[-1] == RETRY_AFTER_MAX_S
    assert all(RETRY_AFTER_MIN_S <= v <= RETRY_AFTER_MAX_S for v in values)
    g = guard()
    for t in range(10):
        g.record_cpu(100.0, float(t))
    assert g.retry_after_s == RETRY_AFTER_MAX_S


def test_bad_samples_are_tamed():
    g = guard()
    g.record_loop_lag(float("nan"), 0.0)
    g.record_loop_lag(-5.0, 0.1)
    g.record_cpu(float("nan"), 0.2)
    g.record_cpu(-3.0, 0.3)
    state = g.state()
    assert state.lag_ewma_s == 0.0 and state.lag_last_s == 0.0 and state.cpu_pct == 0.0
    g.record_loop_lag(float("inf"), 0.4)
    assert g.state().lag_last_s == LAG_SAMPLE_CAP_S
    g.record_cpu(800.0, 0.5)  # an unnormalised multi-core figure
    assert g.state().cpu_pct == 100.0


def test_one_huge_stall_does_not_keep_overload_forever():
    g = guard()
    g.record_loop_lag(1e6, 0.0)
    assert g.overloaded
    feed_lag(g, 0.0, 200, INTERVAL)  # 25 s of a healthy loop
    assert not g.overloaded


def test_second_episode_counts():
    g = guard(hold_s=1.0)
    now = feed_lag(g, 0.5, 20, 0.0)
    now = feed_lag(g, 0.0, 40, now)
    assert not g.overloaded
    feed_lag(g, 0.5, 20, now)
    assert g.state().episodes == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lag_threshold_s": 0.01},  # below the clear level
        {"lag_clear_s": 0.0},
        {"lag_severe_s": 0.05},
        {"cpu_threshold_pct": 101.0},
        {"cpu_clear_pct": 96.0},
        {"cpu_samples_to_enter": 0},
        {"hold_s": -1.0},
        {"ewma_alpha": 0.0},
        {"ewma_alpha": 1.5},
        {"min_shed_fraction": 0.9, "max_shed_fraction": 0.5},
        {"max_shed_fraction": 1.1},
        {"retry_after_min_s": 0},
        {"retry_after_min_s": 40},
    ],
)
def test_inconsistent_settings_refused(kwargs):
    with pytest.raises(ValueError):
        OverloadGuard(**kwargs)


# -- monitor ---------------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.lags: list[tuple[float, float]] = []
        self.cpus: list[tuple[float, float]] = []

    def record_loop_lag(self, lag_s: float, now: float) -> None:
        self.lags.append((lag_s, now))

    def record_cpu(self, pct: float, now: float) -> None:
        self.cpus.append((pct, now))


class FakeProcess:
    def __init__(self, pct: float) -> None:
        self.pct = pct
        self.calls = 0

    def cpu_percent(self, interval=None) -> float:
        self.calls += 1
        return self.pct


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
    # CPU: primed once at start, then read, normalised to percent of the (fake) 4-CPU machine
    assert process.calls >= 2
    assert recorder.cpus and all(pct == 75.0 for pct, _ in recorder.cpus)
    count = len(recorder.lags)
    await asyncio.sleep(0.1)
    assert len(recorder.lags) == count  # stopped means stopped
    monitor.stop()  # idempotent


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def test_monitor_counts_a_saturated_loop_thread_as_high_cpu():
    """The process is 20 % of a 2-core machine, but the loop's thread is busy for most of the
    interval: the sample is the thread's share of one core, not the machine's."""
    recorder = Recorder()
    monitor = OverloadMonitor(
        recorder, interval_s=0.02, process=FakeProcess(40.0), cpu_interval_s=0.25, cpu_count=2
    )
    monitor.start()
    loop = asyncio.get_running_loop()
    for _ in range(12):  # ~0.6 s: 40 ms of CPU in every 50 ms on the loop's thread
        loop.call_soon(_burn, 0.04)
        await asyncio.sleep(0.01)
    monitor.stop()
    assert recorder.cpus and max(pct for pct, _ in recorder.cpus) >= 60.0, recorder.cpus
    assert min(pct for pct, _ in recorder.cpus) >= 20.0  # never below the machine figure


async def test_monitor_drives_a_real_guard_into_overload():
    # alpha 0.5: one 300 ms stall alone lifts the average above the 100 ms threshold
    g = OverloadGuard(rng=random.Random(1), ewma_alpha=0.5)
    monitor = OverloadMonitor(g, interval_s=0.02, process=FakeProcess(0.0), cpu_count=1)
    monitor.start()
    await asyncio.sleep(0.05)
    asyncio.get_running_loop().call_soon(time.sleep, 0.3)
    await asyncio.sleep(0.1)
    monitor.stop()
    assert g.overloaded  # and stays so: the hold time is far longer than this test
    assert g.state().reason == "lag"
    assert not all(g.admit_new_call(asyncio.get_running_loop().time()) for _ in range(200))


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


def test_monitor_needs_a_running_loop_and_positive_intervals():
    with pytest.raises(RuntimeError):
        OverloadMonitor(Recorder(), process=FakeProcess(0.0)).start()
    with pytest.raises(ValueError):
        OverloadMonitor(Recorder(), interval_s=0)
    with pytest.raises(ValueError):
        OverloadMonitor(Recorder(), cpu_interval_s=-1)
