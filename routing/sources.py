"""Who is calling: classify an INVITE's source address (carrier or customer trunk) and digest user.

This runs for every INVITE, so the address lookup must not scan every provisioned CIDR. The
:class:`PrefixIndex` keeps, per IP version, one hash table per prefix length present
(``{prefix_len: {network_bits: values}}``). A lookup masks the address once per distinct prefix
length, most specific first: O(L) dict probes where L <= 33 (IPv4) or 129 (IPv6) is the number of
*distinct* lengths provisioned, independent of how many CIDRs there are. In practice L is a
handful (/32, /29, /24, /128, /64...). Building is O(total CIDRs).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Generic, TypeVar

from routing.model import Carrier, Customer, Snapshot, Trunk

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# A textual IPv6 address with zone and brackets is at most ~60 characters; refusing much longer
# strings before parsing keeps per-INVITE work bounded when a peer sends garbage in Via/received.
MAX_ADDRESS_CHARS = 100

V = TypeVar("V")


# Source addresses whose parse is remembered: every new call parses its source once or twice,
# and a trunking SBC sees a bounded set of peers (results are immutable ipaddress objects).
PARSE_IP_CACHE_SIZE = 4096

@functools.lru_cache(maxsize=PARSE_IP_CACHE_SIZE)
def parse_ip(text: str) -> IPAddress | None:
    """Parse a source address as the transport reports it, or return ``None`` if it is not one.

    Accepts ``"192.0.2.1"``, ``"2001:db8::1"``, ``"[2001:db8::1]"`` and a zone suffix
    (``"fe80::1%eth0"``, the zone is ignored). An IPv4-mapped IPv6 address (``"::ffff:192.0.2.1"``,
    what a dual-stack socket reports for IPv4 peers) is returned as the IPv4 address so IPv4 CIDRs
    match it.
    """
    if not isinstance(text, str) or len(text) > MAX_ADDRESS_CHARS:
        return None
    s = text.strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    s = s.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(s)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_network(text: str) -> IPNetwork:
    """Parse a CIDR (``"192.0.2.0/24"``, ``"2001:db8::/32"``) or a bare address (a /32 or /128).

    Host bits are allowed and cleared (``"192.0.2.7/24"`` is ``192.0.2.0/24``), matching what
    operators mean. Raises ``ValueError`` for anything else.
    """
    s = text.strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    return ipaddress.ip_network(s, strict=False)


class PrefixIndex(Generic[V]):
    """Longest-prefix match of IP addresses against CIDRs, values kept in insertion order.

    See the module docstring for the layout and complexity. Not thread-safe for writes; build it
    fully, then only read.
    """

    __slots__ = ("_tables", "_lengths")

    def __init__(self) -> None:
        # version -> prefix length -> network bits (address >> (width - length)) -> values
        self._tables: dict[int, dict[int, dict[int, list[V]]]] = {4: {}, 6: {}}
        self._lengths: dict[int, tuple[int, ...]] = {4: (), 6: ()}

    def add(self, network: IPNetwork, value: V) -> list[V]:
        """Attach ``value`` to ``network``; returns the values already attached to exactly that
        network before this call (so callers can report conflicts). Adding the same value to the
        same network twice keeps one copy."""
        width = network.max_prefixlen
        tables = self._tables[network.version]
        if network.prefixlen not in tables:
            tables[network.prefixlen] = {}
            self._lengths[network.version] = tuple(sorted(tables, reverse=True))
        key = int(network.network_address) >> (width - network.prefixlen)
        values = tables[network.prefixlen].setdefault(key, [])
        before = list(values)
        if value not in values:
            values.append(value)
        return before

    def matches(self, address: IPAddress) -> list[tuple[int, list[V]]]:
        """Every ``(prefix_len, values)`` whose network contains ``address``, longest first."""
        width = address.max_prefixlen
        bits = int(address)
        tables = self._tables[address.version]
        found: list[tuple[int, list[V]]] = []
        for length in self._lengths[address.version]:
            values = tables[length].get(bits >> (width - length))
            if values:
                found.append((length, values))
        return found

    def longest(self, address: IPAddress) -> list[V] | None:
        """The values of the most specific network containing ``address``, or ``None``."""
        width = address.max_prefixlen
        bits = int(address)
        tables = self._tables[address.version]
        for length in self._lengths[address.version]:
            values = tables[length].get(bits >> (width - length))
            if values:
                return values
        return None


class SourceClassifier:
    """Map an INVITE's source address to a carrier or to customer trunks, and digest users to trunks.

    * Carriers are recognised by ``inbound_cidrs`` and by their gateways whose host is an IP literal
      (a /32 or /128): a carrier sends from where we send to. Gateways given as DNS names count only
      through ``resolved_hosts`` (hostname -> addresses), which the caller resolves and passes in,
      since routing does no I/O.
    * The most specific CIDR wins. When two carriers claim the very same network the first in
      snapshot order keeps it and the clash is listed in :attr:`problems`.
    * Trunks are recognised by ``allowed_cidrs``; all trunks containing the address are returned,
      most specific first, because several trunks of one PBX may share an address and are told
      apart later (digest user, dialled number).

    Unparsable CIDRs are skipped and listed in :attr:`problems`. Lookups cost O(L) (module
    docstring); :meth:`trunks_for_username` is one dict lookup.
    """

    __slots__ = ("_carriers", "_trunks", "_usernames", "problems")

    def __init__(
        self,
        carriers: Iterable[Carrier],
        customers: Iterable[Customer],
        resolved_hosts: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        problems: list[str] = []
        resolved = resolved_hosts or {}
        self._carriers: PrefixIndex[Carrier] = PrefixIndex()
        for carrier in carriers:
            sources: list[tuple[str, str]] = [(c, f"inbound_cidr {c!r}") for c in carrier.inbound_cidrs]
            for gw in carrier.gateways:
                if parse_ip(gw.host) is not None:
                    sources.append((gw.host, f"gateway {gw.host}"))
                else:
                    sources.extend((a, f"gateway {gw.host} ({a})") for a in resolved.get(gw.host, ()))
            for text, what in sources:
                try:
                    net = parse_network(text)
                except ValueError:
                    problems.append(f"carrier {carrier.name}: {what} is not an IP network, skipped")
                    continue
                others = [c.name for c in self._carriers.add(net, carrier) if c is not carrier]
                if others:
                    problems.append(
                        f"carrier {carrier.name}: {what} ({net}) already belongs to {others[0]}, "
                        f"which keeps it"
                    )
        self._trunks: PrefixIndex[Trunk] = PrefixIndex()
        self._usernames: dict[str, list[Trunk]] = {}
        for customer in customers:
            for trunk in customer.trunks:
                for cidr in trunk.allowed_cidrs:
                    try:
                        self._trunks.add(parse_network(cidr), trunk)
                    except ValueError:
                        problems.append(
                            f"trunk {customer.name}/{trunk.name}: allowed_cidr {cidr!r} is not an IP "
                            f"network, skipped"
                        )
                for cred in trunk.credentials:
                    holders = self._usernames.setdefault(cred.username, [])
                    if trunk not in holders:
                        holders.append(trunk)
        for username, holders in self._usernames.items():
            if len(holders) > 1:
                names = ", ".join(f"{t.customer}/{t.name}" for t in holders)
                problems.append(f"digest username {username!r} is shared by trunks {names}")
        self.problems: tuple[str, ...] = tuple(problems)

    @classmethod
    def from_snapshot(
        cls, snapshot: Snapshot, resolved_hosts: Mapping[str, Sequence[str]] | None = None
    ) -> SourceClassifier:
        """Build from ``snapshot.carriers`` and the trunks of ``snapshot.customers``."""
        return cls(snapshot.carriers, snapshot.customers, resolved_hosts)

    def carrier_for(self, ip: str) -> Carrier | None:
        """The carrier whose most specific inbound network contains ``ip``; ``None`` when no carrier
        matches or ``ip`` is not an address (see :func:`parse_ip` for accepted forms)."""
        addr = parse_ip(ip)
        if addr is None:
            return None
        values = self._carriers.longest(addr)
        return values[0] if values else None

    def trunks_for(self, ip: str) -> list[Trunk]:
        """Trunks whose ``allowed_cidrs`` contain ``ip``, most specific network first (ties in
        snapshot order), each trunk once; empty when none match or ``ip`` is not an address."""
        addr = parse_ip(ip)
        if addr is None:
            return []
        seen: set[int] = set()
        out: list[Trunk] = []
        for _length, trunks in self._trunks.matches(addr):
            for t in trunks:
                if id(t) not in seen:
                    seen.add(id(t))
                    out.append(t)
        return out

    @property
    def any_credentials(self) -> bool:
        """True when some trunk authenticates by digest (so an unknown source may be one)."""
        return bool(self._usernames)

    def trunks_for_username(self, username: str) -> list[Trunk]:
        """Trunks holding a digest credential with exactly this ``username`` (digest usernames are
        compared exactly: the digest response hashes the username as sent), in snapshot order; empty
        when none."""
        return list(self._usernames.get(username, ()))
