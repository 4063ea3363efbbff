# Augments call.py when setup.py compiles it: the call and its legs become extension types, as
# the SIP types do (see sbc/sip/uri.pxd). A field added in the .py must be declared here. Fields
# typed str/list/dict/set/Leg hold that type or None (compiled code reads them without lookups).
# Functions and methods declared cpdef here are called directly in C by compiled code (this module,
# and sbc.b2bua.engine through cimport), skipping the name lookup and argument parsing of a Python
# call; Python callers see them unchanged. Their typed arguments refuse other types.
from sbc.sip.headers cimport NameAddr, contact_view, is_token, name_addr_view
from sbc.sip.message cimport Request
from sbc.sip.uri cimport SipURI, parse_uri, remember

cdef class Leg:
    cdef public str call_id
    cdef public str local_tag
    cdef public str local_uri
    cdef public str remote_uri
    cdef public object peer
    cdef public str remote_tag
    cdef public str remote_target
    cdef public list route_set
    cdef public object local_cseq
    cdef public object remote_cseq
    cdef public object invite
    cdef public object invite_key
    cpdef object next_cseq(self)

cdef class PendingReinvite:
    cdef public object from_leg
    cdef public object to_leg
    cdef public object server_key
    cdef public object client_key
    cdef public object ok_response
    cdef public object cseq
    cdef public object from_cseq
    cdef public object request
    cdef public object ok_out
    cdef public object ok_interval
    cdef public object ok_next
    cdef public object ok_give_up

cdef class Origin:
    cdef public object bridge_uri
    cdef public object bridge_dest
    cdef public object invite_key
    cdef public object bridged
    cdef public object a_ack
    cdef public object fallbacks

cdef class Call:
    cdef public str id
    cdef public str direction
    cdef public Leg a
    cdef public object caller
    cdef public object callee
    cdef public object setup_at
    cdef public object caller_display
    cdef public object customer
    cdef public object carrier
    cdef public object trunk
    cdef public object gateway
    cdef public Leg b
    cdef public object state
    cdef public object failover
    cdef public list targets
    cdef public object target_index
    cdef public object scopes
    cdef public object carrier_scope
    cdef public object answered_at
    cdef public object ended_at
    cdef public object final_code
    cdef public object hangup_by
    cdef public object end_reason
    cdef public object media
    cdef public object session_expires_at
    cdef public dict media_stats
    cdef public object caller_cancelled
    cdef public list attempts
    cdef public object attempt_deadline
    cdef public object got_provisional
    cdef public object a_final_sent
    cdef public object a_2xx
    cdef public object a_2xx_interval
    cdef public object a_2xx_next
    cdef public object a_2xx_give_up
    cdef public object b_2xx
    cdef public object b_ack
    cdef public object max_end_at
    cdef public object timer_entries
    cdef public PendingReinvite pending
    cdef public object reinvite_ack
    cdef public set dead_b_keys
    cdef public dict late_answers
    cdef public object origin
    cdef public list dtmf
    cdef public object a_100rel
    cdef public object a_rseq
    cdef public object a_rel_pending
    cdef public object a_rel_queued
    cdef public object a_rel_interval
    cdef public object a_rel_next
    cdef public object a_rel_give_up
    cpdef Leg other(self, Leg leg)

cpdef str new_call_id(str host)
cpdef str new_call_ref()
cpdef str _without_tag_text(str value)
cpdef str strip_tag(str name_addr)
cpdef str contact_uri(str value)
cpdef object target_address(str uri_text, str default_transport, object fallback)
cpdef tuple parse_target(str uri_text, str default_transport=*)
cpdef Request build_in_dialog(Leg leg, str method, str via_host, object via_port, str contact,
                               str user_agent, bytes body=*, str content_type=*, list extra=*,
                               object cseq=*)
cpdef tuple display_and_user(str value)
