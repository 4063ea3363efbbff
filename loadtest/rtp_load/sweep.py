"""Sweep the RTP load test over call counts and relay backends; print medians.

``python -m loadtest.rtp_load.sweep --streams 100,500,1000,1500,2000 --repeats 3``
runs ``python -m loadtest.rtp_load`` once per (repeat, calls, backend), each in a
fresh process, the backends back to back so both see the same machine load.
Every run's JSON goes to ``--out`` (one line each, rejected runs included and
marked); the median table (markdown) goes to stdout.

On a shared machine other work steals the CPU the relay and the generator need;
``--max-other-cpu C`` repeats a run (up to ``--retries`` times) whose
``other_cpu_cores`` (all CPU outside the test process) exceeded C, so the table
describes the relay and not the neighbours.  The rejected runs stay in the file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

# Columns of the summary: (JSON key, header, format).
COLUMNS = [
    ("loss", "loss", "{:.5%}"),
    ("latency_p50_ms", "p50 ms", "{:.2f}"),
    ("latency_p99_ms", "p99 ms", "{:.2f}"),
    ("latency_p999_ms", "p99.9 ms", "{:.2f}"),
    ("relayed_pps", "relayed pps", "{:.0f}"),
    ("relay_cpu_cores", "relay cores", "{:.3f}"),
    ("relay_cpu_us_per_packet", "relay us/pkt", "{:.2f}"),
    ("relay_syscalls_per_packet", "syscalls/pkt", "{:.3f}"),
    ("generator_cpu_cores", "generator cores", "{:.3f}"),
    ("generator_tx_late_p99_ms", "gen late p99 ms", "{:.2f}"),
    ("other_cpu_cores", "other cores", "{:.3f}"),
]
# Pause between runs so sockets and the previous process are fully gone.
PAUSE_S = 1.0


def one_run(calls: int, variant: str, args: argparse.Namespace) -> dict:
    """Run one load test in a fresh interpreter and return its JSON result.

    ``variant`` is a backend name, with "+kernel" for the kernel fast path on."""
    backend, _, extra = variant.partition("+")
    cmd = [
        sys.executable,
        "-m",
        "loadtest.rtp_load",
        "--streams",
        str(calls),
        "--seconds",
        str(args.seconds),
        "--backend",
        backend,
        "--rt-priority",
        str(args.rt_priority),
        "--workers",
        str(args.workers),
        "--kernel",
        "on" if extra == "kernel" else "off",
    ]
    if args.relay_cpus:
        cmd += ["--relay-cpus", args.relay_cpus]
    if args.generator_cpu >= 0:
        cmd += ["--generator-cpu", str(args.generator_cpu)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["variant"] = variant
    return result


def summary(results: list[dict]) -> str:
    """Markdown table of medians per (calls, backend) over accepted runs."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in results:
        if not r.get("rejected"):
            groups.setdefault((r["streams"], r.get("variant", r["backend"])), []).append(r)
    head = "| calls | backend | runs | " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
    for (calls, backend), runs in sorted(groups.items()):
        cells = []
        for key, _, fmt in COLUMNS:
            values = [r[key] for r in runs if r.get(key) is not None]
            cells.append(fmt.format(statistics.median(values)) if values else "-")
        lines.append(f"| {calls} | {backend} | {len(runs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep, write every run to --out, print the median table."""
    p = argparse.ArgumentParser(prog="python -m loadtest.rtp_load.sweep", description=__doc__)
    p.add_argument("--streams", default="100,500,1000,1500,2000", help="comma-separated call counts")
    p.add_argument(
        "--backends",
        default="epoll,io_uring,io_uring+kernel",
        help="comma-separated relay backends, +kernel for the kernel fast path on",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rt-priority", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--relay-cpus", default="")
    p.add_argument("--generator-cpu", type=int, default=-1)
    p.add_argument("--max-other-cpu", type=float, default=None, help="reject runs with more foreign CPU load")
    p.add_argument("--retries", type=int, default=3, help="attempts per rejected run")
    p.add_argument("--out", default="rtp_load_sweep.jsonl")
    args = p.parse_args(argv)
    calls_list = [int(x) for x in args.streams.split(",")]
    backends = [x for x in args.backends.split(",") if x]
    results: list[dict] = []
    with open(args.out, "a") as out:
        for repeat in range(args.repeats):
            for calls in calls_list:
                for backend in backends:
                    for attempt in range(args.retries):
                        r = one_run(calls, backend, args)
                        r["repeat"] = repeat
                        r["rt_priority"] = args.rt_priority
                        busy = args.max_other_cpu is not None and r["other_cpu_cores"] > args.max_other_cpu
                        r["rejected"] = busy and attempt + 1 < args.retries
                        results.append(r)
                        out.write(json.dumps(r) + "\n")
                        out.flush()
                        print(
                            f"# {calls} calls {backend} repeat {repeat}: loss {r['loss']:.5%} "
                            f"p99 {r['latency_p99_ms']} ms relay {r['relay_cpu_cores']} cores "
                            f"other {r['other_cpu_cores']} {'(rejected)' if r['rejected'] else ''}",
                            file=sys.stderr,
                            flush=True,
                        )
                        time.sleep(PAUSE_S)
                        if not r["rejected"]:
                            break
    print(summary(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
