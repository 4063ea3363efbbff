/*
 * io_uring backend of the relay engine (built when liburing is present).
 *
 * Why: with one socket per stream and 50 packets per second per stream, a
 * wakeup of the epoll loop finds about one datagram per ready socket, so it pays
 * a recvmmsg and a sendmmsg system call per packet.  Here
 *   - every relay socket carries one multishot IORING_OP_RECVMSG that lands its
 *     datagrams in a ring of provided buffers (no epoll, no receive syscalls);
 *   - the ring runs with DEFER_TASKRUN, so a packet arriving only queues work;
 *     the worker runs it (the actual receives) when it asks for completions;
 *   - every relayed datagram becomes one IORING_OP_SEND SQE (destination in
 *     addr2, completion skipped on success), and a batch's sends go out with one
 *     io_uring_enter.
 * The per-packet kernel UDP work (skb allocation, routing, delivery) is the
 * same as with epoll; what goes is the per-packet syscall, msghdr copying and
 * epoll bookkeeping.
 *
 * Buffer ownership: a received buffer is sent from in place.  Sends carry
 * MSG_DONTWAIT, so io_uring issues them inline during the submit and completes
 * them there (success, or -EAGAIN counted as a send error) instead of parking
 * them to retry later: once io_uring_submit has consumed every SQE, the data
 * has been copied into skbs and the buffers go back to the ring.
 *
 * Socket lifetime: a pending receive holds a reference on its socket, so
 * closing the fd would not release the port.  A freed session's sockets are
 * handed to the worker, which cancels their receives (by user_data), closes the
 * fds and runs the cancelled requests' completion before free() returns.
 *
 * The ring is SINGLE_ISSUER: only the worker thread touches it.  Control calls
 * queue work under the worker's mutex and write its eventfd, which a multishot
 * poll in the ring turns into a completion that wakes an idle worker.
 */
#define _GNU_SOURCE
#include "relay_internal.h"

#ifdef RR_HAVE_IO_URING

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* Provided receive buffers per worker (buffer rings need a power of two).  At
 * 200k pps a 20 ms stall queues 4000 datagrams; if the ring runs dry anyway the
 * affected receives end with -ENOBUFS and are re-armed once buffers come back
 * (the datagrams wait in their socket meanwhile, nothing is lost). */
#define RR_URING_BUFS 4096
#define RR_URING_BGID 0
/* Submission queue: one SQE per relayed packet of a batch (plus re-arms); a
 * fuller batch is submitted in pieces. */
#define RR_URING_SQ_ENTRIES 4096
/* Completion queue: every received datagram is a CQE (successful sends post
 * none), so room for every provided buffer plus control completions. */
#define RR_URING_CQ_ENTRIES (4 * RR_URING_BUFS)
/* Layout the kernel writes into a multishot recvmsg buffer: a struct
 * io_uring_recvmsg_out, the source address (msg_namelen bytes), the payload.
 * The payload room is RR_MAX_PACKET, so truncation matches the epoll backend. */
#define RR_URING_NAME_LEN ((unsigned)sizeof(rr_sockaddr))
#define RR_URING_BUF_LEN ((unsigned)sizeof(struct io_uring_recvmsg_out) + RR_URING_NAME_LEN + RR_MAX_PACKET)
#define RR_URING_BUF_STRIDE ((RR_URING_BUF_LEN + 63u) & ~63u) /* cache-line aligned */
/* user_data: a token (relay_internal.h) plus the request kind in bits 58.. */
#define RR_UD_KIND_SHIFT 58
enum { RR_UD_RECV = 1, RR_UD_SEND = 2, RR_UD_WAKE = 3, RR_UD_CANCEL = 4 };
/* Queued work items (socket wakeups) one io_uring_enter runs: the kernel's
 * IO_LOCAL_TW_DEFAULT_MAX (Linux 6.13+; older kernels run them all at once). */
#define RR_URING_TW_CHUNK 20
/* Chunks run per round: at most ~320 socket wakeups, like the epoll loop's 256
 * events per round, so a backlog cannot stretch one round (which holds the
 * worker's lock, and with SCHED_FIFO its CPU) beyond a few milliseconds. */
