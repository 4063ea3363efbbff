# Augments engine.py when setup.py compiles it: the B2BUA becomes an extension type, so its
# methods read its fields as struct members (see README, Benchmarks). A field added in engine.py
# must be declared here too.
# Annotations "call: Call", "leg: Leg", "req: Request" and "resp: Response" in engine.py become
# typed (their fields read as struct members); such an argument must never be None ("Call | None"
# where it may be). Fields typed dict/list hold one (their methods are then direct C calls).
# The methods and functions declared cpdef below are called directly in C by compiled code (this
# module; call.py's and the media manager's through cimport), skipping the method lookup by name
# and the argument parsing of a Python call; Python callers see them unchanged. Because B2BUA has
# a __dict__, a method set on an instance (tests do) still overrides a cpdef one: each C call
# checks the instance dict's version first, which is cheap while it does not change.
from sbc.b2bua.call cimport (
    Call,
    Leg,
    build_in_dialog,
    contact_uri,
    display_and_user,
    new_call_id,
    new_call_ref,
    parse_target,
    strip_tag,
    target_address,
)
from sbc.media.manager cimport CallMedia, MediaManager
from sbc.core cimport SipCore, new_tag
from sbc.sip.message cimport Request, Response, make_response

cdef class B2BUA:
    cdef dict __dict__
    cdef public SipCore core
    cdef public object resolve
    cdef public object tx
    cdef public object local_address
    cdef public object cdr_sink
    cdef public object config
    cdef public object prober
    cdef public object health
    cdef public object rng
    cdef public object authenticator
    cdef public object wall_offset
    cdef public object user_agent
    cdef public MediaManager media
    cdef public object tables
    cdef public object rates
    cdef public object calls_in_progress
    cdef public dict calls
    cdef public dict _dialogs
    cdef public dict _by_server_key
    cdef public dict _by_client_key
    cdef public dict _relay_map
    cdef public list _timers
    cdef public object _stale_timers
    cdef public object _seq

    cpdef _at(self, double when, Call call, str what)
    cpdef tuple _pop_timer(self)
    cpdef handle_timer(self, double now)
    cpdef _on_invite(self, SipCore core, Request req, key, double now)
    cpdef _new_invite(self, Request req, key, double now)
    cpdef str _dialled(self, Request req)
    cpdef Call _new_call(self, Request req, key, source, str direction, double now)
    cpdef _inbound(self, Request req, key, source, str carrier, double now)
    cpdef _outbound(self, Request req, key, source, trunk, double now)
    cpdef bint _admit_limits(self, Call call, Request req, key, list scopes, double now)
    cpdef _register(self, Call call)
    cpdef _next_attempt(self, Call call, double now)
    cpdef _take_carrier(self, Call call, str carrier_name, double now)
    cpdef _send_invite(self, Call call, str uri, dest, attempt, double now)
    cpdef _attempt_timed_out(self, Call call, double now)
    cpdef _attempt_failed(self, Call call, code, str reason, double now)
    cpdef _on_response(self, event, double now)
    cpdef _invite_response(self, Call call, key, Response resp, double now)
    cpdef _session_refreshed(self, Call call, Response resp, double now)
    cpdef _learn_remote(self, Leg leg, Response resp)
    cpdef Response _response_to_a(self, Call call, status, Response resp, double now)
    cpdef _retransmit_reliable_1xx(self, Call call, double now)
    cpdef _caller_pracked(self, Call call, Request req, double now)
    cpdef _relay_provisional(self, Call call, Response resp, double now)
    cpdef _prack(self, Call call, Leg leg, Response resp, double now)
    cpdef _ack_b(self, Call call, bytes body, str ctype, double now)
    cpdef _resend_b_ack(self, Call call)
    cpdef _kill_late_answer(self, Call call, key, Response resp, double now)
    cpdef _client_peer(self, key)
    cpdef _stray(self, Response resp, source, double now)
    cpdef _on_event(self, event, double now)
    cpdef _client_failed(self, Call call, str kind, event, double now)
    cpdef _caller_cancelled(self, Call call, double now)
    cpdef _on_ack(self, Request ack, double now)
    cpdef _retransmit_2xx(self, Call call, double now)
    cpdef bint _on_in_dialog(self, Request req, key, double now)
    cpdef _in_dialog(self, Call call, Leg leg, Request req, key, double now)
    cpdef _relay_reinvite(self, Call call, Leg leg, Request req, key, double now)
    cpdef _cancel_reinvite(self, Call call, server_key, double now)
    cpdef _relay_request(self, Call call, Leg leg, Request req, key, double now)
    cpdef _send_far(self, Call call, Leg far, str method, Request req, double now, str kind)
    cpdef _reinvite_response(self, Call call, key, Response resp, double now)
    cpdef _retransmit_reinvite_2xx(self, Call call, double now)
    cpdef _relay_response(self, Call call, key, Response resp, double now)
    cpdef Response _mirror(self, Call call, Request orig, Response resp, Leg leg)
    cpdef bytes _anchor(self, Call call, str side, msg)
    cpdef _fail_pending(self, Call call, double now)
    cpdef _send_bye(self, Call call, Leg leg, double now)
    cpdef _hangup(self, Call call, double now, str by, str reason)
    cpdef _fail_call(self, Call call, double now, code, str end_reason=*)
    cpdef _finish(self, Call call, double now, code, str hangup_by, str reason)
    cpdef _isolation_failed(self, Call call, double now, tuple answer)
    cpdef _abort(self, Call call, double now, str reason=*)
    cpdef _emit_cdr(self, Call call)
    cpdef _destination(self, str host, port, str transport)
    cpdef _place_bridge(self, Call call, Response answer, double now)
    cpdef _bridge_response(self, Call call, key, Response resp, double now)
    cpdef _bridge_failed(self, Call call, code, str reason, double now)
    cpdef _cancel_bridge(self, Call call, double now)
    cpdef tx_source(self, key)

cpdef str _user_or_empty(str value)
cpdef _wall(t, offset)
cpdef str _host(str host)
cpdef str _quoted(str display)
cpdef str _inbound_request_uri(str target, str e164)
