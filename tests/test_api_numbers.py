"""``/v1/numbers``: inventory by list and range, search, purchase, reassign, release, isolation."""

from __future__ import annotations

from routing.model import Number
from tests import api_support
from tests.api_support import ADMIN, Env, World, bearer

# The shared fixtures, assigned (not imported) so linters see them used.
env = api_support.env
world = api_support.world


async def numbers_in_snapshot(env: Env) -> dict[str, Number]:
    return {n.e164: n for n in (await env.store.load_snapshot()).numbers}


async def test_inventory_by_list_normalises_spellings(env: Env) -> None:
    added = await env.ok(
        "POST",
        "/v1/numbers",
        201,
        json={
            "numbers": [
                "14155550100",
                "+1 415 555 0101",
                "(415) 555-0102",
                "+44 20 7946 0000",
                "00493012345678",
            ]
        },
    )
    assert added == {"added": 5, "first": "+14155550100", "last": "+493012345678"}
    snapshot = await numbers_in_snapshot(env)
    assert sorted(snapshot) == [
        "+14155550100",
        "+14155550101",
        "+14155550102",
        "+442079460000",
        "+493012345678",
    ]
    assert all(n.customer is None for n in snapshot.values())


async def test_inventory_by_range(env: Env) -> None:
    added = await env.ok(
        "POST", "/v1/numbers", 201, json={"range": {"first": "+14155550100", "last": "14155550199"}}
    )
    assert added == {"added": 100, "first": "+14155550100", "last": "+14155550199"}
    page = await env.ok("GET", "/v1/numbers", params={"limit": 3, "offset": 98})
    assert [n["e164"] for n in page["items"]] == ["+14155550198", "+14155550199"]
    assert page["next_offset"] is None
    assert page["items"][0] == {
        "e164": "+14155550198",
        "status": "available",
        "customer": None,
        "trunk": None,
        "application": None,
        "media_endpoint": None,
    }


async def test_bad_inventory_requests_are_422_naming_the_field(env: Env) -> None:
    cases = [
        ({"numbers": ["12345"]}, "numbers.0"),
        ({"numbers": ["+1 415 555 0100", "+14155550100"]}, "numbers.1"),
        ({"numbers": ["+14155550100", "not a number"]}, "numbers.1"),
        ({"numbers": [14155550100]}, "numbers.0"),
        ({"numbers": []}, "numbers"),
        ({}, "numbers"),
        (
            {"numbers": ["+14155550100"], "range": {"first": "+14155550100", "last": "+14155550101"}},
            "numbers",
        ),
        ({"range": {"first": "+14155550199", "last": "+14155550100"}}, "range.last"),
        ({"range": {"first": "+14155550100", "last": "+141555501000"}}, "range.last"),
        ({"range": {"first": "+14155550100", "last": "+14155650100"}}, "range.last"),  # > 100,000
        ({"range": {"first": "+14155550100"}}, "range.last"),
    ]
    for body, key in cases:
        r = await env.client.post("/v1/numbers", json=body, headers=ADMIN)
        assert r.status_code == 422, (body, r.text)
        assert key in [e.get("key") for e in r.json()["extra"]], (body, r.json())
    assert await numbers_in_snapshot(env) == {}


async def test_duplicate_inventory_is_409_and_adds_nothing(env: Env) -> None:
    await env.ok("POST", "/v1/numbers", 201, json={"numbers": ["+14155550150"]})
    version = await env.store.version()
    body = await env.ok(
        "POST", "/v1/numbers", 409, json={"range": {"first": "+14155550100", "last": "+14155550199"}}
    )
    assert "+14155550150" in body["detail"]
    assert list(await numbers_in_snapshot(env)) == ["+14155550150"]
    assert await env.store.version() == version