#define RR_URING_MAX_CHUNKS 16
/* On stop, how long the worker waits for its cancelled receives to complete. */
#define RR_URING_STOP_WAIT_NS (1000LL * 1000 * 1000)
#define RR_URING_STOP_STEP_NS (10LL * 1000 * 1000)
/* While control work keeps coming (calls being set up), an idle worker sleeps at most
 * this long and takes its queues then, so an allocation needs no wake-up: no eventfd write
 * and cross-CPU wake-up per call (39.8 -> 33.4 us of the signalling thread per allocation
 * in a 750/s loop; no difference measurable in full calls runs).  The cost is that a new
 * session's first datagrams may wait this long in its sockets (nothing is lost), and
 * 1/RR_URING_NAP_NS wake-ups a second of the warm worker itself. */
#define RR_URING_NAP_NS (10LL * 1000 * 1000)
/* How long after its last control work a worker keeps napping; then it sleeps until a
 * packet, a wake-up or its timeout scan, and the next allocation wakes it at once. */
#define RR_URING_WARM_NS (2000LL * 1000 * 1000)

typedef struct rr_uring {
    struct io_uring ring;
    uint64_t close_target;     /* close_done of the batch control_finish closes */
    struct io_uring_buf_ring *br;
    uint8_t *bufs;             /* RR_URING_BUFS buffers of RR_URING_BUF_STRIDE bytes */
    struct msghdr tmpl;        /* multishot recvmsg template: name room, no control */
    uint16_t held[RR_URING_SQ_ENTRIES]; /* buffers of sends not yet submitted */
    unsigned nheld;
    unsigned returned;         /* buffers re-added since the last ring advance */
    uint32_t armed;            /* multishot receives in flight */
    int wake_armed;            /* the wake eventfd poll is in flight */
    uint64_t *rearm;           /* tokens whose receive ended and must be re-armed */
    uint32_t nrearm, rearm_cap;
    int closing[RR_CLOSE_QUEUE]; /* freed sockets taken by control_prepare, to close */
} rr_uring;

static uint64_t user_data(int kind, uint64_t token) { return ((uint64_t)kind << RR_UD_KIND_SHIFT) | token; }

static int ring_flags(void)
{
    /* SINGLE_ISSUER + DEFER_TASKRUN: arrivals only queue work for the worker,
     * never interrupt it; SUBMIT_ALL: a bad SQE does not stall the ones after it. */
    return IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
           IORING_SETUP_SUBMIT_ALL;
}

static int ring_init(struct io_uring *ring, unsigned sq_entries, unsigned cq_entries)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = (unsigned)ring_flags();
    p.cq_entries = cq_entries;
    return io_uring_queue_init_params(sq_entries, ring, &p);
}

/* Register `entries` provided buffers' ring (page-aligned memory) as group RR_URING_BGID. */
static struct io_uring_buf_ring *buf_ring_register(struct io_uring *ring, unsigned entries, int *err)
{
    size_t bytes = entries * sizeof(struct io_uring_buf);
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
        *err = -errno;
        return NULL;
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)mem;
    reg.ring_entries = entries;
    reg.bgid = RR_URING_BGID;
    int rc = io_uring_register_buf_ring(ring, &reg, 0);
    if (rc < 0) {
        munmap(mem, bytes);
        *err = rc;
        return NULL;
    }
    struct io_uring_buf_ring *br = mem;
    io_uring_buf_ring_init(br);
    return br;
}

static void buf_ring_unregister(struct io_uring *ring, struct io_uring_buf_ring *br, unsigned entries)
{
    io_uring_unregister_buf_ring(ring, RR_URING_BGID);
    munmap(br, entries * sizeof(struct io_uring_buf));
}

/* Set up (and tear down) a ring and buffer ring of the worker's real sizes, so
 * that "auto" never picks a backend whose workers then fail to start (memory
 * limits, older kernels without DEFER_TASKRUN or the opcodes). */
