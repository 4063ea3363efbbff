/*
 * Native RTP load generator: paced G.711-shaped streams through relay sessions.
 *
 * Every call has two directions.  Direction A->B is sent from one of the
 * generator's "A" sockets to the relay's leg-A port and must come back on one of
 * the "B" sockets from the relay's leg-B port; B->A the other way round.  A few
 * sockets per side carry all calls (the relay latches each leg to one of them),
 * so the generator's own cost is batched sendmmsg/recvmmsg and it leaves the CPU
 * to the relay, which still sees one socket per stream.
 *
 * Each payload carries the send time (CLOCK_MONOTONIC ns) and the stream index,
 * so the receiver measures the added latency of relay + loopback per packet.
 */
#ifndef RTP_LOAD_GEN_H
#define RTP_LOAD_GEN_H

#include <stdint.h>

typedef struct gen gen;

typedef struct gen_result {
    uint64_t sent;
    uint64_t received;
    uint64_t send_errors;
    uint64_t bad_packets;      /* received but not ours (wrong size/stream) */
    uint64_t streams_with_loss;
    double latency_p50_us;
    double latency_p99_us;
    double latency_p999_us;
    double latency_max_us;
    double send_seconds;       /* first send to last send */
    double sender_cpu_s, receiver_cpu_s; /* CLOCK_THREAD_CPUTIME_ID of each thread */
    int realtime_threads;
    int pinned_threads;
    /* How late the sender's ticks started against the schedule: if these grow
     * the generator itself (not the relay) was short of CPU. */
    double tx_late_p50_us, tx_late_p99_us, tx_late_max_us;
} gen_result;

/* calls: number of calls (2 streams each); socks_per_side: sockets for each side.
 * rcvbuf: SO_RCVBUF(FORCE) on generator sockets. Returns NULL and sets errno on failure. */
gen *gen_new(int calls, int socks_per_side, int rcvbuf);
void gen_free(gen *g);
/* Local address (IPv4, host order port) of socket `k` of side 0 (A) or 1 (B). */
int gen_sock_port(const gen *g, int side, int k);
int gen_sock_for_call(const gen *g, int call);
/* Relay ports the call's streams are sent to: A->B goes to a_port, B->A to b_port. */
void gen_set_target(gen *g, int call, uint16_t a_port, uint16_t b_port);
/* Run for `seconds` of sending at period_ns per stream (payload_len bytes of
 * payload after the 12-byte RTP header), then wait drain_ns for stragglers. */
/* rt_priority > 0: run the generator threads SCHED_FIFO (keeps a shared machine's
 * other load from stalling the sender between its send stamp and its send). */
/* cpu >= 0: pin the generator threads to that CPU.  senders: sender threads
 * (1..8), each pacing its share of the calls (call % senders); at 200k pps out
 * one sender needs a whole core for the loopback send path alone. */
int gen_run(gen *g, double seconds, int64_t period_ns, int payload_len, int64_t tick_ns, int64_t drain_ns,
            int rt_priority, int cpu, int senders, gen_result *out);

#endif
