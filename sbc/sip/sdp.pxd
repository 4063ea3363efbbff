# Augments sdp.py when setup.py compiles it: the SDP types become extension types, as the URI
# types do (see uri.pxd for why some __init__ are written out in the .py). A field added in the
# .py must be declared here. A field typed str or list holds exactly that type or None (see uri.pxd);
# assigning another type, a str subclass included, raises TypeError.
cdef class Origin:
    cdef public str username
    cdef public str sess_id
    cdef public object sess_version
    cdef public str nettype
    cdef public str addrtype
    cdef public str address

cdef class Connection:
    cdef public str nettype
    cdef public str addrtype
    cdef public str address
    cdef public str ttl
    cdef public str count

cdef class MediaDescription:
    cdef public str media
    cdef public object port
    cdef public str proto
    cdef public list fmts
    cdef public object port_count
    cdef public str info
    cdef public list connections
    cdef public list bandwidths
    cdef public str key
    cdef public list attributes
    cdef public list unknown

cdef class SessionDescription:
    cdef public object origin
    cdef public str session_name
    cdef public object version
    cdef public str info
    cdef public str uri
    cdef public list emails
    cdef public list phones
    cdef public object connection
    cdef public list bandwidths
    cdef public list times
    cdef public list timezones
    cdef public str key
    cdef public list attributes
    cdef public list media
    cdef public list unknown
