"""Validated field types shared by the API's request bodies.

The provision file (:mod:`sbc.provision`) and the API accept the same values, so the API reuses
its annotated types (names, hosts, CIDRs, SIP URIs, limits, ...) and adds what only the API takes:
E.164 numbers in any usual spelling (normalised), webhook URLs, inline call flows, and number
search patterns. Every validator raises ``ValueError`` with a message that makes sense to an API
client; litestar reports it as a 422 naming the field (see :mod:`sbc.api.errors`).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from routing.numbers import normalize_e164
from sbc.provision import E164_MAX_DIGITS, E164_MIN_DIGITS, check_url
from sbc.store.schema import SECRET_MAX_LEN

#: Webhooks are called over HTTP; plain http is allowed for development and private networks.
WEBHOOK_SCHEMES: tuple[str, ...] = ("http", "https")
#: An inline flow is a program the call-flow interpreter runs per call: 100 steps is far beyond
#: a hand-written IVR, and 64 KiB of JSON keeps one application from bloating every snapshot.
FLOW_MAX_ACTIONS = 100
FLOW_MAX_BYTES = 64 * 1024
#: Action names are identifiers ("say", "play", "gather", "dial", "hangup", ...).
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: Signing secrets shorter than 16 characters are guessable HMAC keys.
SECRET_MIN_LEN = 16
#: A search pattern: digits, ``x`` (any one digit) and ``*`` (any run of digits), optional '+'.
PATTERN_RE = re.compile(r"^\+?[0-9x*]{1,32}$")


def to_e164(value: Any) -> str:
    """Normalise a number given as ``+14155550100``, ``14155550100``, ``+1 415 555 0100``, ...

    Returns canonical ``+E164``; raises ValueError for anything that is not a string or not a
    valid international number (NANP numbers must be ``1NXXNXXXXXX``).
    """
    if not isinstance(value, str):
        raise ValueError("a number must be a string, e.g. '+14155550100'")
    e164 = normalize_e164(value)
    if e164 is None or not E164_MIN_DIGITS <= len(e164) - 1 <= E164_MAX_DIGITS:
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise ValueError(
            f"{shown!r} is not an E.164 number: '+', country code and number, "
            f"{E164_MIN_DIGITS} to {E164_MAX_DIGITS} digits, e.g. '+14155550100'"
        )
    return e164


def _webhook(value: str) -> str:
    return check_url(value, WEBHOOK_SCHEMES, "URL")


def _flow(value: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check an inline flow's shape: a non-empty list of objects, each with an ``action`` name.

    What each action means is the call-flow interpreter's business; here only what any
    interpreter needs is checked, plus size limits. NUL characters are refused because
    PostgreSQL cannot store them in JSON text.
    """
    if not value:
        raise ValueError("a flow needs at least one action")
    if len(value) > FLOW_MAX_ACTIONS:
        raise ValueError(f"a flow has at most {FLOW_MAX_ACTIONS} actions")
    for i, step in enumerate(value):
        action = step.get("action")
        if not isinstance(action, str) or not _ACTION_RE.match(action):
            raise ValueError(f"action {i} needs an 'action' name (lowercase identifier), e.g. 'say'")
    text = json.dumps(value, ensure_ascii=True)
    if len(text) > FLOW_MAX_BYTES:
        raise ValueError(f"a flow is at most {FLOW_MAX_BYTES} bytes of JSON")
    if "\\u0000" in text:
        raise ValueError("a flow must not contain NUL characters")
    return value


class Body(BaseModel):
    """Base of request bodies: unknown keys are refused (a typo must not be silently ignored)
    and values are not coerced (``"5060"`` is not a port), as in the provision file."""

    model_config = ConfigDict(extra="forbid", strict=True)


E164In = Annotated[str, BeforeValidator(to_e164)]
WebhookUrl = Annotated[str, AfterValidator(_webhook)]
Flow = Annotated[list[dict[str, Any]], AfterValidator(_flow)]
Secret = Annotated[str, Field(min_length=SECRET_MIN_LEN, max_length=SECRET_MAX_LEN)]

__all__ = [
    "FLOW_MAX_ACTIONS",
    "FLOW_MAX_BYTES",
    "PATTERN_RE",
    "SECRET_MIN_LEN",
    "WEBHOOK_SCHEMES",
    "Body",
    "E164In",
    "Flow",
    "Secret",
    "WebhookUrl",
    "to_e164",
]
