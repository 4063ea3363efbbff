# Augments anchor.py when setup.py compiles it: StreamPeer becomes an extension type, as the
# SIP types do (see sbc/sip/uri.pxd). A field added in the .py must be declared here.
# describe() and anchor() are cpdef, and the SDP types and methods they use cimported: compiled
# callers (sbc.media.manager) and this module call them directly in C, skipping the name lookup
# and argument parsing of a Python call.
from sbc.sip.sdp cimport Connection, MediaDescription, SessionDescription

cdef class StreamPeer:
    cdef readonly object index
    cdef readonly object media
    cdef readonly object address
    cdef readonly object rtp_port
    cdef readonly object rtcp_port
    cdef readonly object rtcp_mux
    cdef readonly object clock_rate
    cdef readonly object dtmf_pt
    cdef readonly object held
    cdef readonly object quiet

cpdef list describe(SessionDescription sdp)
cpdef bytes anchor(SessionDescription sdp, str relay_ip, list ports)
