/*
 * vc-nfq-delay: the latency of a virtual-cluster link (.ci/vcluster).
 *
 * The kernel here has no netem, so one-way latency is added in userspace:
 * an iptables rule sends every packet a host puts on its link to NFQUEUE
 * queue Q, and this program holds each packet for HOLD_US microseconds
 * (from the moment it arrives here) before accepting it. A constant hold
 * keeps packets in order. Verdicts are given in batches (NFQNL_MSG_VERDICT_BATCH
 * accepts every packet up to an id), so a burst costs one syscall and a
 * lost notification cannot strand a packet behind a later one.
 *
 * Usage: vc-nfq-delay QUEUE HOLD_US
 * Run it with a real-time priority (chrt -f), or busy ranks delay its timer.
 * Build: gcc -O2 -o vc-nfq-delay nfq-delay.c -lnetfilter_queue -lmnl
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#define RING 65536          /* > the kernel queue length set below */
#define QMAXLEN 16384

static struct { uint32_t id; uint64_t due; } ring[RING];
static size_t head, tail;   /* ring[head..tail) is waiting, oldest first */
static uint64_t hold_ns;
static uint32_t queue_num;
static struct mnl_socket *nl;
static unsigned long long dropped_full;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "vc-nfq-delay (queue %u): %s: %s\n", queue_num, what, strerror(errno));
    exit(1);
}

static void send_or_die(struct nlmsghdr *nlh, const char *what)
{
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
        die(what);
}

/* Accept (or drop) every queued packet with an id <= id. */
static void verdict_upto(uint32_t id, int verdict)
{
    char buf[8192];
    struct nlmsghdr *nlh = nfq_nlmsg_put(buf, NFQNL_MSG_VERDICT_BATCH, queue_num);
    nfq_nlmsg_verdict_put(nlh, (int)id, verdict);
    send_or_die(nlh, "sending a verdict");
}

static int on_packet(const struct nlmsghdr *nlh, void *data)
{
    (void)data;
    struct nlattr *attr[NFQA_MAX + 1] = { 0 };
    if (nfq_nlmsg_parse(nlh, attr) < 0 || !attr[NFQA_PACKET_HDR])
        return MNL_CB_OK;
    struct nfqnl_msg_packet_hdr *ph = mnl_attr_get_payload(attr[NFQA_PACKET_HDR]);
    uint32_t id = ntohl(ph->packet_id);
    if (tail - head >= RING) {
        /* Cannot happen with QMAXLEN < RING; drop rather than reorder. */
        dropped_full++;
        char buf[8192];
        struct nlmsghdr *v = nfq_nlmsg_put(buf, NFQNL_MSG_VERDICT, queue_num);
        nfq_nlmsg_verdict_put(v, (int)id, NF_DROP);
        send_or_die(v, "sending a drop verdict");
        return MNL_CB_OK;
    }
    ring[tail % RING].id = id;
    ring[tail % RING].due = now_ns() + hold_ns;
    tail++;
    return MNL_CB_OK;
}

static void configure(void)
{
    char buf[8192];
    struct nlmsghdr *nlh;

    nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, queue_num);
    nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND);
    send_or_die(nlh, "binding the queue (is another holder running on it?)");

    nlh = nfq_nlmsg_put(buf, NFQNL_MSG_CONFIG, queue_num);
    nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_META, 0);    /* no payload copies */
    nfq_nlmsg_cfg_put_qmaxlen(nlh, QMAXLEN);
    /* Queue GSO packets whole instead of segmenting them first. */
    mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(NFQA_CFG_F_GSO));
    mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_GSO));
    send_or_die(nlh, "configuring the queue");
}

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: vc-nfq-delay QUEUE HOLD_US\n");
        return 2;
    }
    char *end;
    unsigned long q = strtoul(argv[1], &end, 10);
    if (*end || q > 65535) { fprintf(stderr, "vc-nfq-delay: bad queue '%s'\n", argv[1]); return 2; }
    unsigned long us = strtoul(argv[2], &end, 10);
    if (*end || us > 10000000) { fprintf(stderr, "vc-nfq-delay: bad hold '%s' (microseconds)\n", argv[2]); return 2; }
    queue_num = (uint32_t)q;
    hold_ns = (uint64_t)us * 1000u;

    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    nl = mnl_socket_open(NETLINK_NETFILTER);
    if (!nl) die("opening the netlink socket");
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) die("binding the netlink socket");
    int rcvbuf = 8 << 20;
    setsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
    int one = 1;   /* an overrun must not kill us: the batch verdict recovers */
    mnl_socket_setsockopt(nl, NETLINK_NO_ENOBUFS, &one, sizeof one);
    configure();

    int fd = mnl_socket_get_fd(nl);
    static char buf[0x10000 + 8192];
    while (!stop) {
        /* Release what is due, newest due id last, in one batch verdict. */
        uint64_t t = now_ns();
        if (head != tail && ring[head % RING].due <= t) {
            uint32_t last = 0;
            while (head != tail && ring[head % RING].due <= t)
                last = ring[head++ % RING].id;
            verdict_upto(last, NF_ACCEPT);
            continue;
        }
        struct timespec ts, *tsp = NULL;
        if (head != tail) {
            uint64_t wait = ring[head % RING].due - t;
            ts.tv_sec = (time_t)(wait / 1000000000u);
            ts.tv_nsec = (long)(wait % 1000000000u);
            tsp = &ts;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int r = ppoll(&pfd, 1, tsp, NULL);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("waiting for packets");
        }
        if (r == 0) continue;
        for (;;) {
            ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
                if (errno == ENOBUFS) continue;
                die("receiving packets");
            }
            if (mnl_cb_run(buf, (size_t)n, 0, MNL_SOCKET_AUTOPID, on_packet, NULL) < 0
                && errno != EINTR)
                break;
        }
    }
    /* Let everything still held go, so stopping us loses nothing. */
    if (head != tail) verdict_upto(ring[(tail - 1) % RING].id, NF_ACCEPT);
    if (dropped_full) fprintf(stderr, "vc-nfq-delay: %llu packets dropped (ring full)\n", dropped_full);
    mnl_socket_close(nl);
    return 0;
}
