/* Native RTP relay engine: the core (sessions, port pool, packet accounting,
 * control API) and the epoll + recvmmsg/sendmmsg backend.  The io_uring backend
 * lives in relay_uring.c.  See relay_engine.h and relay_internal.h. */
#define _GNU_SOURCE
#include "relay_internal.h"
#include "relay_kfwd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/ip.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* epoll events taken per wakeup: enough to amortise epoll_wait over a few hundred
 * ready sockets at 200k pps, small enough to keep control-call waits short. */
#define RR_EPOLL_EVENTS 256
/* Python-bound events kept when Python does not drain them; beyond, dropped and counted. */
#define RR_EVENT_QUEUE_CAP 4096
/* Ports tried per allocation when a bind fails because another process owns the port. */
#define RR_BIND_ATTEMPTS 16
/* epoll data of a worker's wake eventfd. */
#define RR_WAKE_TOKEN UINT64_MAX
/* How long start() waits for each new worker to report it runs: 1 s in 100 us steps. */
#define RR_START_WAIT_STEPS 10000
#define RR_START_WAIT_STEP_NS 100000
/* The keeper's nap when it cannot bind (out of fds or memory) or the next port
 * leaves quarantine: no busier than this, whatever the release times. */
#define RR_KEEPER_RETRY_NS (1000LL * 1000)
#define RR_KEEPER_FAIL_RETRY_NS (100LL * 1000 * 1000)
/* Longest an allocation waits for io_uring workers to close freed sockets
 * (they do within one wake-up: microseconds to a few ms on a loaded machine). */
#define RR_CLOSE_WAIT_NS (50LL * 1000 * 1000)

/* A direction whose packet needed the worker (a telephone-event, RTP with an
 * extension) stays on the worker this long before the kernel takes it back: a
 * DTMF event lasts well under a second, and each hand-over costs two syscalls. */
#define RR_KFWD_BACKOFF_NS (1000LL * 1000 * 1000)
/* While a latched direction waits for the kernel (its socket queue not yet empty,
 * a back-off), the worker tries again this often: a call's first packets then
 * cross the workers for milliseconds, not the 100 ms of the timeout scan, which
 * matters when many calls start at once and the workers are the bottleneck. */
#define RR_KFWD_PASS_NS (5LL * 1000 * 1000)

static const int64_t late_bounds_us[RR_LATE_BUCKETS - 1] = RR_LATE_BOUNDS_US;

static void keeper_start(rr_engine *e);
static void keeper_stop(rr_engine *e);
static void close_spares(rr_engine *e);

int64_t rr_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int rr_parse_addr(const char *ip, uint16_t port, rr_sockaddr *out)
{
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, ip, &out->in4.sin_addr) == 1) {
        out->in4.sin_family = AF_INET;
        out->in4.sin_port = htons(port);
        return 0;
    }
    if (inet_pton(AF_INET6, ip, &out->in6.sin6_addr) == 1) {
        out->in6.sin6_family = AF_INET6;
        out->in6.sin6_port = htons(port);
        return 0;
    }
    return -1;
}

int rr_format_addr(const rr_sockaddr *a, char *buf, size_t buflen, uint16_t *port)
{
    if (a->sa.sa_family == AF_INET) {
        *port = ntohs(a->in4.sin_port);
        return inet_ntop(AF_INET, &a->in4.sin_addr, buf, (socklen_t)buflen) ? 0 : -1;
    }
    if (a->sa.sa_family == AF_INET6) {
        *port = ntohs(a->in6.sin6_port);
        return inet_ntop(AF_INET6, &a->in6.sin6_addr, buf, (socklen_t)buflen) ? 0 : -1;
    }
    return -1;
}

static int addr_eq(const rr_sockaddr *a, const rr_sockaddr *b)
{
    if (a->sa.sa_family != b->sa.sa_family)
        return 0;
    if (a->sa.sa_family == AF_INET)
        return a->in4.sin_port == b->in4.sin_port && a->in4.sin_addr.s_addr == b->in4.sin_addr.s_addr;
    if (a->sa.sa_family == AF_INET6)
        return a->in6.sin6_port == b->in6.sin6_port &&
               memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(a->in6.sin6_addr)) == 0;
    return 0;
}

/* ---------------------------------------------------------------- events */

static void push_event(rr_engine *e, const rr_event *ev)
{
    pthread_mutex_lock(&e->ev_lock);
    if (e->ev_count >= RR_EVENT_QUEUE_CAP) {
        e->events_dropped++;
        pthread_mutex_unlock(&e->ev_lock);
        return;
    }
    e->evq[(e->ev_head + e->ev_count) % RR_EVENT_QUEUE_CAP] = *ev;
    e->ev_count++;
    pthread_mutex_unlock(&e->ev_lock);
    uint64_t one = 1;
    ssize_t r = write(e->event_fd, &one, sizeof(one));
    (void)r; /* EAGAIN only when the counter is saturated: Python is woken anyway */
}

size_t rr_events_poll(rr_engine *e, rr_event *out, size_t max)
{
    uint64_t v;
    ssize_t r = read(e->event_fd, &v, sizeof(v)); /* clear readiness before draining */
    (void)r;
    pthread_mutex_lock(&e->ev_lock);
    size_t n = 0;
    while (n < max && e->ev_count) {
        out[n++] = e->evq[e->ev_head];
        e->ev_head = (e->ev_head + 1) % RR_EVENT_QUEUE_CAP;
        e->ev_count--;
    }
    int more = e->ev_count > 0;
    pthread_mutex_unlock(&e->ev_lock);
    if (more) { /* keep the fd readable so the caller comes back */
        uint64_t one = 1;
        r = write(e->event_fd, &one, sizeof(one));
        (void)r;
    }
    return n;
}

int rr_engine_event_fd(const rr_engine *e) { return e->event_fd; }

/* ---------------------------------------------------------------- packet path */

static int accept_source(rr_leg *in, rr_endpoint *ep, const rr_sockaddr *src)
{
    if (ep->latched.sa.sa_family)
        return addr_eq(&ep->latched, src);
    if (in->latch_mode == RR_LATCH_STRICT) {
        if (ep->signalled.sa.sa_family && addr_eq(&ep->signalled, src)) {
            ep->latched = *src;
            return 1;
        }
        return 0;
    }
    ep->latched = *src; /* symmetric RTP: the first packet tells the real (NATed) address */
    return 1;
}

static const rr_sockaddr *destination(const rr_endpoint *oep)
{
    if (oep->latched.sa.sa_family)
        return &oep->latched;
    if (oep->signalled.sa.sa_family)
        return &oep->signalled;
    return NULL;
}

static void emit_dtmf(rr_engine *e, rr_session *s, uint32_t slot, int leg, const rr_dtmf_event *d,
                      int64_t now)
{
    rr_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = RR_EVENT_DTMF;
    ev.session_id = rr_make_id(slot, s->gen);
    ev.at_ns = now;
    ev.leg = (uint8_t)leg;
    ev.event = d->event;
    ev.volume = d->volume;
    ev.duration = d->duration;
    ev.end_seen = d->end_seen;
    ev.ts = d->ts;
    ev.clock_rate = s->leg[leg].stats.clock_rate;
    push_event(e, &ev);
}

rr_session *rr_token_session(rr_engine *e, uint64_t token)
{
    uint32_t slot = (uint32_t)token;
    uint32_t gen = (uint32_t)(token >> 32) & RR_GEN_MASK;
    if (slot >= e->capacity)
        return NULL;
    rr_session *s = &e->sessions[slot];
    if (!s->in_use || (s->gen & RR_GEN_MASK) != gen)
        return NULL; /* freed (and maybe reused) since the wakeup was queued */
    return s;
}

/* ---------------------------------------------------------------- kernel fast path */

/* Take the kernel's copy of a direction's stats: its RTP fields are current, but
 * RTCP and non-RTP packets still reach the worker, which counted them in `user`. */
static void kf_merge(rr_stream_stats *user, const rr_stream_stats *kern)
{
    uint64_t rtcp_packets = user->rtcp_packets, rtcp_bytes = user->rtcp_bytes, non_rtp = user->non_rtp;
    *user = *kern;
    user->rtcp_packets = rtcp_packets;
    user->rtcp_bytes = rtcp_bytes;
    user->non_rtp = non_rtp;
}

