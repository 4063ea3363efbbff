"""Call load through a real ``sbc run``, driven by SIPp: one JSON line per run.

``python -m loadtest calls --rate R --seconds S --hold-ms H [--max-calls N]`` provisions a store
(one carrier on 127.0.0.2, one customer whose trunk delivers to a PBX on 127.0.0.3, DIDs
+14155550100..+14155550199), starts ``sbc run`` on 127.0.0.1, a SIPp UAS as the PBX
(``uas_answer.xml``) and a SIPp UAC as the carrier (``uac_call.xml``, dialling the 100 DIDs in
turn) at R calls/s for S seconds, each call held H ms, and prints::

    {"bench":"calls","mode":"sbc","rate":..,"seconds":..,"hold_ms":..,"calls":..,"ok":..,
     "failed":..,"retransmissions":..,"setup_p50_ms":..,"setup_p99_ms":..,"sbc_cpu_pct":..,
     "sbc_cpu_us_per_call":..,"sbc_rss_mb":..,"peak_concurrent":.., ...}

``--concurrent N`` holds N calls at once (the hold is stretched so that all N overlap) and adds
the RSS the SBC needs per established call. ``--direct`` leaves the SBC out (the UAC calls the UAS
itself): a baseline of what SIPp costs and achieves on this machine. loadtest/README.md explains
every figure. Traffic stays on 127.0.0.0/8, is bounded by ``-m`` and ``-timeout``, and every
process started here is ended here.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from loadtest.ports import free_port
from sbc.config import DEFAULT_RTP_PORTS, Settings, parse_port_range

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
REPO = Path(__file__).resolve().parents[1]

SBC_IP = "127.0.0.1"
CARRIER_IP = "127.0.0.2"
PBX_IP = "127.0.0.3"
CALLER = "+12125550199"
#: The DIDs provisioned and dialled in turn (one injection-file line per call).
NUMBERS = tuple(f"+1415555{n:04d}" for n in range(100, 200))

#: How long ``sbc run`` may take to answer its first OPTIONS.
SBC_START_TIMEOUT_S = 20.0
#: Longest a single SIPp ``<recv>`` may wait beyond the hold: an INVITE transaction (64*T1 = 32 s).
RECV_MARGIN_MS = 35_000
#: SIPp's -timeout is a soft quit (no new calls); the hard stop comes this much later.
HARD_STOP_MARGIN_S = 30.0
#: psutil sampling period for the SBC's RSS and the processes' CPU times.
SAMPLE_INTERVAL_S = 0.2
#: In --concurrent mode, the time all N calls are held together (RSS is read in that window).
PLATEAU_S = 3.0
#: The SBC's default RTP port range and port quarantine (sbc.config): 4 ports per call, each held
#: for the call and then the quarantine, so the range carries (ports / 4) / (hold + quarantine)
#: calls/s. At 1,500 calls/s with 1 s holds that is 90 % of the default 20,000 ports: a BYE late by a
#: few hundred ms (a host hiccup) leaves the next calls "no relay ports left" (503, the CDR says so).
RTP_PORTS = parse_port_range(DEFAULT_RTP_PORTS)
RTP_QUARANTINE_S: float = Settings.model_fields["rtp_port_quarantine"].default
#: The range a run gets: room for this many times the ports its rate and hold keep busy, as an
#: operator would size it for that load (the default when that is enough).
RTP_PORT_HEADROOM = 2.0
#: SIPp socket buffers: 4 MiB so a burst at 1000+ calls/s is not dropped by the kernel
#: (capped by net.core.rmem_max / wmem_max; SIPp only warns when it is).
SIPP_BUFF_SIZE = 4 * 1024 * 1024


def rtp_ports_for(rate: float, hold_ms: int) -> tuple[int, int]:
    """The RTP port range for ``rate`` calls/s held ``hold_ms``: the SBC's default range when it
    holds RTP_PORT_HEADROOM times the ports the load keeps busy, else a range from its start that
    does (capped at 65535)."""
    lo, hi = RTP_PORTS
    needed = math.ceil(rate * (hold_ms / 1000 + RTP_QUARANTINE_S) * 4 * RTP_PORT_HEADROOM)
    return lo, min(65535, max(hi, lo + needed - 1))


def failure_reasons(db_path: Path) -> dict[str, int]:
    """Calls the SBC refused or failed, by the CDR's end reason and code (``"503 media refused: no
    relay ports left"``): the SBC's side of SIPp's ``failed_codes``. A call shed by overload
    protection has no CDR (a stateless 503), so it is missing here."""
    if not db_path.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT sip_code, end_reason, count(*) FROM cdrs WHERE disposition != 'answered' GROUP BY 1, 2"
        ).fetchall()
    return {f"{code} {reason}": n for code, reason, n in sorted(rows)}


def provision_yaml(pbx_port: int) -> str:
    """The provision file of the benchmark: carrier -> DID -> trunk -> PBX at ``pbx_port``."""
    numbers = "\n".join(f'  - {{e164: "{n}", customer: bench, trunk: pbx}}' for n in NUMBERS)
    return f"""carriers:
  - name: bench-carrier
    gateways: [{{host: {CARRIER_IP}, port: 5060, transport: udp}}]
    inbound_cidrs: [{CARRIER_IP}/32]
