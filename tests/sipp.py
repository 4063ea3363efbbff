"""Run SIPp (Debian ``sip-tester``, 3.6.x) from tests: a UAC to completion, a UAS in the background.

The scenarios live in ``loadtest/scenarios`` (packaged data); see ``loadtest/README.md`` for what
each one does. Every run gets its own working directory, because SIPp writes some traces (the
``-trace_rtt`` file) into its current directory under a name it picks.

SIPp exit codes (``sipp -h``, checked against 3.6.1 on this machine):

====  =========================================================================================
 0    all calls successful
 1    at least one call failed -- and also a scenario SIPp refuses to load (bad XML, unknown
      ``[keyword]``, a variable assigned but never used, ...): then ``stats`` is empty and
      ``stderr`` says why
 97   exit on internal command, or the global ``-timeout`` fired with no call failed
 99   normal exit without any call processed
 253  RTP validation failure (newer SIPp only)
 254  (-2) fatal error binding a socket (address in use, address not local)
 255  (-1) other fatal error
====  =========================================================================================

Things about SIPp 3.6 that these helpers work around:

* ``-timeout`` is a *soft* quit (SIGALRM sets ``quitting``): no new calls, but SIPp waits for the
  open ones. A call parked in a ``<recv>`` without a timeout then keeps SIPp alive for ever.
  So every run also gets ``-recv_timeout`` and a hard deadline enforced here: SIGTERM (SIPp exits
  at once with rc 97, its final screen and CSV row), then SIGKILL. SIGUSR1, even twice, does not
  end a call parked on a timer.
* ``-p`` left out (or ``-p 0``) binds 5060, not a random port: we always pick a free port.
* ``-i`` alone makes a UAC send from that address; a UAS needs ``-bind_local`` or it listens on
  0.0.0.0 and answers from whatever address routing picks. We always pass ``-bind_local``.
* When SIPp is idle (long holds) its minor watchdog trips about once a second and, after 120
  trips, ends the test; the watchdog limits are raised and the trips are left in ``stats``.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.ports import free_port

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "loadtest" / "scenarios"
SIPP = shutil.which("sipp")

#: Calling number put in From/Contact by the caller scenarios (``-key caller``).
DEFAULT_CALLER = "+12125550199"
#: How long a started UAS may take to bind its port.
UAS_START_TIMEOUT_S = 5.0
#: After the hard deadline: time SIPp gets to abort its calls and write its statistics.
ABORT_GRACE_S = 5.0
#: The hard deadline is SIPp's own -timeout plus this (time for a soft quit to finish calls).
HARD_DEADLINE_MARGIN_S = 2.0
#: Watchdog trip limits high enough that an idle or busy SIPp is never ended by its watchdog.
WATCHDOG_MAX_TRIGGERS = "1000000"

# One entry of a -trace_msg file: a dashed separator line with a timestamp, then e.g.
# "UDP message received [660] bytes :" or "UDP message sent (252 bytes):", a blank line, the message.
_LOG_ENTRY_RE = re.compile(
    r"^-{20,} (?P<ts>[^\n]*)\n(?P<transport>[A-Z]+) message (?P<dir>received|sent) "
    r"(?:\[\d+\] bytes :|\(\d+ bytes\):)\n\n?",
    re.M,
)


def scenario_path(name: str) -> Path:
    """The packaged scenario ``name`` (with or without ``.xml``); raises FileNotFoundError."""
    path = SCENARIOS / (name if name.endswith(".xml") else f"{name}.xml")
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


@dataclass(frozen=True)
class LoggedMessage:
    """One SIP message from a ``-trace_msg`` file, as SIPp sent or received it."""

    direction: str  # "received" or "sent"
    transport: str  # "UDP", "TCP", ...
    timestamp: str
    text: str  # the message, lines joined with "\n"

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0]

    @property
    def method(self) -> str | None:
        """The request method, or None for a response."""
        first = self.first_line
        return None if first.startswith("SIP/2.0") else first.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        """The response code, or None for a request."""
        first = self.first_line
        return int(first.split(" ")[1]) if first.startswith("SIP/2.0") else None

    def headers(self, name: str) -> list[str]:
        """Values of every header line called ``name`` (case-insensitive; no compact forms)."""
        head = self.text.split("\n\n", 1)[0]
        out = []
        for line in head.split("\n")[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                out.append(value.strip())
        return out

    @property
    def body(self) -> str:
        return self.text.split("\n\n", 1)[1] if "\n\n" in self.text else ""


def parse_message_log(path: Path | str) -> list[LoggedMessage]:
    """Every message of a SIPp ``-trace_msg`` file, in order. A missing file gives []."""
    try:
        data = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return []
    data = data.replace("\r\n", "\n")
    entries = list(_LOG_ENTRY_RE.finditer(data))
    out = []
    for i, m in enumerate(entries):
        end = entries[i + 1].start() if i + 1 < len(entries) else len(data)
        text = data[m.end() : end].strip("\n")
        if not text:
            continue
        out.append(LoggedMessage(m["dir"], m["transport"], m["ts"].strip(), text + "\n"))
    return out


def _convert(value: str) -> int | float | str:
    value = value.strip()
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def parse_stat_csv(path: Path | str) -> dict[str, int | float | str]:
    """The last row of a ``-trace_stat`` CSV (``;``-separated), column name -> value.

    Counters ending in ``(C)`` are cumulative since SIPp started, ``(P)`` since the previous row.
    Times (ResponseTime*, CallLength*) stay strings ``HH:MM:SS:micro``. A missing file gives {}.
    """
    try:
        with open(path, newline="", errors="replace") as f:
            rows = [r for r in csv.reader(f, delimiter=";") if r]
    except FileNotFoundError:
        return {}
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {name: _convert(value) for name, value in zip(header, last, strict=False) if name}


def parse_rtt_files(workdir: Path) -> list[tuple[str, float]]:
    """``(rtd name, milliseconds)`` for every response time in the ``*_rtt.csv`` files of ``workdir``.

    SIPp writes one line per measured response time (``-trace_rtt``), flushed every ``-rtt_freq``
    calls and at exit; the resolution is SIPp's clock tick, 1 ms.
    """
    out: list[tuple[str, float]] = []
    for path in sorted(workdir.glob("*_rtt.csv")):
        with open(path, errors="replace") as f:
            for line in f:
                parts = line.strip().split(";")
                if len(parts) >= 3 and parts[0] != "Date_ms":
                    try:
                        out.append((parts[2], float(parts[1])))
                    except ValueError:
                        continue
    return out


_SCREEN_COUNTERS = {
    "SuccessfulCall(C)": re.compile(r"^\s*Successful call\s*\|\s*\d+\s*\|\s*(\d+)", re.M),
    "FailedCall(C)": re.compile(r"^\s*Failed call\s*\|\s*\d+\s*\|\s*(\d+)", re.M),
    "TotalCallCreated": re.compile(r"^\s*Total Calls created\s*\|\s*\|\s*(\d+)", re.M),
}


def parse_final_screen(stdout: str) -> dict[str, int]:
    """Fallback for a run without a CSV: the cumulative counters of SIPp's last screen."""
    out = {}
    for key, regex in _SCREEN_COUNTERS.items():
        found = regex.findall(stdout)
        if found:
            out[key] = int(found[-1])
    return out


