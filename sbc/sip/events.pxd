# Augments events.py when setup.py compiles it: the event types become extension types whose
# dataclass __init__ Cython compiles (the stdlib's is generated Python: about 60 interpreted
# __init__ calls a call, see README, Benchmarks). A field added in the .py must be declared here.
cdef class Address:
    cdef readonly object transport
    cdef readonly object host
    cdef readonly object port
    cdef readonly object conn_id

cdef class Outgoing:
    cdef readonly object data
    cdef readonly object dest
    cdef readonly object key

cdef class RequestReceived:
    cdef readonly object request
    cdef readonly object source
    cdef readonly object key

cdef class AckReceived:
    cdef readonly object request
    cdef readonly object source

cdef class ResponseReceived:
    cdef readonly object response
    cdef readonly object key

cdef class StrayResponse:
    cdef readonly object response
    cdef readonly object source

cdef class TransactionTimeout:
    cdef readonly object key
    cdef readonly object method

cdef class TransactionTransportError:
    cdef readonly object key
    cdef readonly object method

cdef class TransactionTerminated:
    cdef readonly object key
