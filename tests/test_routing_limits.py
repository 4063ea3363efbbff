"""Rate limiting, concurrency counting and the combined admission check."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.limits import (
    ConcurrencyCounter,
    ConcurrencyLimit,
    LimitHit,
    LimitScope,
    RateLimit,
    RateLimiter,
    check_limits,
    limit_key,
    rate_table,
    release_limits,
)
from routing.model import Carrier, Customer, Snapshot, Trunk

T0 = 1_700_000_000.0


def test_protocols_are_satisfied() -> None:
    rates: RateLimit = RateLimiter()
    calls: ConcurrencyLimit = ConcurrencyCounter()
    assert rates.allow("x", T0) and calls.try_acquire(["x"], [1])


# -- RateLimiter ----------------------------------------------------------------------------


def test_unconfigured_key_is_unlimited() -> None:
    rl = RateLimiter({"carrier:a": 1})
    assert all(rl.allow("carrier:b", T0) for _ in range(1000))
    assert rl.rate("carrier:b") is None and rl.burst("carrier:b") == math.inf


def test_burst_then_steady_rate() -> None:
    rl = RateLimiter({"k": 10})
    assert rl.burst("k") == 10
    assert sum(rl.allow("k", T0) for _ in range(25)) == 10  # full bucket: one second's worth
    assert not rl.allow("k", T0 + 0.05)  # half a token
    assert rl.allow("k", T0 + 0.1)  # 0.1 s * 10/s = one token despite float rounding
    assert not rl.allow("k", T0 + 0.1)
    while rl.allow("k", T0 + 1):  # drain what accrued
        pass
    admitted = sum(rl.allow("k", T0 + 1 + i / 100) for i in range(1, 101))  # 100 tries over 1 s
    assert admitted == 10


def test_fractional_rate_has_burst_of_one() -> None:
    rl = RateLimiter({"k": 0.5})
    assert rl.burst("k") == 1
    assert rl.allow("k", T0)
    assert not rl.allow("k", T0 + 1.9)
    assert rl.allow("k", T0 + 2.0)
    assert not rl.allow("k", T0 + 2.1)


def test_idle_time_does_not_exceed_burst() -> None:
    rl = RateLimiter({"k": 2})
    rl.allow("k", T0)
    assert sum(rl.allow("k", T0 + 3600) for _ in range(10)) == 2


def test_zero_rate_blocks_everything() -> None:
    rl = RateLimiter({"k": 0})
    assert not rl.allow("k", T0)
    assert not rl.allow("k", T0 + 1e6)


def test_clock_going_backwards_grants_nothing() -> None:
    rl = RateLimiter({"k": 1})
    assert rl.allow("k", T0)
    assert not rl.allow("k", T0 - 100)
    assert not rl.allow("k", T0 + 0.5)  # the bucket clock stayed at T0
    assert rl.allow("k", T0 + 1.0)


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf])
def test_configure_rejects_bad_rates_atomically(bad: float) -> None:
    rl = RateLimiter({"k": 1})
    with pytest.raises(ValueError, match="'bad'"):
        rl.configure({"k": 5, "bad": bad})
    assert rl.rate("k") == 1


@pytest.mark.parametrize("now", [math.nan, math.inf])
def test_allow_rejects_non_finite_now(now: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        RateLimiter({"k": 1}).allow("k", now)


def test_reconfigure_keeps_tokens_caps_at_new_burst_and_drops_unlimited() -> None:
    rl = RateLimiter({"a": 10, "b": 10})
    for _ in range(4):
        rl.allow("a", T0)
    rl.configure({"a": 3, "b": None})
    assert sum(rl.allow("a", T0) for _ in range(10)) == 3  # 6 tokens left, capped at 3
    assert rl.rate("b") is None
    assert all(rl.allow("b", T0) for _ in range(100))
    rl.configure({"a": 3, "b": 1})
    assert rl.allow("b", T0) and not rl.allow("b", T0)  # fresh full bucket


def test_allow_all_is_all_or_nothing() -> None:
    rl = RateLimiter({"a": 1, "b": 1})
    assert rl.allow("b", T0)  # drain b
    assert rl.allow_all(["a", "b", "free"], T0) == "b"
    assert rl.allow("a", T0)  # a was not debited
    assert rl.allow_all([], T0) is None
    assert rl.allow_all(["free"], T0) is None


def test_allow_all_with_repeated_key_needs_two_tokens() -> None:
    rl = RateLimiter({"a": 2})
    assert rl.allow_all(["a", "a"], T0) is None
    assert rl.allow_all(["a"], T0) == "a"
    rl2 = RateLimiter({"a": 1})
    assert rl2.allow_all(["a", "a"], T0) == "a"
    assert rl2.allow("a", T0)


@given(
    st.floats(0.1, 200),
    st.lists(st.floats(0, 10), min_size=1, max_size=200),
)
def test_token_bucket_never_exceeds_its_envelope(cps: float, gaps: list[float]) -> None:
    rl = RateLimiter({"k": cps})
    now = T0
    admitted = 0
    for gap in gaps:
        now += gap
        admitted += rl.allow("k", now)
    # a token bucket admits at most burst + rate * elapsed
    assert admitted <= max(1.0, cps) + cps * (now - T0) + 1e-6
    assert admitted >= 1  # the first call always finds a full bucket


# -- ConcurrencyCounter ---------------------------------------------------------------------


def test_acquire_all_or_none() -> None:
    cc = ConcurrencyCounter()
    assert cc.try_acquire(["carrier:a", "customer:x"], [2, 1])
    assert not cc.try_acquire(["carrier:a", "customer:x"], [2, 1])  # customer full
    assert cc.count("carrier:a") == 1  # not incremented by the refused call
    assert cc.try_acquire(["carrier:a", "customer:y"], [2, None])
    assert not cc.try_acquire(["carrier:a"], [2])
    cc.release(["carrier:a", "customer:x"])
    assert cc.count("customer:x") == 0
    assert cc.try_acquire(["carrier:a"], [2])


def test_unlimited_and_zero_limits() -> None:
    cc = ConcurrencyCounter()
    assert all(cc.try_acquire(["k"], [None]) for _ in range(100))
    assert cc.count("k") == 100
    assert not cc.try_acquire(["z"], [0])


def test_repeated_key_counts_twice_with_tightest_limit() -> None:
    cc = ConcurrencyCounter()
    assert not cc.try_acquire(["k", "k"], [5, 1])
    assert cc.try_acquire(["k", "k"], [2, None])
    assert cc.count("k") == 2
    cc.release(["k", "k"])
    assert cc.count("k") == 0


def test_bad_arguments() -> None:
    cc = ConcurrencyCounter()
    with pytest.raises(ValueError, match="2 keys but 1 limits"):
        cc.try_acquire(["a", "b"], [1])
    with pytest.raises(ValueError, match=">= 0"):
        cc.try_acquire(["a"], [-1])
    assert cc.count("a") == 0


def test_double_release_is_an_error_and_atomic() -> None:
    cc = ConcurrencyCounter()
    cc.try_acquire(["a"], [None])
    with pytest.raises(ValueError, match="'b'"):
        cc.release(["a", "b"])
    assert cc.count("a") == 1
    cc.release(["a"])
    with pytest.raises(ValueError):
        cc.release(["a"])


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=100))
def test_counter_never_exceeds_limit(ops: list[tuple[bool, str]]) -> None:
    limits = {"a": 2, "b": 0, "c": 5}
    cc = ConcurrencyCounter()
    held: list[str] = []
    for acquire, key in ops:
        if acquire:
            if cc.try_acquire([key, "total"], [limits[key], 4]):
                held.append(key)
        elif key in held:
            held.remove(key)
            cc.release([key, "total"])
        for k, lim in limits.items():
            assert cc.count(k) == held.count(k) <= lim
        assert cc.count("total") == len(held) <= 4


# -- check_limits ---------------------------------------------------------------------------


def scopes(customer_calls: int | None = 10, trunk_calls: int | None = 5, carrier_calls: int | None = 2):
    return [
        LimitScope("customer", "acme", customer_calls),
        LimitScope("trunk", "acme/pbx", trunk_calls),
        LimitScope("carrier", "att", carrier_calls),
    ]


def test_limit_keys() -> None:
    assert limit_key("carrier", "att") == "carrier:att"
    assert LimitScope("trunk", "acme/pbx").key == "trunk:acme/pbx"


def test_check_limits_admits_and_counts() -> None:
    rates, calls = RateLimiter(), ConcurrencyCounter()
    assert check_limits(scopes(), T0, rates, calls) is None
    assert calls.count("carrier:att") == calls.count("customer:acme") == 1
    release_limits(scopes(), calls)
    assert calls.count("carrier:att") == 0


def test_check_limits_reports_concurrency_hit() -> None:
    rates, calls = RateLimiter(), ConcurrencyCounter()
    assert check_limits(scopes(), T0, rates, calls) is None
    assert check_limits(scopes(), T0, rates, calls) is None
    hit = check_limits(scopes(), T0, rates, calls)
    assert hit == LimitHit("carrier", "att", "calls", 2)
    assert calls.count("customer:acme") == 2  # the refused call left nothing behind


def test_check_limits_reports_first_scope_in_order() -> None:
    rates, calls = RateLimiter(), ConcurrencyCounter()
    assert check_limits(scopes(1, 1, 1), T0, rates, calls) is None
    assert check_limits(scopes(1, 1, 1), T0, rates, calls) == LimitHit("customer", "acme", "calls", 1)


def test_check_limits_reports_cps_hit_and_releases_concurrency() -> None:
    rates = RateLimiter({"trunk:acme/pbx": 1, "carrier:att": 100})
    calls = ConcurrencyCounter()
    assert check_limits(scopes(None, None, None), T0, rates, calls) is None
    hit = check_limits(scopes(None, None, None), T0, rates, calls)
    assert hit == LimitHit("trunk", "acme/pbx", "cps", 1)
    assert calls.count("trunk:acme/pbx") == 1  # only the admitted call
    # the carrier bucket was not debited by the refused call: 100 burst - 1 used
    assert sum(rates.allow("carrier:att", T0) for _ in range(200)) == 99


def test_check_limits_with_zero_limit_and_no_scopes() -> None:
    rates, calls = RateLimiter(), ConcurrencyCounter()
    assert check_limits([LimitScope("carrier", "off", 0)], T0, rates, calls) == LimitHit(
        "carrier", "off", "calls", 0
    )
    assert check_limits([], T0, rates, calls) is None


def test_rate_table_from_snapshot() -> None:
    snap = Snapshot(
        carriers=(Carrier("att", max_cps=20), Carrier("vz")),
        customers=(Customer("acme", max_cps=5, trunks=(Trunk("pbx", "acme", max_cps=2.5),)),),
    )
    table = rate_table(snap)
    assert table == {"carrier:att": 20, "carrier:vz": None, "customer:acme": 5, "trunk:acme/pbx": 2.5}
    rl = RateLimiter(table)
    assert rl.burst("trunk:acme/pbx") == 2.5
    assert rl.rate("carrier:vz") is None
