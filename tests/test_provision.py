"""Tests of sbc.provision: validation with paths, declarative apply, atomicity, the CLI entry point."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

import sbc.provision as provision
from routing.model import (
    DEFAULT_FAILOVER_CODES,
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
from sbc.provision import (
    EXIT_BAD_FILE,
    EXIT_OK,
    EXIT_STORE_ERROR,
    KINDS,
    ProvisionDoc,
    ProvisionError,
    apply_provision,
    load_provision_file,
    parse_provision,
    provision_main,
)
from sbc.store import Store

BASE_YAML = """\
carriers:
  - name: alpha
    gateways:
      - {host: 192.0.2.10, port: 5060, transport: udp, priority: 10, weight: 60}
      - {host: gw2.alpha.example, transport: tls, priority: 10, weight: 40}
    inbound_cidrs: ["192.0.2.0/24", "2001:db8::/32"]
    tech_prefix: "1234#"
    strip_plus: true
    failover_codes: [503, 408]
    probe_interval_s: 30
    max_calls: 500
    max_cps: 20
  - name: beta
    gateways:
      - {host: 198.51.100.7}
    inbound_cidrs: [198.51.100.7]
customers:
  - name: acme
    max_calls: 50
    max_cps: 5
    trunks:
      - name: main
        allowed_cidrs: [203.0.113.0/28]
        targets:
          - {uri: "sip:pbx.acme.example:5060;transport=udp", priority: 10, weight: 100}
          - {uri: "sips:backup.acme.example", priority: 20}
      - name: remote
        allowed_cidrs: []
        credentials:
          - {username: acme-remote, password: "correct horse"}
        targets: [{uri: "sip:10.1.2.3:5080"}]
  - name: globex
    trunks:
      - name: hq
        credentials: [{username: globex1, password: "battery staple"}]
        targets: [{uri: "sip:hq.globex.example"}]
numbers:
  - {e164: "+14155550101", customer: acme}
  - {e164: "+14155550100", customer: acme, trunk: main}
  - {e164: "+442079460000", customer: globex, trunk: hq}
  - {e164: "+493012345678"}
routes:
  - prefix: "1"
    carriers: [{name: alpha, priority: 10, weight: 100}, {name: beta, priority: 20}]
  - prefix: "44"
    customer: globex
    time_window: "22:00-06:00"
    carriers: [{name: beta}]
  - prefix: ""
    carriers: [{name: alpha}]