customers:
  - name: bench
    trunks:
      - name: pbx
        allowed_cidrs: [{PBX_IP}/32]
        targets: [{{uri: "sip:{PBX_IP}:{pbx_port}"}}]
numbers:
{numbers}
routes: []
"""


def _options(port: int) -> bytes:
    return (
        f"OPTIONS sip:{SBC_IP}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {SBC_IP}:9;branch=z9hG4bK-bench-{time.monotonic_ns()}\r\n"
        f"From: <sip:bench@{SBC_IP}>;tag=bench\r\nTo: <sip:{SBC_IP}>\r\n"
        f"Call-ID: bench-ready-{time.monotonic_ns()}@{SBC_IP}\r\nCSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _sbc_answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((SBC_IP, 0))
        s.settimeout(0.3)
        s.sendto(_options(port), (SBC_IP, port))
        try:
            return s.recv(65535).startswith(b"SIP/2.0 ")
        except OSError:
            return False


def _stop(proc: subprocess.Popen | None, grace_s: float = 10.0) -> None:
    """SIGTERM (SIPp and sbc both exit cleanly on it), then SIGKILL; only this process."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Sampler:
    """Samples processes in a thread: the SBC's RSS over time, every process's last CPU times."""

    pids: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # name -> user+system seconds, last seen
    rss: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, bytes) of "sbc"
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def sample(self) -> None:
        now = time.monotonic()
        for name, pid in list(self.pids.items()):
            try:
                top = psutil.Process(pid)
                # sbc run --workers N: the supervisor and its workers together.
                procs = [top, *top.children(recursive=True)] if name == "sbc" else [top]
            except psutil.Error:
                continue
            cpu = rss = 0.0
            for proc in procs:
                try:
                    with proc.oneshot():
                        t = proc.cpu_times()
                        cpu += t.user + t.system
                        rss += proc.memory_info().rss if name == "sbc" else 0
                except psutil.Error:
                    continue
            self.cpu[name] = cpu
            if name == "sbc":
                self.rss.append((now, int(rss)))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_INTERVAL_S)

    def rss_max(self, start: float = 0.0, end: float = math.inf) -> int | None:
        values = [r for t, r in self.rss if start <= t <= end]
        return max(values) if values else None


def _stat_rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", errors="replace") as f:
            rows = [r for r in csv.reader(f, delimiter=";") if r]
    except FileNotFoundError:
        return []
    if len(rows) < 2:
        return []
    return [dict(zip(rows[0], r, strict=False)) for r in rows[1:]]


def _int(row: dict[str, str], key: str) -> int:
    try:
        return int(float(row.get(key, "0") or 0))
    except ValueError:
        return 0


def _error_codes(workdir: Path) -> dict[str, int]:
    """Response codes that failed calls (unexpected in the scenario), from ``-trace_error_codes``:
    rows ``time;elapsed;code,code,...,`` each holding the codes since the previous row."""
    counts: dict[str, int] = {}
    for path in workdir.glob("*_error_codes.csv"):
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(";")
            if len(parts) >= 3:
                for code in filter(None, parts[2].split(",")):
                    counts[code.strip()] = counts.get(code.strip(), 0) + 1
    return dict(sorted(counts.items()))


