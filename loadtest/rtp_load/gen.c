/* Native RTP load generator (see gen.h). */
#define _GNU_SOURCE
#include "gen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Datagrams per sendmmsg/recvmmsg: amortises the generator's syscalls so its CPU
 * stays small next to the relay's. */
#define GEN_BATCH 64
/* Sockets per side at most; a handful is plenty with large receive buffers. */
#define GEN_MAX_SOCKS 64
/* Sender threads at most: one per core is all a sender can use. */
#define GEN_MAX_SENDERS 8
/* Latency histogram: 1 us buckets up to 200 ms, then one overflow bucket. */
#define GEN_HIST_BUCKETS 200000
/* Largest payload accepted (G.711 at 20 ms is 160 bytes). */
#define GEN_MAX_PAYLOAD 1400
#define GEN_RTP_HEADER 12
/* Our marker inside the payload, to ignore anything that is not ours. */
#define GEN_MAGIC 0x52544c47u /* "RTLG" */
/* Bytes of payload the stamp needs: send ns (8), stream (4), magic (4). */
#define GEN_STAMP_LEN 16
/* The receiver drains its sockets, then naps this long: it never sleeps in a wait
 * queue, so the relay's sends never pay for waking it (which would be charged to
 * the relay's CPU).  Latency is taken from the kernel arrival stamp, so the nap
 * does not inflate it; 1 ms keeps the receiver's own wakeups (a timer interrupt
 * and two context switches each, dear under a hypervisor) at 1000/s, and its
 * 16 MB socket buffers hold far more than 1 ms of 200k pps. */
#define GEN_RX_NAP_NS 1000000
#define GEN_CMSG_SPACE 64
/* Sender tick lateness histogram: 10 us buckets up to 200 ms, then one overflow bucket. */
#define GEN_LATE_BUCKET_US 10
#define GEN_LATE_BUCKETS 20000
/* Start sending this long after the threads are up, so the schedule starts clean. */
#define GEN_START_DELAY_NS 20000000LL
/* The RTP SSRC base of stream s is GEN_SSRC_BASE + s. */
#define GEN_SSRC_BASE 0x10000000u

struct gen {
    int calls;
    int nstreams;
    int socks_per_side;
    int socks[2][GEN_MAX_SOCKS];
    uint16_t sock_port[2][GEN_MAX_SOCKS];
    uint16_t *target;       /* per stream: relay port */
    uint64_t *rx_count;     /* per stream */
    uint64_t *hist;
    uint64_t bad;
    atomic_int rx_stop;
    double rx_cpu, tx_cpu;
    int rt_priority;
    int cpu;
    atomic_int realtime;
    atomic_int pinned;
    uint64_t *late_hist;    /* sender tick lateness, GEN_LATE_BUCKET_US buckets */
    /* sender parameters of the current run */
    double seconds;
    int64_t period_ns, tick_ns;
    int payload_len;
    uint64_t sent, send_errors;
    int64_t first_send, last_send;
    int senders;            /* sender threads: calls are dealt out round-robin */
};

/* One sender thread's share (calls with call % senders == k) and its own counts,
 * summed into the gen after the run. */
typedef struct gen_tx {
    gen *g;
    int k;
    uint64_t sent, send_errors;
    int64_t first_send, last_send;
    double cpu;
    uint64_t *late_hist;
} gen_tx;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The send stamp uses the clock of SO_TIMESTAMPNS so the receive side can use the
 * kernel's arrival stamp: that excludes the receiver's own polling delay. */
static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t t)
{
    struct timespec ts = {.tv_sec = t / 1000000000LL, .tv_nsec = t % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void thread_setup(gen *g)
{
    if (g->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(g->cpu, &set);
        if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0)
            atomic_fetch_add(&g->pinned, 1);
    }
    if (g->rt_priority <= 0)
        return;
    struct sched_param sp = {.sched_priority = g->rt_priority};
    if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0)
        atomic_fetch_add(&g->realtime, 1);
}

