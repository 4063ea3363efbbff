"""Cluster-wide admission limits as local mirrors: the synchronous side, no I/O.

:class:`ClusterCalls` and :class:`ClusterRates` implement the :class:`routing.limits.ConcurrencyLimit`
and :class:`routing.limits.RateLimit` protocols that the B2BUA calls on its event loop. They never
wait for Redis: each decision uses what this node knows right now -- its own live calls, exact,
plus the other nodes' counts as last received -- and records what changed so that
:class:`sbc.cluster.node.RedisCluster` (or, between the workers of one machine,
:class:`sbc.cluster.local.WorkerCluster`) can publish it (a few milliseconds later) and feed the other
nodes' changes back in (:meth:`ClusterCalls.apply_message`, :meth:`ClusterCalls.apply_full`,
:meth:`ClusterRates.debit`). The consistency window and the overshoot this allows are explained in
:mod:`sbc.cluster`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from routing.limits import ConcurrencyCounter, RateLimiter, needs_and_caps

#: Field of a node's Redis hash that holds its publish sequence number, not a limit key. Limit
#: keys are "kind:name" (routing.limits.limit_key), so a leading "~" can never collide.
SEQ_FIELD = "~seq"


class ClusterCalls:
    """Concurrent calls per key across the cluster: own calls exactly, the others' as published.

    ``count(key)`` is the cluster total as this node sees it; ``try_acquire`` admits a call only if
    that total stays within each limit. Own counts are kept in a
    :class:`routing.limits.ConcurrencyCounter` (so a double release still raises). ``on_change`` is
    called after every change of the own counts (the publisher's wake-up); it must not raise.
    """

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self.own = ConcurrencyCounter()
        self.on_change = on_change
        # node id -> {key: count} as last received, with the publish sequence it came with.
        self._others: dict[str, dict[str, int]] = {}
        self._others_seq: dict[str, int] = {}
        self._totals: dict[str, int] = {}  # key -> sum over the other nodes
        self._dirty: set[str] = set()
        self._held: set[str] = set()  # keys this node has calls on

    # -- the ConcurrencyLimit protocol (called by the B2BUA) ---------------------------------------

    def count(self, key: str) -> int:
        """Calls on ``key`` in the whole cluster as far as this node knows."""
        return self._totals.get(key, 0) + self.own.count(key)

    def try_acquire(self, keys: Sequence[str], limits: Sequence[int | None]) -> bool:
        """Count one more call of this node on every key when the cluster total of each stays
        within its limit (``None`` = unlimited); otherwise change nothing and return ``False``.
        Raises ``ValueError`` (nothing changed) as :meth:`ConcurrencyCounter.try_acquire` does."""
        need, cap = needs_and_caps(keys, limits)
        for key, limit in cap.items():
            if self.count(key) + need[key] > limit:
                return False
        self.own.try_acquire(keys, [None] * len(keys))
        self._changed(need)
        return True

    def release(self, keys: Sequence[str]) -> None:
        """Count one call of this node less on every key; raises ``ValueError`` (nothing changed)
        for a release without an acquire, as :meth:`ConcurrencyCounter.release` does."""
        self.own.release(keys)
        self._changed(keys)

    def _changed(self, keys: Mapping[str, int] | Sequence[str]) -> None:
        self._dirty.update(keys)
        for key in keys:
            if self.own.count(key):
                self._held.add(key)
            else:
                self._held.discard(key)
        if self.on_change is not None:
            self.on_change()

    # -- the publisher's side ----------------------------------------------------------------------

    def take_dirty(self) -> dict[str, int]:
        """The own counts of every key changed since the last call (0 for keys now free), and
        forget them: what the next publish must carry."""
        dirty, self._dirty = self._dirty, set()
        return {key: self.own.count(key) for key in dirty}

    def restore_dirty(self, keys: Sequence[str] | Mapping[str, int]) -> None:
        """Mark ``keys`` changed again (a publish failed: they are sent with the next one)."""
        self._dirty.update(keys)

    def own_counts(self) -> dict[str, int]:
        """Every key this node holds calls on, with its count (for a full re-publish)."""
        return {key: self.own.count(key) for key in self._held}

    def apply_message(
        self, node: str, seq: int, counts: Mapping[str, int], *, replace: Callable[[str], bool] | None = None
    ) -> bool:
        """Take another node's pushed change (absolute counts of the keys it changed). Ignored,
        returning ``False``, when a newer state of that node is already known (``seq`` not
        above the last one seen).

        With ``replace`` the message is a full refresh of the node's keys for which
        ``replace(key)`` holds: such keys it does not list are dropped (how a refresh repairs a
        lost message that freed a key); ``lambda key: True`` replaces the node's whole state."""
        if seq <= self._others_seq.get(node, -1):
            return False
        state = self._others.setdefault(node, {})
        if replace is not None:
            for key in [key for key in state if key not in counts and replace(key)]:
                self._add_total(key, -state.pop(key))
        for key, n in counts.items():
            old = state.get(key, 0)
            if n > 0:
                state[key] = n
            else:
                state.pop(key, None)
            self._add_total(key, n - old)
        self._others_seq[node] = seq
        return True

    def apply_full(self, nodes: Mapping[str, tuple[int, Mapping[str, int]]]) -> None:
        """Replace the view of the other nodes by a full read: ``{node: (seq, counts)}``. Nodes
        absent from it are gone (expired or left); a node whose pushed state is newer than the
        read (``seq`` lower than what a message already brought) keeps the pushed state."""
        others: dict[str, dict[str, int]] = {}
        seqs: dict[str, int] = {}
        for node, (seq, counts) in nodes.items():
            if seq < self._others_seq.get(node, -1):
                others[node], seqs[node] = self._others[node], self._others_seq[node]
            else:
                others[node], seqs[node] = {k: n for k, n in counts.items() if n > 0}, seq
        self._others, self._others_seq = others, seqs
        totals: dict[str, int] = {}
        for state in others.values():
            for key, n in state.items():
                totals[key] = totals.get(key, 0) + n
        self._totals = totals

    def forget_node(self, node: str) -> None:
        """Drop a node that said goodbye: its calls no longer count."""
        state = self._others.pop(node, {})
        self._others_seq.pop(node, None)
        for key, n in state.items():
            self._add_total(key, -n)

    def forget_others(self) -> None:
        """Drop every other node (Redis unreachable for too long: each node limits alone)."""
        self._others, self._others_seq, self._totals = {}, {}, {}

    def others(self) -> dict[str, dict[str, int]]:
        """A copy of the other nodes' counts as known (for status pages and tests)."""
        return {node: dict(state) for node, state in self._others.items()}

    def _add_total(self, key: str, delta: int) -> None:
        total = self._totals.get(key, 0) + delta
        if total > 0:
            self._totals[key] = total
        else:
            self._totals.pop(key, None)


class ClusterRates(RateLimiter):
    """Token buckets that every node of the cluster drains: its own admissions at once, the other
    nodes' when their messages arrive (:meth:`debit`).

    Each node refills its copy of a bucket at the full configured rate, so the copies agree up to
    the admissions still in flight. A debit may push a bucket below zero, down to
    ``-burst``: calls the cluster admitted beyond the rate (two nodes spending the same token
    within the consistency window) are paid back from the next refills instead of forgotten, so
    over any longer period the cluster keeps to the rate. ``on_change`` as in
    :class:`ClusterCalls`.
    """

    __slots__ = ("on_change", "_admitted")

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.on_change = on_change
        self._admitted: dict[str, int] = {}

    def allow_all(self, keys: Sequence[str], now: float) -> str | None:
        """As :meth:`RateLimiter.allow_all`; an admission is also recorded for publishing."""
        refused = super().allow_all(keys, now)
        if refused is None:
            counted = False
            for key in keys:
                if self.rate(key) is not None:
                    self._admitted[key] = self._admitted.get(key, 0) + 1
                    counted = True
            if counted and self.on_change is not None:
                self.on_change()
        return refused

    def debit(self, key: str, calls: int, now: float) -> None:
        """Take ``calls`` tokens that another node spent on ``key`` (a no-op for an unlimited key
        or a non-finite ``now``); the bucket may go negative down to ``-burst``."""
        if calls <= 0 or not math.isfinite(now):
            return
        bucket = self._refilled(key, now)
        if bucket is not None:
            bucket.tokens = max(-self.burst(key), bucket.tokens - calls)

    def tokens(self, key: str, now: float) -> float:
        """Tokens left in ``key``'s bucket at ``now`` (``inf`` when unlimited)."""
        bucket = self._refilled(key, now)
        return math.inf if bucket is None else bucket.tokens

    def take_admitted(self) -> dict[str, int]:
        """Own admissions per limited key since the last call, and forget them."""
        admitted, self._admitted = self._admitted, {}
        return admitted

    def restore_admitted(self, admitted: Mapping[str, int]) -> None:
        """Put back admissions whose publish failed."""
        for key, n in admitted.items():
            self._admitted[key] = self._admitted.get(key, 0) + n


__all__ = ["SEQ_FIELD", "ClusterCalls", "ClusterRates"]
