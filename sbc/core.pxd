# Augments core.py when setup.py compiles it: SipCore becomes an extension type, so its methods
# read its fields as struct members (see README, Benchmarks). A field added in core.py must be
# declared here too. Annotations "req: Request" and "resp: Response" in core.py become typed (their
# fields read as struct members); such an argument must never be None.
from sbc.sip.message cimport Request, Response
from sbc.sip.transaction cimport TransactionLayer

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
