# Augments transaction.py when setup.py compiles it: the transaction record and the layer become
# extension types, so the layer's methods read their fields as struct members (see README,
# Benchmarks). A field added in transaction.py must be declared here too. The dict, list and tuple
# fields are typed (transaction.py only ever stores those) so that the layer's methods use them
# through the C API; assigning another type raises TypeError.
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
    cdef public object response
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
