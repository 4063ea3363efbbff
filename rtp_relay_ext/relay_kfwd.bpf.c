// SPDX-License-Identifier: GPL-2.0
/*
 * The relay's kernel fast path: a TCX ingress program that relays the RTP of
 * latched session directions inside the kernel (see relay_kfwd.h).
 *
 * Per packet: one hash lookup by (destination address, port).  A packet of a
 * flow from its latched source that is plain RTP v2 is accounted (RFC 3550
 * sequence, loss and jitter: rtp_stats_core.h, the workers' code), rewritten to
 * leave from the other leg's port towards the other leg's peer, and passed on:
 * up the local stack when that peer is on this host (loopback included), else
 * redirected out of the interface the engine chose for it.  Anything else returns
 * TCX_NEXT, untouched, and reaches the relay socket as it would without us.
 *
 * GPL because bpf_spin_lock and bpf_redirect_neigh are GPL-only.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "relay_kfwd.h"
#include "rtp_stats_core.h"

/* TCX verdicts (linux/bpf.h of 6.6+; the build headers may be older). */
#define RR_TCX_NEXT (-1)
#define RR_TCX_PASS 0

#define RR_AF_INET 2
#define RR_ETH_LEN 14
#define RR_IP_LEN 20 /* packets with IP options are left to the worker */
#define RR_IP_CSUM_OFF (RR_ETH_LEN + 10)
#define RR_IP_SRC_OFF (RR_ETH_LEN + 12)
#define RR_IP_DST_OFF (RR_ETH_LEN + 16)
#define RR_UDP_OFF (RR_ETH_LEN + RR_IP_LEN)
#define RR_UDP_SPORT_OFF (RR_UDP_OFF + 0)
#define RR_UDP_DPORT_OFF (RR_UDP_OFF + 2)
#define RR_UDP_CSUM_OFF (RR_UDP_OFF + 6)
#define RR_RTP_OFF (RR_UDP_OFF + 8)

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 8192); /* set by the loader: two flows per session slot */
    __type(key, rr_kf_key);
    __type(value, rr_kf_value);
} rr_kf_flows SEC(".maps");

/* Monotonic ns of each direction's newest kernel-relayed packet, read by the
 * workers' media-timeout scan through mmap (no system call per session). */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 8192); /* set by the loader */
    __uint(map_flags, BPF_F_MMAPABLE);
    __type(key, __u32);
    __type(value, __u64);
} rr_kf_seen SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, rr_kf_totals);
} rr_kf_total SEC(".maps");

static __always_inline int to_worker(void)
{
    __u32 zero = 0;
    rr_kf_totals *t = bpf_map_lookup_elem(&rr_kf_total, &zero);
    if (t)
        t->to_worker++;
    return RR_TCX_NEXT;
}