static int open_sock(int rcvbuf, uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf > 0) {
        /* FORCE passes net.core.rmem_max when we have CAP_NET_ADMIN; else capped */
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(int)) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(int));
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &rcvbuf, sizeof(int)) < 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &rcvbuf, sizeof(int));
    }
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

gen *gen_new(int calls, int socks_per_side, int rcvbuf)
{
    if (calls < 1 || socks_per_side < 1 || socks_per_side > GEN_MAX_SOCKS) {
        errno = EINVAL;
        return NULL;
    }
    gen *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->calls = calls;
    g->nstreams = 2 * calls;
    g->socks_per_side = socks_per_side;
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < GEN_MAX_SOCKS; k++)
            g->socks[s][k] = -1;
    g->target = calloc((size_t)g->nstreams, sizeof(uint16_t));
    g->rx_count = calloc((size_t)g->nstreams, sizeof(uint64_t));
    g->hist = calloc(GEN_HIST_BUCKETS + 1, sizeof(uint64_t));
    g->late_hist = calloc(GEN_LATE_BUCKETS + 1, sizeof(uint64_t));
    if (!g->target || !g->rx_count || !g->hist || !g->late_hist)
        goto fail;
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < socks_per_side; k++)
            if ((g->socks[s][k] = open_sock(rcvbuf, &g->sock_port[s][k])) < 0)
                goto fail;
    return g;
fail:
    gen_free(g);
    return NULL;
}

void gen_free(gen *g)
{
    if (!g)
        return;
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < GEN_MAX_SOCKS; k++)
            if (g->socks[s][k] >= 0)
                close(g->socks[s][k]);
    free(g->target);
    free(g->rx_count);
    free(g->hist);
    free(g->late_hist);
    free(g);
}

int gen_sock_port(const gen *g, int side, int k) { return g->sock_port[side & 1][k % g->socks_per_side]; }

int gen_sock_for_call(const gen *g, int call) { return call % g->socks_per_side; }

void gen_set_target(gen *g, int call, uint16_t a_port, uint16_t b_port)
{
    if (call < 0 || call >= g->calls)
        return;
    g->target[2 * call] = a_port;
    g->target[2 * call + 1] = b_port;
}

/* ------------------------------------------------------------------ sender */

typedef struct tx_batch {
    struct mmsghdr msgs[GEN_BATCH];
    struct iovec iov[GEN_BATCH];
    struct sockaddr_in dst[GEN_BATCH];
    uint8_t buf[GEN_BATCH][GEN_RTP_HEADER + GEN_MAX_PAYLOAD];
    int n;
} tx_batch;

static void tx_flush(gen_tx *g, int fd, tx_batch *b)
{
    if (!b->n)
        return;
    int64_t t = wall_ns();
    for (int i = 0; i < b->n; i++)
        memcpy(b->buf[i] + GEN_RTP_HEADER, &t, sizeof(t));
    int pos = 0;
    while (pos < b->n) {
        int r = sendmmsg(fd, &b->msgs[pos], (unsigned)(b->n - pos), 0);
        if (r <= 0) {
            g->send_errors += (uint64_t)(b->n - pos);
            break;
        }
        g->sent += (uint64_t)r;
        pos += r;
    }
    if (!g->first_send)
        g->first_send = t;
    g->last_send = t;
    b->n = 0;
}

