"""``python -m loadtest.rtp_load --streams N --seconds S``: one run, one JSON line on stdout."""

from __future__ import annotations

import argparse
import json

from . import DEFAULT_PORT_MIN, GEN_SENDERS, run


def _cpu_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run one bounded load test on 127.0.0.1 and print its JSON result."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.rtp_load", description=__doc__)
    parser.add_argument("--streams", type=int, required=True, help="concurrent calls (two directions each)")
    parser.add_argument("--seconds", type=float, default=10.0, help="sending time")
    parser.add_argument("--workers", type=int, default=1, help="relay worker threads")
    parser.add_argument("--port-min", type=int, default=DEFAULT_PORT_MIN, help="first relay port")
    parser.add_argument(
        "--rt-priority",
        type=int,
        default=0,
        help="SCHED_FIFO priority of relay workers and generator threads (0 = normal)",
    )
    parser.add_argument(
        "--backend",
        choices=["auto", "epoll", "io_uring"],
        default=None,
        help="relay I/O backend (default: RTP_RELAY_BACKEND, else auto)",
    )
    parser.add_argument(
        "--relay-cpus", type=_cpu_list, default=None, help="pin relay workers to these CPUs, e.g. 0 or 0,1"
    )
    parser.add_argument("--generator-cpu", type=int, default=-1, help="pin the generator threads to this CPU")
    parser.add_argument(
        "--poll-interval", type=float, default=None, help="relay busy-poll nap in seconds (default 0.0002)"
    )
    parser.add_argument(
        "--kernel",
        choices=["auto", "on", "off"],
        default=None,
        help="relay kernel fast path (default: RTP_RELAY_KERNEL, else auto)",
    )
    parser.add_argument("--senders", type=int, default=GEN_SENDERS, help="generator sender threads")
    args = parser.parse_args(argv)
    result = run(
        args.streams,
        args.seconds,
        workers=args.workers,
        port_min=args.port_min,
        rt_priority=args.rt_priority,
        backend=args.backend,
        relay_cpus=args.relay_cpus,
        generator_cpu=args.generator_cpu,
        poll_interval=args.poll_interval,
        kernel=args.kernel,
        senders=args.senders,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
