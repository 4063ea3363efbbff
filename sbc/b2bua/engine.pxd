# Augments engine.py when setup.py compiles it: the B2BUA becomes an extension type, so its
# methods read its fields as struct members (see README, Benchmarks). A field added in engine.py
# must be declared here too.
# Annotations "call: Call", "leg: Leg", "req: Request" and "resp: Response" in engine.py become
# typed (their fields read as struct members); such an argument must never be None ("Call | None"
# where it may be). Fields typed dict/list hold one (their methods are then direct C calls).
from sbc.b2bua.call cimport Call, Leg
from sbc.sip.message cimport Request, Response
cdef class _Isolated:
    cdef public object b2bua
    cdef public object call
    cdef public object now
    cdef public object answer

cdef class B2BUA:
    cdef dict __dict__
    cdef public object core
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
    cdef public object media
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
