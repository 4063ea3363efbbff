# Augments transaction.py when setup.py compiles it: the transaction record and the layer become
# extension types, so the layer's methods read their fields as struct members (see README,
# Benchmarks). A field added in transaction.py must be declared here too. The dict, list and tuple
# fields are typed (transaction.py only ever stores those) so that the layer's methods use them
# through the C API; assigning another type raises TypeError.
# The layer's methods called per message or timer are cpdef (and the helpers below are module
# cpdef functions): compiled callers, here and in sbc/core.py (its TransactionLayer field is
# typed), call them directly in C instead of looking them up by name and parsing their
# arguments; Python callers see the same methods. Their argument types are the .py
# annotations' ("now: float" is a C double, "req: Request" must be a Request, never None).
from sbc.sip.headers cimport via_view
from sbc.sip.message cimport Request, Response, make_response

cdef class _Transaction:
    cdef public object kind
    cdef public dict table
    cdef public object state
    cdef public tuple key
    cdef public object method
    cdef public object request
    cdef public object peer
    cdef public object reliable
    cdef public object wire
    cdef public object to_tag
    cdef public object ack
    cdef public object retx_at
    cdef public object retx_interval
    cdef public object expire_at
    cdef public object cancel_key
    cdef public object cancel_request

cdef class TransactionLayer:
    cdef dict __dict__
    cdef public object config
    cdef public object stats
    cdef public dict _clients
    cdef public dict _servers
    cdef public list _outgoing
    cdef public list _heap
    cdef public object _seq
    cdef public object _stale
    cdef public object _durations

    cpdef list receive(self, object msg, object source, double now)
    cpdef list _receive_response(self, Response resp, object source, double now)
    cpdef list _receive_request(self, Request req, object source, double now)
    cpdef bint has_server(self, Request req)
    cpdef tuple _server_key(self, Request req, str method)
    cpdef tuple send_request(self, Request request, object dest, double now)
    cpdef _start_client(self, object key, Request request, object dest, double now)
    cpdef list send_response(self, object key, Response response, double now)
    cpdef send_stateless(self, object msg, object dest)
    cpdef object next_timer(self)
    cpdef list handle_timer(self, double now)
    cpdef list pop_outgoing(self)
    cpdef _start_timer(self, _Transaction tx, object timer, double now, list events)
    cpdef _schedule_retx(self, _Transaction tx, object timer, double when)
    cpdef _push(self, double when, _Transaction tx, object timer)
    cpdef bint _apply(self, _Transaction tx, object inp, double now, object msg, object source, list events)
    cpdef _drop_pending_cancel(self, _Transaction tx, list events)
    cpdef _terminate(self, _Transaction tx, list events)

cpdef bint is_rfc3261_branch(str branch)
cpdef bint _timer_live(tuple entry)
cpdef _release(_Transaction tx)
