/*
 * The per-packet RTP accounting both packet paths share: the relay workers
 * (through rtp_stats.c) and the kernel fast path (relay_kfwd.bpf.c, compiled for
 * the BPF target).  One copy of RFC 3550 A.1 (sequence tracking, restarts,
 * duplicates), A.3 (expected/received runs) and A.8 (jitter), so a stream keeps
 * the same figures whichever path carried its packets.
 *
 * Written for both targets: no libc, no floating point, no 128-bit arithmetic,
 * loops bounded, everything inline (the BPF verifier sees straight-line code).
 */
#ifndef RR_RTP_STATS_CORE_H
#define RR_RTP_STATS_CORE_H

#include "rtp_stats.h"

#ifdef __bpf__
#define RR_INLINE static __attribute__((always_inline)) inline
#else
#define RR_INLINE static inline
#endif

#define RR_NS_PER_SEC 1000000000ull

/* Outcome of the RFC 3550 A.1 sequence check. */
enum { RR_SEQ_NEW = 0, RR_SEQ_LATE = 1, RR_SEQ_DUP = 2, RR_SEQ_BAD = 3 };

/* Shift the 128-bit seen window left by n (1 <= n < RR_SEQ_WINDOW) and set bit 0. */
RR_INLINE void rr_seen_advance(rr_stream_stats *s, uint32_t n)
{
    if (n >= 64) {
        s->seen_hi = n == 64 ? s->seen_lo : s->seen_lo << (n - 64);
        s->seen_lo = 0;
    } else {
        s->seen_hi = (s->seen_hi << n) | (s->seen_lo >> (64 - n));
        s->seen_lo <<= n;
    }
    s->seen_lo |= 1;
}

/* Test and set bit `back` (< RR_SEQ_WINDOW) of the window; returns the old bit. */
RR_INLINE int rr_seen_test_set(rr_stream_stats *s, uint32_t back)
{
    uint64_t *w = back < 64 ? &s->seen_lo : &s->seen_hi;
    uint64_t bit = 1ull << (back & 63);
    int was = (*w & bit) != 0;
    *w |= bit;
    return was;
}

RR_INLINE uint64_t rr_run_expected(const rr_stream_stats *s)
{
    if (!s->initialized)
        return 0;
    return (uint64_t)s->cycles + s->max_seq - s->base_seq + 1;
}

/* RFC 3550 A.1 init_seq, without probation: a relay forwards from the first packet,
 * so it counts from the first packet too.  The packet itself is the run's first. */
RR_INLINE void rr_seq_init(rr_stream_stats *s, uint16_t seq)
{
    s->base_seq = seq;
    s->max_seq = seq;
    s->bad_seq = RR_RTP_SEQ_MOD + 1; /* so seq == bad_seq is false */
    s->cycles = 0;
    s->seen_lo = 1;
    s->seen_hi = 0;
    s->received = 1;
    s->initialized = 1;
}

/* Close the current sequence run (SSRC change or restart) so that A.3 loss keeps
 * the history: loss is the sum over runs. */
RR_INLINE void rr_seq_close_run(rr_stream_stats *s)
{
    s->expected_prior += rr_run_expected(s);
    s->received_prior += s->received;
    s->seq_resets++;
}

RR_INLINE int rr_seq_update(rr_stream_stats *s, uint16_t seq)
{
    uint16_t udelta = (uint16_t)(seq - s->max_seq);

    if (udelta == 0)
        return RR_SEQ_DUP; /* bit 0 (max_seq itself) is always set */
    if (udelta < RR_MAX_DROPOUT) {
        if (seq < s->max_seq)
            s->cycles += RR_RTP_SEQ_MOD; /* wrapped */
        s->max_seq = seq;
        if (udelta >= RR_SEQ_WINDOW) {
            s->seen_lo = 1;
            s->seen_hi = 0;
        } else {
            rr_seen_advance(s, udelta);
        }
        s->received++;
        return RR_SEQ_NEW;
    }
    if (udelta <= RR_RTP_SEQ_MOD - RR_MAX_MISORDER) {
        /* A very large jump: a restart if the next packet continues from it. */
        if (seq == s->bad_seq) {
            rr_seq_close_run(s);
            rr_seq_init(s, seq);
            return RR_SEQ_NEW;
        }
        s->bad_seq = (seq + 1) & (RR_RTP_SEQ_MOD - 1);
        return RR_SEQ_BAD;
    }
    /* Late: max_seq - seq is 1..RR_MAX_MISORDER. */
    uint16_t back = (uint16_t)(s->max_seq - seq);
    if (back < RR_SEQ_WINDOW && rr_seen_test_set(s, back))
        return RR_SEQ_DUP;
    s->received++;
    s->out_of_order++;
    return RR_SEQ_LATE;
}

/* Account an RTP v2 packet's sequence number and SSRC (packets, bytes, runs,
 * duplicates).  Returns 1 when the packet is new (late or in order) and should
 * go on to DTMF or jitter accounting, 0 for a duplicate or a not-yet-confirmed
 * jump. */
RR_INLINE int rr_stream_account_seq(rr_stream_stats *s, uint16_t seq, uint32_t ssrc, uint32_t len)
{
    s->packets++;
    s->bytes += len;
    if (!s->initialized || ssrc != s->ssrc) {
        /* First packet, or a new source (re-INVITE to another endpoint, SSRC collision). */
        if (s->initialized)
            rr_seq_close_run(s);
        s->ssrc = ssrc;
        rr_seq_init(s, seq);
        s->have_transit = 0;
        s->dtmf.active = 0;
        s->dtmf.have_reported = 0;
        return 1;
    }
    int r = rr_seq_update(s, seq);
    if (r == RR_SEQ_DUP) {
        s->duplicates++;
        return 0;
    }
    return r != RR_SEQ_BAD;
}

/* RTP timestamp units elapsed at arrival_ns: floor(ns * rate / 1e9), split so that
 * no intermediate exceeds 64 bits (rem * rate < 1e9 * 2^32). */
RR_INLINE uint32_t rr_arrival_ts(uint64_t arrival_ns, uint32_t clock_rate)
{
    uint64_t sec = arrival_ns / RR_NS_PER_SEC;
    uint64_t rem = arrival_ns % RR_NS_PER_SEC;
    return (uint32_t)(sec * clock_rate + rem * clock_rate / RR_NS_PER_SEC);
}

/* RFC 3550 A.8 interarrival jitter of a new media packet with RTP timestamp ts. */
RR_INLINE void rr_stream_account_jitter(rr_stream_stats *s, uint32_t ts, int64_t arrival_ns)
{
    uint32_t transit = rr_arrival_ts((uint64_t)arrival_ns, s->clock_rate) - ts;
    if (s->have_transit) {
        int32_t d = (int32_t)(transit - s->transit);
        uint64_t ad = d < 0 ? (uint64_t)(-(int64_t)d) : (uint64_t)d;
        /* J += (|D| - J) / 16, with J kept multiplied by 16 */
        s->jitter_q4 = s->jitter_q4 + ad - ((s->jitter_q4 + 8) >> RR_JITTER_GAIN_SHIFT);
    }
    s->transit = transit;
    s->have_transit = 1;
}

#endif