static int probe_once(void)
{
    struct io_uring ring;
    int rc = ring_init(&ring, RR_URING_SQ_ENTRIES, RR_URING_CQ_ENTRIES);
    if (rc < 0)
        return rc; /* -ENOSYS (seccomp / old kernel), -EPERM (io_uring_disabled), -EINVAL (no DEFER_TASKRUN) */
    struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
    if (!probe) {
        io_uring_queue_exit(&ring);
        return -ENOMEM;
    }
    static const int needed[] = {IORING_OP_RECVMSG, IORING_OP_SEND, IORING_OP_POLL_ADD, IORING_OP_ASYNC_CANCEL};
    rc = 0;
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++)
        if (!io_uring_opcode_supported(probe, needed[i]))
            rc = -EOPNOTSUPP;
    io_uring_free_probe(probe);
    if (rc == 0) {
        struct io_uring_buf_ring *br = buf_ring_register(&ring, RR_URING_BUFS, &rc);
        if (br)
            buf_ring_unregister(&ring, br, RR_URING_BUFS);
    }
    io_uring_queue_exit(&ring);
    return rc;
}

int rr_uring_probe(void)
{
    /* The answer does not change while the process lives: probe once. */
    static atomic_int cached = 1; /* 1 = not probed yet, else 0 or -errno */
    int v = atomic_load(&cached);
    if (v == 1) {
        v = probe_once();
        atomic_store(&cached, v);
    }
    return v;
}

/* ------------------------------------------------------------ ring setup */

static void uring_close(rr_uring *u)
{
    if (!u)
        return;
    if (u->br)
        buf_ring_unregister(&u->ring, u->br, RR_URING_BUFS);
    if (u->ring.ring_fd > 0)
        io_uring_queue_exit(&u->ring);
    if (u->bufs)
        munmap(u->bufs, (size_t)RR_URING_BUFS * RR_URING_BUF_STRIDE);
    free(u->rearm);
    free(u);
}

/* Build the worker's ring in the worker thread (the ring's single issuer). */
static rr_uring *uring_open(uint32_t capacity, int *err)
{
    rr_uring *u = calloc(1, sizeof(*u));
    if (!u) {
        *err = -ENOMEM;
        return NULL;
    }
    u->rearm_cap = 4 * capacity; /* at most one pending re-arm per socket */
    u->rearm = calloc(u->rearm_cap, sizeof(uint64_t));
    u->bufs = mmap(NULL, (size_t)RR_URING_BUFS * RR_URING_BUF_STRIDE, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (u->bufs == MAP_FAILED) {
        u->bufs = NULL;
        *err = -errno;
        goto fail;
    }
    if (!u->rearm) {
        *err = -ENOMEM;
        goto fail;
    }
    *err = ring_init(&u->ring, RR_URING_SQ_ENTRIES, RR_URING_CQ_ENTRIES);
    if (*err < 0) {
        u->ring.ring_fd = -1;
        goto fail;
    }
    io_uring_register_ring_fd(&u->ring); /* optional: saves an fd lookup per enter */
    u->br = buf_ring_register(&u->ring, RR_URING_BUFS, err);
    if (!u->br)
        goto fail;
    int mask = io_uring_buf_ring_mask(RR_URING_BUFS);
    for (unsigned i = 0; i < RR_URING_BUFS; i++)
        io_uring_buf_ring_add(u->br, u->bufs + (size_t)i * RR_URING_BUF_STRIDE, RR_URING_BUF_LEN,
                              (unsigned short)i, mask, (int)i);
    io_uring_buf_ring_advance(u->br, RR_URING_BUFS);
    memset(&u->tmpl, 0, sizeof(u->tmpl));
    u->tmpl.msg_namelen = RR_URING_NAME_LEN;
    *err = 0;
    return u;
fail:
    uring_close(u);
    return NULL;
}

/* ------------------------------------------------------------ buffers */

static void buffer_return(rr_uring *u, unsigned bid)
{
    io_uring_buf_ring_add(u->br, u->bufs + (size_t)bid * RR_URING_BUF_STRIDE, RR_URING_BUF_LEN,
                          (unsigned short)bid, io_uring_buf_ring_mask(RR_URING_BUFS), (int)u->returned);
    u->returned++;
}

/* Make the buffers returned since the last call visible to the kernel. */
static void buffers_publish(rr_uring *u)
{
    if (u->returned) {
        io_uring_buf_ring_advance(u->br, (int)u->returned);
        u->returned = 0;
    }
}

/* ------------------------------------------------------------ submission */

/* Buffers of submitted sends go back to the ring once every prepared SQE was
 * consumed: the sends among them have run by then (see the header comment). */
static void release_sent(rr_uring *u)
{
    if (io_uring_sq_ready(&u->ring) == 0) {
        for (unsigned i = 0; i < u->nheld; i++)
            buffer_return(u, u->held[i]);
        u->nheld = 0;
    }
    buffers_publish(u);
}

/* Submit every prepared SQE (one io_uring_enter for the whole batch). */
static void flush(rr_worker *w, rr_uring *u)
{
    while (io_uring_sq_ready(&u->ring) > 0) {
        int r = io_uring_submit(&u->ring);
        w->send_calls++;
        if (r > 0 || r == -EINTR)
            continue;
        break; /* -EBUSY/-EAGAIN (completions backed up): retried after the next drain */
    }
    release_sent(u);
}

/* Submit what is prepared and run queued receives in the same io_uring_enter.
 * The kernel runs at most IO_LOCAL_TW_DEFAULT_MAX (20, since Linux 6.13) queued
 * work items per enter, so callers repeat until a call brings nothing new. */
static void submit_and_run(rr_worker *w, rr_uring *u)
{
    if (io_uring_sq_ready(&u->ring) > 0)
        w->send_calls++;
    io_uring_submit_and_get_events(&u->ring);
    release_sent(u);
}

/* An SQE, submitting the queue first if it is full; NULL if even that fails. */
static struct io_uring_sqe *get_sqe(rr_worker *w, rr_uring *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) {
        flush(w, u);
        sqe = io_uring_get_sqe(&u->ring);
    }
    return sqe;
}

