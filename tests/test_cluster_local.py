"""Cluster state between the workers of one machine: WorkerCluster over the worker bus.

Most tests run two or three WorkerCluster instances on a fake clock, joined by a fake bus that
holds every frame until the test delivers it (so a test can drop or reorder frames); the B2BUA
tests put a whole sans-I/O SBC (tests.b2bua_harness) behind each worker. The last test runs real
WorkerBus sockets on the running loop, with bounded polls for the expected state.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from routing.health import DOWN_AFTER_FAILURES
from routing.limits import LimitHit, LimitScope, check_limits
from routing.model import Carrier, Gateway
from sbc.cluster import WorkerCluster
from sbc.cluster.base import NODE_TTL_S, PROBER_LEASE_TTL_S
from sbc.cluster.local import FRAME_BUDGET_BYTES, pack, part_of
from sbc.sip.message import Request
from sbc.workers import WorkerInfo
from sbc.workers.bus import KIND_CLUSTER, WorkerBus, socket_mesh
from tests import b2bua_harness
from tests.b2bua_harness import (
    DIALLED,
    DID,
    GW_A,
    GW_B,
    PBX,
    PBX_SDP,
    Net,
    establish_inbound,
    reply,
    snapshot,
)
from tests.test_cluster_state import CARRIER, GW, T0, until

TELCO = LimitScope("carrier", "telco", max_calls=2)


# --- a fake bus: frames held until delivered ---------------------------------------------------


@dataclass
class Frame:
    sender: int
    to: int
    kind: int
    payload: bytes


class FakeNet:
    """The buses of ``count`` workers; what they send waits in :attr:`queue` for :meth:`deliver`."""

    def __init__(self, count: int) -> None:
        self.buses = [FakeBus(self, i, count) for i in range(count)]
        self.queue: list[Frame] = []

    def deliver(self, drop: Callable[[Frame], bool] = lambda frame: False) -> int:
        """Hand every queued frame (and those sent meanwhile) to its receiver's handler, in
        order, except those ``drop`` picks; returns how many were delivered."""
        delivered = 0
        while self.queue:
            frame = self.queue.pop(0)
            handler = self.buses[frame.to].handlers.get(frame.kind)
            if handler is not None and not drop(frame):
                handler(frame.sender, frame.payload)
                delivered += 1
        return delivered


class FakeBus:
    """The send/broadcast/on surface of :class:`sbc.workers.bus.WorkerBus`."""

    def __init__(self, net: FakeNet, index: int, count: int) -> None:
        self.net, self.index, self.count = net, index, count
        self.handlers: dict[int, Callable[[int, bytes], None]] = {}

    def on(self, kind: int, handler: Callable[[int, bytes], None]) -> None:
        self.handlers[kind] = handler

    def send(self, to: int, kind: int, payload: bytes) -> bool:
        if to == self.index:
            return False
        self.net.queue.append(Frame(self.index, to, kind, payload))
        return True

    def broadcast(self, kind: int, payload: bytes) -> int:
        return sum(self.send(i, kind, payload) for i in range(self.count) if i != self.index)


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Workers:
    net: FakeNet
    clock: Clock
    all: list[WorkerCluster] = field(default_factory=list)

    def add(self, index: int, clock: Callable[[], float] | None = None) -> WorkerCluster:
        """A worker on bus ``index`` (replacing one there before: a restart), wired as start() does."""
        worker = WorkerCluster(self.net.buses[index], clock=clock or self.clock)  # type: ignore[arg-type]
        self.net.buses[index].on(KIND_CLUSTER, worker.on_frame)
        if index < len(self.all):
            self.all[index] = worker
        else:
            self.all.append(worker)
        return worker

    def sync(self, *, full: bool = False) -> None:
        """Every worker pushes what changed (everything when ``full``); every frame arrives."""
        for worker in self.all:
            worker.push(full=full)
        self.net.deliver()


def workers(count: int) -> tuple[Workers, list[WorkerCluster]]:
    group = Workers(FakeNet(count), Clock())
    for i in range(count):
        group.add(i)
    group.sync(full=True)  # as start() does: each says hello...
    group.sync()  # ...and the others answer with a full refresh
    assert group.net.queue == [] and all(not w._full_soon for w in group.all)
    return group, group.all


def admit(worker: WorkerCluster, scope: LimitScope = TELCO, now: float = T0) -> LimitHit | None:
    """What the B2BUA does for a new call: check_limits on the worker's mirrors."""
    return check_limits([scope], now, worker.rates, worker.calls)