"""

EXPECTED = Snapshot(
    carriers=(
        Carrier(
            name="alpha",
            gateways=(
                Gateway(host="192.0.2.10", port=5060, transport="udp", priority=10, weight=60),
                Gateway(host="gw2.alpha.example", port=5061, transport="tls", priority=10, weight=40),
            ),
            inbound_cidrs=("192.0.2.0/24", "2001:db8::/32"),
            tech_prefix="1234#",
            strip_plus=True,
            failover_codes=(503, 408),
            probe_interval_s=30.0,
            max_calls=500,
            max_cps=20.0,
        ),
        Carrier(
            name="beta",
            gateways=(Gateway(host="198.51.100.7"),),
            inbound_cidrs=("198.51.100.7/32",),
            failover_codes=DEFAULT_FAILOVER_CODES,
        ),
    ),
    customers=(
        Customer(
            name="acme",
            max_calls=50,
            max_cps=5.0,
            trunks=(
                Trunk(
                    name="main",
                    customer="acme",
                    allowed_cidrs=("203.0.113.0/28",),
                    targets=(
                        TrunkTarget(uri="sip:pbx.acme.example:5060;transport=udp", priority=10, weight=100),
                        TrunkTarget(uri="sips:backup.acme.example", priority=20, weight=100),
                    ),
                ),
                Trunk(
                    name="remote",
                    customer="acme",
                    credentials=(Credential(username="acme-remote", password="correct horse"),),
                    targets=(TrunkTarget(uri="sip:10.1.2.3:5080"),),
                ),
            ),
        ),
        Customer(
            name="globex",
            trunks=(
                Trunk(
                    name="hq",
                    customer="globex",
                    credentials=(Credential(username="globex1", password="battery staple"),),
                    targets=(TrunkTarget(uri="sip:hq.globex.example"),),
                ),
            ),
        ),
    ),
    numbers=(
        Number(e164="+14155550100", customer="acme", trunk="main"),
        Number(e164="+14155550101", customer="acme"),
        Number(e164="+442079460000", customer="globex", trunk="hq"),
        Number(e164="+493012345678"),
    ),
    routes=(
        Route(prefix="", carriers=(RouteCarrier(name="alpha"),)),
        Route(
            prefix="1",
            carriers=(
                RouteCarrier(name="alpha", priority=10, weight=100),
                RouteCarrier(name="beta", priority=20),
            ),
        ),
        Route(
            prefix="44", customer="globex", time_window="22:00-06:00", carriers=(RouteCarrier(name="beta"),)
        ),
    ),
    version=1,
)


def base() -> dict[str, Any]:
    """A fresh, valid document as plain data."""
    return yaml.safe_load(BASE_YAML)


def base_with_inbound_only_carrier() -> dict[str, Any]:
    """The base document plus a carrier that only sends calls in (no gateways)."""
    doc = base()
    doc["carriers"].append({"name": "inbound-only", "inbound_cidrs": ["100.64.0.0/10"]})
    return doc


def strip_ids(snapshot: Snapshot) -> Snapshot:
    """The snapshot with database ids cleared, to compare with hand-written expectations."""
    return dataclasses.replace(
        snapshot,
        carriers=tuple(dataclasses.replace(c, id=None) for c in snapshot.carriers),
        customers=tuple(
            dataclasses.replace(c, id=None, trunks=tuple(dataclasses.replace(t, id=None) for t in c.trunks))
            for c in snapshot.customers
        ),
        routes=tuple(dataclasses.replace(r, id=None) for r in snapshot.routes),
    )


def counts(report: provision.ProvisionReport) -> dict[str, dict[str, int]]:
    """Only the non-zero counts, as {"created": {"carriers": 2}, ...}."""
    out = {}
    for what in ("created", "updated", "deleted"):
        nonzero = {k: v for k, v in getattr(report, what).items() if v}
        if nonzero:
            out[what] = nonzero
    return out


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = await Store.open(db_url)
    try:
        yield s
    finally:
        await s.close()


# --- applying ---------------------------------------------------------------------------------


async def test_apply_builds_the_exact_snapshot(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "provision.yaml"
    path.write_text(BASE_YAML)
    report = await apply_provision(store, load_provision_file(path))
    assert report.version == 1
    assert report.changed
    assert counts(report) == {
        "created": {"carriers": 2, "customers": 2, "trunks": 3, "numbers": 4, "routes": 3}
    }
    snapshot = await store.load_snapshot()
    assert strip_ids(snapshot) == EXPECTED
    ids = (
        [c.id for c in snapshot.carriers]
        + [c.id for c in snapshot.customers]
        + [r.id for r in snapshot.routes]
    )
    assert all(isinstance(i, int) for i in ids)
    assert all(isinstance(t.id, int) for c in snapshot.customers for t in c.trunks)
    assert await store.version() == 1


async def test_reapplying_the_same_file_changes_nothing(store: Store) -> None:
    await apply_provision(store, base())
    before = await store.load_snapshot()
    again = await apply_provision(store, base())
    assert not again.changed
    assert counts(again) == {}
    assert again.version == 1
    assert await store.version() == 1
    assert await store.load_snapshot() == before  # ids included: nothing was recreated


async def test_updates_are_counted_and_applied(store: Store) -> None:
    await apply_provision(store, base())
    doc = base()
    doc["carriers"][1]["gateways"][0]["port"] = 5070  # beta: gateway changed
    doc["customers"][0]["max_calls"] = 60  # acme
    doc["customers"][1]["trunks"][0]["credentials"][0]["password"] = "new battery staple"  # globex/hq
    doc["numbers"][0]["trunk"] = "remote"  # +14155550101 now on acme/remote
    doc["routes"][0]["carriers"] = [{"name": "beta", "priority": 5}, {"name": "alpha", "priority": 30}]  # "1"
    doc["routes"][1]["time_window"] = "08:00-18:00"  # "44"/globex
    report = await apply_provision(store, doc)
    assert counts(report) == {
        "updated": {"carriers": 1, "customers": 1, "trunks": 1, "numbers": 1, "routes": 2}
    }
    assert report.version == 2
    snap = await store.load_snapshot()
    assert snap.version == 2
    assert snap.carriers[1].gateways == (Gateway(host="198.51.100.7", port=5070),)
    assert snap.customers[0].max_calls == 60
    assert snap.customers[1].trunks[0].credentials == (Credential("globex1", "new battery staple"),)
    assert snap.numbers[1] == Number(e164="+14155550101", customer="acme", trunk="remote")
    assert snap.routes[1].carriers == (RouteCarrier("beta", priority=5), RouteCarrier("alpha", priority=30))
    assert snap.routes[2].time_window == "08:00-18:00"
    # Unchanged objects keep their identity.
    before_ids = {c.name: c.id for c in snap.carriers}
    await apply_provision(store, doc)
    assert {c.name: c.id for c in (await store.load_snapshot()).carriers} == before_ids


async def test_deletes_what_is_no_longer_listed(store: Store) -> None:
    await apply_provision(store, base())
    doc = base()
    doc["carriers"] = [c for c in doc["carriers"] if c["name"] != "beta"]
    doc["routes"] = [{"prefix": "1", "carriers": [{"name": "alpha"}]}]  # "44" and "" go, "1" changes
    doc["customers"] = [c for c in doc["customers"] if c["name"] != "globex"]
    doc["customers"][0]["trunks"] = [t for t in doc["customers"][0]["trunks"] if t["name"] != "main"]
    doc["numbers"] = [
        {"e164": "+14155550100", "customer": "acme"},  # was on the deleted trunk main
        {"e164": "+442079460000"},  # back to the inventory: its customer goes
    ]
    report = await apply_provision(store, doc)
    assert counts(report) == {
        "updated": {"numbers": 2, "routes": 1},
        "deleted": {"carriers": 1, "customers": 1, "trunks": 2, "numbers": 2, "routes": 2},
    }
    snap = await store.load_snapshot()
    assert [c.name for c in snap.carriers] == ["alpha"]
    assert [c.name for c in snap.customers] == ["acme"]
    assert [t.name for t in snap.customers[0].trunks] == ["remote"]
    assert snap.numbers == (Number("+14155550100", customer="acme"), Number("+442079460000"))
    assert [(r.prefix, r.carriers) for r in snap.routes] == [("1", (RouteCarrier("alpha"),))]


async def test_empty_lists_delete_everything(store: Store) -> None:
    await apply_provision(store, base())
    report = await apply_provision(store, {"carriers": [], "customers": [], "numbers": [], "routes": []})
    assert counts(report) == {
        "deleted": {"carriers": 2, "customers": 2, "trunks": 3, "numbers": 4, "routes": 3},
    }
    assert strip_ids(await store.load_snapshot()) == Snapshot(version=2)


async def test_credential_username_can_move_between_trunks(store: Store) -> None:
    await apply_provision(store, base())
    doc = base()
    moved = doc["customers"][0]["trunks"][1].pop("credentials")  # from acme/remote ...
    doc["customers"][1]["trunks"][0]["credentials"] += moved  # ... to globex/hq
    report = await apply_provision(store, doc)
    assert counts(report) == {"updated": {"trunks": 2}}
    snap = await store.load_snapshot()
    assert snap.customers[0].trunks[1].credentials == ()
    assert [c.username for c in snap.customers[1].trunks[0].credentials] == ["globex1", "acme-remote"]


async def test_credential_moves_to_a_new_trunk_of_a_new_customer(store: Store) -> None:
    await apply_provision(store, base())
    doc = base()
    doc["customers"] = [c for c in doc["customers"] if c["name"] != "globex"]
    doc["numbers"] = [n for n in doc["numbers"] if n.get("customer") != "globex"]
    doc["routes"] = [r for r in doc["routes"] if r.get("customer") != "globex"]
    doc["customers"].append(
        {
            "name": "initech",
            "trunks": [{"name": "hq", "credentials": [{"username": "globex1", "password": "x" * 8}]}],
        }
    )
    report = await apply_provision(store, doc)
    assert report.created == {"carriers": 0, "customers": 1, "trunks": 1, "numbers": 0, "routes": 0}
    snap = await store.load_snapshot()
    assert [c.name for c in snap.customers] == ["acme", "initech"]
    assert snap.customers[1].trunks[0].credentials == (Credential("globex1", "x" * 8),)


async def test_failure_midway_leaves_the_store_unchanged(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await apply_provision(store, base())
    before = await store.load_snapshot()
    doc = base()
    doc["carriers"].append({"name": "gamma", "gateways": [{"host": "gamma.example"}]})
    doc["customers"][0]["trunks"][0]["allowed_cidrs"] = ["10.0.0.0/8"]
    doc["numbers"] = doc["numbers"][:2]
    doc["routes"] = [{"prefix": "49", "carriers": [{"name": "gamma"}]}]
    real_apply_routes = provision._apply_routes

    def routes_then_fail(*args: Any) -> None:
        real_apply_routes(*args)  # carriers, customers, numbers and routes are flushed by now
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(provision, "_apply_routes", routes_then_fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await apply_provision(store, doc)
    assert await store.load_snapshot() == before
    assert await store.version() == 1
    monkeypatch.undo()
    report = await apply_provision(store, doc)  # the same document applies fine afterwards
    assert report.version == 2
    assert [c.name for c in (await store.load_snapshot()).carriers] == ["alpha", "beta", "gamma"]


async def test_invalid_document_touches_nothing(store: Store) -> None:
    await apply_provision(store, base())
    before = await store.load_snapshot()
    doc = base()
    doc["carriers"] = []  # routes now name unknown carriers
    with pytest.raises(ProvisionError, match="unknown carrier 'alpha'"):
        await apply_provision(store, doc)
    assert await store.load_snapshot() == before


async def test_apply_rechecks_references_of_a_prebuilt_doc(store: Store) -> None:
    data = base()
    data["numbers"].append({"e164": "+15555550100", "customer": "nobody"})
    doc = ProvisionDoc.model_validate(data)  # shape only: references are not checked here
    with pytest.raises(ProvisionError, match=r"numbers\[4\]\.customer: unknown customer 'nobody'"):
        await apply_provision(store, doc)
    assert await store.version() == 0


async def test_each_change_bumps_version_once_and_other_nodes_see_it(store: Store, db_url: str) -> None:
    other_node = await Store.open(db_url)
    try:
        assert await other_node.version() == 0
        await apply_provision(store, base())
        assert await other_node.version() == 1
        doc = base()
        doc["customers"][0]["max_cps"] = 7
        doc["numbers"].append({"e164": "+15555550100"})
        await apply_provision(store, doc)
        assert await other_node.version() == 2
        snap = await other_node.load_snapshot()
        assert snap.version == 2 and snap.customers[0].max_cps == 7.0
    finally:
        await other_node.close()


async def test_concurrent_applies_from_two_nodes_serialise(store: Store, db_url: str) -> None:
    other_node = await Store.open(db_url)
    try:
        doc_a, doc_b = base(), base()
        doc_b["customers"][0]["max_calls"] = 99
        reports = await asyncio.gather(apply_provision(store, doc_a), apply_provision(other_node, doc_b))
        assert sorted(r.version for r in reports if r.changed) == list(
            range(1, 1 + sum(r.changed for r in reports))
        )
        final = await store.load_snapshot()
        assert final.version == await other_node.version()
        assert final.customers[0].max_calls in (50, 99)
    finally:
        await other_node.close()


# --- validation -------------------------------------------------------------------------------


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return mutate


def _append(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for part in path:
            target = target[part]
        target.append(copy.deepcopy(value))

    return mutate


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


BAD_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "bad trunk cidr",
        _set(("customers", 0, "trunks", 1, "allowed_cidrs"), ["10.0.0.300/8"]),
        "customers[0].trunks[1].allowed_cidrs[0]: '10.0.0.300/8' is not a valid CIDR",
    ),
    (
        "cidr with host bits",
        _set(("carriers", 0, "inbound_cidrs", 0), "192.0.2.1/24"),
        "carriers[0].inbound_cidrs[0]: '192.0.2.1/24' has host bits set; did you mean '192.0.2.0/24'?",
    ),
    (
        "unknown nested key",
        _set(("carriers", 0, "gateways", 0, "prio"), 1),
        "carriers[0].gateways[0].prio: unknown key; allowed: host, port, transport, priority, weight",
    ),
    (
        "unknown top-level key",
        _set(("applications",), []),
        "applications: unknown key; allowed: carriers, customers, numbers, routes",
    ),
    ("missing top-level key", _delete(("numbers",)), "numbers: required; write it as []"),
    (
        "missing nested key",
        _delete(("carriers", 1, "gateways", 0, "host")),
        "carriers[1].gateways[0].host: required",
    ),
    (
        "short e164",
        _set(("numbers", 0, "e164"), "+1234567"),
        "numbers[0].e164: '+1234567' is not an E.164 number",
    ),
    (
        "long e164",
        _set(("numbers", 0, "e164"), "+1234567890123456"),
        "numbers[0].e164: '+1234567890123456' is not an E.164 number",
    ),
    (
        "e164 without plus",
        _set(("numbers", 0, "e164"), "14155550101"),
        "numbers[0].e164: '14155550101' is not",
    ),
    (
        "unquoted e164",
        _set(("numbers", 1, "e164"), 14155550100),
        "numbers[1].e164: an E.164 number must be a quoted string",
    ),
    (
        "port zero",
        _set(("carriers", 0, "gateways", 0, "port"), 0),
        "carriers[0].gateways[0].port: Input should be",
    ),
    ("port too big", _set(("carriers", 0, "gateways", 0, "port"), 65536), "carriers[0].gateways[0].port:"),
    (
        "bad transport",
        _set(("carriers", 0, "gateways", 1, "transport"), "sctp"),
        "carriers[0].gateways[1].transport: Input should be 'udp', 'tcp' or 'tls' (got 'sctp')",
    ),
    (
        "negative priority",
        _set(("customers", 0, "trunks", 0, "targets", 0, "priority"), -1),
        "customers[0].trunks[0].targets[0].priority: Input should be greater than or equal to 0",
    ),
    ("negative weight", _set(("routes", 0, "carriers", 1, "weight"), -5), "routes[0].carriers[1].weight:"),
    ("prefix with plus", _set(("routes", 0, "prefix"), "+1"), "routes[0].prefix: '+1' is not a route prefix"),
    (
        "unquoted prefix",
        _set(("routes", 1, "prefix"), 44),
        "routes[1].prefix: a prefix must be a quoted string",
    ),
    (
        "number of unknown customer",
        _set(("numbers", 0, "customer"), "nobody"),
        "numbers[0].customer: unknown customer 'nobody'",
    ),
    (
        "number on another customer's trunk",
        _set(("numbers", 2, "trunk"), "main"),
        "numbers[2].trunk: customer 'globex' has no trunk 'main'",
    ),
    (
        "trunk without customer",
        _set(("numbers", 3, "trunk"), "main"),
        "numbers[3].trunk: a trunk needs a customer",
    ),
    (
        "route to unknown carrier",
        _set(("routes", 1, "carriers", 0, "name"), "zeta"),
        "routes[1].carriers[0].name: unknown carrier 'zeta'",
    ),
    (
        "route of unknown customer",
        _set(("routes", 1, "customer"), "nobody"),
        "routes[1].customer: unknown customer 'nobody'",
    ),
    (
        "route without carriers",
        _set(("routes", 2, "carriers"), []),
        "routes[2].carriers: List should have at least 1 item",
    ),
    (
        "route to carrier without gateways",
        _set(("routes", 2, "carriers"), [{"name": "inbound-only"}]),
        "routes[2].carriers[0].name: carrier 'inbound-only' has no gateways to route to",
    ),
    (
        "duplicate carrier",
        _append(("carriers",), {"name": "alpha"}),
        "carriers[3].name: duplicate carrier name 'alpha' (first at carriers[0].name)",
    ),
    (
        "duplicate customer",
        _append(("customers",), {"name": "acme"}),
        "customers[2].name: duplicate customer name 'acme'",
    ),
    (
        "duplicate trunk in customer",
        _set(("customers", 0, "trunks", 1, "name"), "main"),
        "customers[0].trunks[1].name: duplicate trunk name 'main' in customer 'acme'",
    ),
    (
        "username used twice",
        _set(("customers", 1, "trunks", 0, "credentials", 0, "username"), "acme-remote"),
        "customers[1].trunks[0].credentials[0].username: duplicate username 'acme-remote' "
        "(first at customers[0].trunks[1].credentials[0].username)",
    ),
    (
        "duplicate number",
        _set(("numbers", 1, "e164"), "+14155550101"),
        "numbers[1].e164: duplicate number +14155550101",
    ),
    (
        "duplicate route",
        _set(("routes", 2, "prefix"), "1"),
        "routes[2].prefix: duplicate route '1' for no customer",
    ),
    (
        "inbound cidr on two carriers",
        _append(("carriers", 1, "inbound_cidrs"), "192.0.2.0/24"),
        "carriers[1].inbound_cidrs[1]: 192.0.2.0/24 is already an inbound CIDR of carrier 'alpha'",
    ),
    (
        "target not a sip uri",
        _set(("customers", 0, "trunks", 0, "targets", 0, "uri"), "http://pbx.example"),
        "customers[0].trunks[0].targets[0].uri: 'http://pbx.example' is not a sip: or sips: URI",
    ),
    (
        "target uri port out of range",
        _set(("customers", 0, "trunks", 0, "targets", 0, "uri"), "sip:pbx.example:70000"),
        "customers[0].trunks[0].targets[0].uri: 'sip:pbx.example:70000' is not a valid SIP URI "
        "(target: port 70000 out of range)",
    ),
    (
        "tel uri as target",
        _set(("customers", 0, "trunks", 0, "targets", 0, "uri"), "tel:+14155550100"),
        "'tel:+14155550100' is not a sip: or sips: URI",
    ),
    (
        "target with uri headers",
        _set(("customers", 0, "trunks", 0, "targets", 0, "uri"), "sip:pbx.example?Subject=x"),
        "URI headers ('?...') are not allowed in a target",
    ),
    (
        "target with unknown transport",
        _set(("customers", 0, "trunks", 0, "targets", 0, "uri"), "sip:pbx.example;transport=sctp"),
        "transport 'sctp' is not udp, tcp or tls",
    ),
    (
        "sips over udp",
        _set(("customers", 0, "trunks", 0, "targets", 1, "uri"), "sips:pbx.example;transport=udp"),
        "sips requires TLS",
    ),
    (
        "bad gateway host",
        _set(("carriers", 0, "gateways", 0, "host"), "10.0.0.300"),
        "'10.0.0.300' is not an IP address or host name",
    ),
    (
        "bad time window",
        _set(("routes", 1, "time_window"), "25:00-26:00"),
        "routes[1].time_window: '25:00-26:00' is not a time window",
    ),
    (
        "empty time window",
        _set(("routes", 1, "time_window"), "06:00-06:00"),
        "starts and ends at the same time",
    ),
    (
        "failover on success",
        _set(("carriers", 0, "failover_codes"), [200]),
        "carriers[0].failover_codes[0]: Input should be greater than or equal to 400",
    ),
    (
        "duplicate failover code",
        _set(("carriers", 0, "failover_codes"), [503, 503]),
        "carriers[0].failover_codes[1]: duplicate failover code 503",
    ),
    (
        "probing too fast",
        _set(("carriers", 0, "probe_interval_s"), 0.5),
        "carriers[0].probe_interval_s: 0.5 must be 0 (no probing) or 1 to 3600 seconds",
    ),
    (
        "string for bool",
        _set(("carriers", 0, "strip_plus"), "yes"),
        "carriers[0].strip_plus: Input should be a valid boolean",
    ),
    (
        "name with space",
        _set(("customers", 0, "name"), "acme corp"),
        "customers[0].name: 'acme corp' is not a valid name",
    ),
    (
        "negative max_calls",
        _set(("customers", 0, "max_calls"), -1),
        "customers[0].max_calls: Input should be greater than or equal to 0",
    ),
    (
        "username with colon",
        _set(("customers", 0, "trunks", 1, "credentials", 0, "username"), "a:b"),
        "is not a valid digest username",
    ),
    (
        "bad tech prefix",
        _set(("carriers", 0, "tech_prefix"), "12a"),
        "carriers[0].tech_prefix: '12a' is not a tech prefix",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [(m, e) for _, m, e in BAD_CASES], ids=[n for n, _, _ in BAD_CASES]
)
def test_bad_document_is_refused_with_path(mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    doc = base_with_inbound_only_carrier()
    mutate(doc)
    with pytest.raises(ProvisionError) as info:
        parse_provision(doc)
    rendered = [str(issue) for issue in info.value.issues]
    assert any(line.startswith(expected) or expected in line for line in rendered), rendered
    assert len(rendered) == 1, rendered  # each case breaks exactly one thing


def test_the_base_document_is_valid() -> None:
    doc = parse_provision(base_with_inbound_only_carrier())
    assert [c.name for c in doc.carriers] == ["alpha", "beta", "inbound-only"]
    assert doc.carriers[0].gateways[1].port == 5061  # TLS default port
    assert doc.carriers[1].inbound_cidrs == ["198.51.100.7/32"]  # bare address normalised


def test_every_error_is_listed_at_once_in_file_order() -> None:
    doc = base()
    doc["carriers"][0]["gateways"][0]["port"] = 0
    doc["customers"][0]["trunks"][0]["allowed_cidrs"] = ["nonsense"]
    doc["numbers"][0]["e164"] = "123"
    with pytest.raises(ProvisionError) as info:
        parse_provision(doc)
    paths = [issue.path for issue in info.value.issues]
    assert paths == [
        "carriers[0].gateways[0].port",
        "customers[0].trunks[0].allowed_cidrs[0]",
        "numbers[0].e164",
    ]
    assert str(info.value).count("\n") == 2


def test_passwords_never_appear_in_errors_or_repr() -> None:
    doc = base()
    doc["customers"][0]["trunks"][1]["credentials"][0]["password"] = "short"
    with pytest.raises(ProvisionError) as info:
        parse_provision(doc)
    assert "short" not in str(info.value).replace("password must be", "")
    assert "customers[0].trunks[1].credentials[0].password: password must be 8 to 128" in str(info.value)
    doc["customers"][0]["trunks"][1]["credentials"][0]["password"] = 12345678
    with pytest.raises(ProvisionError) as info:
        parse_provision(doc)
    assert "12345678" not in str(info.value)
    good = parse_provision(base())
    assert "correct horse" not in repr(good)


@pytest.mark.parametrize("data", [None, [], "carriers"])
def test_document_must_be_a_mapping(data: object) -> None:
    with pytest.raises(ProvisionError, match="the document must be a mapping"):
        parse_provision(data)


# --- files ------------------------------------------------------------------------------------


def test_yaml_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("carriers: []\ncustomers: []\nnumbers: [] ]\nroutes: []\n")
    with pytest.raises(ProvisionError) as info:
        load_provision_file(path)
    (issue,) = info.value.issues
    assert issue.path == f"{path}:3:13"
    assert issue.message.startswith("YAML error")


def test_yaml_duplicate_key_is_refused_with_position(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("carriers: []\ncustomers: []\nnumbers: []\nroutes: []\ncarriers: []\n")
    with pytest.raises(ProvisionError) as info:
        load_provision_file(path)
    assert (
        str(info.value)
        == f"{path}:5:1: YAML error: while constructing a mapping found duplicate key 'carriers'"
    )


def test_unquoted_e164_in_yaml_explains_quoting(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("carriers: []\ncustomers: []\nnumbers: [{e164: +14155550100}]\nroutes: []\n")
    with pytest.raises(ProvisionError, match=r"numbers\[0\]\.e164: an E\.164 number must be a quoted string"):
        load_provision_file(path)


def test_empty_and_missing_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ProvisionError, match="got an empty document"):
        load_provision_file(empty)
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ProvisionError, match=r"missing\.yaml: cannot read"):
        load_provision_file(missing)


# --- CLI entry point ----------------------------------------------------------------------------


def test_provision_main_applies_and_prints_one_json_line(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE_YAML)
    assert provision_main(str(path), db_url) == EXIT_OK
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    summary = json.loads(out)
    assert summary["version"] == 1 and summary["changed"] is True
    assert summary["created"] == {"carriers": 2, "customers": 2, "trunks": 3, "numbers": 4, "routes": 3}
    assert set(summary["deleted"]) == set(KINDS)
    assert provision_main(str(path), db_url) == EXIT_OK
    again = json.loads(capsys.readouterr().out)
    assert again["changed"] is False and again["version"] == 1


def test_provision_main_bad_file_exits_2_and_lists_errors(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = base()
    doc["carriers"][0]["gateways"][0]["port"] = 0
    doc["numbers"][0]["e164"] = "123"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert provision_main(str(path), db_url) == EXIT_BAD_FILE
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("carriers[0].gateways[0].port:")
    assert lines[1].startswith("numbers[0].e164: '123' is not an E.164 number")

    async def version() -> int:
        store = await Store.open(db_url)
        try:
            return await store.version()
        finally:
            await store.close()

    assert asyncio.run(version()) == 0


def test_provision_main_store_error_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BASE_YAML)
    assert provision_main(str(path), "mysql://root:hunter2@db/sbc") == EXIT_STORE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("store error:") and "hunter2" not in err
    bad_dir = tmp_path / "no" / "such" / "dir" / "x.db"
    assert provision_main(str(path), f"sqlite:///{bad_dir}") == EXIT_STORE_ERROR