static void queue_rearm(rr_uring *u, uint64_t token)
{
    if (u->nrearm < u->rearm_cap)
        u->rearm[u->nrearm++] = token;
}

/* Arm the multishot receive of one socket; if the SQ cannot take it now, the
 * token waits in the re-arm list for the next round. */
static void arm_receive(rr_worker *w, rr_uring *u, uint64_t token, int fd)
{
    struct io_uring_sqe *sqe = get_sqe(w, u);
    if (!sqe) {
        queue_rearm(u, token);
        return;
    }
    /* MSG_TRUNC: an oversized datagram reports its real length and the flag, so
     * it is dropped and counted as truncated, as with recvmmsg. */
    io_uring_prep_recvmsg_multishot(sqe, fd, &u->tmpl, MSG_TRUNC);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = RR_URING_BGID;
    io_uring_sqe_set_data64(sqe, user_data(RR_UD_RECV, token));
    u->armed++;
}

static void arm_session(rr_worker *w, rr_uring *u, rr_session *s, uint32_t slot)
{
    for (int l = 0; l < 2; l++) {
        arm_receive(w, u, rr_make_token(slot, s->gen, l, 0), s->leg[l].rtp.fd);
        arm_receive(w, u, rr_make_token(slot, s->gen, l, 1), s->leg[l].rtcp.fd);
    }
}

static void arm_wake(rr_worker *w, rr_uring *u)
{
    struct io_uring_sqe *sqe = get_sqe(w, u);
    if (!sqe)
        return;
    io_uring_prep_poll_multishot(sqe, w->wake_fd, POLLIN);
    io_uring_sqe_set_data64(sqe, user_data(RR_UD_WAKE, 0));
    u->wake_armed = 1;
}

/* Queue one relayed datagram; its buffer stays held until the SQE is submitted. */
static void queue_send(rr_worker *w, rr_uring *u, rr_session *s, uint64_t token, int fd, const uint8_t *data,
                       unsigned len, const rr_sockaddr *dst, unsigned bid)
{
    rr_leg *in = &s->leg[(token >> RR_TOKEN_LEG_SHIFT) & 1];
    struct io_uring_sqe *sqe = get_sqe(w, u);
    if (!sqe || u->nheld == RR_URING_SQ_ENTRIES) {
        in->send_errors++;
        buffer_return(u, bid);
        return;
    }
    io_uring_prep_send(sqe, fd, data, len, MSG_DONTWAIT);
    /* the kernel copies the address while issuing the send, inside the submit,
     * and the session cannot change meanwhile: the worker holds its lock */
    io_uring_prep_send_set_addr(sqe, &dst->sa, (uint16_t)rr_addr_len(dst));
    io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
    io_uring_sqe_set_data64(sqe, user_data(RR_UD_SEND, token));
    u->held[u->nheld++] = (uint16_t)bid;
    /* counted as forwarded now; a failure's completion takes it back */
    in->forwarded++;
    w->packets_out++;
}

