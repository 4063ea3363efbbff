"""Call detail records: what the call engine hands the store when a call ends.

A :class:`CdrRecord` is validated when it is built, so a bug in the call engine shows up where the
record is made (in its tests) rather than as a CDR that billing cannot interpret. The store writes
it with :meth:`sbc.store.store.Store.write_cdr` and reads it back with ``list_cdrs``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Which way the call went through the SBC: carrier -> customer is inbound.
#: "originated": placed by the SBC itself (``POST /v1/calls``), callee first, then the bridge target.
DIRECTIONS: frozenset[str] = frozenset({"inbound", "outbound", "originated"})

#: How a call ended, as billing and reports group calls:
#: answered (2xx), busy (486/600), no_answer (408/480 or ring timeout), cancelled (caller gave up,
#: 487), rejected (other 4xx/6xx final answer), failed (5xx, timeouts, no route, SBC errors).
DISPOSITIONS: frozenset[str] = frozenset({"answered", "busy", "no_answer", "cancelled", "rejected", "failed"})

#: Who ended an answered call: the calling party, the called party, or the SBC itself
#: (limits, media timeout, shutdown), or an API client (``DELETE /v1/calls/{id}``).
HANGUP_PARTIES: frozenset[str] = frozenset({"caller", "callee", "sbc", "api"})

#: Valid SIP status codes (RFC 3261 §21: 1xx to 6xx).
SIP_CODE_MIN = 100
SIP_CODE_MAX = 699


def _check_sip_code(code: int, what: str) -> None:
    if isinstance(code, bool) or not isinstance(code, int) or not SIP_CODE_MIN <= code <= SIP_CODE_MAX:
        raise ValueError(f"{what} {code!r} is not a SIP status code ({SIP_CODE_MIN}..{SIP_CODE_MAX})")


def _check_aware(value: datetime | None, what: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")


@dataclass(frozen=True, slots=True)
class CdrAttempt:
    """One try of an outbound leg during a call's setup (failover history).

    ``code`` is the final response of that try; per RFC 3261 §8.1.3.1 a transaction timeout is
    recorded as 408 and a transport error as 503.
    """

    carrier: str | None
    gateway: str | None
    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        """Validate the code; raise ValueError if it is not a SIP status code."""
        _check_sip_code(self.code, "attempt code")

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object stored in ``cdrs.attempts``."""
        return {"carrier": self.carrier, "gateway": self.gateway, "code": self.code, "reason": self.reason}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CdrAttempt:
        """Inverse of :meth:`to_json`; raise ValueError/KeyError on a malformed object."""
        return cls(
            carrier=data.get("carrier"),
            gateway=data.get("gateway"),
            code=int(data["code"]),
            reason=str(data.get("reason", "")),
        )


@dataclass(frozen=True, slots=True)
class CdrRecord:
    """A finished call.

    Contract (checked in ``__post_init__``, which raises ValueError):

    * ``direction`` is in :data:`DIRECTIONS`, ``disposition`` in :data:`DISPOSITIONS`,
      ``hangup_by`` in :data:`HANGUP_PARTIES` or None;
    * every timestamp is timezone-aware; ``setup_time <= answer_time <= end_time`` and
      ``setup_time <= end_time``;
    * ``answer_time`` is set exactly when ``disposition == "answered"``;
    * ``sip_code`` is the final status sent to the caller (200 when answered);
    * ``duration_s`` is the billable (answered) time; when omitted it is computed as
      ``end_time - answer_time`` for answered calls and 0 otherwise;
    * ``media`` holds relay statistics (loss, jitter, MOS...) as a JSON object.

    ``id`` is None until the record has been stored.
    """

    call_id: str
    direction: str
    caller: str
    callee: str
    setup_time: datetime
    end_time: datetime
    disposition: str
    sip_code: int
    answer_time: datetime | None = None
    hangup_by: str | None = None
    end_reason: str = ""
    customer: str | None = None
    carrier: str | None = None
    trunk: str | None = None
    gateway: str | None = None
    attempts: tuple[CdrAttempt, ...] = ()
    media: Mapping[str, Any] = field(default_factory=dict, hash=False)
    duration_s: float | None = None
    id: int | None = None

    def __post_init__(self) -> None:
        """Check the contract above and fill ``duration_s``; raise ValueError on violation."""
        if not self.call_id:
            raise ValueError("call_id must not be empty")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction {self.direction!r} is not one of {sorted(DIRECTIONS)}")
        if self.disposition not in DISPOSITIONS:
            raise ValueError(f"disposition {self.disposition!r} is not one of {sorted(DISPOSITIONS)}")
        if self.hangup_by is not None and self.hangup_by not in HANGUP_PARTIES:
            raise ValueError(f"hangup_by {self.hangup_by!r} is not one of {sorted(HANGUP_PARTIES)}")
        _check_sip_code(self.sip_code, "sip_code")
        _check_aware(self.setup_time, "setup_time")
        _check_aware(self.answer_time, "answer_time")
        _check_aware(self.end_time, "end_time")
        if self.end_time < self.setup_time:
            raise ValueError("end_time is before setup_time")
        answered = self.disposition == "answered"
        if answered != (self.answer_time is not None):
            raise ValueError("answer_time must be set exactly when disposition is 'answered'")
        if self.answer_time is not None and not self.setup_time <= self.answer_time <= self.end_time:
            raise ValueError("answer_time must lie between setup_time and end_time")
        if not all(isinstance(a, CdrAttempt) for a in self.attempts):
            raise ValueError("attempts must be CdrAttempt values")
        object.__setattr__(self, "attempts", tuple(self.attempts))
        if self.duration_s is None:
            billable = (self.end_time - self.answer_time).total_seconds() if self.answer_time else 0.0
            object.__setattr__(self, "duration_s", billable)
        elif self.duration_s < 0:
            raise ValueError(f"duration_s {self.duration_s!r} is negative")