@dataclass
class SippResult:
    """What one SIPp run left behind. ``stats`` is the last CSV row (see :func:`parse_stat_csv`)."""

    returncode: int
    stats: dict[str, int | float | str]
    stdout: str
    stderr: str
    messages_path: Path | None
    workdir: Path
    args: list[str]
    timed_out: bool = False
    rtt: list[tuple[str, float]] = field(default_factory=list)

    def _count(self, key: str) -> int:
        value = self.stats.get(key, 0)
        return int(value) if isinstance(value, int | float) else 0

    @property
    def successful(self) -> int:
        return self._count("SuccessfulCall(C)")

    @property
    def failed(self) -> int:
        return self._count("FailedCall(C)")

    @property
    def created(self) -> int:
        return self._count("TotalCallCreated")

    @property
    def retransmissions(self) -> int:
        return self._count("Retransmissions(C)")

    def messages(self) -> list[LoggedMessage]:
        """Every message this run sent and received (needs ``trace_msgs=True``)."""
        return parse_message_log(self.messages_path) if self.messages_path else []

    def received(self, method: str | None = None) -> list[LoggedMessage]:
        """Messages received, optionally only requests of ``method``."""
        return [
            m for m in self.messages() if m.direction == "received" and (method is None or m.method == method)
        ]

    def response_times(self, rtd: str) -> list[float]:
        """Milliseconds of every measurement of the scenario's response time ``rtd``."""
        return [ms for name, ms in self.rtt if name == rtd]

    def error_codes(self) -> dict[str, int]:
        """How often each response code arrived where the scenario did not expect it (a failed
        call each), from ``-trace_error_codes``: e.g. ``{"503": 3}`` for 503s to uac_call."""
        counts: dict[str, int] = {}
        for path in self.workdir.glob("*_error_codes.csv"):
            for line in path.read_text(errors="replace").splitlines():
                parts = line.split(";")
                if len(parts) >= 3:
                    for code in filter(None, (c.strip() for c in parts[2].split(","))):
                        counts[code] = counts.get(code, 0) + 1
        return counts

    def errors(self) -> str:
        """The ``-trace_err`` file: unexpected messages and why calls were aborted."""
        path = self.workdir / "errors.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def explain(self) -> str:
        """A compact account for an assertion message."""
        return (
            f"sipp rc={self.returncode} timed_out={self.timed_out} ok={self.successful} "
            f"failed={self.failed}\nargs: {' '.join(self.args)}\n"
            f"--- stderr\n{self.stderr[-2000:]}\n--- errors\n{self.errors()[-3000:]}\n"
            f"--- stdout\n{self.stdout[-1500:]}"
        )


