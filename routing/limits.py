"""Call admission limits: calls per second (token buckets) and concurrent calls (counters).

Limits apply per carrier, per trunk and per customer (``max_cps``, ``max_calls`` in the model).
Each limited thing is a *key* (:func:`limit_key`: ``"carrier:att"``, ``"trunk:acme/pbx1"``,
``"customer:acme"``). The implementations here are in-memory and single-node; the b2bua talks to
them through the :class:`RateLimit` and :class:`ConcurrencyLimit` protocols, so a cluster-wide
implementation (Redis, DESIGN.md "Scale out") can replace them without touching call control.
Such an implementation would keep these synchronous signatures by leasing capacity from Redis in
the background; the protocols deliberately expose only all-or-nothing operations so that lease or
Lua-script implementations can be atomic.

Time is an argument (``now``, epoch seconds); nothing here reads the clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from routing.model import Snapshot

# Slack, in seconds of refill, when deciding whether a whole token is there. Epoch floats near 2e9
# resolve only ~2.4e-7 s, so "(T + 0.1) - T" is 0.0999999046: at 10 cps a call exactly 0.1 s after
# the last must still find its token. A microsecond of slack is nothing for admission control.
REFILL_SLACK_S = 1e-6

LimitKind = Literal["carrier", "trunk", "customer"]


def limit_key(kind: LimitKind, name: str) -> str:
    """The key a limit is kept under; for trunks ``name`` is ``"customer/trunk"`` (trunk names are
    unique only within a customer)."""
    return f"{kind}:{name}"


class RateLimit(Protocol):
    """Calls-per-second admission."""

    def rate(self, key: str) -> float | None:
        """The calls per second configured for ``key``; ``None`` when unlimited."""
        ...

    def allow(self, key: str, now: float) -> bool:
        """Take one call's token from ``key``'s bucket; ``True`` if there was one."""
        ...

    def allow_all(self, keys: Sequence[str], now: float) -> str | None:
        """Take one token from every key's bucket, or none at all; returns ``None`` on success or
        the first key (in ``keys`` order) that had no token."""
        ...


class ConcurrencyLimit(Protocol):
    """Concurrent-call admission."""

    def try_acquire(self, keys: Sequence[str], limits: Sequence[int | None]) -> bool:
        """Count one more call on every key, or on none when any would exceed its limit."""
        ...

    def release(self, keys: Sequence[str]) -> None:
        """Count one call less on every key (the keys of a successful :meth:`try_acquire`)."""
        ...

    def count(self, key: str) -> int:
        """Calls currently counted on ``key``."""
        ...


class _Bucket:
    __slots__ = ("tokens", "last")

    def __init__(self, tokens: float, last: float) -> None:
        self.tokens = tokens
        self.last = last


class RateLimiter:
    """Token bucket per key: ``cps`` tokens per second, holding at most ``burst = max(1, cps)``.

    A burst of one second's worth of calls is allowed after idleness (a PBX releasing a queue
    should not be throttled below its contracted rate), and at least one token so that a rate
    below 1 cps (e.g. 0.5: one call every two seconds) can still admit a call. A bucket starts
    full. ``cps == 0`` means *no new calls* (a way to drain a carrier or suspend a customer).
    Keys with no configured rate are unlimited.

    If ``now`` goes backwards (clock step), no tokens are added and the bucket's clock is not
    moved back, so a step neither grants nor revokes capacity. Memory: one small object per
    configured key that has been used.
    """

    __slots__ = ("_rates", "_buckets")

    def __init__(self, rates: Mapping[str, float | None] | None = None) -> None:
        self._rates: dict[str, float] = {}
        self._buckets: dict[str, _Bucket] = {}
        self.configure(rates or {})

    def configure(self, rates: Mapping[str, float | None]) -> None:
        """Replace the rate table (call after each snapshot). Keys mapped to ``None`` or missing
        are unlimited and their buckets are dropped; buckets of keys still limited keep their
        tokens, capped at the new burst. Raises ``ValueError`` (and changes nothing) for a negative
        or non-finite rate."""
        new: dict[str, float] = {}
        for key, cps in rates.items():
            if cps is None:
                continue
            if not math.isfinite(cps) or cps < 0:
                raise ValueError(f"rate for {key!r} must be a finite number >= 0, not {cps!r}")
            new[key] = float(cps)
        self._rates = new
        for key in list(self._buckets):
            if key not in new:
                del self._buckets[key]
            else:
                self._buckets[key].tokens = min(self._buckets[key].tokens, self.burst(key))

    def rate(self, key: str) -> float | None:
        """The configured calls per second of ``key``; ``None`` when unlimited."""
        return self._rates.get(key)

    def burst(self, key: str) -> float:
        """Bucket capacity of ``key``: ``max(1, cps)``; ``inf`` when unlimited."""
        cps = self._rates.get(key)
        return math.inf if cps is None else max(1.0, cps)

    def _refilled(self, key: str, now: float) -> _Bucket | None:
        """The bucket of ``key`` brought up to ``now``; ``None`` when ``key`` is unlimited."""
        cps = self._rates.get(key)
        if cps is None:
            return None
        burst = max(1.0, cps)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(burst if cps > 0 else 0.0, now)
        elif now > bucket.last:
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.last) * cps)
            bucket.last = now
        return bucket

    def allow(self, key: str, now: float) -> bool:
        """Take a token from ``key``'s bucket at ``now``; ``True`` if one was available (always for
        an unlimited key). Raises ``ValueError`` for a non-finite ``now``."""
        return self.allow_all((key,), now) is None

    def allow_all(self, keys: Sequence[str], now: float) -> str | None:
        """Take a token from each key's bucket, all or none; ``None`` on success, else the first
        key without a token (no bucket is debited then). A key listed twice needs two tokens.
        Raises ``ValueError`` for a non-finite ``now``."""
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, not {now!r}")
        need: dict[str, int] = {}
        for key in keys:
            need[key] = need.get(key, 0) + 1
        buckets: list[tuple[_Bucket, int]] = []
        for key in keys:
            bucket = self._refilled(key, now)
            if bucket is None:
                continue
            if bucket.tokens + self._rates[key] * REFILL_SLACK_S < need[key]:
                return key
            buckets.append((bucket, 1))
        for bucket, n in buckets:
            bucket.tokens = max(0.0, bucket.tokens - n)
        return None


def needs_and_caps(
    keys: Sequence[str], limits: Sequence[int | None]
) -> tuple[dict[str, int], dict[str, int]]:
    """For a call counted on ``keys`` under ``limits``: how many it adds per key (a key listed
    twice counts twice) and the tightest limit per limited key. Raises ``ValueError`` when the
    lists differ in length or a limit is negative."""
    if len(keys) != len(limits):
        raise ValueError(f"{len(keys)} keys but {len(limits)} limits")
    need: dict[str, int] = {}
    cap: dict[str, int] = {}
    for key, limit in zip(keys, limits, strict=True):
        if limit is not None and limit < 0:
            raise ValueError(f"limit for {key!r} must be >= 0, not {limit}")
        need[key] = need.get(key, 0) + 1
        if limit is not None:
            cap[key] = min(cap.get(key, limit), limit)
    return need, cap


class ConcurrencyCounter:
    """Concurrent calls per key, acquired all-or-none.

    Keys whose count drops to zero are forgotten, so memory is bounded by the keys with calls up.
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def count(self, key: str) -> int:
        """Calls currently counted on ``key`` (0 when none)."""
        return self._counts.get(key, 0)

    def try_acquire(self, keys: Sequence[str], limits: Sequence[int | None]) -> bool:
        """Add one call to every key when each stays within its limit (``None`` = unlimited), else
        change nothing and return ``False``. A key listed twice counts twice and its tightest
        limit applies. Raises ``ValueError`` when the lists differ in length or a limit is
        negative (state unchanged)."""
        need, cap = needs_and_caps(keys, limits)
        for key, n in need.items():
            if key in cap and self._counts.get(key, 0) + n > cap[key]:
                return False
        for key, n in need.items():
            self._counts[key] = self._counts.get(key, 0) + n
        return True

    def release(self, keys: Sequence[str]) -> None:
        """Remove one call from every key. Raises ``ValueError`` (state unchanged) when a key would
        go below zero: that is a double release, a bug worth finding, not something to absorb."""
        need: dict[str, int] = {}
        for key in keys:
            need[key] = need.get(key, 0) + 1
        for key, n in need.items():
            if self._counts.get(key, 0) < n:
                raise ValueError(f"release of {key!r} without a matching acquire")
        for key, n in need.items():
            left = self._counts[key] - n
            if left:
                self._counts[key] = left
            else:
                del self._counts[key]