static void *tx_main(void *arg)
{
    gen_tx *tx = arg;
    gen *g = tx->g;
    thread_setup(g);
    int nsock = g->socks_per_side;
    tx_batch *batches = calloc((size_t)(2 * nsock), sizeof(tx_batch));
    if (!batches)
        return NULL;
    int plen = g->payload_len;
    for (int i = 0; i < 2 * nsock; i++)
        for (int k = 0; k < GEN_BATCH; k++) {
            tx_batch *b = &batches[i];
            b->iov[k].iov_base = b->buf[k];
            b->iov[k].iov_len = (size_t)(GEN_RTP_HEADER + plen);
            b->msgs[k].msg_hdr.msg_iov = &b->iov[k];
            b->msgs[k].msg_hdr.msg_iovlen = 1;
            b->msgs[k].msg_hdr.msg_name = &b->dst[k];
            b->msgs[k].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
        }
    uint64_t M = (uint64_t)g->nstreams;
    uint64_t per_stream = (uint64_t)(g->seconds * 1e9 / (double)g->period_ns);
    uint64_t total = per_stream * M;
    int64_t t0 = now_ns() + GEN_START_DELAY_NS;
    uint64_t idx = 0;
    int64_t next_wake = t0;
    while (idx < total) {
        sleep_until(next_wake);
        int64_t now = now_ns();
        int64_t late_us = (now - next_wake) / 1000 / GEN_LATE_BUCKET_US;
        tx->late_hist[late_us < 0 ? 0 : late_us > GEN_LATE_BUCKETS ? GEN_LATE_BUCKETS : late_us]++;
        while (idx < total) {
            uint64_t cycle = idx / M, s = idx % M;
            int64_t due = t0 + (int64_t)cycle * g->period_ns + (int64_t)(s * (uint64_t)g->period_ns / M);
            if (due > now)
                break;
            int call = (int)(s / 2), dir = (int)(s % 2);
            if (call % g->senders != tx->k) {
                idx++;
                continue; /* another sender's call */
            }
            int sk = call % nsock;
            tx_batch *b = &batches[dir * nsock + sk];
            uint8_t *p = b->buf[b->n];
            uint16_t seq = (uint16_t)cycle;
            uint32_t ts = (uint32_t)(cycle * (uint64_t)plen); /* G.711: one sample per byte */
            uint32_t ssrc = GEN_SSRC_BASE + (uint32_t)s;
            p[0] = 0x80;
            p[1] = 0; /* PCMU */
            p[2] = (uint8_t)(seq >> 8);
            p[3] = (uint8_t)seq;
            p[4] = (uint8_t)(ts >> 24);
            p[5] = (uint8_t)(ts >> 16);
            p[6] = (uint8_t)(ts >> 8);
            p[7] = (uint8_t)ts;
            p[8] = (uint8_t)(ssrc >> 24);
            p[9] = (uint8_t)(ssrc >> 16);
            p[10] = (uint8_t)(ssrc >> 8);
            p[11] = (uint8_t)ssrc;
            uint32_t st = (uint32_t)s, magic = GEN_MAGIC;
            memcpy(p + GEN_RTP_HEADER + 8, &st, 4);
            memcpy(p + GEN_RTP_HEADER + 12, &magic, 4);
            b->dst[b->n].sin_family = AF_INET;
            b->dst[b->n].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            b->dst[b->n].sin_port = htons(g->target[s]);
            b->n++;
            if (b->n == GEN_BATCH)
                tx_flush(tx, g->socks[dir][sk], b);
            idx++;
        }
        for (int i = 0; i < 2 * nsock; i++)
            tx_flush(tx, g->socks[i / nsock][i % nsock], &batches[i]);
        next_wake += g->tick_ns;
        if (next_wake < now)
            next_wake = now; /* fell behind: do not try to catch up with a burst of ticks */
    }
    free(batches);
    tx->cpu = thread_cpu_s();
    return NULL;
}

/* ------------------------------------------------------------------ receiver */

