# Augments sdp.py when setup.py compiles it: the SDP types become extension types, as the URI
# types do (see uri.pxd for why some __init__ are written out in the .py). A field added in the
# .py must be declared here. A field typed str or list holds exactly that type or None (see uri.pxd);
# assigning another type, a str subclass included, raises TypeError.
# Functions and methods declared cpdef here are called directly in C by compiled code (this module,
# and sbc.media.anchor/manager through cimport), skipping the name lookup and argument parsing of a
# Python call; Python callers see them unchanged. Their typed arguments refuse other types.
cdef class SessionDescription

cpdef str _excerpt(str line)
cpdef bint _is_digits(str text)
cpdef object _parse_port(str text, str what)
cpdef str _attribute_line(tuple attribute)
cpdef str _direction_of(list attributes)
cpdef object _remove(list attributes, frozenset names)

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
    cpdef str direction(self, SessionDescription session=*)
    cpdef set_direction(self, str direction)
    cpdef bint is_held(self, SessionDescription session=*)
    cpdef decline(self)
    cpdef Connection effective_connection(self, SessionDescription session=*)
    cpdef list attribute_values(self, str name)
    cpdef object remove_attributes(self, names)
    cpdef dict rtpmap(self)
    cpdef tuple rtcp(self)
    cpdef _write(self, list out)

cpdef Connection _rewritten(Connection connection, str addrtype, str address)

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
    cpdef bytes to_bytes(self)
    cpdef list attribute_values(self, str name)
    cpdef object remove_attributes(self, names)
    cpdef set_address(self, str address)
    cpdef bump_version(self)

cpdef SessionDescription _parse(cls, data)
cpdef Origin _parse_origin(cls, str value)
cpdef Connection _parse_connection(cls, str value)
cpdef MediaDescription _parse_m_line(cls, str value)
