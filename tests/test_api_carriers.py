"""``/v1/carriers``: CRUD, gateways with live health, validation, conflicts, live snapshot."""

from __future__ import annotations

from datetime import UTC, datetime

from routing.health import HealthTable
from routing.model import Carrier, Gateway
from sbc.api.gateway_health import GatewayState, HealthTableSource
from tests import api_support
from tests.api_support import ADMIN, Env

# The shared fixtures, assigned (not imported) so linters see them used.
env = api_support.env

CARRIER = {
    "name": "telco",
    "gateways": [
        {"host": "192.0.2.10", "port": 5060, "transport": "udp", "priority": 10, "weight": 50},
        {"host": "gw2.example.net", "transport": "tls"},
    ],
    "inbound_cidrs": ["192.0.2.0/28"],
    "tech_prefix": "77#",
    "max_calls": 100,
    "max_cps": 10,
}


async def test_create_get_and_snapshot(env: Env) -> None:
    version = await env.store.version()
    created = await env.ok("POST", "/v1/carriers", 201, json=CARRIER)
    assert created["name"] == "telco"
    assert created["gateways"][1] == {
        "host": "gw2.example.net",
        "port": 5061,  # TLS default, as in the provision file
        "transport": "tls",
        "priority": 10,
        "weight": 100,
        "health": None,
    }
    assert created["failover_codes"] == [408, 500, 502, 503, 504]
    assert await env.ok("GET", f"/v1/carriers/{created['id']}") == created
    assert await env.store.version() == version + 1
    snapshot = await env.store.load_snapshot()
    (carrier,) = snapshot.carriers
    assert carrier.name == "telco" and carrier.tech_prefix == "77#" and carrier.max_calls == 100
    assert carrier.gateways[0] == Gateway("192.0.2.10", 5060, "udp", 10, 50)


async def test_gateway_health_comes_from_the_health_source(env: Env) -> None:
    probe = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    env.health.states[("telco", "192.0.2.10", 5060)] = GatewayState(
        up=False, latency_ms=12.5, last_probe=probe
    )
    created = await env.ok("POST", "/v1/carriers", 201, json=CARRIER)
    first, second = created["gateways"]
    assert first["health"] == {"up": False, "latency_ms": 12.5, "last_probe": "2026-01-02T03:04:05Z"}
    assert second["health"] is None
    listed = await env.ok("GET", "/v1/carriers")
    assert listed["items"][0]["gateways"][0]["health"]["up"] is False


def test_health_table_source_reports_wall_clock_times_and_smoothed_latency() -> None:
    table = HealthTable()
    gw = Gateway("192.0.2.10")
    table.sync([Carrier(name="telco", gateways=(gw,), probe_interval_s=5)], now=100.0)
    source = HealthTableSource(table, wall_offset=1_700_000_000.0)
    assert source.gateway_state("telco", gw) == GatewayState(up=True, latency_ms=None, last_probe=None)
    table.record_probe("telco", gw, True, 0.020, 105.0)
    state = source.gateway_state("telco", gw)
    assert state is not None and state.latency_ms == 20.0
    assert state.last_probe == datetime.fromtimestamp(1_700_000_105.0, UTC)
    for t in (110.0, 115.0, 120.0):
        table.record_probe("telco", gw, False, None, t)
    state = source.gateway_state("telco", gw)
    assert state is not None and state.up is False
    assert source.gateway_state("telco", Gateway("192.0.2.99")) is None  # not probed


