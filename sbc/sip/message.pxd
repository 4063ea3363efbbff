# Augments message.py when setup.py compiles it: the message classes become extension types
# whose fields compiled code reads as struct members (see README, Benchmarks). headers and _cache
# are typed (list, dict: message.py only ever stores those) so that its methods loop over and look
# up in them with the C API; assigning another type raises TypeError.
#
# The methods and functions declared cpdef below (and the headers/uri functions cimported) are
# called from compiled code as direct C calls: this module's, and any module that cimports the
# class or function and calls it on a typed value (engine.pxd and core.pxd cimport Request and
# Response), skipping the name lookup and argument parsing of a Python call (uri.pxd quotes the
# instructions saved); Python callers see them unchanged. A method a subclass overrides
# (start_line) is declared in both with the same signature. See uri.pxd for how a declaration
# must match the .py.
cimport cython

from sbc.sip.headers cimport (
    canonical_name,
    contact_view,
    is_token,
    name_addr_view,
    parse_cseq,
    parse_uint,
    split_commas,
    via_view,
)
from sbc.sip.uri cimport parse_uri

cdef class Message:
    cdef public list headers
    cdef public object body
    cdef public dict _cache

    cpdef str get(self, str name, str default=*)
    cpdef str _first(self, str cname)
    cpdef list get_all(self, str name)
    cpdef list values(self, str name)
    cpdef list missing(self, object names)
    cpdef set(self, str name, str value)
    cpdef remove(self, str name)
    cpdef str remove_first(self, str name)
    cpdef list vias(self)
    cpdef str start_line(self)
    cpdef bytes to_bytes(self)
    cpdef _validate_headers(self)

cdef class Request(Message):
    cdef public object method
    cdef public object uri

    cpdef str start_line(self)
    cpdef Request validate(self)

cdef class Response(Message):
    cdef public object status
    cdef public object reason

    cpdef str start_line(self)
    cpdef Response validate(self)

cpdef str reason_phrase(cython.py_int status)
cpdef str _tag_of(str value)
cpdef Request _new_request(str method, str uri, list headers, bytes body)
cpdef Response _new_response(cython.py_int status, str reason, list headers, bytes body)
cpdef object parse_message(bytes data, bint stream=*)
cpdef Response make_response(Request request, cython.py_int status, str reason=*, str to_tag=*, object headers=*, bytes body=*)
