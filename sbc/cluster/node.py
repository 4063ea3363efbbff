"""The I/O side of the cluster state: one Redis connection per node, three background tasks.

* **sync** (:meth:`RedisCluster._sync_loop`): after any change of this node's calls or rate
  admissions (at most once per :data:`PUSH_COALESCE_S`) one Lua script writes the changed counts
  into this node's hash and PUBLISHes them; every :data:`REFRESH_INTERVAL_S` the same script
  rewrites the whole hash, refreshes its expiry and this node's entry in the node set, prunes
  nodes silent for :data:`NODE_TTL_S`, and returns every other node's hash (the repair path for a
  lost message, and how a node that just started learns the others' calls).
* **subscribe**: applies the other nodes' PUBLISHed changes as they arrive.
* **health**: every :data:`HEALTH_INTERVAL_S` renews or takes the prober lease, publishes this
  node's probe results when it is the prober, and reads the published states.

Redis layout (``P`` = the prefix, in braces so every key hashes to one Redis Cluster slot)::

    {P}:nodes            ZSET  node id -> Redis server time (ms) of its last refresh
    {P}:calls:<node>     HASH  limit key -> this node's calls, "~seq" -> publish sequence; PEXPIRE NODE_TTL
    {P}:events           channel of JSON messages {"n": node, "s": seq, "c": {key: count}, "r": {key: admitted}}
    {P}:health           HASH  '["carrier","host",port,"transport"]' -> JSON state (see sbc.cluster.health)
    {P}:health:prober    STRING the prober's node id, PX PROBER_LEASE_TTL

Server time (``TIME`` inside the scripts) decides liveness, so the nodes' clocks need not agree.
If Redis cannot be reached the node carries on alone: after :data:`NODE_TTL_S` without a
successful refresh it forgets the other nodes' calls (each node then enforces every limit on its
own calls only: limits fail open, Redis down must not mean calls down), and after
:data:`PROBER_LEASE_TTL_S` it probes gateways itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .base import (
    HEALTH_INTERVAL_S,
    MESSAGE_ERRORS,
    NODE_TTL_S,
    PROBER_LEASE_TTL_S,
    PUSH_COALESCE_S,
    REFRESH_INTERVAL_S,
    ClusterNode,
    encode,
    wait_event,
)
from .limits import SEQ_FIELD

log = logging.getLogger(__name__)

# PUSH_COALESCE_S (one script run per push), REFRESH_INTERVAL_S (the script rewrites this node's
# hash and reads all the others'), NODE_TTL_S (the hash's PEXPIRE), HEALTH_INTERVAL_S (lease
# renewal and health read) and PROBER_LEASE_TTL_S (the lease's PX) are shared with the worker
# mode and explained in sbc.cluster.base; they are imported here so that tests can shorten the
# Redis mode's timings on this module.
#: Connect and read timeout of every Redis command: longer than any healthy round trip on a LAN by
#: two orders of magnitude, short enough that a hung Redis is noticed within one TTL.
REDIS_TIMEOUT_S = 0.5
#: Pause after a failed Redis operation before the next attempt (no busy loop while Redis is down).
RETRY_DELAY_S = 0.5
#: At shutdown, how long saying goodbye (removing this node's calls from Redis) may take.
CLOSE_TIMEOUT_S = 1.0
#: How long the pub/sub reader waits for a message before checking its connection again.
SUBSCRIBE_POLL_S = 1.0

# KEYS[1] nodes zset, KEYS[2] own hash. ARGV: node, ttl_ms, seq, message ('' = none), channel,
# mode ('full' rewrites the hash and returns the other nodes' hashes; 'delta' writes what changed),
# hash key prefix of the nodes, then key/count pairs (count '0' deletes the field).
_SYNC_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local full = ARGV[6] == 'full'
if full then redis.call('DEL', KEYS[2]) end
for i = 8, #ARGV, 2 do
  if ARGV[i + 1] == '0' then redis.call('HDEL', KEYS[2], ARGV[i])
  else redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
end
redis.call('HSET', KEYS[2], '""" + SEQ_FIELD + """', ARGV[3])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[1], now, ARGV[1])
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[4]) end
if not full then return {} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
local out = {}
for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if node ~= ARGV[1] then
    out[#out + 1] = node
    out[#out + 1] = redis.call('HGETALL', ARGV[7] .. node)
  end
end
return out
"""  # fmt: skip

# KEYS[1] lease key. ARGV: node, ttl_ms. Returns 1 when this node holds the lease afterwards.
_LEASE_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""