async def test_list_filters_and_paginates_by_name(env: Env) -> None:
    for name in ("c3", "c1", "c2", "c5", "c4"):
        await env.ok("POST", "/v1/carriers", 201, json={"name": name})
    page1 = await env.ok("GET", "/v1/carriers", params={"limit": 2})
    assert [c["name"] for c in page1["items"]] == ["c1", "c2"]
    assert page1["next_offset"] == 2
    page3 = await env.ok("GET", "/v1/carriers", params={"limit": 2, "offset": 4})
    assert [c["name"] for c in page3["items"]] == ["c5"] and page3["next_offset"] is None
    only = await env.ok("GET", "/v1/carriers", params={"name": "c4"})
    assert [c["name"] for c in only["items"]] == ["c4"]
    r = await env.client.get("/v1/carriers", params={"limit": 0}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["extra"][0]["key"] == "limit"
    r = await env.client.get("/v1/carriers", params={"offset": -1}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["extra"][0]["key"] == "offset"


async def test_patch_changes_fields_and_replaces_gateways(env: Env) -> None:
    created = await env.ok("POST", "/v1/carriers", 201, json=CARRIER)
    version = await env.store.version()
    patched = await env.ok(
        "PATCH",
        f"/v1/carriers/{created['id']}",
        json={"gateways": [{"host": "192.0.2.20"}], "max_calls": None, "strip_plus": True},
    )
    assert [g["host"] for g in patched["gateways"]] == ["192.0.2.20"]
    assert patched["max_calls"] is None and patched["strip_plus"] is True
    assert patched["tech_prefix"] == "77#" and patched["max_cps"] == 10  # untouched
    assert await env.store.version() == version + 1
    (carrier,) = (await env.store.load_snapshot()).carriers
    assert carrier.gateways == (Gateway("192.0.2.20"),) and carrier.strip_plus


async def test_bad_bodies_are_422_naming_the_field_and_write_nothing(env: Env) -> None:
    version = await env.store.version()
    cases = [
        ({"name": "x", "gateways": [{"host": "192.0.2.1", "port": 0}]}, "gateways.0.port"),
        ({"name": "x", "gateways": [{"host": "not a host!"}]}, "gateways.0.host"),
        ({"name": "x", "gateways": [{"host": "192.0.2.1", "transport": "sctp"}]}, "gateways.0.transport"),
        ({"name": "x", "inbound_cidrs": ["10.0.0.300/8"]}, "inbound_cidrs.0"),
        ({"name": "x", "failover_codes": [200]}, "failover_codes.0"),
        ({"name": "x", "probe_interval_s": 0.5}, "probe_interval_s"),
        ({"name": "bad name"}, "name"),
        ({"name": "x", "colour": "red"}, "colour"),
        ({"name": "x", "max_calls": "10"}, "max_calls"),
        ({"name": "x", "gateways": [{"host": "192.0.2.1"}, {"host": "192.0.2.1"}]}, "gateways.1"),
        ({"name": "x", "inbound_cidrs": ["192.0.2.0/24", "192.0.2.0/24"]}, "inbound_cidrs.1"),
        ({}, "name"),
    ]
    for body, key in cases:
        r = await env.client.post("/v1/carriers", json=body, headers=ADMIN)
        assert r.status_code == 422, (body, r.text)
        assert key in [e.get("key") for e in r.json()["extra"]], (body, r.json())
    r = await env.client.post("/v1/carriers", content=b"{not json", headers=ADMIN)
    assert 400 <= r.status_code < 500
    assert await env.store.version() == version
    assert (await env.store.load_snapshot()).carriers == ()


async def test_duplicates_are_409(env: Env) -> None:
    await env.ok("POST", "/v1/carriers", 201, json=CARRIER)
    await env.ok("POST", "/v1/carriers", 409, json=CARRIER)
    other = await env.ok(
        "POST", "/v1/carriers", 201, json={"name": "other", "inbound_cidrs": ["192.0.2.16/28"]}
    )
    body = await env.ok(
        "POST", "/v1/carriers", 409, json={"name": "third", "inbound_cidrs": ["192.0.2.0/28"]}
    )
    assert "telco" in body["detail"]
    await env.ok("PATCH", f"/v1/carriers/{other['id']}", 409, json={"inbound_cidrs": ["192.0.2.0/28"]})


async def test_unknown_ids_are_404(env: Env) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        kw = {"json": {"max_calls": 1}} if method == "PATCH" else {}
        await env.ok(method, "/v1/carriers/4242", 404, **kw)
        await env.ok(method, "/v1/carriers/99999999999999999999", 404, **kw)


async def test_delete_refused_while_routes_use_it(env: Env) -> None:
    created = await env.ok("POST", "/v1/carriers", 201, json=CARRIER)
    route = await env.ok("POST", "/v1/routes", 201, json={"prefix": "1", "carriers": [{"name": "telco"}]})
    await env.ok("DELETE", f"/v1/carriers/{created['id']}", 409)
    await env.ok("DELETE", f"/v1/routes/{route['id']}", 204)
    await env.ok("DELETE", f"/v1/carriers/{created['id']}", 204)
    await env.ok("GET", f"/v1/carriers/{created['id']}", 404)
    assert (await env.store.load_snapshot()).carriers == ()
