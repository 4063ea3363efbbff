"""Host names of gateways and trunk targets, resolved ahead of the calls that need them.

The B2BUA is sans-I/O and must never wait on DNS in the middle of a call, so names are resolved
here, on the event loop, into a cache the engine reads synchronously (:meth:`DnsCache.lookup`).
Every name in provisioning is resolved when provisioning loads and again when its TTL runs out;
a name the engine meets that is not cached yet (a Contact, a new target) is queued and resolved
by the next refresh, and that one attempt fails over meanwhile. Stale answers keep being used
while a refresh fails (RFC 8767's "serve stale"): a DNS outage must not take calls down.

RFC 3263 §4.2 order: with a port, A/AAAA only; without one, SRV ``_sip._udp`` / ``_sip._tcp``
/ ``_sips._tcp`` by priority then weight, then A/AAAA of the name on the default port. dnspython
asks the system's nameservers; names it cannot find are tried with ``getaddrinfo`` too, which
reads ``/etc/hosts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

log = logging.getLogger(__name__)

# A TTL below this is raised to it: thousands of calls a second must not each cause a query.
MIN_TTL_S = 30.0
# And above this lowered to it, so a moved gateway is followed within the hour.
MAX_TTL_S = 3600.0
# How long a name that does not resolve is remembered as such before it is asked again.
NEGATIVE_TTL_S = 30.0
# Queries in flight at once during a refresh (a provisioning load may name hundreds of hosts).
MAX_CONCURRENT_QUERIES = 32
# One query's deadline: a slow nameserver delays a refresh, never a call.
QUERY_TIMEOUT_S = 3.0
# Port when neither the URI nor SRV gives one (RFC 3261 §19.1.2).
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
SRV_PREFIX = {"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}

Key = tuple[str, int | None, str]  # (host, port or None, transport)
Lookup = Callable[[str, int | None, str], list[tuple[str, int]] | None]


def is_ip(host: str) -> bool:
    """True for an IPv4 or IPv6 literal (brackets allowed)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class _Entry:
    addresses: list[tuple[str, int]]  # empty: the name does not resolve
    expires: float


