# Augments headers.py when setup.py compiles it: NameAddr and Via become extension types, as
# the URI types do (see uri.pxd for why their __init__ is written out in the .py). A field
# added in the .py must be declared here.
cdef class NameAddr:
    cdef public object display_name
    cdef public object uri
    cdef public object params

cdef class Via:
    cdef public object protocol
    cdef public object transport
    cdef public object host
    cdef public object port
    cdef public object params