def _rtt(workdir: Path, name: str) -> list[float]:
    out = []
    for path in workdir.glob("*_rtt.csv"):
        for line in path.read_text(errors="replace").splitlines()[1:]:
            parts = line.split(";")
            if len(parts) >= 3 and parts[2] == name:
                with contextlib.suppress(ValueError):
                    out.append(float(parts[1]))
    return out


_ENTRY_RE = re.compile(
    r"^-{20,} (\S+ \S+)\n[A-Z]+ message (sent|received) [^\n]*\n\n"
    r"(SIP/2\.0 (\d{3})|INVITE )[^\n]*\n(.*?)(?=^-{20,} |\Z)",
    re.M | re.S,
)
_CALL_ID_RE = re.compile(r"^(?:Call-ID|i)\s*:\s*(\S+)", re.M | re.I)
_CSEQ_RE = re.compile(r"^CSeq\s*:\s*\d+\s+(\w+)", re.M | re.I)


def setup_times_from_log(path: Path) -> list[float]:
    """INVITE first sent -> first 200 (CSeq INVITE) received, per Call-ID, in ms, from a SIPp
    ``-trace_msg`` file (timestamps in microseconds), for the calls that got a 200."""
    from datetime import datetime

    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    try:
        text = path.read_text(errors="replace").replace("\r\n", "\n")
    except FileNotFoundError:
        return []
    for m in _ENTRY_RE.finditer(text):
        stamp, direction, status, rest = m.group(1), m.group(2), m.group(4), m.group(5)
        call_id = _CALL_ID_RE.search(rest)
        if not call_id:
            continue
        cid = call_id.group(1)
        when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if direction == "sent" and status is None:
            sent.setdefault(cid, when)
        elif direction == "received" and status == "200":
            cseq = _CSEQ_RE.search(rest)
            if cseq and cseq.group(1).upper() == "INVITE" and cid not in answered:
                answered[cid] = when
    return [(answered[c] - sent[c]) * 1000 for c in answered if c in sent]


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered)))) - 1]


def _sipp_common(recv_timeout_ms: int, timeout_s: float) -> list[str]:
    return [
        "-nostdin", "-bind_local",
        "-timeout", f"{max(1, math.ceil(timeout_s))}s",
        "-recv_timeout", str(recv_timeout_ms),
        "-trace_stat", "-stf", "stat.csv", "-fd", "1",
        "-trace_err", "-error_file", "errors.log",
        "-trace_rtt", "-rtt_freq", "1",
        "-trace_error_codes",
        "-max_recv_loops", "10000", "-max_sched_loops", "10000",
        "-buff_size", str(SIPP_BUFF_SIZE),
        "-watchdog_minor_maxtriggers", "1000000", "-watchdog_major_maxtriggers", "1000000",
    ]  # fmt: skip


