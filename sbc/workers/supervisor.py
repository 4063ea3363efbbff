"""The supervisor of ``sbc run --workers N``: binds the shared sockets, runs the workers.

It does no SIP itself and runs no event loop: it binds every listener before any worker starts
(so a port taken or a missing privilege fails the start at once, with one message), starts the
workers as fresh interpreters (``python -m sbc`` with the same arguments; the sockets are passed
as inherited file descriptors, the worker's place in the environment: :class:`WorkerInfo`),
restarts a worker that dies and, on SIGTERM or SIGINT, stops them all and waits for them to
write their CDRs.

* UDP: each listener is bound N times with SO_REUSEPORT and the Call-ID steering program is
  attached to the group (:func:`sbc.transport.steering.steer_sockets`); worker i reads socket i.
  The supervisor keeps its copies: a restarted worker gets the same socket back, with whatever
  arrived for it while it was down.
* TCP: each listener is bound once; every worker accepts from it (the kernel hands each new
  connection to one of them). The first worker ready for calls starts it listening: until then a
  connection is refused rather than left waiting on a socket nobody serves yet. Messages on a connection for a call another worker holds are
  handed over the bus (:mod:`sbc.workers.forward`).
* Digest nonces must verify on every worker: without ``auth_secret`` the supervisor makes one
  secret for all of them.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from ..config import ListenSpec, Settings
from ..transport.steering import steer_sockets, steering_available
from ..transport.udp import bind_udp
from . import WorkerInfo
from .bus import socket_mesh

log = logging.getLogger(__name__)

#: A worker that exits with an error status within this long of the supervisor's start failed to
#: start (the API port is taken, the database unreachable): everything stops with its exit code
#: instead of restarting it forever. One killed by a signal is restarted.
START_GRACE_S = 10.0
#: Restart delays for a worker that keeps dying: doubled per death within STABLE_S, up to the max.
RESTART_DELAY_S = 0.5
RESTART_DELAY_MAX_S = 30.0
#: A worker that ran this long before dying is restarted after the shortest delay again.
STABLE_S = 60.0
#: How long the workers get to stop (they write the CDRs still queued) before they are killed.
STOP_TIMEOUT_S = 30.0
#: How often the supervisor looks at its workers.
POLL_S = 0.2

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """A worker gets SIGTERM when the supervisor dies, even by SIGKILL: no orphan keeps the port."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class SupervisorError(Exception):
    """The workers cannot be started (the message says why, for the command line)."""


@dataclasses.dataclass
class _Worker:
    index: int
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    delay: float = RESTART_DELAY_S
    restart_at: float | None = None


