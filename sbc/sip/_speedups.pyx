# cython: language_level=3, boundscheck=False, wraparound=False
"""C-speed header splitting for :func:`sbc.sip.message.parse_message`.

The profile of the parse benchmark puts most of a parse in the per-line Python loop that
splits ``name: value`` lines (about 5 µs of 11 µs for a 15-header INVITE). This module does
exactly that loop over the raw bytes and nothing else; every rule about what the lines mean
stays in ``message.py``, and the pure-Python loop there remains the fallback and the reference
(the tests run both and compare).
"""

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memchr, memcmp, memcpy


cdef extern from "Python.h":
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void* PyUnicode_DATA(object o)


cdef extern from "<string.h>" nogil:
    # GNU extension (glibc); _GNU_SOURCE is defined by Python.h.
    void* memmem(const void* haystack, size_t haystacklen, const void* needle, size_t needlelen)


cdef inline bint _ws(char c) noexcept nogil:
    return c == 32 or c == 9


cdef inline const char* _crlf(const char* p, const char* stop) noexcept nogil:
    # The next CRLF in [p, stop), or NULL: memchr for the LF (SIMD in glibc) and a look back for
    # its CR. glibc's memmem costs about 200 instructions a call even for a two-byte needle, and
    # the head's lines are short.
    cdef const char* lf
    p += 1  # a CRLF's LF is never the first byte searched
    while p < stop:
        lf = <const char*>memchr(p, 10, stop - p)
        if lf == NULL:
            return NULL
        if (lf - 1)[0] == 13:
            return lf - 1
        p = lf + 1
    return NULL


cdef inline str _decode(const char* p, Py_ssize_t n, bint ascii):
    # An all-ASCII head (nearly every SIP message) is copied straight into a compact str;
    # anything else is decoded as UTF-8 with surrogateescape, like the Python path.
    cdef object s
    if ascii:
        s = PyUnicode_New(n, 127)
        if n:
            memcpy(PyUnicode_DATA(s), p, n)
        return s
    return PyUnicode_DecodeUTF8(p, n, "surrogateescape")


# Header names seen before, as raw spellings with their canonical name, so that a known name
# costs a length check and a memcmp instead of a new str, its hash and a dict lookup (about a
# fifth of a header line's cost; a SIP peer sends the same dozen names in every message). Learnt
# from the ``names`` mapping the caller passes (message.py's cache of canonical_name), first come
# first kept, and used only with that same mapping: the rules stay in Python.
cdef enum:
    _KNOWN_MAX = 48
cdef object _known_for = None          # the names mapping the table was learnt from
cdef list _known_keep = []             # the spellings (bytes), which own _known_ptr's memory
cdef list _known_name = []             # their canonical names (str)
cdef const char* _known_ptr[_KNOWN_MAX]
cdef Py_ssize_t _known_len[_KNOWN_MAX]
cdef Py_ssize_t _known_n = 0


cdef inline object _known(const char* p, Py_ssize_t n):
    cdef Py_ssize_t i
    for i in range(_known_n):
        if _known_len[i] == n and memcmp(_known_ptr[i], p, n) == 0:
            return _known_name[i]
    return None


cdef void _learn(const char* p, Py_ssize_t n, object cname):
    global _known_n
    if _known_n >= _KNOWN_MAX:
        return
    spelling = p[:n]
    _known_keep.append(spelling)
    _known_name.append(cname)
    _known_ptr[_known_n] = <const char*>spelling
    _known_len[_known_n] = n
    _known_n += 1