SEC("tc")
int rr_kfwd_ingress(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data;
    void *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + RR_ETH_LEN;
    struct udphdr *udp = data + RR_UDP_OFF;
    __u8 *rtp = data + RR_RTP_OFF;

    if ((void *)(rtp + RR_RTP_HEADER_LEN) > end)
        return RR_TCX_NEXT;
    if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
        return RR_TCX_NEXT;
    if (ip->frag_off & bpf_htons(0x3fff)) /* a fragment: MF set or an offset */
        return RR_TCX_NEXT;

    rr_kf_key key = {.addr = ip->daddr, .port = udp->dest, .pad = 0};
    rr_kf_value *v = bpf_map_lookup_elem(&rr_kf_flows, &key);
    if (!v)
        return RR_TCX_NEXT;
    if (v->src_addr != ip->saddr || v->src_port != udp->source)
        return to_worker(); /* not the latched peer: the worker counts and drops it */

    __u32 len = skb->len - RR_RTP_OFF; /* UDP payload, as recvmsg would return it */
    if (bpf_ntohs(udp->len) != len + 8 || len > 0xffff)
        return to_worker();
    __u8 b0 = rtp[0], b1 = rtp[1];
    /* RTP v2 without padding or header extension, and its CSRCs inside the packet. */
    if ((b0 >> 6) != 2 || (b0 & 0x30) || RR_RTP_HEADER_LEN + 4u * (b0 & 0x0f) > len)
        return to_worker();
    if (v->rtcp_mux && b1 >= RR_RTCP_MUX_PT_MIN && b1 <= RR_RTCP_MUX_PT_MAX)
        return to_worker();
    __u8 pt = b1 & 0x7f;
    if (v->stats.dtmf_pt >= 0 && pt == (__u8)v->stats.dtmf_pt)
        return to_worker(); /* telephone-event: the worker detects digits (and takes the flow back) */

    __u16 seq = ((__u16)rtp[2] << 8) | rtp[3];
    __u32 ts = ((__u32)rtp[4] << 24) | ((__u32)rtp[5] << 16) | ((__u32)rtp[6] << 8) | rtp[7];
    __u32 ssrc = ((__u32)rtp[8] << 24) | ((__u32)rtp[9] << 16) | ((__u32)rtp[10] << 8) | rtp[11];
    __u32 old_saddr = ip->saddr, old_daddr = ip->daddr;
    __u16 old_sport = udp->source, old_dport = udp->dest;
    __u32 new_saddr = old_daddr; /* the relay address the packet came to */
    __u32 new_daddr = v->dst_addr;
    __u16 new_sport = v->out_port, new_dport = v->dst_port;
    __u32 seen_index = v->seen_index;
    __u32 out_ifindex = v->out_ifindex;
    __u64 now = bpf_ktime_get_ns();

    bpf_spin_lock(&v->lock);
    if (rr_stream_account_seq(&v->stats, seq, ssrc, len))
        rr_stream_account_jitter(&v->stats, ts, (__s64)now);
    v->forwarded++;
    bpf_spin_unlock(&v->lock);

    __u64 *seen = bpf_map_lookup_elem(&rr_kf_seen, &seen_index);
    if (seen)
        *seen = now;
    __u32 zero = 0;
    rr_kf_totals *t = bpf_map_lookup_elem(&rr_kf_total, &zero);
    if (t) {
        t->packets++;
        t->bytes += len;
    }

    /* Checksums first (the helpers read the old values), then the new fields. */
    bpf_l4_csum_replace(skb, RR_UDP_CSUM_OFF, old_saddr, new_saddr, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 4);
    bpf_l4_csum_replace(skb, RR_UDP_CSUM_OFF, old_daddr, new_daddr, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | 4);
    bpf_l4_csum_replace(skb, RR_UDP_CSUM_OFF, old_sport, new_sport, BPF_F_MARK_MANGLED_0 | 2);
    bpf_l4_csum_replace(skb, RR_UDP_CSUM_OFF, old_dport, new_dport, BPF_F_MARK_MANGLED_0 | 2);
    bpf_l3_csum_replace(skb, RR_IP_CSUM_OFF, old_saddr, new_saddr, 4);
    bpf_l3_csum_replace(skb, RR_IP_CSUM_OFF, old_daddr, new_daddr, 4);
    bpf_skb_store_bytes(skb, RR_IP_SRC_OFF, &new_saddr, 4, 0);
    bpf_skb_store_bytes(skb, RR_IP_DST_OFF, &new_daddr, 4, 0);
    bpf_skb_store_bytes(skb, RR_UDP_SPORT_OFF, &new_sport, 2, 0);
    bpf_skb_store_bytes(skb, RR_UDP_DPORT_OFF, &new_dport, 2, 0);

    if (!out_ifindex)
        return RR_TCX_PASS; /* the peer is on this host: up the local stack to its socket */
    /* Out of that interface; the kernel routes to the next hop and resolves its
     * link-layer address (queueing the packet while it does), without needing
     * net.ipv4.ip_forward (which bpf_fib_lookup would). */
    return bpf_redirect_neigh(out_ifindex, NULL, 0, 0);
}

char LICENSE[] SEC("license") = "GPL";