# --- limits -----------------------------------------------------------------------------------


def test_max_calls_holds_across_three_workers() -> None:
    group, (w0, w1, w2) = workers(3)
    assert admit(w0) is None
    group.sync()
    assert (w1.calls.count("carrier:telco"), w2.calls.count("carrier:telco")) == (1, 1)
    assert admit(w1) is None
    group.sync()
    # Two calls in the cluster, one on each of w0 and w1: the third is refused wherever it comes.
    for worker in (w2, w0, w1):
        assert admit(worker) == LimitHit("carrier", "telco", "calls", 2)
    w0.calls.release(["carrier:telco"])
    group.sync()
    assert admit(w2) is None
    group.sync()
    assert [w.calls.own.count("carrier:telco") for w in (w0, w1, w2)] == [0, 1, 1]
    assert all(w.calls.count("carrier:telco") == 2 for w in (w0, w1, w2))
    assert w0.workers() == ["w1", "w2"] and w0.messages_rejected == 0


def test_max_cps_is_spent_by_every_worker() -> None:
    group, (w0, w1, w2) = workers(3)
    for worker in (w0, w1, w2):
        worker.rates.configure({"carrier:telco": 2.0})
    unlimited = LimitScope("carrier", "telco")
    assert admit(w0, unlimited) is None
    group.sync()
    assert admit(w1, unlimited) is None
    group.sync()
    # 2 cps shared: both tokens are spent, on every worker's copy of the bucket.
    for worker in (w0, w1, w2):
        assert worker.rates.tokens("carrier:telco", T0) == pytest.approx(0.0)
    assert admit(w2, unlimited) == LimitHit("carrier", "telco", "cps", 2.0)
    assert admit(w2, unlimited, now=T0 + 0.5) is None  # the bucket refills at the full rate


def test_a_lost_delta_is_repaired_by_the_next_full_refresh() -> None:
    group, (w0, w1) = workers(2)
    assert w0.calls.try_acquire(["k", "gone"], [None, None])
    assert w0.push(full=False) == 1
    group.net.deliver(drop=lambda frame: True)  # the delta is lost
    assert w1.calls.count("k") == 0
    w0.push(full=True)
    group.net.deliver()
    assert (w1.calls.count("k"), w1.calls.count("gone")) == (1, 1)
    # The worker frees a key and the delta saying so is lost: the refresh does not list the
    # key any more, and the receiver drops it (a refresh replaces the sender's counts).
    w0.calls.release(["gone"])
    w0.push(full=False)
    group.net.deliver(drop=lambda frame: True)
    assert w1.calls.count("gone") == 1
    w0.push(full=True)
    group.net.deliver()
    assert w1.calls.others() == {"w0": {"k": 1}}


def test_a_stale_message_never_rolls_a_worker_back() -> None:
    group, (w0, w1) = workers(2)
    assert w0.calls.try_acquire(["k"], [None])
    w0.push(full=False)
    assert w0.calls.try_acquire(["k"], [None])
    w0.push(full=False)
    group.net.queue.reverse()  # the newer state (2 calls) arrives first
    assert group.net.deliver() == 2
    assert w1.calls.count("k") == 2
    assert w1.messages_applied >= 2 and w1.messages_rejected == 0  # the old one was valid, only stale


def test_a_silent_worker_is_forgotten_after_the_ttl() -> None:
    group, (w0, w1, w2) = workers(3)
    assert w1.calls.try_acquire(["k"], [None]) and w2.calls.try_acquire(["k"], [None])
    group.sync()
    assert w0.calls.count("k") == 2
    # w1 crashes (no goodbye); w2 goes on refreshing.
    for _ in range(3):
        group.clock.now += NODE_TTL_S * 0.4
        w2.push(full=True)
        group.net.deliver()
        w0.push(full=True)  # the refresh is where a worker forgets the silent ones
        group.net.deliver()
        if group.clock.now - T0 <= NODE_TTL_S:
            assert w0.calls.count("k") == 2  # within the TTL: still counted
    assert w0.calls.count("k") == 1 and w0.workers() == ["w2"]
    assert w0.calls.others() == {"w2": {"k": 1}}


