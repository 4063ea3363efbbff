"""Failover decisions and the record of a call's attempts.

:func:`should_failover` decides, after one attempt ends, whether the next attempt of the plan is
tried. :class:`FailoverState` walks a plan with it, keeps every attempt with its outcome for the
CDR, and says which final response the caller should get.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from routing.plan import Attempt

# Final responses no other carrier can improve on, whatever the carrier's failover_codes say:
# 486 Busy Here (the callee is busy on every network) and 487 Request Terminated (the call was
# cancelled). Plus, by class: 2xx (answered) and 6xx (RFC 3261 §21.6: global failure, "the
# request will fail at any other location").
NEVER_FAILOVER_CODES: frozenset[int] = frozenset({486, 487})
# RFC 3261 §9.2: a cancelled INVITE is answered 487 Request Terminated.
CODE_REQUEST_TERMINATED = 487
# RFC 3261 §16.7 step 6: with no final response at all (every attempt timed out), 408.
CODE_REQUEST_TIMEOUT = 408
# RFC 3261 §16.7 step 6: a 503 from downstream is not forwarded upstream (it would tell the caller
# that *this* server is unavailable); it becomes 500.
CODE_SERVICE_UNAVAILABLE = 503
CODE_SERVER_INTERNAL_ERROR = 500
# What the caller gets when the plan was empty: no carrier could be tried (DESIGN: 503).
CODE_NO_PLAN = 503
# SIP final response codes are 200-699 (RFC 3261 §21); 1xx are provisional.
MIN_FINAL_CODE = 200
MAX_CODE = 699


def should_failover(code: int | None, attempt: Attempt, caller_hung_up: bool) -> bool:
    """Whether to try the next attempt after ``attempt`` ended with final response ``code``.

    * ``caller_hung_up``: never (there is nobody to connect).
    * ``code is None`` (no final response within the timeout, or a transport error): always.
    * 2xx, 486, 487 and any 6xx: never, even if listed in the carrier's codes (see
      :data:`NEVER_FAILOVER_CODES`).
    * otherwise: exactly when ``code`` is in ``attempt.failover_codes`` (by default 408 and 5xx,
      :data:`routing.model.DEFAULT_FAILOVER_CODES`).

    Raises ``ValueError`` for a code that is not a final SIP response (below 200 or above 699):
    a provisional response does not end an attempt.
    """
    if caller_hung_up:
        return False
    if code is None:
        return True
    if not MIN_FINAL_CODE <= code <= MAX_CODE:
        raise ValueError(f"{code} is not a final SIP response code")
    if code < 300 or code >= 600 or code in NEVER_FAILOVER_CODES:
        return False
    return code in attempt.failover_codes


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """How one attempt ended, for the CDR.

    ``code`` is the final response (``None``: timeout or transport error), ``reason`` the reason
    phrase or what went wrong, ``failed_over`` whether the next attempt was allowed after it.
    Times are the ``now`` values given to :class:`FailoverState` (``None`` if not given).
    """

    attempt: Attempt
    code: int | None
    reason: str
    failed_over: bool
    started_at: float | None = None
    ended_at: float | None = None


class FailoverState:
    """Walks a plan attempt by attempt and records each outcome.

    Use::

        state = FailoverState(plan)
        while (attempt := state.next_attempt(now)) is not None:
            code, reason = ...send the INVITE, wait for its final response...
            state.record(code, reason, now=now, caller_hung_up=hung_up)
        cdr.attempts = state.records; send state.final_code() to the caller

    :meth:`next_attempt` and :meth:`record` alternate; :meth:`cancel` ends the walk between
    attempts when the caller hangs up. Calling them out of turn raises ``RuntimeError`` and leaves
    the state unchanged.
    """

    __slots__ = ("_plan", "_next", "_current", "_started", "_records", "_done", "_cancelled")

    def __init__(self, plan: Sequence[Attempt]) -> None:
        self._plan = tuple(plan)
        self._next = 0
        self._current: Attempt | None = None
        self._started: float | None = None
        self._records: list[AttemptRecord] = []
        self._done = not self._plan
        self._cancelled = False

    @property
    def records(self) -> tuple[AttemptRecord, ...]:
        """Every finished attempt, in order."""
        return tuple(self._records)

    @property
    def done(self) -> bool:
        """True once no further attempt will be made (answered, final failure, cancelled, plan
        exhausted or empty)."""
        return self._done

    @property
    def in_flight(self) -> Attempt | None:
        """The attempt handed out by :meth:`next_attempt` and not yet recorded."""
        return self._current

    @property
    def answered(self) -> AttemptRecord | None:
        """The attempt that got a 2xx, if any."""
        last = self._records[-1] if self._records else None
        if last is not None and last.code is not None and 200 <= last.code < 300:
            return last
        return None

    def next_attempt(self, now: float | None = None) -> Attempt | None:
        """The next attempt to make, now marked in flight; ``None`` when the walk is over.

        Raises ``RuntimeError`` if the previous attempt has not been recorded.
        """
        if self._current is not None:
            raise RuntimeError("previous attempt not recorded yet")
        if self._done or self._next >= len(self._plan):
            self._done = True
            return None
        self._current = self._plan[self._next]
        self._next += 1
        self._started = now
        return self._current

    def record(
        self, code: int | None, reason: str, *, caller_hung_up: bool = False, now: float | None = None
    ) -> bool:
        """Record how the in-flight attempt ended; returns whether another attempt follows.

        The decision is :func:`should_failover`; ``False`` also when the plan is exhausted. Raises
        ``RuntimeError`` when no attempt is in flight and ``ValueError`` for a non-final ``code``
        (state unchanged in both cases).
        """
        attempt = self._current
        if attempt is None:
            raise RuntimeError("no attempt in flight")
        go_on = should_failover(code, attempt, caller_hung_up) and self._next < len(self._plan)
        self._records.append(AttemptRecord(attempt, code, reason, go_on, self._started, now))
        self._current = None
        self._started = None
        if caller_hung_up:
            self._cancelled = True
        if not go_on:
            self._done = True
        return go_on

    def cancel(self) -> None:
        """The caller hung up between attempts: end the walk. Raises ``RuntimeError`` while an
        attempt is in flight (record it with ``caller_hung_up=True`` instead)."""
        if self._current is not None:
            raise RuntimeError("an attempt is in flight; record it with caller_hung_up=True")
        self._cancelled = True
        self._done = True

    def final_code(self) -> int | None:
        """The final response for the caller once :attr:`done`; ``None`` while attempts remain.

        * answered: the 2xx;
        * the caller hung up: 487;
        * no attempt was made (empty plan): 503;
        * otherwise the best response received, as a proxy would choose it (RFC 3261 §16.7 step 6):
          any 6xx, else the lowest class (a 404 tells the caller more than a 500), the latest
          within a class; a 503 is turned into 500; if every attempt timed out, 408.
        """
        if not self._done:
            return None
        answered = self.answered
        if answered is not None:
            return answered.code
        if self._cancelled:
            return CODE_REQUEST_TERMINATED
        if not self._records:
            return CODE_NO_PLAN
        codes = [r.code for r in self._records if r.code is not None]
        if not codes:
            return CODE_REQUEST_TIMEOUT
        global_failures = [c for c in codes if c >= 600]
        if global_failures:
            best = global_failures[-1]
        else:
            lowest_class = min(c // 100 for c in codes)
            best = [c for c in codes if c // 100 == lowest_class][-1]
        return CODE_SERVER_INTERNAL_ERROR if best == CODE_SERVICE_UNAVAILABLE else best