static void *rx_main(void *arg)
{
    gen *g = arg;
    thread_setup(g);
    static __thread uint8_t buf[GEN_BATCH][GEN_RTP_HEADER + GEN_MAX_PAYLOAD];
    static __thread uint8_t ctl[GEN_BATCH][GEN_CMSG_SPACE];
    struct mmsghdr msgs[GEN_BATCH];
    struct iovec iov[GEN_BATCH];
    for (int i = 0; i < GEN_BATCH; i++) {
        iov[i].iov_base = buf[i];
        iov[i].iov_len = sizeof(buf[i]);
        memset(&msgs[i], 0, sizeof(msgs[i]));
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    size_t want = (size_t)(GEN_RTP_HEADER + g->payload_len);
    prctl(PR_SET_TIMERSLACK, 1000);
    while (!atomic_load(&g->rx_stop)) {
        for (int side = 0; side < 2; side++) {
            for (int k = 0; k < g->socks_per_side; k++) {
                int fd = g->socks[side][k];
                for (;;) {
                    for (int i = 0; i < GEN_BATCH; i++) {
                        msgs[i].msg_hdr.msg_control = ctl[i];
                        msgs[i].msg_hdr.msg_controllen = GEN_CMSG_SPACE;
                    }
                    int r = recvmmsg(fd, msgs, GEN_BATCH, MSG_DONTWAIT, NULL);
                    if (r <= 0)
                        break;
                    int64_t fallback = wall_ns();
                    for (int m = 0; m < r; m++) {
                        uint8_t *p = buf[m];
                        uint32_t st, magic;
                        int64_t sent, arrived = fallback;
                        if (msgs[m].msg_len != want) {
                            g->bad++;
                            continue;
                        }
                        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[m].msg_hdr); c;
                             c = CMSG_NXTHDR(&msgs[m].msg_hdr, c)) {
                            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                                struct timespec ts;
                                memcpy(&ts, CMSG_DATA(c), sizeof(ts));
                                arrived = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
                            }
                        }
                        memcpy(&sent, p + GEN_RTP_HEADER, 8);
                        memcpy(&st, p + GEN_RTP_HEADER + 8, 4);
                        memcpy(&magic, p + GEN_RTP_HEADER + 12, 4);
                        /* stream s = 2*call + dir arrives on side 1 - dir */
                        if (magic != GEN_MAGIC || st >= (uint32_t)g->nstreams || (int)(st % 2) != 1 - side) {
                            g->bad++;
                            continue;
                        }
                        g->rx_count[st]++;
                        int64_t us = (arrived - sent) / 1000;
                        if (us < 0)
                            us = 0;
                        g->hist[us > GEN_HIST_BUCKETS ? GEN_HIST_BUCKETS : us]++;
                    }
                    if (r < GEN_BATCH)
                        break;
                }
            }
        }
        sleep_until(now_ns() + GEN_RX_NAP_NS);
    }
    g->rx_cpu = thread_cpu_s();
    return NULL;
}

/* q-quantile of a histogram of nbuckets (+1 overflow) buckets, in bucket units. */
static double percentile(const uint64_t *hist, int nbuckets, uint64_t total, double q)
{
    if (!total)
        return 0.0;
    uint64_t rank = (uint64_t)(q * (double)(total - 1)) + 1, acc = 0;
    for (int i = 0; i <= nbuckets; i++) {
        acc += hist[i];
        if (acc >= rank)
            return (double)i;
    }
    return (double)nbuckets;
}

