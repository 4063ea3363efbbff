/*
 * Per-direction RTP statistics, RFC 4733 DTMF detection and the G.711 E-model.
 *
 * Pure functions over plain structs: no sockets, no clock, no locks.  The relay
 * worker calls them on every packet it forwards, and the Python "stats feeder"
 * calls the very same functions so unit tests can replay crafted sequences
 * (loss, reordering, wrap-around, duplicates, redundant DTMF end packets).
 */
#ifndef RR_RTP_STATS_H
#define RR_RTP_STATS_H

#ifdef __bpf__
/* The kernel fast path (relay_kfwd.bpf.c) shares these structs and the per-packet
 * accounting (rtp_stats_core.h); the BPF target has no libc headers. */
#include <linux/types.h>
typedef __u8 uint8_t;
typedef __u16 uint16_t;
typedef __u32 uint32_t;
typedef __u64 uint64_t;
typedef __s16 int16_t;
typedef __s32 int32_t;
typedef __s64 int64_t;
typedef __u64 size_t;
#else
#include <stddef.h>
#include <stdint.h>
#endif

/* RFC 3550 A.1: sequence numbers are 16 bits; cycles count multiples of this. */
#define RR_RTP_SEQ_MOD (1u << 16)
/* RFC 3550 A.1: a forward jump smaller than this is a gap (loss), not a restart. */
#define RR_MAX_DROPOUT 3000u
/* RFC 3550 A.1: a backward step up to this many is reordering/duplication. */
#define RR_MAX_MISORDER 100u
/* Bits of history kept to tell a late packet (out of order) from a duplicate.
 * Must cover RR_MAX_MISORDER so every accepted late packet can be classified. */
#define RR_SEQ_WINDOW 128u
/* RFC 3550 A.8: jitter estimator gain is 1/16. */
#define RR_JITTER_GAIN_SHIFT 4
/* Fixed RTP header length (RFC 3550 5.1). */
#define RR_RTP_HEADER_LEN 12u
/* RFC 4733 2.3: telephone-event payload is 4 bytes. */
#define RR_DTMF_PAYLOAD_LEN 4u
/* RFC 5761 4: first-byte-after-version values 192..223 are RTCP when multiplexed. */
#define RR_RTCP_MUX_PT_MIN 192u
#define RR_RTCP_MUX_PT_MAX 223u

/* E-model constants (ITU-T G.107 default R0 with G.113 Appendix I values for G.711). */
#define RR_EMODEL_R0 93.2           /* G.107 default basic signal-to-noise ratio R0 - Is */
#define RR_EMODEL_G711_IE 0.0       /* G.113 App. I: equipment impairment of G.711 */
#define RR_EMODEL_G711_BPL 25.1     /* G.113 App. I: G.711 with packet loss concealment */
#define RR_EMODEL_ID_KNEE_MS 177.3  /* Cole & Rosenbluth fit of G.107 Id: slope changes here */
/* Mouth-to-ear delay the relay cannot see (codec, packetisation, network); the
 * estimate adds 2 x jitter for the far end's jitter buffer on top of this. */
#define RR_MOS_BASE_DELAY_MS 40.0

typedef struct rr_dtmf_state {
    uint32_t ts;            /* RTP timestamp identifying the current event (RFC 4733 2.5.1.1) */
    uint32_t reported_ts;   /* timestamp of the last event handed out, to drop late retransmits */
    uint16_t duration;      /* latest duration seen, in timestamp units */
    uint8_t event;          /* 0-9, 10='*', 11='#', 12-15='A'-'D', 16=flash */
    uint8_t volume;         /* dBm0 below zero (RFC 4733 2.3.4) */
    uint8_t active;         /* an event is in progress and not yet reported */
    uint8_t have_reported;  /* reported_ts is meaningful */
} rr_dtmf_state;

typedef struct rr_dtmf_event {
    uint32_t ts;
    uint16_t duration;      /* timestamp units of the event clock */
    uint8_t event;
    uint8_t volume;
    uint8_t end_seen;       /* 0 when the end packets were all lost and a new event closed it */
} rr_dtmf_event;

