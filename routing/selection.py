"""Ordering of alternatives (carriers of a route, gateways of a carrier, targets of a trunk).

The rule is the one DNS SRV records use (RFC 2782): **priority first, weight within a priority.**

* Items are grouped by ``priority``, lowest first; groups never mix.
* Within a group, items with ``weight > 0`` are put in a weighted random order: each position is
  drawn among the remaining items with probability proportional to weight, so a 75/25 pair puts
  the 75 first three times out of four, and over many calls traffic splits 75/25.
* Items with ``weight == 0`` (negative weights count as 0) come after every weighted item of their
  own priority group, in input order: a standby used only when nothing else of that priority is
  left (RFC 2782 gives weight-0 records "a very small chance"; we make it none, which is easier
  to reason about when configuring a standby). They still come before any item of a higher (worse) priority number, because priority
  is the operator's explicit order and weight only shares load inside it.

Randomness is an argument (a ``random.Random``) so tests and replays are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Protocol, TypeVar

from routing.model import Gateway


class Weighted(Protocol):
    """Anything with a priority (lower first) and a weight (share within a priority)."""

    @property
    def priority(self) -> int: ...

    @property
    def weight(self) -> int: ...


W = TypeVar("W", bound=Weighted)


def weighted_order(items: Iterable[W], rng: random.Random) -> list[W]:
    """Return ``items`` ordered by priority ascending and, within a priority, by weighted random
    shuffle; zero-weight items last within their priority (module docstring).

    The input is not modified; every item appears exactly once in the result. Uses the
    exponential-race form of weighted sampling without replacement: each weighted item draws
    ``Exp(weight)`` and items sort by their draw, which gives item *i* first place with
    probability ``w_i / sum(w)`` and recursively the same for the rest, in O(n log n).
    """
    groups: dict[int, list[W]] = {}
    for item in items:
        groups.setdefault(item.priority, []).append(item)
    out: list[W] = []
    for priority in sorted(groups):
        group = groups[priority]
        if len(group) == 1:
            out.extend(group)
            continue
        weighted = [(rng.expovariate(it.weight), i) for i, it in enumerate(group) if it.weight > 0]
        weighted.sort()
        out.extend(group[i] for _, i in weighted)
        out.extend(it for it in group if it.weight <= 0)
    return out


class HealthView(Protocol):
    """What plan building needs to know about gateway health; implemented by
    :class:`routing.health.HealthTable` (probing) and :class:`AlwaysUp` (no probing)."""

    def is_up(self, carrier: str, gateway: Gateway) -> bool:
        """Whether new calls should be sent to ``gateway`` of ``carrier`` now."""
        ...


class AlwaysUp:
    """A :class:`HealthView` that reports every gateway up: used when nothing is probed."""

    __slots__ = ()

    def is_up(self, carrier: str, gateway: Gateway) -> bool:
        """Always ``True``."""
        return True