async def test_search_available_by_prefix_and_pattern(env: Env, world: World) -> None:
    await env.ok(
        "POST", "/v1/numbers", 201, json={"numbers": ["+442079460000", "+442079465550", "+14165550100"]}
    )

    async def search(**params: object) -> list[str]:
        page = await env.ok(
            "GET", "/v1/numbers/available", params={"limit": 1000, **params}, key=world.acme_key
        )
        return [n["e164"] for n in page["items"]]

    # +14155550100 and +14155550101 are sold in the world; 102..119 are left
    assert await search(prefix="1415555010") == [f"+1415555010{i}" for i in range(2, 10)]
    assert await search(prefix="+1415555011") == [f"+1415555011{i}" for i in range(10)]
    assert (await search(pattern="*555*"))[:3] == ["+14155550102", "+14155550103", "+14155550104"]
    assert await search(pattern="*5550*") == [
        *(f"+141555501{i:02d}" for i in range(2, 20)),
        "+14165550100",
        "+442079465550",
    ]
    assert await search(pattern="+44*") == ["+442079460000", "+442079465550"]
    assert await search(pattern="4420794xxxx0") == ["+442079460000", "+442079465550"]
    assert await search(pattern="1416xxxxxxx") == ["+14165550100"]
    assert await search(prefix="1415", pattern="*9") == ["+14155550109", "+14155550119"]
    assert await search(prefix="99") == []
    for params, key in (
        ({"prefix": "14a"}, "prefix"),
        ({"pattern": "1%"}, "pattern"),
        ({"pattern": ""}, "pattern"),
    ):
        r = await env.client.get("/v1/numbers/available", params=params, headers=bearer(world.acme_key))
        assert r.status_code == 422 and r.json()["extra"][0]["key"] == key, r.text
    page = await env.ok("GET", "/v1/numbers/available", params={"prefix": "1415", "limit": 5})
    assert len(page["items"]) == 5 and page["next_offset"] == 5


async def test_purchase_to_trunk_application_and_media_endpoint(env: Env, world: World) -> None:
    version = await env.store.version()
    sold = await env.ok(
        "POST", "/v1/numbers/14155550110/purchase", key=world.acme_key, json={"application": "ivr"}
    )
    assert sold == {
        "e164": "+14155550110",
        "status": "assigned",
        "customer": "acme",
        "trunk": None,
        "application": "ivr",
        "media_endpoint": None,
    }
    await env.ok(
        "POST",
        "/v1/numbers/+14155550111/purchase",
        json={"customer": "globex", "media_endpoint": "wss://ai.globex.example/stream?token=abc"},
    )
    await env.ok("POST", "/v1/numbers/+14155550112/purchase", key=world.globex_key, json={"trunk": "pbx"})
    assert await env.store.version() == version + 3
    snapshot = await numbers_in_snapshot(env)
    assert snapshot["+14155550110"] == Number("+14155550110", customer="acme", application="ivr")
    assert snapshot["+14155550111"] == Number(
        "+14155550111", customer="globex", media_endpoint="wss://ai.globex.example/stream?token=abc"
    )
    assert snapshot["+14155550112"] == Number("+14155550112", customer="globex", trunk="pbx")
    apps = {(a.customer, a.name): a for a in (await env.store.load_snapshot()).applications}
    assert apps[("acme", "ivr")].call_hook == "https://acme.example.com/hook"


