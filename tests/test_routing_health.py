"""Gateway health state machine and probe schedule."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.health import (
    DOWN_AFTER_FAILURES,
    LATENCY_EWMA_ALPHA,
    MIN_PROBE_INTERVAL_S,
    UP_AFTER_SUCCESSES,
    GatewayHealth,
    HealthTable,
)
from routing.model import Carrier, Gateway, Route, RouteCarrier, Snapshot
from routing.plan import build_outbound_plan
from routing.selection import HealthView
from routing.tables import RoutingTables

T0 = 1_700_000_000.0


def test_defaults() -> None:
    assert (DOWN_AFTER_FAILURES, UP_AFTER_SUCCESSES) == (3, 2)


def test_down_after_three_failures_up_after_two_successes() -> None:
    h = GatewayHealth()
    assert h.up
    assert not h.record(False, None, T0)
    assert not h.record(False, None, T0 + 1)
    assert h.up
    assert h.record(False, None, T0 + 2)  # third failure flips
    assert not h.up and h.last_change_at == T0 + 2
    assert not h.record(False, None, T0 + 3)
    assert not h.record(True, 0.01, T0 + 4)
    assert not h.up
    assert h.record(True, 0.01, T0 + 5)
    assert h.up and h.last_change_at == T0 + 5
    assert (h.probes, h.failures) == (6, 4)


def test_a_success_resets_the_failure_run_and_vice_versa() -> None:
    h = GatewayHealth()
    for ok in (False, False, True, False, False, True):
        h.record(ok, None, T0)
    assert h.up
    for _ in range(3):
        h.record(False, None, T0)
    assert not h.up
    for ok in (True, False, True, False, True):
        h.record(ok, None, T0)
    assert not h.up  # never two successes in a row


def test_custom_thresholds_and_validation() -> None:
    h = GatewayHealth(down_after=1, up_after=1)
    assert h.record(False, None, T0) and not h.up
    assert h.record(True, None, T0) and h.up
    for bad in ((0, 1), (1, 0), (-1, 2)):
        with pytest.raises(ValueError, match="thresholds"):
            GatewayHealth(*bad)
        with pytest.raises(ValueError, match="thresholds"):
            HealthTable(*bad)


def test_latency_last_and_ewma() -> None:
    h = GatewayHealth()
    assert h.ewma_latency_s is None
    h.record(True, 0.100, T0)
    assert h.ewma_latency_s == pytest.approx(0.100)
    h.record(True, 0.200, T0 + 1)
    assert h.last_latency_s == 0.200
    assert h.ewma_latency_s == pytest.approx(0.100 + LATENCY_EWMA_ALPHA * 0.100)
    h.record(False, 5.0, T0 + 2)  # a failure's latency is ignored
    assert h.last_latency_s == 0.200
    h.record(True, None, T0 + 3)  # success without a measurement
    assert h.last_latency_s == 0.200


@pytest.mark.parametrize("latency", [-0.1, math.nan, math.inf])
def test_bad_latency_rejected_without_change(latency: float) -> None:
    h = GatewayHealth()
    with pytest.raises(ValueError, match="latency"):
        h.record(True, latency, T0)
    assert h.probes == 0 and h.last_probe_at is None


def test_non_finite_now_rejected() -> None:
    with pytest.raises(ValueError, match="finite"):
        GatewayHealth().record(True, 0.1, math.nan)


@given(st.lists(st.booleans(), max_size=60))
def test_state_follows_runs(results: list[bool]) -> None:
    """Reference model: the state flips only at the end of a long-enough run."""
    h = GatewayHealth()
    up, fails, oks = True, 0, 0
    for ok in results:
        h.record(ok, 0.01, T0)
        fails, oks = (0, oks + 1) if ok else (fails + 1, 0)
        if up and fails >= DOWN_AFTER_FAILURES:
            up = False
        elif not up and oks >= UP_AFTER_SUCCESSES:
            up = True
        assert h.up == up


# -- HealthTable ----------------------------------------------------------------------------

GA = Gateway("10.0.0.1")
GB = Gateway("10.0.0.2", priority=20)
GC = Gateway("10.1.0.1")


def carriers(interval_a: float = 10.0, interval_b: float = 30.0) -> list[Carrier]:
    return [
        Carrier("a", gateways=(GA, GB), probe_interval_s=interval_a),
        Carrier("b", gateways=(GC,), probe_interval_s=interval_b),
        Carrier("quiet", gateways=(Gateway("10.2.0.1"),)),  # no probing
    ]


def test_table_is_a_health_view_and_untracked_is_up() -> None:
    table: HealthView = HealthTable()
    assert table.is_up("a", GA)
    assert table.is_up("nobody", Gateway("192.0.2.1"))


def test_record_probe_drives_is_up() -> None:
    t = HealthTable()
    t.sync(carriers(), T0)
    for i in range(3):
        changed = t.record_probe("a", GA, False, None, T0 + i)
    assert changed is True
    assert not t.is_up("a", GA)
    assert t.is_up("a", GB)
    assert t.is_up("b", GA)  # same host under another carrier is another gateway
    # same address with other priority/weight shares the state
    assert not t.is_up("a", Gateway("10.0.0.1", priority=99, weight=1))
    assert not t.is_up("a", Gateway("10.0.0.1", transport="UDP"))
    assert t.is_up("a", Gateway("10.0.0.1", transport="tcp"))


def test_record_probe_for_untracked_gateway_is_dropped() -> None:
    t = HealthTable()
    t.sync(carriers(), T0)
    assert t.record_probe("quiet", Gateway("10.2.0.1"), False, None, T0) is None
    assert t.record_probe("a", Gateway("192.0.2.9"), False, None, T0) is None
    assert t.status("quiet", Gateway("10.2.0.1")) is None


def test_due_probes_schedule() -> None:
    t = HealthTable()
    t.sync(carriers(), T0)
    assert t.next_due_at() == T0
    first = t.due_probes(T0)
    assert sorted((c, g.host) for c, g in first) == [("a", "10.0.0.1"), ("a", "10.0.0.2"), ("b", "10.1.0.1")]
    assert t.due_probes(T0) == []  # consumed
    assert t.next_due_at() == T0 + 10
    assert t.due_probes(T0 + 9.99) == []
    assert sorted(g.host for _, g in t.due_probes(T0 + 10)) == ["10.0.0.1", "10.0.0.2"]
    assert sorted(g.host for _, g in t.due_probes(T0 + 20)) == ["10.0.0.1", "10.0.0.2"]
    assert t.due_probes(T0 + 29.9) == []
    assert sorted(g.host for _, g in t.due_probes(T0 + 30)) == ["10.0.0.1", "10.0.0.2", "10.1.0.1"]


def test_due_probes_after_a_stall_sends_one_each() -> None:
    t = HealthTable()
    t.sync(carriers(), T0)
    t.due_probes(T0)
    late = t.due_probes(T0 + 1000)
    assert len(late) == 3
    assert t.due_probes(T0 + 1000) == []
    assert t.next_due_at() == T0 + 1010


def test_due_probes_earliest_first() -> None:
    t = HealthTable()
    t.sync(carriers(interval_a=10, interval_b=3), T0)
    t.due_probes(T0)
    order = [c for c, _ in t.due_probes(T0 + 10)]
    assert order[0] == "b"  # due at T0+3, before a's T0+10


def test_probe_interval_floor_and_disabled_values() -> None:
    t = HealthTable()
    t.sync([Carrier("fast", gateways=(GA,), probe_interval_s=0.01)], T0)
    t.due_probes(T0)
    assert t.next_due_at() == T0 + MIN_PROBE_INTERVAL_S
    for bad in (0.0, -5.0, math.nan, math.inf):
        t = HealthTable()
        t.sync([Carrier("x", gateways=(GA,), probe_interval_s=bad)], T0)
        assert t.next_due_at() is None
        assert t.snapshot() == []


def test_sync_keeps_state_adds_and_forgets() -> None:
    t = HealthTable()
    t.sync(carriers(), T0)
    t.due_probes(T0)
    for i in range(3):
        t.record_probe("a", GA, False, None, T0 + i)
    assert not t.is_up("a", GA)
    # re-sync with GA re-weighted and GC removed: GA keeps its down state
    reweighted = Gateway("10.0.0.1", weight=5)
    t.sync([Carrier("a", gateways=(reweighted, GB), probe_interval_s=10)], T0 + 5)
    assert not t.is_up("a", GA)
    status = t.status("a", GA)
    assert status is not None and status.gateway == reweighted and status.consecutive_failures == 3
    assert t.status("b", GC) is None
    # probing switched off: the gateway is forgotten, hence up
    t.sync([Carrier("a", gateways=(GA, GB))], T0 + 6)
    assert t.is_up("a", GA)
    assert t.next_due_at() is None


def test_sync_shorter_interval_takes_effect_now() -> None:
    t = HealthTable()
    t.sync(carriers(interval_a=300), T0)
    t.due_probes(T0)
    t.sync(carriers(interval_a=10), T0 + 1)
    assert t.status("a", GA).next_probe_at == T0 + 11


def test_sync_new_gateway_is_due_immediately() -> None:
    t = HealthTable()
    t.sync(carriers(), T0)
    t.due_probes(T0)
    gd = Gateway("10.0.0.9")
    t.sync([Carrier("a", gateways=(GA, GB, gd), probe_interval_s=10)], T0 + 2)
    assert t.due_probes(T0 + 2) == [("a", gd)]


def test_snapshot_for_display() -> None:
    t = HealthTable()
    t.sync(carriers(), T0)
    t.record_probe("a", GA, True, 0.02, T0 + 1)
    rows = t.snapshot()
    assert [(r.carrier, r.gateway.host) for r in rows] == [
        ("a", "10.0.0.1"),
        ("a", "10.0.0.2"),
        ("b", "10.1.0.1"),
    ]
    ga = rows[0]
    assert ga.up and ga.last_latency_s == 0.02 and ga.last_probe_at == T0 + 1 and ga.probes == 1
    with pytest.raises(AttributeError):
        ga.up = False  # type: ignore[misc]


def test_non_finite_now_in_table() -> None:
    t = HealthTable()
    with pytest.raises(ValueError):
        t.sync(carriers(), math.nan)
    with pytest.raises(ValueError):
        t.due_probes(math.inf)


def test_health_table_feeds_outbound_plan() -> None:
    snap = Snapshot(
        carriers=tuple(carriers()), routes=(Route("", (RouteCarrier("a"), RouteCarrier("b", priority=20))),)
    )
    tables = RoutingTables.build(snap)
    health = HealthTable()
    health.sync(snap.carriers, T0)
    for i in range(3):
        health.record_probe("a", GA, False, None, T0 + i)
    plan = build_outbound_plan(tables, "+12125550100", None, T0, random.Random(1), health)
    assert [(a.carrier, a.gateway.host) for a in plan] == [("a", "10.0.0.2"), ("b", "10.1.0.1")]