cdef bint _is_ascii(const char* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef unsigned char acc = 0
    for i in range(n):
        acc |= <unsigned char>p[i]
    return acc < 128


def split_head(bytes data, dict names, object canonical):
    """Split a CRLF message into its start line, header pairs and body offset.

    Returns ``(start_line, headers, body_offset, content_length_values)`` where ``headers`` is a
    list of ``(canonical name, value)``, folded lines already joined with one space, names
    mapped through ``names`` (exact spelling → canonical) or ``canonical(name)``; and
    ``content_length_values`` the list of Content-Length values seen. Returns None when the
    message has no CRLFCRLF (the caller's Python path handles bare-LF messages).
    Raises ValueError("colon") for a header line without a colon.
    """
    cdef const char* base = data
    cdef Py_ssize_t n = len(data)
    cdef const char* end_hdr = <const char*>memmem(base, n, b"\r\n\r\n", 4)
    if end_hdr == NULL:
        return None
    cdef Py_ssize_t head_len = end_hdr - base
    cdef bint ascii = _is_ascii(base, head_len)
    cdef const char* p = base
    cdef const char* stop = end_hdr
    cdef const char* eol = _crlf(p, stop)
    if eol == NULL:
        eol = stop
    start_line = _decode(p, eol - p, ascii)
    headers = []
    lengths = []
    cdef const char* colon
    cdef const char* ns
    cdef const char* ne
    cdef const char* vs
    cdef const char* ve
    cdef str name
    cdef str value
    cdef object cname
    cdef Py_ssize_t last
    global _known_for
    cdef bint learning = names is _known_for
    if _known_for is None:
        _known_for = names
        learning = True
    p = eol + 2 if eol < stop else stop
    while p < stop:
        eol = _crlf(p, stop)
        if eol == NULL:
            eol = stop
        if _ws(p[0]):
            # Folded continuation (RFC 3261 §7.3.1): joins the previous value with one space.
            vs = p
            ve = eol
            while vs < ve and _ws(vs[0]):
                vs += 1
            while ve > vs and _ws((ve - 1)[0]):
                ve -= 1
            if not headers:
                raise ValueError("colon")
            last = len(headers) - 1  # wraparound is off: no negative indices
            cname, value = headers[last]
            if ve > vs:
                # join(), not '+': Cython's in-place str concatenation may resize a string
                # the headers list still holds.
                value = " ".join((value, _decode(vs, ve - vs, ascii))) if value else _decode(vs, ve - vs, ascii)
            headers[last] = (cname, value)
            if cname == "Content-Length":
                lengths[len(lengths) - 1] = value
            p = eol + 2
            continue
        colon = <const char*>memchr(p, 58, eol - p)  # ':'
        if colon == NULL:
            raise ValueError("colon")
        ne = colon
        while ne > p and _ws((ne - 1)[0]):
            ne -= 1
        cname = _known(p, ne - p) if learning else None
        if cname is None:
            name = _decode(p, ne - p, ascii)
            cname = names.get(name)
            if cname is None:
                cname = canonical(name)
            elif learning and ascii:
                _learn(p, ne - p, cname)
        vs = colon + 1
        ve = eol
        while vs < ve and _ws(vs[0]):
            vs += 1
        while ve > vs and _ws((ve - 1)[0]):
            ve -= 1
        value = _decode(vs, ve - vs, ascii)
        headers.append((cname, value))
        if cname == "Content-Length":
            lengths.append(value)
        p = eol + 2
    return start_line, headers, head_len + 4, lengths


# -- Via ---------------------------------------------------------------------------------------

cdef inline bint _token(Py_UCS4 c) noexcept:
    # RFC 3261 §25.1 token characters.
    return (
        (c >= 97 and c <= 122) or (c >= 65 and c <= 90) or (c >= 48 and c <= 57)
        or c == 45 or c == 46 or c == 33 or c == 37 or c == 42 or c == 95 or c == 43
        or c == 96 or c == 39 or c == 126
    )


cdef inline bint _gen_value(Py_UCS4 c) noexcept:
    # gen-value as sbc.sip.headers accepts it unquoted: a token, or a host (':' '[' ']' for IPv6).
    return _token(c) or c == 58 or c == 91 or c == 93


def split_simple_via(str text):
    """The common shape of one via-parm, split at C speed: ``SIP/2.0/TRANSPORT sent-by;params``.

    Returns ``(transport, sent_by, params)``: the transport upper-cased, sent-by as written (the
    caller parses host and port and checks the parameters' values, as the full parser does),
    the parameters with lowercased names and values as written (``None`` for a flag). Returns
    None for anything else, for the Python parser in ``sbc.sip.headers`` to accept or refuse with
    its precise reason: LWS anywhere but the one space after the transport, a quoted value, an
    empty or repeated parameter. For what it accepts the split is the Python parser's (the tests
    compare both on every Via they have).
    """
    cdef Py_ssize_t n = len(text)
    cdef Py_ssize_t i, start, eq
    cdef Py_UCS4 c
    if n < 10 or not text.startswith("SIP/2.0/"):
        return None
    i = 8
    start = i
    while i < n:
        c = text[i]
        if c == 32:
            break
        if not ((c >= 97 and c <= 122) or (c >= 65 and c <= 90)):
            return None
        i += 1
    if i == start or i >= n - 1:
        return None
    transport = text[start:i].upper()
    i += 1  # the one space
    start = i
    while i < n:
        c = text[i]
        if c == 59:  # ';'
            break
        if c == 32 or c == 9 or c == 34 or c == 44:
            return None
        i += 1
    if i == start:
        return None
    sent_by = text[start:i]
    params = {}
    while i < n:
        i += 1  # past ';'
        start = i
        eq = -1
        while i < n:
            c = text[i]
            if c == 59:
                break
            if c == 61 and eq < 0:
                eq = i
            elif eq < 0:
                if not _token(c):
                    return None
            elif not _gen_value(c):
                return None
            i += 1
        if i == start or eq == start or eq == i - 1:
            return None  # empty parameter, empty name, or '=' with no value
        if eq < 0:
            key = text[start:i].lower()
            value = None
        else:
            key = text[start:eq].lower()
            value = text[eq + 1:i]
        if key in params:
            return None
        params[key] = value
    return transport, sent_by, params


# -- URI escaping --------------------------------------------------------------------------------

def all_in(str text, bytes table):
    """True when every character of ``text`` is ASCII with a non-zero byte in ``table`` (128
    bytes, indexed by code point): the check ``sbc.sip.uri._escape`` makes before it
    percent-encodes, which a regex fullmatch made at ten times the cost."""
    cdef const unsigned char* t = table
    cdef Py_UCS4 c
    if len(table) != 128:
        raise ValueError("table must be 128 bytes")
    for c in text:
        if c >= 128 or not t[c]:
            return False
    return True
