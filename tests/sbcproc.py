"""Run a real ``sbc run`` process on loopback for integration tests, and talk SIP to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from loadtest.ports import free_port

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
# How long a started SBC may take to bind its sockets before the test gives up.
START_TIMEOUT_S = 15.0


@dataclass
class SbcProcess:
    proc: subprocess.Popen
    host: str
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_sbc(
    tmp_path: Path, host: str = "127.0.0.1", extra_args: list[str] | None = None, env: dict | None = None
) -> SbcProcess:
    """Start ``sbc run`` listening on UDP and TCP at ``host`` and wait until it answers OPTIONS."""
    port = free_port(host)
    log_path = tmp_path / "sbc.log"
    args = [
        sys.executable,
        "-m",
        "sbc",
        "run",
        "--sip-listen",
        f"udp:{host}:{port}",
        "--sip-listen",
        f"tcp:{host}:{port}",
        "--api-listen",
        "",
        "--db",
        f"sqlite:///{tmp_path / 'sbc.db'}",
        *(extra_args or []),
    ]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=tmp_path)
    sbc = SbcProcess(proc, host, port, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sbc exited with {proc.returncode}:\n{sbc.log()}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return sbc
        except OSError:
            time.sleep(0.05)
    sbc.stop()
    raise RuntimeError(f"sbc did not start:\n{sbc.log()}")


def udp_exchange(
    host: str, port: int, data: bytes, timeout: float = 1.0, src: str = "127.0.0.1"
) -> list[bytes]:
    """Send one datagram, collect every datagram that comes back within ``timeout``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.settimeout(timeout)
        s.sendto(data, (host, port))
        out = []
        try:
            while True:
                out.append(s.recv(65535))
                s.settimeout(0.2)
        except TimeoutError:
            pass
        return out


def tcp_exchange(host: str, port: int, data: bytes, timeout: float = 1.0) -> bytes:
    """Send ``data`` over a fresh TCP connection; return all bytes received within ``timeout``."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                chunk = s.recv(65535)
                if not chunk:
                    break
                chunks.append(chunk)
                s.settimeout(0.3)
        except TimeoutError:
            pass
        return b"".join(chunks)


def wait_for(check: Callable[[], T], timeout: float = 10.0) -> T:
    """Poll ``check`` every 50 ms until it returns something true or ``timeout`` passes; return
    its last result (falsy on timeout, for the caller's assert)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)