/* ------------------------------------------------------------ completions */

/* One receive completion: returns 1 if it carried a datagram. */
static unsigned on_receive(rr_worker *w, rr_uring *u, const struct io_uring_cqe *cqe, uint64_t token, int64_t now)
{
    rr_session *s = rr_token_session(w->engine, token);
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        /* the multishot request ended: -ENOBUFS (ring dry), an error, or cancelled */
        u->armed--;
        if (s && cqe->res != -ECANCELED)
            queue_rearm(u, token);
    }
    if (cqe->res < 0) {
        if (cqe->res != -ECANCELED && cqe->res != -ENOBUFS)
            w->recv_errors++;
        return 0;
    }
    if (!(cqe->flags & IORING_CQE_F_BUFFER))
        return 0;
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    uint8_t *buf = u->bufs + (size_t)bid * RR_URING_BUF_STRIDE;
    w->recv_calls++;
    struct io_uring_recvmsg_out *o = s ? io_uring_recvmsg_validate(buf, cqe->res, &u->tmpl) : NULL;
    if (!o) { /* a late datagram of a freed session, or a malformed completion */
        buffer_return(u, bid);
        return s ? 1 : 0;
    }
    rr_sockaddr src;
    unsigned namelen = o->namelen < RR_URING_NAME_LEN ? o->namelen : RR_URING_NAME_LEN;
    memcpy(&src, io_uring_recvmsg_name(o), namelen);
    if (namelen < sizeof(src))
        memset((uint8_t *)&src + namelen, 0, sizeof(src) - namelen);
    uint8_t *payload = io_uring_recvmsg_payload(o, &u->tmpl);
    unsigned len = io_uring_recvmsg_payload_length(o, cqe->res, &u->tmpl);
    int fd;
    const rr_sockaddr *dst =
        rr_relay_packet(w, s, token, payload, len, &src, (o->flags & MSG_TRUNC) != 0, now, &fd);
    if (dst)
        queue_send(w, u, s, token, fd, payload, len, dst, bid);
    else
        buffer_return(u, bid);
    return 1;
}

static void on_send_failed(rr_worker *w, uint64_t token)
{
    rr_session *s = rr_token_session(w->engine, token);
    w->packets_out--;
    if (!s)
        return;
    rr_leg *in = &s->leg[(token >> RR_TOKEN_LEG_SHIFT) & 1];
    in->forwarded--;
    in->send_errors++; /* socket buffer full (-EAGAIN) or an ICMP error, as with sendmmsg */
}

/* Handle every completion waiting in the CQ; returns the datagrams received. */
static unsigned drain(rr_worker *w, rr_uring *u, int64_t now)
{
    unsigned head, seen = 0, packets = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&u->ring, head, cqe)
    {
        seen++;
        uint64_t token = cqe->user_data & RR_TOKEN_MASK;
        switch ((int)(cqe->user_data >> RR_UD_KIND_SHIFT)) {
        case RR_UD_RECV:
            packets += on_receive(w, u, cqe, token, now);
            break;
        case RR_UD_SEND: /* only failures complete (IOSQE_CQE_SKIP_SUCCESS) */
            if (cqe->res < 0)
                on_send_failed(w, token);
            break;
        case RR_UD_WAKE: {
            uint64_t v;
            ssize_t r = read(w->wake_fd, &v, sizeof(v)); /* reset the counter: the next write re-triggers */
            (void)r;
            if (!(cqe->flags & IORING_CQE_F_MORE))
                u->wake_armed = 0;
            break;
        }
        default: /* RR_UD_CANCEL: how many were cancelled; nothing to do */
            break;
        }
    }
    io_uring_cq_advance(&u->ring, seen);
    buffers_publish(u);
    return packets;
}

/* ------------------------------------------------------------ control work */

/* Control work, in two steps so that the signalling thread's control calls
 * (allocate, set_peer, free) do not wait behind the worker's system calls:
 * control_prepare, under w->lock, takes the queued work and prepares its SQEs
 * (cancels for freed sessions' receives, receives for new sessions' sockets,
 * ended receives re-armed, the wake poll); control_finish, without the lock,
 * submits them, closes the freed sockets and runs the cancellations.
 * Only the worker touches its ring, and only the worker closes queued sockets,
 * so a session freed between the two steps is cancelled and closed in the next
 * round, after its receives were armed here.  Returns how many sockets
 * control_finish must close (they wait in u->closing). */
