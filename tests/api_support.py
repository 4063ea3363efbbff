"""Shared pieces of the API tests: a real store on a temp SQLite file, the app around it, a fake
call control and a fake gateway-health source, and a small provisioned world of two customers.

Every test talks HTTP to the litestar app through its AsyncTestClient (no socket), with the
same store a running SBC would read, so what a test writes through the API it can check in the
routing snapshot.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from routing.model import Gateway
from sbc.api.app import create_api
from sbc.api.gateway_health import GatewayState
from sbc.b2bua.control import LiveCall, LiveLeg, OriginateError
from sbc.store.store import Store

ADMIN_KEY = "test-admin-key-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def bearer(key: str) -> dict[str, str]:
    """Headers authenticating with ``key``."""
    return {"Authorization": f"Bearer {key}"}


@dataclass
class FakeCalls:
    """A CallControl that keeps calls in a dict; originate refuses callees listed in ``refuse``."""

    calls: dict[str, LiveCall] = field(default_factory=dict)
    refuse: dict[str, OriginateError] = field(default_factory=dict)
    originated: list[dict[str, Any]] = field(default_factory=list)
    hung_up: list[tuple[str, str | None]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def add(self, **kw: Any) -> LiveCall:
        """Put a live call in place (defaults: an answered inbound call of acme)."""
        n = next(self._ids)
        values: dict[str, Any] = {
            "id": f"call-{n}",
            "direction": "inbound",
            "state": "answered",
            "caller": "+12125550199",
            "callee": "+14155550100",
            "customer": "acme",
            "carrier": "telco",
            "trunk": "pbx",
            "gateway": "192.0.2.10:5060",
            "setup_at": 1_700_000_000.0 + n,
            "answered_at": 1_700_000_002.0 + n,
            "legs": (
                LiveLeg("a", f"a-{n}@carrier", "192.0.2.10:5060", "sip:+12125550199@192.0.2.10", "confirmed"),
                LiveLeg("b", f"b-{n}@sbc", "198.51.100.7:5060", "sip:+14155550100@198.51.100.7", "confirmed"),
            ),
            "attempts": ({"carrier": "telco", "gateway": "192.0.2.10:5060", "code": 200},),
            "media": {"a": {"packets": 100}},
        }
        values.update(kw)
        call = LiveCall(**values)
        self.calls[call.id] = call
        return call

    def local_calls(self, customer: str | None = None) -> list[LiveCall]:
        """What :meth:`live_calls` answers, without awaiting (for assertions)."""
        found = [c for c in self.calls.values() if customer is None or c.customer == customer]
        return sorted(found, key=lambda c: c.setup_at)

    async def live_calls(self, customer: str | None = None) -> list[LiveCall]:
        return self.local_calls(customer)

    async def originate(
        self,
        *,
        caller: str,
        callee: str,
        bridge_to: str,
        carrier: str | None = None,
        customer: str | None = None,
    ) -> LiveCall:
        self.originated.append(
            {
                "caller": caller,
                "callee": callee,
                "bridge_to": bridge_to,
                "carrier": carrier,
                "customer": customer,
            }
        )
        if callee in self.refuse:
            raise self.refuse[callee]
        call = self.add(
            direction="originated",
            state="routing",
            caller=caller,
            callee=callee,
            customer=customer,
            carrier=carrier,
            trunk=None,
            gateway=None,
            answered_at=None,
            legs=(),
            attempts=(),
            media={},
        )
        return call

    async def hangup(self, call_id: str, customer: str | None = None) -> bool:
        call = self.calls.get(call_id)
        if call is None or (customer is not None and call.customer != customer):
            return False
        self.hung_up.append((call_id, customer))
        del self.calls[call_id]
        return True


@dataclass
class FakeHealth:
    """Gateway health by (carrier, host, port); gateways not listed are not probed."""

    states: dict[tuple[str, str, int], GatewayState] = field(default_factory=dict)

    def gateway_state(self, carrier: str, gateway: Gateway) -> GatewayState | None:
        return self.states.get((carrier, gateway.host, gateway.port))


@dataclass
class Env:
    """What a test gets: the client, the store and the fakes."""

    client: AsyncTestClient[Any]
    store: Store
    calls: FakeCalls
    health: FakeHealth

    async def ok(self, method: str, path: str, status: int = 200, key: str = ADMIN_KEY, **kw: Any) -> Any:
        """Send a request and check its status; return the JSON body (None for no content)."""
        response = await self.client.request(method, path, headers=bearer(key), **kw)
        assert response.status_code == status, (method, path, response.status_code, response.text)
        return response.json() if response.content else None


async def make_env(tmp_path: Path, *, with_calls: bool = True) -> AsyncIterator[Env]:
    """An app on a fresh store; yields the :class:`Env`, closes everything afterwards."""
    store = await Store.open(f"sqlite:///{tmp_path / 'api.db'}")
    calls, health = FakeCalls(), FakeHealth()
    app = create_api(store, admin_key=ADMIN_KEY, calls=calls if with_calls else None, health=health)
    try:
        async with AsyncTestClient(app) as client:
            yield Env(client=client, store=store, calls=calls, health=health)
    finally:
        await store.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async for e in make_env(tmp_path):
        yield e


@dataclass
class World:
    """Two customers with a trunk, an application and a key each, one carrier, 20 numbers."""

    acme_key: str
    globex_key: str
    ids: dict[str, int]


async def build_world(env: Env) -> World:
    """Provision the world through the API itself (admin key)."""
    ids: dict[str, int] = {}
    carrier = await env.ok(
        "POST",
        "/v1/carriers",
        201,
        json={"name": "telco", "gateways": [{"host": "192.0.2.10"}], "inbound_cidrs": ["192.0.2.0/28"]},
    )
    ids["telco"] = carrier["id"]
    keys: dict[str, str] = {}
    for name, net in (("acme", "198.51.100.0/29"), ("globex", "203.0.113.0/29")):
        ids[name] = (await env.ok("POST", "/v1/customers", 201, json={"name": name}))["id"]
        trunk = await env.ok(
            "POST",
            "/v1/trunks",
            201,
            json={
                "customer": name,
                "name": "pbx",
                "allowed_cidrs": [net],
                "credentials": [{"username": f"{name}-pbx", "password": "long-enough-pw"}],
                "targets": [{"uri": f"sip:{net.split('/')[0]}:5060"}],
            },
        )
        ids[f"{name}/pbx"] = trunk["id"]
        app = await env.ok(
            "POST",
            "/v1/applications",
            201,
            json={"customer": name, "name": "ivr", "call_hook": f"https://{name}.example.com/hook"},
        )
        ids[f"{name}/ivr"] = app["id"]
        keys[name] = (await env.ok("POST", "/v1/api-keys", 201, json={"name": "main", "customer": name}))[
            "key"
        ]
    await env.ok(
        "POST", "/v1/numbers", 201, json={"range": {"first": "+14155550100", "last": "+14155550119"}}
    )
    await env.ok("POST", "/v1/numbers/+14155550100/purchase", json={"customer": "acme", "trunk": "pbx"})
    await env.ok("POST", "/v1/numbers/+14155550101/purchase", json={"customer": "globex", "trunk": "pbx"})
    return World(acme_key=keys["acme"], globex_key=keys["globex"], ids=ids)


@pytest.fixture
async def world(env: Env) -> World:
    return await build_world(env)


def utc(text: str) -> datetime:
    """An aware datetime from ISO text (tests write times with their offset)."""
    return datetime.fromisoformat(text)


__all__ = [
    "ADMIN",
    "ADMIN_KEY",
    "Env",
    "FakeCalls",
    "FakeHealth",
    "World",
    "bearer",
    "build_world",
    "env",
    "make_env",
    "utc",
    "world",
]
