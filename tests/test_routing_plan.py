"""Ordering by priority/weight, outbound and inbound failover plans."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.model import (
    DEFAULT_FAILOVER_CODES,
    Carrier,
    Customer,
    Gateway,
    Route,
    RouteCarrier,
    Snapshot,
    Trunk,
    TrunkTarget,
)
from routing.plan import (
    MAX_PLAN_ATTEMPTS,
    Attempt,
    build_inbound_plan,
    build_outbound_plan,
    format_request_user,
)
from routing.selection import AlwaysUp, HealthView, weighted_order
from routing.tables import RoutingTables

NOON = 1_699_963_200.0  # 2023-11-14 12:00:00 UTC

# -- weighted_order -------------------------------------------------------------------------


def test_priority_groups_are_strictly_ordered() -> None:
    items = [RouteCarrier("c", priority=30), RouteCarrier("a", priority=10), RouteCarrier("b", priority=20)]
    for seed in range(20):
        assert [x.name for x in weighted_order(items, random.Random(seed))] == ["a", "b", "c"]


def test_weights_split_first_place_proportionally() -> None:
    items = [RouteCarrier("heavy", weight=75), RouteCarrier("light", weight=25)]
    rng = random.Random(42)
    firsts = Counter(weighted_order(items, rng)[0].name for _ in range(20_000))
    assert 0.73 < firsts["heavy"] / 20_000 < 0.77


def test_three_way_weights() -> None:
    items = [RouteCarrier("a", weight=1), RouteCarrier("b", weight=2), RouteCarrier("c", weight=7)]
    rng = random.Random(7)
    n = 30_000
    firsts = Counter(weighted_order(items, rng)[0].name for _ in range(n))
    assert abs(firsts["a"] / n - 0.1) < 0.015
    assert abs(firsts["b"] / n - 0.2) < 0.015
    assert abs(firsts["c"] / n - 0.7) < 0.015
    # second place given "c" first: a vs b in 1:2
    seconds = Counter(
        order[1].name for order in (weighted_order(items, rng) for _ in range(n)) if order[0].name == "c"
    )
    total = sum(seconds.values())
    assert abs(seconds["b"] / total - 2 / 3) < 0.03


def test_zero_weight_is_last_in_its_priority_but_before_worse_priorities() -> None:
    items = [
        RouteCarrier("standby", priority=10, weight=0),
        RouteCarrier("main1", priority=10, weight=50),
        RouteCarrier("neg", priority=10, weight=-5),
        RouteCarrier("main2", priority=10, weight=50),
        RouteCarrier("backup", priority=20, weight=100),
    ]
    for seed in range(50):
        names = [x.name for x in weighted_order(items, random.Random(seed))]
        assert set(names[:2]) == {"main1", "main2"}
        assert names[2:] == ["standby", "neg", "backup"]  # zero weights in input order


def test_all_zero_weights_keep_input_order() -> None:
    items = [RouteCarrier(n, weight=0) for n in "abcd"]
    assert [x.name for x in weighted_order(items, random.Random(1))] == list("abcd")


def test_weighted_order_is_deterministic_for_a_seed_and_does_not_mutate() -> None:
    items = [Gateway(f"10.0.0.{i}", priority=i % 3, weight=i * 10) for i in range(12)]
    snapshot = list(items)
    a = weighted_order(items, random.Random(99))
    b = weighted_order(items, random.Random(99))
    assert a == b
    assert items == snapshot
    assert weighted_order([], random.Random(1)) == []


@given(
    st.lists(st.tuples(st.integers(-5, 5), st.integers(-3, 100)), max_size=25),
    st.integers(0, 2**32),
)
def test_weighted_order_properties(specs: list[tuple[int, int]], seed: int) -> None:
    items = [RouteCarrier(f"c{i}", priority=p, weight=w) for i, (p, w) in enumerate(specs)]
    out = weighted_order(items, random.Random(seed))
    assert sorted(x.name for x in out) == sorted(x.name for x in items)  # a permutation
    priorities = [x.priority for x in out]
    assert priorities == sorted(priorities)
    for p in set(priorities):
        group = [x for x in out if x.priority == p]
        weights = [x.weight > 0 for x in group]
        assert weights == sorted(weights, reverse=True)  # weighted before zero-weight
        zeros = [x.name for x in group if x.weight <= 0]
        assert zeros == [x.name for x in items if x.priority == p and x.weight <= 0]


# -- outbound plans -------------------------------------------------------------------------


class Down:
    """HealthView with an explicit set of down gateway hosts."""

    def __init__(self, *hosts: str) -> None:
        self.hosts = set(hosts)

    def is_up(self, carrier: str, gateway: Gateway) -> bool:
        return gateway.host not in self.hosts


def _tables(routes: tuple[Route, ...] | None = None) -> RoutingTables:
    att = Carrier(
        "att",
        gateways=(Gateway("10.0.0.1", priority=10), Gateway("10.0.0.2", priority=20)),
        failover_codes=(408, 503),
    )
    vz = Carrier(
        "vz",
        gateways=(Gateway("10.1.0.1", transport="tls", port=5061),),
        tech_prefix="7788#",
        strip_plus=True,
    )
    tmo = Carrier("tmo", gateways=(Gateway("10.2.0.1"), Gateway("10.2.0.1")))  # listed twice
    empty = Carrier("empty")
    if routes is None:
        routes = (
            Route("1", (RouteCarrier("att", priority=10), RouteCarrier("vz", priority=20))),
            Route(
                "1415", (RouteCarrier("vz", priority=10), RouteCarrier("att", priority=20)), customer="acme"
            ),
            Route(
                "44",
                (RouteCarrier("ghost"), RouteCarrier("tmo", priority=20), RouteCarrier("tmo", priority=30)),
            ),
            Route("1900", ()),
            Route("33", (RouteCarrier("empty"),)),
        )
    return RoutingTables.build(Snapshot(carriers=(att, vz, tmo, empty), routes=routes))


def _plan(
    e164: str, customer: str | None = None, health: HealthView | None = None, **kw: int
) -> list[Attempt]:
    return build_outbound_plan(_tables(), e164, customer, NOON, random.Random(1), health or AlwaysUp(), **kw)


def _where(plan: list[Attempt]) -> list[tuple[str, str]]:
    return [(a.carrier, a.gateway.host) for a in plan]


def test_format_request_user() -> None:
    assert format_request_user("+14155550100", Carrier("a")) == "+14155550100"
    assert format_request_user("+14155550100", Carrier("a", strip_plus=True)) == "14155550100"
    assert format_request_user("+14155550100", Carrier("a", tech_prefix="9#")) == "9#+14155550100"
    assert (
        format_request_user("+14155550100", Carrier("a", tech_prefix="9#", strip_plus=True))
        == "9#14155550100"
    )


def test_plan_orders_carriers_then_their_gateways() -> None:
    plan = _plan("+12125550100")
    assert _where(plan) == [("att", "10.0.0.1"), ("att", "10.0.0.2"), ("vz", "10.1.0.1")]
    assert plan[0].request_user == "+12125550100"
    assert plan[0].failover_codes == (408, 503)
    assert plan[2].request_user == "7788#12125550100"
    assert plan[2].failover_codes == DEFAULT_FAILOVER_CODES
    assert plan[2].gateway.transport == "tls" and plan[2].gateway.port == 5061
    assert not any(a.last_resort for a in plan)


def test_customer_route_changes_the_plan() -> None:
    assert [a.carrier for a in _plan("+14155550100", "acme")] == ["vz", "att", "att"]
    assert [a.carrier for a in _plan("+14155550100", "globex")] == ["att", "att", "vz"]


def test_down_gateways_are_skipped() -> None:
    plan = _plan("+12125550100", health=Down("10.0.0.1"))
    assert _where(plan) == [("att", "10.0.0.2"), ("vz", "10.1.0.1")]
    plan = _plan("+12125550100", health=Down("10.0.0.1", "10.0.0.2"))
    assert _where(plan) == [("vz", "10.1.0.1")]
    assert not plan[0].last_resort


def test_everything_down_tries_all_as_last_resort() -> None:
    plan = _plan("+12125550100", health=Down("10.0.0.1", "10.0.0.2", "10.1.0.1"))
    assert _where(plan) == [("att", "10.0.0.1"), ("att", "10.0.0.2"), ("vz", "10.1.0.1")]
    assert all(a.last_resort for a in plan)


def test_unknown_carrier_duplicates_and_empty_carriers() -> None:
    plan = _plan("+442079460000")
    assert _where(plan) == [("tmo", "10.2.0.1")]  # ghost skipped, tmo once, its gateway once
    assert _plan("+33123456789") == []  # carrier without gateways
    assert _plan("+19005550100") == []  # route without carriers blocks
    assert _plan("+493012345678") == []  # no route at all


def test_plan_is_capped() -> None:
    many = Carrier("many", gateways=tuple(Gateway(f"10.9.0.{i}") for i in range(30)))
    tables = RoutingTables.build(Snapshot(carriers=(many,), routes=(Route("", (RouteCarrier("many"),)),)))
    rng = random.Random(3)
    assert len(build_outbound_plan(tables, "+12125550100", None, NOON, rng, AlwaysUp())) == MAX_PLAN_ATTEMPTS
    assert len(build_outbound_plan(tables, "+12125550100", None, NOON, rng, AlwaysUp(), max_attempts=2)) == 2
    with pytest.raises(ValueError, match="max_attempts"):
        build_outbound_plan(tables, "+12125550100", None, NOON, rng, AlwaysUp(), max_attempts=0)


@pytest.mark.parametrize("bad", ["12125550100", "+1 212 555 0100", "", "+", "tel:+12125550100"])
def test_plan_requires_canonical_number(bad: str) -> None:
    with pytest.raises(ValueError, match="canonical"):
        _plan(bad)


def test_plan_accepts_a_snapshot() -> None:
    snap = Snapshot(
        carriers=(Carrier("a", gateways=(Gateway("10.0.0.1"),)),),
        routes=(Route("1", (RouteCarrier("a"),)),),
    )
    plan = build_outbound_plan(snap, "+12125550100", None, NOON, random.Random(1), AlwaysUp())
    assert _where(plan) == [("a", "10.0.0.1")]


def test_plan_weights_spread_traffic_across_carriers() -> None:
    routes = (Route("", (RouteCarrier("att", weight=80), RouteCarrier("vz", weight=20))),)
    tables = _tables(routes)
    rng = random.Random(5)
    n = 5_000
    firsts = Counter(
        build_outbound_plan(tables, "+12125550100", None, NOON, rng, AlwaysUp())[0].carrier for _ in range(n)
    )
    assert 0.77 < firsts["att"] / n < 0.83


def test_time_windowed_route_in_plan() -> None:
    routes = (
        Route("1", (RouteCarrier("att"),)),
        Route("1", (RouteCarrier("vz"),), time_window="22:00-06:00"),
    )
    tables = _tables(routes)
    day = build_outbound_plan(tables, "+12125550100", None, NOON, random.Random(1), AlwaysUp())
    night = build_outbound_plan(tables, "+12125550100", None, NOON + 11 * 3600, random.Random(1), AlwaysUp())
    assert {a.carrier for a in day} == {"att"}
    assert {a.carrier for a in night} == {"vz"}


# -- inbound plans --------------------------------------------------------------------------


def test_inbound_plan_priority_weight_and_duplicates() -> None:
    trunk = Trunk(
        "pbx",
        "acme",
        targets=(
            TrunkTarget("sip:backup.example.com", priority=20),
            TrunkTarget("sip:a.example.com", priority=10, weight=50),
            TrunkTarget("sip:b.example.com", priority=10, weight=50),
            TrunkTarget("sip:a.example.com", priority=30),
        ),
    )
    seen_first = set()
    for seed in range(40):
        uris = [t.uri for t in build_inbound_plan(trunk, random.Random(seed))]
        assert len(uris) == 3
        assert set(uris[:2]) == {"sip:a.example.com", "sip:b.example.com"}
        assert uris[2] == "sip:backup.example.com"
        seen_first.add(uris[0])
    assert seen_first == {"sip:a.example.com", "sip:b.example.com"}


def test_inbound_plan_empty_trunk() -> None:
    assert build_inbound_plan(Trunk("pbx", "acme"), random.Random(1)) == []


def test_inbound_plan_for_a_snapshot_trunk() -> None:
    trunk = Trunk("pbx", "acme", targets=(TrunkTarget("sip:pbx.example.com"),))
    tables = RoutingTables.build(Snapshot(customers=(Customer("acme", trunks=(trunk,)),)))
    found = tables.numbers.trunk("acme", "pbx")
    assert found is not None
    assert [t.uri for t in build_inbound_plan(found, random.Random(1))] == ["sip:pbx.example.com"]