/* Newest packet the kernel relayed for the direction from leg l's peer (0: none
 * in this session: the array slot may still hold a previous session's time). */
static int64_t kf_last_seen(const rr_engine *e, const rr_session *s, uint32_t slot, int l)
{
    if (!e->kfwd || !s->leg[l].kf_on)
        return 0;
    int64_t t = rr_kfwd_last_seen(e->kfwd, slot * 2 + (uint32_t)l);
    return t > s->created_ns ? t : 0;
}

static int64_t leg_last_packet(const rr_engine *e, const rr_session *s, uint32_t slot, int l)
{
    int64_t k = kf_last_seen(e, s, slot, l);
    return k > s->leg[l].last_packet_ns ? k : s->leg[l].last_packet_ns;
}

/* Give the direction from leg l's peer back to the worker (caller holds the
 * worker lock): the kernel's stats and counts come home. */
static void kf_withdraw(rr_engine *e, rr_session *s, uint32_t slot, int l)
{
    rr_leg *L = &s->leg[l];
    if (!L->kf_on)
        return;
    L->last_packet_ns = leg_last_packet(e, s, slot, l);
    rr_stream_stats kern;
    uint64_t fw = 0;
    if (rr_kfwd_withdraw(e->kfwd, L->rtp.local_port, &kern, &fw) == 0) {
        kf_merge(&L->stats, &kern);
        L->kf_forwarded += fw;
        L->forwarded += fw;
    }
    L->kf_on = 0;
    __atomic_fetch_sub(&e->kf_flows, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&e->kf_withdrawals, 1, __ATOMIC_RELAXED);
}

static void kf_withdraw_both(rr_engine *e, rr_session *s, uint32_t slot)
{
    kf_withdraw(e, s, slot, 0);
    kf_withdraw(e, s, slot, 1);
}

/* Take back from the kernel the directions of session `s` whose source or
 * destination moved or that no longer qualify, and (with `install`) hand it those
 * it can carry (caller holds the worker lock).  A direction qualifies when its
 * source is latched, the other leg has an address, both are IPv4, nothing taps or
 * replaces its audio, and no packet of it needed the worker within
 * RR_KFWD_BACKOFF_NS.  Installing waits for the worker's timeout scan and for an
 * empty socket queue: datagrams still queued would leave after the kernel's
 * newer ones, out of order. */
static int kf_refresh(rr_engine *e, rr_session *s, uint32_t slot, int64_t now, int install)
{
    int pending = 0;
    if (!e->kfwd)
        return 0;
    for (int l = 0; l < 2; l++) {
        rr_leg *in = &s->leg[l];
        rr_leg *out = &s->leg[l ^ 1];
        const rr_sockaddr *dst = destination(&out->rtp);
        int can = in->rtp.latched.sa.sa_family == AF_INET && dst && dst->sa.sa_family == AF_INET &&
                  !in->tap && !out->inject;
        int ok = can && now >= in->kf_block_until_ns;
        pending |= can && !ok;
        if (in->kf_on && (!ok || memcmp(&in->kf_src, &in->rtp.latched, sizeof(rr_sockaddr)) ||
                          memcmp(&in->kf_dst, dst, sizeof(rr_sockaddr))))
            kf_withdraw(e, s, slot, l);
        if (!ok || in->kf_on || !install)
            continue;
        int queued = 0;
        if (ioctl(in->rtp.fd, FIONREAD, &queued) == 0 && queued > 0) {
            pending = 1; /* the worker drains it first; the next pass tries again */
            continue;
        }
        if (rr_kfwd_install(e->kfwd, in->rtp.local_port, &in->rtp.latched, out->rtp.local_port, dst,
                            in->rtcp_mux, slot * 2 + (uint32_t)l, &in->stats) != 0) {
            in->kf_block_until_ns = now + RR_KFWD_BACKOFF_NS; /* map full or refused: later */
            pending = 1;
            continue;
        }
        in->kf_on = 1;
        in->kf_src = in->rtp.latched;
        in->kf_dst = *dst;
        __atomic_fetch_add(&e->kf_flows, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&e->kf_installs, 1, __ATOMIC_RELAXED);
    }
    return pending;
}

void rr_kf_pass(rr_worker *w, int64_t now)
{
    rr_engine *e = w->engine;
    if (!w->kf_pending || now < w->kf_next_pass_ns)
        return;
    w->kf_next_pass_ns = now + RR_KFWD_PASS_NS;
    w->kf_pending = 0;
    for (uint32_t k = 0; k < w->nactive; k++) {
        uint32_t slot = w->active[k];
        rr_session *s = &e->sessions[slot];
        if (!s->leg[0].kf_on || !s->leg[1].kf_on)
            w->kf_pending |= kf_refresh(e, s, slot, now, 1);
    }
}

/* A packet on leg `in`'s RTP port that the RTP accounting would count into the
 * sequence state (so the kernel's copy must come home first). */
static int touches_rtp_state(const rr_leg *in, const uint8_t *pkt, unsigned len)
{
    if (len < RR_RTP_HEADER_LEN || (pkt[0] >> 6) != 2)
        return 0;
    return !(in->rtcp_mux && pkt[1] >= RR_RTCP_MUX_PT_MIN && pkt[1] <= RR_RTCP_MUX_PT_MAX);
}

int rr_engine_kernel(const rr_engine *e, const char **why)
{
    *why = e->kfwd_status;
    return e->kfwd != NULL;
}

const rr_sockaddr *rr_relay_packet(rr_worker *w, rr_session *s, uint64_t token, const uint8_t *pkt,
                                   unsigned len, const rr_sockaddr *src, int truncated, int64_t now,
                                   int *out_fd)
{
    int leg = (int)((token >> RR_TOKEN_LEG_SHIFT) & 1);
    int rtcp = (int)((token >> RR_TOKEN_RTCP_SHIFT) & 1);
    rr_leg *in = &s->leg[leg];
    rr_leg *out = &s->leg[leg ^ 1];
    rr_endpoint *ep = rtcp ? &in->rtcp : &in->rtp;
    w->packets_in++;
    if (truncated) {
        in->truncated++;
        return NULL;
    }
    int was_latched = ep->latched.sa.sa_family != 0;
    if (!accept_source(in, ep, src)) {
        ep->unknown_source++;
        return NULL;
    }
    in->last_packet_ns = now;
    s->timeout_reported = 0;
    uint32_t slot = (uint32_t)token;
    if (!rtcp && in->kf_on && touches_rtp_state(in, pkt, len)) {
        /* The kernel left it to us (DTMF, RTP with extensions...): its stats come home
         * before this packet is counted, and it stays here a while. */
        kf_withdraw(w->engine, s, slot, leg);
        in->kf_block_until_ns = now + RR_KFWD_BACKOFF_NS;
        w->kf_pending = 1;
    }
    int kind;
    if (rtcp) {
        in->stats.rtcp_packets++;
        in->stats.rtcp_bytes += len;
        kind = RR_PKT_RTCP;
    } else {
        rr_dtmf_event dtmf[2];
        int nd = 0;
        kind = rr_stream_on_packet(&in->stats, pkt, len, now, in->rtcp_mux, dtmf, &nd);
        for (int k = 0; k < nd; k++)
            emit_dtmf(w->engine, s, (uint32_t)token, leg, &dtmf[k], now);
    }
    /* Next step (README.md): a tap on `in` copies the packet here, and an inject
     * source on `out` drops media packets here because it sends its own. */
    rr_endpoint *oep = &out->rtp;
    if (kind == RR_PKT_RTCP && !out->rtcp_mux)
        oep = &out->rtcp;
    if (!rtcp && !was_latched && w->engine->kfwd) {
        kf_refresh(w->engine, s, slot, now, 0); /* a source learned: a direction's destination moved */
        w->kf_pending = 1;                       /* and the kernel may take it soon (rr_kf_pass) */
    }
    const rr_sockaddr *dst = destination(oep);
    if (!dst) {
        in->no_destination++;
        return NULL;
    }
    *out_fd = oep->fd;
    return dst;
}

int64_t rr_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void rr_note_round(rr_worker *w, int64_t start, int64_t end, int64_t cpu_ns)
{
    rr_note_timing(w->work_hist, cpu_ns);
    rr_note_timing(w->stall_hist, end - start - cpu_ns);
}

