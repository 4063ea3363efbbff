/*
 * Internals shared by the engine core (relay_engine.c) and its I/O backends:
 * the epoll + recvmmsg/sendmmsg loop (relay_engine.c) and the io_uring loop
 * (relay_uring.c, built when liburing is present: RR_HAVE_IO_URING).
 *
 * Not part of the public API: only the engine's own C files include this.
 */
#ifndef RR_RELAY_INTERNAL_H
#define RR_RELAY_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "relay_engine.h"

/* Largest datagram relayed: an Ethernet MTU's worth of RTP plus slack; bigger
 * ones are truncated by the kernel, then dropped and counted. */
#define RR_MAX_PACKET 2048
/* Datagrams read from one socket per wakeup (epoll backend).  A 50 pps stream
 * rarely has more than one queued; 32 drains a burst (hold release, scheduling
 * stall) in one call while bounding how long one socket can hold the worker. */
#define RR_RECV_BATCH 32
/* How often a worker scans its sessions for media timeouts. */
#define RR_TIMEOUT_SCAN_NS (100LL * 1000 * 1000)
/* Generation bits carried in epoll/io_uring tokens and in the public session id. */
#define RR_GEN_MASK 0xffffffu
/* Timer slack of a polling worker: the default 50 us would stretch a 200 us nap by a quarter. */
#define RR_TIMER_SLACK_NS 1000
/* Sockets of freed sessions waiting for an io_uring worker to cancel their
 * receives and close them (4 per session); free() waits when it is full. */
#define RR_CLOSE_QUEUE 256

/* A token names one socket of one session incarnation:
 *   bits 0..31 slot, 32..55 generation, 56 leg, 57 rtcp.
 * Bits 58.. are free for a backend's own tags (io_uring request kinds). */
#define RR_TOKEN_LEG_SHIFT 56
#define RR_TOKEN_RTCP_SHIFT 57
#define RR_TOKEN_MASK ((1ULL << 58) - 1)

typedef struct rr_closing {   /* a socket of a freed session, for the io_uring worker */
    int fd;
    uint64_t token;
} rr_closing;

struct rr_uring;              /* relay_uring.c: a worker's ring, buffers and template */

typedef struct rr_worker {
    rr_engine *engine;
    int index;
    int epfd;                  /* epoll backend: the worker's epoll set */
    int wake_fd;               /* eventfd: stop, and (io_uring) control work waiting */
    pthread_t thread;
    int started;
    atomic_int stop;
    atomic_int tid;
    atomic_int realtime;
    atomic_int pinned;
    atomic_int start_state;    /* 0 starting, 1 running, -errno: could not start */
    pthread_mutex_t lock;
    pthread_cond_t cond;       /* io_uring: a worker iteration finished its close queue */
    uint32_t *active;          /* slots owned by this worker, for timeout scans */
    uint32_t nactive;
    int kf_pending;            /* a latched direction may be handed to the kernel (rr_kf_pass) */
    int64_t kf_next_pass_ns;
    /* counters (written by the worker under lock) */
    uint64_t wakeups, recv_calls, send_calls, packets_in, packets_out;
    uint64_t recv_errors;      /* io_uring: receive completions with an error (re-armed) */
    uint64_t late_hist[RR_LATE_BUCKETS];  /* see rr_engine_counters: late, work, stall */
    uint64_t work_hist[RR_LATE_BUCKETS];
    uint64_t stall_hist[RR_LATE_BUCKETS];
    /* io_uring backend: control work handed to the worker (under lock) */
    struct rr_uring *uring;    /* the worker's ring while its thread runs, else NULL */
    int ring_live;             /* requests may be in flight: sockets must be closed by the worker */
    uint64_t *arm_queue;       /* tokens (slot, gen) of new sessions whose sockets need receives */
    uint32_t narm;
    rr_closing closing[RR_CLOSE_QUEUE];
    uint32_t nclosing;
    int kick_pending;          /* a wake-up was written and the worker has not taken its queues yet */
    int wake_owed;             /* kick_pending is set but the write was deferred (defer_wake) */
    int napping;               /* the worker takes its queues within RR_URING_NAP_NS unwoken */
    uint64_t control_wakes;    /* wake-ups written for control work (atomic: written unlocked) */
    uint64_t control_naps;     /* new sessions left to the worker's nap instead of a wake-up */
    uint64_t close_requested, close_done;
    uint64_t close_finished;   /* atomic: close_done once those sockets were really closed */
    /* epoll backend batch buffers */
    struct mmsghdr rmsgs[RR_RECV_BATCH];
    struct mmsghdr smsgs[RR_RECV_BATCH];
    struct iovec riov[RR_RECV_BATCH];
    struct iovec siov[RR_RECV_BATCH];
    rr_sockaddr src[RR_RECV_BATCH];
    int out_fd[RR_RECV_BATCH];
    uint8_t buf[RR_RECV_BATCH][RR_MAX_PACKET];
} rr_worker;

/* A port pair the keeper thread bound ahead of need (see RR_SPARE_PAIRS). */
typedef struct rr_spare {
    int rtp_fd, rtcp_fd;
    uint16_t port;             /* the RTP (even) port; RTCP is port + 1 */
} rr_spare;

/* Port pairs kept bound ahead of need: socket(), setsockopt() and bind() of a
 * session's four sockets cost the allocating (signalling) thread ~30 us; the
 * keeper thread does it off that thread.  64 pairs carry 32 allocations, about
 * 20 ms at 1,500 calls/s, between two refills. */
