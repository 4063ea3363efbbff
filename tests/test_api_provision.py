"""The provision file and the API on one store: numbers naming API-made applications, media
endpoints in the file, applications and keys left alone by the file, numbers replaced by it."""

from __future__ import annotations

from typing import Any

import pytest

from routing.model import Number
from sbc.provision import ProvisionError, apply_provision, parse_provision
from tests import api_support
from tests.api_support import Env

# The shared fixtures, assigned (not imported) so linters see them used.
env = api_support.env


def doc(numbers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "carriers": [],
        "customers": [{"name": "acme", "trunks": [{"name": "pbx"}]}, {"name": "globex"}],
        "numbers": numbers,
        "routes": [],
    }


async def test_file_numbers_can_name_api_applications_and_media_endpoints(env: Env) -> None:
    await apply_provision(env.store, doc([]))
    await env.ok(
        "POST", "/v1/applications", 201, json={"customer": "acme", "name": "ivr", "flow": [{"action": "say"}]}
    )
    key = await env.ok("POST", "/v1/api-keys", 201, json={"name": "k", "customer": "acme"})
    report = await apply_provision(
        env.store,
        doc(
            [
                {"e164": "+14155550100", "customer": "acme", "trunk": "pbx"},
                {"e164": "+14155550101", "customer": "acme", "application": "ivr"},
                {"e164": "+14155550102", "customer": "globex", "media_endpoint": "wss://ai.example/s"},
                {"e164": "+14155550103"},
            ]
        ),
    )
    assert report.created["numbers"] == 4
    numbers = {n.e164: n for n in (await env.store.load_snapshot()).numbers}
    assert numbers["+14155550101"] == Number("+14155550101", customer="acme", application="ivr")
    assert numbers["+14155550102"] == Number(
        "+14155550102", customer="globex", media_endpoint="wss://ai.example/s"
    )
    # applications and keys are not in the file: applying it left them alone
    await env.ok("GET", "/v1/applications", key=key["key"])
    listed = await env.ok("GET", "/v1/numbers/+14155550101", key=key["key"])
    assert listed["application"] == "ivr"
    # the same file again changes nothing
    again = await apply_provision(
        env.store,
        doc(
            [
                {"e164": "+14155550100", "customer": "acme", "trunk": "pbx"},
                {"e164": "+14155550101", "customer": "acme", "application": "ivr"},
                {"e164": "+14155550102", "customer": "globex", "media_endpoint": "wss://ai.example/s"},
                {"e164": "+14155550103"},
            ]
        ),
    )
    assert not again.changed


async def test_file_refuses_unknown_applications_and_bad_destinations(env: Env) -> None:
    await apply_provision(env.store, doc([]))
    version = await env.store.version()
    with pytest.raises(ProvisionError) as info:
        await apply_provision(
            env.store, doc([{"e164": "+14155550100", "customer": "acme", "application": "nope"}])
        )
    assert str(info.value).startswith("numbers[0].application: customer 'acme' has no application 'nope'")
    assert await env.store.version() == version
    cases = [
        (
            {"e164": "+14155550100", "customer": "acme", "trunk": "pbx", "application": "x"},
            "numbers[0].application",
        ),
        ({"e164": "+14155550100", "media_endpoint": "wss://ai.example/"}, "numbers[0].media_endpoint"),
        (
            {"e164": "+14155550100", "customer": "acme", "media_endpoint": "http://ai.example/"},
            "numbers[0].media_endpoint",
        ),
    ]
    for number, path in cases:
        with pytest.raises(ProvisionError) as info:
            parse_provision(doc([number]))
        assert any(issue.path == path for issue in info.value.issues), info.value.issues


async def test_file_replaces_numbers_made_through_the_api(env: Env) -> None:
    """The documented rule: a file is the whole truth for numbers, the API's inventory included."""
    await apply_provision(env.store, doc([]))
    await env.ok(
        "POST", "/v1/numbers", 201, json={"range": {"first": "+14155550100", "last": "+14155550109"}}
    )
    await env.ok("POST", "/v1/numbers/+14155550100/purchase", json={"customer": "acme", "trunk": "pbx"})
    report = await apply_provision(
        env.store, doc([{"e164": "+14155550100", "customer": "acme", "trunk": "pbx"}])
    )
    assert report.deleted["numbers"] == 9
    assert [n.e164 for n in (await env.store.load_snapshot()).numbers] == ["+14155550100"]


async def test_deleting_a_customer_in_the_file_takes_its_applications(env: Env) -> None:
    await apply_provision(env.store, doc([]))
    await env.ok(
        "POST",
        "/v1/applications",
        201,
        json={"customer": "globex", "name": "ivr", "flow": [{"action": "say"}]},
    )
    without_globex = doc([])
    without_globex["customers"] = [{"name": "acme", "trunks": [{"name": "pbx"}]}]
    await apply_provision(env.store, without_globex)
    assert (await env.store.load_snapshot()).applications == ()
