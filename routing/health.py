"""Gateway health from OPTIONS probes: state per gateway and the probe schedule.

Something else sends the OPTIONS (``sbc.b2bua``) and reports each result with
:meth:`HealthTable.record_probe`; this module only keeps the state and says which probes are due.
A gateway goes down after :data:`DOWN_AFTER_FAILURES` consecutive failed probes and comes back
after :data:`UP_AFTER_SUCCESSES` consecutive good ones: hysteresis, so one lost UDP datagram does
not take a gateway out and one lucky reply does not bring a flapping one back.

Gateways start *up*: a freshly provisioned carrier takes traffic at once, and a carrier without
probing (``probe_interval_s == 0``) is never marked down. Time is an argument throughout.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from routing.model import Carrier, Gateway

# Kamailio's dispatcher has the same two knobs (ds_probing_threshold, ds_inactive_threshold). 3
# failures and 2 successes are the values commonly configured there so that a single lost UDP
# OPTIONS (or a single reply) does not flip the state.
DOWN_AFTER_FAILURES = 3
UP_AFTER_SUCCESSES = 2
# Smoothing of the latency average, the same gain TCP uses for its smoothed RTT (RFC 6298 §2,
# alpha = 1/8): recent probes dominate within a few intervals while one slow reply barely moves it.
LATENCY_EWMA_ALPHA = 0.125
# Floor on the probe interval: a typo such as 0.01 must not flood a carrier with OPTIONS; Kamailio's
# ds_ping_interval is also given in whole seconds.
MIN_PROBE_INTERVAL_S = 1.0

GatewayKey = tuple[str, str, int, str]  # (carrier, host lowercased, port, transport lowercased)


def gateway_key(carrier: str, gateway: Gateway) -> GatewayKey:
    """Identity of a gateway for health purposes: its address, not its priority or weight, so
    re-weighting a gateway in provisioning keeps its health state."""
    return (carrier, gateway.host.lower(), gateway.port, gateway.transport.lower())


class GatewayHealth:
    """Probe state of one gateway: up/down with hysteresis, and latency figures.

    ``ewma_latency_s`` is ``None`` until the first successful probe with a latency, then
    ``ewma = ewma + alpha * (sample - ewma)``.
    """

    __slots__ = (
        "down_after",
        "up_after",
        "up",
        "consecutive_failures",
        "consecutive_successes",
        "last_latency_s",
        "ewma_latency_s",
        "last_probe_at",
        "last_change_at",
        "probes",
        "failures",
    )

    def __init__(self, down_after: int = DOWN_AFTER_FAILURES, up_after: int = UP_AFTER_SUCCESSES) -> None:
        """Raises ``ValueError`` unless both thresholds are at least 1."""
        if down_after < 1 or up_after < 1:
            raise ValueError(f"thresholds must be >= 1, not down_after={down_after} up_after={up_after}")
        self.down_after = down_after
        self.up_after = up_after
        self.up = True
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.last_latency_s: float | None = None
        self.ewma_latency_s: float | None = None
        self.last_probe_at: float | None = None
        self.last_change_at: float | None = None
        self.probes = 0
        self.failures = 0

    def record(self, ok: bool, latency_s: float | None, now: float) -> bool:
        """Account one probe result at ``now``; returns ``True`` when up/down changed.

        ``latency_s`` is used only for a successful probe (a failure has no meaningful latency)
        and may be ``None``. Raises ``ValueError`` (state unchanged) for a negative or non-finite
        latency or a non-finite ``now``.
        """
        _check_now(now)
        if ok and latency_s is not None and not (math.isfinite(latency_s) and latency_s >= 0):
            raise ValueError(f"latency must be a finite number >= 0, not {latency_s!r}")
        self.probes += 1
        self.last_probe_at = now
        changed = False
        if ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            if latency_s is not None:
                self.last_latency_s = latency_s
                if self.ewma_latency_s is None:
                    self.ewma_latency_s = latency_s
                else:
                    self.ewma_latency_s += LATENCY_EWMA_ALPHA * (latency_s - self.ewma_latency_s)
            if not self.up and self.consecutive_successes >= self.up_after:
                self.up = changed = True
        else:
            self.failures += 1
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            if self.up and self.consecutive_failures >= self.down_after:
                self.up = False
                changed = True
        if changed:
            self.last_change_at = now
        return changed


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    """A read-only copy of one gateway's health, for the API and metrics."""

    carrier: str
    gateway: Gateway
    up: bool
    consecutive_failures: int
    consecutive_successes: int
    last_latency_s: float | None
    ewma_latency_s: float | None
    last_probe_at: float | None
    last_change_at: float | None
    next_probe_at: float
    probes: int
    failures: int


class _Tracked:
    __slots__ = ("carrier", "gateway", "interval", "next_due", "health")

    def __init__(
        self, carrier: str, gateway: Gateway, interval: float, next_due: float, health: GatewayHealth
    ):
        self.carrier = carrier
        self.gateway = gateway
        self.interval = interval
        self.next_due = next_due
        self.health = health


