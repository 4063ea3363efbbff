"""Carrier health shared by the cluster: one node probes, every node routes on its results.

Without coordination every node would send OPTIONS to every gateway (n nodes, n times the probe
traffic a carrier sees) and each would judge gateways on its own probes. Instead the node that
holds the probing lease in Redis (:class:`sbc.cluster.node.RedisCluster` elects it) probes, and
publishes each probed gateway's state; the others keep their probe schedule ticking but send
nothing, and answer :meth:`ClusterHealthTable.is_up` from the published states. When the lease
holder dies its lease expires and another node takes over; when Redis is unreachable every node
probes for itself again (each acts as a standalone SBC rather than routing on stale states).
Between the workers of one machine (:class:`sbc.cluster.local.WorkerCluster`) worker 0 is the
prober and publishes over the worker bus; the others probe for themselves while it is silent.

A node that just became the prober starts its own hysteresis from "up"; until it has probed a
gateway itself it keeps routing on the state the previous prober published, so a gateway known to
be down is not tried again merely because the prober changed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from routing.health import GatewayKey, GatewayStatus, HealthTable, gateway_key
from routing.model import Gateway


def health_field(key: GatewayKey) -> str:
    """The Redis hash field of a gateway: its health identity as a JSON array."""
    return json.dumps(list(key), separators=(",", ":"))


def parse_health_field(field: str) -> GatewayKey | None:
    """The inverse of :func:`health_field`; ``None`` for a field that is not one."""
    try:
        carrier, host, port, transport = json.loads(field)
    except (ValueError, TypeError):
        return None
    if not (
        isinstance(carrier, str)
        and isinstance(host, str)
        and isinstance(port, int)
        and isinstance(transport, str)
    ):
        return None
    return (carrier, host, port, transport)


def status_entry(status: GatewayStatus, node: str, wall_now: float) -> str:
    """The published value of a probed gateway: up/down, latency figures, who probed and when."""
    return json.dumps(
        {
            "up": status.up,
            "last_latency_s": status.last_latency_s,
            "ewma_latency_s": status.ewma_latency_s,
            "consecutive_failures": status.consecutive_failures,
            "probes": status.probes,
            "by": node,
            "at": wall_now,
        },
        separators=(",", ":"),
    )


class ClusterHealthTable(HealthTable):
    """A :class:`routing.health.HealthTable` that probes only while ``probing()`` says so and
    otherwise reports the states published by the node that does.

    ``probing`` is asked on every schedule tick and every routing decision: it must be cheap.
    ``on_change`` is called after each recorded probe result (the publisher's wake-up).
    """

    def __init__(self, probing: Callable[[], bool], on_change: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.probing = probing
        self.on_change = on_change
        self.dirty = False
        self._changed: set[GatewayKey] = set()  # gateways probed since the last take_entries
        self._published: dict[GatewayKey, dict[str, Any]] = {}

    def due_probes(self, now: float) -> list[tuple[str, Gateway]]:
        """As :meth:`HealthTable.due_probes` (the schedule always advances), but nothing is due on a
        node that is not the prober."""
        due = super().due_probes(now)
        return due if self.probing() else []

    def record_probe(
        self, carrier: str, gateway: Gateway, ok: bool, latency_s: float | None, now: float
    ) -> bool | None:
        """As :meth:`HealthTable.record_probe`; a recorded result is marked for publishing."""
        changed = super().record_probe(carrier, gateway, ok, latency_s, now)
        if changed is not None:
            self.dirty = True
            self._changed.add(gateway_key(carrier, gateway))
            if self.on_change is not None:
                self.on_change()
        return changed

    def is_up(self, carrier: str, gateway: Gateway) -> bool:
        """The prober's own verdict for a gateway it has probed; otherwise the published one;
        a gateway nobody has published is up (as in :class:`HealthTable`)."""
        if self.probing():
            status = super().status(carrier, gateway)
            if status is not None and status.probes:
                return status.up
        entry = self._published.get(gateway_key(carrier, gateway))
        if entry is not None:
            return bool(entry.get("up", True))
        return super().is_up(carrier, gateway)

    def status(self, carrier: str, gateway: Gateway) -> GatewayStatus | None:
        """As :meth:`HealthTable.status`, with the cluster's view: what the prober published for
        a gateway this node has not probed itself (its schedule fields stay local)."""
        local = super().status(carrier, gateway)
        return None if local is None else self._merged(local)

    def snapshot(self) -> list[GatewayStatus]:
        """As :meth:`HealthTable.snapshot`, each entry merged as in :meth:`status`."""
        return [self._merged(status) for status in super().snapshot()]

    def _merged(self, local: GatewayStatus) -> GatewayStatus:
        if self.probing() and local.probes:
            return local
        entry = self._published.get(gateway_key(local.carrier, local.gateway))
        if entry is None:
            return local
        return dataclasses.replace(
            local,
            up=entry["up"],
            last_latency_s=_number(entry.get("last_latency_s")),
            ewma_latency_s=_number(entry.get("ewma_latency_s")),
            consecutive_failures=int(_number(entry.get("consecutive_failures")) or 0),
            probes=int(_number(entry.get("probes")) or 0),
            last_probe_at=entry.get("at_loop"),
        )

    def published(self, carrier: str, gateway: Gateway) -> Mapping[str, Any] | None:
        """What the cluster's prober last published for a gateway (``None`` when nothing)."""
        return self._published.get(gateway_key(carrier, gateway))

    def take_entries(
        self, node: str, wall_now: float, *, changed_only: bool = False
    ) -> tuple[dict[str, str], set[str]]:
        """What to publish now: ``({field: value} of every gateway this node has probed,
        {field} of every gateway tracked)``; fields outside the second set are stale (gateways
        removed from provisioning). With ``changed_only`` the first holds only the gateways
        probed since the previous call (a delta). Clears :attr:`dirty`."""
        self.dirty = False
        changed, self._changed = self._changed, set()
        entries: dict[str, str] = {}
        tracked: set[str] = set()
        for status in HealthTable.snapshot(self):  # this node's own probes, not the merged view
            key = gateway_key(status.carrier, status.gateway)
            field = health_field(key)
            tracked.add(field)
            if status.probes and (not changed_only or key in changed):
                entries[field] = status_entry(status, node, wall_now)
        return entries, tracked

    def apply_published(self, raw: Mapping[str, str], wall_offset: float = 0.0) -> None:
        """Replace the published states with a full read of the Redis hash (bad entries skipped).

        ``wall_offset`` is wall clock minus this table's clock (the event loop's): published
        probe times are wall-clock seconds and :meth:`status` reports them on the table's clock."""
        published: dict[GatewayKey, dict[str, Any]] = {}
        for field, value in raw.items():
            key = parse_health_field(field)
            entry = None if key is None else _parse_entry(value, wall_offset)
            if key is not None and entry is not None:
                published[key] = entry
        self._published = published

    def update_published(self, changes: Mapping[str, str | None], wall_offset: float = 0.0) -> None:
        """Change some of the published states: ``{field: value}`` sets a gateway's (a bad value
        removes it, as :meth:`apply_published` would skip it), ``{field: None}`` removes it;
        fields that are not gateways are skipped. The others stay as they are."""
        for field, value in changes.items():
            key = parse_health_field(field)
            if key is None:
                continue
            entry = None if value is None else _parse_entry(value, wall_offset)
            if entry is None:
                self._published.pop(key, None)
            else:
                self._published[key] = entry


def _parse_entry(value: Any, wall_offset: float) -> dict[str, Any] | None:
    """A published value as an entry (its probe time also on the table's clock), or ``None``."""
    try:
        entry = json.loads(value)
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("up"), bool):
        return None
    at = _number(entry.get("at"))
    entry["at_loop"] = None if at is None else at - wall_offset
    return entry


def _number(value: Any) -> float | None:
    """A finite number from a published entry, else ``None`` (entries come from other nodes)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


__all__ = ["ClusterHealthTable", "health_field", "parse_health_field", "status_entry"]
