"""API authentication and authorisation: bearer keys, admin vs customer, revocation, public paths."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from sbc.api.auth import KEY_CACHE_TTL_S, KeyResolver, hash_key
from sbc.store.schema import ApiKeyRow
from tests import api_support
from tests.api_support import ADMIN_KEY, Env, World, bearer

# The shared fixtures, assigned (not imported) so linters see them used.
env = api_support.env
world = api_support.world


async def test_missing_malformed_and_wrong_keys_are_401_with_www_authenticate(env: Env) -> None:
    for headers in (
        {},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer "},
        bearer("nope"),
    ):
        r = await env.client.get("/v1/customers", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"].startswith('Bearer realm="sbc"')
        assert r.json()["status_code"] == 401


async def test_admin_key_works_and_scheme_is_case_insensitive(env: Env) -> None:
    r = await env.client.get("/v1/customers", headers={"Authorization": f"bearer {ADMIN_KEY}"})
    assert r.status_code == 200


async def test_openapi_document_and_docs_page_need_no_key(env: Env) -> None:
    r = await env.client.get("/schema/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert "/v1/numbers/available" in doc["paths"]
    assert doc["components"]["securitySchemes"]["BearerAuth"] == {"type": "http", "scheme": "bearer"}
    page = await env.client.get("/schema")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


async def test_customer_key_gets_403_on_operator_resources(env: Env, world: World) -> None:
    key = world.acme_key
    await env.ok("GET", "/v1/carriers", 403, key=key)
    await env.ok("POST", "/v1/carriers", 403, key=key, json={"name": "mine"})
    await env.ok("GET", "/v1/routes", 403, key=key)
    await env.ok("GET", "/v1/api-keys", 403, key=key)
    await env.ok("POST", "/v1/customers", 403, key=key, json={"name": "another"})
    await env.ok("POST", "/v1/numbers", 403, key=key, json={"numbers": ["+14155550150"]})
    await env.ok("DELETE", "/v1/customers/1", 403, key=key)


async def test_keys_are_stored_as_sha256_only_and_shown_once(env: Env, world: World) -> None:
    async with env.store.session() as session:
        rows = (await session.scalars(select(ApiKeyRow))).all()
    assert len(rows) == 2
    digests = {r.key_sha256 for r in rows}
    assert hashlib.sha256(world.acme_key.encode()).hexdigest() in digests
    listed = await env.ok("GET", "/v1/api-keys")
    assert {k["customer"] for k in listed["items"]} == {"acme", "globex"}
    assert all("key" not in k for k in listed["items"])
    text = str(listed)
    assert world.acme_key not in text and world.globex_key not in text


async def test_revoked_key_stops_working_at_once(env: Env, world: World) -> None:
    await env.ok("GET", "/v1/trunks", key=world.acme_key)
    keys = await env.ok("GET", "/v1/api-keys", params={"customer": "acme"})
    (entry,) = keys["items"]
    await env.ok("DELETE", f"/v1/api-keys/{entry['id']}", 204)
    await env.ok("GET", "/v1/trunks", 401, key=world.acme_key)
    revoked = await env.ok("GET", "/v1/api-keys", params={"revoked": "true"})
    assert [k["id"] for k in revoked["items"]] == [entry["id"]]
    assert revoked["items"][0]["revoked_at"] is not None
    await env.ok("DELETE", f"/v1/api-keys/{entry['id']}", 204)  # again: harmless
    await env.ok("DELETE", "/v1/api-keys/99999", 404)
    # the other customer's key is untouched
    await env.ok("GET", "/v1/trunks", key=world.globex_key)


async def test_stored_admin_key_without_customer_sees_everything(env: Env, world: World) -> None:
    created = await env.ok("POST", "/v1/api-keys", 201, json={"name": "ops"})
    assert created["customer"] is None and created["key"].startswith("sbc_")
    customers = await env.ok("GET", "/v1/customers", key=created["key"])
    assert [c["name"] for c in customers["items"]] == ["acme", "globex"]
    await env.ok("GET", "/v1/carriers", key=created["key"])


async def test_key_for_unknown_customer_is_422_naming_the_field(env: Env) -> None:
    r = await env.client.post(
        "/v1/api-keys", json={"name": "k", "customer": "nobody"}, headers=bearer(ADMIN_KEY)
    )
    assert r.status_code == 422
    assert r.json()["extra"] == [{"key": "customer", "message": "unknown customer 'nobody'"}]


async def test_deleting_a_customer_removes_its_keys(env: Env, world: World) -> None:
    await env.ok("DELETE", "/v1/numbers/+14155550101", 409)  # assigned: release first
    await env.ok("POST", "/v1/numbers/+14155550101/release")
    await env.ok("DELETE", f"/v1/customers/{world.ids['globex']}", 204)
    env.client.app.state.ctx.keys.forget()
    await env.ok("GET", "/v1/trunks", 401, key=world.globex_key)


async def test_resolver_caches_lookups_for_the_ttl(env: Env, world: World) -> None:
    now = [1000.0]
    resolver = KeyResolver(env.store, ADMIN_KEY, clock=lambda: now[0])
    principal = await resolver.resolve(world.acme_key)
    assert principal is not None and principal.customer == "acme" and not principal.is_admin
    async with env.store.session() as session, session.begin():
        row = await session.scalar(select(ApiKeyRow).where(ApiKeyRow.key_sha256 == hash_key(world.acme_key)))
        assert row is not None
        await session.delete(row)
    assert await resolver.resolve(world.acme_key) == principal  # still cached
    now[0] += KEY_CACHE_TTL_S + 0.1
    assert await resolver.resolve(world.acme_key) is None
    admin = await resolver.resolve(ADMIN_KEY)
    assert admin is not None and admin.is_admin
