# Augments manager.py when setup.py compiles it: CallMedia becomes an extension type, as the
# SIP types do (see sbc/sip/uri.pxd). A field added in the .py must be declared here.
from sbc.media.anchor cimport StreamPeer

cdef class CallMedia:
    cdef public object sessions
    cdef public object freed
    cdef public object quiet
