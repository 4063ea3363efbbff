"""What every carrier of the cluster state shares, whatever moves its messages.

:class:`ClusterNode` owns the three mirrors the B2BUA calls synchronously (:attr:`~ClusterNode.calls`,
:attr:`~ClusterNode.rates`, :attr:`~ClusterNode.health`), wires them into a B2BUA
(:meth:`~ClusterNode.attach`), applies another node's limits message (:meth:`~ClusterNode.apply_limits`)
and runs the coalescing push loop (:meth:`~ClusterNode._run_rounds`). Its subclasses move the
messages: :class:`sbc.cluster.node.RedisCluster` through Redis between machines,
:class:`sbc.cluster.local.WorkerCluster` over the worker bus between the processes of one
``sbc run --workers N``.

Limits messages are JSON objects, the same in both modes::

    {"n": node, "s": seq, "c": {key: count}, "r": {key: admitted}}   counts changed, admissions made
    {"n": node, "bye": 1}                                            the node left: forget its calls

``c`` carries absolute counts (0: the node holds no call on the key any more), so applying the
newest message is enough; ``s`` grows with every message of a node, and a message not newer than
the last one applied is stale (:meth:`sbc.cluster.limits.ClusterCalls.apply_message`). ``r``
carries the calls-per-second tokens the node spent since its previous message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .health import ClusterHealthTable
from .limits import ClusterCalls, ClusterRates

#: Shortest gap between two pushes of this node's changes. Coalesces a burst (each call changes
#: counts two or three times) into one message: at most 200 pushes a second per node whatever
#: the call rate, for 5 ms of extra consistency window.
PUSH_COALESCE_S = 0.005
#: Full refresh period: every node re-sends all its counts. 100 ms bounds how long a lost message
#: can leave another node's view wrong, at 10 small messages a second per node.
REFRESH_INTERVAL_S = 0.1
#: A node not heard from for this long is dead and the others drop its calls. 20 refresh
#: periods, so a node whose loop stalls briefly (the overload guard starts shedding at 100 ms of
#: lag) is not taken for dead, while a crashed node's calls stop blocking the others' admissions
#: within 2 s (a SIP caller retrying after a 503 waits longer than that).
NODE_TTL_S = 2.0
#: Health publication period. Gateways are probed every few seconds at most
#: (routing.health.MIN_PROBE_INTERVAL_S is 1 s) with 3-probe hysteresis, so states a second old
#: are as good as fresh.
HEALTH_INTERVAL_S = 1.0
#: The prober's right to probe lapses this long after it was last seen doing its job (its lease
#: renewed in Redis, its states published on the bus). In Redis mode another node takes the lease
#: at most this plus one HEALTH_INTERVAL_S after the prober died; between workers the others
#: probe for themselves until worker 0 publishes again.
PROBER_LEASE_TTL_S = 5.0

#: What a malformed message raises while it is parsed (JSON of the wrong shape or values):
#: counted and dropped. OverflowError: ``int(float("inf"))``, JSON allows ``Infinity``.
MESSAGE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError)


def encode(message: Mapping[str, Any]) -> str:
    """A message as compact JSON (ASCII only, so its length in characters is its size in bytes)."""
    return json.dumps(message, separators=(",", ":"))


async def wait_event(event: asyncio.Event, timeout_s: float) -> None:
    """Wait until ``event`` is set or ``timeout_s`` passes. ``asyncio.timeout`` rather than
    ``asyncio.wait_for``: on Python 3.11 the latter can swallow a cancellation that arrives as
    the event is set, and a background task that ignores its cancellation never stops."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