int gen_run(gen *g, double seconds, int64_t period_ns, int payload_len, int64_t tick_ns, int64_t drain_ns,
            int rt_priority, int cpu, int senders, gen_result *out)
{
    if (seconds <= 0 || period_ns <= 0 || tick_ns <= 0 || payload_len < GEN_STAMP_LEN ||
        payload_len > GEN_MAX_PAYLOAD || senders < 1 || senders > GEN_MAX_SENDERS)
        return -EINVAL;
    g->senders = senders;
    g->seconds = seconds;
    g->period_ns = period_ns;
    g->tick_ns = tick_ns;
    g->payload_len = payload_len;
    g->rt_priority = rt_priority;
    g->cpu = cpu;
    atomic_store(&g->realtime, 0);
    atomic_store(&g->pinned, 0);
    memset(g->late_hist, 0, (GEN_LATE_BUCKETS + 1) * sizeof(uint64_t));
    g->sent = g->send_errors = 0;
    g->first_send = g->last_send = 0;
    g->bad = 0;
    memset(g->rx_count, 0, (size_t)g->nstreams * sizeof(uint64_t));
    memset(g->hist, 0, (GEN_HIST_BUCKETS + 1) * sizeof(uint64_t));
    atomic_store(&g->rx_stop, 0);
    pthread_t rx, tx[GEN_MAX_SENDERS];
    gen_tx txs[GEN_MAX_SENDERS];
    memset(txs, 0, sizeof(txs));
    int started = 0, rx_started = 0, err = 0;
    for (int k = 0; k < senders; k++) {
        txs[k].g = g;
        txs[k].k = k;
        txs[k].late_hist = calloc(GEN_LATE_BUCKETS + 1, sizeof(uint64_t));
        if (!txs[k].late_hist)
            err = -ENOMEM;
    }
    if (!err) {
        if (pthread_create(&rx, NULL, rx_main, g) == 0)
            rx_started = 1;
        else
            err = -errno;
    }
    while (!err && started < senders) {
        if (pthread_create(&tx[started], NULL, tx_main, &txs[started]) != 0)
            err = -errno;
        else
            started++;
    }
    for (int k = 0; k < started; k++)
        pthread_join(tx[k], NULL);
    if (err) {
        atomic_store(&g->rx_stop, 1);
        if (rx_started)
            pthread_join(rx, NULL);
        for (int k = 0; k < senders; k++)
            free(txs[k].late_hist);
        return err;
    }
    g->tx_cpu = 0;
    for (int k = 0; k < senders; k++) {
        g->sent += txs[k].sent;
        g->send_errors += txs[k].send_errors;
        if (txs[k].first_send && (!g->first_send || txs[k].first_send < g->first_send))
            g->first_send = txs[k].first_send;
        if (txs[k].last_send > g->last_send)
            g->last_send = txs[k].last_send;
        g->tx_cpu += txs[k].cpu;
        for (int i = 0; i <= GEN_LATE_BUCKETS; i++)
            g->late_hist[i] += txs[k].late_hist[i];
        free(txs[k].late_hist);
    }
    sleep_until(now_ns() + drain_ns);
    atomic_store(&g->rx_stop, 1);
    pthread_join(rx, NULL);

    memset(out, 0, sizeof(*out));
    out->sent = g->sent;
    out->send_errors = g->send_errors;
    out->bad_packets = g->bad;
    uint64_t total = 0;
    for (int s = 0; s < g->nstreams; s++) {
        total += g->rx_count[s];
    }
    out->received = total;
    uint64_t per_stream = (uint64_t)(seconds * 1e9 / (double)period_ns);
    for (int s = 0; s < g->nstreams; s++)
        if (g->rx_count[s] < per_stream)
            out->streams_with_loss++;
    out->latency_p50_us = percentile(g->hist, GEN_HIST_BUCKETS, total, 0.50);
    out->latency_p99_us = percentile(g->hist, GEN_HIST_BUCKETS, total, 0.99);
    out->latency_p999_us = percentile(g->hist, GEN_HIST_BUCKETS, total, 0.999);
    out->latency_max_us = percentile(g->hist, GEN_HIST_BUCKETS, total, 1.0);
    uint64_t ticks = 0;
    for (int i = 0; i <= GEN_LATE_BUCKETS; i++)
        ticks += g->late_hist[i];
    out->tx_late_p50_us = GEN_LATE_BUCKET_US * percentile(g->late_hist, GEN_LATE_BUCKETS, ticks, 0.50);
    out->tx_late_p99_us = GEN_LATE_BUCKET_US * percentile(g->late_hist, GEN_LATE_BUCKETS, ticks, 0.99);
    out->tx_late_max_us = GEN_LATE_BUCKET_US * percentile(g->late_hist, GEN_LATE_BUCKETS, ticks, 1.0);
    out->pinned_threads = atomic_load(&g->pinned);
    out->send_seconds = (double)(g->last_send - g->first_send) / 1e9;
    out->sender_cpu_s = g->tx_cpu;
    out->receiver_cpu_s = g->rx_cpu;
    out->realtime_threads = atomic_load(&g->realtime);
    return 0;
}