@dataclass(frozen=True, slots=True)
class LimitScope:
    """One limited thing a call counts against: e.g. ``LimitScope("carrier", "att", max_calls=100)``.

    The calls-per-second limit of the scope is configured in the :class:`RateLimit` under
    :attr:`key` (see :func:`rate_table`); the concurrency limit travels with the scope because
    :meth:`ConcurrencyLimit.try_acquire` takes it per call.
    """

    kind: LimitKind
    name: str
    max_calls: int | None = None

    @property
    def key(self) -> str:
        """The key of this scope in the limiters."""
        return limit_key(self.kind, self.name)


@dataclass(frozen=True, slots=True)
class LimitHit:
    """Which limit refused a call: for the 503 reason and the metrics label."""

    kind: LimitKind
    name: str
    limit: Literal["calls", "cps"]
    value: float | None  # the configured limit that was reached


def rate_table(snapshot: Snapshot) -> dict[str, float | None]:
    """Every carrier's, trunk's and customer's ``max_cps`` keyed by :func:`limit_key`, for
    :meth:`RateLimiter.configure`."""
    rates: dict[str, float | None] = {}
    for c in snapshot.carriers:
        rates[limit_key("carrier", c.name)] = c.max_cps
    for cu in snapshot.customers:
        rates[limit_key("customer", cu.name)] = cu.max_cps
        for t in cu.trunks:
            rates[limit_key("trunk", f"{cu.name}/{t.name}")] = t.max_cps
    return rates