void rr_note_timing(uint64_t *hist, int64_t ns)
{
    int64_t us = ns / 1000;
    int k = 0;
    while (k < RR_LATE_BUCKETS - 1 && us >= late_bounds_us[k])
        k++;
    hist[k]++;
}

/* ---------------------------------------------------------------- epoll backend */

/* Send the nout datagrams queued in w->smsgs, one sendmmsg per run of the same
 * socket (a socket per stream: usually one datagram per call). */
static void send_runs(rr_worker *w, rr_leg *in, int nout)
{
    int start = 0;
    while (start < nout) {
        int fd = w->out_fd[start];
        int end = start;
        while (end < nout && w->out_fd[end] == fd)
            end++;
        int pos = start;
        while (pos < end) {
            int r = sendmmsg(fd, &w->smsgs[pos], (unsigned)(end - pos), MSG_DONTWAIT);
            w->send_calls++;
            if (r <= 0) { /* buffer full or ICMP error: drop the rest of this run */
                in->send_errors += (uint64_t)(end - pos);
                break;
            }
            pos += r;
            in->forwarded += (uint64_t)r;
            w->packets_out += (uint64_t)r;
        }
        start = end;
    }
}

/* Drain one ready socket: recvmmsg, account and forward every datagram. */
static void process_socket(rr_worker *w, uint64_t token, int64_t now)
{
    rr_session *s = rr_token_session(w->engine, token);
    if (!s)
        return;
    int leg = (int)((token >> RR_TOKEN_LEG_SHIFT) & 1);
    int rtcp = (int)((token >> RR_TOKEN_RTCP_SHIFT) & 1);
    rr_leg *in = &s->leg[leg];
    rr_endpoint *ep = rtcp ? &in->rtcp : &in->rtp;

    /* recvmmsg rewrites msg_namelen and msg_flags of the entries it fills; reset
     * only those (the rest of each header was set up once in rr_engine_new). */
    for (int i = 0; i < RR_RECV_BATCH; i++) {
        w->rmsgs[i].msg_hdr.msg_namelen = sizeof(w->src[i]);
        w->rmsgs[i].msg_hdr.msg_flags = 0;
    }
    int n = recvmmsg(ep->fd, w->rmsgs, RR_RECV_BATCH, MSG_DONTWAIT, NULL);
    w->recv_calls++;
    if (n <= 0)
        return;
    int nout = 0;
    for (int i = 0; i < n; i++) {
        unsigned len = w->rmsgs[i].msg_len;
        int fd;
        const rr_sockaddr *dst = rr_relay_packet(w, s, token, w->buf[i], len, &w->src[i],
                                                 (w->rmsgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0, now, &fd);
        if (!dst)
            continue;
        struct mmsghdr *m = &w->smsgs[nout];
        w->siov[nout].iov_base = w->buf[i];
        w->siov[nout].iov_len = len;
        m->msg_hdr.msg_name = (void *)dst;
        m->msg_hdr.msg_namelen = rr_addr_len(dst);
        m->msg_hdr.msg_iov = &w->siov[nout];
        m->msg_hdr.msg_iovlen = 1;
        m->msg_hdr.msg_control = NULL;
        m->msg_hdr.msg_controllen = 0;
        m->msg_hdr.msg_flags = 0;
        w->out_fd[nout] = fd;
        nout++;
    }
    send_runs(w, in, nout);
}

/* When the session last showed life: a packet on either leg, or a restart of its idle clock. */
static inline int64_t session_last_activity(const rr_engine *e, const rr_session *s, uint32_t slot)
{
    int64_t last = s->idle_from_ns;
    for (int l = 0; l < 2; l++) {
        int64_t t = leg_last_packet(e, s, slot, l);
        if (t > last)
            last = t;
    }
    return last;
}

void rr_scan_timeouts(rr_worker *w, int64_t now)
{
    rr_engine *e = w->engine;
    for (uint32_t k = 0; k < w->nactive; k++) {
        uint32_t slot = w->active[k];
        rr_session *s = &e->sessions[slot];
        if (e->kfwd) {
            for (int l = 0; l < 2; l++) {
                int64_t t = kf_last_seen(e, s, slot, l);
                if (t > s->leg[l].last_packet_ns) { /* media flowed in the kernel */
                    s->leg[l].last_packet_ns = t;
                    s->timeout_reported = 0;
                }
            }
            if (!s->leg[0].kf_on || !s->leg[1].kf_on)
                w->kf_pending |= kf_refresh(e, s, slot, now, 1); /* a back-off ended, a restart */
        }
        if (s->timeout_reported)
            continue;
        int64_t limit = s->held ? s->hold_timeout_ns : s->timeout_ns;
        if (limit <= 0)
            continue;
        int64_t last = session_last_activity(e, s, slot);
        if (now - last < limit)
            continue;
        rr_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.type = RR_EVENT_TIMEOUT;
        ev.session_id = rr_make_id(slot, s->gen);
        ev.at_ns = now;
        ev.idle_ns = now - last;
        ev.held = s->held;
        push_event(e, &ev);
        s->timeout_reported = 1; /* once, until media flows again */
    }
}

void rr_worker_thread_setup(rr_worker *w)
{
    const rr_config *cfg = &w->engine->cfg;
    atomic_store(&w->tid, (int)syscall(SYS_gettid));
    if (cfg->poll_interval_ns > 0)
        prctl(PR_SET_TIMERSLACK, RR_TIMER_SLACK_NS);
    if (cfg->ncpus > 0) {
        /* Pinning keeps the worker's cache and its sockets' softirq work on one
         * core; it only helps when that core is not also the load's. */
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cfg->cpus[w->index % cfg->ncpus], &set);
        atomic_store(&w->pinned, pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0);
    }
    if (cfg->rt_priority > 0) {
        /* Media before everything else on the box (needs CAP_SYS_NICE); the naps
         * keep a FIFO worker from monopolising its core, and the kernel's RT
         * throttling (sched_rt_runtime_us) caps it anyway. */
        struct sched_param sp = {.sched_priority = cfg->rt_priority};
        atomic_store(&w->realtime, pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0);
    }
}

/* Sleep until `t` (CLOCK_MONOTONIC ns) and return how late the sleep ended. */
static int64_t nap_until(int64_t t)
{
    struct timespec at = {.tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR)
        ;
    return rr_now_ns() - t;
}

static void *epoll_worker_main(void *arg)
{
    rr_worker *w = arg;
    rr_worker_thread_setup(w);
    atomic_store(&w->start_state, 1);
    struct epoll_event evs[RR_EPOLL_EVENTS];
    int64_t next_scan = rr_now_ns() + RR_TIMEOUT_SCAN_NS;
    int64_t poll_ns = w->engine->cfg.poll_interval_ns;
    int busy = 0;
    /* The wakeup a sender pays to rouse a thread blocked in epoll_wait costs more
     * than the packet itself (a cross-CPU IPI, and a VM exit under a hypervisor).
     * So while traffic flows the worker naps poll_ns between non-blocking polls
     * (packets then wait at most poll_ns); when a poll finds nothing it blocks. */
    int64_t poll_start = 0;
    while (!atomic_load(&w->stop)) {
        int timeout_ms;
        int64_t late = -1;
        if (busy) {
            /* Poll once per interval: nap only for what the last round's work left
             * of it, so under heavy load the worker polls back to back. */
            int64_t next_poll = poll_start + poll_ns;
            if (next_poll > rr_now_ns())
                late = nap_until(next_poll);
            timeout_ms = 0;
        } else {
            int64_t wait_ns = next_scan - rr_now_ns();
            timeout_ms = wait_ns <= 0 ? 0 : (int)((wait_ns + 999999) / 1000000);
        }
        int n = epoll_wait(w->epfd, evs, RR_EPOLL_EVENTS, timeout_ms);
        if (n < 0 && errno != EINTR)
            break;
        /* One clock read per batch: arrival time, latch/idle bookkeeping and the
         * timeout scan all use it (packets waited up to poll_ns anyway). */
        int64_t now = rr_now_ns();
        int64_t cpu0 = n > 0 ? rr_thread_cpu_ns() : 0;
        poll_start = now;
        busy = poll_ns > 0 && n > 0;
        pthread_mutex_lock(&w->lock);
        w->wakeups++;
        if (late >= 0)
            rr_note_timing(w->late_hist, late);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == RR_WAKE_TOKEN) {
                uint64_t v;
                ssize_t r = read(w->wake_fd, &v, sizeof(v));
                (void)r;
                continue;
            }
            process_socket(w, evs[i].data.u64, now);
        }
        int64_t done = rr_now_ns();
        if (n > 0)
            rr_note_round(w, now, done, rr_thread_cpu_ns() - cpu0);
        if (done >= next_scan) {
            rr_scan_timeouts(w, done);
            next_scan = done + RR_TIMEOUT_SCAN_NS;
        }
        rr_kf_pass(w, done);
        pthread_mutex_unlock(&w->lock);
    }
    return NULL;
}