def _build_args(
    scenario: str | Path,
    *,
    target: str | None,
    local_ip: str,
    local_port: int,
    calls: int,
    rate: float | None,
    service: str | None,
    caller: str | None,
    hold_ms: int,
    keys: Mapping[str, str] | None,
    recv_timeout_ms: int,
    timeout_s: float,
    trace_msgs: bool,
    rtt_freq: int,
    transport: str,
    extra: Sequence[str],
) -> list[str]:
    path = Path(scenario) if Path(scenario).is_file() else scenario_path(str(scenario))
    args = [SIPP or "sipp"]
    if target:
        args.append(target)
    args += ["-sf", str(path), "-t", transport, "-i", local_ip, "-p", str(local_port), "-bind_local"]
    args += ["-m", str(calls), "-d", str(int(hold_ms))]
    if rate is not None:
        args += ["-r", f"{rate:g}"]
    if service is not None:
        args += ["-s", service]
    if caller is not None and "[caller]" in path.read_text(errors="replace"):
        args += ["-key", "caller", caller]
    for key, value in (keys or {}).items():
        args += ["-key", key, str(value)]
    args += [
        "-nostdin",
        "-timeout", f"{max(1, int(timeout_s))}s",
        "-recv_timeout", str(int(recv_timeout_ms)),
        "-trace_stat", "-stf", "stat.csv", "-fd", "1",
        "-trace_err", "-error_file", "errors.log",
        "-trace_rtt", "-rtt_freq", str(rtt_freq),
        "-trace_error_codes",
        "-watchdog_minor_maxtriggers", WATCHDOG_MAX_TRIGGERS,
        "-watchdog_major_maxtriggers", WATCHDOG_MAX_TRIGGERS,
    ]  # fmt: skip
    if trace_msgs:
        args += ["-trace_msg", "-message_file", "messages.log"]
    args += list(extra)
    return args


