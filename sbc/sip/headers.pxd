# Augments headers.py when setup.py compiles it: NameAddr and Via become extension types, as
# the URI types do (see uri.pxd for why their __init__ is written out in the .py). A field
# added in the .py must be declared here. A field typed str or dict holds exactly that type or None
# (see uri.pxd); assigning another type, a str subclass included, raises TypeError.
#
# The functions and methods declared cpdef below (and the uri functions cimported) are called
# from compiled code as direct C calls, skipping the name lookup and argument parsing of a
# Python call (message.pxd cimports some; uri.pxd quotes the instructions saved); Python callers
# see them unchanged. See uri.pxd for how a declaration must match the .py (`x: int` is
# `cython.py_int x`, `x: dict[str, str | None]` is `dict[str, str] x`).
cimport cython

from sbc.sip.uri cimport format_host, parse_hostport, parse_uri, remember

cdef class NameAddr:
    cdef public str display_name
    cdef public object uri
    cdef public dict params

cdef class Via:
    cdef public str protocol
    cdef public str transport
    cdef public str host
    cdef public object port
    cdef public dict params

    cpdef Via copy(self)

cpdef bint is_token(str text)
cpdef str canonical_name(str name)
cpdef object _quoted_end(str text, cython.py_int start, str what)
cpdef list split_commas(str value, str what=*)
cpdef list _split_semis(str text, str what)
cpdef dict parse_params(str text, str what=*)
cpdef str format_params(dict[str, str] params)
cpdef str unquote_string(str s)
cpdef NameAddr _new_name_addr(str display_name, object uri, dict params)
cpdef NameAddr _parse_bracketed(str rest, str display_name, str what)
cpdef NameAddr parse_name_addr(str value, str what=*)
cpdef object parse_contact(str value, str what=*)
cpdef NameAddr name_addr_view(str value, str what=*)
cpdef object contact_view(str value, str what=*)
cpdef Via _new_via(str protocol, str transport, str host, object port, dict params)
cpdef object _check_via_params(dict[str, str] params)
cpdef Via _parse_one_via(str text)
cpdef Via _parse_one_via_fully(str text)
cpdef list parse_via(str value)
cpdef tuple via_view(str value)
cpdef object parse_uint(str value, str name, cython.py_int maximum)
cpdef tuple parse_cseq(str value)
