/*
 * Native RTP relay engine: worker threads that own the relay sockets and move
 * packets outside the Python GIL.  Two I/O backends, chosen per engine:
 *   - epoll: epoll_wait, then recvmmsg/sendmmsg per ready socket;
 *   - io_uring (when built with liburing and the kernel allows it): multishot
 *     recvmsg into a provided-buffer ring on every socket, all of a batch's sends
 *     queued as SQEs and submitted with one io_uring_enter.
 *
 * Threading contract
 *   - Each session belongs to one worker.  The worker holds its own mutex while
 *     it handles one epoll wakeup; every control call (set_peer, stats, free...)
 *     takes that mutex, so a control call waits at most for one wakeup's work.
 *   - epoll data carries (slot, generation, leg, rtcp): a wakeup that races with
 *     a free finds a different generation and is ignored, so slots never dangle.
 *   - Events for Python (DTMF digits, media timeouts) go through one engine
 *     queue guarded by its own mutex, signalled on an eventfd.
 */
#ifndef RR_RELAY_ENGINE_H
#define RR_RELAY_ENGINE_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "rtp_stats.h"

/* Upper bound of worker threads: one per core is the useful maximum. */
#define RR_MAX_WORKERS 64

#define RR_LEG_A 0
#define RR_LEG_B 1

enum { RR_LATCH_SYMMETRIC = 0, RR_LATCH_STRICT = 1 };
enum { RR_EVENT_DTMF = 1, RR_EVENT_TIMEOUT = 2 };

enum {
    RR_OK = 0,
    RR_ERR_NO_SESSION = -1,   /* unknown or already freed session id */
    RR_ERR_NO_SLOT = -2,      /* max_sessions reached */
    RR_ERR_NO_PORTS = -3,     /* port range exhausted (or all free ports in quarantine) */
    RR_ERR_SOCKET = -4,       /* socket/bind/epoll failure; errno tells */
    RR_ERR_ARG = -5,          /* bad argument */
    RR_ERR_STATE = -6,        /* engine not in the right state (started/stopped) */
    RR_ERR_UNSUPPORTED = -7,  /* the requested backend is not built in or the kernel refuses it; errno tells */
};

/* The kernel fast path (relay_kfwd.h): latched RTP relayed by a BPF program. */
enum {
    RR_KERNEL_OFF = 0,        /* every packet through the workers */
    RR_KERNEL_AUTO = 1,       /* when built in and the kernel allows it, else off (the reason is kept) */
    RR_KERNEL_ON = 2,         /* required: rr_engine_new fails with RR_ERR_UNSUPPORTED otherwise */
};

enum {
    RR_BACKEND_AUTO = 0,      /* io_uring when built in and usable, else epoll */
    RR_BACKEND_EPOLL = 1,
    RR_BACKEND_IO_URING = 2,
};

/* Timing histograms in rr_engine_counters: bucket k counts values below
 * RR_LATE_BOUNDS_US[k] microseconds (and not below the previous bound); the
 * last bucket counts the rest.  Bounds: 100 us, 500 us, 1 ms, 2 ms (the p99
 * budget), 10 ms. */
#define RR_LATE_BUCKETS 6
#define RR_LATE_BOUNDS_US {100, 500, 1000, 2000, 10000}

typedef union rr_sockaddr {
    struct sockaddr sa;       /* sa_family == 0 means "not set" */
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
} rr_sockaddr;

typedef struct rr_config {
    rr_sockaddr bind_addr;    /* address the relay ports are bound on (port ignored) */
    uint16_t port_min;        /* inclusive; rounded up to even (RTP even, RTCP odd: RFC 3550 11) */
    uint16_t port_max;        /* inclusive */
    int workers;              /* native threads */
    uint32_t max_sessions;
    int64_t quarantine_ns;    /* a freed port is not reused before this has passed */
    int rcvbuf;               /* SO_RCVBUF per relay socket, 0 = kernel default */
    int sndbuf;               /* SO_SNDBUF per relay socket, 0 = kernel default */
    int tos;                  /* IP_TOS / IPV6_TCLASS on relay sockets, -1 = leave */
    int64_t default_timeout_ns;       /* media timeout of an active call, 0 = none */
    int64_t default_hold_timeout_ns;  /* media timeout of a held call, 0 = none */
    int64_t poll_interval_ns; /* after a wakeup that found packets, sleep this long and poll
                                 instead of blocking: senders then never pay a wakeup (0 = off) */
    int rt_priority;          /* SCHED_FIFO priority of the workers, 0 = normal scheduling */
    int backend;              /* RR_BACKEND_* */
    int ncpus;                /* worker i is pinned to cpus[i % ncpus]; 0 = not pinned */
    int cpus[RR_MAX_WORKERS];
    int kernel;               /* RR_KERNEL_* */
} rr_config;

