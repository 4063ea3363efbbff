"""Host names of gateways and targets: the DNS cache against a real DNS server on loopback,
and the engine routing by name through the cache.

The DNS server is a small UDP responder built with dnspython (its zone is a dict in the test),
so what is tested is real DNS wire traffic: A, AAAA, SRV (RFC 3263 order), NXDOMAIN, TTLs.
"""

from __future__ import annotations

import asyncio

import dns.asyncresolver
import pytest

from routing.model import (
    Carrier,
    Customer,
    Gateway,
    Number,
    Route,
    RouteCarrier,
    Snapshot,
    Trunk,
    TrunkTarget,
)
from sbc.resolver import DnsCache, provisioned_names
from tests.b2bua_harness import CARRIER, DIALLED, DID, GW_B, PBX, PBX_SDP, Net
from tests.dns_server import DnsServer


@pytest.fixture
def server():
    s = DnsServer()
    yield s
    s.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cache_for(server: DnsServer, clock: Clock | None = None, **kw) -> DnsCache:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = server.port
    resolver.lifetime = 2.0
    return DnsCache(resolver, clock=clock or Clock(), **kw)


def test_a_record_with_a_port_and_an_ip_literal(server) -> None:
    server.zone[("gw.example.net", "A")] = (300, ["127.0.0.4", "127.0.0.5"])
    cache = cache_for(server)
    assert cache.lookup("127.0.0.9", None, "udp") == [("127.0.0.9", 5060)]
    assert cache.lookup("GW.example.net", 5080, "udp") is None  # unknown yet: queued
    assert cache.due() == [("gw.example.net", 5080, "udp")]
    assert asyncio.run(cache.refresh()) == 1
    assert sorted(cache.lookup("gw.example.net", 5080, "udp")) == [("127.0.0.4", 5080), ("127.0.0.5", 5080)]
    assert ("gw.example.net", "SRV") not in server.queries  # a port was given: no SRV (RFC 3263)
    assert cache.due() == []


def test_srv_without_a_port_follows_priority(server) -> None:
    server.zone[("_sip._udp.carrier.example", "SRV")] = (600, ["20 10 5070 backup.carrier.example.", "10 10 5060 main.carrier.example."])
    server.zone[("main.carrier.example", "A")] = (600, ["127.0.0.4"])
    server.zone[("backup.carrier.example", "A")] = (600, ["127.0.0.5"])
    cache = cache_for(server)
    asyncio.run(cache.refresh([("carrier.example", None, "udp")]))
    assert cache.lookup("carrier.example", None, "udp") == [("127.0.0.4", 5060), ("127.0.0.5", 5070)]
    server.zone[("_sip._tcp.carrier.example", "SRV")] = (600, ["10 10 5062 main.carrier.example."])
    asyncio.run(cache.refresh([("carrier.example", None, "tcp")]))
    assert cache.lookup("carrier.example", None, "tcp") == [("127.0.0.4", 5062)]


def test_no_srv_falls_back_to_a_on_the_default_port(server) -> None:
    server.zone[("pbx.example", "A")] = (60, ["127.0.0.3"])
    cache = cache_for(server)
    asyncio.run(cache.refresh([("pbx.example", None, "tls")]))
    assert cache.lookup("pbx.example", None, "tls") == [("127.0.0.3", 5061)]


def test_ttl_expiry_requeues_and_a_failed_refresh_serves_stale(server) -> None:
    clock = Clock()
    server.zone[("gw.example.net", "A")] = (5, ["127.0.0.4"])  # below the minimum TTL
    cache = cache_for(server, clock)
    asyncio.run(cache.refresh([("gw.example.net", 5060, "udp")]))
    clock.now += 29
    assert cache.due() == []  # the TTL was raised to 30 s
    clock.now += 2
    assert cache.due() == [("gw.example.net", 5060, "udp")]
    del server.zone[("gw.example.net", "A")]  # the name disappears
    asyncio.run(cache.refresh())
    assert cache.lookup("gw.example.net", 5060, "udp") == [("127.0.0.4", 5060)]  # stale, still used


def test_unknown_name_is_negative_cached(server) -> None:
    clock = Clock()
    cache = cache_for(server, clock, use_getaddrinfo=False)
    asyncio.run(cache.refresh([("nowhere.invalid", 5060, "udp")]))
    assert cache.lookup("nowhere.invalid", 5060, "udp") is None
    assert cache.due() == []  # remembered as unresolvable: calls do not cause queries
    clock.now += 31
    assert cache.lookup("nowhere.invalid", 5060, "udp") is None
    asked = len(server.queries)
    assert cache.due() == [("nowhere.invalid", 5060, "udp")]
    asyncio.run(cache.refresh())
    assert len(server.queries) > asked


def test_getaddrinfo_fallback_reads_etc_hosts(server) -> None:
    cache = cache_for(server)
    asyncio.run(cache.refresh([("localhost", 5060, "udp")]))
    found = cache.lookup("localhost", 5060, "udp")
    assert found and all(port == 5060 for _, port in found)
    assert any(ip in ("127.0.0.1", "::1") for ip, _ in found)


def test_provisioned_names_lists_gateways_and_targets_that_are_names() -> None:
    snap = Snapshot(
        carriers=(Carrier("c", gateways=(Gateway("gw.example.net", 5080), Gateway("127.0.0.4"))),),
        customers=(Customer("acme", trunks=(Trunk("t", "acme", targets=(
            TrunkTarget("sip:pbx.example;transport=tcp"), TrunkTarget("sip:127.0.0.3:5070"))),)),),
    )  # fmt: skip
    assert provisioned_names(snap) == [("gw.example.net", 5080, "udp"), ("pbx.example", None, "tcp")]


# --- the engine routing by name -------------------------------------------------------------------


def named_snapshot() -> Snapshot:
    trunk = Trunk("pbx", "acme", allowed_cidrs=("127.0.0.3/32",), targets=(TrunkTarget("sip:pbx.example:5070"),))
    return Snapshot(
        carriers=(
            Carrier("telco", inbound_cidrs=("127.0.0.2/32",)),
            Carrier("A", gateways=(Gateway("dead.example", 5060, priority=1), Gateway("gw.example.net", 5060, priority=2))),
        ),
        customers=(Customer("acme", trunks=(trunk,)),),
        numbers=(Number(DID, customer="acme", trunk="pbx"),),
        routes=(Route("1", carriers=(RouteCarrier("A"),)),),
    )  # fmt: skip


def test_engine_sends_to_resolved_addresses_and_fails_over_past_unresolved_names() -> None:
    table = {("gw.example.net", 5060): [("127.0.0.5", 5060)], ("pbx.example", 5070): [("127.0.0.3", 5070)]}
    net = Net(named_snapshot(), resolve=lambda host, port, transport: table.get((host, port)))
    # Outbound: dead.example does not resolve -> recorded, next gateway by its resolved address.
    pbx = net.peer(PBX, "pbx")
    pbx.invite(DIALLED, body=PBX_SDP)
    pbx.take(100)
    invite = net.peer(GW_B, "gw").take_invite().invite  # gw.example.net resolved to 127.0.0.5
    assert invite.uri.startswith("sip:+12125551234@gw.example.net:5060")  # the carrier's own name
    # Inbound: the trunk target is a name too.
    carrier = net.peer(CARRIER, "carrier")
    carrier.invite(DID)
    carrier.take(100)
    assert net.peer(PBX, "pbx").take_invite().invite.uri.startswith(f"sip:{DID}@pbx.example:5070")
    call = net.b2bua.live_calls()[0]
    assert call.attempts[0]["reason"] == "host name does not resolve"