/* ---------------------------------------------------------------- engine */

static void raise_nofile_limit(void)
{
    /* 4 sockets per session (RTP+RTCP per leg): the default soft limit of 1024
     * would cap the relay near 250 calls, so take whatever the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int rr_io_uring_built(void)
{
#ifdef RR_HAVE_IO_URING
    return 1;
#else
    return 0;
#endif
}

int rr_io_uring_status(void)
{
#ifdef RR_HAVE_IO_URING
    return rr_uring_probe();
#else
    return -ENOSYS;
#endif
}

/* Resolve cfg->backend to the one this engine runs; RR_ERR_UNSUPPORTED (errno
 * set) when io_uring was asked for explicitly and cannot run here. */
static int choose_backend(int requested, int *backend)
{
    if (requested == RR_BACKEND_EPOLL) {
        *backend = RR_BACKEND_EPOLL;
        return RR_OK;
    }
    if (requested != RR_BACKEND_AUTO && requested != RR_BACKEND_IO_URING)
        return RR_ERR_ARG;
    int status = rr_io_uring_status();
    if (status == 0) {
        *backend = RR_BACKEND_IO_URING;
        return RR_OK;
    }
    if (requested == RR_BACKEND_IO_URING) {
        errno = -status;
        return RR_ERR_UNSUPPORTED;
    }
    *backend = RR_BACKEND_EPOLL; /* AUTO: the portable fallback */
    return RR_OK;
}

rr_engine *rr_engine_new(const rr_config *cfg, int *err)
{
    *err = RR_ERR_ARG;
    if (cfg->workers < 1 || cfg->workers > RR_MAX_WORKERS || cfg->max_sessions == 0 ||
        cfg->port_max < cfg->port_min || cfg->ncpus < 0 || cfg->ncpus > RR_MAX_WORKERS ||
        (cfg->bind_addr.sa.sa_family != AF_INET && cfg->bind_addr.sa.sa_family != AF_INET6))
        return NULL;
    for (int i = 0; i < cfg->ncpus; i++)
        if (cfg->cpus[i] < 0 || cfg->cpus[i] >= CPU_SETSIZE)
            return NULL;
    uint32_t first = (cfg->port_min + 1u) & ~1u;
    if (first == 0)
        first = 2; /* port 0 would mean "any" to bind() */
    uint32_t npairs = first + 1 > cfg->port_max ? 0 : (cfg->port_max - first + 1) / 2;
    if (npairs < 2)
        return NULL; /* a session needs two pairs */
    int backend;
    int rc = choose_backend(cfg->backend, &backend);
    if (rc != RR_OK) {
        *err = rc;
        return NULL;
    }
    rr_engine *e = calloc(1, sizeof(*e));
    if (!e) {
        *err = RR_ERR_SOCKET;
        return NULL;
    }
    e->cfg = *cfg;
    e->backend = backend;
    e->capacity = cfg->max_sessions;
    e->sessions = calloc(e->capacity, sizeof(rr_session));
    e->free_slots = calloc(e->capacity, sizeof(uint32_t));
    e->pool_cap = npairs;
    e->pool_port = calloc(npairs, sizeof(uint16_t));
    e->pool_released = calloc(npairs, sizeof(int64_t));
    e->evq = calloc(RR_EVENT_QUEUE_CAP, sizeof(rr_event));
    e->nworkers = cfg->workers;
    e->workers = calloc((size_t)cfg->workers, sizeof(rr_worker));
    e->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    *err = RR_ERR_SOCKET;
    if (!e->workers) {
        e->nworkers = 0;
        goto fail;
    }
    for (int i = 0; i < e->nworkers; i++) {
        e->workers[i].epfd = -1;
        e->workers[i].wake_fd = -1;
    }
    if (!e->sessions || !e->free_slots || !e->pool_port || !e->pool_released || !e->evq || e->event_fd < 0)
        goto fail;
    for (uint32_t i = 0; i < e->capacity; i++)
        e->free_slots[i] = e->capacity - 1 - i; /* pop gives slot 0 first */
    e->nfree_slots = e->capacity;
    for (uint32_t i = 0; i < npairs; i++) {
        e->pool_port[i] = (uint16_t)(first + 2 * i);
        e->pool_released[i] = INT64_MIN / 2; /* never used: no quarantine */
    }
    e->pool_count = npairs;
    pthread_mutex_init(&e->ctl_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the keeper's deadlines are rr_now_ns() */
    pthread_cond_init(&e->keeper_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&e->spare_cond, NULL);
    pthread_mutex_init(&e->ev_lock, NULL);
    for (int i = 0; i < e->nworkers; i++) {
        pthread_mutex_init(&e->workers[i].lock, NULL);
        pthread_cond_init(&e->workers[i].cond, NULL);
    }
    for (int i = 0; i < e->nworkers; i++) {
        rr_worker *w = &e->workers[i];
        w->engine = e;
        w->index = i;
        w->active = calloc(e->capacity, sizeof(uint32_t));
        w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (!w->active || w->wake_fd < 0)
            goto fail;
        if (backend == RR_BACKEND_IO_URING) {
            /* a slot is queued at most once between two worker iterations (free waits for one) */
            w->arm_queue = calloc(e->capacity, sizeof(uint64_t));
            if (!w->arm_queue)
                goto fail;
            continue;
        }
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (w->epfd < 0)
            goto fail;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = RR_WAKE_TOKEN};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wake_fd, &ev) < 0)
            goto fail;
        for (int k = 0; k < RR_RECV_BATCH; k++) {
            w->riov[k].iov_base = w->buf[k];
            w->riov[k].iov_len = RR_MAX_PACKET;
            w->rmsgs[k].msg_hdr.msg_name = &w->src[k];
            w->rmsgs[k].msg_hdr.msg_iov = &w->riov[k];
            w->rmsgs[k].msg_hdr.msg_iovlen = 1;
        }
    }
    raise_nofile_limit();
    if (cfg->kernel != RR_KERNEL_OFF) {
        /* Two flow entries per session slot: one per direction. */
        int rc = rr_kfwd_open(&cfg->bind_addr, e->capacity * 2, &e->kfwd, e->kfwd_status,
                              sizeof(e->kfwd_status));
        if (rc && cfg->kernel == RR_KERNEL_ON) {
            *err = RR_ERR_UNSUPPORTED;
            errno = -rc;
            goto fail;
        }
    } else {
        snprintf(e->kfwd_status, sizeof(e->kfwd_status), "off (asked for)");
    }
    *err = RR_OK;
    return e;
fail:
    rr_engine_free(e);
    return NULL;
}

int rr_engine_start(rr_engine *e)
{
    if (e->running)
        return RR_ERR_STATE;
    void *(*body)(void *) = epoll_worker_main;
#ifdef RR_HAVE_IO_URING
    if (e->backend == RR_BACKEND_IO_URING)
        body = rr_uring_worker_main;
#endif
    for (int i = 0; i < e->nworkers; i++) {
        rr_worker *w = &e->workers[i];
        atomic_store(&w->stop, 0);
        atomic_store(&w->start_state, 0);
        if (pthread_create(&w->thread, NULL, body, w) != 0) {
            rr_engine_stop(e);
            return RR_ERR_SOCKET;
        }
        w->started = 1;
    }
    /* Wait until every worker runs (its tid is published, so CPU accounting can
     * find it) or reports that it could not set up its ring. */
    int failed = 0;
    for (int i = 0; i < e->nworkers; i++) {
        rr_worker *w = &e->workers[i];
        for (int spin = 0; spin < RR_START_WAIT_STEPS && !atomic_load(&w->start_state); spin++) {
            struct timespec step = {.tv_sec = 0, .tv_nsec = RR_START_WAIT_STEP_NS};
            nanosleep(&step, NULL);
        }
        if (atomic_load(&w->start_state) < 0)
            failed = -atomic_load(&w->start_state);
    }
    if (failed) {
        rr_engine_stop(e);
        errno = failed;
        return RR_ERR_SOCKET;
    }
    keeper_start(e);
    e->running = 1;
    return RR_OK;
}