def _workdir(workdir: Path | str | None, prefix: str) -> Path:
    if workdir is None:
        return Path(tempfile.mkdtemp(prefix=f"sipp-{prefix}-"))
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=path))


def _stop_process(proc: subprocess.Popen, grace_s: float = ABORT_GRACE_S) -> None:
    """SIGTERM (SIPp drops its calls, prints its last screen and CSV row, exits 97), then SIGKILL.

    Not SIGUSR1: that is SIPp's soft quit (finish open calls first), and even a second one does
    not abort a call parked on a timer (INVITE retransmissions, a long pause).
    """
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(grace_s)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class SippProcess:
    """A SIPp started in the background (a UAS, or a UAC to collect later). Use as a context
    manager, or call :meth:`stop`; both always leave the process ended."""

    def __init__(self, args: list[str], workdir: Path, messages_path: Path | None, deadline_s: float):
        self.args = args
        self.workdir = workdir
        self.messages_path = messages_path
        self._stdout = open(workdir / "stdout.txt", "wb")  # noqa: SIM115 - closed in _finish
        self._stderr = open(workdir / "stderr.txt", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, cwd=workdir, stdin=subprocess.DEVNULL, stdout=self._stdout, stderr=self._stderr
        )
        self._deadline = time.monotonic() + deadline_s
        self._timed_out = False
        self._result: SippResult | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout_s: float | None = None) -> SippResult:
        """Wait for SIPp to end by itself (``-m`` calls done), at most ``timeout_s`` (default:
        the deadline given at start); past that it is stopped and ``timed_out`` is set."""
        if self._result is not None:
            return self._result
        limit = self._deadline - time.monotonic() if timeout_s is None else timeout_s
        try:
            self.proc.wait(max(0.0, limit))
        except subprocess.TimeoutExpired:
            self._timed_out = True
            _stop_process(self.proc)
        return self._finish()

    def stop(self) -> SippResult:
        """End SIPp now (open calls are aborted) and collect what it wrote."""
        if self._result is not None:
            return self._result
        _stop_process(self.proc)
        return self._finish()

    def messages(self) -> list[LoggedMessage]:
        """The messages logged so far (SIPp flushes its message log as it goes)."""
        return parse_message_log(self.messages_path) if self.messages_path else []

    def received(self, method: str | None = None) -> list[LoggedMessage]:
        return [
            m for m in self.messages() if m.direction == "received" and (method is None or m.method == method)
        ]

    def _finish(self) -> SippResult:
        self._stdout.close()
        self._stderr.close()
        stdout = (self.workdir / "stdout.txt").read_text(errors="replace")
        stats: dict[str, int | float | str] = dict(parse_final_screen(stdout))
        stats.update(parse_stat_csv(self.workdir / "stat.csv"))
        self._result = SippResult(
            returncode=self.proc.returncode,
            stats=stats,
            stdout=stdout[-20000:],
            stderr=(self.workdir / "stderr.txt").read_text(errors="replace")[-20000:],
            messages_path=self.messages_path,
            workdir=self.workdir,
            args=self.args,
            timed_out=self._timed_out,
            rtt=parse_rtt_files(self.workdir),
        )
        return self._result

    def __enter__(self) -> SippProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sipp(
    scenario: str | Path,
    target: str | None = None,
    *,
    local_ip: str,
    local_port: int = 0,
    calls: int = 1,
    rate: float | None = None,
    service: str | None = None,
    caller: str | None = DEFAULT_CALLER,
    hold_ms: int = 0,
    keys: Mapping[str, str] | None = None,
    extra: Iterable[str] = (),
    timeout_s: float = 10.0,
    recv_timeout_ms: int | None = None,
    trace_msgs: bool = True,
    rtt_freq: int = 1,
    transport: str = "u1",
    workdir: Path | str | None = None,
) -> SippProcess:
    """Start SIPp in the background and return at once (see :func:`run_sipp` for arguments)."""
    port = local_port or free_port(local_ip)
    wd = _workdir(workdir, Path(str(scenario)).stem)
    recv_ms = recv_timeout_ms if recv_timeout_ms is not None else int(timeout_s * 1000)
    args = _build_args(
        scenario,
        target=target,
        local_ip=local_ip,
        local_port=port,
        calls=calls,
        rate=rate,
        service=service,
        caller=caller,
        hold_ms=hold_ms,
        keys=keys,
        recv_timeout_ms=recv_ms,
        timeout_s=timeout_s,
        trace_msgs=trace_msgs,
        rtt_freq=rtt_freq,
        transport=transport,
        extra=list(extra),
    )
    proc = SippProcess(
        args, wd, wd / "messages.log" if trace_msgs else None, deadline_s=timeout_s + HARD_DEADLINE_MARGIN_S
    )
    proc.local_ip, proc.local_port = local_ip, port  # type: ignore[attr-defined]
    return proc


