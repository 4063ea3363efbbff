"""The RoutingTables facade, and the purity rules of the routing package."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from routing.model import (
    Carrier,
    Credential,
    Customer,
    Gateway,
    Number,
    Route,
    RouteCarrier,
    Snapshot,
    Trunk,
    TrunkTarget,
)
from routing.numbers import normalize_e164
from routing.plan import build_inbound_plan, build_outbound_plan
from routing.selection import AlwaysUp
from routing.tables import RoutingTables

NOON = 1_699_963_200.0
ROUTING_DIR = Path(__file__).resolve().parent.parent / "routing"


def snapshot() -> Snapshot:
    pbx = Trunk(
        "pbx",
        "acme",
        allowed_cidrs=("203.0.113.0/24",),
        credentials=(Credential("acme", "pw"),),
        targets=(TrunkTarget("sip:pbx.acme.example:5060"),),
    )
    return Snapshot(
        carriers=(
            Carrier("att", gateways=(Gateway("198.51.100.10"),), inbound_cidrs=("198.51.100.0/24",)),
            Carrier("att", inbound_cidrs=("192.0.2.0/24",)),  # duplicate name
        ),
        customers=(Customer("acme", trunks=(pbx,)), Customer("acme")),
        numbers=(
            Number("+14155550100", customer="acme", trunk="pbx"),
            Number("+14155550101", customer="acme", trunk="nope"),
            Number("+14155550102", customer="acme", trunk="pbx", application="ivr"),
        ),
        routes=(
            Route("1", (RouteCarrier("att"), RouteCarrier("ghost")), id=11),
            Route("44", (RouteCarrier("att"),), customer="nobody", id=12),
        ),
        version=42,
    )


def test_build_bundles_everything() -> None:
    t = RoutingTables.build(snapshot())
    assert t.version == 42
    assert set(t.carriers) == {"att"}
    assert t.carriers["att"].inbound_cidrs == ("198.51.100.0/24",)  # first entry kept
    assert set(t.customers) == {"acme"}
    # inbound: carrier by address, number, trunk, targets
    carrier = t.sources.carrier_for("198.51.100.10")
    assert carrier is not None and carrier.name == "att"
    assert t.sources.carrier_for("192.0.2.1") is None  # the dropped duplicate's network
    number = t.numbers.lookup(normalize_e164("(415) 555-0100") or "")
    assert number is not None
    trunk = t.numbers.trunk_for(number)
    assert trunk is not None
    assert [x.uri for x in build_inbound_plan(trunk, random.Random(1))] == ["sip:pbx.acme.example:5060"]
    # outbound: customer by address or digest user, then a plan
    assert [x.name for x in t.sources.trunks_for("203.0.113.9")] == ["pbx"]
    assert [x.name for x in t.sources.trunks_for_username("acme")] == ["pbx"]
    plan = build_outbound_plan(t, "+12125550100", "acme", NOON, random.Random(1), AlwaysUp())
    assert [(a.carrier, a.gateway.host) for a in plan] == [("att", "198.51.100.10")]


def test_problems_are_collected() -> None:
    text = "\n".join(RoutingTables.build(snapshot()).problems)
    assert "carrier att: duplicate name" in text
    assert "customer acme: duplicate name" in text
    assert "route 11: unknown carrier 'ghost'" in text
    assert "route 12: scoped to unknown customer 'nobody'" in text
    assert "number +14155550101: trunk acme/nope does not exist" in text
    assert "number +14155550102: more than one destination" in text


def test_clean_snapshot_has_no_problems_and_empty_snapshot_builds() -> None:
    snap = Snapshot(
        carriers=(Carrier("a", gateways=(Gateway("10.0.0.1"),)),),
        routes=(Route("", (RouteCarrier("a"),)),),
    )
    assert RoutingTables.build(snap).problems == ()
    empty = RoutingTables.build(Snapshot())
    assert empty.problems == () and len(empty.numbers) == 0 and len(empty.routes) == 0
    assert build_outbound_plan(empty, "+12125550100", None, NOON, random.Random(1), AlwaysUp()) == []


def test_tables_are_read_only() -> None:
    t = RoutingTables.build(snapshot())
    with pytest.raises(TypeError):
        t.carriers["x"] = Carrier("x")  # type: ignore[index]
    with pytest.raises(AttributeError):
        t.version = 1  # type: ignore[misc]


def test_resolved_hosts_are_passed_through() -> None:
    snap = Snapshot(carriers=(Carrier("dns", gateways=(Gateway("sbc.carrier.example"),)),))
    t = RoutingTables.build(snap, {"sbc.carrier.example": ["192.0.2.50"]})
    c = t.sources.carrier_for("192.0.2.50")
    assert c is not None and c.name == "dns"


# -- purity: routing imports nothing of sbc, no clock, no I/O ---------------------------------

FORBIDDEN_MODULES = {
    "sbc",
    "time",
    "datetime",
    "socket",
    "asyncio",
    "os",
    "subprocess",
    "threading",
    "secrets",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    "module", ["numbers", "sources", "lcr", "selection", "plan", "failover", "limits", "health", "tables"]
)
def test_routing_module_is_pure(module: str) -> None:
    path = ROUTING_DIR / f"{module}.py"
    assert not (_imports(path) & FORBIDDEN_MODULES)
    source = path.read_text()
    # randomness only through an injected random.Random
    for call in ("random.random(", "random.choice(", "random.shuffle(", "random.seed(", "open("):
        assert call not in source