static uint32_t control_prepare(rr_worker *w, rr_uring *u)
{
    uint32_t nclose = 0;
    w->kick_pending = 0; /* the queues are taken now: later work needs a wake-up of its own */
    w->wake_owed = 0;    /* and a deferred one would find nothing to do */
    if (w->nclosing) {
        for (uint32_t i = 0; i < w->nclosing; i++) {
            struct io_uring_sqe *sqe = get_sqe(w, u);
            if (!sqe)
                break;
            io_uring_prep_cancel64(sqe, user_data(RR_UD_RECV, w->closing[i].token), IORING_ASYNC_CANCEL_ALL);
            io_uring_sqe_set_data64(sqe, user_data(RR_UD_CANCEL, 0));
        }
        for (uint32_t i = 0; i < w->nclosing; i++)
            u->closing[i] = w->closing[i].fd;
        nclose = w->nclosing;
        w->nclosing = 0;
        w->close_done = w->close_requested;
        u->close_target = w->close_done;
        pthread_cond_broadcast(&w->cond); /* free() callers waiting for queue room */
    }
    for (uint32_t i = 0; i < w->narm; i++) {
        rr_session *s = rr_token_session(w->engine, w->arm_queue[i]);
        if (s)
            arm_session(w, u, s, (uint32_t)w->arm_queue[i]);
    }
    w->narm = 0;
    /* arm_receive may queue a token again if the SQ is full: it writes entry
     * u->nrearm, which never passes i, so unread entries are not overwritten */
    uint32_t nrearm = u->nrearm;
    u->nrearm = 0;
    for (uint32_t i = 0; i < nrearm; i++) {
        uint64_t token = u->rearm[i];
        rr_session *s = rr_token_session(w->engine, token);
        if (!s)
            continue;
        rr_leg *L = &s->leg[(token >> RR_TOKEN_LEG_SHIFT) & 1];
        arm_receive(w, u, token, ((token >> RR_TOKEN_RTCP_SHIFT) & 1) ? L->rtcp.fd : L->rtp.fd);
    }
    if (!u->wake_armed)
        arm_wake(w, u);
    return nclose;
}

static void control_finish(rr_worker *w, rr_uring *u, uint32_t nclose)
{
    flush(w, u); /* cancellation of a poll-armed receive is decided inside the submit */
    if (nclose) {
        for (uint32_t i = 0; i < nclose; i++)
            close(u->closing[i]);
        /* run the cancelled requests' completion: that drops their socket
         * references, and the sockets are released on the way back to user space */
        io_uring_get_events(&u->ring);
        __atomic_store_n(&w->close_finished, u->close_target, __ATOMIC_RELEASE);
    }
}

/* Both steps under the lock the caller holds (start-up and shutdown). */
static void control(rr_worker *w, rr_uring *u)
{
    control_finish(w, u, control_prepare(w, u));
}

int rr_uring_session_added(rr_worker *w, uint32_t slot, uint32_t gen)
{
    if (!w->ring_live)
        return 0; /* the worker arms every active session when it starts */
    w->arm_queue[w->narm++] = rr_make_id(slot, gen);
    /* one wake-up per batch of control work: a pending one will see this too */
    if (w->kick_pending)
        return 0;
    /* A worker that is napping takes its queues within RR_URING_NAP_NS anyway: the new
     * sockets' first datagrams wait in them that long at most, and nobody pays a wake-up.
     * Under call load that is every allocation (see RR_URING_NAP_NS). */
    if (w->napping) {
        w->control_naps++;
        return 0;
    }
    /* The write itself waits until the caller has dropped w->lock: the woken worker goes
     * straight for that lock, and finding it held it slept on it and the caller paid a
     * futex wake on unlock (2.3 % of the signalling thread at 1,400 calls/s per worker,
     * py-spy --native, on top of the write). */
    w->kick_pending = 1;
    return 1;
}

