"""The native load generator relays a few calls end to end (a functional check, not a benchmark)."""

from __future__ import annotations

import json

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
