# cython: language_level=3
"""Cython face of the native RTP load generator (gen.c); the hot loops never hold the GIL."""

from libc.stdint cimport int64_t, uint16_t, uint64_t


cdef extern from "gen.h" nogil:
    ctypedef struct gen:
        pass

    ctypedef struct gen_result:
        uint64_t sent
        uint64_t received
        uint64_t send_errors
        uint64_t bad_packets
        uint64_t streams_with_loss
        double latency_p50_us
        double latency_p99_us
        double latency_p999_us
        double latency_max_us
        double send_seconds
        double sender_cpu_s, receiver_cpu_s
        int realtime_threads
        int pinned_threads
        double tx_late_p50_us, tx_late_p99_us, tx_late_max_us

    gen *gen_new(int calls, int socks_per_side, int rcvbuf)
    void gen_free(gen *g)
    int gen_sock_port(const gen *g, int side, int k)
    int gen_sock_for_call(const gen *g, int call)
    void gen_set_target(gen *g, int call, uint16_t a_port, uint16_t b_port)
    int gen_run(gen *g, double seconds, int64_t period_ns, int payload_len, int64_t tick_ns,
                int64_t drain_ns, int rt_priority, int cpu, int senders, gen_result *out)


cdef class Generator:
    """Paced RTP streams for `calls` calls (two directions each) from a few loopback sockets."""

    cdef gen *_g
    cdef readonly int calls

    def __cinit__(self, int calls, int socks_per_side, int rcvbuf):
        self._g = gen_new(calls, socks_per_side, rcvbuf)
        if self._g == NULL:
            raise OSError("could not create generator sockets")
        self.calls = calls

    def __dealloc__(self):
        if self._g != NULL:
            gen_free(self._g)

    def peer_ports(self, int call) -> tuple[int, int]:
        """Local ports (on 127.0.0.1) of the A-side and B-side sockets that carry `call`."""
        k = gen_sock_for_call(self._g, call)
        return gen_sock_port(self._g, 0, k), gen_sock_port(self._g, 1, k)

    def set_target(self, int call, int a_port, int b_port) -> None:
        """Relay ports `call` is sent to: A->B into a_port, B->A into b_port."""
        gen_set_target(self._g, call, a_port, b_port)

    def run(self, double seconds, int64_t period_ns, int payload_len, int64_t tick_ns,
            int64_t drain_ns, int rt_priority=0, int cpu=-1, int senders=1) -> dict:
        """Send for `seconds`, wait `drain_ns`, and return the counts and latency percentiles.

        ``cpu`` >= 0 pins the sender and receiver threads to that CPU; ``senders``
        sender threads share the calls.
        """
        cdef gen_result r
        cdef int rc
        with nogil:
            rc = gen_run(self._g, seconds, period_ns, payload_len, tick_ns, drain_ns, rt_priority, cpu, senders, &r)
        if rc != 0:
            raise OSError(-rc, "generator run failed")
        return {
            "sent": r.sent,
            "received": r.received,
            "send_errors": r.send_errors,
            "bad_packets": r.bad_packets,
            "streams_with_loss": r.streams_with_loss,
            "latency_p50_us": r.latency_p50_us,
            "latency_p99_us": r.latency_p99_us,
            "latency_p999_us": r.latency_p999_us,
            "latency_max_us": r.latency_max_us,
            "send_seconds": r.send_seconds,
            "sender_cpu_s": r.sender_cpu_s,
            "receiver_cpu_s": r.receiver_cpu_s,
            "realtime_threads": r.realtime_threads,
            "pinned_threads": r.pinned_threads,
            "tx_late_p50_us": r.tx_late_p50_us,
            "tx_late_p99_us": r.tx_late_p99_us,
            "tx_late_max_us": r.tx_late_max_us,
        }
