# Augments manager.py when setup.py compiles it: CallMedia and MediaManager become extension
# types, as the SIP types do (see sbc/sip/uri.pxd). A field added in the .py must be declared here.
# MediaManager has no __dict__: it takes no attribute but these.
# Its methods and _summary are cpdef, and the SDP/anchor functions it uses cimported: compiled
# callers (sbc.b2bua.engine) and this module call them directly in C, skipping the name lookup
# and argument parsing of a Python call. Their typed arguments refuse other types.
from sbc.media.anchor cimport StreamPeer, anchor, describe
from sbc.sip.sdp cimport SessionDescription, _parse

cdef class CallMedia:
    cdef public object sessions
    cdef public object freed
    cdef public object quiet

cdef class MediaManager:
    cdef public object engine
    cdef public object advertised_ip
    cdef public dict by_session
    cdef public object batch_wakes
    cdef public object _owed
    cpdef wake_owed(self)
    cpdef bytes rewrite(self, CallMedia media, str side, bytes body, object owner)
    cpdef restart_idle(self, CallMedia media)
    cpdef dict stats(self, CallMedia media)
    cpdef dict free(self, CallMedia media)

cpdef dict _summary(dict info)
