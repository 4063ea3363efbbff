# Augments transaction.py when setup.py compiles it: the transaction record and the layer become
# extension types, so the layer's methods read their fields as struct members (see README,
# Benchmarks). A field added in transaction.py must be declared here too.
cdef class _Transaction:
    cdef public object kind
    cdef public object table
    cdef public object state
    cdef public object key
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
    cdef public object _clients
    cdef public object _servers
    cdef public object _outgoing
    cdef public object _heap
    cdef public object _seq
    cdef public object _stale
    cdef public object _durations