def run_sipp(
    scenario: str | Path,
    target: str,
    *,
    local_ip: str,
    local_port: int = 0,
    calls: int = 1,
    rate: float = 10.0,
    service: str | None = None,
    caller: str | None = DEFAULT_CALLER,
    hold_ms: int = 0,
    keys: Mapping[str, str] | None = None,
    extra: Iterable[str] = (),
    timeout_s: float = 10.0,
    recv_timeout_ms: int | None = None,
    trace_msgs: bool = True,
    rtt_freq: int = 1,
    transport: str = "u1",
    workdir: Path | str | None = None,
) -> SippResult:
    """Run a SIPp UAC to completion and return its :class:`SippResult`.

    ``scenario`` is a packaged name (``"uac_call"``) or a path; ``target`` is ``host:port``.
    ``calls`` is ``-m``, ``rate`` ``-r`` (calls/s), ``service`` ``-s`` (the dialled number),
    ``caller`` the ``-key caller`` value (passed only to scenarios that use ``[caller]``),
    ``hold_ms`` ``-d`` (every ``<pause/>``), ``keys`` more ``-key`` pairs, ``extra`` raw flags,
    ``transport`` ``-t`` (``u1`` UDP, ``t1`` TCP, ``un``/``tn`` one socket per call).
    SIPp runs in a fresh directory under ``workdir`` (pass pytest's ``tmp_path``; without it a
    directory in the system temp is made and left for post-mortem) holding ``stat.csv``,
    ``messages.log``, ``errors.log``, ``*_rtt.csv``, ``stdout.txt``.
    ``timeout_s`` bounds the run: it is SIPp's ``-timeout`` (soft: no new calls) and, :data:`HARD_DEADLINE_MARGIN_S` later,
    a hard stop here (``timed_out`` set); ``recv_timeout_ms`` (default ``timeout_s``) bounds each
    ``<recv>``. Never raises for a failed call: check ``returncode``/``failed``.
    """
    proc = start_sipp(
        scenario,
        target,
        local_ip=local_ip,
        local_port=local_port,
        calls=calls,
        rate=rate,
        service=service,
        caller=caller,
        hold_ms=hold_ms,
        keys=keys,
        extra=extra,
        timeout_s=timeout_s,
        recv_timeout_ms=recv_timeout_ms,
        trace_msgs=trace_msgs,
        rtt_freq=rtt_freq,
        transport=transport,
        workdir=workdir,
    )
    with proc:
        return proc.wait()


