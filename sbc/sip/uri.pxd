# Augments uri.py when setup.py compiles it: the URI types become extension types, whose
# dataclass methods Cython compiles (the stdlib generates them as Python source, run by the
# interpreter: about 60 __init__ calls a call). Fields with a default factory get an __init__
# written out in the .py, because Cython's looks the dataclasses module up on every instance.
# A field added in the .py must be declared here. A field typed str or dict holds exactly that type or
# None (every constructor and parser stores only those), so the class's methods use it through the C
# API; assigning another type, a str subclass included, raises TypeError.
cdef class SipURI:
    cdef public str scheme
    cdef public str user
    cdef public str password
    cdef public str host
    cdef public object port
    cdef public dict params
    cdef public dict headers

cdef class TelURI:
    cdef public str number
    cdef public dict params

cdef class AbsoluteURI:
    cdef public str scheme
    cdef public str value
