# Augments uri.py when setup.py compiles it: the URI types become extension types, whose
# dataclass methods Cython compiles (the stdlib generates them as Python source, run by the
# interpreter: about 60 __init__ calls a call). Fields with a default factory get an __init__
# written out in the .py, because Cython's looks the dataclasses module up on every instance.
# A field added in the .py must be declared here.
cdef class SipURI:
    cdef public object scheme
    cdef public object user
    cdef public object password
    cdef public object host
    cdef public object port
    cdef public object params
    cdef public object headers

cdef class TelURI:
    cdef public object number
    cdef public object params

cdef class AbsoluteURI:
    cdef public object scheme
    cdef public object value