def _bound(ip: str, port: int, tcp: bool) -> bool:
    """Whether ``ip:port`` is bound (UDP) or listening (TCP); read from /proc/net, no privileges."""
    want = f"{socket.htonl(int.from_bytes(socket.inet_aton(ip), 'big')):08X}:{port:04X}"
    try:
        with open("/proc/net/tcp" if tcp else "/proc/net/udp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return False
    # TCP state 0A is LISTEN.
    return any(r[1] == want and (not tcp or r[3] == "0A") for r in rows)


def start_uas(
    scenario: str | Path,
    ip: str,
    port: int = 0,
    *,
    calls: int = 1,
    hold_ms: int = 0,
    keys: Mapping[str, str] | None = None,
    extra: Iterable[str] = (),
    timeout_s: float = 20.0,
    recv_timeout_ms: int | None = None,
    trace_msgs: bool = True,
    transport: str = "u1",
    workdir: Path | str | None = None,
) -> SippProcess:
    """Start a SIPp UAS listening on ``ip:port`` (port 0 picks a free one; ``transport`` as for
    :func:`run_sipp`) and return once the port is bound. ``.local_port`` holds the port.

    The UAS ends by itself after ``calls`` calls (``-m``); :meth:`SippProcess.wait` collects it,
    :meth:`SippProcess.stop` ends it early. The packaged callee scenarios answer an out-of-dialog
    OPTIONS (the SBC's gateway health probe) with 200, but each probe counts as one call towards
    ``calls``: with probing on, stop the UAS yourself and count INVITEs with ``received("INVITE")``.
    (Do not pass ``-aa``: in server mode it opens a call for the probe that then waits for an
    INVITE and fails on its receive timeout.)
    Raises RuntimeError if SIPp exits or does not bind within :data:`UAS_START_TIMEOUT_S`.
    """
    flags = list(extra)
    proc = start_sipp(
        scenario,
        None,
        local_ip=ip,
        local_port=port,
        calls=calls,
        rate=None,
        service=None,
        caller=None,
        hold_ms=hold_ms,
        keys=keys,
        extra=flags,
        timeout_s=timeout_s,
        recv_timeout_ms=recv_timeout_ms,
        trace_msgs=trace_msgs,
        transport=transport,
        workdir=workdir,
    )
    bound_port = proc.local_port  # type: ignore[attr-defined]
    deadline = time.monotonic() + UAS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not proc.running():
            result = proc.wait(0)
            raise RuntimeError(f"SIPp UAS exited at start:\n{result.explain()}")
        if _bound(ip, bound_port, tcp=transport.startswith("t")):
            return proc
        time.sleep(0.02)
    result = proc.stop()
    raise RuntimeError(f"SIPp UAS did not bind {ip}:{bound_port}:\n{result.explain()}")


def reject_scenario(code: int, reason: str, dest_dir: Path | str, extra_headers: Sequence[str] = ()) -> Path:
    """Write a UAS scenario that answers every INVITE with ``code reason`` (after a 100) and
    return its path. Made from ``uas_486.xml``: SIPp checks status codes when it loads a
    scenario, so the code cannot be a ``-key``. ``extra_headers`` are lines like ``"Retry-After: 5"``."""
    if not 300 <= code <= 699:
        raise ValueError(f"{code} is not a final failure code")
    text = scenario_path("uas_486").read_text()
    text = text.replace("SIP/2.0 486 Busy Here", f"SIP/2.0 {code} {reason}")
    text = text.replace('<scenario name="uas_486">', f'<scenario name="uas_{code}">')
    if extra_headers:
        lines = "".join(f"      {h}\n" for h in extra_headers)
        text = text.replace("      Content-Length: 0\n\n    ]]>\n  </send>\n\n  <recv request=\"ACK\"",
                            f"{lines}      Content-Length: 0\n\n    ]]>\n  </send>\n\n  <recv request=\"ACK\"")  # fmt: skip
    path = Path(dest_dir) / f"uas_{code}_{os.getpid()}_{time.monotonic_ns()}.xml"
    path.write_text(text)
    return path


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile (pct in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def topology_leaks(messages: Iterable[LoggedMessage], secrets: Iterable[str]) -> list[str]:
    """Which of ``secrets`` (addresses, Call-IDs, tags, host names of the far side) appear in any
    of ``messages``; each finding is ``"<secret> in <first line>: <line>"``. [] means hidden."""
    found = []
    wanted = [s for s in secrets if s]
    for msg in messages:
        for line in msg.text.split("\n"):
            for secret in wanted:
                if secret in line:
                    found.append(f"{secret!r} in {msg.first_line!r}: {line}")
    return found
