# cython: language_level=3
"""C declarations of the relay engine (relay_engine.h) and the stats core (rtp_stats.h)."""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "rtp_stats.h" nogil:
    ctypedef struct rr_dtmf_state:
        pass

    ctypedef struct rr_dtmf_event:
        uint32_t ts
        uint16_t duration
        uint8_t event
        uint8_t volume
        uint8_t end_seen

    ctypedef struct rr_stream_stats:
        uint32_t clock_rate

    ctypedef struct rr_stream_report:
        uint64_t packets, bytes, duplicates, out_of_order, non_rtp
        uint64_t rtcp_packets, rtcp_bytes, dtmf_packets, seq_resets
        uint64_t expected
        int64_t lost
        double loss_fraction
        double jitter_ms
        double mos
        uint32_t ssrc
        uint32_t extended_max_seq

    int RR_PKT_RTP, RR_PKT_DTMF, RR_PKT_RTCP, RR_PKT_NOT_RTP
    double RR_MOS_BASE_DELAY_MS

    void rr_stream_init(rr_stream_stats *s, uint32_t clock_rate, int dtmf_pt)
    int rr_stream_on_packet(rr_stream_stats *s, const uint8_t *pkt, size_t len, int64_t arrival_ns,
                            int rtcp_mux, rr_dtmf_event *dtmf_out, int *n_dtmf)
    void rr_stream_report_get(const rr_stream_stats *s, rr_stream_report *out)
    int rr_dtmf_on_payload(rr_dtmf_state *d, uint32_t rtp_ts, const uint8_t *payload, size_t len,
                           rr_dtmf_event *out)
    double rr_mos_g711(double loss_fraction, double jitter_ms, double base_delay_ms)
    char rr_dtmf_digit(uint8_t event)


cdef extern from "relay_engine.h" nogil:
    int RR_LEG_A, RR_LEG_B
    int RR_LATCH_SYMMETRIC, RR_LATCH_STRICT
    int RR_EVENT_DTMF, RR_EVENT_TIMEOUT
    int RR_OK, RR_ERR_NO_SESSION, RR_ERR_NO_SLOT, RR_ERR_NO_PORTS, RR_ERR_SOCKET, RR_ERR_ARG
    int RR_ERR_STATE, RR_ERR_UNSUPPORTED
    int RR_BACKEND_AUTO, RR_BACKEND_EPOLL, RR_BACKEND_IO_URING
    int RR_KERNEL_OFF, RR_KERNEL_AUTO, RR_KERNEL_ON
    enum: RR_MAX_WORKERS
    enum: RR_LATE_BUCKETS

    ctypedef struct sockaddr_c "struct sockaddr":
        unsigned short sa_family

    ctypedef union rr_sockaddr:
        sockaddr_c sa

    ctypedef struct rr_config:
        rr_sockaddr bind_addr
        uint16_t port_min
        uint16_t port_max
        int workers
        uint32_t max_sessions
        int64_t quarantine_ns
        int rcvbuf
        int sndbuf
        int tos
        int64_t default_timeout_ns
        int64_t default_hold_timeout_ns
        int64_t poll_interval_ns
        int rt_priority
        int backend
        int ncpus
        int cpus[RR_MAX_WORKERS]
        int kernel

    ctypedef struct rr_session_params:
        uint32_t clock_rate
        int dtmf_pt
        int64_t timeout_ns
        int64_t hold_timeout_ns
        int defer_wake

    ctypedef struct rr_peer:
        rr_sockaddr rtp
        rr_sockaddr rtcp
        uint8_t rtcp_mux
        uint8_t latch_mode

    ctypedef struct rr_leg_info:
        uint16_t rtp_port, rtcp_port
        rr_sockaddr signalled_rtp, signalled_rtcp, latched_rtp, latched_rtcp
        uint8_t rtcp_mux, latch_mode
        int64_t last_packet_ns
        uint64_t unknown_source, forwarded, no_destination, send_errors, truncated
        uint64_t kernel_forwarded
        uint8_t kernel
        rr_stream_report stats

    ctypedef struct rr_session_info:
        rr_leg_info leg[2]
        uint8_t held
        int64_t created_ns, timeout_ns, hold_timeout_ns

    ctypedef struct rr_event:
        uint64_t session_id
        int64_t at_ns
        int64_t idle_ns
        uint32_t ts
        uint16_t duration
        uint32_t clock_rate
        uint8_t type
        uint8_t leg
        uint8_t event
        uint8_t volume
        uint8_t end_seen
        uint8_t held

    ctypedef struct rr_engine_counters:
        uint64_t wakeups, recv_calls, send_calls, packets_in, packets_out
        uint64_t recv_errors
        uint64_t control_wakes, control_naps
        uint64_t events_dropped
        uint64_t late[RR_LATE_BUCKETS]
        uint64_t work[RR_LATE_BUCKETS]
        uint64_t stall[RR_LATE_BUCKETS]
        uint32_t sessions, ports_free, ports_total
        uint32_t ports_spare
        uint64_t spare_hits, spare_misses, spare_drained
        uint32_t realtime_workers
        uint32_t pinned_workers
        uint32_t kernel_flows
        uint64_t kernel_installs, kernel_withdrawals
        uint64_t kernel_packets, kernel_bytes
        uint64_t kernel_to_worker
        uint64_t kernel_run_ns, kernel_run_cnt

    ctypedef struct rr_engine:
        pass

    int64_t rr_now_ns()
    int rr_parse_addr(const char *ip, uint16_t port, rr_sockaddr *out)
    int rr_format_addr(const rr_sockaddr *a, char *buf, size_t buflen, uint16_t *port)

    rr_engine *rr_engine_new(const rr_config *cfg, int *err)
    int rr_engine_start(rr_engine *e)
    void rr_engine_stop(rr_engine *e)
    void rr_engine_free(rr_engine *e)

    int rr_session_alloc(rr_engine *e, const rr_session_params *p, uint64_t *id_out)
    int rr_engine_wake_owed(rr_engine *e)
    int rr_session_free(rr_engine *e, uint64_t id, rr_session_info *final_info)
    int rr_session_set_peer(rr_engine *e, uint64_t id, int leg, const rr_peer *peer)
    int rr_session_set_hold(rr_engine *e, uint64_t id, int held)
    int rr_session_restart_idle(rr_engine *e, uint64_t id)
    int rr_session_set_timeouts(rr_engine *e, uint64_t id, int64_t timeout_ns, int64_t hold_timeout_ns)
    int rr_session_set_media(rr_engine *e, uint64_t id, uint32_t clock_rate, int dtmf_pt)
    int rr_session_info_get(rr_engine *e, uint64_t id, rr_session_info *out)
    int rr_session_ports(rr_engine *e, uint64_t id, uint16_t out[4])

    size_t rr_sessions_idle_since(rr_engine *e, int64_t since_ns, uint64_t *ids, size_t max)
    size_t rr_events_poll(rr_engine *e, rr_event *out, size_t max)
    int rr_engine_event_fd(const rr_engine *e)
    void rr_engine_counters_get(rr_engine *e, rr_engine_counters *out)
    int rr_engine_worker_count(const rr_engine *e)
    int rr_engine_worker_tid(const rr_engine *e, int i)
    int rr_engine_backend(const rr_engine *e)
    int rr_io_uring_status()
    int rr_io_uring_built()
    int rr_engine_kernel(const rr_engine *e, const char **why)
    int rr_kernel_built()
