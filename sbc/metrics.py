"""Prometheus collectors, defined once here and imported where events happen.

Label sets are small and bounded (transport, method, code class or code): never a Call-ID,
number or address, so cardinality stays fixed however much traffic arrives.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SIP_MESSAGES_RECEIVED = Counter(
    "sbc_sip_messages_received_total", "SIP messages received", ["transport", "kind"]
)
SIP_MESSAGES_DROPPED = Counter(
    "sbc_sip_messages_dropped_total",
    "SIP messages dropped without an answer (malformed responses, unparseable datagrams)",
    ["transport", "reason"],
)
SIP_REQUESTS_REJECTED = Counter(
    "sbc_sip_requests_rejected_total", "Requests refused by the SIP core before routing", ["code"]
)
SIP_RESPONSES_SENT = Counter("sbc_sip_responses_sent_total", "SIP responses sent", ["code"])
SIP_RESPONSES_RECEIVED = Counter("sbc_sip_responses_received_total", "SIP responses received", ["code"])
TCP_CONNECTIONS = Gauge("sbc_tcp_connections", "Open SIP TCP connections")
TCP_CONNECTIONS_REFUSED = Counter(
    "sbc_tcp_connections_refused_total", "TCP connections refused by the per-source limit"
)
SIP_SEND_ERRORS = Counter("sbc_sip_send_errors_total", "Failed sends", ["transport"])
ACTIVE_CALLS = Gauge("sbc_active_calls", "Calls in progress (routing, ringing or answered)")
CALL_ATTEMPTS = Counter("sbc_call_attempts_total", "New calls accepted for routing", ["direction"])
CALL_ANSWERS = Counter("sbc_call_answers_total", "Calls answered", ["direction"])
CALLS_ENDED = Counter("sbc_calls_ended_total", "Calls ended, by disposition", ["direction", "disposition"])
LIMIT_REJECTIONS = Counter("sbc_limit_rejections_total", "New calls refused by a limit", ["scope"])
AUTH_FAILURES = Counter("sbc_auth_failures_total", "Digest authentications that failed", ["reason"])
DTMF_EVENTS = Counter("sbc_dtmf_events_total", "RFC 4733 digits seen by the relay", ["from_side"])