# KEYS[1] nodes zset, KEYS[2] own hash, KEYS[3] lease key. ARGV: node, goodbye message, channel.
_BYE_SCRIPT = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
"""


def default_node_id() -> str:
    """Host name, process id and a random suffix: unique even for a restarted process."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class RedisCluster(ClusterNode):
    """This node's share of the cluster state in Redis: limits and carrier health.

    Build it, :meth:`attach` it to the B2BUA (before the first snapshot is loaded), :meth:`start`
    it on the running loop, :meth:`close` it at shutdown. The B2BUA keeps calling the mirrors
    (:attr:`calls`, :attr:`rates`, :attr:`health`) synchronously; nothing here blocks it.
    """

    def __init__(self, url: str, *, prefix: str = "sbc", node_id: str | None = None) -> None:
        super().__init__(node_id or default_node_id())
        self.url = url
        self.prefix = prefix
        self._nodes_key = f"{{{prefix}}}:nodes"
        self._calls_prefix = f"{{{prefix}}}:calls:"
        self._own_key = self._calls_prefix + self.node_id
        self._channel = f"{{{prefix}}}:events"
        self._health_key = f"{{{prefix}}}:health"
        self._lease_key = f"{{{prefix}}}:health:prober"
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._full_now = False  # the next sync must be a full refresh (set after resubscribing)
        self._holds_lease = False
        self._last_ok: float | None = None  # loop time of the last successful refresh
        self._last_lease_ok: float | None = None
        self._alone = False  # others forgotten because Redis was unreachable
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started_at = 0.0

    # -- wiring (attach: ClusterNode) ----------------------------------------------------------

    def probing(self) -> bool:
        """Whether this node sends the OPTIONS probes: it holds the prober lease, or Redis has
        not answered a lease round for longer than a lease lasts (then every node probes for
        itself, as a standalone SBC would). Called on every routing decision: only arithmetic."""
        if self._loop is None:
            return True
        last = self._last_lease_ok if self._last_lease_ok is not None else self._started_at
        if self._loop.time() - last > PROBER_LEASE_TTL_S:
            return True
        return self._holds_lease

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, learn the other nodes' calls and the published health, and start the
        background tasks. An unreachable Redis is logged, not raised: the node starts alone and
        the tasks keep retrying."""
        self._loop = asyncio.get_running_loop()
        self._started_at = self._loop.time()
        self._redis = aioredis.from_url(
            self.url,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        self._scripts = {
            "sync": self._redis.register_script(_SYNC_SCRIPT),
            "lease": self._redis.register_script(_LEASE_SCRIPT),
            "bye": self._redis.register_script(_BYE_SCRIPT),
        }
        try:
            await self._sync(full=True)
            await self._health_round()
        except (RedisError, OSError) as exc:
            log.warning("cluster: Redis unreachable at start (%s); limits are local until it is back", exc)
        self._tasks = [
            asyncio.create_task(
                self._run_rounds(
                    self._push,
                    self._sync_round,
                    period_s=lambda: REFRESH_INTERVAL_S,
                    gap_s=lambda: PUSH_COALESCE_S,
                    errors=(RedisError, OSError, TimeoutError),
                    failed=self._sync_failed,
                ),
                name="cluster-sync",
            ),
            asyncio.create_task(self._subscribe_loop(), name="cluster-subscribe"),
            asyncio.create_task(self._health_loop(), name="cluster-health"),
        ]
        log.info("cluster: node %s on %s (prefix %r)", self.node_id, self._safe_url(), self.prefix)

    async def close(self) -> None:
        """Stop the tasks and take this node's calls and prober lease out of Redis at once
        (best effort within :data:`CLOSE_TIMEOUT_S`), then disconnect."""
        await self._stop_tasks(CLOSE_TIMEOUT_S)
        if self._redis is None:
            return
        try:
            bye = encode({"n": self.node_id, "bye": 1})
            await asyncio.wait_for(
                self._scripts["bye"](
                    keys=[self._nodes_key, self._own_key, self._lease_key],
                    args=[self.node_id, bye, self._channel],
                ),
                CLOSE_TIMEOUT_S,
            )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning(
                "cluster: could not say goodbye (%s); this node's calls expire in %.0f s", exc, NODE_TTL_S
            )
        await self._redis.aclose()
        self._redis = None

    def _safe_url(self) -> str:
        """The Redis URL without its password, for logs."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    # -- limits: publish and refresh -----------------------------------------------------------

    async def _sync(self, *, full: bool) -> None:
        """Push this node's changes (all its counts when ``full``) and, when ``full``, read the
        other nodes. On failure what was taken for publishing is put back and the error raised."""
        assert self._redis is not None and self._loop is not None
        changed = self.calls.take_dirty()
        admitted = self.rates.take_admitted()
        counts = self.calls.own_counts() if full else changed
        message = ""
        if changed or admitted:
            message = encode({"n": self.node_id, "s": self._next_seq(), "c": changed, "r": admitted})
        elif not full:
            return
        args: list[str | int] = [
            self.node_id,
            int(NODE_TTL_S * 1000),
            self._seq,
            message,
            self._channel,
            "full" if full else "delta",
            self._calls_prefix,
        ]
        for key, n in counts.items():
            args += [key, n]
        try:
            result = await self._scripts["sync"](keys=[self._nodes_key, self._own_key], args=args)
        except BaseException:
            self.calls.restore_dirty(changed)
            self.rates.restore_admitted(admitted)
            raise
        if full:
            self._apply_full(result)
            self._last_ok = self._loop.time()
            if self._alone:
                self._alone = False
                log.info("cluster: Redis reachable again; limits are cluster-wide")

    def _apply_full(self, result: list[Any]) -> None:
        nodes: dict[str, tuple[int, dict[str, int]]] = {}
        for i in range(0, len(result) - 1, 2):
            node, flat = result[i], result[i + 1]
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            try:
                seq = int(fields.pop(SEQ_FIELD, -1))
                nodes[node] = (seq, {k: int(v) for k, v in fields.items()})
            except ValueError:
                self.messages_rejected += 1
        self.calls.apply_full(nodes)

    async def _sync_round(self, due: bool) -> bool:
        """One round of the sync loop (:meth:`ClusterNode._run_rounds`: changes pushed as they
        happen, coalesced; a full refresh every REFRESH_INTERVAL_S or after resubscribing).
        Returns whether it was full; a failed full round makes the next one full."""
        full = due or self._full_now
        self._full_now = False
        try:
            await self._sync(full=full)
        except (RedisError, OSError, TimeoutError):
            if full:
                self._full_now = True
            raise
        return full

    async def _sync_failed(self, exc: BaseException) -> None:
        self._redis_failed(exc)
        await asyncio.sleep(RETRY_DELAY_S)

    def _redis_failed(self, exc: BaseException) -> None:
        """Fail open: after NODE_TTL_S without a refresh, stop counting the other nodes' calls."""
        assert self._loop is not None
        since = self._last_ok if self._last_ok is not None else self._started_at
        if not self._alone and self._loop.time() - since > NODE_TTL_S:
            self._alone = True
            self.calls.forget_others()
            log.warning(
                "cluster: Redis unreachable for %.0f s (%s); limits count this node's calls only",
                NODE_TTL_S,
                exc,
            )
        else:
            log.debug("cluster: Redis error: %s", exc)

    async def _subscribe_loop(self) -> None:
        """Apply the other nodes' pushed changes; resubscribe (and refresh fully) after errors."""
        assert self._redis is not None
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                # Anything published while this node was not listening: read everything now.
                self._full_now = True
                self._push.set()
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=SUBSCRIBE_POLL_S
                    )
                    if message is not None and message.get("type") == "message":
                        self.apply_event(message["data"])
            except (RedisError, OSError, TimeoutError) as exc:
                log.debug("cluster: subscription lost: %s", exc)
                await asyncio.sleep(RETRY_DELAY_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def apply_event(self, data: str) -> None:
        """Apply one message of the events channel (malformed ones are counted and dropped)."""
        assert self._loop is not None
        try:
            event = json.loads(data)
            node = str(event["n"])
        except MESSAGE_ERRORS:
            self.messages_rejected += 1
            return
        if node != self.node_id:
            self.apply_limits(node, event, self._loop.time())

    # -- carrier health ------------------------------------------------------------------------

    async def _health_round(self) -> None:
        """Renew or take the prober lease, publish own probe results as prober, read the states."""
        assert self._redis is not None and self._loop is not None
        held = await self._scripts["lease"](
            keys=[self._lease_key], args=[self.node_id, int(PROBER_LEASE_TTL_S * 1000)]
        )
        now = self._loop.time()
        self._last_lease_ok = now
        if bool(held) != self._holds_lease:
            log.info("cluster: this node %s gateway probing", "takes over" if held else "stops")
        self._holds_lease = bool(held)
        if self._holds_lease and self.health.dirty:
            entries, tracked = self.health.take_entries(self.node_id, time.time())
            existing = await self._redis.hkeys(self._health_key)
            stale = [f for f in existing if f not in tracked]
            async with self._redis.pipeline(transaction=True) as pipe:
                if entries:
                    pipe.hset(self._health_key, mapping=entries)
                if stale:
                    pipe.hdel(self._health_key, *stale)
                await pipe.execute()
        wall_offset = time.time() - self._loop.time()
        self.health.apply_published(await self._redis.hgetall(self._health_key), wall_offset)

    async def _health_loop(self) -> None:
        """Every HEALTH_INTERVAL_S, or soon after a probe result: one health round."""
        while True:
            await wait_event(self._health_wake, HEALTH_INTERVAL_S)
            self._health_wake.clear()
            try:
                await self._health_round()
            except (RedisError, OSError, TimeoutError) as exc:
                # The lease, if held, stays ours in Redis until it expires: keep probing till then.
                log.debug("cluster: health round failed: %s", exc)
                await asyncio.sleep(RETRY_DELAY_S)


__all__ = [
    "CLOSE_TIMEOUT_S",
    "HEALTH_INTERVAL_S",
    "NODE_TTL_S",
    "PROBER_LEASE_TTL_S",
    "PUSH_COALESCE_S",
    "REDIS_TIMEOUT_S",
    "REFRESH_INTERVAL_S",
    "RETRY_DELAY_S",
    "RedisCluster",
    "default_node_id",
]