async def test_goodbye_forgets_a_worker_at_once() -> None:
    group, (w0, w1) = workers(2)
    assert w1.calls.try_acquire(["k"], [None])
    group.sync()
    assert w0.calls.count("k") == 1
    await w1.close()
    assert len(group.net.queue) == 1  # one goodbye, nothing after it
    group.net.deliver()
    assert w0.calls.count("k") == 0 and w0.workers() == []
    # Closed: it applies no more frames.
    applied = w1.messages_applied
    assert w0.calls.try_acquire(["k"], [None])
    w0.push(full=True)
    group.net.deliver()
    assert w1.messages_applied == applied and w1.calls.count("k") == 1  # its own call only
    await w1.close()  # idempotent: no second goodbye
    assert group.net.queue == []


def test_a_restarted_worker_replaces_its_predecessor_at_once() -> None:
    group, (w0, w1) = workers(2)
    assert w1.calls.try_acquire(["k", "k", "old"], [None, None, None])
    group.sync()
    assert w0.calls.count("k") == 2
    # w1 crashes and the supervisor starts a new process on the same index, with one call. Its
    # sequence numbers continue above the old process's, so w0 takes its state at once.
    new_w1 = group.add(1)
    assert new_w1.calls.try_acquire(["k"], [None])
    new_w1.push(full=True)
    group.net.deliver()
    assert w0.calls.others() == {"w1": {"k": 1}}


def test_a_new_worker_learns_the_others_calls_at_once() -> None:
    group, (w0, w1) = workers(2)
    assert w0.calls.try_acquire(["k"], [None])
    group.sync()
    assert w0.push(full=False) == 0  # nothing changed: nothing to send
    new_w1 = group.add(1)  # restarted: knows nothing
    new_w1.push(full=True)  # its first refresh says hello (as start() does)
    group.net.deliver()
    # w0 answers with its next push, even one with no changes: a full refresh.
    assert w0.push(full=False) == 1
    group.net.deliver()
    assert new_w1.calls.count("k") == 1


def test_a_worker_back_from_a_silence_is_greeted_too() -> None:
    group, (w0, w1) = workers(2)
    assert w0.calls.try_acquire(["k"], [None])
    group.sync()
    w1.calls.forget_others()  # what it knew is wrong, say (its hello was dropped...)
    group.clock.now += NODE_TTL_S + 0.1
    w0.push(full=True)  # w1 silent too long: forgotten
    group.net.deliver(drop=lambda frame: True)
    assert w0.workers() == []
    w1.push(full=True)  # heard again (no hello this time)
    group.net.deliver()
    assert w0.push(full=False) == 1
    group.net.deliver()
    assert w1.calls.count("k") == 1 and w0.workers() == ["w1"]


def test_malformed_frames_are_counted_and_dropped() -> None:
    group, (w0, w1, w2) = workers(3)
    applied = w0.messages_applied
    junk: list[tuple[int, bytes]] = [
        (1, b""),
        (1, b"\xff\xfe"),
        (1, b"not json"),
        (1, b"[]"),
        (1, b"[" * 100_000),
        (1, b'{"n":"w2","s":1,"c":{"k":1}}'),  # claims to be another worker
        (7, b'{"n":"w7","s":1,"c":{"k":1}}'),  # no such worker
        (0, b'{"n":"w0","s":1,"c":{"k":1}}'),  # from itself
        (1, b'{"n":"w1"}'),
        (1, b'{"n":"w1","s":"x"}'),
        (1, b'{"n":"w1","s":1,"c":[]}'),
        (1, b'{"n":"w1","s":1,"c":{"k":"x"}}'),
        (1, b'{"n":"w1","s":1,"c":{"k":Infinity}}'),
        (1, b'{"n":"w1","s":1,"r":{"k":null}}'),
        (1, b'{"n":"w1","s":1,"c":{},"p":[1,1]}'),
        (1, b'{"n":"w1","s":1,"c":{},"p":"ab"}'),
        (1, b'{"n":"w1","s":1,"c":{},"p":[0,100000]}'),
        (1, b'{"n":"w1","h":{}}'),  # only worker 0 publishes health
        (2, b'{"n":"w2","h":[]}'),
    ]
    for sender, payload in junk:
        w0.on_frame(sender, payload)  # never raises
    assert w0.messages_rejected == len(junk) and w0.messages_applied == applied
    assert w0.calls.others() == {"w1": {}, "w2": {}}
    w1.on_frame(0, b'{"n":"w0","h":{"x":1}}')  # a health state must be a string
    assert w1.messages_rejected == 1
    # Still listening.
    assert w1.calls.try_acquire(["k"], [None])
    group.sync()
    assert w0.calls.count("k") == 1


