# Augments message.py when setup.py compiles it: the message classes become extension types
# whose fields compiled code reads as struct members (see README, Benchmarks). headers and _cache
# are typed (list, dict: message.py only ever stores those) so that its methods loop over and look
# up in them with the C API; assigning another type raises TypeError.
cdef class Message:
    cdef public list headers
    cdef public object body
    cdef public dict _cache

cdef class Request(Message):
    cdef public object method
    cdef public object uri

cdef class Response(Message):
    cdef public object status
    cdef public object reason
