// SPDX-License-Identifier: GPL-2.0
/*
 * SIP call steering for SBC workers that share one UDP port (SO_REUSEPORT).
 *
 * The kernel's own reuseport choice hashes the 4-tuple, so every datagram from
 * one peer (a carrier's proxy, say) would land on one worker whatever the call.
 * This SK_REUSEPORT program picks the worker from the SIP Call-ID instead, so all
 * requests and responses of one call reach the worker that holds its state:
 *
 *   worker = FNV-1a-32(Call-ID value) % N       (sbc/transport/steering.py mirrors it)
 *
 * The Call-ID header is `Call-ID` (any case) or its compact form `i`, at the
 * start of a header line, optional blanks before the colon, the value trimmed of
 * blanks.  Only the message head counts (a body's text is never a header), and
 * only the first SBC_STEER_SCAN bytes of the payload are looked at.  Anything
 * else (no Call-ID, N unset, an empty slot, not UDP) returns SK_PASS without a
 * selection: the kernel's hash picks a worker and nothing is dropped.
 *
 * ctx->data starts at the UDP header for UDP (the kernel pulls the IP header
 * before the socket lookup; checked with the UDP length == ctx->len below).
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define SBC_STEER_SCAN 2048 /* payload bytes searched for the Call-ID */
#define SBC_UDP_HLEN 8
#define SBC_FNV_BASIS 2166136261u
#define SBC_FNV_PRIME 16777619u

/* Worker index -> that worker's socket (filled by the loader, sbc/transport/_steer.pyx). */
struct {
    __uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
    __uint(max_entries, 1); /* set by the loader to the number of workers */
    __type(key, __u32);
    __type(value, __u32);
} sbc_steer_socks SEC(".maps");

/* Entry 0: the number of workers N (0: do not steer). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} sbc_steer_workers SEC(".maps");

/* Scratch copy of the payload's first bytes: too big for the 512-byte stack. */
struct sbc_steer_buf {
    unsigned char b[SBC_STEER_SCAN];
};
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct sbc_steer_buf);
} sbc_steer_scratch SEC(".maps");

/* Scanner states, one per byte (a state machine keeps the verifier's work to one callback). */
enum {
    ST_SKIP_LINE,  /* in a line that is not the Call-ID (the start line first) */
    ST_LINE_START, /* just after a line feed */
    ST_LINE_CR,    /* a line that so far holds only CR: the blank line if LF follows */
    ST_NAME,       /* in a header name that may still be Call-ID or i */
    ST_BEFORE_COLON,
    ST_VALUE_LEAD, /* after the colon, skipping blanks */
    ST_VALUE,
};

/* What the scan callback keeps between bytes. */
struct sbc_scan {
    struct sbc_steer_buf *buf;
    __u32 len;     /* bytes in buf */
    __u32 state;
    __u32 matched; /* header-name bytes seen */
    __u32 cand;    /* bit 0: still "call-id", bit 1: still "i" */
    __u32 start;   /* value start */
    __u32 end;     /* one past the value's last non-blank byte */
    __u32 found;
};

/* "call-id", byte m at bits 8m (a constant, so no .rodata map is needed). */
#define SBC_CALL_ID_LC                                                                            \
    ((__u64)'c' | (__u64)'a' << 8 | (__u64)'l' << 16 | (__u64)'l' << 24 | (__u64)'-' << 32 |      \
     (__u64)'i' << 40 | (__u64)'d' << 48)

/* buf[at] with a bound the verifier can see: the empty asm hides from clang that `at` is
 * already below SBC_STEER_SCAN, so it keeps the mask the verifier needs. */
static __always_inline unsigned char byte_at(const struct sbc_steer_buf *buf, __u32 at)
{
    asm volatile("" : "+r"(at));
    return buf->b[at & (SBC_STEER_SCAN - 1)];
}