# --- frames that fit --------------------------------------------------------------------------


def test_a_large_refresh_is_split_into_parts_each_applicable_alone() -> None:
    group, (w0, w1) = workers(2)
    keys = [f"customer:customer-number-{i:05d}" for i in range(3000)]
    assert w0.calls.try_acquire(keys, [None] * len(keys))
    w0.push(full=True)
    frames = list(group.net.queue)
    assert len(frames) > 1 and all(len(f.payload) <= FRAME_BUDGET_BYTES for f in frames)
    group.net.deliver()
    assert w1.calls.others()["w0"] == dict.fromkeys(keys, 1)
    # A third of the calls end; the deltas saying so are lost, and so is the first part of the
    # next refresh: the other parts free their keys, the lost part's keys wait a period more.
    ended, kept = keys[::3], [key for i, key in enumerate(keys) if i % 3]
    w0.calls.release(ended)
    w0.push(full=False)
    group.net.deliver(drop=lambda frame: True)
    w0.push(full=True)
    lost = group.net.queue[0]
    i, k = json.loads(lost.payload)["p"]
    assert i == 0 and k > 1
    group.net.deliver(drop=lambda frame: frame is lost)
    still = {key for key in w1.calls.others()["w0"] if key in ended}
    assert still == {key for key in ended if part_of(key, k) == 0} and still
    assert all(w1.calls.others()["w0"].get(key) == 1 for key in kept)
    w0.push(full=True)
    group.net.deliver()
    assert w1.calls.others()["w0"] == dict.fromkeys(kept, 1)


def test_pack_keeps_one_frame_when_it_fits_and_splits_evenly_otherwise() -> None:
    def message(group: dict, i: int, k: int) -> dict:
        return {"c": group, "p": [i, k]}

    assert pack({"a": 1}, message, 100) == [b'{"c":{"a":1},"p":[0,1]}']
    items = {f"key-{i}": i for i in range(500)}
    frames = pack(items, message, 1000)
    decoded = [json.loads(f) for f in frames]
    assert all(len(f) <= 1000 for f in frames)
    assert {m["p"][1] for m in decoded} == {len(frames)}
    merged = {k: v for m in decoded for k, v in m["c"].items()}
    assert merged == items
    # One item too large for any frame: sent as it is rather than lost.
    assert len(pack({"big": "x" * 500}, message, 100)) == 1


# --- carrier health ---------------------------------------------------------------------------


def fail_probes(
    worker: WorkerCluster, carrier: str = "telco", gateway: Gateway = GW, now: float = T0
) -> None:
    for i in range(DOWN_AFTER_FAILURES):
        worker.health.record_probe(carrier, gateway, False, None, now + i)


def test_only_worker_0_probes_and_the_others_route_on_its_states() -> None:
    group, (w0, w1, w2) = workers(3)
    for worker in (w0, w1, w2):
        worker.health.sync([CARRIER], T0)
    assert [w.probing() for w in (w0, w1, w2)] == [True, False, False]
    assert w0.health.due_probes(T0) == [("telco", GW)]
    assert w1.health.due_probes(T0) == [] and w2.health.due_probes(T0) == []
    fail_probes(w0)
    assert w1.publish_health(full=False) == 0  # only worker 0 publishes
    assert w0.publish_health(full=False) == 1
    group.net.deliver()
    for worker in (w1, w2):
        assert not worker.health.is_up("telco", GW)
        assert worker.health.published("telco", GW)["by"] == "w0"
        status = worker.health.status("telco", GW)
        assert status is not None and (status.up, status.probes) == (False, DOWN_AFTER_FAILURES)
    assert w0.publish_health(full=False) == 0  # nothing probed since