/* A stopped engine relays nothing: the kernel gives every direction back (the
 * workers' timeout scan hands them over again once the engine runs). */
static void kf_withdraw_all(rr_engine *e)
{
    if (!e->kfwd)
        return;
    for (int i = 0; i < e->nworkers; i++) {
        rr_worker *w = &e->workers[i];
        pthread_mutex_lock(&w->lock);
        for (uint32_t k = 0; k < w->nactive; k++)
            kf_withdraw_both(e, &e->sessions[w->active[k]], w->active[k]);
        pthread_mutex_unlock(&w->lock);
    }
}

void rr_engine_stop(rr_engine *e)
{
    keeper_stop(e);
    for (int i = 0; i < e->nworkers; i++) {
        rr_worker *w = &e->workers[i];
        if (!w->started)
            continue;
        atomic_store(&w->stop, 1);
        uint64_t one = 1;
        ssize_t r = write(w->wake_fd, &one, sizeof(one));
        (void)r;
        pthread_join(w->thread, NULL);
        w->started = 0;
        atomic_store(&w->tid, 0);
    }
    if (e->workers && e->sessions)
        kf_withdraw_all(e);
    e->running = 0;
}

static void close_session_fds(rr_session *s)
{
    for (int l = 0; l < 2; l++) {
        if (s->leg[l].rtp.fd >= 0)
            close(s->leg[l].rtp.fd);
        if (s->leg[l].rtcp.fd >= 0)
            close(s->leg[l].rtcp.fd);
        s->leg[l].rtp.fd = s->leg[l].rtcp.fd = -1;
    }
}

void rr_engine_free(rr_engine *e)
{
    if (!e)
        return;
    rr_engine_stop(e);
    rr_kfwd_close(e->kfwd);
    e->kfwd = NULL;
    if (e->sessions) {
        for (uint32_t i = 0; i < e->capacity; i++)
            if (e->sessions[i].in_use)
                close_session_fds(&e->sessions[i]);
    }
    if (e->pool_port)
        close_spares(e);
    if (e->workers) {
        for (int i = 0; i < e->nworkers; i++) {
            rr_worker *w = &e->workers[i];
            if (w->epfd >= 0)
                close(w->epfd);
            if (w->wake_fd >= 0)
                close(w->wake_fd);
            free(w->active);
            free(w->arm_queue);
            pthread_mutex_destroy(&w->lock);
            pthread_cond_destroy(&w->cond);
        }
    }
    if (e->event_fd >= 0)
        close(e->event_fd);
    free(e->workers);
    free(e->evq);
    free(e->pool_port);
    free(e->pool_released);
    free(e->free_slots);
    free(e->sessions);
    free(e);
}

/* ---------------------------------------------------------------- port pool */

static void pool_push(rr_engine *e, uint16_t port, int64_t released)
{
    uint32_t tail = (e->pool_head + e->pool_count) % e->pool_cap;
    e->pool_port[tail] = port;
    e->pool_released[tail] = released;
    e->pool_count++;
}