#: The cdrs table's columns (all but the id) in the order :func:`cdr_params` gives them; the
#: store checks at import that its table still has exactly these.
CDR_PARAM_COLUMNS: tuple[str, ...] = (
    "call_id", "direction", "caller", "callee", "customer", "carrier", "trunk", "gateway",
    "attempts", "setup_time", "answer_time", "end_time", "duration_s", "disposition", "sip_code",
    "hangup_by", "end_reason", "media",
)  # fmt: skip


def cdr_time(value: datetime | None, naive_utc: bool) -> datetime | str | None:
    """A CDR timestamp as the driver takes it: aware for PostgreSQL (timestamptz); for SQLite
    naive UTC text in the form SQLAlchemy's DateTime writes and reads (always microseconds),
    as :class:`~sbc.store.schema.UtcDateTime` would store it. CdrRecord refuses naive times."""
    if value is None or not naive_utc:
        return value
    if value.tzinfo is not UTC:  # the call engine's times are UTC already
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


#: ``json.dumps(obj)`` with its defaults, minus the work ``dumps`` redoes per call: checking its
#: keyword arguments and building a C encoder (``JSONEncoder.iterencode``). This one is built once;
#: without a circular-reference check, which CDR values (fresh dicts and lists of plain values)
#: never need. Same separators, ASCII escaping and float spelling as ``json.dumps``.
_json_chunks = (
    json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, json.JSONEncoder().default, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    if json.encoder.c_make_encoder is not None  # type: ignore[attr-defined]
    else None
)


def to_json_text(value: Any) -> str:
    """``json.dumps(value)`` for a CDR's JSON columns, about twice as fast (see _json_chunks)."""
    if _json_chunks is None:  # a Python without the json C accelerator
        return json.dumps(value)
    return "".join(_json_chunks(value, 0))


def cdr_params(cdr: CdrRecord, naive_utc: bool) -> tuple[Any, ...]:
    """One CDR as the driver's positional parameters in :data:`CDR_PARAM_COLUMNS` order, JSON
    columns as text (what the store's executemany takes; see ``Store.write_cdrs``)."""
    return (
        cdr.call_id,
        cdr.direction,
        cdr.caller,
        cdr.callee,
        cdr.customer,
        cdr.carrier,
        cdr.trunk,
        cdr.gateway,
        to_json_text([a.to_json() for a in cdr.attempts]),
        cdr_time(cdr.setup_time, naive_utc),
        cdr_time(cdr.answer_time, naive_utc),
        cdr_time(cdr.end_time, naive_utc),
        cdr.duration_s,
        cdr.disposition,
        cdr.sip_code,
        cdr.hangup_by,
        cdr.end_reason,
        to_json_text(dict(cdr.media)),
    )


__all__ = [
    "DIRECTIONS",
    "DISPOSITIONS",
    "HANGUP_PARTIES",
    "CDR_PARAM_COLUMNS",
    "CdrAttempt",
    "CdrRecord",
    "cdr_params",
    "cdr_time",
]