class HealthTable:
    """Health of every probed gateway; a :class:`routing.selection.HealthView`.

    Only gateways of carriers with ``probe_interval_s > 0`` are tracked (set by :meth:`sync`);
    untracked gateways are reported up. Single-threaded use (the event loop).
    """

    __slots__ = ("_down_after", "_up_after", "_tracked")

    def __init__(self, down_after: int = DOWN_AFTER_FAILURES, up_after: int = UP_AFTER_SUCCESSES) -> None:
        """Raises ``ValueError`` unless both thresholds are at least 1."""
        GatewayHealth(down_after, up_after)  # validates the thresholds
        self._down_after = down_after
        self._up_after = up_after
        self._tracked: dict[GatewayKey, _Tracked] = {}

    def sync(self, carriers: Iterable[Carrier], now: float) -> None:
        """Track exactly the gateways of ``carriers`` that have probing enabled (call after every
        snapshot). Gateways already tracked keep their state; new ones start up and are due at
        once; gateways no longer present, or whose carrier stopped probing, are forgotten (so they
        count as up). A non-finite or non-positive interval disables probing; a positive one is
        raised to :data:`MIN_PROBE_INTERVAL_S`. A shortened interval takes effect from ``now``.
        Raises ``ValueError`` for a non-finite ``now`` (nothing changed)."""
        _check_now(now)
        wanted: dict[GatewayKey, tuple[Carrier, Gateway, float]] = {}
        for carrier in carriers:
            interval = carrier.probe_interval_s
            if not (math.isfinite(interval) and interval > 0):
                continue
            interval = max(MIN_PROBE_INTERVAL_S, interval)
            for gw in carrier.gateways:
                wanted.setdefault(gateway_key(carrier.name, gw), (carrier, gw, interval))
        tracked: dict[GatewayKey, _Tracked] = {}
        for key, (carrier, gw, interval) in wanted.items():
            old = self._tracked.get(key)
            if old is None:
                tracked[key] = _Tracked(
                    carrier.name, gw, interval, now, GatewayHealth(self._down_after, self._up_after)
                )
            else:
                old.gateway = gw
                old.next_due = min(old.next_due, now + interval)
                old.interval = interval
                tracked[key] = old
        self._tracked = tracked

    def is_up(self, carrier: str, gateway: Gateway) -> bool:
        """``False`` only for a tracked gateway its probes have marked down."""
        t = self._tracked.get(gateway_key(carrier, gateway))
        return t is None or t.health.up

    def record_probe(
        self, carrier: str, gateway: Gateway, ok: bool, latency_s: float | None, now: float
    ) -> bool | None:
        """Account an OPTIONS result (``ok``: any final response the prober counts as alive).

        Returns whether the gateway's up/down state changed, or ``None`` when the gateway is not
        tracked (removed or probing disabled since the probe was sent): the result is dropped.
        Raises ``ValueError`` as :meth:`GatewayHealth.record` does.
        """
        t = self._tracked.get(gateway_key(carrier, gateway))
        if t is None:
            return None
        return t.health.record(ok, latency_s, now)

    def due_probes(self, now: float) -> list[tuple[str, Gateway]]:
        """The ``(carrier, gateway)`` pairs to probe now, earliest due first, and schedule each
        one's next probe at ``now + interval``.

        This consumes the due entries: a second call at the same ``now`` returns ``[]``. The
        prober must report every probe it sends (a timeout is ``ok=False``). Scheduling from
        ``now`` rather than from the missed due time means a stalled loop sends one probe per
        gateway on waking, not a burst of catch-up probes. Raises ``ValueError`` for a non-finite
        ``now``.
        """
        _check_now(now)
        due = sorted((t for t in self._tracked.values() if t.next_due <= now), key=lambda t: t.next_due)
        for t in due:
            t.next_due = now + t.interval
        return [(t.carrier, t.gateway) for t in due]

    def next_due_at(self) -> float | None:
        """When :meth:`due_probes` next has something to return (for the caller's timer);
        ``None`` when nothing is probed."""
        return min((t.next_due for t in self._tracked.values()), default=None)

    def status(self, carrier: str, gateway: Gateway) -> GatewayStatus | None:
        """The health of one gateway, or ``None`` when it is not tracked."""
        t = self._tracked.get(gateway_key(carrier, gateway))
        return None if t is None else _status(t)

    def snapshot(self) -> list[GatewayStatus]:
        """Every tracked gateway's health, sorted by carrier then host and port, for display."""
        rows = [_status(t) for t in self._tracked.values()]
        rows.sort(key=lambda s: (s.carrier, s.gateway.host, s.gateway.port, s.gateway.transport))
        return rows


def _check_now(now: float) -> None:
    """Raise ``ValueError`` for a non-finite ``now``: a NaN would poison every comparison after."""
    if not math.isfinite(now):
        raise ValueError(f"now must be finite, not {now!r}")


def _status(t: _Tracked) -> GatewayStatus:
    h = t.health
    return GatewayStatus(
        carrier=t.carrier,
        gateway=t.gateway,
        up=h.up,
        consecutive_failures=h.consecutive_failures,
        consecutive_successes=h.consecutive_successes,
        last_latency_s=h.last_latency_s,
        ewma_latency_s=h.ewma_latency_s,
        last_probe_at=h.last_probe_at,
        last_change_at=h.last_change_at,
        next_probe_at=t.next_due,
        probes=h.probes,
        failures=h.failures,
    )
