"""The native load generator relays a few calls end to end (a functional check, not a benchmark)."""

from __future__ import annotations

import json

import pytest

from loadtest.rtp_load import run
from loadtest.rtp_load.__main__ import main

PORT_MIN = 43000  # apart from the engine tests' blocks


def test_small_run_delivers_every_packet_both_ways() -> None:
    result = run(5, 0.4, port_min=PORT_MIN)
    per_stream = int(0.4 / 0.020)
    assert result["packets_sent"] == 5 * 2 * per_stream
    assert result["packets_received"] == result["packets_sent"]
    assert result["loss"] == 0.0
    assert result["streams_with_loss"] == 0
    assert result["relay_drops"] == {"unknown_source": 0, "send_errors": 0, "no_destination": 0}
    assert 0 <= result["latency_p50_ms"] <= result["latency_p99_ms"] <= result["latency_max_ms"]


def test_cli_prints_one_json_object(capsys) -> None:
    assert main(["--streams", "2", "--seconds", "0.2", "--port-min", str(PORT_MIN + 200)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert data["streams"] == 2
    assert data["packets_received"] == data["packets_sent"] == 2 * 2 * 10


def test_each_backend_relays_every_packet_and_reports_where_time_went() -> None:
    from rtp_relay_ext import io_uring_available

    backends = ["epoll"] + (["io_uring"] if io_uring_available() else [])
    for n, backend in enumerate(backends):
        result = run(
            3, 0.3, port_min=PORT_MIN + 400 + 100 * n, backend=backend, relay_cpus=[0], generator_cpu=0,
            kernel="off",
        )  # fmt: skip
        assert result["backend"] == backend
        assert result["packets_received"] == result["packets_sent"] == 3 * 2 * int(0.3 / 0.020)
        assert result["relay_pinned_workers"] == 1
        assert result["generator_pinned_threads"] == 1 + result["generator_senders"]  # receiver + senders
        assert sum(result["relay_round_work"]) == sum(result["relay_round_stall"]) > 0
        assert result["unaccounted_io_uring_threads"] == 0
        assert result["generator_tx_late_max_ms"] >= result["generator_tx_late_p99_ms"] >= 0


def test_kernel_fast_path_run_counts_the_programs_cpu_as_relay_cpu() -> None:
    from tests.test_relay_engine import KERNEL_STATUS

    if KERNEL_STATUS is not None:
        pytest.skip(f"kernel path: {KERNEL_STATUS}")
    result = run(3, 1.0, port_min=PORT_MIN + 700, kernel="on")
    assert result["kernel"] and result["packets_received"] == result["packets_sent"] == 3 * 2 * 50
    # after the first packets and the next timeout scan, the kernel carries the streams
    assert result["kernel_packets"] >= result["packets_sent"] // 2
    assert result["kernel_prog_ns_per_packet"] > 0
    assert result["relay_cpu_cores"] >= result["relay_thread_cpu_cores"]


def test_sweep_summary_takes_medians_of_accepted_runs() -> None:
    from loadtest.rtp_load.sweep import COLUMNS, summary

    base = {key: 0.0 for key, _, _ in COLUMNS}
    runs = [
        dict(base, streams=10, backend="epoll", latency_p99_ms=p99, rejected=rejected)
        for p99, rejected in ((1.0, False), (3.0, False), (2.0, False), (99.0, True))
    ]
    table = summary(runs)
    row = next(line for line in table.splitlines() if line.startswith("| 10 | epoll"))
    assert "| 3 |" in row  # the rejected run is left out
    assert "| 2.00 |" in row  # median p99 of 1, 2, 3
