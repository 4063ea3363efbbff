"""Failover decisions and the attempt record."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing.failover import FailoverState, should_failover
from routing.model import DEFAULT_FAILOVER_CODES, Gateway
from routing.plan import Attempt


def attempt(host: str = "10.0.0.1", codes: tuple[int, ...] = DEFAULT_FAILOVER_CODES) -> Attempt:
    return Attempt("att", Gateway(host), "+14155550100", codes)


@pytest.mark.parametrize("code", [None, 408, 500, 502, 503, 504])
def test_default_failover_codes(code: int | None) -> None:
    assert should_failover(code, attempt(), caller_hung_up=False)


@pytest.mark.parametrize("code", [200, 202, 299, 486, 487, 600, 603, 604, 606, 699, 404, 480, 403, 501, 302])
def test_no_failover_by_default(code: int) -> None:
    assert not should_failover(code, attempt(), caller_hung_up=False)


def test_carrier_codes_extend_but_cannot_override_the_hard_stops() -> None:
    a = attempt(codes=(404, 480, 486, 487, 603, 200, 302))
    assert should_failover(404, a, False)
    assert should_failover(480, a, False)
    assert should_failover(302, a, False)
    for code in (486, 487, 603, 200):
        assert not should_failover(code, a, False)
    assert not should_failover(503, a, False)  # not in this carrier's list


def test_carrier_with_no_failover_codes_still_fails_over_on_timeout() -> None:
    a = attempt(codes=())
    assert should_failover(None, a, False)
    assert not should_failover(503, a, False)


@pytest.mark.parametrize("code", [None, 200, 408, 503, 486])
def test_never_after_caller_hung_up(code: int | None) -> None:
    assert not should_failover(code, attempt(), caller_hung_up=True)


@pytest.mark.parametrize("code", [0, 99, 100, 180, 183, 199, 700, -1, 1000])
def test_non_final_codes_are_rejected(code: int) -> None:
    with pytest.raises(ValueError, match="final"):
        should_failover(code, attempt(), caller_hung_up=False)


@given(st.integers(200, 699))
def test_should_failover_definition(code: int) -> None:
    a = attempt()
    expected = code in DEFAULT_FAILOVER_CODES
    assert should_failover(code, a, False) == expected
    if code < 300 or code >= 600 or code in (486, 487):
        assert not should_failover(code, attempt(codes=tuple(range(200, 700))), False)


# -- FailoverState --------------------------------------------------------------------------


def plan3() -> list[Attempt]:
    return [attempt("10.0.0.1"), attempt("10.0.0.2"), attempt("10.0.0.3")]


def test_walk_until_answered() -> None:
    state = FailoverState(plan3())
    a1 = state.next_attempt(now=100.0)
    assert a1 is not None and a1.gateway.host == "10.0.0.1"
    assert state.in_flight is a1
    assert state.record(503, "Service Unavailable", now=100.2) is True
    a2 = state.next_attempt(now=100.2)
    assert a2 is not None and a2.gateway.host == "10.0.0.2"
    assert state.record(None, "timeout", now=104.2) is True
    a3 = state.next_attempt(now=104.2)
    assert a3 is not None
    assert state.record(200, "OK", now=106.0) is False
    assert state.done
    assert state.next_attempt() is None
    assert state.final_code() == 200
    assert state.answered is not None and state.answered.attempt is a3
    recs = state.records
    assert [(r.code, r.reason, r.failed_over) for r in recs] == [
        (503, "Service Unavailable", True),
        (None, "timeout", True),
        (200, "OK", False),
    ]
    assert (recs[0].started_at, recs[0].ended_at) == (100.0, 100.2)
    assert (recs[1].started_at, recs[1].ended_at) == (100.2, 104.2)


def test_stops_on_busy() -> None:
    state = FailoverState(plan3())
    state.next_attempt()
    assert state.record(486, "Busy Here") is False
    assert state.done and state.next_attempt() is None
    assert state.final_code() == 486
    assert len(state.records) == 1
    assert state.answered is None


def test_exhausted_plan_reports_best_response() -> None:
    state = FailoverState(plan3())
    for code in (503, 404, 502):
        if state.next_attempt() is None:
            break
        state.record(code, "x")
    # 404 was not a failover code, so the walk stopped there
    assert state.final_code() == 404
    assert len(state.records) == 2

    state = FailoverState([attempt(codes=(404, 503, 502))] * 3)
    for code in (503, 404, 502):
        assert state.next_attempt() is not None
        state.record(code, "x")
    assert state.done
    assert state.final_code() == 404  # lowest class wins over 5xx (RFC 3261 16.7)
    assert state.records[-1].failed_over is False  # nothing left to fail over to


def test_exhausted_with_503_becomes_500() -> None:
    state = FailoverState([attempt(), attempt()])
    for code in (None, 503):
        state.next_attempt()
        state.record(code, "x")
    assert state.final_code() == 500


def test_exhausted_latest_in_class_and_timeouts() -> None:
    state = FailoverState([attempt()] * 3)
    for code in (502, None, 504):
        state.next_attempt()
        state.record(code, "x")
    assert state.final_code() == 504
    state = FailoverState([attempt()] * 2)
    for _ in range(2):
        state.next_attempt()
        state.record(None, "timeout")
    assert state.final_code() == 408


def test_caller_hangs_up_during_attempt() -> None:
    state = FailoverState(plan3())
    state.next_attempt()
    assert state.record(None, "caller cancelled", caller_hung_up=True) is False
    assert state.done
    assert state.final_code() == 487


def test_caller_hangs_up_between_attempts() -> None:
    state = FailoverState(plan3())
    state.next_attempt()
    state.record(503, "x")
    state.cancel()
    assert state.done and state.next_attempt() is None
    assert state.final_code() == 487
    assert len(state.records) == 1


def test_empty_plan() -> None:
    state = FailoverState([])
    assert state.done
    assert state.next_attempt() is None
    assert state.final_code() == 503
    assert state.records == ()


def test_final_code_is_none_while_running() -> None:
    state = FailoverState(plan3())
    assert state.final_code() is None
    state.next_attempt()
    assert state.final_code() is None
    state.record(503, "x")
    assert state.final_code() is None


def test_out_of_turn_calls_raise_and_change_nothing() -> None:
    state = FailoverState(plan3())
    with pytest.raises(RuntimeError):
        state.record(503, "x")
    a = state.next_attempt()
    with pytest.raises(RuntimeError):
        state.next_attempt()
    with pytest.raises(RuntimeError):
        state.cancel()
    with pytest.raises(ValueError):
        state.record(180, "Ringing")
    assert state.in_flight is a
    assert state.records == ()
    assert state.record(200, "OK") is False


def test_plan_is_copied() -> None:
    plan = plan3()
    state = FailoverState(plan)
    plan.clear()
    assert state.next_attempt() is not None


@given(st.lists(st.one_of(st.none(), st.integers(200, 699)), min_size=1, max_size=8))
def test_walk_invariants(codes: list[int | None]) -> None:
    plan = [attempt(f"10.0.0.{i}") for i in range(len(codes))]
    state = FailoverState(plan)
    for code in codes:
        a = state.next_attempt()
        if a is None:
            break
        state.record(code, "r")
    assert state.done or len(state.records) == len(codes)
    recs = state.records
    assert [r.attempt for r in recs] == plan[: len(recs)]
    assert all(r.failed_over for r in recs[:-1])
    assert not recs[-1].failed_over or not state.done
    final = state.final_code()
    if state.done:
        assert final is not None and 200 <= final <= 699 and final != 503
