"""Several worker processes behind one SBC address (``sbc run --workers N``).

One Python process signals on one core; a 2-core machine with SIPp on it has about 1.85 cores
for the SBC. ``--workers N`` runs N copies of the SBC that share every SIP listener:

* the supervisor (:mod:`sbc.workers.supervisor`) binds each UDP listener N times with
  SO_REUSEPORT and loads the Call-ID steering program (:mod:`sbc.transport.steering`) on the
  group, so every datagram of a call reaches the worker that holds the call; it binds each TCP
  listener once and every worker accepts from it; then it starts the workers, restarts one that
  dies and stops them all on SIGTERM/SIGINT;
* each worker is a whole SBC (:class:`sbc.app.SbcApp`) with its own SIP core, B2BUA, RTP relay
  (its own slice of the RTP port range) and CDR writer; the Call-IDs it makes for the calls it
  originates steer back to it (:func:`sbc.b2bua.call.new_call_id`);
* the workers talk over :class:`sbc.workers.bus.WorkerBus` (a Unix datagram socket pair per
  pair of workers):
  a message that reached the wrong worker (a TCP connection carries many calls; a Call-ID the
  kernel's scan could not find) is handed to the worker that owns its Call-ID.

:class:`WorkerInfo` is how a worker learns its place, from the environment the supervisor sets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

#: Most workers one supervisor runs: TCP connection ids keep the worker in their low byte.
MAX_WORKERS = 64

ENV_INDEX = "SBC_WORKER_INDEX"
ENV_COUNT = "SBC_WORKER_COUNT"
ENV_GROUP = "SBC_WORKER_GROUP"
ENV_FDS = "SBC_WORKER_FDS"
ENV_PEERS = "SBC_WORKER_PEERS"


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """This process's place among the workers of one ``sbc run``.

    ``group`` names the run (the supervisor's pid and a random token, for logs); ``fds`` are
    the inherited listening sockets, one per listener in the order of
    :attr:`sbc.config.Settings.listeners`; ``peers`` the inherited bus sockets, one per worker
    index (-1 at this worker's own).
    """

    index: int
    count: int
    group: str
    fds: tuple[int, ...] = ()
    peers: tuple[int, ...] = ()

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> WorkerInfo | None:
        """The worker this process is, or ``None`` for a standalone ``sbc run``."""
        env = os.environ if env is None else env
        if ENV_INDEX not in env:
            return None
        index, count = int(env[ENV_INDEX]), int(env[ENV_COUNT])
        if not 0 <= index < count <= MAX_WORKERS:
            raise ValueError(f"worker {index} of {count} is out of range")
        fds = tuple(int(x) for x in env.get(ENV_FDS, "").split(",") if x)
        peers = tuple(int(x) for x in env.get(ENV_PEERS, "").split(",") if x)
        if len(peers) != count:
            raise ValueError(f"{ENV_PEERS} must name {count} sockets, got {len(peers)}")
        return cls(index, count, env[ENV_GROUP], fds, peers)

    def env(self) -> dict[str, str]:
        """The environment variables that make a child process this worker."""
        return {
            ENV_INDEX: str(self.index),
            ENV_COUNT: str(self.count),
            ENV_GROUP: self.group,
            ENV_FDS: ",".join(str(fd) for fd in self.fds),
            ENV_PEERS: ",".join(str(fd) for fd in self.peers),
        }
