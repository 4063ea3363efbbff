# Augments uri.py when setup.py compiles it: the URI types become extension types, whose
# dataclass methods Cython compiles (the stdlib generates them as Python source, run by the
# interpreter: about 60 __init__ calls a call). Fields with a default factory get an __init__
# written out in the .py, because Cython's looks the dataclasses module up on every instance.
# A field added in the .py must be declared here. A field typed str or dict holds exactly that type or
# None (every constructor and parser stores only those), so the class's methods use it through the C
# API; assigning another type, a str subclass included, raises TypeError.
#
# The functions and methods declared cpdef below are called from compiled code (this module,
# and modules that cimport them: headers.pxd, message.pxd) as direct C calls, skipping the
# name lookup and argument parsing of a Python call (with message.pxd and headers.pxd, and the
# _new_* factories that build values without calling the class: 1,623,621 -> 1,563,442
# instructions per call on the engine benchmark with media); Python callers see them unchanged. A
# declaration must match the .py's signature, annotations included (`x: str` is `str x`, a
# default is `=*`), and a cpdef function holds no closure (no generator expression, lambda or
# nested def).
cdef class SipURI:
    cdef public str scheme
    cdef public str user
    cdef public str password
    cdef public str host
    cdef public object port
    cdef public dict params
    cdef public dict headers

    cpdef SipURI copy(self)

cdef class TelURI:
    cdef public str number
    cdef public dict params

    cpdef TelURI copy(self)

cdef class AbsoluteURI:
    cdef public str scheme
    cdef public str value

    cpdef AbsoluteURI copy(self)

cpdef object remember(dict cache, str key, object result)
cpdef object _error(str what, str problem)
cpdef str _unescape(str text, str what, str part)
cpdef str _escape(str text, str safe)
cpdef object _parse_port(str text, str what)
cpdef str _parse_host(str text, str what)
cpdef tuple parse_hostport(str text, str what=*)
cpdef tuple _parse_hostport(str text, str what)
cpdef str format_host(str host)
cpdef dict _parse_uri_params(str text, str what)
cpdef dict _parse_uri_headers(str text, str what)
cpdef str _format_params(dict[str, str] params)
cpdef SipURI _new_sip_uri(str scheme, str user, str password, str host, object port, dict params, dict headers)
cpdef TelURI _new_tel_uri(str number, dict params)
cpdef object _copy_uri(object uri)
cpdef object _check_chars(str text, str what)
cpdef SipURI _parse_sip(str scheme, str rest, str what)
cpdef TelURI _parse_tel(str rest, str what)
cpdef object parse_uri(str text, str what=*)
cpdef object _parse_uri(str text, str what)
cpdef str _host_key(str host)
cpdef bint _sip_equal(SipURI a, SipURI b)
cpdef dict _lower_params(dict[str, str] params)
cpdef bint uri_equal(object a, object b)
