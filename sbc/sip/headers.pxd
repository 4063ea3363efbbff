# Augments headers.py when setup.py compiles it: NameAddr and Via become extension types, as
# the URI types do (see uri.pxd for why their __init__ is written out in the .py). A field
# added in the .py must be declared here. A field typed str or dict holds exactly that type or None
# (see uri.pxd); assigning another type, a str subclass included, raises TypeError.
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
