/* dsd-delayline: the user-space delay line of the `userspace` shaping backend.
 *
 * Runs inside one emulated host (network namespace), bound to one NFQUEUE that an iptables rule in the
 * host's mangle/PREROUTING chain feeds with the packets arriving from the sources that have a delay,
 * jitter or loss on their path to this host (the receiving side; see DESIGN.md for why not egress).
 * Each packet is held until  arrival + delay + N(0, jitter^2) - comp  (comp = the measured fixed overhead
 * of the NFQUEUE round trip), but never before the previous packet of the same source: jitter does not
 * reorder. Loss: dropped with the configured probability. A per-source cap on held packets bounds memory.
 *
 * On a busy host (issue 17): `arrival` is the packet's kernel receive timestamp when the kernel has one (the
 * wall-clock skb stamp, converted to CLOCK_MONOTONIC), not the moment this process got the CPU to read it, so
 * a late wake-up does not lengthen the delay; and the process asks for real-time scheduling (SCHED_FIFO,
 * falling back to nice -15 where that is not allowed), so releases are not queued behind the node processes.
 * The scheduling class obtained and the release lateness are in the exit counters.
 *
 * usage: dsd-delayline --queue N [--comp-us C] [--spin-us S] [--tag T] [--seed S] [--max-pkts M] SRC,DELAY_US,JITTER_US,LOSS_PROB ...
 * Prints "ready" on stdout once bound; on SIGTERM/SIGINT prints one JSON line of counters on stderr.
 * Build: cc -O2 -o dsd-delayline delayline.c -lnetfilter_queue
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif
#ifndef NETLINK_NO_ENOBUFS
#define NETLINK_NO_ENOBUFS 5
#endif

typedef struct {
    uint32_t src;          /* network byte order */
    int64_t delay_ns, jitter_ns;
    double loss;
    int64_t last_release;  /* no reordering within a source */
    uint32_t held;
    uint64_t pkts, lost, overflow;
} flow_t;

typedef struct {
    int64_t release;
    uint64_t seq;
    uint32_t id;
    uint32_t flow;
} item_t;