void rr_uring_session_closing(rr_worker *w, rr_session *s, uint32_t slot, uint32_t old_gen)
{
    /* back-pressure only: the queue is full until the worker's next drain */
    while (w->ring_live && w->nclosing + 4 > RR_CLOSE_QUEUE) {
        rr_uring_kick(w);
        pthread_cond_wait(&w->cond, &w->lock);
    }
    if (!w->ring_live) { /* the worker stopped meanwhile: nothing holds the sockets */
        for (int l = 0; l < 2; l++) {
            close(s->leg[l].rtp.fd);
            close(s->leg[l].rtcp.fd);
            s->leg[l].rtp.fd = s->leg[l].rtcp.fd = -1;
        }
        return;
    }
    /* Only a queue past half full wakes the worker (a wake-up already pending covers it):
     * otherwise the sockets are closed at its next round, within
     * RR_TIMEOUT_SCAN_NS when idle and RR_POLL_INTERVAL while media flows.  A wake-up per
     * free() was a system call and a cross-CPU wake-up per call on the signalling thread
     * (about 2.5 % of it at 1,000 calls/s, py-spy --native).  Nothing waits for these
     * closes except an allocation that finds only such ports: wait_for_closes() kicks. */
    for (int l = 0; l < 2; l++) {
        w->closing[w->nclosing++] = (rr_closing){s->leg[l].rtp.fd, rr_make_token(slot, old_gen, l, 0)};
        w->closing[w->nclosing++] = (rr_closing){s->leg[l].rtcp.fd, rr_make_token(slot, old_gen, l, 1)};
        s->leg[l].rtp.fd = s->leg[l].rtcp.fd = -1;
    }
    ++w->close_requested;
    if (w->nclosing >= RR_CLOSE_QUEUE / 2)
        rr_uring_kick(w);
    /* No waiting for the worker: the ports sit in quarantine far longer than the worker takes
     * to cancel and close (it drains the queue on its next wake-up, and before the ring stops),
     * and a round trip to the worker thread on every free() cost the signalling thread ~0.25 ms
     * per call under load (py-spy, 300 calls/s through sbc run). */
}

void rr_uring_kick(rr_worker *w)
{
    if (w->kick_pending && !w->wake_owed)
        return; /* the worker has not taken its queues since: it sees this work too */
    w->kick_pending = 1;
    w->wake_owed = 0;
    rr_uring_wake(w);
}

void rr_uring_wake(rr_worker *w)
{
    uint64_t one = 1;
    __atomic_fetch_add(&w->control_wakes, 1, __ATOMIC_RELAXED);
    ssize_t r = write(w->wake_fd, &one, sizeof(one));
    (void)r;
}

/* ------------------------------------------------------------ the loop */

static int64_t nap_until(int64_t t)
{
    struct timespec at = {.tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR)
        ;
    return rr_now_ns() - t;
}

/* Cancel everything in flight and wait (bounded) until it completed, so no
 * request keeps a socket alive once the ring is gone.  Caller holds w->lock. */
static void cancel_all(rr_worker *w, rr_uring *u)
{
    control(w, u); /* pending closes first: their free() callers are waiting */
    struct io_uring_sqe *sqe = get_sqe(w, u);
    if (sqe) {
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
        io_uring_sqe_set_data64(sqe, user_data(RR_UD_CANCEL, 0));
    }
    flush(w, u);
    int64_t deadline = rr_now_ns() + RR_URING_STOP_WAIT_NS;
    while ((u->armed > 0 || u->wake_armed) && rr_now_ns() < deadline) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = RR_URING_STOP_STEP_NS};
        io_uring_wait_cqe_timeout(&u->ring, &cqe, &ts);
        drain(w, u, rr_now_ns());
        u->nrearm = 0; /* stopping: nothing is re-armed */
        flush(w, u);   /* datagrams drained meanwhile are still relayed */
    }
}

