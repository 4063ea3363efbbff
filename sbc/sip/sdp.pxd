# Augments sdp.py when setup.py compiles it: the SDP types become extension types, as the URI
# types do (see uri.pxd for why some __init__ are written out in the .py). A field added in the
# .py must be declared here.
cdef class Origin:
    cdef public object username
    cdef public object sess_id
    cdef public object sess_version
    cdef public object nettype
    cdef public object addrtype
    cdef public object address

cdef class Connection:
    cdef public object nettype
    cdef public object addrtype
    cdef public object address
    cdef public object ttl
    cdef public object count

cdef class MediaDescription:
    cdef public object media
    cdef public object port
    cdef public object proto
    cdef public object fmts
    cdef public object port_count
    cdef public object info
    cdef public object connections
    cdef public object bandwidths
    cdef public object key
    cdef public object attributes
    cdef public object unknown

cdef class SessionDescription:
    cdef public object origin
    cdef public object session_name
    cdef public object version
    cdef public object info
    cdef public object uri
    cdef public object emails
    cdef public object phones
    cdef public object connection
    cdef public object bandwidths
    cdef public object times
    cdef public object timezones
    cdef public object key
    cdef public object attributes
    cdef public object media
    cdef public object unknown