async def test_purchase_errors(env: Env, world: World) -> None:
    acme = world.acme_key
    await env.ok("POST", "/v1/numbers/+14155550100/purchase", 409, key=acme, json={"trunk": "pbx"})  # sold
    await env.ok("POST", "/v1/numbers/+14155559999/purchase", 404, key=acme, json={"trunk": "pbx"})
    cases = [
        ("/v1/numbers/+14155550110/purchase", {}, "trunk"),
        ("/v1/numbers/+14155550110/purchase", {"trunk": "pbx", "application": "ivr"}, "application"),
        ("/v1/numbers/+14155550110/purchase", {"trunk": "nope"}, "trunk"),
        ("/v1/numbers/+14155550110/purchase", {"application": "nope"}, "application"),
        ("/v1/numbers/+14155550110/purchase", {"media_endpoint": "http://ai.example/"}, "media_endpoint"),
        (
            "/v1/numbers/+14155550110/purchase",
            {"media_endpoint": "wss://user:pw@ai.example/"},
            "media_endpoint",
        ),
        ("/v1/numbers/+14155550110/purchase", {"customer": "globex", "trunk": "pbx"}, "customer"),
        ("/v1/numbers/12/purchase", {"trunk": "pbx"}, "e164"),
    ]
    for path, body, key in cases:
        r = await env.client.post(path, json=body, headers=bearer(acme))
        assert r.status_code == 422, (path, body, r.text)
        assert key in [e.get("key") for e in r.json()["extra"]], (body, r.json())
    # an admin must say which customer buys
    r = await env.client.post("/v1/numbers/+14155550110/purchase", json={"trunk": "pbx"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["extra"][0]["key"] == "customer"
    assert (await numbers_in_snapshot(env))["+14155550110"].customer is None


async def test_reassign_and_release(env: Env, world: World) -> None:
    acme = world.acme_key
    moved = await env.ok("PATCH", "/v1/numbers/+14155550100", key=acme, json={"application": "ivr"})
    assert (moved["trunk"], moved["application"]) == (None, "ivr")
    moved = await env.ok(
        "PATCH", "/v1/numbers/14155550100", key=acme, json={"media_endpoint": "quic://ai.example:4433"}
    )
    assert moved["media_endpoint"] == "quic://ai.example:4433" and moved["application"] is None
    # only an admin moves a number to another customer
    r = await env.client.patch(
        "/v1/numbers/+14155550100", json={"customer": "globex", "trunk": "pbx"}, headers=bearer(acme)
    )
    assert r.status_code == 422
    moved = await env.ok("PATCH", "/v1/numbers/+14155550100", json={"customer": "globex", "trunk": "pbx"})
    assert (moved["customer"], moved["trunk"]) == ("globex", "pbx")
    await env.ok("GET", "/v1/numbers/+14155550100", 404, key=acme)
    moved = await env.ok(
        "PATCH", "/v1/numbers/+14155550100", json={"application": "ivr"}
    )  # admin, same customer
    assert (moved["customer"], moved["application"]) == ("globex", "ivr")
    released = await env.ok("POST", "/v1/numbers/+14155550100/release", key=world.globex_key)
    assert released["status"] == "available" and released["customer"] is None
    await env.ok("POST", "/v1/numbers/+14155550100/release", 404, key=world.globex_key)
    await env.ok("POST", "/v1/numbers/+14155550100/release", 409)  # admin: already in the inventory
    await env.ok("PATCH", "/v1/numbers/+14155550100", 404, json={"trunk": "pbx"})  # not assigned
    assert (await numbers_in_snapshot(env))["+14155550100"] == Number("+14155550100")


async def test_delete_from_inventory(env: Env, world: World) -> None:
    await env.ok("DELETE", "/v1/numbers/+14155550100", 409)  # assigned
    await env.ok("DELETE", "/v1/numbers/+14155550119", 204)
    await env.ok("DELETE", "/v1/numbers/+14155550119", 404)
    await env.ok("DELETE", "/v1/numbers/+14155550118", 403, key=world.acme_key)
    assert "+14155550119" not in await numbers_in_snapshot(env)


async def test_tenant_isolation(env: Env, world: World) -> None:
    acme, globex = world.acme_key, world.globex_key
    mine = await env.ok("GET", "/v1/numbers", key=acme)
    assert [n["e164"] for n in mine["items"]] == ["+14155550100"]
    assert (await env.ok("GET", "/v1/numbers", key=acme, params={"customer": "globex"}))["items"] == []
    assert (await env.ok("GET", "/v1/numbers", key=acme, params={"status": "available"}))["items"] == []
    await env.ok("GET", "/v1/numbers/+14155550100", key=acme)
    await env.ok("GET", "/v1/numbers/+14155550101", 404, key=acme)  # globex's
    await env.ok("GET", "/v1/numbers/+14155550110", 404, key=acme)  # in the inventory
    await env.ok("PATCH", "/v1/numbers/+14155550101", 404, key=acme, json={"trunk": "pbx"})
    await env.ok("POST", "/v1/numbers/+14155550101/release", 404, key=acme)
    await env.ok("POST", "/v1/numbers/+14155550101/purchase", 409, key=acme, json={"trunk": "pbx"})
    # globex's application and trunk are unknown to acme's purchases
    r = await env.client.post(
        "/v1/numbers/+14155550110/purchase",
        json={"customer": "globex", "application": "ivr"},
        headers=bearer(acme),
    )
    assert r.status_code == 422
    assert (await numbers_in_snapshot(env))["+14155550101"].customer == "globex"
    theirs = await env.ok("GET", "/v1/numbers", key=globex)
    assert [n["e164"] for n in theirs["items"]] == ["+14155550101"]


async def test_admin_list_filters(env: Env, world: World) -> None:
    await env.ok("POST", "/v1/numbers/+14155550102/purchase", json={"customer": "acme", "application": "ivr"})

    async def listed(**params: object) -> list[str]:
        return [
            n["e164"] for n in (await env.ok("GET", "/v1/numbers", params={"limit": 1000, **params}))["items"]
        ]

    assert await listed(status="assigned") == ["+14155550100", "+14155550101", "+14155550102"]
    assert len(await listed(status="available")) == 17
    assert await listed(customer="acme") == ["+14155550100", "+14155550102"]
    assert await listed(customer="acme", trunk="pbx") == ["+14155550100"]
    assert await listed(application="ivr") == ["+14155550102"]
    assert await listed(customer="nobody") == []
    assert await listed(pattern="*1") == ["+14155550101", "+14155550111"]
    r = await env.client.get("/v1/numbers", params={"status": "sold"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["extra"][0]["key"] == "status"
