"""Least-cost routing: longest-prefix match of E.164 digits over a trie of routes.

Precedence, from strongest to weakest (decided here, relied on by the b2bua and the docs):

1. **Longer prefix first.** ``4420`` beats ``44`` beats ``""`` (an empty prefix is a default
   route matching every number). The prefix says which numbers the rate applies to; the most
   specific rate is the right one.
2. At equal prefix length, **a route scoped to the calling customer beats a global route.** A
   customer-specific deal overrides the general table for exactly the numbers it names, but a
   customer route for ``44`` does not hide a global route for ``4420`` (rule 1 first), so a
   customer cannot accidentally lose more specific global routes.
3. At equal prefix and scope, **a route with a time window beats one without.** That is how
   "cheaper carrier at night, default otherwise" is expressed: the windowed route wins while its
   window is open, the unwindowed one at the same prefix catches the rest of the day.
4. Remaining ties: snapshot order (the store orders by id, so older routes win).

A route that does not apply (scoped to another customer, outside its window) is skipped and the
next candidate in this order is used, falling back to shorter prefixes. A route with no carriers
applies normally: it is how a prefix is blocked (the plan is empty and the call is refused).

Time windows are ``"HH:MM-HH:MM"`` in UTC, half-open ``[start, end)``, ``end`` may be ``24:00``;
when ``end < start`` the window wraps midnight (``22:00-06:00``). ``start == end`` is rejected as
ambiguous (empty or all day?); all day is ``00:00-24:00``.

Costs: building is O(total prefix digits) for the trie; :meth:`RouteTable.match` walks at most 15
nodes (E.164 length) and examines the routes stored at those nodes: O(15 + routes on the path).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from routing.model import Route, Snapshot

MINUTES_PER_DAY = 24 * 60
SECONDS_PER_MINUTE = 60
# ITU-T E.164 maximum length; no route prefix can usefully be longer than a number.
MAX_PREFIX_DIGITS = 15

_WINDOW_RE = re.compile(r"^\s*(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})\s*$", re.ASCII)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A daily UTC window ``[start, end)`` in minutes since 00:00; wraps midnight when end < start."""

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> TimeWindow:
        """Parse ``"HH:MM-HH:MM"`` (HH 00-23, MM 00-59, the end may also be ``24:00``).

        Raises ``ValueError`` naming the problem for any other form, and for ``start == end``.
        """
        m = _WINDOW_RE.match(text)
        if m is None:
            raise ValueError(f"time window {text!r} is not HH:MM-HH:MM")
        sh, sm, eh, em = (int(g) for g in m.groups())
        if sh > 23 or sm > 59:
            raise ValueError(f"time window {text!r}: start is not a time of day")
        if not ((eh <= 23 and em <= 59) or (eh == 24 and em == 0)):
            raise ValueError(f"time window {text!r}: end is not a time of day (or 24:00)")
        start, end = sh * 60 + sm, eh * 60 + em
        if start == end:
            raise ValueError(f"time window {text!r}: start equals end, which is ambiguous")
        return cls(start, end)

    def contains(self, now: float) -> bool:
        """Whether epoch time ``now`` (seconds, UTC) falls inside the window.

        POSIX epoch seconds ignore leap seconds, so the minute of the UTC day is exact arithmetic.
        Raises ``ValueError`` for a non-finite ``now``.
        """
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, not {now!r}")
        minute = int(now // SECONDS_PER_MINUTE) % MINUTES_PER_DAY
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


@dataclass(frozen=True, slots=True)
class _Entry:
    """A route as stored in the trie, with its parsed window and precedence key."""

    route: Route
    window: TimeWindow | None
    rank: tuple[int, int, int]  # (scope: 0 customer / 1 global, window: 0 has / 1 none, snapshot order)


class _Node:
    __slots__ = ("children", "entries")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.entries: list[_Entry] = []


def route_digits(prefix: str) -> str | None:
    """The digits a route prefix matches on: a single leading ``+`` is tolerated and dropped; the
    rest must be 0 to :data:`MAX_PREFIX_DIGITS` ASCII digits, else ``None``."""
    p = prefix[1:] if prefix.startswith("+") else prefix
    if len(p) > MAX_PREFIX_DIGITS or not (p.isascii() and (p.isdigit() or not p)):
        return None
    return p


class RouteTable:
    """Outbound routes in a digit trie; see the module docstring for precedence and cost.

    Routes with a malformed prefix or time window are left out and described in :attr:`problems`
    (the rest of the table still works).
    """

    __slots__ = ("_root", "_size", "problems")

    def __init__(self, routes: Iterable[Route]) -> None:
        problems: list[str] = []
        root = _Node()
        size = 0
        for order, route in enumerate(routes):
            digits = route_digits(route.prefix)
            if digits is None:
                problems.append(f"route {route.id or order} prefix {route.prefix!r}: not digits, skipped")
                continue
            window = None
            if route.time_window is not None:
                try:
                    window = TimeWindow.parse(route.time_window)
                except ValueError as exc:
                    problems.append(f"route {route.id or order} prefix {route.prefix!r}: {exc}, skipped")
                    continue
            node = root
            for d in digits:
                nxt = node.children.get(d)
                if nxt is None:
                    nxt = node.children[d] = _Node()
                node = nxt
            rank = (0 if route.customer is not None else 1, 0 if window is not None else 1, order)
            node.entries.append(_Entry(route, window, rank))
            size += 1
        _sort_entries(root)
        self._root = root
        self._size = size
        self.problems: tuple[str, ...] = tuple(problems)

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> RouteTable:
        """Build from ``snapshot.routes``."""
        return cls(snapshot.routes)

    def __len__(self) -> int:
        return self._size

    def candidates(self, e164: str, customer: str | None, now: float) -> list[Route]:
        """Every route that applies to ``e164`` for ``customer`` at ``now``, best first.

        ``e164`` is ``"+DIGITS"`` or bare digits; anything else gets ``[]``. Routes scoped to a
        customer never apply to ``customer=None``. Raises ``ValueError`` for a non-finite ``now``.
        """
        return list(self._applicable(e164, customer, now))

    def match(self, e164: str, customer: str | None, now: float) -> Route | None:
        """The best route for ``e164`` (the first of :meth:`candidates`), or ``None``."""
        return next(self._applicable(e164, customer, now), None)

    def _applicable(self, e164: str, customer: str | None, now: float) -> Iterator[Route]:
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, not {now!r}")
        digits = e164[1:] if e164.startswith("+") else e164
        if not (digits.isascii() and digits.isdigit()):
            return
        path = [self._root]
        node = self._root
        for d in digits:
            nxt = node.children.get(d)
            if nxt is None:
                break
            node = nxt
            path.append(node)
        for node in reversed(path):
            for entry in node.entries:
                if _applies(entry, customer, now):
                    yield entry.route


def _applies(entry: _Entry, customer: str | None, now: float) -> bool:
    scope = entry.route.customer
    if scope is not None and scope != customer:
        return False
    return entry.window is None or entry.window.contains(now)


def _sort_entries(root: _Node) -> None:
    """Order each node's routes by precedence rules 2-4 (iteratively: tries can be deep)."""
    stack = [root]
    while stack:
        node = stack.pop()
        if len(node.entries) > 1:
            node.entries.sort(key=lambda e: e.rank)
        stack.extend(node.children.values())