typedef struct rr_session_params {
    uint32_t clock_rate;      /* payload clock for jitter and DTMF durations */
    int dtmf_pt;              /* telephone-event payload type, -1 = none */
    int64_t timeout_ns;       /* < 0: engine default */
    int64_t hold_timeout_ns;  /* < 0: engine default */
    int defer_wake;           /* io_uring: leave the worker's wake-up to rr_engine_wake_owed() */
} rr_session_params;

typedef struct rr_peer {
    rr_sockaddr rtp;          /* signalled RTP address; family 0 = not yet known */
    rr_sockaddr rtcp;         /* signalled RTCP address; family 0 = RTP port + 1 */
    uint8_t rtcp_mux;         /* RFC 5761: RTCP travels on the RTP port */
    uint8_t latch_mode;       /* RR_LATCH_* */
} rr_peer;

/* Next step (AI media): opaque attachments, defined by the tap/inject code.
 * A leg's tap receives a copy of every packet that leg receives; a leg's inject
 * source replaces the packets relayed *to* that leg's peer.  See README.md. */
struct rr_tap;
struct rr_inject;

typedef struct rr_endpoint {  /* one flow (RTP or RTCP) of one leg */
    int fd;
    uint16_t local_port;
    rr_sockaddr signalled;
    rr_sockaddr latched;      /* learned source; family 0 = not latched yet */
    uint64_t unknown_source;  /* dropped: not from the latched/signalled address */
} rr_endpoint;

typedef struct rr_leg {       /* the side of the call that faces one peer */
    rr_endpoint rtp;
    rr_endpoint rtcp;
    uint8_t rtcp_mux;
    uint8_t latch_mode;
    int64_t last_packet_ns;   /* monotonic time of the last accepted packet, 0 = none */
    uint64_t forwarded;       /* packets sent on to the other leg's peer */
    uint64_t no_destination;  /* dropped: other leg has no address yet */
    uint64_t send_errors;     /* dropped: sendmmsg refused (buffer full, unreachable) */
    uint64_t truncated;       /* dropped: larger than RR_MAX_PACKET */
    rr_stream_stats stats;    /* packets received from this leg's peer (while the kernel carries
                                 this leg's RTP, its RTP fields live in the kernel's flow entry) */
    /* Kernel fast path of the direction from this leg's peer (relay_kfwd.h). */
    uint8_t kf_on;            /* a flow entry carries this leg's RTP */
    rr_sockaddr kf_src, kf_dst; /* the entry's source and destination, to notice changes */
    int64_t kf_block_until_ns; /* not offloaded again before this (a packet needed the worker) */
    uint64_t kf_forwarded;    /* packets the kernel relayed for flows of this leg since withdrawn */
    struct rr_tap *tap;       /* next step: NULL until a tap is attached */
    struct rr_inject *inject; /* next step: NULL until an injection source replaces this leg's output */
} rr_leg;

typedef struct rr_session {
    uint32_t gen;             /* bumped on free; part of the public id */
    uint8_t in_use;
    uint8_t held;
    uint8_t timeout_reported;
    uint16_t worker;
    uint32_t worker_pos;      /* index in the worker's active list */
    int64_t created_ns;
    /* The media-timeout clock counts from the later of this and the last packet: allocation,
     * then reset when the call is answered or put on or off hold (endpoints may take a moment
     * to start sending, and silence while ringing or held must not count against the call). */
    int64_t idle_from_ns;
    int64_t timeout_ns;
    int64_t hold_timeout_ns;
    rr_leg leg[2];
} rr_session;

typedef struct rr_leg_info {
    uint16_t rtp_port, rtcp_port;
    rr_sockaddr signalled_rtp, signalled_rtcp, latched_rtp, latched_rtcp;
    uint8_t rtcp_mux, latch_mode;
    int64_t last_packet_ns;
    uint64_t unknown_source, forwarded, no_destination, send_errors, truncated;
    uint64_t kernel_forwarded; /* of forwarded: relayed by the kernel fast path */
    uint8_t kernel;           /* the kernel carries this leg's RTP now */
    rr_stream_report stats;
} rr_leg_info;

typedef struct rr_session_info {
    rr_leg_info leg[2];
    uint8_t held;
    int64_t created_ns, timeout_ns, hold_timeout_ns;
} rr_session_info;

typedef struct rr_event {
    uint64_t session_id;
    int64_t at_ns;
    int64_t idle_ns;          /* TIMEOUT: time since the last packet */
    uint32_t ts;              /* DTMF: RTP timestamp of the event */
    uint16_t duration;        /* DTMF: timestamp units */
    uint32_t clock_rate;      /* DTMF: to turn duration into time */
    uint8_t type;             /* RR_EVENT_* */
    uint8_t leg;              /* DTMF: leg the digit came from */
    uint8_t event;            /* DTMF: RFC 4733 event code */
    uint8_t volume;
    uint8_t end_seen;
    uint8_t held;             /* TIMEOUT: the held-call timeout applied */
} rr_event;