class ClusterNode:
    """This node's share of the cluster state: the mirrors and what is common to moving them.

    Subclasses implement :meth:`probing` and the transport; they call :meth:`_wake_push` and
    :meth:`_wake_health` (the mirrors do, on every change) and run :meth:`_run_rounds`.
    """

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.calls = ClusterCalls(on_change=self._wake_push)
        self.rates = ClusterRates(on_change=self._wake_push)
        self.health = ClusterHealthTable(self.probing, on_change=self._wake_health)
        self._push = asyncio.Event()
        self._health_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = 0  # sequence number of this node's last limits message
        self.messages_applied = 0
        self.messages_rejected = 0

    # -- wiring --------------------------------------------------------------------------------

    def attach(self, b2bua: Any) -> None:
        """Make ``b2bua`` (a :class:`sbc.b2bua.engine.B2BUA`) admit calls and route on gateway
        health through this cluster: its rate and concurrency limiters and its prober's health
        table are replaced. Call before its first ``load()``; calls in progress would otherwise
        be counted in the old limiter."""
        b2bua.rates = self.rates
        b2bua.calls_in_progress = self.calls
        b2bua.prober.table = self.health
        b2bua.health = self.health

    def probing(self) -> bool:
        """Whether this node sends the OPTIONS probes. Called on every routing decision and
        every probe-schedule tick: it must be cheap."""
        raise NotImplementedError

    def _wake_push(self) -> None:
        self._push.set()

    def _wake_health(self) -> None:
        self._health_wake.set()

    # -- limits messages -----------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def apply_limits(
        self, node: str, event: Mapping[str, Any], now: float, *, replace: Callable[[str], bool] | None = None
    ) -> bool:
        """Apply one limits message of ``node`` (decoded; see the module docstring) at ``now``
        on the loop's clock: its counts into :attr:`calls`, its admissions debited from
        :attr:`rates`, a goodbye forgets the node. ``replace`` makes it a full refresh of the
        node's keys it selects (:meth:`ClusterCalls.apply_message`). Returns ``False``, counted
        in :attr:`messages_rejected` and nothing changed, for a malformed message. A stale
        message (not newer than one applied) leaves the counts but still debits its admissions:
        they are tokens really spent."""
        try:
            if event.get("bye"):
                self.calls.forget_node(node)
                self.messages_applied += 1
                return True
            seq = int(event["s"])
            counts = {str(k): int(v) for k, v in event.get("c", {}).items()}
            admitted = {str(k): int(v) for k, v in event.get("r", {}).items()}
        except MESSAGE_ERRORS:
            self.messages_rejected += 1
            return False
        self.calls.apply_message(node, seq, counts, replace=replace)
        for key, n in admitted.items():
            self.rates.debit(key, n, now)
        self.messages_applied += 1
        return True

    # -- background work -----------------------------------------------------------------------

    async def _run_rounds(
        self,
        wake: asyncio.Event,
        step: Callable[[bool], Awaitable[bool]],
        *,
        period_s: Callable[[], float],
        gap_s: Callable[[], float],
        errors: tuple[type[BaseException], ...] = (),
        failed: Callable[[BaseException], Awaitable[None]] | None = None,
    ) -> None:
        """Run ``await step(due)`` soon after ``wake`` is set, at most once per ``gap_s()``
        (changes made meanwhile go out together), and at least every ``period_s()`` with ``due``
        true (a full round is due). ``step`` returns whether it did a full round (the next one
        is then a period away). An exception of ``errors`` is handed to ``failed`` and the next
        round is full and immediate. Runs until cancelled; the periods are read at every round,
        so a test may shorten them."""
        loop = asyncio.get_running_loop()
        next_full = loop.time() + period_s()
        while True:
            wait = next_full - loop.time()
            if wait > 0 and not wake.is_set():
                await wait_event(wake, wait)
            wake.clear()
            try:
                if await step(loop.time() >= next_full):
                    next_full = loop.time() + period_s()
            except errors as exc:
                if failed is not None:
                    await failed(exc)
                next_full = loop.time()
                continue
            await asyncio.sleep(gap_s())

    async def _stop_tasks(self, timeout_s: float) -> None:
        """Cancel the background tasks and wait up to ``timeout_s`` for them to end."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout_s)
        self._tasks = []


__all__ = [
    "HEALTH_INTERVAL_S",
    "MESSAGE_ERRORS",
    "NODE_TTL_S",
    "PROBER_LEASE_TTL_S",
    "PUSH_COALESCE_S",
    "REFRESH_INTERVAL_S",
    "ClusterNode",
    "encode",
    "wait_event",
]
