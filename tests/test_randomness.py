"""The pooled random hex behind tags, branches and Call-IDs."""

from __future__ import annotations

import re

from sbc.sip import randomness
from sbc.sip.randomness import POOL_BYTES, random_hex


def test_lengths_and_alphabet() -> None:
    for n in (1, 6, 8, 12, POOL_BYTES + 1):
        value = random_hex(n)
        assert len(value) == 2 * n and re.fullmatch(r"[0-9a-f]+", value)


def test_no_repeats_across_refills() -> None:
    """Draws never overlap: 3 pools' worth of 12-byte values are all distinct."""
    values = [random_hex(12) for _ in range(3 * POOL_BYTES // 12)]
    assert len(set(values)) == len(values)


def test_refill_when_the_pool_runs_short(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    reads: list[int] = []

    def fake_urandom(n: int) -> bytes:
        reads.append(n)
        return bytes(range(256)) * (n // 256) + bytes(n % 256)

    monkeypatch.setattr(randomness.os, "urandom", fake_urandom)
    monkeypatch.setattr(randomness, "_pool", b"")
    monkeypatch.setattr(randomness, "_pos", 0)
    assert random_hex(2) == "0001"
    assert random_hex(2) == "0203"
    assert reads == [POOL_BYTES]
    monkeypatch.setattr(randomness, "_pos", POOL_BYTES - 1)
    assert random_hex(2) == "0001"  # one byte left: a fresh pool, never a short value
    assert reads == [POOL_BYTES, POOL_BYTES]


def test_seed_repeats_a_sequence_and_none_restores_the_kernel() -> None:
    """What the engine benchmark's replay needs: the same seed, the same tags and branches."""
    try:
        randomness.seed(42)
        first = [random_hex(12) for _ in range(POOL_BYTES // 6)]  # across a refill
        randomness.seed(42)
        assert [random_hex(12) for _ in range(POOL_BYTES // 6)] == first
        randomness.seed(None)
        assert random_hex(12) not in first
    finally:
        randomness.seed(None)
    assert randomness._source is None