static flow_t *flows;
static int nflows;
static item_t *heap;
static size_t heap_n, heap_cap;
static uint64_t seq_no;
static int64_t comp_ns;
static uint32_t max_pkts = 100000;
static int64_t spin_ns;
static volatile sig_atomic_t stop_flag;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t n_late, n_released, n_unknown;
static int64_t late_sum_ns, late_max_ns;
static uint64_t n_late_1ms, n_kernel_stamp;
static const char *sched_name = "other";

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static uint64_t rng_next(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double rng_uniform(void) { return ((rng_next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static double rng_normal(void) {
    static int have = 0;
    static double spare;
    if (have) { have = 0; return spare; }
    double u = rng_uniform(), v = rng_uniform();
    double r = sqrt(-2.0 * log(u));
    spare = r * sin(2 * M_PI * v);
    have = 1;
    return r * cos(2 * M_PI * v);
}

static int item_less(const item_t *a, const item_t *b) {
    return a->release < b->release || (a->release == b->release && a->seq < b->seq);
}
static void heap_push(item_t it) {
    if (heap_n == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 4096;
        heap = realloc(heap, heap_cap * sizeof(item_t));
        if (!heap) { perror("realloc"); exit(1); }
    }
    size_t i = heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!item_less(&it, &heap[p])) break;
        heap[i] = heap[p];
        i = p;
    }
    heap[i] = it;
}
static item_t heap_pop(void) {
    item_t top = heap[0], last = heap[--heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= heap_n) break;
        if (c + 1 < heap_n && item_less(&heap[c + 1], &heap[c])) c++;
        if (!item_less(&heap[c], &last)) break;
        heap[i] = heap[c];
        i = c;
    }
    if (heap_n) heap[i] = last;
    return top;
}

static int flow_cmp(const void *a, const void *b) {
    uint32_t x = ((const flow_t *)a)->src, y = ((const flow_t *)b)->src;
    return x < y ? -1 : x > y;
}
static flow_t *flow_find(uint32_t src) {
    int lo = 0, hi = nflows - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (flows[mid].src == src) return &flows[mid];
        if (flows[mid].src < src) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

static int64_t real_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *nfmsg, struct nfq_data *nfa, void *data) {
    (void)nfmsg; (void)data;
    int64_t arrival = now_ns();
    struct timeval tv;
    if (nfq_get_timestamp(nfa, &tv) == 0 && tv.tv_sec > 0) { /* kernel receive time, wall clock */
        int64_t waited = real_ns() - ((int64_t)tv.tv_sec * 1000000000ll + (int64_t)tv.tv_usec * 1000ll);
        if (waited > 0 && waited < 1000000000ll) { /* sane: between 0 and 1 s ago (clock steps are ignored) */
            arrival -= waited;
            n_kernel_stamp++;
        }
    }
    struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
    if (!ph) return 0;
    uint32_t id = ntohl(ph->packet_id);
    unsigned char *payload;
    int len = nfq_get_payload(nfa, &payload);
    flow_t *f = NULL;
    if (len >= 20 && (payload[0] >> 4) == 4) {
        uint32_t src;
        memcpy(&src, payload + 12, 4);
        f = flow_find(src);
    }
    if (!f) { /* not ours to delay */
        n_unknown++;
        return nfq_set_verdict(qh, id, NF_ACCEPT, 0, NULL);
    }
    f->pkts++;
    if (f->loss > 0 && rng_uniform() < f->loss) {
        f->lost++;
        return nfq_set_verdict(qh, id, NF_DROP, 0, NULL);
    }
    if (f->held >= max_pkts) {
        f->overflow++;
        return nfq_set_verdict(qh, id, NF_DROP, 0, NULL);
    }
    int64_t d = f->delay_ns - comp_ns;
    if (f->jitter_ns > 0) d += (int64_t)(rng_normal() * (double)f->jitter_ns);
    if (d < 0) d = 0;
    int64_t release = arrival + d;
    if (release < f->last_release) release = f->last_release;
    f->last_release = release;
    f->held++;
    item_t it = {release, seq_no++, id, (uint32_t)(f - flows)};
    heap_push(it);
    return 0;
}

static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static void usage(void) {
    fprintf(stderr, "usage: dsd-delayline --queue N [--comp-us C] [--spin-us S] [--tag T] [--seed S] [--max-pkts M] SRC,DELAY_US,JITTER_US,LOSS_PROB ...\n");
    exit(2);
}

int main(int argc, char **argv) {
    int queue = -1;
    flows = calloc(argc, sizeof(flow_t));
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--queue") && i + 1 < argc) queue = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--comp-us") && i + 1 < argc) comp_ns = (int64_t)(atof(argv[++i]) * 1000.0);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) rng_state ^= strtoull(argv[++i], NULL, 10) * 0xD1B54A32D192ED03ull;
        else if (!strcmp(argv[i], "--tag") && i + 1 < argc) i++; /* run tag: lets cleanup find us */
        else if (!strcmp(argv[i], "--spin-us") && i + 1 < argc) spin_ns = (int64_t)(atof(argv[++i]) * 1000.0);
        else if (!strcmp(argv[i], "--max-pkts") && i + 1 < argc) max_pkts = (uint32_t)atoi(argv[++i]);
        else {
            char ip[64];
            double dus, jus, loss;
            if (sscanf(argv[i], "%63[^,],%lf,%lf,%lf", ip, &dus, &jus, &loss) != 4) usage();
            struct in_addr a;
            if (inet_pton(AF_INET, ip, &a) != 1) usage();
            flow_t *f = &flows[nflows++];
            f->src = a.s_addr;
            f->delay_ns = (int64_t)(dus * 1000.0);
            f->jitter_ns = (int64_t)(jus * 1000.0);
            f->loss = loss;
        }
    }
    if (queue < 0) usage();
    qsort(flows, nflows, sizeof(flow_t), flow_cmp);
    prctl(PR_SET_TIMERSLACK, 1000ul, 0, 0, 0);
    /* kernel receive timestamps on every packet: the kernel stamps skbs only while some socket asks for it */
    int stamp_sock = socket(AF_INET, SOCK_DGRAM, 0), on = 1;
    if (stamp_sock >= 0) setsockopt(stamp_sock, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on));
    struct sched_param sp = {.sched_priority = 10};
    if (sched_setscheduler(0, SCHED_FIFO, &sp) == 0) sched_name = "fifo";
    else if (setpriority(PRIO_PROCESS, 0, -15) == 0) sched_name = "nice-15";
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    signal(SIGPIPE, SIG_IGN);

    struct nfq_handle *h = nfq_open();
    if (!h) { perror("nfq_open"); return 1; }
    nfq_unbind_pf(h, AF_INET);
    if (nfq_bind_pf(h, AF_INET) < 0) { perror("nfq_bind_pf"); return 1; }
    struct nfq_q_handle *qh = nfq_create_queue(h, queue, &on_packet, NULL);
    if (!qh) { perror("nfq_create_queue"); return 1; }
    if (nfq_set_mode(qh, NFQNL_COPY_PACKET, 20) < 0) { perror("nfq_set_mode"); return 1; }
    nfq_set_queue_maxlen(qh, 1u << 20);
    nfq_set_queue_flags(qh, NFQA_CFG_F_GSO, NFQA_CFG_F_GSO);
    int fd = nfq_fd(h);
    nfnl_rcvbufsiz(nfq_nfnlh(h), 32u << 20);
    int one = 1;
    setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof(one));
    printf("ready\n");
    fflush(stdout);

    static char buf[256 * 1024] __attribute__((aligned));
    struct pollfd pfd = {fd, POLLIN, 0};
    while (!stop_flag) {
        int64_t now = now_ns();
        while (heap_n && heap[0].release <= now) {
            item_t it = heap_pop();
            int64_t late = now - it.release;
            late_sum_ns += late;
            if (late > late_max_ns) late_max_ns = late;
            if (late > 100000) n_late++;
            if (late > 1000000) n_late_1ms++;
            n_released++;
            flows[it.flow].held--;
            nfq_set_verdict(qh, it.id, NF_ACCEPT, 0, NULL);
            now = now_ns();
        }
        struct timespec ts, *tsp = NULL;
        if (heap_n) {
            int64_t wait = heap[0].release - now;
            if (wait <= spin_ns) { /* close to due: poll without sleeping (timer wake-ups are late on VMs) */
                wait = 0;
            } else {
                wait -= spin_ns;
            }
            ts.tv_sec = wait / 1000000000ll;
            ts.tv_nsec = wait % 1000000000ll;
            tsp = &ts;
        }
        int r = ppoll(&pfd, 1, tsp, NULL);
        if (r < 0) {
            if (errno == EINTR) continue;
            perror("ppoll");
            break;
        }
        if (r > 0) {
            for (int k = 0; k < 64; k++) { /* drain what is there, then release what is due */
                ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (n <= 0) break;
                nfq_handle_packet(h, buf, (int)n);
            }
        }
    }
    uint64_t pk = 0, lo = 0, ov = 0;
    for (int i = 0; i < nflows; i++) { pk += flows[i].pkts; lo += flows[i].lost; ov += flows[i].overflow; }
    fprintf(stderr, "{\"packets\": %llu, \"lost\": %llu, \"overflow\": %llu, \"unknown\": %llu, \"released\": %llu, "
            "\"late_over_100us\": %llu, \"late_over_1ms\": %llu, \"late_mean_us\": %.1f, \"late_max_us\": %.1f, "
            "\"held_at_exit\": %zu, \"kernel_stamped\": %llu, \"sched\": \"%s\"}\n",
            (unsigned long long)pk, (unsigned long long)lo, (unsigned long long)ov, (unsigned long long)n_unknown,
            (unsigned long long)n_released, (unsigned long long)n_late, (unsigned long long)n_late_1ms,
            n_released ? late_sum_ns / 1000.0 / n_released : 0.0, late_max_ns / 1000.0, heap_n,
            (unsigned long long)n_kernel_stamp, sched_name);
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}
