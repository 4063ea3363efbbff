"""Failover plans: the ordered list of places a call will be tried.

Outbound (customer -> carrier): the best LCR route for the number gives the carriers, ordered by
their route priority/weight (:func:`routing.selection.weighted_order`); each carrier contributes
its gateways that are up, ordered by gateway priority/weight. So every gateway of the first
carrier is tried before the second carrier: a carrier's gateways are usually redundant front ends
of one network, and the route's priority says which network the operator prefers.

Gateways reported down are skipped. **When every gateway of every carrier of the route is down,
the plan is all of them anyway, in the normal order, each marked ``last_resort``.** Reason: probe
state can be wrong in exactly the way that matters (many carriers drop OPTIONS from peers, or
rate-limit them, while still taking INVITEs; a brief loss of probes marks everything down at once).
A last-resort attempt costs the caller a few seconds of post-dial delay; an empty plan costs the
call for certain. The ``last_resort`` flag goes into the CDR so the operator sees it happened.
An empty plan therefore means only: no route applies, the route has no usable carrier (a route
with no carriers blocks its prefix), or its carriers have no gateways.

Plans are capped at :data:`MAX_PLAN_ATTEMPTS`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from routing.model import Carrier, Gateway, Snapshot, Trunk, TrunkTarget
from routing.numbers import is_canonical_e164
from routing.selection import HealthView, weighted_order
from routing.tables import RoutingTables

# Each failed attempt costs up to the INVITE timeout (a few seconds; SIPp and Kamailio's default
# fr_inv_timer are in that range) and callers give up after roughly 30-60 s of silence, so more
# than ten attempts only adds post-dial delay nobody waits for.
MAX_PLAN_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class Attempt:
    """One outbound try: send the INVITE to ``gateway`` of ``carrier`` with this Request-URI user.

    ``failover_codes`` are the carrier's final responses worth trying the next attempt after (see
    :func:`routing.failover.should_failover`). ``last_resort`` is True when the gateway was
    believed down and is tried only because nothing was up.
    """

    carrier: str
    gateway: Gateway
    request_user: str
    failover_codes: tuple[int, ...]
    last_resort: bool = False


def format_request_user(e164: str, carrier: Carrier) -> str:
    """The Request-URI user part ``carrier`` expects for canonical ``e164``: its ``tech_prefix``
    prepended, and the ``+`` dropped when it has ``strip_plus``. Example: ``+14155550100`` with
    prefix ``"7788#"`` and strip_plus gives ``"7788#14155550100"``."""
    number = e164[1:] if carrier.strip_plus and e164.startswith("+") else e164
    return carrier.tech_prefix + number


def build_outbound_plan(
    tables: RoutingTables | Snapshot,
    e164: str,
    customer: str | None,
    now: float,
    rng: random.Random,
    health: HealthView,
    *,
    max_attempts: int = MAX_PLAN_ATTEMPTS,
) -> list[Attempt]:
    """The attempts for an outbound call to ``e164`` from ``customer`` at ``now`` (module docstring
    for the order and the all-down rule).

    ``tables`` should be prebuilt :class:`RoutingTables`; a raw ``Snapshot`` is accepted for
    convenience and built on the spot (O(snapshot), not for the per-call path). Carriers a route
    names but the snapshot lacks are skipped; a carrier named twice in a route and a gateway listed
    twice in a carrier are tried once. Returns ``[]`` when no route applies or nothing can be
    tried; at most ``max_attempts`` entries. Raises ``ValueError`` when ``e164`` is not canonical
    ``+E164`` (callers normalise first) or ``max_attempts < 1``.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, not {max_attempts}")
    if not is_canonical_e164(e164):
        raise ValueError(f"{e164!r} is not a canonical +E164 number")
    if isinstance(tables, Snapshot):
        tables = RoutingTables.build(tables)
    route = tables.routes.match(e164, customer, now)
    if route is None:
        return []
    carriers = []
    seen_carriers: set[str] = set()
    for rc in weighted_order(route.carriers, rng):
        carrier = tables.carriers.get(rc.name)
        if carrier is None or carrier.name in seen_carriers:
            continue
        seen_carriers.add(carrier.name)
        carriers.append(carrier)
    return _gateway_attempts(carriers, e164, rng, health)[:max_attempts]


def build_carrier_plan(
    carrier: Carrier,
    e164: str,
    rng: random.Random,
    health: HealthView,
    *,
    max_attempts: int = MAX_PLAN_ATTEMPTS,
) -> list[Attempt]:
    """The attempts for a call to ``e164`` through ``carrier`` alone (no route lookup): its
    gateways by priority then weight, healthy ones only unless all are down. Used when a call
    names its carrier (``POST /v1/calls`` with ``carrier``). Raises ``ValueError`` like
    :func:`build_outbound_plan` for a non-canonical ``e164``."""
    if not is_canonical_e164(e164):
        raise ValueError(f"{e164!r} is not a canonical +E164 number")
    return _gateway_attempts([carrier], e164, rng, health)[:max_attempts]


def _gateway_attempts(
    carriers: list[Carrier], e164: str, rng: random.Random, health: HealthView
) -> list[Attempt]:
    """Every distinct gateway of ``carriers`` in order; the healthy ones, or all when none is."""
    up: list[Attempt] = []
    everything: list[Attempt] = []
    for carrier in carriers:
        user = format_request_user(e164, carrier)
        seen_gateways: set[tuple[str, int, str]] = set()
        for gw in weighted_order(carrier.gateways, rng):
            key = (gw.host.lower(), gw.port, gw.transport.lower())
            if key in seen_gateways:
                continue
            seen_gateways.add(key)
            everything.append(Attempt(carrier.name, gw, user, carrier.failover_codes, last_resort=True))
            if health.is_up(carrier.name, gw):
                up.append(Attempt(carrier.name, gw, user, carrier.failover_codes))
    return up or everything


def build_inbound_plan(trunk: Trunk, rng: random.Random) -> list[TrunkTarget]:
    """The order in which to try ``trunk``'s targets for an inbound call: priority ascending,
    weighted random within a priority (:func:`routing.selection.weighted_order`); a URI listed
    twice is tried once. Empty when the trunk has no targets (the call cannot be delivered)."""
    seen: set[str] = set()
    out: list[TrunkTarget] = []
    for target in weighted_order(trunk.targets, rng):
        if target.uri not in seen:
            seen.add(target.uri)
            out.append(target)
    return out