void *rr_uring_worker_main(void *arg)
{
    rr_worker *w = arg;
    rr_engine *e = w->engine;
    rr_worker_thread_setup(w);
    int err;
    rr_uring *u = uring_open(e->capacity, &err);
    if (!u) {
        atomic_store(&w->start_state, err < 0 ? err : -EIO);
        return NULL;
    }
    pthread_mutex_lock(&w->lock);
    w->uring = u;
    w->ring_live = 1;
    w->narm = 0;
    w->kick_pending = 0;
    w->napping = 0;
    w->wake_owed = 0;
    for (uint32_t k = 0; k < w->nactive; k++)
        arm_session(w, u, &e->sessions[w->active[k]], w->active[k]);
    arm_wake(w, u);
    flush(w, u);
    pthread_mutex_unlock(&w->lock);
    atomic_store(&w->start_state, 1);

    int64_t poll_ns = e->cfg.poll_interval_ns;
    int64_t next_scan = rr_now_ns() + RR_TIMEOUT_SCAN_NS;
    int64_t poll_start = 0;
    int64_t warm_until = 0; /* nap rather than sleep until then (RR_URING_WARM_NS) */
    int busy = 0;
    int napping = 0;        /* what w->napping promised when the lock was last released */
    /* Same rhythm as the epoll loop: while traffic flows, nap poll_ns between
     * rounds (arrivals only queue deferred work meanwhile, nobody is woken);
     * when a round found nothing, block until a completion or the next scan. */
    while (!atomic_load(&w->stop)) {
        int64_t late = -1;
        if (busy) {
            int64_t next_poll = poll_start + poll_ns;
            if (next_poll > rr_now_ns())
                late = nap_until(next_poll);
        } else {
            int64_t wait_ns = next_scan - rr_now_ns();
            if (napping && wait_ns > RR_URING_NAP_NS)
                wait_ns = RR_URING_NAP_NS; /* the promise made to rr_uring_session_added */
            if (wait_ns > 0) {
                struct io_uring_cqe *cqe;
                struct __kernel_timespec ts = {.tv_sec = wait_ns / 1000000000LL, .tv_nsec = wait_ns % 1000000000LL};
                io_uring_wait_cqe_timeout(&u->ring, &cqe, &ts); /* runs a first chunk of receives */
            }
        }
        int64_t now = rr_now_ns(); /* one clock read per round, as in the epoll loop */
        int64_t cpu0 = rr_thread_cpu_ns();
        poll_start = now;
        pthread_mutex_lock(&w->lock);
        w->wakeups++;
        if (late >= 0)
            rr_note_timing(w->late_hist, late);
        /* Run the queued receives chunk by chunk; each enter also submits the
         * previous chunk's sends, so packets leave while later ones come in. */
        unsigned packets = drain(w, u, now);
        for (int chunk = 0; chunk < RR_URING_MAX_CHUNKS; chunk++) {
            unsigned before = io_uring_cq_ready(&u->ring);
            submit_and_run(w, u);
            unsigned got = io_uring_cq_ready(&u->ring) - before;
            packets += drain(w, u, now);
            /* A short chunk means the queue was empty: stop there rather than
             * chase datagrams that arrive meanwhile (that would busy-poll);
             * they are the next round's. */
            if (got < RR_URING_TW_CHUNK)
                break;
        }
        flush(w, u);
        /* The sends are submitted (the kernel has read their addresses from the
         * sessions): the rest of the round's system calls need no lock.  If the SQ
         * could not be emptied, sends are still queued and all stays locked. */
        int unlocked = io_uring_sq_ready(&u->ring) == 0;
        int had_control = w->narm > 0 || w->nclosing > 0;
        uint32_t nclose = control_prepare(w, u);
        if (!unlocked)
            control_finish(w, u, nclose);
        int64_t done = rr_now_ns();
        if (had_control)
            warm_until = done + RR_URING_WARM_NS;
        if (packets)
            rr_note_round(w, now, done, rr_thread_cpu_ns() - cpu0);
        if (done >= next_scan) {
            rr_scan_timeouts(w, done);
            next_scan = done + RR_TIMEOUT_SCAN_NS;
        }
        rr_kf_pass(w, done);
        busy = poll_ns > 0 && packets > 0;
        /* Either way the worker is back within RR_URING_NAP_NS: a busy nap of poll_ns, or
         * (warm) a wait bounded by the nap.  Set under the lock, so an allocation either sees
         * the promise or finds its session taken by this round's control_prepare. */
        napping = busy ? poll_ns <= RR_URING_NAP_NS : done < warm_until;
        w->napping = napping;
        pthread_mutex_unlock(&w->lock);
        if (unlocked)
            control_finish(w, u, nclose);
    }

    pthread_mutex_lock(&w->lock);
    cancel_all(w, u);
    w->ring_live = 0;
    w->uring = NULL;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    uring_close(u);
    return NULL;
}

#endif /* RR_HAVE_IO_URING */
