"""Cluster state between the workers of one ``sbc run --workers N``: the worker bus, no Redis.

The workers of one machine share their limits and one carrier-health view as the nodes of a Redis
cluster do (:mod:`sbc.cluster`), with the same mirrors (:class:`~sbc.cluster.limits.ClusterCalls`,
:class:`~sbc.cluster.limits.ClusterRates`, :class:`~sbc.cluster.health.ClusterHealthTable`), but
the messages go straight to the other workers over :class:`sbc.workers.bus.WorkerBus` (frames of
kind :data:`~sbc.workers.bus.KIND_CLUSTER`). Worker ``i`` is node ``"w<i>"``.

Limits. Every frame is one JSON limits message (:mod:`sbc.cluster.base`), sent to every other
worker:

* a **delta** after each change of this worker's counts or rate admissions, at most once per
  :data:`~sbc.cluster.base.PUSH_COALESCE_S`: ``{"n", "s", "c": {key: count}, "r"}``;
* a **full refresh** every :data:`~sbc.cluster.base.REFRESH_INTERVAL_S`, and soon after a worker
  is heard from for the first time or says hello (``"hi": 1`` in its first refresh), so that a
  new or restarted worker learns the others' calls at once: the same with ``"p": [i, k]``, part ``i`` of ``k``: ``c`` holds every key of this worker whose
  :func:`part_of` is ``i``, and the receiver drops the keys of that part it does not list. A
  refresh too large for one frame (:data:`FRAME_BUDGET_BYTES`) is split into parts, each one
  applicable alone, so a lost part costs only its keys one more period;
* a **goodbye** ``{"n", "bye": 1}`` when the worker stops cleanly: the others forget its calls.

The bus drops a frame when a worker's queue is full, never blocks: the full refresh repairs a
lost delta within one period (a lost admission debit is not repaired; the bucket refills). Frames
from one sender arrive in order, but each still carries a sequence number (``s``), and a message
not newer than the last one applied is ignored, as in Redis mode. Sequence numbers are taken from
the system's monotonic clock in microseconds (and grow by at least one per message), so a worker
the supervisor restarted under the same index is newer than its crashed predecessor from its first
message. A worker not heard from for :data:`~sbc.cluster.base.NODE_TTL_S` is forgotten.

Carrier health. Worker 0 (:data:`PROBER_INDEX`) sends the OPTIONS probes, and publishes its
gateway states (:meth:`~sbc.cluster.health.ClusterHealthTable.take_entries`)
``{"n": "w0", "h": {field: value}}``: the gateways probed since the last publication, at most
:data:`HEALTH_PUSH_COALESCE_S` after a probe result, and every
:data:`~sbc.cluster.base.HEALTH_INTERVAL_S` all of them, ``{"n", "h", "p": [i, k]}``, where ``h``
holds every tracked gateway of part ``i`` (``null`` for one not probed yet: the state received
before, if any, stands) and gateways of the part it does not list are removed. The other workers
route on what it published; when worker 0 has published nothing for
:data:`~sbc.cluster.base.PROBER_LEASE_TTL_S` (or said goodbye), each of them probes for itself,
as a standalone SBC would, until worker 0 publishes again.

Malformed frames are counted (:attr:`WorkerCluster.messages_rejected`) and dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from ..workers.bus import KIND_CLUSTER, WorkerBus
from .base import (
    HEALTH_INTERVAL_S,
    MESSAGE_ERRORS,
    NODE_TTL_S,
    PROBER_LEASE_TTL_S,
    PUSH_COALESCE_S,
    REFRESH_INTERVAL_S,
    ClusterNode,
    encode,
)

log = logging.getLogger(__name__)

#: The worker that probes the gateways and publishes their states.
PROBER_INDEX = 0
#: Largest frame this module sends. Far below the bus's MAX_FRAME (256 KiB) and a small part of
#: its 4 MiB socket buffers, so a burst of refreshes from every worker fits a receiver's queue;
#: one frame holds about 400 limit keys or 60 gateway states.
FRAME_BUDGET_BYTES = 16 * 1024
#: Most parts one message is split into (k of ``"p": [i, k]``): 64 MiB of state, far beyond any
#: provisioning; a frame claiming more is malformed.
MAX_PARTS = 4096
#: Shortest gap between two health publications. A probe result reaches the other workers
#: within 50 ms, immaterial next to probe intervals of seconds and 3-probe hysteresis, while a
#: burst of results (many gateways on one schedule) goes out in a few frames, not one each.
HEALTH_PUSH_COALESCE_S = 0.05
#: At shutdown, how long the background tasks get to end after the goodbye is sent.
CLOSE_TIMEOUT_S = 1.0


def worker_node_id(index: int) -> str:
    """The node id of worker ``index``: ``"w<index>"``."""
    return f"w{index}"


def part_of(name: str, parts: int) -> int:
    """Which of ``parts`` parts ``name`` (a limit key or a health field) belongs to: the same
    in every process (CRC-32, not Python's per-process salted ``hash``)."""
    return zlib.crc32(name.encode()) % parts if parts > 1 else 0


def pack(
    items: Mapping[str, Any], message: Callable[[dict[str, Any], int, int], dict[str, Any]], budget: int
) -> list[bytes]:
    """Encode ``items`` into frames of at most ``budget`` bytes: ``message(group, i, k)`` builds
    part ``i`` of ``k`` around its ``group`` of items (those whose :func:`part_of` is ``i``).
    One frame when everything fits, else the fewest parts (doubling) for which every part fits;
    if one item alone is too large, the parts of the last attempt are returned as they are."""
    whole = encode(message(dict(items), 0, 1)).encode()
    if len(whole) <= budget or len(items) < 2:
        return [whole]
    # Twice the minimum to begin with: CRC-32 spreads a few keys unevenly.
    parts = min(MAX_PARTS, max(2, math.ceil(2 * len(whole) / budget)))
    while True:
        groups: list[dict[str, Any]] = [{} for _ in range(parts)]
        for name, value in items.items():
            groups[part_of(name, parts)][name] = value
        frames = [encode(message(group, i, parts)).encode() for i, group in enumerate(groups)]
        if parts * 2 > min(MAX_PARTS, 2 * len(items)) or all(len(f) <= budget for f in frames):
            return frames
        parts *= 2


def _part(value: Any) -> tuple[int, int] | None:
    """``"p": [i, k]`` of a frame, validated (``None`` when absent); raises ``ValueError``."""
    if value is None:
        return None
    i, k = value
    if type(i) is not int or type(k) is not int or not 0 <= i < k <= MAX_PARTS:
        raise ValueError(f"bad part {value!r}")
    return i, k


class WorkerCluster(ClusterNode):
    """This worker's share of the cluster state of one ``sbc run --workers N``.

    Build it on the worker's bus, :meth:`attach` it to the B2BUA (before the first snapshot is
    loaded), :meth:`start` it on the running loop after ``bus.start()``, :meth:`close` it at
    shutdown before the bus is closed. The B2BUA keeps calling the mirrors (:attr:`calls`,
    :attr:`rates`, :attr:`health`) synchronously; nothing here blocks it.

    The work itself is synchronous and driven from outside, so it can be tested without sockets
    or a loop: :meth:`on_frame` takes a frame (the bus handler), :meth:`push` and
    :meth:`publish_health` send, on the clock ``clock`` (by default the event loop's, as the
    B2BUA's; ``time.monotonic`` before :meth:`start`). :meth:`start` only adds the background
    tasks that call them.
    """

    def __init__(self, bus: WorkerBus, *, clock: Callable[[], float] | None = None) -> None:
        super().__init__(worker_node_id(bus.index))
        self.bus = bus
        self.index = bus.index
        self._clock = clock or time.monotonic
        self._fixed_clock = clock is not None
        self._heard: dict[str, float] = {}  # node -> clock time of its last valid frame
        self._prober_seen_at = self._clock()  # last health publication of worker 0 (or start)
        self._was_probing = self.index == PROBER_INDEX
        self._full_soon = False  # a new worker was heard: refresh everything now, not later
        self._hello = True  # this worker's first full refresh asks the others for theirs
        self._health_full_soon = False
        self._published: dict[str, int] = {}  # health fields received from the prober -> CRC-32
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Register the bus handler, send this worker's state (a full refresh; worker 0 also
        its gateway states) and start the background tasks: pushes and refreshes, and on
        worker 0 health publications. Call after ``bus.start()``, on the loop that runs it."""
        loop = asyncio.get_running_loop()
        if not self._fixed_clock:
            self._clock = loop.time
        self._prober_seen_at = self._clock()
        self.bus.on(KIND_CLUSTER, self.on_frame)
        self.push(full=True)
        self.publish_health(full=True)
        self._tasks = [
            asyncio.create_task(
                self._run_rounds(
                    self._push,
                    self._push_round,
                    period_s=lambda: REFRESH_INTERVAL_S,
                    gap_s=lambda: PUSH_COALESCE_S,
                ),
                name="cluster-push",
            )
        ]
        if self.index == PROBER_INDEX:
            self._tasks.append(
                asyncio.create_task(
                    self._run_rounds(
                        self._health_wake,
                        self._health_round,
                        period_s=lambda: HEALTH_INTERVAL_S,
                        gap_s=lambda: HEALTH_PUSH_COALESCE_S,
                    ),
                    name="cluster-health",
                )
            )
        log.info(
            "cluster: worker %d of %d shares limits and carrier health over the worker bus%s",
            self.index,
            self.bus.count,
            " and probes the gateways" if self.index == PROBER_INDEX else "",
        )

    async def close(self) -> None:
        """Tell the other workers to forget this worker's calls at once (a goodbye frame; one
        that is dropped leaves them to expire in NODE_TTL_S), then stop the tasks. Frames that
        arrive afterwards are ignored. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()  # before the goodbye: no refresh may follow it
        self.bus.broadcast(KIND_CLUSTER, encode({"n": self.node_id, "bye": 1}).encode())
        await self._stop_tasks(CLOSE_TIMEOUT_S)

    def probing(self) -> bool:
        """Whether this worker sends the OPTIONS probes: always on worker 0; on the others only
        while worker 0 has published nothing for PROBER_LEASE_TTL_S (or has said goodbye)."""
        if self.index == PROBER_INDEX:
            return True
        return self._clock() - self._prober_seen_at > PROBER_LEASE_TTL_S

    def workers(self) -> list[str]:
        """The other workers heard from within NODE_TTL_S (as of the last refresh)."""
        return sorted(self._heard)

    # -- sending -------------------------------------------------------------------------------

    def push(self, *, full: bool) -> int:
        """Send this worker's count changes and rate admissions since the last push to every
        other worker; returns the frames sent (0: nothing to say). All its counts when ``full``
        or when a worker was heard from for the first time since the last push (it must learn
        them now). A full push also forgets the workers silent for NODE_TTL_S."""
        full = full or self._full_soon
        self._full_soon = False
        changed = self.calls.take_dirty()
        admitted = self.rates.take_admitted()
        if full:
            frames = self._limit_frames(self.calls.own_counts(), admitted, full=True, hello=self._hello)
            self._hello = False
        elif changed or admitted:
            frames = self._limit_frames(changed, admitted, full=False)
        else:
            frames = []
        for frame in frames:
            self.bus.broadcast(KIND_CLUSTER, frame)
        if full:
            self._forget_silent()
        return len(frames)

    def _limit_frames(
        self, counts: Mapping[str, int], admitted: Mapping[str, int], *, full: bool, hello: bool = False
    ) -> list[bytes]:
        def message(group: dict[str, Any], i: int, k: int) -> dict[str, Any]:
            out: dict[str, Any] = {"n": self.node_id, "s": self._next_seq(), "c": group}
            if admitted and i == 0:
                out["r"] = admitted
            if full:
                out["p"] = [i, k]
            if hello:
                out["hi"] = 1
            return out

        return pack(counts, message, FRAME_BUDGET_BYTES)

    def publish_health(self, *, full: bool) -> int:
        """On worker 0: send the states of the gateways probed since the last publication to
        every other worker (all tracked gateways when ``full`` or when a worker was heard from
        for the first time since); returns the frames sent. Does nothing on the other workers,
        or when nothing was probed and the publication is not full."""
        full = full or self._health_full_soon
        self._health_full_soon = False
        if self.index != PROBER_INDEX or not (full or self.health.dirty):
            return 0
        entries, tracked = self.health.take_entries(self.node_id, time.time(), changed_only=not full)
        if full:
            items: dict[str, str | None] = {field: entries.get(field) for field in tracked}
        elif entries:
            items = dict(entries)
        else:
            return 0

        def message(group: dict[str, Any], i: int, k: int) -> dict[str, Any]:
            return {"n": self.node_id, "h": group, "p": [i, k]} if full else {"n": self.node_id, "h": group}

        frames = pack(items, message, FRAME_BUDGET_BYTES)
        for frame in frames:
            self.bus.broadcast(KIND_CLUSTER, frame)
        return len(frames)

    def _next_seq(self) -> int:
        """At least one more than the last, and never below the monotonic clock in µs: a
        restarted worker (a new process, same index) continues above its predecessor."""
        self._seq = max(self._seq + 1, time.monotonic_ns() // 1000)
        return self._seq

    async def _push_round(self, due: bool) -> bool:
        full = due or self._full_soon
        self.push(full=full)
        return full

    async def _health_round(self, due: bool) -> bool:
        full = due or self._health_full_soon
        self.publish_health(full=full)
        return full

    def _forget_silent(self) -> None:
        now = self._clock()
        for node, heard in list(self._heard.items()):
            if now - heard > NODE_TTL_S:
                del self._heard[node]
                self.calls.forget_node(node)
                log.warning(
                    "cluster: worker %s silent for %.0f s; its calls no longer count", node, NODE_TTL_S
                )
        probing = self.probing()
        if probing != self._was_probing:
            self._was_probing = probing
            if probing:
                log.warning("cluster: worker 0 publishes no gateway states; this worker probes for itself")
            else:
                log.info("cluster: worker 0 publishes gateway states again; this worker stops probing")

    # -- receiving -----------------------------------------------------------------------------

    def on_frame(self, sender: int, payload: bytes) -> None:
        """Apply one :data:`KIND_CLUSTER` frame from worker ``sender`` (the bus handler).
        Malformed frames (not JSON, wrong shape, a sender that is out of range, this worker, or
        not the ``n`` it claims) are counted in :attr:`messages_rejected` and dropped; never
        raises."""
        if self._closed:
            return
        node = worker_node_id(sender) if 0 <= sender < self.bus.count and sender != self.index else None
        try:
            event = json.loads(payload) if node is not None else None
            if not isinstance(event, dict) or event.get("n") != node:
                raise ValueError("not a message of its sender")
            part = _part(event.get("p"))
        except MESSAGE_ERRORS:
            self.messages_rejected += 1
            return
        assert node is not None
        now = self._clock()
        if event.get("bye"):
            self.apply_limits(node, event, now)
            self._heard.pop(node, None)
            if sender == PROBER_INDEX:
                self._prober_seen_at = -math.inf  # probe for ourselves until it is back
            log.info("cluster: worker %s left; its calls no longer count", node)
            return
        if "h" in event:
            applied = self._apply_health(sender, event["h"], part, now)
        else:
            applied = self.apply_limits(node, event, now, replace=self._replacer(part))
        if not applied:
            return
        if node not in self._heard or event.get("hi"):
            self._greet()
        self._heard[node] = now

    @staticmethod
    def _replacer(part: tuple[int, int] | None) -> Callable[[str], bool] | None:
        if part is None:
            return None
        i, k = part
        return (lambda key: True) if k == 1 else (lambda key: part_of(key, k) == i)

    def _apply_health(self, sender: int, states: Any, part: tuple[int, int] | None, now: float) -> bool:
        """Worker 0's gateway states into :attr:`health` (see the module docstring)."""
        if (
            sender != PROBER_INDEX
            or not isinstance(states, dict)
            or not all(value is None or isinstance(value, str) for value in states.values())
        ):
            self.messages_rejected += 1
            return False
        changes: dict[str, str | None] = {
            field: value for field, value in states.items() if value is not None
        }
        if part is not None:
            i, k = part
            changes.update(
                {
                    field: None
                    for field, crc in self._published.items()
                    if crc % k == i and field not in states
                }
            )
        self.health.update_published(changes, time.time() - now)
        for field, value in changes.items():
            if value is None:
                self._published.pop(field, None)
            else:
                self._published[field] = zlib.crc32(field.encode())
        self._prober_seen_at = now
        self.messages_applied += 1
        return True

    def _greet(self) -> None:
        """A worker that just started (its first refresh says ``"hi"``) or is heard from for the
        first time (its hello was lost, or it is back after a silence) gets everything soon:
        the next push is a full refresh, so is worker 0's next publication."""
        self._full_soon = True
        self._push.set()
        if self.index == PROBER_INDEX:
            self._health_full_soon = True
            self._health_wake.set()


__all__ = [
    "CLOSE_TIMEOUT_S",
    "FRAME_BUDGET_BYTES",
    "HEALTH_PUSH_COALESCE_S",
    "MAX_PARTS",
    "PROBER_INDEX",
    "WorkerCluster",
    "pack",
    "part_of",
    "worker_node_id",
]