typedef struct rr_engine_counters {
    uint64_t wakeups;         /* loop iterations that looked for packets */
    uint64_t recv_calls;      /* epoll: recvmmsg calls; io_uring: receive completions (one per packet) */
    uint64_t send_calls;      /* epoll: sendmmsg calls; io_uring: io_uring_enter calls that submitted */
    uint64_t packets_in, packets_out;
    uint64_t recv_errors;     /* io_uring: receive completions carrying an error */
    uint64_t control_wakes;   /* io_uring: eventfd writes that woke a worker for control work */
    uint64_t control_naps;    /* io_uring: new sessions armed at the worker's nap, unwoken */
    uint64_t events_dropped;
    /* Where a packet's wait goes, per loop round that moved packets: */
    uint64_t late[RR_LATE_BUCKETS];  /* busy naps by how late they ended (wakeup scheduling delay) */
    uint64_t work[RR_LATE_BUCKETS];  /* rounds by the worker's CPU time in them (queueing behind work) */
    uint64_t stall[RR_LATE_BUCKETS]; /* rounds by wall minus CPU time (preempted, or a control call held the lock) */
    uint32_t sessions, ports_free, ports_total;
    uint32_t ports_spare;      /* of ports_free: bound ahead of need by the keeper thread */
    uint64_t spare_hits;       /* allocations that took pre-bound pairs */
    uint64_t spare_misses;     /* allocations that bound their own (no spare pairs left) */
    uint64_t spare_drained;    /* stray datagrams found queued on a spare pair and dropped */
    uint32_t realtime_workers; /* workers that obtained SCHED_FIFO */
    uint32_t pinned_workers;   /* workers pinned to a CPU */
    /* Kernel fast path (zero when it is off) */
    uint32_t kernel_flows;     /* directions the kernel carries now */
    uint64_t kernel_installs, kernel_withdrawals;
    uint64_t kernel_packets, kernel_bytes; /* relayed by the kernel */
    uint64_t kernel_to_worker; /* matched a flow but needed the worker (DTMF, RTCP mux, odd RTP) */
    uint64_t kernel_run_ns, kernel_run_cnt; /* program run time (kernel.bpf_stats_enabled=1) */
} rr_engine_counters;

typedef struct rr_engine rr_engine;

int64_t rr_now_ns(void);
int rr_parse_addr(const char *ip, uint16_t port, rr_sockaddr *out);
int rr_format_addr(const rr_sockaddr *a, char *buf, size_t buflen, uint16_t *port);

rr_engine *rr_engine_new(const rr_config *cfg, int *err);
int rr_engine_start(rr_engine *e);
void rr_engine_stop(rr_engine *e);
void rr_engine_free(rr_engine *e);

int rr_session_alloc(rr_engine *e, const rr_session_params *p, uint64_t *id_out);
/* io_uring: write the wake-ups that allocations with defer_wake left owed, one per worker
 * however many sessions were allocated since (the new sockets' receives are armed then;
 * until then their datagrams wait in the socket).  Returns how many workers were woken;
 * 0 and harmless on the epoll backend. */
int rr_engine_wake_owed(rr_engine *e);
int rr_session_free(rr_engine *e, uint64_t id, rr_session_info *final_info);
int rr_session_set_peer(rr_engine *e, uint64_t id, int leg, const rr_peer *peer);
int rr_session_set_hold(rr_engine *e, uint64_t id, int held);
int rr_session_restart_idle(rr_engine *e, uint64_t id);
int rr_session_set_timeouts(rr_engine *e, uint64_t id, int64_t timeout_ns, int64_t hold_timeout_ns);
int rr_session_set_media(rr_engine *e, uint64_t id, uint32_t clock_rate, int dtmf_pt);
int rr_session_info_get(rr_engine *e, uint64_t id, rr_session_info *out);
/* The session's local ports: A rtp, A rtcp, B rtp, B rtcp (cheaper than info_get). */
int rr_session_ports(rr_engine *e, uint64_t id, uint16_t out[4]);

size_t rr_sessions_idle_since(rr_engine *e, int64_t since_ns, uint64_t *ids, size_t max);
size_t rr_events_poll(rr_engine *e, rr_event *out, size_t max);
int rr_engine_event_fd(const rr_engine *e);
void rr_engine_counters_get(rr_engine *e, rr_engine_counters *out);
int rr_engine_worker_count(const rr_engine *e);
int rr_engine_worker_tid(const rr_engine *e, int i);
/* RR_BACKEND_EPOLL or RR_BACKEND_IO_URING: the backend this engine runs. */
int rr_engine_backend(const rr_engine *e);
/* 0 if the io_uring backend is built in and usable here, else -errno (-ENOSYS: not built in). */
int rr_io_uring_status(void);
/* 1 if the extension was compiled with the io_uring backend (liburing present), else 0. */
int rr_io_uring_built(void);
/* 1 if the kernel path is attached; why says why not (or where it is attached). */
int rr_engine_kernel(const rr_engine *e, const char **why);
/* 1 if the extension was compiled with the kernel fast path (clang + libbpf present). */
int rr_kernel_built(void);

#endif
