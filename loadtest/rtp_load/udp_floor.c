/*
 * The kernel's floor for relaying over loopback on this machine: what one
 * 172-byte UDP datagram costs to send (sendto, including its delivery into the
 * receiving socket, which loopback does in the sender's context), to receive
 * (recvfrom), and what a no-op system call costs.  Single thread, no epoll, no
 * scheduling: the relay cannot beat send + recv per packet, the generator pays
 * the same again, so 2 x (send + recv) x relayed pps is the machine-wide floor.
 *
 *   cc -O2 -o /tmp/udp_floor loadtest/rtp_load/udp_floor.c && /tmp/udp_floor
 *
 * Prints one JSON line; only 127.0.0.1 is addressed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* G.711 20 ms: 12-byte RTP header + 160 bytes. */
#define PACKET_LEN 172
/* Datagrams per measured batch: fits the receiver's default buffer (~208 KB). */
#define BATCH 128
/* Batches measured; the median batch gives the figure. */
#define ROUNDS 2001
/* Distinct destination sockets, as with one relay socket per stream. */
#define SOCKETS 64

/* CPU time of this thread, not wall time: on a shared machine preemption would
 * otherwise count as cost. */
static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int udp_socket(struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    if (addr)
        *addr = a;
    return fd;
}

int main(void)
{
    static double send_ns[ROUNDS], recv_ns[ROUNDS], null_ns[ROUNDS];
    int rx[SOCKETS];
    struct sockaddr_in dst[SOCKETS];
    for (int k = 0; k < SOCKETS; k++)
        if ((rx[k] = udp_socket(&dst[k])) < 0)
            return perror("socket"), 1;
    int tx = udp_socket(NULL);
    if (tx < 0)
        return perror("socket"), 1;
    char buf[PACKET_LEN];
    memset(buf, 0xd5, sizeof(buf));
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (int i = 0; i < BATCH; i++)
            sendto(tx, buf, sizeof(buf), 0, (struct sockaddr *)&dst[i % SOCKETS], sizeof(dst[0]));
        double t1 = now_ns();
        for (int i = 0; i < BATCH; i++)
            recvfrom(rx[i % SOCKETS], buf, sizeof(buf), MSG_DONTWAIT, NULL, NULL);
        double t2 = now_ns();
        for (int i = 0; i < BATCH; i++)
            syscall(SYS_getppid);
        double t3 = now_ns();
        send_ns[r] = (t1 - t0) / BATCH;
        recv_ns[r] = (t2 - t1) / BATCH;
        null_ns[r] = (t3 - t2) / BATCH;
    }
    qsort(send_ns, ROUNDS, sizeof(double), cmp);
    qsort(recv_ns, ROUNDS, sizeof(double), cmp);
    qsort(null_ns, ROUNDS, sizeof(double), cmp);
    double s = send_ns[ROUNDS / 2], v = recv_ns[ROUNDS / 2], n = null_ns[ROUNDS / 2];
    printf("{\"packet_bytes\": %d, \"sendto_us\": %.3f, \"recvfrom_us\": %.3f, \"null_syscall_us\": %.3f, "
           "\"relay_floor_us_per_packet\": %.3f, \"machine_floor_cores_at_200k_pps\": %.3f}\n",
           PACKET_LEN, s / 1000, v / 1000, n / 1000, (s + v) / 1000, 2 * (s + v) * 200000 / 1e9);
    return 0;
}