typedef struct rr_stream_stats {
    /* Plain counters. */
    uint64_t packets;        /* RTP packets accepted (includes duplicates) */
    uint64_t bytes;          /* UDP payload bytes of those packets */
    uint64_t duplicates;
    uint64_t out_of_order;   /* late but new packets */
    uint64_t non_rtp;        /* forwarded but not parseable as RTP v2 (STUN, ZRTP, garbage) */
    uint64_t rtcp_packets;
    uint64_t rtcp_bytes;
    uint64_t dtmf_packets;
    uint64_t seq_resets;     /* SSRC changes or RFC 3550 A.1 restarts */
    /* RFC 3550 A.1 / A.3 state. */
    uint32_t ssrc;
    uint32_t cycles;         /* shifted count of sequence number wraps */
    uint32_t base_seq;
    uint32_t bad_seq;
    uint16_t max_seq;
    uint8_t initialized;
    uint8_t have_transit;
    uint64_t received;       /* unique packets of the current sequence run */
    uint64_t expected_prior; /* expected/received of runs closed by a restart */
    uint64_t received_prior;
    /* bit k of the 128-bit window (seen_lo: k < 64, seen_hi: k - 64) set: seq max_seq - k
     * was received (RR_SEQ_WINDOW bits).  Two words, not __int128: the BPF target has no
     * 128-bit arithmetic and the kernel fast path shares this struct. */
    uint64_t seen_lo;
    uint64_t seen_hi;
    /* RFC 3550 A.8 state, in timestamp units; jitter is kept scaled by 16 as in A.8. */
    uint32_t transit;        /* arrival - RTP timestamp of the previous packet, modulo 2^32 */
    uint64_t jitter_q4;
    uint32_t clock_rate;     /* payload clock (8000 for G.711) */
    int16_t dtmf_pt;         /* telephone-event payload type, -1 if none */
    rr_dtmf_state dtmf;
} rr_stream_stats;

/* Derived figures, computed from a stream's state at read time. */
typedef struct rr_stream_report {
    uint64_t packets, bytes, duplicates, out_of_order, non_rtp;
    uint64_t rtcp_packets, rtcp_bytes, dtmf_packets, seq_resets;
    uint64_t expected;
    int64_t lost;            /* RFC 3550 A.3 cumulative lost (may be negative with late dups) */
    double loss_fraction;
    double jitter_ms;
    double mos;
    uint32_t ssrc;
    uint32_t extended_max_seq;
} rr_stream_report;

enum {
    RR_PKT_RTP = 0,       /* counted as RTP media */
    RR_PKT_DTMF = 1,      /* counted, and is telephone-event */
    RR_PKT_RTCP = 2,      /* RTCP multiplexed on the RTP port */
    RR_PKT_NOT_RTP = 3,   /* forwarded without stats */
};

#ifndef __bpf__
void rr_stream_init(rr_stream_stats *s, uint32_t clock_rate, int dtmf_pt);

/* Classify and account one packet received at arrival_ns (monotonic nanoseconds).
 * Returns one of RR_PKT_*.  When a DTMF event completes, *dtmf_out is filled and
 * *n_dtmf set to the number of events (0..2; two when an unfinished event is
 * closed by a new one that also ends in the same packet). */
int rr_stream_on_packet(rr_stream_stats *s, const uint8_t *pkt, size_t len, int64_t arrival_ns,
                        int rtcp_mux, rr_dtmf_event dtmf_out[2], int *n_dtmf);

void rr_stream_report_get(const rr_stream_stats *s, rr_stream_report *out);

/* RFC 4733 detector on its own, for tests and for the stream accounting. */
int rr_dtmf_on_payload(rr_dtmf_state *d, uint32_t rtp_ts, const uint8_t *payload, size_t len,
                       rr_dtmf_event out[2]);

/* E-model MOS for G.711 (see README.md for the formula). */
double rr_mos_g711(double loss_fraction, double jitter_ms, double base_delay_ms);

char rr_dtmf_digit(uint8_t event);

#endif /* !__bpf__ */

#endif