class DnsCache:
    """Resolved addresses by (host, port, transport); read synchronously, refreshed by asyncio.

    ``clock`` is monotonic seconds (tests pass a fake one); ``resolver`` a dnspython async
    resolver (the system's by default).
    """

    def __init__(
        self,
        resolver: dns.asyncresolver.Resolver | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        use_getaddrinfo: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self._resolver = resolver
        self._clock = clock
        self._use_getaddrinfo = use_getaddrinfo
        self._rng = rng or random.Random()
        self._entries: dict[Key, _Entry] = {}
        self._wanted: set[Key] = set()

    # -- the engine's side ----------------------------------------------------------------------

    def lookup(self, host: str, port: int | None, transport: str) -> list[tuple[str, int]] | None:
        """Addresses for ``host`` in preference order, or None when not known (yet).

        An IP literal answers at once. A name answers from the cache, stale or not (a refresh
        is queued when stale); an unknown name is queued for the next :meth:`refresh`."""
        transport = transport.lower()
        if is_ip(host):
            return [(host.strip("[]"), port or DEFAULT_PORTS.get(transport, 5060))]
        key = (host.lower(), port, transport)
        entry = self._entries.get(key)
        if entry is None or entry.expires <= self._clock():
            self._wanted.add(key)
        if entry is None or not entry.addresses:
            return None
        return list(entry.addresses)

    # -- the event loop's side --------------------------------------------------------------------

    def due(self) -> list[Key]:
        """Names to resolve now: queued by lookups, or cached and expired."""
        now = self._clock()
        keys = set(self._wanted)
        keys.update(k for k, e in self._entries.items() if e.expires <= now)
        return sorted(keys, key=str)

    def forget_except(self, keep: Iterable[Key]) -> None:
        """Drop cached names no longer provisioned nor recently asked for (bounds the cache)."""
        keep_set = {(h.lower(), p, t.lower()) for h, p, t in keep} | self._wanted
        for key in [k for k in self._entries if k not in keep_set]:
            del self._entries[key]

    async def refresh(self, keys: Iterable[Key] | None = None) -> int:
        """Resolve ``keys`` (default :meth:`due`) concurrently; return how many resolved.

        A failed query keeps a stale answer (if any) for another :data:`NEGATIVE_TTL_S`. Never
        raises for DNS errors."""
        todo = [(h.lower(), p, t.lower()) for h, p, t in (keys if keys is not None else self.due())]
        todo = [k for k in dict.fromkeys(todo) if not is_ip(k[0])]
        if not todo:
            return 0
        gate = asyncio.Semaphore(MAX_CONCURRENT_QUERIES)

        async def one(key: Key) -> bool:
            async with gate:
                try:
                    addresses, ttl = await asyncio.wait_for(self._resolve(*key), QUERY_TIMEOUT_S * 2)
                except (TimeoutError, OSError, dns.exception.DNSException) as e:
                    log.info("DNS: %s did not resolve: %s", key[0], e)
                    addresses, ttl = [], NEGATIVE_TTL_S
                self._wanted.discard(key)
                if not addresses:
                    ttl = NEGATIVE_TTL_S
                old = self._entries.get(key)
                if not addresses and old is not None and old.addresses:
                    addresses = old.addresses  # serve stale (RFC 8767)
                    ttl = NEGATIVE_TTL_S
                self._entries[key] = _Entry(addresses, self._clock() + ttl)
                return bool(addresses)

        results = await asyncio.gather(*(one(k) for k in todo))
        return sum(results)

    async def _resolve(self, host: str, port: int | None, transport: str) -> tuple[list[tuple[str, int]], float]:
        if port is None:
            srv = await self._srv(host, transport)
            if srv:
                return srv
        return await self._addresses(host, port or DEFAULT_PORTS.get(transport, 5060))

    async def _srv(self, host: str, transport: str) -> tuple[list[tuple[str, int]], float] | None:
        try:
            answer = await self._dns().resolve(SRV_PREFIX.get(transport, "_sip._udp.") + host, "SRV")
        except dns.exception.DNSException:
            return None
        records = sorted(answer, key=lambda r: r.priority)
        ordered = []
        for priority in sorted({r.priority for r in records}):
            group = [r for r in records if r.priority == priority]
            while group:  # RFC 2782 weighted order within a priority
                total = sum(r.weight for r in group)
                pick = self._rng.uniform(0, total) if total else 0
                for r in group:
                    pick -= r.weight
                    if pick <= 0 or total == 0:
                        break
                ordered.append(r)
                group.remove(r)
        out: list[tuple[str, int]] = []
        ttl = float(answer.rrset.ttl) if answer.rrset is not None else MIN_TTL_S
        for r in ordered:
            with contextlib.suppress(dns.exception.DNSException, OSError):
                addrs, a_ttl = await self._addresses(r.target.to_text(omit_final_dot=True), r.port)
                out.extend(addrs)
                ttl = min(ttl, a_ttl)
        return (out, _clamp(ttl)) if out else None

    async def _addresses(self, host: str, port: int) -> tuple[list[tuple[str, int]], float]:
        out: list[tuple[str, int]] = []
        ttl = MAX_TTL_S
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._dns().resolve(host, rdtype)
            except dns.exception.DNSException:
                continue
            out.extend((r.address, port) for r in answer)
            if answer.rrset is not None:
                ttl = min(ttl, float(answer.rrset.ttl))
        if not out and self._use_getaddrinfo:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(OSError):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
                out = list(dict.fromkeys((i[4][0], port) for i in infos))
                ttl = MIN_TTL_S
        return out, _clamp(ttl)

    def _dns(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            try:
                self._resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.lifetime = QUERY_TIMEOUT_S
        return self._resolver


def _clamp(ttl: float) -> float:
    return max(MIN_TTL_S, min(MAX_TTL_S, ttl))


def nameservers(servers: list[str]) -> dns.asyncresolver.Resolver | None:
    """A resolver asking ``servers`` (``IP[:PORT]``, all on one port), or None for the system's."""
    if not servers:
        return None
    from .config import parse_nameserver

    parsed = [parse_nameserver(s) for s in servers]
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [ip for ip, _ in parsed]
    resolver.port = parsed[0][1]
    resolver.lifetime = QUERY_TIMEOUT_S
    return resolver


def provisioned_names(snapshot) -> list[Key]:
    """Every (host, port, transport) of gateways and trunk targets that is a name, not an IP."""
    from .b2bua.call import parse_target

    keys: list[Key] = []
    for carrier in snapshot.carriers:
        for gw in carrier.gateways:
            if not is_ip(gw.host):
                keys.append((gw.host.lower(), gw.port, gw.transport.lower()))
    for customer in snapshot.customers:
        for trunk in customer.trunks:
            for target in trunk.targets:
                parsed = parse_target(target.uri)
                if parsed is not None and not is_ip(parsed[0]):
                    keys.append((parsed[0].lower(), parsed[1], parsed[2]))
    return keys

