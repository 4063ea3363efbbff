# Augments core.py when setup.py compiles it: SipCore becomes an extension type, so its methods
# read its fields as struct members (see README, Benchmarks). A field added in core.py must be
# declared here too. Annotations "req: Request" and "resp: Response" in core.py become typed (their
# fields read as struct members); such an argument must never be None.
# The methods run per message or timer, and new_tag, are cpdef, and the checks are cimported from
# checks.pxd: compiled callers (these methods; another module only where it cimports SipCore and
# types the field or variable holding it) call them directly in C instead of looking them up by
# name and parsing their arguments. Python callers see the same methods, and a Python override on
# an instance or a subclass still wins (checked per call).
from sbc.sip.message cimport Request, Response, make_response, parse_message
from sbc.sip.transaction cimport TransactionLayer
from sbc.sip.checks cimport check_request
from sbc.metrics cimport HotChild

cpdef str new_tag()

cdef class SipCore:
    cdef dict __dict__
    cdef public set local_hosts
    cdef public TransactionLayer transactions
    cdef public object policy
    cdef public object user_agent
    cdef public object on_invite
    cdef public object realm
    cdef public object force_rport
    cdef public object admission
    cdef public object stats
    cdef public list _stateless
    cdef public object on_response
    cdef public object on_event
    cdef public object dialog_handler
    cdef public list timer_owners
    cdef public object divert

    cpdef receive(self, bytes data, object source, double now)
    cpdef _receive_response(self, Response msg, object source, double now)
    cpdef _dispatch(self, object event, double now)
    cpdef _handle_request(self, Request req, object key, double now)
    cpdef bint _shed(self, Request req, object source, double now)
    cpdef respond(self, object key, Response response, double now)
    cpdef list pop_outgoing(self)
    cpdef object next_timer(self)
    cpdef transport_error(self, object key, double now)
    cpdef handle_timer(self, double now)