def test_the_full_publication_removes_gone_gateways_and_keeps_unprobed_ones() -> None:
    group, (w0, w1) = workers(2)
    gw2 = Gateway(host="192.0.2.20", port=5060)
    other = Carrier(name="other", gateways=(gw2,), probe_interval_s=5.0)
    w0.health.sync([CARRIER, other], T0)
    fail_probes(w0)
    fail_probes(w0, "other", gw2)
    w0.publish_health(full=True)
    group.net.deliver()
    assert not w1.health.is_up("telco", GW) and w1.health.published("other", gw2) is not None
    w0.health.sync([CARRIER], T0 + 10)  # carrier "other" deprovisioned
    w0.publish_health(full=True)
    group.net.deliver()
    assert w1.health.published("other", gw2) is None and not w1.health.is_up("telco", GW)
    # Worker 0 restarts: it has probed nothing yet, and its full publication lists the gateway
    # without a state; the state its predecessor published stands until it has probed.
    new_w0 = group.add(0)
    new_w0.health.sync([CARRIER], T0 + 20)
    assert new_w0.publish_health(full=True) == 1
    group.net.deliver()
    assert not w1.health.is_up("telco", GW)
    new_w0.health.record_probe("telco", GW, True, 0.01, T0 + 21)
    new_w0.publish_health(full=False)
    group.net.deliver()
    assert w1.health.is_up("telco", GW) and w1.health.published("telco", GW)["probes"] == 1


def test_many_gateways_are_published_in_frames_that_fit() -> None:
    group, (w0, w1) = workers(2)
    carriers = [
        Carrier(
            name=f"carrier-{i:03d}",
            gateways=(Gateway(host=f"gw{i}.example.net", port=5060),),
            probe_interval_s=5.0,
        )
        for i in range(300)
    ]
    w0.health.sync(carriers, T0)
    for c in carriers:
        fail_probes(w0, c.name, c.gateways[0])
    w0.publish_health(full=False)
    frames = list(group.net.queue)
    assert len(frames) > 1 and all(len(f.payload) <= FRAME_BUDGET_BYTES for f in frames)
    group.net.deliver()
    assert not any(w1.health.is_up(c.name, c.gateways[0]) for c in carriers)
    w0.publish_health(full=True)
    assert len(group.net.queue) > 1
    group.net.deliver()
    assert not any(w1.health.is_up(c.name, c.gateways[0]) for c in carriers)


def test_when_worker_0_is_silent_the_others_probe_for_themselves() -> None:
    group, (w0, w1) = workers(2)
    for worker in (w0, w1):
        worker.health.sync([CARRIER], T0)
    w0.publish_health(full=True)
    group.net.deliver()
    assert not w1.probing()
    group.clock.now += PROBER_LEASE_TTL_S * 0.9
    assert not w1.probing()
    group.clock.now += PROBER_LEASE_TTL_S * 0.2  # worker 0 has published nothing for longer
    assert w1.probing()
    assert w1.health.due_probes(group.clock.now) == [("telco", GW)]
    fail_probes(w1, now=group.clock.now)
    assert not w1.health.is_up("telco", GW)  # its own probes decide now
    w0.publish_health(full=True)  # back
    group.net.deliver()
    assert not w1.probing()
    assert w1.health.due_probes(group.clock.now + 10) == []


async def test_worker_0_goodbye_makes_the_others_probe_at_once() -> None:
    group, (w0, w1) = workers(2)
    w0.publish_health(full=True)
    group.net.deliver()
    assert not w1.probing()
    await w0.close()
    group.net.deliver()
    assert w1.probing()


# --- whole SBCs behind the workers ------------------------------------------------------------


def worker_sbc(group: Workers, index: int, snap) -> tuple[Net, WorkerCluster]:
    """A sans-I/O SBC whose B2BUA is attached to a new worker ``index`` (on the SBC's clock)."""
    net = Net(snapshot())  # built before attaching; no gateway is probed in this first snapshot
    worker = group.add(index, clock=lambda: net.now)
    worker.attach(net.b2bua)
    net.b2bua.load(snap, net.now)  # as the app does: attached before the snapshot loads
    net.run_until(net.now)
    return net, worker


def test_two_sbcs_share_a_trunk_limit_through_their_workers() -> None:
    group = Workers(FakeNet(2), Clock())
    snap = snapshot(trunk_max_calls=2)
    (sbc0, w0), (sbc1, w1) = worker_sbc(group, 0, snap), worker_sbc(group, 1, snap)
    group.sync(full=True)
    group.sync()
    first = establish_inbound(sbc0)
    group.sync()
    establish_inbound(sbc1)
    group.sync()
    # The trunk's two calls are up, one on each SBC: a third is refused by either.
    for sbc in (sbc0, sbc1):
        carrier = sbc.peer(b2bua_harness.CARRIER, "carrier")
        third = carrier.invite(DID)
        carrier.take(100)
        refusal = carrier.take(503)
        third.ack(refusal)
        assert not sbc.peer(PBX, "pbx").has("INVITE")
    assert [cdr.end_reason for cdr in sbc0.cdrs + sbc1.cdrs] == ["Trunk calls limit reached"] * 2
    # The call on SBC 0 ends: SBC 1 admits again once the release has reached it.
    first.a.request("BYE")
    first.caller.take(200)
    first.b.respond(first.b.take_in_dialog("BYE"), 200)
    group.sync()
    assert w1.calls.count("trunk:acme/pbx") == 1
    carrier = sbc1.peer(b2bua_harness.CARRIER, "carrier")
    carrier.invite(DID)
    assert sbc1.peer(PBX, "pbx").has("INVITE")
    group.sync()
    assert w0.calls.count("trunk:acme/pbx") == w1.calls.count("trunk:acme/pbx") == 2


