"""The running SBC's garbage-collector schedule: freeze often, sweep everything rarely, time each
collection."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Iterator

import pytest

from sbc import metrics
from sbc.app import GC_THRESHOLDS, GcPolicy


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def restore_gc():
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@contextlib.contextmanager
def running(freeze_interval_s: float, sweep_interval_s: float, **kw) -> Iterator[GcPolicy]:
    """A started GcPolicy on the running loop, stopped on exit."""
    policy = GcPolicy(asyncio.get_running_loop(), freeze_interval_s, sweep_interval_s, **kw)
    policy.start()
    try:
        yield policy
    finally:
        policy.stop()


def cycle() -> tuple[Node, weakref.ref]:
    """Two nodes referring to each other (only the cyclic collector frees them): one of them
    and a weak reference that tells when it is gone."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


def pause_samples(generation: str) -> float:
    return metrics.REGISTRY.get_sample_value("sbc_gc_pause_seconds_count", {"generation": generation}) or 0.0


async def test_survivors_are_frozen_and_a_sweep_frees_cycles_among_them(restore_gc) -> None:
    with running(freeze_interval_s=0.01, sweep_interval_s=3600) as policy:
        assert gc.get_threshold() == GC_THRESHOLDS
        a, gone = cycle()
        frozen = gc.get_freeze_count()
        await asyncio.sleep(0.05)
        assert gc.get_freeze_count() > frozen  # the tick froze what survived, the cycle with it
        del a
        gc.collect()
        assert gone() is not None  # frozen: out of the collector's sight
        assert policy.sweep() >= 2
        assert gone() is None


async def test_the_sweep_runs_on_its_interval(restore_gc) -> None:
    with running(freeze_interval_s=0.01, sweep_interval_s=0.05):
        a, gone = cycle()
        del a
        await asyncio.sleep(0.03)  # frozen by now
        for _ in range(40):
            if gone() is None:
                break
            await asyncio.sleep(0.01)
        assert gone() is None


async def freed_within(gone: weakref.ref, seconds: float) -> bool:
    for _ in range(round(seconds / 0.01)):
        if gone() is None:
            return True
        await asyncio.sleep(0.01)
    return gone() is None


async def test_a_due_sweep_waits_until_few_calls_are_up(restore_gc) -> None:
    calls = [500]
    with running(freeze_interval_s=0.01, sweep_interval_s=0.05, calls_up=lambda: calls[0], quiet_calls=100):
        a, gone = cycle()
        del a
        assert not await freed_within(gone, 0.3)  # due after 0.05 s, but 500 calls are up
        calls[0] = 100
        assert await freed_within(gone, 0.3)


async def test_a_sweep_that_never_finds_quiet_runs_after_the_longest_delay(restore_gc) -> None:
    with running(freeze_interval_s=0.01, sweep_interval_s=0.05, calls_up=lambda: 500, sweep_max_delay_s=0.2):
        a, gone = cycle()
        del a
        await asyncio.sleep(0.1)
        assert gone() is not None  # due, not yet forced
        assert await freed_within(gone, 0.5)


async def test_every_collection_is_timed_until_stopped(restore_gc) -> None:
    policy = GcPolicy(asyncio.get_running_loop(), freeze_interval_s=10, sweep_interval_s=3600)
    policy.start()  # stopped by hand below: the test is what happens after stop()
    before = pause_samples("1")
    gc.collect(1)
    assert pause_samples("1") == before + 1
    policy.stop()
    gc.collect(1)
    assert pause_samples("1") == before + 1
    policy.stop()  # idempotent
