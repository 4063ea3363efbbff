"""Cluster-wide limits and carrier health: the mirrors alone, then several nodes on a real Redis.

The Redis tests run against the redis-server that ``scripts/services.sh`` starts (each test with
its own key prefix) and skip only when ``SBC_TEST_REDIS_URL`` is unset. Waits are bounded polls
for an expected state, never timing assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis

import sbc.cluster.node as node_module
from routing.health import DOWN_AFTER_FAILURES
from routing.limits import LimitHit, LimitScope, check_limits
from routing.model import Carrier, Gateway
from sbc.cluster import ClusterCalls, ClusterHealthTable, ClusterRates, RedisCluster
from sbc.cluster.health import health_field, parse_health_field
from sbc.config import ConfigError, load_settings
from tests.sbcproc import free_port

T0 = 1000.0
GW = Gateway(host="192.0.2.10", port=5060)
CARRIER = Carrier(name="telco", gateways=(GW,), probe_interval_s=5.0)
#: Longest a bounded poll waits for the cluster to converge (pub/sub takes milliseconds; the
#: fallback refresh 100 ms; health rounds 1 s): generous for a loaded 2-core machine.
CONVERGE_TIMEOUT_S = 5.0


# --- ClusterCalls: the concurrency mirror -----------------------------------------------------


def test_admission_counts_other_nodes_calls() -> None:
    calls = ClusterCalls()
    calls.apply_message("b", 1, {"carrier:telco": 2})
    assert calls.count("carrier:telco") == 2
    assert calls.try_acquire(["carrier:telco"], [3])
    assert calls.count("carrier:telco") == 3
    assert not calls.try_acquire(["carrier:telco"], [3])
    assert calls.own.count("carrier:telco") == 1
    assert calls.try_acquire(["carrier:telco"], [None])  # unlimited: always


def test_refusal_changes_nothing_and_check_limits_names_the_scope() -> None:
    calls = ClusterCalls()
    calls.apply_message("b", 1, {"customer:acme": 1})
    scopes = [LimitScope("customer", "acme", 5), LimitScope("carrier", "telco", 1)]
    calls.apply_message("c", 1, {"carrier:telco": 1})
    hit = check_limits(scopes, T0, ClusterRates(), calls)
    assert hit == LimitHit("carrier", "telco", "calls", 1)
    assert calls.own.count("customer:acme") == 0 and calls.take_dirty() == {}


def test_changes_are_reported_with_absolute_counts() -> None:
    woken: list[int] = []
    calls = ClusterCalls(on_change=lambda: woken.append(1))
    assert calls.try_acquire(["a", "b"], [None, None])
    calls.release(["a"])
    assert calls.take_dirty() == {"a": 0, "b": 1}
    assert calls.take_dirty() == {}
    assert calls.own_counts() == {"b": 1}
    assert len(woken) == 2
    calls.restore_dirty({"b": 1})
    assert calls.take_dirty() == {"b": 1}


def test_double_release_and_bad_arguments_raise() -> None:
    calls = ClusterCalls()
    with pytest.raises(ValueError, match="without a matching acquire"):
        calls.release(["a"])
    with pytest.raises(ValueError, match="2 keys but 1 limits"):
        calls.try_acquire(["a", "b"], [1])
    with pytest.raises(ValueError, match=">= 0"):
        calls.try_acquire(["a"], [-1])


def test_stale_messages_and_reads_never_roll_a_node_back() -> None:
    calls = ClusterCalls()
    assert calls.apply_message("b", 5, {"k": 3})
    assert not calls.apply_message("b", 4, {"k": 1})  # older than what is known
    assert calls.count("k") == 3
    calls.apply_full({"b": (4, {"k": 1})})  # a read taken before message 5 was published
    assert calls.count("k") == 3
    calls.apply_full({"b": (6, {"k": 2})})
    assert calls.count("k") == 2
    assert calls.apply_message("b", 7, {"k": 0})
    assert calls.count("k") == 0 and calls.others() == {"b": {}}


def test_full_read_drops_nodes_that_are_gone() -> None:
    calls = ClusterCalls()
    calls.apply_message("b", 1, {"k": 1})
    calls.apply_message("c", 1, {"k": 2})
    calls.apply_full({"c": (1, {"k": 2})})
    assert calls.count("k") == 2 and set(calls.others()) == {"c"}
    calls.forget_node("c")
    assert calls.count("k") == 0
    calls.apply_message("d", 1, {"k": 4})
    calls.forget_others()
    assert calls.count("k") == 0 and calls.others() == {}


# --- ClusterRates: the calls-per-second mirror -------------------------------------------------


def test_rate_admissions_are_recorded_for_publishing() -> None:
    rates = ClusterRates()
    rates.configure({"carrier:telco": 2.0, "customer:acme": None})
    assert rates.allow_all(["carrier:telco", "customer:acme"], T0) is None
    assert rates.allow("carrier:telco", T0)
    assert rates.allow_all(["carrier:telco"], T0) == "carrier:telco"  # burst of 2 spent
    assert rates.take_admitted() == {"carrier:telco": 2}
    assert rates.take_admitted() == {}


def test_other_nodes_admissions_drain_the_bucket_into_bounded_debt() -> None:
    rates = ClusterRates()
    rates.configure({"k": 10.0})
    rates.debit("k", 4, T0)
    assert rates.tokens("k", T0) == pytest.approx(6.0)
    rates.debit("k", 100, T0)
    assert rates.tokens("k", T0) == pytest.approx(-10.0)  # debt at most one burst
    assert rates.allow("k", T0 + 1.0) is False  # the refill pays the debt back first
    assert rates.allow("k", T0 + 1.1) is True
    rates.debit("unlimited", 5, T0)
    assert rates.tokens("unlimited", T0) == math.inf
    rates.debit("k", 1, math.nan)  # ignored, not a poisoned bucket
    assert math.isfinite(rates.tokens("k", T0 + 2))


# --- ClusterHealthTable ------------------------------------------------------------------------


def test_follower_keeps_the_schedule_but_never_probes() -> None:
    prober = {"on": False}
    table = ClusterHealthTable(lambda: prober["on"])
    table.sync([CARRIER], T0)
    assert table.due_probes(T0) == []
    assert table.next_due_at() == T0 + CARRIER.probe_interval_s  # consumed, rescheduled
    prober["on"] = True
    assert table.due_probes(T0 + CARRIER.probe_interval_s) == [("telco", GW)]


def test_follower_routes_on_published_states_prober_on_its_own() -> None:
    woken: list[int] = []
    leader = ClusterHealthTable(lambda: True, on_change=lambda: woken.append(1))
    leader.sync([CARRIER], T0)
    for i in range(DOWN_AFTER_FAILURES):
        leader.record_probe("telco", GW, False, None, T0 + i)
    assert leader.dirty and woken and not leader.is_up("telco", GW)
    entries, tracked = leader.take_entries("node-a", 1.7e9)
    assert not leader.dirty and set(entries) == tracked == {health_field(("telco", "192.0.2.10", 5060, "udp"))}

    follower = ClusterHealthTable(lambda: False)
    follower.sync([CARRIER], T0)
    assert follower.is_up("telco", GW)  # nothing published yet
    follower.apply_published(
        {**entries, "junk": "{}", health_field(("x", "h", 1, "udp")): "not json"}, wall_offset=1.7e9 - T0
    )
    assert not follower.is_up("telco", GW)
    assert follower.published("telco", GW)["by"] == "node-a"
    # What the API shows on a follower is the prober's view, on the follower's clock.
    status = follower.status("telco", GW)
    assert status is not None and follower.snapshot() == [status]
    assert (status.up, status.probes, status.consecutive_failures) == (False, DOWN_AFTER_FAILURES, DOWN_AFTER_FAILURES)
    assert status.last_probe_at == pytest.approx(T0)
    assert leader.snapshot()[0].last_probe_at == T0 + DOWN_AFTER_FAILURES - 1  # the prober's own
    # A new prober that has not probed a gateway yet keeps the published verdict.
    newcomer = ClusterHealthTable(lambda: True)
    newcomer.sync([CARRIER], T0)
    newcomer.apply_published(entries)
    assert not newcomer.is_up("telco", GW)
    newcomer.record_probe("telco", GW, True, 0.01, T0)
    assert newcomer.is_up("telco", GW)  # its own probe now decides (starts up, needs failures)


def test_health_fields_round_trip_and_junk_is_refused() -> None:
    key = ("telco", "gw.example.net", 5061, "tls")
    assert parse_health_field(health_field(key)) == key
    for junk in ("", "[]", '["a","b","c"]', '["a","b","5060","udp"]', "{}"):
        assert parse_health_field(junk) is None


# --- settings --------------------------------------------------------------------------------


def test_redis_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().redis_url == ""  # default: this node alone
    monkeypatch.setenv("SBC_REDIS_URL", "redis://10.0.0.5:6379/2")
    monkeypatch.setenv("SBC_REDIS_PREFIX", "eu-west")
    settings = load_settings()
    assert (settings.redis_url, settings.redis_prefix) == ("redis://10.0.0.5:6379/2", "eu-west")
    assert load_settings({"redis_url": "rediss://cache:6380/0"}).redis_url == "rediss://cache:6380/0"
    with pytest.raises(ConfigError, match="redis_url"):
        load_settings({"redis_url": "http://cache:6379"})
    with pytest.raises(ConfigError, match="redis_prefix"):
        load_settings({"redis_prefix": "has space"})


# --- several nodes on a real Redis ------------------------------------------------------------


async def until(predicate: Callable[[], bool], timeout_s: float = CONVERGE_TIMEOUT_S) -> bool:
    """Poll ``predicate`` on the loop until it holds or ``timeout_s`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


@pytest.fixture
async def nodes(redis_url: str, redis_prefix: str) -> AsyncIterator[Callable[[], RedisCluster]]:
    """A factory of started cluster nodes sharing one prefix; all are closed at the end."""
    started: list[RedisCluster] = []

    async def make() -> RedisCluster:
        node = RedisCluster(redis_url, prefix=redis_prefix)
        await node.start()
        started.append(node)
        return node

    try:
        yield make  # type: ignore[misc]
    finally:
        for node in started:
            await node.close()
        client = aioredis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(match=f"{{{redis_prefix}}}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def crash(node: RedisCluster) -> None:
    """Stop a node the way a crash would: no goodbye, its keys are left to expire."""
    for task in node._tasks:
        task.cancel()
    for task in node._tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    node._tasks = []
    assert node._redis is not None
    await node._redis.aclose()
    node._redis = None


async def test_one_limit_across_nodes(nodes: Callable) -> None:
    a, b = await nodes(), await nodes()
    assert a.calls.try_acquire(["carrier:telco"], [2])
    assert await until(lambda: b.calls.count("carrier:telco") == 1)
    assert b.calls.try_acquire(["carrier:telco"], [2])
    assert await until(lambda: a.calls.count("carrier:telco") == 2)
    assert not a.calls.try_acquire(["carrier:telco"], [2])
    assert not b.calls.try_acquire(["carrier:telco"], [2])
    a.calls.release(["carrier:telco"])
    assert await until(lambda: b.calls.count("carrier:telco") == 1)
    assert b.calls.try_acquire(["carrier:telco"], [2])


async def test_a_node_that_starts_later_sees_the_calls_up(nodes: Callable, redis_url: str, redis_prefix: str) -> None:
    a = await nodes()
    assert a.calls.try_acquire(["customer:acme", "customer:acme"], [None, None])
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONVERGE_TIMEOUT_S
        while await client.hget(f"{{{redis_prefix}}}:calls:{a.node_id}", "customer:acme") != "2":
            assert loop.time() < deadline, "A never published its calls"
            await asyncio.sleep(0.01)
    finally:
        await client.aclose()
    late = await nodes()
    assert late.calls.count("customer:acme") == 2  # learnt in start(), before its first call


async def test_clean_stop_frees_the_calls_at_once(nodes: Callable) -> None:
    a, b = await nodes(), await nodes()
    assert a.calls.try_acquire(["k"], [None])
    assert await until(lambda: b.calls.count("k") == 1)
    await a.close()
    # Sooner than A's entry could expire: the goodbye removed A's calls.
    assert await until(lambda: b.calls.count("k") == 0, timeout_s=node_module.NODE_TTL_S * 0.75)


async def test_a_crashed_nodes_calls_expire(nodes: Callable, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(node_module, "NODE_TTL_S", 1.0)  # passed to Redis on every refresh
    a, b = await nodes(), await nodes()
    assert a.calls.try_acquire(["k"], [None])
    assert await until(lambda: b.calls.count("k") == 1)
    await crash(a)
    assert b.calls.count("k") == 1  # no goodbye: the calls count until A's entry expires
    assert await until(lambda: b.calls.count("k") == 0)


async def test_rate_admissions_drain_every_nodes_bucket(nodes: Callable) -> None:
    a, b = await nodes(), await nodes()
    for node in (a, b):
        node.rates.configure({"carrier:telco": 3.0})
    # B's bucket is looked at as of `now` throughout: the debit arrives later (on the loop's
    # clock), so no refill happens in between and the arithmetic does not depend on load.
    now = asyncio.get_running_loop().time()
    assert b.rates.tokens("carrier:telco", now) == 3.0
    assert a.rates.allow_all(["carrier:telco", "carrier:telco"], now) is None
    assert await until(lambda: b.rates.tokens("carrier:telco", now) < 2.0)
    assert b.rates.allow("carrier:telco", now)
    assert not b.rates.allow("carrier:telco", now)  # 3 cps shared: the burst is gone


async def test_one_node_probes_and_all_route_on_its_results(nodes: Callable) -> None:
    a, b = await nodes(), await nodes()
    assert [a.probing(), b.probing()].count(True) == 1
    prober, other = (a, b) if a.probing() else (b, a)
    loop = asyncio.get_running_loop()
    for node in (a, b):
        node.health.sync([CARRIER], loop.time())
    assert other.health.due_probes(loop.time()) == []
    for _ in range(DOWN_AFTER_FAILURES):
        prober.health.record_probe("telco", GW, False, None, loop.time())
    assert await until(lambda: not other.health.is_up("telco", GW))
    assert other.health.published("telco", GW)["by"] == prober.node_id
    # The prober leaves: its lease goes with it and the other node takes over probing.
    await prober.close()
    assert await until(lambda: other.probing(), timeout_s=node_module.HEALTH_INTERVAL_S * 3)
    assert not other.health.is_up("telco", GW)  # the last published state still holds


async def test_garbage_on_the_channel_is_counted_not_fatal(nodes: Callable, redis_url: str) -> None:
    a, b = await nodes(), await nodes()
    client = aioredis.from_url(redis_url)
    try:
        for junk in ("not json", json.dumps({"n": "x"}), json.dumps({"n": "x", "s": "y"}), "[]"):
            await client.publish(f"{{{a.prefix}}}:events", junk)
    finally:
        await client.aclose()
    assert await until(lambda: a.messages_rejected >= 4)
    assert b.calls.try_acquire(["k"], [1])
    assert await until(lambda: a.calls.count("k") == 1)  # still listening


@pytest.fixture
def private_redis(tmp_path) -> Iterator[Callable[[bool], str]]:
    """A redis-server of the test's own that it may stop and restart: ``control(True)`` starts
    it (again, same port), ``control(False)`` stops it; returns its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is installed by scripts/services.sh")
    port = free_port()
    procs: list[subprocess.Popen] = []

    def control(up: bool) -> str:
        if up:
            proc = subprocess.Popen(
                [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                 "--dir", str(tmp_path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            procs.append(proc)
            deadline = time.monotonic() + CONVERGE_TIMEOUT_S
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
                time.sleep(0.02)
        else:
            for proc in procs:
                proc.kill()
                proc.wait()
        return f"redis://127.0.0.1:{port}/0"

    try:
        yield control
    finally:
        control(False)


async def test_redis_outage_fails_open_and_recovers(
    private_redis: Callable[[bool], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Shortened, keeping the production ratios: the lease outlives several renewal rounds.
    monkeypatch.setattr(node_module, "NODE_TTL_S", 0.5)
    monkeypatch.setattr(node_module, "PROBER_LEASE_TTL_S", 0.5)
    monkeypatch.setattr(node_module, "HEALTH_INTERVAL_S", 0.1)
    monkeypatch.setattr(node_module, "RETRY_DELAY_S", 0.05)
    url = private_redis(True)
    a, b = RedisCluster(url, prefix="p"), RedisCluster(url, prefix="p")
    await a.start()
    await b.start()
    try:
        assert a.calls.try_acquire(["k"], [1])
        assert await until(lambda: b.calls.count("k") == 1)
        assert not b.calls.try_acquire(["k"], [1])
        assert [a.probing(), b.probing()].count(True) == 1
        private_redis(False)
        # Redis gone: B stops counting A's call (each node limits alone) and probes for itself.
        assert await until(lambda: b.calls.count("k") == 0)
        assert await until(lambda: a.probing() and b.probing())
        assert b.calls.try_acquire(["k"], [1])
        private_redis(True)  # back, empty: both re-publish their calls at the next refresh
        assert await until(lambda: a.calls.count("k") == 2 and b.calls.count("k") == 2)
        assert await until(lambda: [a.probing(), b.probing()].count(True) == 1)
    finally:
        await a.close()
        await b.close()


async def test_unreachable_redis_leaves_the_node_working_alone() -> None:
    lonely = RedisCluster("redis://127.0.0.1:1/0", prefix="nobody")
    await lonely.start()  # logged, not raised
    try:
        assert lonely.calls.try_acquire(["k"], [1])
        assert not lonely.calls.try_acquire(["k"], [1])
        lonely.calls.release(["k"])
    finally:
        await lonely.close()
