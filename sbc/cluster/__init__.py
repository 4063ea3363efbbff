"""Cluster state in Redis: limits that hold across nodes, and one carrier-health view for all.

Several ``sbc run`` nodes share one PostgreSQL (provisioning, CDRs) and, with ``redis_url`` set,
one Redis. Without Redis each node enforces ``max_calls``/``max_cps`` on its own calls only, so a
customer with ``max_calls: 100`` could hold 100 calls on every node; with it the limits are
cluster-wide.

Design: local mirrors, pushed changes
-------------------------------------
The B2BUA admits calls synchronously on its event loop (:func:`routing.limits.check_limits`), so
admission must not wait for a Redis round trip. Every node therefore keeps a mirror
(:mod:`sbc.cluster.limits`): its own live calls per limit key, exact, plus the other nodes' counts
as last received; a call is admitted when *others' last known + own live + 1* stays within the
limit. :class:`~sbc.cluster.node.RedisCluster` keeps the mirrors current:

* a change of this node's counts is PUBLISHed (with the node's hash updated in the same Lua
  script) right after the event-loop callback that made it, at most once per
  :data:`~sbc.cluster.node.PUSH_COALESCE_S` (5 ms), and applied by the other nodes as it arrives;
* every :data:`~sbc.cluster.node.REFRESH_INTERVAL_S` (100 ms) each node rewrites its whole hash
  (``PEXPIRE`` :data:`~sbc.cluster.node.NODE_TTL_S`, 2 s) and reads all the others': the repair
  path for a lost message and how a new node learns what is up;
* a node that dies stops refreshing: its hash expires and its calls stop counting within
  ``NODE_TTL_S``; a node that stops cleanly removes them at once.

Calls-per-second buckets work the same way (:class:`~sbc.cluster.limits.ClusterRates`): each node
refills its copy of a bucket at the full rate and drains it with its own admissions at once and
the other nodes' when their messages arrive; a copy may go into debt (down to ``-burst``) so that
calls admitted twice in a race are paid back rather than forgotten.

Consistency window and worst-case overshoot
-------------------------------------------
The *consistency window* W is how long an admission on one node stays invisible to the others:
the push delay (0 to 5 ms), one Redis round trip and the pub/sub delivery, and the receiving
loop's latency: a few milliseconds on one LAN (1-6 ms measured on loopback). If the message is
lost (a subscriber reconnecting) W grows to the refresh period, 100 ms.

Within W two nodes can both admit the last free slot: the cluster total can exceed a limit by at
most the calls the *other* nodes admitted on that key during the last W. With ``max_cps`` R on the
key that is at most about R x W per node (R = 100 cps, W = 6 ms: under one call), so in practice
a race overshoots by at most one call per other node, and only at the moment several nodes admit
the last slots at once. An overshoot is transient: no node admits a new call while the known
total is at or over the limit, so the total falls back as calls end. The same bound applies to
``max_cps`` over a window W; the debt makes the long-run rate exact.

Failures fail open, on purpose: limits are a commercial guard, and a Redis outage must not become
a call outage. If Redis is unreachable for ``NODE_TTL_S`` a node forgets the others' calls and
enforces each limit on its own calls (a cluster of n nodes may then admit up to n x the limit);
it goes back to cluster-wide counting at the first successful refresh. A crashed node's calls
keep counting for up to ``NODE_TTL_S`` (admissions are stricter than needed for 2 s, never looser).

Exact admission (an atomic Lua script per call) would need a round trip before every answer to an
INVITE, blocking the synchronous engine or turning admission asynchronous; leases of capacity
would strand free slots on idle nodes (a limit of 2 across 2 nodes could refuse a call with one
call up). The mirror keeps admission a dictionary lookup with a millisecond-scale window.

Carrier health (:mod:`sbc.cluster.health`): one node holds a probing lease in Redis and sends the
OPTIONS probes; it publishes each gateway's up/down state and latency, and every node routes on
the published states. The lease moves to another node within
:data:`~sbc.cluster.node.PROBER_LEASE_TTL_S` + :data:`~sbc.cluster.node.HEALTH_INTERVAL_S` (6 s)
when the prober dies; without Redis every node probes for itself.

Worker mode: the processes of one machine, no Redis
----------------------------------------------------
``sbc run --workers N`` runs N workers, each a full SBC behind one SIP address
(:mod:`sbc.workers`). They share limits and carrier health exactly as nodes do, with the same
mirrors, but :class:`~sbc.cluster.local.WorkerCluster` sends the messages straight to the other
workers over the worker bus (a Unix datagram socket pair per pair of workers), so a single machine needs no
Redis. Each change goes to every other worker as a delta (coalesced as above), each worker sends
all its counts every :data:`~sbc.cluster.base.REFRESH_INTERVAL_S` (the bus drops rather than
blocks, so the refresh is the repair path), a worker silent for ``NODE_TTL_S`` is forgotten (the
supervisor restarts a crashed worker) and one that stops says goodbye. The consistency window is
smaller than with Redis -- no server in between, one local datagram -- and the overshoot bound
above holds with that W. Worker 0 is always the prober and publishes its gateway states on the
bus, soon after each probe result and in full every ``HEALTH_INTERVAL_S``; while it has been
silent for ``PROBER_LEASE_TTL_S`` the other workers probe for themselves (failing open, as when
Redis is down). What the two modes share (the mirrors' wiring, applying a limits message, the
coalescing push loop) is :class:`~sbc.cluster.base.ClusterNode`.
"""

from __future__ import annotations

from .base import ClusterNode
from .health import ClusterHealthTable
from .limits import ClusterCalls, ClusterRates
from .local import WorkerCluster
from .node import RedisCluster

__all__ = [
    "ClusterCalls",
    "ClusterHealthTable",
    "ClusterNode",
    "ClusterRates",
    "RedisCluster",
    "WorkerCluster",
]
