# Augments metrics.py when setup.py compiles it: HotChild, the series the SIP path increments about
# 18 times a call, becomes an extension type whose value is a C double, and its inc() is cpdef:
# compiled callers holding a typed HotChild (sbc/core.py) call it directly in C instead of looking
# it up by name and parsing its argument; Python callers see the same method. A field added to
# HotChild in metrics.py must be declared here too.
cdef class HotChild:
    cdef public double value
    cpdef inc(self, double amount=*)