static int open_udp(rr_engine *e, uint16_t port)
{
    int fam = e->cfg.bind_addr.sa.sa_family;
    int fd = socket(fam, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (e->cfg.rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &e->cfg.rcvbuf, sizeof(int));
    if (e->cfg.sndbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &e->cfg.sndbuf, sizeof(int));
    if (e->cfg.tos >= 0) {
        if (fam == AF_INET)
            setsockopt(fd, IPPROTO_IP, IP_TOS, &e->cfg.tos, sizeof(int));
        else
            setsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &e->cfg.tos, sizeof(int));
    }
    rr_sockaddr a = e->cfg.bind_addr;
    if (fam == AF_INET)
        a.in4.sin_port = htons(port);
    else
        a.in6.sin6_port = htons(port);
    if (bind(fd, &a.sa, rr_addr_len(&a)) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* Take one quarantine-free even port and bind RTP (even) and RTCP (odd) on it.
 * Called with ctl_lock held. */
static int take_pair(rr_engine *e, int64_t now, rr_endpoint *rtp, rr_endpoint *rtcp)
{
    for (int attempt = 0; attempt < RR_BIND_ATTEMPTS; attempt++) {
        if (e->pool_count == 0)
            return RR_ERR_NO_PORTS;
        if (e->pool_released[e->pool_head] + e->cfg.quarantine_ns > now)
            return RR_ERR_NO_PORTS; /* FIFO: the oldest release is still in quarantine */
        uint16_t port = e->pool_port[e->pool_head];
        e->pool_head = (e->pool_head + 1) % e->pool_cap;
        e->pool_count--;
        int fd1 = open_udp(e, port);
        int fd2 = fd1 >= 0 ? open_udp(e, (uint16_t)(port + 1)) : -1;
        if (fd1 >= 0 && fd2 >= 0) {
            rtp->fd = fd1;
            rtp->local_port = port;
            rtcp->fd = fd2;
            rtcp->local_port = (uint16_t)(port + 1);
            return RR_OK;
        }
        if (fd1 >= 0)
            close(fd1);
        if (errno != EADDRINUSE && errno != EACCES)
            return RR_ERR_SOCKET;
        pool_push(e, port, now); /* someone else holds it: retry after a quarantine */
    }
    return RR_ERR_NO_PORTS;
}

/* ---------------------------------------------------------------- spare pairs */

/* Drop what was queued on a spare socket while no session owned it: a stray
 * datagram (a late stream of the port's previous call, a scan) must not be the
 * first packet a new session sees, or symmetric latching would learn its source. */
static uint64_t drain_stale(int fd)
{
    uint64_t n = 0;
    char b[1];
    while (recv(fd, b, sizeof(b), MSG_DONTWAIT | MSG_TRUNC) >= 0)
        n++;
    return n;
}

/* drain_stale() for the sockets of `n` endpoints, with one poll() to find the few that
 * hold anything (usually none): a recv() per socket was four system calls per call on
 * the signalling thread. */
static uint64_t drain_stale_all(const rr_endpoint *eps, int n)
{
    struct pollfd pfd[4];
    if (n <= 0 || n > 4)
        return 0;
    for (int i = 0; i < n; i++)
        pfd[i] = (struct pollfd){.fd = eps[i].fd, .events = POLLIN};
    if (poll(pfd, (nfds_t)n, 0) <= 0)
        return 0;
    uint64_t stale = 0;
    for (int i = 0; i < n; i++)
        if (pfd[i].revents & (POLLIN | POLLERR))
            stale += drain_stale(pfd[i].fd);
    return stale;
}

/* Take the oldest spare pair (caller holds ctl_lock; spare_count > 0). */
static void take_spare(rr_engine *e, rr_endpoint *rtp, rr_endpoint *rtcp)
{
    const rr_spare *sp = &e->spare[e->spare_head];
    rtp->fd = sp->rtp_fd;
    rtp->local_port = sp->port;
    rtcp->fd = sp->rtcp_fd;
    rtcp->local_port = (uint16_t)(sp->port + 1);
    e->spare_head = (e->spare_head + 1) % RR_SPARE_PAIRS;
    e->spare_count--;
}

static void close_spares(rr_engine *e)
{
    while (e->spare_count) {
        rr_endpoint a, b;
        take_spare(e, &a, &b);
        close(a.fd);
        close(b.fd);
        pool_push(e, a.local_port, INT64_MIN / 2); /* never used by a call */
    }
}

/* Bind spare pairs from the head of the port FIFO (ports out of quarantine, in
 * the order allocate would take them) until RR_SPARE_PAIRS are ready.  Returns
 * when it should run again: 0 = when signalled, else a monotonic time.  Caller
 * holds ctl_lock; the binds run without it. */
static int64_t keeper_fill(rr_engine *e)
{
    while (e->spare_count < RR_SPARE_PAIRS && !e->keeper_stop && e->pool_count) {
        int64_t now = rr_now_ns();
        int64_t ready = e->pool_released[e->pool_head] + e->cfg.quarantine_ns;
        if (ready > now) /* FIFO: the oldest release is still in quarantine */
            return e->spare_count < RR_SPARE_LOW ? ready : 0;
        uint16_t port = e->pool_port[e->pool_head];
        int64_t released = e->pool_released[e->pool_head];
        e->pool_head = (e->pool_head + 1) % e->pool_cap;
        e->pool_count--;
        e->keeper_binding = 1;
        pthread_mutex_unlock(&e->ctl_lock);
        int fd1 = open_udp(e, port);
        int fd2 = fd1 >= 0 ? open_udp(e, (uint16_t)(port + 1)) : -1;
        int err = errno;
        if (fd1 >= 0 && fd2 < 0)
            close(fd1);
        pthread_mutex_lock(&e->ctl_lock);
        e->keeper_binding = 0;
        pthread_cond_broadcast(&e->spare_cond); /* no system call unless an allocate waits */
        if (fd1 >= 0 && fd2 >= 0) {
            uint32_t tail = (e->spare_head + e->spare_count) % RR_SPARE_PAIRS;
            e->spare[tail] = (rr_spare){.rtp_fd = fd1, .rtcp_fd = fd2, .port = port};
            e->spare_count++;
        } else if (err == EADDRINUSE || err == EACCES) {
            pool_push(e, port, rr_now_ns()); /* someone else holds it: retry after a quarantine */
        } else {
            /* out of fds or socket memory: allocations bind their own meanwhile (and
             * fail the same way, answered 503); try again later */
            pool_push(e, port, released);
            return rr_now_ns() + RR_KEEPER_FAIL_RETRY_NS;
        }
    }
    return 0;
}

/* The keeper thread: keeps spare pairs bound so that allocate() does no socket
 * system calls on the (Python signalling) thread that calls it. */
static void *keeper_main(void *arg)
{
    rr_engine *e = arg;
    prctl(PR_SET_NAME, "rtp-keeper");
    pthread_mutex_lock(&e->ctl_lock);
    while (!e->keeper_stop) {
        int64_t again = keeper_fill(e);
        if (e->keeper_stop)
            break;
        if (again == 0) {
            pthread_cond_wait(&e->keeper_cond, &e->ctl_lock);
            continue;
        }
        int64_t floor = rr_now_ns() + RR_KEEPER_RETRY_NS;
        if (again < floor)
            again = floor;
        struct timespec at = {.tv_sec = again / 1000000000LL, .tv_nsec = again % 1000000000LL};
        pthread_cond_timedwait(&e->keeper_cond, &e->ctl_lock, &at);
    }
    pthread_mutex_unlock(&e->ctl_lock);
    return NULL;
}

static void keeper_start(rr_engine *e)
{
    pthread_mutex_lock(&e->ctl_lock);
    e->keeper_stop = 0;
    pthread_mutex_unlock(&e->ctl_lock);
    /* Without a keeper allocate() binds its own sockets: slower, not wrong. */
    e->keeper_started = pthread_create(&e->keeper, NULL, keeper_main, e) == 0;
}

static void keeper_stop(rr_engine *e)
{
    if (!e->keeper_started)
        return;
    pthread_mutex_lock(&e->ctl_lock);
    e->keeper_stop = 1;
    pthread_cond_signal(&e->keeper_cond);
    pthread_mutex_unlock(&e->ctl_lock);
    pthread_join(e->keeper, NULL);
    e->keeper_started = 0;
}

static void init_endpoint(rr_endpoint *ep)
{
    memset(ep, 0, sizeof(*ep));
    ep->fd = -1;
}

static rr_session *lookup(rr_engine *e, uint64_t id)
{
    uint32_t slot = (uint32_t)id;
    if (slot >= e->capacity || (id >> 56) != 0)
        return NULL;
    rr_session *s = &e->sessions[slot];
    if (!s->in_use || (s->gen & RR_GEN_MASK) != ((id >> 32) & RR_GEN_MASK))
        return NULL;
    return s;
}

/* Lock the worker owning session `id`; returns the session or NULL (nothing locked). */
static rr_session *lock_session(rr_engine *e, uint64_t id, rr_worker **wout)
{
    uint32_t slot = (uint32_t)id;
    if (slot >= e->capacity)
        return NULL;
    /* a slot always belongs to the same worker, so all its accesses share one lock */
    rr_worker *w = &e->workers[slot % (uint32_t)e->nworkers];
    pthread_mutex_lock(&w->lock);
    rr_session *s = lookup(e, id);
    if (!s) {
        pthread_mutex_unlock(&w->lock);
        return NULL;
    }
    *wout = w;
    return s;
}

/* How many freed sessions' sockets the io_uring workers have closed so far. */
static uint64_t closes_finished(rr_engine *e)
{
    uint64_t n = 0;
    for (int i = 0; i < e->nworkers; i++)
        n += __atomic_load_n(&e->workers[i].close_finished, __ATOMIC_ACQUIRE);
    return n;
}

/* io_uring: sockets of freed sessions are closed by their worker on its next
 * wake-up.  With a short quarantine an allocation can meet its own engine's
 * ports still bound; wait (bounded) for the workers to drain their close queues. */
static void wait_for_closes(rr_engine *e)
{
    for (int i = 0; i < e->nworkers; i++) {
        rr_worker *w = &e->workers[i];
        pthread_mutex_lock(&w->lock);
        uint64_t target = w->close_requested;
        int live = w->ring_live;
#ifdef RR_HAVE_IO_URING
        /* free() leaves the closes to the worker's next round: ask for it now */
        if (live && __atomic_load_n(&w->close_finished, __ATOMIC_ACQUIRE) < target)
            rr_uring_kick(w);
#endif
        pthread_mutex_unlock(&w->lock);
        int64_t until = rr_now_ns() + RR_CLOSE_WAIT_NS;
        while (live && __atomic_load_n(&w->close_finished, __ATOMIC_ACQUIRE) < target && rr_now_ns() < until) {
            struct timespec step = {.tv_sec = 0, .tv_nsec = RR_START_WAIT_STEP_NS};
            nanosleep(&step, NULL);
        }
    }
}

static int session_alloc_once(rr_engine *e, const rr_session_params *p, uint64_t *id_out);

int rr_engine_wake_owed(rr_engine *e)
{
    int woken = 0;
#ifdef RR_HAVE_IO_URING
    for (int i = 0; i < e->nworkers; i++) {
        rr_worker *w = &e->workers[i];
        pthread_mutex_lock(&w->lock);
        int owed = w->wake_owed;
        w->wake_owed = 0;
        pthread_mutex_unlock(&w->lock);
        if (owed) { /* kick_pending stays set: the worker clears it when it takes its queues */
            rr_uring_wake(w);
            woken++;
        }
    }
#else
    (void)e;
#endif
    return woken;
}

int rr_session_alloc(rr_engine *e, const rr_session_params *p, uint64_t *id_out)
{
    if (p->clock_rate == 0 || p->dtmf_pt > 127)
        return RR_ERR_ARG;
    if (e->backend != RR_BACKEND_IO_URING)
        return session_alloc_once(e, p, id_out);
    /* Retry once if a worker closed sockets since the attempt began: also when it
     * finished just before wait_for_closes looked (a port of ours found still bound
     * by the attempt, closed by the time of the wait: nothing left to wait for). */
    uint64_t closed = closes_finished(e);
    int rc = session_alloc_once(e, p, id_out);
    if (rc == RR_ERR_NO_PORTS) {
        wait_for_closes(e);
        if (closes_finished(e) != closed)
            rc = session_alloc_once(e, p, id_out);
    }
    return rc;
}

static int session_alloc_once(rr_engine *e, const rr_session_params *p, uint64_t *id_out)
{
    int64_t now = rr_now_ns();
    rr_endpoint eps[4];
    for (int i = 0; i < 4; i++)
        init_endpoint(&eps[i]);
    pthread_mutex_lock(&e->ctl_lock);
    if (e->nfree_slots == 0) {
        pthread_mutex_unlock(&e->ctl_lock);
        return RR_ERR_NO_SLOT;
    }
    /* Pre-bound spare pairs first (they are the oldest releases, so FIFO order holds). */
    int spared[2] = {0, 0};
    int rc = RR_OK;
    for (int l = 0; l < 2 && rc == RR_OK; l++) {
        /* A pair the keeper is binding is in neither the FIFO nor the spares: wait
         * for it (microseconds) rather than report a nearly full range exhausted. */
        while (!e->spare_count && e->keeper_binding)
            pthread_cond_wait(&e->spare_cond, &e->ctl_lock);
        if (e->spare_count) {
            take_spare(e, &eps[2 * l], &eps[2 * l + 1]);
            spared[l] = 1;
        } else {
            rc = take_pair(e, now, &eps[2 * l], &eps[2 * l + 1]);
        }
    }
    if (rc != RR_OK && eps[0].fd >= 0) {
        close(eps[0].fd);
        close(eps[1].fd);
        pool_push(e, eps[0].local_port, INT64_MIN / 2); /* never used by a call */
    }
    if (e->keeper_started && e->spare_count < RR_SPARE_LOW)
        pthread_cond_signal(&e->keeper_cond); /* no system call unless the keeper waits */
    if (rc != RR_OK) {
        e->spare_misses++;
        pthread_mutex_unlock(&e->ctl_lock);
        return rc;
    }
    if (spared[0] && spared[1])
        e->spare_hits++;
    else
        e->spare_misses++;
    uint32_t slot = e->free_slots[--e->nfree_slots];
    uint32_t worker = slot % (uint32_t)e->nworkers;
    e->nsessions++;
    pthread_mutex_unlock(&e->ctl_lock);

    /* the spared legs' endpoints are contiguous: both, leg A's (0-1) or leg B's (2-3) */
    uint64_t stale = drain_stale_all(&eps[spared[0] ? 0 : 2], 2 * (spared[0] + spared[1]));
    if (stale)
        __atomic_fetch_add(&e->spare_drained, stale, __ATOMIC_RELAXED);

    rr_worker *w = &e->workers[worker];
    pthread_mutex_lock(&w->lock);
    rr_session *s = &e->sessions[slot];
    uint32_t gen = s->gen;
    memset(s, 0, sizeof(*s));
    s->gen = gen;
    s->worker = (uint16_t)worker;
    s->created_ns = now;
    s->idle_from_ns = now;
    s->timeout_ns = p->timeout_ns >= 0 ? p->timeout_ns : e->cfg.default_timeout_ns;
    s->hold_timeout_ns = p->hold_timeout_ns >= 0 ? p->hold_timeout_ns : e->cfg.default_hold_timeout_ns;
    for (int l = 0; l < 2; l++) {
        rr_leg *L = &s->leg[l];
        L->rtp = eps[2 * l];
        L->rtcp = eps[2 * l + 1];
        rr_stream_init(&L->stats, p->clock_rate, p->dtmf_pt);
    }
    int ok = 1;
    for (int l = 0; l < 2 && ok && e->backend == RR_BACKEND_EPOLL; l++) {
        for (int r = 0; r < 2 && ok; r++) {
            struct epoll_event ev = {.events = EPOLLIN, .data.u64 = rr_make_token(slot, gen, l, r)};
            int fd = r ? s->leg[l].rtcp.fd : s->leg[l].rtp.fd;
            if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
                ok = 0;
        }
    }
    if (!ok) {
        /* closing the fds removes them from the epoll set */
        close_session_fds(s);
        s->gen++;
        pthread_mutex_unlock(&w->lock);
        pthread_mutex_lock(&e->ctl_lock);
        for (int l = 0; l < 2; l++)
            pool_push(e, eps[2 * l].local_port, INT64_MIN / 2);
        e->free_slots[e->nfree_slots++] = slot;
        e->nsessions--;
        pthread_mutex_unlock(&e->ctl_lock);
        return RR_ERR_SOCKET;
    }
    int wake = 0;
#ifdef RR_HAVE_IO_URING
    if (e->backend == RR_BACKEND_IO_URING)
        wake = rr_uring_session_added(w, slot, gen);
#endif
    s->worker_pos = w->nactive;
    w->active[w->nactive++] = slot;
    s->in_use = 1;
    if (wake && p->defer_wake) {
        w->wake_owed = 1; /* written by rr_engine_wake_owed(), with other allocations' */
        wake = 0;
    }
    pthread_mutex_unlock(&w->lock);
#ifdef RR_HAVE_IO_URING
    if (wake)
        rr_uring_wake(w);
#else
    (void)wake;
#endif
    *id_out = rr_make_id(slot, gen);
    return RR_OK;
}

/* Caller holds the worker lock; directions the kernel carries are read from it. */
static void fill_info(rr_engine *e, const rr_session *s, uint32_t slot, rr_session_info *o)
{
    memset(o, 0, sizeof(*o));
    o->held = s->held;
    o->created_ns = s->created_ns;
    o->timeout_ns = s->timeout_ns;
    o->hold_timeout_ns = s->hold_timeout_ns;
    for (int l = 0; l < 2; l++) {
        const rr_leg *L = &s->leg[l];
        rr_leg_info *li = &o->leg[l];
        li->rtp_port = L->rtp.local_port;
        li->rtcp_port = L->rtcp.local_port;
        li->signalled_rtp = L->rtp.signalled;
        li->signalled_rtcp = L->rtcp.signalled;
        li->latched_rtp = L->rtp.latched;
        li->latched_rtcp = L->rtcp.latched;
        li->rtcp_mux = L->rtcp_mux;
        li->latch_mode = L->latch_mode;
        li->last_packet_ns = leg_last_packet(e, s, slot, l);
        li->unknown_source = L->rtp.unknown_source + L->rtcp.unknown_source;
        li->forwarded = L->forwarded;
        li->kernel_forwarded = L->kf_forwarded;
        li->kernel = L->kf_on;
        li->no_destination = L->no_destination;
        li->send_errors = L->send_errors;
        li->truncated = L->truncated;
        rr_stream_stats st = L->stats;
        rr_stream_stats kern;
        uint64_t fw;
        if (L->kf_on && rr_kfwd_read(e->kfwd, L->rtp.local_port, &kern, &fw) == 0) {
            kf_merge(&st, &kern);
            li->forwarded += fw;
            li->kernel_forwarded += fw;
        }
        rr_stream_report_get(&st, &li->stats);
    }
}

int rr_session_free(rr_engine *e, uint64_t id, rr_session_info *final_info)
{
    rr_worker *w;
    rr_session *s = lock_session(e, id, &w);
    if (!s)
        return RR_ERR_NO_SESSION;
    kf_withdraw_both(e, s, (uint32_t)id);
    if (final_info)
        fill_info(e, s, (uint32_t)id, final_info);
    uint16_t ports[2] = {s->leg[0].rtp.local_port, s->leg[1].rtp.local_port};
    uint32_t slot = (uint32_t)id;
    uint32_t old_gen = s->gen;
    s->in_use = 0;
    s->gen++;
    uint32_t pos = s->worker_pos;
    uint32_t last = w->active[--w->nactive];
    w->active[pos] = last;
    e->sessions[last].worker_pos = pos;
#ifdef RR_HAVE_IO_URING
    if (e->backend == RR_BACKEND_IO_URING && w->ring_live) {
        /* The ring's receives hold the sockets open: the worker cancels them and
         * closes the fds on its next wake-up, well within the ports' quarantine. */
        rr_uring_session_closing(w, s, slot, old_gen);
    } else
#endif
    {
        (void)old_gen;
        close_session_fds(s); /* close() drops them from the epoll set */
    }
    pthread_mutex_unlock(&w->lock);

    int64_t now = rr_now_ns();
    pthread_mutex_lock(&e->ctl_lock);
    for (int l = 0; l < 2; l++)
        pool_push(e, ports[l], now); /* reusable after the quarantine */
    e->free_slots[e->nfree_slots++] = slot;
    e->nsessions--;
    pthread_mutex_unlock(&e->ctl_lock);
    return RR_OK;
}

int rr_session_set_peer(rr_engine *e, uint64_t id, int leg, const rr_peer *peer)
{
    if (leg != RR_LEG_A && leg != RR_LEG_B)
        return RR_ERR_ARG;
    if (peer->latch_mode != RR_LATCH_SYMMETRIC && peer->latch_mode != RR_LATCH_STRICT)
        return RR_ERR_ARG;
    rr_worker *w;
    rr_session *s = lock_session(e, id, &w);
    if (!s)
        return RR_ERR_NO_SESSION;
    kf_withdraw_both(e, s, (uint32_t)id); /* both directions read this leg's addresses */
    rr_leg *L = &s->leg[leg];
    L->rtp.signalled = peer->rtp;
    if (peer->rtcp.sa.sa_family) {
        L->rtcp.signalled = peer->rtcp;
    } else if (peer->rtp.sa.sa_family) {
        /* RFC 3550 11: RTCP on the next higher (odd) port */
        L->rtcp.signalled = peer->rtp;
        if (peer->rtp.sa.sa_family == AF_INET)
            L->rtcp.signalled.in4.sin_port = htons((uint16_t)(ntohs(peer->rtp.in4.sin_port) + 1));
        else
            L->rtcp.signalled.in6.sin6_port = htons((uint16_t)(ntohs(peer->rtp.in6.sin6_port) + 1));
    } else {
        memset(&L->rtcp.signalled, 0, sizeof(L->rtcp.signalled));
    }
    L->rtcp_mux = peer->rtcp_mux;
    L->latch_mode = peer->latch_mode;
    /* A re-INVITE may move the media: learn the source again. */
    memset(&L->rtp.latched, 0, sizeof(L->rtp.latched));
    memset(&L->rtcp.latched, 0, sizeof(L->rtcp.latched));
    w->kf_pending = 1; /* the other direction may go back to the kernel with its new address */
    pthread_mutex_unlock(&w->lock);
    return RR_OK;
}

int rr_session_set_hold(rr_engine *e, uint64_t id, int held)
{
    rr_worker *w;
    rr_session *s = lock_session(e, id, &w);
    if (!s)
        return RR_ERR_NO_SESSION;
    if (s->held != (held ? 1 : 0)) {
        /* Going on hold or coming off it: the other timeout applies from now, not from the
         * last packet before the change. */
        s->held = held ? 1 : 0;
        s->idle_from_ns = rr_now_ns();
        s->timeout_reported = 0;
    }
    pthread_mutex_unlock(&w->lock);
    return RR_OK;
}

int rr_session_restart_idle(rr_engine *e, uint64_t id)
{
    rr_worker *w;
    rr_session *s = lock_session(e, id, &w);
    if (!s)
        return RR_ERR_NO_SESSION;
    s->idle_from_ns = rr_now_ns();
    s->timeout_reported = 0;
    pthread_mutex_unlock(&w->lock);
    return RR_OK;
}

int rr_session_set_timeouts(rr_engine *e, uint64_t id, int64_t timeout_ns, int64_t hold_timeout_ns)
{
    rr_worker *w;
    rr_session *s = lock_session(e, id, &w);
    if (!s)
        return RR_ERR_NO_SESSION;
    if (timeout_ns >= 0)
        s->timeout_ns = timeout_ns;
    if (hold_timeout_ns >= 0)
        s->hold_timeout_ns = hold_timeout_ns;
    s->timeout_reported = 0;
    pthread_mutex_unlock(&w->lock);
    return RR_OK;
}

int rr_session_set_media(rr_engine *e, uint64_t id, uint32_t clock_rate, int dtmf_pt)
{
    if (clock_rate == 0 || dtmf_pt > 127)
        return RR_ERR_ARG;
    rr_worker *w;
    rr_session *s = lock_session(e, id, &w);
    if (!s)
        return RR_ERR_NO_SESSION;
    kf_withdraw_both(e, s, (uint32_t)id); /* the kernel's copies carry the old clock and DTMF type */
    for (int l = 0; l < 2; l++) {
        rr_stream_stats *st = &s->leg[l].stats;
        if (st->clock_rate != clock_rate) {
            st->clock_rate = clock_rate;
            st->have_transit = 0; /* transit in the old clock is meaningless */
        }
        st->dtmf_pt = (int16_t)dtmf_pt;
    }
    w->kf_pending = 1;
    pthread_mutex_unlock(&w->lock);
    return RR_OK;
}

int rr_session_info_get(rr_engine *e, uint64_t id, rr_session_info *out)
{
    rr_worker *w;
    rr_session *s = lock_session(e, id, &w);
    if (!s)
        return RR_ERR_NO_SESSION;
    fill_info(e, s, (uint32_t)id, out);
    pthread_mutex_unlock(&w->lock);
    return RR_OK;
}

int rr_session_ports(rr_engine *e, uint64_t id, uint16_t out[4])
{
    rr_worker *w;
    rr_session *s = lock_session(e, id, &w);
    if (!s)
        return RR_ERR_NO_SESSION;
    for (int l = 0; l < 2; l++) {
        out[2 * l] = s->leg[l].rtp.local_port;
        out[2 * l + 1] = s->leg[l].rtcp.local_port;
    }
    pthread_mutex_unlock(&w->lock);
    return RR_OK;
}

size_t rr_sessions_idle_since(rr_engine *e, int64_t since_ns, uint64_t *ids, size_t max)
{
    size_t n = 0;
    for (int i = 0; i < e->nworkers && n < max; i++) {
        rr_worker *w = &e->workers[i];
        pthread_mutex_lock(&w->lock);
        for (uint32_t k = 0; k < w->nactive && n < max; k++) {
            rr_session *s = &e->sessions[w->active[k]];
            if (session_last_activity(e, s, w->active[k]) < since_ns)
                ids[n++] = rr_make_id(w->active[k], s->gen);
        }
        pthread_mutex_unlock(&w->lock);
    }
    return n;
}

void rr_engine_counters_get(rr_engine *e, rr_engine_counters *o)
{
    memset(o, 0, sizeof(*o));
    for (int i = 0; i < e->nworkers; i++) {
        rr_worker *w = &e->workers[i];
        pthread_mutex_lock(&w->lock);
        o->wakeups += w->wakeups;
        o->recv_calls += w->recv_calls;
        o->send_calls += w->send_calls;
        o->packets_in += w->packets_in;
        o->packets_out += w->packets_out;
        o->recv_errors += w->recv_errors;
        o->control_wakes += __atomic_load_n(&w->control_wakes, __ATOMIC_RELAXED);
        o->control_naps += w->control_naps;
        for (int k = 0; k < RR_LATE_BUCKETS; k++) {
            o->late[k] += w->late_hist[k];
            o->work[k] += w->work_hist[k];
            o->stall[k] += w->stall_hist[k];
        }
        o->realtime_workers += (uint32_t)atomic_load(&w->realtime);
        o->pinned_workers += (uint32_t)atomic_load(&w->pinned);
        pthread_mutex_unlock(&w->lock);
    }
    pthread_mutex_lock(&e->ev_lock);
    o->events_dropped = e->events_dropped;
    pthread_mutex_unlock(&e->ev_lock);
    pthread_mutex_lock(&e->ctl_lock);
    o->sessions = e->nsessions;
    /* the pair the keeper is binding is off the FIFO but not yet a spare: still free */
    o->ports_free = (e->pool_count + e->spare_count + (uint32_t)e->keeper_binding) * 2;
    o->ports_spare = e->spare_count * 2;
    o->ports_total = e->pool_cap * 2;
    o->spare_hits = e->spare_hits;
    o->spare_misses = e->spare_misses;
    o->spare_drained = __atomic_load_n(&e->spare_drained, __ATOMIC_RELAXED);
    if (e->kfwd) {
        rr_kf_totals t;
        rr_kfwd_totals(e->kfwd, &t, &o->kernel_run_ns, &o->kernel_run_cnt);
        o->kernel_packets = t.packets;
        o->packets_in += t.packets; /* relayed, whichever path carried them */
        o->packets_out += t.packets;
        o->kernel_bytes = t.bytes;
        o->kernel_to_worker = t.to_worker;
        o->kernel_flows = __atomic_load_n(&e->kf_flows, __ATOMIC_RELAXED);
        o->kernel_installs = __atomic_load_n(&e->kf_installs, __ATOMIC_RELAXED);
        o->kernel_withdrawals = __atomic_load_n(&e->kf_withdrawals, __ATOMIC_RELAXED);
    }
    pthread_mutex_unlock(&e->ctl_lock);
}

int rr_engine_worker_count(const rr_engine *e) { return e->nworkers; }

int rr_engine_worker_tid(const rr_engine *e, int i)
{
    if (i < 0 || i >= e->nworkers)
        return 0;
    return atomic_load(&((rr_engine *)e)->workers[i].tid);
}

int rr_engine_backend(const rr_engine *e) { return e->backend; }
