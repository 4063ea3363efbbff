"""``/v1/customers`` and ``/v1/trunks``: CRUD, write-only credentials, tenant isolation."""

from __future__ import annotations

import pytest

from routing.model import Credential, TrunkTarget
from sbc.api import trunks
from tests import api_support
from tests.api_support import ADMIN, Env, World, bearer

# The shared fixtures, assigned (not imported) so linters see them used.
env = api_support.env
world = api_support.world


async def test_customer_crud(env: Env) -> None:
    created = await env.ok("POST", "/v1/customers", 201, json={"name": "acme", "max_calls": 10})
    assert created == {"id": created["id"], "name": "acme", "max_calls": 10, "max_cps": None}
    await env.ok("POST", "/v1/customers", 409, json={"name": "acme"})
    patched = await env.ok("PATCH", f"/v1/customers/{created['id']}", json={"max_cps": 2.5})
    assert patched["max_calls"] == 10 and patched["max_cps"] == 2.5
    r = await env.client.patch(f"/v1/customers/{created['id']}", json={"name": "renamed"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["extra"][0]["key"] == "name"  # names are immutable
    (customer,) = (await env.store.load_snapshot()).customers
    assert (customer.name, customer.max_calls, customer.max_cps) == ("acme", 10, 2.5)
    await env.ok("DELETE", f"/v1/customers/{created['id']}", 204)
    await env.ok("GET", f"/v1/customers/{created['id']}", 404)
    await env.ok("PATCH", f"/v1/customers/{created['id']}", 404, json={"max_cps": 1})
    await env.ok("DELETE", f"/v1/customers/{created['id']}", 404)


async def test_customer_list_filter_and_pages(env: Env) -> None:
    for name in ("delta", "alpha", "charlie", "bravo"):
        await env.ok("POST", "/v1/customers", 201, json={"name": name})
    page = await env.ok("GET", "/v1/customers", params={"limit": 3})
    assert [c["name"] for c in page["items"]] == ["alpha", "bravo", "charlie"] and page["next_offset"] == 3
    page = await env.ok("GET", "/v1/customers", params={"limit": 3, "offset": 3})
    assert [c["name"] for c in page["items"]] == ["delta"] and page["next_offset"] is None
    only = await env.ok("GET", "/v1/customers", params={"name": "bravo"})
    assert [c["name"] for c in only["items"]] == ["bravo"]


async def test_customer_key_sees_only_itself(env: Env, world: World) -> None:
    mine = await env.ok("GET", "/v1/customers", key=world.acme_key)
    assert [c["name"] for c in mine["items"]] == ["acme"]
    await env.ok("GET", f"/v1/customers/{world.ids['acme']}", key=world.acme_key)
    await env.ok("GET", f"/v1/customers/{world.ids['globex']}", 404, key=world.acme_key)
    await env.ok(
        "PATCH", f"/v1/customers/{world.ids['acme']}", 403, key=world.acme_key, json={"max_calls": 1}
    )


async def test_customer_with_numbers_cannot_be_deleted(env: Env, world: World) -> None:
    body = await env.ok("DELETE", f"/v1/customers/{world.ids['acme']}", 409)
    assert "number" in body["detail"]
    assert [c.name for c in (await env.store.load_snapshot()).customers] == ["acme", "globex"]


async def test_trunk_crud_and_credentials_are_write_only(env: Env, world: World) -> None:
    body = {
        "customer": "acme",
        "name": "branch",
        "credentials": [{"username": "acme-branch", "password": "very-secret-pw"}],
        "targets": [{"uri": "sip:pbx.acme.example:5080;transport=tcp", "priority": 5}],
        "max_calls": 4,
    }
    created = await env.ok("POST", "/v1/trunks", 201, json=body)
    assert created["credentials"] == [{"username": "acme-branch"}]
    assert "very-secret-pw" not in str(created)
    fetched = await env.ok("GET", f"/v1/trunks/{created['id']}")
    assert fetched == created and "password" not in str(fetched)
    listed = await env.ok("GET", "/v1/trunks", params={"customer": "acme"})
    assert [t["name"] for t in listed["items"]] == ["branch", "pbx"]
    assert "password" not in str(listed)
    trunk = next(
        t for c in (await env.store.load_snapshot()).customers for t in c.trunks if t.name == "branch"
    )
    assert trunk.credentials == (Credential("acme-branch", "very-secret-pw"),)
    assert trunk.targets == (TrunkTarget("sip:pbx.acme.example:5080;transport=tcp", 5, 100),)
    patched = await env.ok(
        "PATCH",
        f"/v1/trunks/{created['id']}",
        json={"credentials": [{"username": "acme-branch", "password": "another-secret"}], "max_calls": None},
    )
    assert patched["credentials"] == [{"username": "acme-branch"}] and patched["max_calls"] is None
    trunk = next(
        t for c in (await env.store.load_snapshot()).customers for t in c.trunks if t.name == "branch"
    )
    assert trunk.credentials == (Credential("acme-branch", "another-secret"),)
    await env.ok("DELETE", f"/v1/trunks/{created['id']}", 204)
    await env.ok("GET", f"/v1/trunks/{created['id']}", 404)


async def test_trunk_conflicts_and_validation(env: Env, world: World) -> None:
    await env.ok("POST", "/v1/trunks", 409, json={"customer": "acme", "name": "pbx"})
    body = await env.ok(
        "POST",
        "/v1/trunks",
        409,
        json={
            "customer": "acme",
            "name": "b2",
            "credentials": [{"username": "globex-pbx", "password": "long-enough"}],
        },
    )
    assert "globex-pbx" in body["detail"]
    cases = [
        ({"customer": "acme", "name": "t", "targets": [{"uri": "http://x"}]}, "targets.0.uri"),
        (
            {"customer": "acme", "name": "t", "credentials": [{"username": "u", "password": "short"}]},
            "credentials.0.password",
        ),
        ({"customer": "acme", "name": "t", "allowed_cidrs": ["10.0.0.1/8"]}, "allowed_cidrs.0"),
        ({"customer": "nobody", "name": "t"}, "customer"),
        ({"name": "t"}, "customer"),  # an admin must say whose trunk it is
        (
            {
                "customer": "acme",
                "name": "t",
                "credentials": [{"username": "u1", "password": "long-enough"}] * 2,
            },
            "credentials.1.username",
        ),
    ]
    for payload, key in cases:
        r = await env.client.post("/v1/trunks", json=payload, headers=ADMIN)
        assert r.status_code == 422, (payload, r.text)
        assert key in [e.get("key") for e in r.json()["extra"]], r.json()
        assert "short" not in r.text or key != "credentials.0.password"


async def test_trunk_with_numbers_cannot_be_deleted(env: Env, world: World) -> None:
    await env.ok("DELETE", f"/v1/trunks/{world.ids['acme/pbx']}", 409)


async def test_customer_key_manages_own_trunks_only(env: Env, world: World) -> None:
    acme, globex = world.acme_key, world.globex_key
    created = await env.ok(
        "POST", "/v1/trunks", 201, key=acme, json={"name": "mine", "targets": [{"uri": "sip:198.51.100.9"}]}
    )
    assert created["customer"] == "acme"
    # the other customer cannot see, change or delete it: 404, as for an id that does not exist
    await env.ok("GET", f"/v1/trunks/{created['id']}", 404, key=globex)
    await env.ok("PATCH", f"/v1/trunks/{created['id']}", 404, key=globex, json={"max_calls": 1})
    await env.ok("DELETE", f"/v1/trunks/{created['id']}", 404, key=globex)
    theirs = await env.ok("GET", "/v1/trunks", key=globex)
    assert [(t["customer"], t["name"]) for t in theirs["items"]] == [("globex", "pbx")]
    assert (await env.ok("GET", "/v1/trunks", key=globex, params={"customer": "acme"}))["items"] == []
    # nor create one for acme
    r = await env.client.post("/v1/trunks", json={"customer": "acme", "name": "x"}, headers=bearer(globex))
    assert r.status_code == 422 and r.json()["extra"] == [
        {"key": "customer", "message": "unknown customer 'acme'"}
    ]
    # binding source addresses is the operator's call
    await env.ok("POST", "/v1/trunks", 403, key=acme, json={"name": "acl", "allowed_cidrs": ["192.0.2.1/32"]})
    await env.ok("PATCH", f"/v1/trunks/{created['id']}", 403, key=acme, json={"allowed_cidrs": []})
    await env.ok("PATCH", f"/v1/trunks/{created['id']}", key=acme, json={"max_cps": 1})
    await env.ok("DELETE", f"/v1/trunks/{created['id']}", 204, key=acme)


async def test_failed_write_leaves_store_and_version_untouched(env: Env, world: World) -> None:
    before = await env.store.load_snapshot()
    await env.ok(
        "PATCH",
        f"/v1/trunks/{world.ids['acme/pbx']}",
        409,
        json={"credentials": [{"username": "globex-pbx", "password": "long-enough"}], "max_calls": 7},
    )
    after = await env.store.load_snapshot()
    assert after == before and after.version == before.version


async def test_store_rule_refusing_mid_transaction_is_409_and_rolls_back(
    env: Env, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handlers' own checks skipped: the database's unique rule refuses the credential at
    flush, after max_calls was already changed in the transaction; nothing of it remains."""

    async def no_check(*_args: object) -> None:
        return None

    monkeypatch.setattr(trunks, "_check_usernames_free", no_check)
    before = await env.store.load_snapshot()
    body = await env.ok(
        "PATCH",
        f"/v1/trunks/{world.ids['acme/pbx']}",
        409,
        json={"max_calls": 7, "credentials": [{"username": "globex-pbx", "password": "long-enough"}]},
    )
    assert body["detail"].startswith("already exists")
    assert await env.store.load_snapshot() == before