def _spawn(args: list[str], workdir: Path, name: str) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / f"{name}.out", "wb") as out:
        return subprocess.Popen(
            args, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


def _wait_bound(ip: str, port: int, proc: subprocess.Popen, timeout_s: float = 5.0) -> None:
    want = f"{socket.htonl(int.from_bytes(socket.inet_aton(ip), 'big')):08X}:{port:04X}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"SIPp exited with {proc.returncode} at start")
        with open("/proc/net/udp") as f:
            if any(line.split()[1] == want for line in f.readlines()[1:]):
                return
        time.sleep(0.02)
    raise RuntimeError(f"SIPp did not bind {ip}:{port}")


#: File descriptors the SBC is given (as deploy/sbc.service's LimitNOFILE does): the relay opens
#: four sockets per call, so 10,000 concurrent calls need 40,000 and more.
SBC_NOFILE = 131072


def _raise_fd_limit() -> None:
    """In the SBC's child process before exec: RLIMIT_NOFILE up to SBC_NOFILE where allowed
    (raising the hard limit needs root or CAP_SYS_RESOURCE). Otherwise nothing: the relay engine
    raises its soft limit to the hard one itself when it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, SBC_NOFILE), max(hard, SBC_NOFILE)))


class MetricsScraper:
    """Scrapes ``/metrics`` once a second during the run, as Prometheus would, so that a run with
    ``--api`` pays for the API server and for rendering every collector under load."""

    INTERVAL_S = 1.0

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = self.failed = 0
        self.times_ms: list[float] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="metrics-scraper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(self.INTERVAL_S):
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    response.read()
                self.ok += 1
                self.times_ms.append((time.monotonic() - started) * 1000)
            except OSError:
                self.failed += 1

    def stop(self) -> dict:
        self._done.set()
        self._thread.join(10)
        return {
            "metrics_scrapes": self.ok,
            "metrics_scrape_failures": self.failed,
            "metrics_scrape_p50_ms": round(p50, 1) if (p50 := percentile(self.times_ms, 50)) is not None else None,
        }


def run(args: argparse.Namespace) -> dict:
    """One benchmark run; returns the result dict (also on failure, with an "error" key)."""
    rate, seconds, hold_ms = args.rate, args.seconds, args.hold_ms
    calls = args.max_calls or max(1, int(rate * seconds))
    if args.concurrent:
        calls = args.concurrent
        ramp_s = calls / rate
        seconds = round(ramp_s, 2)  # calls are started for this long
        hold_ms = max(hold_ms, int((ramp_s + PLATEAU_S + 1.0) * 1000))
    limit = args.concurrent or max(100, int(rate * (hold_ms / 1000 + 2) * 3))
    expected_s = calls / rate + hold_ms / 1000
    soft_timeout_s = expected_s + 10
    recv_timeout_ms = hold_ms + RECV_MARGIN_MS

    workdir = Path(tempfile.mkdtemp(prefix="bench-calls-", dir=args.workdir))
    result: dict = {
        "bench": "calls",
        "mode": "direct" if args.direct else "sbc",
        "rate": rate,
        "seconds": seconds,
        "hold_ms": hold_ms,
        "api": bool(args.api and not args.direct),
        "workers": 0 if args.direct else args.workers,
    }
    sampler = Sampler()
    sbc = uas = uac = None
    try:
        pbx_port = free_port(PBX_IP)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        if not args.direct:
            db_url = f"sqlite:///{workdir / 'sbc.db'}"
            (workdir / "provision.yaml").write_text(provision_yaml(pbx_port))
            prov = subprocess.run(
                [sys.executable, "-m", "sbc", "provision", str(workdir / "provision.yaml"), "--db", db_url],
                capture_output=True, text=True, env=env, cwd=workdir, timeout=60,
            )  # fmt: skip
            if prov.returncode != 0:
                raise RuntimeError(f"sbc provision failed ({prov.returncode}): {prov.stderr.strip()}")
            sbc_port = free_port(SBC_IP)
            sbc_env = {**env, **dict(kv.split("=", 1) for kv in args.sbc_env)}
            api_listen = f"{SBC_IP}:{free_port(SBC_IP)}" if args.api else ""
            rtp_lo, rtp_hi = rtp_ports_for(rate, hold_ms)
            result["rtp_ports"] = f"{rtp_lo}-{rtp_hi}"
            with open(workdir / "sbc.log", "wb") as log:
                sbc = subprocess.Popen(
                    [sys.executable, "-m", "sbc", "run", "--sip-listen", f"udp:{SBC_IP}:{sbc_port}",
                     "--api-listen", api_listen, "--db", db_url, "--rtp-ip", SBC_IP,
                     "--rtp-ports", result["rtp_ports"],
                     "--log-level", args.sbc_log_level, "--workers", str(args.workers)],
                    stdout=log, stderr=subprocess.STDOUT, env=sbc_env, cwd=workdir,
                    preexec_fn=_raise_fd_limit,
                )  # fmt: skip
            deadline = time.monotonic() + SBC_START_TIMEOUT_S
            while not _sbc_answers(sbc_port):
                if sbc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sbc did not start:\n{(workdir / 'sbc.log').read_text()[-2000:]}")
                time.sleep(0.1)
            sampler.watch("sbc", sbc.pid)
            target = f"{SBC_IP}:{sbc_port}"
        else:
            target = f"{PBX_IP}:{pbx_port}"

        # The PBX (callee). -m: it also counts an OPTIONS probe as a call, so it is stopped
        # by us rather than trusted to end on its count.
        uas_dir = workdir / "uas"
        uas = _spawn(
            ["sipp", "-sf", str(SCENARIOS / "uas_answer.xml"), "-i", PBX_IP, "-p", str(pbx_port),
             "-m", str(calls), *_sipp_common(recv_timeout_ms, soft_timeout_s + 5)],
            uas_dir, "uas",
        )  # fmt: skip
        _wait_bound(PBX_IP, pbx_port, uas)
        sampler.watch("uas", uas.pid)

        # The carrier (caller): uac_call.xml dialling the DIDs in turn from an injection file.
        uac_dir = workdir / "uac"
        uac_dir.mkdir()
        scenario = (SCENARIOS / "uac_call.xml").read_text().replace("[service]", "[field0]")
        (uac_dir / "uac_call.xml").write_text(scenario)
        (uac_dir / "numbers.csv").write_text("SEQUENTIAL\n" + "".join(f"{n};\n" for n in NUMBERS))
        trace = ["-trace_msg", "-message_file", "messages.log"] if args.trace_msg else []
        uac_args = [
            *["sipp", target], *trace, "-sf", "uac_call.xml", "-inf", "numbers.csv", "-key", "caller", CALLER,
            "-i", CARRIER_IP, "-p", str(free_port(CARRIER_IP)),
            "-r", f"{rate:g}", "-rp", "1000", "-m", str(calls), "-l", str(limit), "-d", str(hold_ms),
            *_sipp_common(recv_timeout_ms, soft_timeout_s),
        ]  # fmt: skip
        sampler.sample()
        rss_before = sampler.rss_max()
        sampler.start()
        t0 = time.monotonic()
        cpu0 = dict(sampler.cpu)
        uac = _spawn(uac_args, uac_dir, "uac")
        sampler.watch("uac", uac.pid)
        scraper = MetricsScraper(f"http://{api_listen}/metrics") if sbc is not None and args.api else None
        try:
            uac.wait(soft_timeout_s + HARD_STOP_MARGIN_S)
        except subprocess.TimeoutExpired:
            result["error"] = "SIPp UAC did not finish in time; stopped"
            _stop(uac)
        finally:
            if scraper is not None:
                result.update(scraper.stop())
        t1 = time.monotonic()
        sampler.sample()
        try:
            uas.wait(5)
        except subprocess.TimeoutExpired:
            _stop(uas)
        sampler.stop()
        wall = t1 - t0

        uac_rows, uas_rows = _stat_rows(uac_dir / "stat.csv"), _stat_rows(uas_dir / "stat.csv")
        uac_last = uac_rows[-1] if uac_rows else {}
        uas_last = uas_rows[-1] if uas_rows else {}
        setup_rtd = setup = _rtt(uac_dir, "setup")
        if args.trace_msg:
            setup = [round(v, 3) for v in setup_times_from_log(uac_dir / "messages.log")]
        peaks = re.findall(r"Peak was (\d+) calls", (uac_dir / "uac.out").read_text(errors="replace"))
        peak = int(peaks[-1]) if peaks else max((_int(r, "CurrentCall") for r in uac_rows), default=0)
        result.update(
            hold_ms=hold_ms,
            calls=_int(uac_last, "TotalCallCreated"),
            ok=_int(uac_last, "SuccessfulCall(C)"),
            failed=_int(uac_last, "FailedCall(C)"),
            retransmissions=_int(uac_last, "Retransmissions(C)") + _int(uas_last, "Retransmissions(C)"),
            setup_p50_ms=percentile(setup, 50),
            setup_p99_ms=percentile(setup, 99),
            sbc_cpu_pct=None,
            sbc_rss_mb=None,
            peak_concurrent=peak,
        )
        result.update(
            setup_max_ms=max(setup) if setup else None,
            wall_s=round(wall, 2),
            achieved_cps=round(_int(uac_last, "TotalCallCreated") / max(1e-9, wall - hold_ms / 1000), 1),
            uac_retransmissions=_int(uac_last, "Retransmissions(C)"),
            uas_ok=_int(uas_last, "SuccessfulCall(C)"),
            uas_failed=_int(uas_last, "FailedCall(C)"),
            uac_rc=uac.returncode,
            failed_timeouts=_int(uac_last, "FailedTimeoutOnRecv(C)")
            + _int(uac_last, "FailedMaxUDPRetrans(C)"),
            failed_unexpected=_int(uac_last, "FailedUnexpectedMessage(C)"),
            failed_codes=_error_codes(uac_dir),
            sipp_watchdog_trips=_int(uac_last, "WatchdogMajor(C)") + _int(uac_last, "WatchdogMinor(C)"),
        )
        if args.trace_msg:
            result["setup_source"] = "message_log_us"
            result["setup_p50_ms_sipp_rtd"] = percentile(setup_rtd, 50)
            result["setup_p99_ms_sipp_rtd"] = percentile(setup_rtd, 99)
        else:
            result["setup_source"] = "sipp_rtd_ms"
        for name in ("uac", "uas"):
            if name in sampler.cpu:
                result[f"sipp_{name}_cpu_pct"] = round(
                    100 * (sampler.cpu[name] - cpu0.get(name, 0.0)) / wall, 1
                )
        if sbc is not None:
            sbc_cpu_s = sampler.cpu.get("sbc", 0.0) - cpu0.get("sbc", 0.0)
            result["sbc_cpu_pct"] = round(100 * sbc_cpu_s / wall, 1)
            # CPU per offered call over the whole run (the hold's tail included); sbc_cpu_pct / rate
            # reads about 5 % lower, because the run lasts `seconds` plus the last calls' hold.
            calls = result.get("calls")
            result["sbc_cpu_us_per_call"] = round(1e6 * sbc_cpu_s / calls) if calls else None
            peak_rss = sampler.rss_max(t0, t1 + 1)
            result["sbc_rss_mb"] = round(peak_rss / 2**20, 1) if peak_rss else None
            result["sbc_rss_before_mb"] = round(rss_before / 2**20, 1) if rss_before else None
            result["sbc_alive"] = sbc.poll() is None
            if args.concurrent and peak_rss and rss_before:
                result["concurrent_target"] = args.concurrent
                established = min(args.concurrent, peak)
                result["rss_per_call_kb"] = round((peak_rss - rss_before) / 1024 / max(1, established), 1)
        elif args.concurrent:
            result["concurrent_target"] = args.concurrent
    except Exception as exc:  # the JSON line still comes out, saying what went wrong
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        sampler.stop()
        _stop(uac)
        _stop(uas)
        _stop(sbc)
        if sbc is not None and "calls" in result:
            try:  # after the stop: the workers have written every CDR
                result["failed_sbc_reasons"] = failure_reasons(workdir / "sbc.db")
            except sqlite3.Error as exc:
                result["failed_sbc_reasons"] = {"error": str(exc)}
        if args.keep:
            print(f"bench-calls: files kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtest calls", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=50.0, help="new calls per second (SIPp -r), default 50")
    p.add_argument("--seconds", type=float, default=10.0, help="how long calls are started, default 10")
    p.add_argument("--hold-ms", type=int, default=1000, help="how long each answered call lasts (SIPp -d)")
    p.add_argument("--max-calls", type=int, default=0, help="cap on calls (default rate x seconds)")
    p.add_argument("--concurrent", type=int, default=0, metavar="N",
                   help="hold N calls at once and report the SBC's RSS per established call")  # fmt: skip
    p.add_argument("--trace-msg", action="store_true",
                   help="log every SIP message of the caller and take setup times from the log's "
                   "microsecond timestamps instead of SIPp's millisecond response-time ticks")  # fmt: skip
    p.add_argument(
        "--direct", action="store_true", help="no SBC: SIPp UAC straight to the SIPp UAS (baseline)"
    )
    p.add_argument("--api", action="store_true",
                   help="serve the REST API and /metrics (scraped every second) during the run")  # fmt: skip
    p.add_argument("--sbc-env", action="append", default=[], metavar="NAME=VALUE",
                   help="extra environment for sbc run, e.g. SBC_OVERLOAD_PROTECTION=false")  # fmt: skip
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="sbc run --workers N: worker processes sharing the SIP port, default 1")  # fmt: skip
    p.add_argument("--sbc-log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--workdir", default=None, help="parent directory for the run's files (default: system temp)"
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the run's files (logs, SIPp traces) and print where"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.hold_ms < 0:
        print("bench-calls: --rate and --seconds must be > 0, --hold-ms >= 0", file=sys.stderr)
        return 2
    if shutil.which("sipp") is None:
        print("bench-calls: sipp not found (Debian package sip-tester)", file=sys.stderr)
        return 2
    result = run(args)
    print(json.dumps(result, separators=(",", ":")))
    return 1 if "error" in result else 0


if __name__ == "__main__":
    raise SystemExit(main())