#define RR_SPARE_PAIRS 64
/* The keeper refills when fewer pairs than this are left. */
#define RR_SPARE_LOW 32

struct rr_kfwd;

struct rr_engine {
    rr_config cfg;
    struct rr_kfwd *kfwd;      /* kernel fast path, NULL when off */
    char kfwd_status[512];     /* why it is off, or where it is attached */
    uint64_t kf_installs, kf_withdrawals; /* atomics */
    uint32_t kf_flows;         /* atomic */
    int backend;               /* RR_BACKEND_EPOLL or RR_BACKEND_IO_URING, never AUTO */
    rr_session *sessions;
    uint32_t capacity;
    uint32_t *free_slots;      /* stack */
    uint32_t nfree_slots;
    uint32_t nsessions;
    pthread_mutex_t ctl_lock;  /* slots and port pool */
    /* port pool: FIFO of even RTP ports with their release time */
    uint16_t *pool_port;
    int64_t *pool_released;
    uint32_t pool_cap, pool_head, pool_count;
    /* spare pairs, bound by the keeper thread (FIFO ring; under ctl_lock) */
    rr_spare spare[RR_SPARE_PAIRS];
    uint32_t spare_head, spare_count;
    uint64_t spare_hits, spare_misses, spare_drained;
    pthread_t keeper;
    int keeper_started;
    int keeper_stop;           /* under ctl_lock */
    pthread_cond_t keeper_cond; /* with ctl_lock: the keeper waits on it (CLOCK_MONOTONIC) */
    int keeper_binding;        /* the keeper took a pair off the FIFO and is binding it */
    pthread_cond_t spare_cond; /* with ctl_lock: allocate waits for that pair (see rr_session_alloc) */
    rr_worker *workers;
    int nworkers;
    int running;
    /* event queue to Python */
    pthread_mutex_t ev_lock;
    rr_event *evq;
    uint32_t ev_head, ev_count;
    uint64_t events_dropped;
    int event_fd;
};

/* ---- core helpers (relay_engine.c) used by both backends ---- */

static inline uint64_t rr_make_id(uint32_t slot, uint32_t gen)
{
    return ((uint64_t)(gen & RR_GEN_MASK) << 32) | slot;
}

static inline uint64_t rr_make_token(uint32_t slot, uint32_t gen, int leg, int rtcp)
{
    return rr_make_id(slot, gen) | ((uint64_t)leg << RR_TOKEN_LEG_SHIFT) | ((uint64_t)rtcp << RR_TOKEN_RTCP_SHIFT);
}

static inline socklen_t rr_addr_len(const rr_sockaddr *a)
{
    return a->sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* The live session a token names, or NULL if it was freed (and maybe reused) since. */
rr_session *rr_token_session(rr_engine *e, uint64_t token);

/* One datagram received on the socket `token` names: latch/accept the source,
 * account it (stats, DTMF events, drop counters) and choose where it goes.
 * Returns the destination and sets *out_fd to the socket to send it from, or
 * returns NULL when the packet is dropped (counted).  Caller holds w->lock;
 * `now` is the worker's clock for this batch. */
const rr_sockaddr *rr_relay_packet(rr_worker *w, rr_session *s, uint64_t token, const uint8_t *pkt,
                                   unsigned len, const rr_sockaddr *src, int truncated, int64_t now,
                                   int *out_fd);

/* Hand the kernel fast path what became eligible, at most every RR_KFWD_PASS_NS
 * and only while something waits for it (caller holds w->lock). */
void rr_kf_pass(rr_worker *w, int64_t now);

/* Media timeout scan over the worker's sessions (caller holds w->lock). */
void rr_scan_timeouts(rr_worker *w, int64_t now);

/* Thread setup common to both loops: publish the tid, timer slack, SCHED_FIFO, CPU pin. */
void rr_worker_thread_setup(rr_worker *w);

/* Count `ns` in a RR_LATE_BOUNDS_US histogram. */
void rr_note_timing(uint64_t *hist, int64_t ns);
/* CPU time of the calling thread (ns). */
int64_t rr_thread_cpu_ns(void);
/* Account one round that moved packets: wall time from `start` to `end`, of
 * which `cpu_ns` on the CPU (the rest: preempted or waiting for the lock). */
void rr_note_round(rr_worker *w, int64_t start, int64_t end, int64_t cpu_ns);

/* ---- io_uring backend (relay_uring.c) ---- */
#ifdef RR_HAVE_IO_URING
/* 0 if this kernel and process can run the io_uring loop, else -errno. */
int rr_uring_probe(void);
/* Worker thread body of the io_uring backend. */
void *rr_uring_worker_main(void *arg);
/* Allocation hook: the new session's sockets get receives armed (caller holds w->lock).
 * Returns 1 when the caller must call rr_uring_wake(w) once it has released the lock. */
int rr_uring_session_added(rr_worker *w, uint32_t slot, uint32_t gen);
/* Free hook: hand the session's sockets to the worker to cancel and close at its next
 * round (caller holds w->lock; it waits, releasing it, only while the queue is full). */
void rr_uring_session_closing(rr_worker *w, rr_session *s, uint32_t slot, uint32_t old_gen);
/* Wake the worker (caller holds w->lock and the ring is live) unless a wake-up is already
 * pending: it runs its queued control work. */
void rr_uring_kick(rr_worker *w);
/* The system call half of a wake-up that rr_uring_session_added asked for (no lock needed). */
void rr_uring_wake(rr_worker *w);
#endif

#endif
