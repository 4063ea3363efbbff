# cython: language_level=3, boundscheck=False, wraparound=False
"""Batched SIP datagram I/O: ``recvmmsg`` and ``sendmmsg`` with kernel receive timestamps.

Why this exists (profile of ``sbc run`` at 500 calls/s, py-spy): a fifth of the signalling
thread went to the event loop's own datagram path, one ``recvfrom`` per datagram plus the read
that finds the queue empty, and one ``sendto`` per datagram. Under load a readiness event finds
many datagrams waiting, so one ``recvmmsg`` takes them all and one ``sendmmsg`` sends what their
processing produced.

The second reason is overload control. The event loop's lag cannot see datagrams waiting in the
kernel's socket buffer: the loop keeps turning while the queue in front of it grows until peers
retransmit. ``SO_TIMESTAMPNS`` stamps each datagram when the kernel queued it; the difference to
the time we read it is exactly the queueing delay the overload guard must keep short.

Only bytes and addresses cross into Python; every rule about what a datagram means stays in
``sbc.sip`` and ``sbc.transport.udp``.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdlib cimport free, malloc
from libc.string cimport memset, strerror


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    struct sockaddr_storage:
        sa_family_t ss_family

    struct iovec:
        void* iov_base
        size_t iov_len

    struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags

    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len

    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type

    cmsghdr* CMSG_FIRSTHDR(msghdr* m)
    cmsghdr* CMSG_NXTHDR(msghdr* m, cmsghdr* c)
    unsigned char* CMSG_DATA(cmsghdr* c)
    size_t CMSG_SPACE(size_t n)

    int recvmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags, void* timeout)
    int sendmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags)
    int setsockopt(int fd, int level, int name, const void* val, socklen_t len)

    int AF_INET
    int AF_INET6
    int SOL_SOCKET
    int MSG_DONTWAIT
    int MSG_TRUNC
    int SO_TIMESTAMPNS
    int SCM_TIMESTAMPNS


cdef extern from "<netinet/in.h>" nogil:
    ctypedef unsigned short in_port_t

    struct in_addr:
        unsigned int s_addr

    struct in6_addr:
        unsigned char s6_addr[16]

    struct sockaddr_in:
        sa_family_t sin_family
        in_port_t sin_port
        in_addr sin_addr

    struct sockaddr_in6:
        sa_family_t sin6_family
        in_port_t sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id

    unsigned short ntohs(unsigned short)
    unsigned short htons(unsigned short)


cdef extern from "<arpa/inet.h>" nogil:
    const char* inet_ntop(int af, const void* src, char* dst, socklen_t size)
    int inet_pton(int af, const char* src, void* dst)


cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec

    int clock_gettime(int clk, timespec* ts)
    int CLOCK_REALTIME


cdef enum:
    MAX_BATCH = 64
    # Room for one SCM_TIMESTAMPNS (a struct timespec) and anything else a kernel may add.
    CONTROL_BYTES = 64
    ADDR_TEXT = 64

# Datagrams taken per recv() call.
BATCH = MAX_BATCH

# The largest datagram a SIP peer can send over UDP: the IP maximum. Buffers are allocated once
# per socket; only the pages a datagram touches become resident.
MAX_DATAGRAM = 65535


cdef inline double _ts(const timespec* t) noexcept nogil:
    return <double>t.tv_sec + <double>t.tv_nsec * 1e-9


cdef int _fill_addr(sockaddr_storage* ss, str host, int port) except -1:
    """Parse ``host`` (IPv4 or IPv6 literal) into ``ss``; the length, or raise ValueError."""
    cdef bytes h = host.encode("ascii")
    cdef sockaddr_in* a4 = <sockaddr_in*>ss
    cdef sockaddr_in6* a6 = <sockaddr_in6*>ss
    if port < 0 or port > 65535:
        raise ValueError(f"port out of range: {port}")
    memset(ss, 0, sizeof(sockaddr_storage))
    if inet_pton(AF_INET, h, &a4.sin_addr) == 1:
        a4.sin_family = AF_INET
        a4.sin_port = htons(<unsigned short>port)
        return sizeof(sockaddr_in)
    memset(ss, 0, sizeof(sockaddr_storage))
    if inet_pton(AF_INET6, h, &a6.sin6_addr) == 1:
        a6.sin6_family = AF_INET6
        a6.sin6_port = htons(<unsigned short>port)
        return sizeof(sockaddr_in6)
    raise ValueError(f"not an IP address: {host!r}")


cdef class BatchSocket:
    """Batched receive and send on one bound, non-blocking UDP socket (the caller owns the fd).

    ``recv()`` returns up to ``BATCH`` (64) ``(data, host, port)`` tuples, an empty list once the
    queue is empty; ``last_delay`` is then how long the last of them waited in the queue (a full
    batch means more are waiting: that is how far behind its input the reader is); ``send(items)`` sends ``(data, host, port)`` tuples and returns how many went (fewer
    only when the socket buffer is full). ``take_max_delay()`` returns the largest queueing delay
    (seconds) of the datagrams received since its previous call and resets it.
    """

    cdef int fd
    cdef mmsghdr rmsgs[MAX_BATCH]
    cdef iovec riov[MAX_BATCH]
    cdef sockaddr_storage raddr[MAX_BATCH]
    cdef unsigned char rctl[MAX_BATCH][CONTROL_BYTES]
    cdef char* rbuf
    cdef mmsghdr smsgs[MAX_BATCH]
    cdef iovec siov[MAX_BATCH]
    cdef sockaddr_storage saddr[MAX_BATCH]
    cdef double max_delay
    cdef readonly double last_delay
    cdef readonly bint timestamps
    cdef readonly unsigned long long truncated
    cdef readonly list last_errors

    def __cinit__(self, int fd):
        cdef int one = 1
        cdef int i
        self.fd = fd
        self.rbuf = <char*>malloc(MAX_BATCH * <size_t>MAX_DATAGRAM)
        if self.rbuf == NULL:
            raise MemoryError()
        self.timestamps = setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof(one)) == 0
        memset(self.rmsgs, 0, sizeof(self.rmsgs))
        memset(self.smsgs, 0, sizeof(self.smsgs))
        for i in range(MAX_BATCH):
            self.riov[i].iov_base = self.rbuf + i * <size_t>MAX_DATAGRAM
            self.riov[i].iov_len = MAX_DATAGRAM
            self.rmsgs[i].msg_hdr.msg_iov = &self.riov[i]
            self.rmsgs[i].msg_hdr.msg_iovlen = 1
            self.smsgs[i].msg_hdr.msg_iov = &self.siov[i]
            self.smsgs[i].msg_hdr.msg_iovlen = 1
            self.smsgs[i].msg_hdr.msg_name = &self.saddr[i]
        self.max_delay = 0.0

    def __dealloc__(self):
        free(self.rbuf)

    def recv(self):
        """Everything waiting, up to one batch: a list of ``(data, host, port)``. Raises OSError
        for a socket error other than an empty queue or an interrupted call."""
        cdef int i, n
        cdef msghdr* h
        cdef cmsghdr* c
        cdef timespec now
        cdef double delay = 0.0, newest = 0.0
        cdef char text[ADDR_TEXT]
        cdef sockaddr_in* a4
        cdef sockaddr_in6* a6
        cdef int port
        cdef list out = []
        for i in range(MAX_BATCH):
            h = &self.rmsgs[i].msg_hdr
            h.msg_name = &self.raddr[i]
            h.msg_namelen = sizeof(sockaddr_storage)
            h.msg_control = self.rctl[i]
            h.msg_controllen = CONTROL_BYTES
            h.msg_flags = 0
        with nogil:
            n = recvmmsg(self.fd, self.rmsgs, MAX_BATCH, MSG_DONTWAIT, NULL)
        if n < 0:
            if errno == EAGAIN or errno == EINTR:
                return out
            raise OSError(errno, strerror(errno).decode())
        clock_gettime(CLOCK_REALTIME, &now)
        self.last_delay = 0.0
        for i in range(n):
            h = &self.rmsgs[i].msg_hdr
            if h.msg_flags & MSG_TRUNC:
                self.truncated += 1  # cannot happen below the IP maximum; never half a message
                continue
            if self.timestamps:
                c = CMSG_FIRSTHDR(h)
                while c != NULL:
                    if c.cmsg_level == SOL_SOCKET and c.cmsg_type == SCM_TIMESTAMPNS:
                        delay = _ts(&now) - _ts(<timespec*>CMSG_DATA(c))
                        if delay > newest:
                            newest = delay
                        self.last_delay = delay
                        break
                    c = CMSG_NXTHDR(h, c)
            a4 = <sockaddr_in*>&self.raddr[i]
            if a4.sin_family == AF_INET:
                inet_ntop(AF_INET, &a4.sin_addr, text, ADDR_TEXT)
                port = ntohs(a4.sin_port)
            elif a4.sin_family == AF_INET6:
                a6 = <sockaddr_in6*>&self.raddr[i]
                inet_ntop(AF_INET6, &a6.sin6_addr, text, ADDR_TEXT)
                port = ntohs(a6.sin6_port)
            else:
                continue
            out.append((
                PyBytes_FromStringAndSize(<char*>self.riov[i].iov_base, self.rmsgs[i].msg_len),
                text.decode("ascii"),
                port,
            ))
        if newest > self.max_delay:
            self.max_delay = newest
        return out

    def take_max_delay(self):
        """The largest kernel queueing delay (seconds) since the previous call; resets it."""
        cdef double d = self.max_delay
        self.max_delay = 0.0
        return d

    def send(self, list items, Py_ssize_t start=0):
        """Send ``items[start:]`` (``(data, host, port)`` tuples), up to 64 per system call.

        Returns the index after the last item handled: ``len(items)`` unless the socket buffer
        filled (the caller keeps the rest and waits for writability). An item the kernel refuses
        outright (no route) or whose host is not an IP literal is skipped, counted as handled and
        listed with its error in ``last_errors``: one bad destination never holds up the others.
        """
        cdef Py_ssize_t total = len(items)
        cdef Py_ssize_t pos = start
        cdef Py_ssize_t slot_item[MAX_BATCH]
        cdef int i, n, batch, err
        cdef object item
        cdef bytes data
        self.last_errors = []
        while pos < total:
            batch = 0
            while batch < MAX_BATCH and pos < total:
                item = items[pos]
                try:
                    data = item[0]
                    self.smsgs[batch].msg_hdr.msg_namelen = _fill_addr(&self.saddr[batch], item[1], item[2])
                except (ValueError, TypeError, IndexError, UnicodeError) as e:
                    self.last_errors.append((item, e))
                    pos += 1
                    continue
                self.siov[batch].iov_base = <char*>data
                self.siov[batch].iov_len = len(data)
                slot_item[batch] = pos
                batch += 1
                pos += 1
            if batch == 0:
                break
            i = 0
            while i < batch:
                with nogil:
                    n = sendmmsg(self.fd, &self.smsgs[i], batch - i, MSG_DONTWAIT)
                if n < 0:
                    err = errno
                    if err == EINTR:
                        continue
                    if err == EAGAIN:
                        return slot_item[i]  # the buffer is full: resume from this item
                    # The kernel refused this datagram: skip it, go on with the rest.
                    self.last_errors.append((items[slot_item[i]], OSError(err, strerror(err).decode())))
                    i += 1
                    continue
                i += n
        return total


def fnv1a_32_trimmed(bytes data) -> int:
    """FNV-1a-32 of ``data`` without its leading and trailing blanks (space, tab): the Call-ID
    hash the SIP steering program computes (``steer.bpf.c``), in C because every message a
    worker receives is checked against it (``sbc.transport.steering.worker_for_call_id``)."""
    cdef const unsigned char* p = data
    cdef Py_ssize_t start = 0, end = len(data)
    cdef unsigned int h = 2166136261u
    while start < end and (p[start] == 32 or p[start] == 9):
        start += 1
    while end > start and (p[end - 1] == 32 or p[end - 1] == 9):
        end -= 1
    while start < end:
        h = (h ^ p[start]) * 16777619u
        start += 1
    return h