class Supervisor:
    """Binds the listeners of ``settings`` for ``settings.workers`` workers and runs them."""

    def __init__(self, settings: Settings, argv: list[str]) -> None:
        self.settings = settings
        self.argv = argv
        self.count = settings.workers
        self.group = f"{os.getpid()}-{secrets.token_hex(3)}"
        self._socks: list[list[socket.socket]] = []  # per listener: N UDP sockets or one TCP
        self._steerings: list = []
        self._mesh = socket_mesh(self.count)  # kept open: a restarted worker gets its ends back
        self._workers = [_Worker(i) for i in range(self.count)]
        self._stopping = False
        self._env = dict(os.environ)
        if not settings.auth_secret:
            self._env["SBC_AUTH_SECRET"] = secrets.token_hex(32)

    # -- sockets ---------------------------------------------------------------------------------

    def bind(self) -> None:
        """Bind every listener; raises SupervisorError (or OSError) when one cannot be."""
        udp = [spec for spec in self.settings.listeners if spec.transport == "udp"]
        if udp and not steering_available():
            raise SupervisorError(
                "--workers needs the SIP steering program, which this build lacks (install clang and libbpf-dev,"
                " then reinstall); run with --workers 1"
            )
        for spec in self.settings.listeners:
            if spec.transport == "udp":
                self._socks.append(self._bind_udp_group(spec))
            elif spec.transport == "tcp":
                self._socks.append([self._bind_tcp(spec)])
            else:
                raise SupervisorError(f"transport {spec.transport} is not supported yet")

    def _bind_udp_group(self, spec: ListenSpec) -> list[socket.socket]:
        group: list[socket.socket] = []
        try:
            group += [bind_udp(spec, reuse_port=True) for _ in range(self.count)]
            try:
                self._steerings.append(steer_sockets(group))
            except OSError as e:
                raise SupervisorError(
                    f"cannot load the SIP steering program for {spec}: {e} (needs CAP_BPF)"
                ) from e
        except BaseException:
            for sock in group:
                sock.close()
            raise
        return group

    @staticmethod
    def _bind_tcp(spec: ListenSpec) -> socket.socket:
        sock = socket.socket(spec.family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((spec.host, spec.port))  # each worker listens when it is ready for calls
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        """Close the supervisor's sockets and steering programs (the workers have exited)."""
        for group in self._socks:
            for sock in group:
                sock.close()
        for steering in self._steerings:
            steering.close()
        for row in self._mesh:
            for sock in row:
                if sock is not None:
                    sock.close()
        self._socks, self._steerings, self._mesh = [], [], []

    # -- workers ---------------------------------------------------------------------------------

    def _fds(self, index: int) -> tuple[int, ...]:
        return tuple(group[index].fileno() if len(group) > 1 else group[0].fileno() for group in self._socks)

    def _spawn(self, worker: _Worker) -> None:
        peers = tuple(s.fileno() if s is not None else -1 for s in self._mesh[worker.index])
        info = WorkerInfo(worker.index, self.count, self.group, self._fds(worker.index), peers)
        worker.proc = subprocess.Popen(
            [sys.executable, "-m", "sbc", *self.argv],
            env={**self._env, **info.env()},
            pass_fds=info.fds + tuple(fd for fd in peers if fd >= 0),
            preexec_fn=_die_with_parent,
        )
        worker.started_at = time.monotonic()
        worker.restart_at = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        """Start the workers and keep them running until SIGTERM/SIGINT; the exit status."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        started = time.monotonic()
        status = 0
        try:
            for worker in self._workers:
                self._spawn(worker)
            log.info("sbc: %d workers (group %s)", self.count, self.group)
            while not self._stopping:
                time.sleep(POLL_S)
                failed = self._watch(started)
                if failed is not None:
                    status = failed
                    break
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return status

    def _watch(self, started: float) -> int | None:
        """Restart dead workers; an exit status when one failed to start (then all stop)."""
        now = time.monotonic()
        for worker in self._workers:
            if worker.restart_at is not None:
                if now >= worker.restart_at and not self._stopping:
                    self._spawn(worker)
                continue
            assert worker.proc is not None
            rc = worker.proc.poll()
            if rc is None or self._stopping:
                continue
            if now - started < START_GRACE_S and rc > 0:  # an error exit, not a signal: it will recur
                log.error("sbc: worker %d failed to start (exit status %s); stopping", worker.index, rc)
                return rc
            lived = now - worker.started_at
            worker.delay = (
                RESTART_DELAY_S if lived >= STABLE_S else min(worker.delay * 2, RESTART_DELAY_MAX_S)
            )
            worker.restart_at = now + worker.delay
            log.error("sbc: worker %d exited (status %s) after %.0f s; restarting in %.1f s",
                      worker.index, rc, lived, worker.delay)  # fmt: skip
        return None

    def _stop_all(self) -> None:
        alive = [w.proc for w in self._workers if w.proc is not None and w.proc.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in alive:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("sbc: worker pid %d did not stop in %.0f s; killing it", proc.pid, STOP_TIMEOUT_S)
                proc.kill()
                proc.wait()


def _prepare_store(url: str) -> None:
    """Create or migrate the store's schema once (``sbc migrate``), so N workers do not race for
    it. In a child process: the supervisor itself stays small (no SQLAlchemy or SIP stack: 38 MB
    resident against 78 MB with them)."""
    done = subprocess.run(
        [sys.executable, "-m", "sbc", "migrate", "--db", url], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SupervisorError(
            done.stderr.strip().removeprefix("sbc: ") or f"sbc migrate exited {done.returncode}"
        )


def supervise(settings: Settings, argv: list[str]) -> int:
    """``sbc run`` with ``settings.workers`` > 1: the exit status for the command line."""
    supervisor = Supervisor(settings, argv)
    try:
        supervisor.bind()
        _prepare_store(settings.db)
    except Exception as e:  # a port taken, no CAP_BPF, an unreachable database: one line, no traceback
        supervisor.close()
        print(f"sbc: cannot start: {e}", file=sys.stderr)
        return 1
    try:
        return supervisor.run()
    finally:
        supervisor.close()
