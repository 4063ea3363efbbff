"""The A/B runner's bookkeeping (loadtest/bench_ab.py): order, pass rule and summary, without SIPp."""

from __future__ import annotations

from loadtest.bench_ab import OTHER, THIS, cpu_us_per_call, order, passed, summarize


def _run(build: str, pair: int, cpu: int, failed: int = 0) -> dict:
    return {"build": build, "pair": pair, "calls": 100, "ok": 100 - failed, "failed": failed,
            "retransmissions": 0, "sbc_alive": True, "sbc_cpu_pct": cpu / 100, "wall_s": 1.0}  # fmt: skip


def test_builds_alternate_which_runs_first() -> None:
    assert [order(p) for p in range(4)] == [(THIS, OTHER), (OTHER, THIS), (THIS, OTHER), (OTHER, THIS)]


def test_a_run_passes_only_with_every_call_answered() -> None:
    assert passed(_run(THIS, 0, 900))
    assert not passed(_run(THIS, 0, 900, failed=1))
    assert not passed({**_run(THIS, 0, 900), "retransmissions": 3})
    assert not passed({**_run(THIS, 0, 900), "sbc_alive": False})
    assert not passed({"build": THIS, "pair": 0, "error": "no JSON line"})


def test_summary_compares_the_builds_pair_by_pair() -> None:
    runs = [
        _run(THIS, 0, 900), _run(OTHER, 0, 1000, failed=5),
        _run(OTHER, 1, 950), _run(THIS, 1, 1000),
        _run(THIS, 2, 880), _run(OTHER, 2, 990),
    ]  # fmt: skip
    summary = summarize(runs)
    assert summary["pairs"] == 3
    assert summary[THIS] == {"runs": 3, "passed": 3, "cpu_us_per_call_median": 900}
    assert summary[OTHER] == {"runs": 3, "passed": 2, "cpu_us_per_call_median": 990}
    assert summary["pairs_this_lower"] == 2
    assert summary["cpu_ratio_median"] == 0.9  # 900/1000, 1000/950, 880/990 -> 0.9, 1.053, 0.889


def test_a_pair_missing_a_figure_is_left_out_of_the_ratios() -> None:
    runs = [_run(THIS, 0, 900), {"build": OTHER, "pair": 0, "error": "x"}, _run(THIS, 1, 800), _run(OTHER, 1, 1000)]
    summary = summarize(runs)
    assert summary["pairs_this_lower"] == 1
    assert summary["cpu_ratio_median"] == 0.8
    assert summary[OTHER]["passed"] == 1


def test_cpu_per_call_is_the_whole_runs_cpu_over_the_calls() -> None:
    run = {"calls": 30000, "sbc_cpu_pct": 150.0, "wall_s": 21.0}
    assert cpu_us_per_call(run) == 1050.0  # 1.5 cores x 21 s / 30,000 calls
    assert cpu_us_per_call({**run, "sbc_cpu_pct": None}) is None
    assert cpu_us_per_call({"error": "x"}) is None