static __always_inline int is_blank(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* Name byte c at position m: narrows cand; returns the new cand. */
static __always_inline __u32 narrow(__u32 cand, __u32 m, unsigned char c)
{
    unsigned char lc = (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
    if (m >= 7 || lc != (unsigned char)(SBC_CALL_ID_LC >> (8 * (m & 7))))
        cand &= ~1u;
    if (m != 0 || lc != 'i')
        cand &= ~2u;
    return cand;
}

static long scan_byte(__u32 i, void *data)
{
    struct sbc_scan *s = data;
    if (i >= s->len || i >= SBC_STEER_SCAN)
        return 1;
    unsigned char c = byte_at(s->buf, i);
    int eol = c == '\r' || c == '\n';

    switch (s->state) {
    case ST_SKIP_LINE:
        if (c == '\n')
            s->state = ST_LINE_START;
        return 0;
    case ST_LINE_START:
        if (c == '\n')
            return 1; /* bare-LF blank line: end of head */
        if (c == '\r') {
            s->state = ST_LINE_CR;
            return 0;
        }
        s->matched = 0;
        s->cand = 3;
        s->state = ST_NAME;
        /* c is the name's first byte */
        __attribute__((fallthrough));
    case ST_NAME:
        if (c == ':' || is_blank(c)) {
            int hit = ((s->cand & 1) && s->matched == 7) || ((s->cand & 2) && s->matched == 1);
            if (!hit)
                s->state = ST_SKIP_LINE;
            else
                s->state = c == ':' ? ST_VALUE_LEAD : ST_BEFORE_COLON;
            return 0;
        }
        if (eol) {
            s->state = c == '\n' ? ST_LINE_START : ST_SKIP_LINE;
            return 0;
        }
        s->cand = narrow(s->cand, s->matched, c);
        s->matched++;
        if (!s->cand)
            s->state = ST_SKIP_LINE;
        return 0;
    case ST_LINE_CR:
        if (c == '\n')
            return 1; /* CRLF CRLF: end of head, no Call-ID in it */
        s->state = c == '\r' ? ST_LINE_CR : ST_SKIP_LINE;
        return 0;
    case ST_BEFORE_COLON:
        if (c == ':')
            s->state = ST_VALUE_LEAD;
        else if (c == '\n')
            s->state = ST_LINE_START;
        else if (!is_blank(c))
            s->state = ST_SKIP_LINE;
        return 0;
    case ST_VALUE_LEAD:
        if (is_blank(c))
            return 0;
        if (eol) { /* empty value: not a Call-ID, keep looking */
            s->state = c == '\n' ? ST_LINE_START : ST_SKIP_LINE;
            return 0;
        }
        s->start = i;
        s->end = i + 1;
        s->state = ST_VALUE;
        return 0;
    case ST_VALUE:
        if (eol) {
            s->found = 1;
            return 1;
        }
        if (!is_blank(c))
            s->end = i + 1;
        return 0;
    }
    return 1;
}

/* Hashing context: FNV-1a over buf[start, end). */
struct sbc_hash {
    struct sbc_steer_buf *buf;
    __u32 start;
    __u32 hash;
};

static long hash_byte(__u32 i, void *data)
{
    struct sbc_hash *h = data;
    __u32 at = h->start + i;
    if (at >= SBC_STEER_SCAN)
        return 1;
    h->hash ^= byte_at(h->buf, at);
    h->hash *= SBC_FNV_PRIME;
    return 0;
}

SEC("sk_reuseport")
int sbc_steer(struct sk_reuseport_md *ctx)
{
    __u32 zero = 0;
    if (ctx->ip_protocol != IPPROTO_UDP)
        return SK_PASS;
    __u32 *workers = bpf_map_lookup_elem(&sbc_steer_workers, &zero);
    if (!workers || *workers == 0)
        return SK_PASS;
    __u32 n = *workers;

    /* The UDP header's length field equals ctx->len when data starts at the UDP
     * header (the kernel trims the skb to it): a guard against another layout. */
    __u64 plen = ctx->len;
    __u16 ulen_be;
    if (plen <= SBC_UDP_HLEN || bpf_skb_load_bytes(ctx, 4, &ulen_be, sizeof(ulen_be)))
        return SK_PASS;
    if (__builtin_bswap16(ulen_be) != plen)
        return SK_PASS;

    struct sbc_steer_buf *buf = bpf_map_lookup_elem(&sbc_steer_scratch, &zero);
    if (!buf)
        return SK_PASS;
    /* 64-bit, so the bound checked is the register passed (1 <= len <= SBC_STEER_SCAN). */
    __u64 len = plen - SBC_UDP_HLEN;
    if (len > SBC_STEER_SCAN)
        len = SBC_STEER_SCAN;
    if (bpf_skb_load_bytes(ctx, SBC_UDP_HLEN, buf->b, len))
        return SK_PASS;

    struct sbc_scan s = {.buf = buf, .len = len, .state = ST_SKIP_LINE};
    bpf_loop(SBC_STEER_SCAN, scan_byte, &s, 0);
    if (!s.found || s.end <= s.start)
        return SK_PASS;

    struct sbc_hash h = {.buf = buf, .start = s.start, .hash = SBC_FNV_BASIS};
    bpf_loop(s.end - s.start, hash_byte, &h, 0);
    __u32 index = h.hash % n;
    /* An empty slot (or a socket of another group) fails: the kernel's hash picks. */
    bpf_sk_select_reuseport(ctx, &sbc_steer_socks, &index, 0);
    return SK_PASS;
}

char _license[] SEC("license") = "GPL";
