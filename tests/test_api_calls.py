"""``/v1/calls``: list, get, originate and hang up live calls through a fake CallControl."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sbc.b2bua.control import OriginateError
from tests import api_support
from tests.api_support import ADMIN, Env, World, build_world, make_env

# The shared fixtures, assigned (not imported) so linters see them used.
env = api_support.env
world = api_support.world


async def test_list_and_get_with_isolation(env: Env, world: World) -> None:
    first = env.calls.add()
    env.calls.add(customer="globex", trunk="pbx", direction="outbound", state="ringing")
    third = env.calls.add(state="ringing")
    everything = await env.ok("GET", "/v1/calls")
    assert [c["id"] for c in everything["items"]] == ["call-1", "call-2", "call-3"]
    call = everything["items"][0]
    assert call["setup_at"] == "2023-11-14T22:13:21Z" and call["answered_at"] == "2023-11-14T22:13:23Z"
    assert call["legs"][0] == {
        "side": "a",
        "call_id": "a-1@carrier",
        "peer": "192.0.2.10:5060",
        "remote_uri": "sip:+12125550199@192.0.2.10",
        "state": "confirmed",
    }
    mine = await env.ok("GET", "/v1/calls", key=world.acme_key)
    assert [c["id"] for c in mine["items"]] == [first.id, third.id]
    assert (await env.ok("GET", "/v1/calls", key=world.acme_key, params={"customer": "globex"}))[
        "items"
    ] == []
    ringing = await env.ok("GET", "/v1/calls", params={"state": "ringing", "customer": "acme"})
    assert [c["id"] for c in ringing["items"]] == [third.id]
    outbound = await env.ok("GET", "/v1/calls", params={"direction": "outbound"})
    assert [c["id"] for c in outbound["items"]] == ["call-2"]
    page = await env.ok("GET", "/v1/calls", params={"limit": 2})
    assert len(page["items"]) == 2 and page["next_offset"] == 2
    assert (await env.ok("GET", "/v1/calls/call-2"))["customer"] == "globex"
    await env.ok("GET", "/v1/calls/call-2", 404, key=world.acme_key)
    await env.ok("GET", "/v1/calls/nope", 404)


async def test_originate(env: Env, world: World) -> None:
    call = await env.ok(
        "POST",
        "/v1/calls",
        201,
        key=world.acme_key,
        json={"caller": "14155550100", "callee": "+44 20 7946 0000", "bridge_to": "trunk:acme/pbx"},
    )
    assert call["state"] == "routing" and call["direction"] == "originated" and call["customer"] == "acme"
    assert env.calls.originated == [
        {
            "caller": "+14155550100",
            "callee": "+442079460000",
            "bridge_to": "trunk:acme/pbx",
            "carrier": None,
            "customer": "acme",
        }
    ]
    admin_call = await env.ok(
        "POST",
        "/v1/calls",
        201,
        json={
            "caller": "+14155550100",
            "callee": "+14155550142",
            "bridge_to": "sip:agent@198.51.100.7:5060",
            "carrier": "telco",
        },
    )
    assert admin_call["carrier"] == "telco" and admin_call["customer"] is None


async def test_originate_refusals(env: Env, world: World) -> None:
    acme = world.acme_key
    good = {"caller": "+14155550100", "callee": "+442079460000", "bridge_to": "trunk:acme/pbx"}
    cases = [
        ({**good, "callee": "12"}, "callee"),
        ({**good, "caller": "abc"}, "caller"),
        ({**good, "bridge_to": "trunk:acme/nope"}, "bridge_to"),
        ({**good, "bridge_to": "trunk:globex/pbx"}, "bridge_to"),  # another customer's trunk
        ({**good, "customer": "globex"}, "customer"),
        ({k: v for k, v in good.items() if k != "bridge_to"}, "bridge_to"),
    ]
    for body, key in cases:
        r = await env.client.post("/v1/calls", json=body, headers={"Authorization": f"Bearer {acme}"})
        assert r.status_code == 422, (body, r.text)
        assert key in [e.get("key") for e in r.json()["extra"]], (body, r.json())
    await env.ok("POST", "/v1/calls", 403, key=acme, json={**good, "carrier": "telco"})
    await env.ok("POST", "/v1/calls", 403, key=acme, json={**good, "bridge_to": "sip:10.0.0.1"})
    for body, key in (
        ({**good, "carrier": "nope"}, "carrier"),
        ({**good, "customer": "nobody"}, "customer"),
        ({**good, "bridge_to": "sip:"}, "bridge_to"),
    ):
        r = await env.client.post("/v1/calls", json=body, headers=ADMIN)
        assert r.status_code == 422 and r.json()["extra"][0]["key"] == key, r.text
    assert env.calls.originated == []
    env.calls.refuse["+442079460000"] = OriginateError(503, "no route to +442079460000")
    body = await env.ok("POST", "/v1/calls", 503, key=acme, json=good)
    assert body["detail"] == "no route to +442079460000"
    assert env.calls.local_calls() == []


async def test_hangup(env: Env, world: World) -> None:
    mine = env.calls.add()
    theirs = env.calls.add(customer="globex")
    await env.ok("DELETE", f"/v1/calls/{theirs.id}", 404, key=world.acme_key)
    await env.ok("DELETE", f"/v1/calls/{mine.id}", 204, key=world.acme_key)
    assert env.calls.hung_up == [(mine.id, "acme")]
    await env.ok("DELETE", f"/v1/calls/{mine.id}", 404, key=world.acme_key)
    await env.ok("DELETE", f"/v1/calls/{theirs.id}", 204)
    assert env.calls.hung_up[-1] == (theirs.id, None)
    await env.ok("DELETE", "/v1/calls/" + "x" * 300, 404)


@pytest.fixture
async def env_without_calls(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in make_env(tmp_path, with_calls=False):
        yield e


async def test_without_call_control_calls_are_503(env_without_calls: Env) -> None:
    env = env_without_calls
    await build_world(env)
    await env.ok("GET", "/v1/calls", 503)
    await env.ok(
        "POST",
        "/v1/calls",
        503,
        json={"caller": "+14155550100", "callee": "+442079460000", "bridge_to": "trunk:acme/pbx"},
    )
    await env.ok("DELETE", "/v1/calls/x", 503)
