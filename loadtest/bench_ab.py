"""Two builds of the SBC alternated through the calls benchmark, to see which needs less CPU per call.

The shared host's speed drifts by 20 % within hours, more than most changes to the SBC, so a
comparison means something only between runs taken in one sitting. This runs ``python -m
loadtest calls`` with the same options ``--pairs`` times for each build, alternating them
(this checkout first in even pairs, the other first in odd ones, so a steady drift weighs on both
alike), and prints each run's JSON line with ``"build"`` added, then a summary: per build the runs,
how many had no failed call and the median CPU per offered call (``cpu_us_per_call``, from
``sbc_cpu_pct``, ``wall_s`` and ``calls``, which every version prints); per pair the other build's
figure against this one's, and how many pairs this checkout needed less.

The other build is a checkout built in place (``python setup.py build_ext --inplace``). Its runs
start in its directory with it first on ``PYTHONPATH``: ``python -m`` puts the current directory
ahead of ``PYTHONPATH``, so the driver and the ``sbc run`` it starts both take that checkout's code.
Run: ``python -m loadtest ab --other DIR [--pairs N] [-- calls options]`` (calls options default to
``--rate 1500 --seconds 20 --hold-ms 1000 --workers 2``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

DEFAULT_CALLS_ARGS = ["--rate", "1500", "--seconds", "20", "--hold-ms", "1000", "--workers", "2"]
THIS, OTHER = "this", "other"


def run_calls(checkout: Path, calls_args: list[str]) -> dict:
    """One ``loadtest calls`` run of ``checkout``'s code; its JSON line (an ``error`` if none)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run(
        [sys.executable, "-m", "loadtest", "calls", *calls_args],
        cwd=checkout, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"no JSON line (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"}
    return json.loads(lines[-1])


def order(pair: int) -> tuple[str, str]:
    """Which build runs first in pair ``pair``: alternately, so a drift in time weighs on both."""
    return (THIS, OTHER) if pair % 2 == 0 else (OTHER, THIS)


def passed(run: dict) -> bool:
    """A run with every call answered: no failed call, no retransmission, the SBC still up."""
    return (
        "error" not in run
        and run.get("failed") == 0
        and run.get("retransmissions") == 0
        and run.get("ok") == run.get("calls")
        and run.get("sbc_alive", True)
    )


def cpu_us_per_call(run: dict) -> float | None:
    """The SBC's CPU per offered call, from the fields every version of the calls benchmark prints
    (an older checkout has no ``sbc_cpu_us_per_call``), so both builds are measured alike."""
    if "error" in run or not run.get("calls") or run.get("sbc_cpu_pct") is None or not run.get("wall_s"):
        return None
    return round(1e4 * run["sbc_cpu_pct"] * run["wall_s"] / run["calls"], 1)


def summarize(runs: list[dict]) -> dict:
    """The summary line: per build, and this checkout against the other pair by pair."""
    out: dict = {"bench": "ab", "pairs": max((r["pair"] for r in runs), default=-1) + 1}
    for build in (THIS, OTHER):
        mine = [r for r in runs if r["build"] == build]
        cpu = [c for c in map(cpu_us_per_call, mine) if c]
        out[build] = {
            "runs": len(mine),
            "passed": sum(passed(r) for r in mine),
            "cpu_us_per_call_median": round(statistics.median(cpu), 1) if cpu else None,
        }
    ratios = []
    for pair in range(out["pairs"]):
        both = {r["build"]: cpu_us_per_call(r) for r in runs if r["pair"] == pair}
        if both.get(THIS) and both.get(OTHER):
            ratios.append(both[THIS] / both[OTHER])
    out["pairs_this_lower"] = sum(ratio < 1 for ratio in ratios)
    out["cpu_ratio_median"] = round(statistics.median(ratios), 3) if ratios else None
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    calls_args = DEFAULT_CALLS_ARGS
    if "--" in argv:
        cut = argv.index("--")
        argv, calls_args = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(prog="python -m loadtest ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--other", required=True, type=Path, help="another checkout, built in place")
    p.add_argument("--pairs", type=int, default=4, help="runs of each build (default 4)")
    args = p.parse_args(argv)
    checkouts = {THIS: Path(__file__).resolve().parents[1], OTHER: args.other.resolve()}
    if not (checkouts[OTHER] / "sbc").is_dir():
        p.error(f"{checkouts[OTHER]} is not a checkout of this project (no sbc/)")
    runs = []
    for pair in range(args.pairs):
        for build in order(pair):
            run = {"build": build, "pair": pair, **run_calls(checkouts[build], calls_args)}
            run["cpu_us_per_call"] = cpu_us_per_call(run)
            print(json.dumps(run, separators=(",", ":")), flush=True)
            runs.append(run)
    print(json.dumps(summarize(runs), separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
