/*
 * The relay's kernel fast path: the structs the BPF program (relay_kfwd.bpf.c)
 * and the engine (relay_kfwd.c) share, and the engine-side API.
 *
 * A latched direction of a session (packets arriving on leg X's RTP port from
 * X's latched peer, relayed out of leg Y's RTP port to Y's peer) becomes one
 * flow entry in a BPF hash map.  A TCX ingress program on the relay address's
 * interface rewrites such packets (addresses, ports, checksums) and hands them
 * on inside the kernel: they never reach the relay socket, so the relay pays no
 * receive and no send system call and no copy.  The program accounts each packet
 * with the very code the workers use (rtp_stats_core.h) into the entry's copy of
 * the stream's stats, under the entry's spin lock.  Everything it does not know
 * how to handle (RTCP, telephone-events, RTP with padding or extensions, IPv6,
 * IP options, other sources) goes up the stack to the socket as before, where
 * the worker deals with it.
 */
#ifndef RR_RELAY_KFWD_H
#define RR_RELAY_KFWD_H

#include <linux/bpf.h>

#include "rtp_stats.h"

/* Flow key: the relay address and RTP port a packet was sent to (network order). */
typedef struct rr_kf_key {
    uint32_t addr;
    uint16_t port;
    uint16_t pad;
} rr_kf_key;

/* Flow entry: who may send, where it goes, and the direction's stats. */
typedef struct rr_kf_value {
    struct bpf_spin_lock lock;   /* guards forwarded and stats (BPF_F_LOCK from user space) */
    uint32_t src_addr;           /* the only accepted source: the latched peer (network order) */
    uint16_t src_port;
    uint16_t out_port;           /* relay port the packet leaves from: the other leg's RTP port */
    uint32_t dst_addr;           /* the other leg's peer */
    uint16_t dst_port;
    uint8_t rtcp_mux;            /* RTCP on the RTP port (RFC 5761) is left to the worker */
    uint8_t pad;
    uint32_t seen_index;         /* slot * 2 + leg in the last-packet array */
    uint32_t out_ifindex;        /* 0: the peer is on this host (pass up the stack); else send out of it */
    uint64_t forwarded;          /* packets the kernel relayed for this direction */
    rr_stream_stats stats;       /* the leg's stats while the kernel carries its RTP */
} rr_kf_value;

/* Per-CPU totals of the program (one array entry). */
typedef struct rr_kf_totals {
    uint64_t packets;            /* relayed in the kernel */
    uint64_t bytes;              /* their UDP payload bytes */
    uint64_t to_worker;          /* matched a flow but were left to the worker */
} rr_kf_totals;

#ifndef __bpf__
#include <stddef.h>

#include "relay_engine.h"

typedef struct rr_kfwd rr_kfwd;

/* Load the program and attach it (TCX ingress) to the interface that holds
 * `bind`'s IPv4 address, with room for `flows` flow entries.  Returns 0 and sets
 * *out, or -errno with a reason in why (no BPF object built in, not permitted,
 * no such interface, kernel without TCX...).  Needs CAP_BPF and CAP_NET_ADMIN.
 * The attachment is a BPF link owned by this process: it goes away with it. */
int rr_kfwd_open(const rr_sockaddr *bind, uint32_t flows, rr_kfwd **out, char *why, size_t whylen);
void rr_kfwd_close(rr_kfwd *k);
/* Name of the interface the program is attached to. */
const char *rr_kfwd_ifname(const rr_kfwd *k);

/* Create or replace the flow of packets to `in_port` from `src`, relayed from
 * `out_port` to `dst`, starting from the stats `st`.  0 or -errno. */
int rr_kfwd_install(rr_kfwd *k, uint16_t in_port, const rr_sockaddr *src, uint16_t out_port,
                    const rr_sockaddr *dst, uint8_t rtcp_mux, uint32_t seen_index,
                    const rr_stream_stats *st);
/* Copy a flow's stats and forwarded count (consistent: under its lock).  0 or -errno. */
int rr_kfwd_read(rr_kfwd *k, uint16_t in_port, rr_stream_stats *st, uint64_t *forwarded);
/* Remove a flow, returning its final stats and count (one system call: nothing is
 * counted twice or lost between a read and a delete).  0 or -errno. */
int rr_kfwd_withdraw(rr_kfwd *k, uint16_t in_port, rr_stream_stats *st, uint64_t *forwarded);
/* Monotonic time of the newest packet the kernel relayed for seen_index, 0 = none. */
int64_t rr_kfwd_last_seen(const rr_kfwd *k, uint32_t seen_index);
/* Totals over all CPUs, and the program's run time when kernel.bpf_stats_enabled is on. */
void rr_kfwd_totals(rr_kfwd *k, rr_kf_totals *out, uint64_t *run_ns, uint64_t *run_cnt);
#endif

#endif