def check_limits(
    scopes: Sequence[LimitScope], now: float, rates: RateLimit, calls: ConcurrencyLimit
) -> LimitHit | None:
    """Admit one call against every scope, or refuse it and say which limit was hit.

    Concurrency is acquired first (all or none), then one token is taken from every scope's rate
    bucket (all or none); if the rate refuses, the concurrency just acquired is released, so a
    refused call leaves no trace. Returns ``None`` when admitted (the caller must later
    ``calls.release([s.key for s in scopes])``); otherwise the first scope in ``scopes`` order
    that is at its limit: order the scopes as you want them reported (e.g. customer, trunk,
    carrier).
    """
    keys = [s.key for s in scopes]
    if not calls.try_acquire(keys, [s.max_calls for s in scopes]):
        for s in scopes:
            if s.max_calls is not None and calls.count(s.key) + keys.count(s.key) > s.max_calls:
                return LimitHit(s.kind, s.name, "calls", s.max_calls)
        # A shared counter (cluster implementation) may have moved between try_acquire and count:
        # blame the first limited scope rather than report nothing.
        blamed = next((s for s in scopes if s.max_calls is not None), scopes[0])
        return LimitHit(blamed.kind, blamed.name, "calls", blamed.max_calls)
    refused = rates.allow_all(keys, now)
    if refused is None:
        return None
    calls.release(keys)
    s = next((s for s in scopes if s.key == refused), scopes[0])
    return LimitHit(s.kind, s.name, "cps", rates.rate(refused))


def release_limits(scopes: Iterable[LimitScope], calls: ConcurrencyLimit) -> None:
    """Release what a successful :func:`check_limits` acquired (call when the call ends)."""
    calls.release([s.key for s in scopes])
