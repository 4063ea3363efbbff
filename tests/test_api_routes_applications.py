"""``/v1/routes`` and ``/v1/applications``: CRUD, validation, conflicts, isolation, snapshot."""

from __future__ import annotations

from routing.model import Application, Route, RouteCarrier
from tests import api_support
from tests.api_support import ADMIN, Env, World, bearer

# The shared fixtures, assigned (not imported) so linters see them used.
env = api_support.env
world = api_support.world

FLOW = [{"action": "say", "text": "Hello"}, {"action": "dial", "to": "trunk:acme/pbx"}]


async def test_route_crud_and_snapshot(env: Env, world: World) -> None:
    await env.ok("POST", "/v1/carriers", 201, json={"name": "backup", "gateways": [{"host": "192.0.2.40"}]})
    created = await env.ok(
        "POST",
        "/v1/routes",
        201,
        json={
            "prefix": "44",
            "customer": "acme",
            "time_window": "08:00-20:00",
            "carriers": [{"name": "telco", "priority": 5}, {"name": "backup"}],
        },
    )
    assert created["carriers"] == [
        {"name": "telco", "priority": 5, "weight": 100},
        {"name": "backup", "priority": 10, "weight": 100},
    ]
    await env.ok("POST", "/v1/routes", 201, json={"prefix": "", "carriers": [{"name": "telco"}]})
    routes = {(r.prefix, r.customer): r for r in (await env.store.load_snapshot()).routes}
    assert routes[("44", "acme")] == Route(
        prefix="44",
        customer="acme",
        time_window="08:00-20:00",
        carriers=(RouteCarrier("telco", 5, 100), RouteCarrier("backup", 10, 100)),
        id=created["id"],
    )
    patched = await env.ok(
        "PATCH",
        f"/v1/routes/{created['id']}",
        json={"time_window": None, "carriers": [{"name": "backup", "weight": 7}, {"name": "telco"}]},
    )
    assert patched["time_window"] is None
    assert [(c["name"], c["weight"]) for c in patched["carriers"]] == [("backup", 7), ("telco", 100)]
    assert await env.ok("GET", f"/v1/routes/{created['id']}") == patched
    await env.ok("DELETE", f"/v1/routes/{created['id']}", 204)
    await env.ok("GET", f"/v1/routes/{created['id']}", 404)
    await env.ok("DELETE", f"/v1/routes/{created['id']}", 404)
    assert [r.prefix for r in (await env.store.load_snapshot()).routes] == [""]


async def test_route_list_filters(env: Env, world: World) -> None:
    await env.ok("POST", "/v1/carriers", 201, json={"name": "backup", "gateways": [{"host": "192.0.2.40"}]})
    for prefix, customer, carrier in (("1", None, "telco"), ("1", "acme", "backup"), ("44", None, "backup")):
        await env.ok(
            "POST",
            "/v1/routes",
            201,
            json={"prefix": prefix, "customer": customer, "carriers": [{"name": carrier}]},
        )

    async def listed(**params: object) -> list[tuple[str, str | None]]:
        page = await env.ok("GET", "/v1/routes", params=params)
        return [(r["prefix"], r["customer"]) for r in page["items"]]

    assert await listed() == [("1", None), ("1", "acme"), ("44", None)]
    assert await listed(prefix="1") == [("1", None), ("1", "acme")]
    assert await listed(customer="acme") == [("1", "acme")]
    assert await listed(customer="-") == [("1", None), ("44", None)]
    assert await listed(carrier="backup") == [("1", "acme"), ("44", None)]
    assert await listed(limit=1, offset=1) == [("1", "acme")]


async def test_route_errors(env: Env, world: World) -> None:
    await env.ok("POST", "/v1/carriers", 201, json={"name": "empty"})  # no gateways
    await env.ok("POST", "/v1/routes", 201, json={"prefix": "1", "carriers": [{"name": "telco"}]})
    await env.ok("POST", "/v1/routes", 409, json={"prefix": "1", "carriers": [{"name": "telco"}]})
    await env.ok(
        "POST", "/v1/routes", 201, json={"prefix": "1", "customer": "acme", "carriers": [{"name": "telco"}]}
    )
    cases = [
        ({"prefix": "44", "carriers": [{"name": "nope"}]}, "carriers.0.name"),
        ({"prefix": "44", "carriers": [{"name": "telco"}, {"name": "empty"}]}, "carriers.1.name"),
        ({"prefix": "44", "carriers": [{"name": "telco"}, {"name": "telco"}]}, "carriers.1.name"),
        ({"prefix": "44", "carriers": []}, "carriers"),
        ({"prefix": "+44", "carriers": [{"name": "telco"}]}, "prefix"),
        ({"prefix": "44", "time_window": "25:00-26:00", "carriers": [{"name": "telco"}]}, "time_window"),
        ({"prefix": "44", "customer": "nobody", "carriers": [{"name": "telco"}]}, "customer"),
        ({"prefix": 44, "carriers": [{"name": "telco"}]}, "prefix"),
    ]
    for body, key in cases:
        r = await env.client.post("/v1/routes", json=body, headers=ADMIN)
        assert r.status_code == 422, (body, r.text)
        assert key in [e.get("key") for e in r.json()["extra"]], (body, r.json())
    assert len((await env.store.load_snapshot()).routes) == 2


