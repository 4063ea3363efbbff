"""Benchmark runner: ``python -m loadtest NAME [options]``; each prints one JSON object per run."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "parse": "loadtest.bench_parse",
    "calls": "loadtest.bench_calls",
    "api": "loadtest.bench_api",
    "engine": "loadtest.bench_engine",
    "ab": "loadtest.bench_ab",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m loadtest {{{','.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
