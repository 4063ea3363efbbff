"""The one exception the sans-I/O SIP layer raises for bad input."""

from __future__ import annotations


class SIPParseError(ValueError):
    """Input that is not valid SIP.

    ``status`` is the response a UAS should send when the input was a request (400 unless a more
    precise code applies: 505 for an unsupported version, 416 for an unsupported URI scheme, ...).
    ``reason`` names what is wrong and goes into the Warning/reason phrase and into logs.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