async def test_application_crud_secret_is_write_only(env: Env, world: World) -> None:
    created = await env.ok(
        "POST",
        "/v1/applications",
        201,
        key=world.acme_key,
        json={
            "name": "bot",
            "call_hook": "https://bot.acme.example/call",
            "fallback_url": "https://backup.acme.example/call",
            "status_hook": "http://10.0.0.5:8080/status",
            "signing_secret": "0123456789abcdef-secret",
        },
    )
    assert created["has_signing_secret"] is True and created["customer"] == "acme"
    assert "0123456789abcdef-secret" not in str(created)
    fetched = await env.ok("GET", f"/v1/applications/{created['id']}", key=world.acme_key)
    assert fetched == created
    apps = {(a.customer, a.name): a for a in (await env.store.load_snapshot()).applications}
    assert apps[("acme", "bot")] == Application(
        name="bot",
        customer="acme",
        call_hook="https://bot.acme.example/call",
        fallback_url="https://backup.acme.example/call",
        status_hook="http://10.0.0.5:8080/status",
        signing_secret="0123456789abcdef-secret",
        id=created["id"],
    )
    # switch to an inline flow: the hook and its fallback go in the same request
    patched = await env.ok(
        "PATCH",
        f"/v1/applications/{created['id']}",
        key=world.acme_key,
        json={"call_hook": None, "fallback_url": None, "flow": FLOW, "signing_secret": None},
    )
    assert patched["flow"] == FLOW and patched["call_hook"] is None and patched["has_signing_secret"] is False
    apps = {(a.customer, a.name): a for a in (await env.store.load_snapshot()).applications}
    assert apps[("acme", "bot")].flow == tuple(FLOW)
    listed = await env.ok("GET", "/v1/applications", key=world.acme_key)
    assert [a["name"] for a in listed["items"]] == ["bot", "ivr"]
    await env.ok("DELETE", f"/v1/applications/{created['id']}", 204, key=world.acme_key)
    await env.ok("GET", f"/v1/applications/{created['id']}", 404, key=world.acme_key)


async def test_application_validation(env: Env, world: World) -> None:
    await env.ok("POST", "/v1/applications", 409, json={"customer": "acme", "name": "ivr", "flow": FLOW})
    cases = [
        ({"name": "a"}, "call_hook"),
        ({"name": "a", "call_hook": "https://x.example/", "flow": FLOW}, "call_hook"),
        ({"name": "a", "call_hook": "ftp://x.example/"}, "call_hook"),
        ({"name": "a", "call_hook": "https://"}, "call_hook"),
        ({"name": "a", "call_hook": "https://x .example/"}, "call_hook"),
        ({"name": "a", "flow": FLOW, "fallback_url": "https://x.example/"}, "fallback_url"),
        ({"name": "a", "flow": []}, "flow"),
        ({"name": "a", "flow": [{"text": "no action"}]}, "flow"),
        ({"name": "a", "flow": ["say"]}, "flow.0"),
        ({"name": "a", "flow": [{"action": "say"}] * 101}, "flow"),
        ({"name": "a", "call_hook": "https://x.example/", "signing_secret": "short"}, "signing_secret"),
        ({"name": "a", "call_hook": "https://x.example/", "customer": "globex"}, "customer"),
    ]
    for body, key in cases:
        r = await env.client.post("/v1/applications", json=body, headers=bearer(world.acme_key))
        assert r.status_code == 422, (body, r.text)
        assert key in [e.get("key") for e in r.json()["extra"]], (body, r.json())
        assert "short" not in r.text
    app_id = world.ids["acme/ivr"]
    r = await env.client.patch(f"/v1/applications/{app_id}", json={"call_hook": None}, headers=ADMIN)
    assert r.status_code == 422  # would leave neither a hook nor a flow
    apps = {(a.customer, a.name): a for a in (await env.store.load_snapshot()).applications}
    assert apps[("acme", "ivr")].call_hook == "https://acme.example.com/hook"


async def test_application_isolation_and_delete_guard(env: Env, world: World) -> None:
    theirs = world.ids["globex/ivr"]
    for method in ("GET", "PATCH", "DELETE"):
        kw = {"json": {"status_hook": None}} if method == "PATCH" else {}
        await env.ok(method, f"/v1/applications/{theirs}", 404, key=world.acme_key, **kw)
    listed = await env.ok("GET", "/v1/applications", key=world.acme_key, params={"customer": "globex"})
    assert listed["items"] == []
    admin_view = await env.ok("GET", "/v1/applications", params={"customer": "globex"})
    assert [(a["customer"], a["name"]) for a in admin_view["items"]] == [("globex", "ivr")]
    await env.ok(
        "POST", "/v1/numbers/+14155550110/purchase", key=world.globex_key, json={"application": "ivr"}
    )
    await env.ok("DELETE", f"/v1/applications/{theirs}", 409)
