# Augments message.py when setup.py compiles it: the message classes become extension types
# whose fields compiled code reads as struct members (see README, Benchmarks).
cdef class Message:
    cdef public object headers
    cdef public object body
    cdef public object _cache

cdef class Request(Message):
    cdef public object method
    cdef public object uri

cdef class Response(Message):
    cdef public object status
    cdef public object reason