def test_only_worker_0_sends_options_and_the_other_routes_around_its_down_gateway() -> None:
    group = Workers(FakeNet(2), Clock())
    snap = snapshot(carrier_a={"probe_interval_s": 5.0})
    (sbc0, w0), (sbc1, w1) = worker_sbc(group, 0, snap), worker_sbc(group, 1, snap)
    gw_a0, gw_a1 = sbc0.peer(GW_A, "gwa"), sbc1.peer(GW_A, "gwa")
    assert gw_a0.has("OPTIONS") and not gw_a1.has("OPTIONS")  # due at load: only worker 0 probes
    for _ in range(DOWN_AFTER_FAILURES):
        gw_a0.send(reply(gw_a0.take("OPTIONS"), 503))
        sbc0.advance(5.0)
    assert not sbc0.b2bua.health.is_up("A", Gateway("127.0.0.4", 5060))
    w0.publish_health(full=False)
    group.net.deliver()
    sbc1.peer(PBX, "pbx").invite(DIALLED, body=PBX_SDP)
    assert sbc1.peer(GW_B, "gwb").has("INVITE") and not gw_a1.has("INVITE")
    assert not gw_a1.has("OPTIONS")
    # Worker 0 falls silent: after the lease, SBC 1 probes for itself.
    sbc1.advance(PROBER_LEASE_TTL_S + 5.0)
    assert any(isinstance(m, Request) and m.method == "OPTIONS" for m in gw_a1.inbox)
    assert w1.probing()


# --- real WorkerBus sockets -------------------------------------------------------------------


@pytest.fixture
async def bus_workers() -> AsyncIterator[list[WorkerCluster]]:
    """Three started workers on a real socket-pair mesh; all closed at the end."""
    mesh = socket_mesh(3)
    buses = [WorkerBus(WorkerInfo(i, 3, "test"), mesh[i]) for i in range(3)]
    clusters: list[WorkerCluster] = []
    try:
        for bus in buses:
            bus.start()
        for bus in buses:
            cluster = WorkerCluster(bus)
            await cluster.start()
            clusters.append(cluster)
        yield clusters
    finally:
        for cluster in clusters:
            await cluster.close()
        for bus in buses:
            bus.close()


async def test_workers_on_real_buses_share_limits_and_health(bus_workers: list[WorkerCluster]) -> None:
    w0, w1, w2 = bus_workers
    key = TELCO.key
    assert await until(lambda: all(len(w.workers()) == 2 for w in bus_workers))
    now = asyncio.get_running_loop().time()
    assert admit(w0, now=now) is None
    assert await until(lambda: w1.calls.count(key) == 1 and w2.calls.count(key) == 1)
    assert admit(w1, now=now) is None
    assert await until(lambda: w2.calls.count(key) == 2)
    assert admit(w2, now=now) == LimitHit("carrier", "telco", "calls", 2)
    # Carrier health: worker 0 probes, the others take its verdict.
    loop = asyncio.get_running_loop()
    for worker in bus_workers:
        worker.health.sync([CARRIER], loop.time())
    assert [w.probing() for w in bus_workers] == [True, False, False]
    fail_probes(w0, now=loop.time())
    assert await until(lambda: not w1.health.is_up("telco", GW) and not w2.health.is_up("telco", GW))
    assert w2.health.published("telco", GW)["by"] == "w0"
    # Worker 1 stops: its call stops counting at once, far sooner than the TTL.
    await w1.close()
    assert await until(lambda: w2.calls.count(key) == 1, timeout_s=NODE_TTL_S / 2)
    assert admit(w2, now=now) is None
    assert all(w.messages_rejected == 0 for w in bus_workers)
