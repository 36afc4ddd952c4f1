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
 * usage: dsd-delayline --queue N [--comp-us C] [--spin-us S] [--tag T] [--seed S] [--max-pkts M] [--control]
 *                      [--trace ID=PATH:OFFSET_MS ...] SRC,DELAY_US,JITTER_US,LOSS_PROB[,TRACE_ID,PRE_US] ...
 * Prints "ready" on stdout once bound; on SIGTERM/SIGINT prints one JSON line of counters on stderr.
 *
 * Live changes (the schedule, testbed/emu/schedule.py), with --control: commands on stdin, one per line, each acknowledged on
 * stdout with "ok N T_NS" (N = commands so far, T_NS = CLOCK_MONOTONIC when it took effect):
 *   t0 NS                               the run's start (capacity traces count time from it); the release
 *                                       lateness counters restart from it, so the exit counters describe
 *                                       the run, not the path verification's probes and rate tests before it
 *   flow SRC DELAY_US JITTER_US LOSS    new parameters for packets that arrive from now on; packets already
 *                                       held keep their release times (nothing is dropped or reset) and a
 *                                       source's packets still never overtake each other
 *   down SRC 0|1                        1: the path from SRC is down, its packets are dropped on arrival;
 *                                       0: up again (held packets were never touched)
 *   at T_NS ID CMD                      CMD (flow / down) at CLOCK_MONOTONIC T_NS, by this program's precise
 *                                       timer loop; acknowledged "ok ID T_NS" when it took effect
 * Capacity traces (Mahimahi packet-delivery format, testbed/schedule.py TraceServer is the same rule): a flow
 * with TRACE_ID >= 0 enters that trace's FIFO PRE_US after it arrives (the delay of the hops before the traced
 * one); each opportunity (a line: a millisecond since t0, looped with the last line as period) carries 1500
 * bytes of IP packets, a packet leaves at the opportunity carrying its last byte (never before it entered),
 * then takes the rest of the delay. Before t0 is known trace flows are not rate-limited.
 * --selftest-trace PATH OFFSET_MS: read "T_S BYTES" lines on stdin, print the departure time (s) of each.
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
    uint64_t pkts, lost, overflow, dropped_down;
    int down;              /* the path is down: drop on arrival */
    int trace;             /* index into traces, or -1 */
    int64_t pre_ns;        /* delay before the traced hop */
} flow_t;

#define OPPORTUNITY_BYTES 1500
typedef struct {
    int64_t *t;            /* opportunity times (ms), non-decreasing, t[n-1] = the loop period */
    size_t n, i;           /* i: next unused opportunity of loop k */
    int64_t period, offset, k, left, cur_ms;
    int id;
} trace_t;

static trace_t traces[16];
static int ntraces;
static int64_t t0_ns = -1;

static int64_t op_time(const trace_t *tr) { return tr->t[tr->i] + tr->k * tr->period - tr->offset; }

/* The first unused opportunity at millisecond >= m (earlier ones are skipped: lost), consumed. */
static int64_t trace_take(trace_t *tr, int64_t m) {
    if (op_time(tr) < m) {
        int64_t k2 = (m + tr->offset) / tr->period, base = m + tr->offset - k2 * tr->period;
        size_t lo = 0, hi = tr->n;  /* lower bound of base in t (base < period = t[n-1]: found) */
        while (lo < hi) { size_t mid = (lo + hi) / 2; if (tr->t[mid] < base) lo = mid + 1; else hi = mid; }
        if (k2 > tr->k || (k2 == tr->k && lo > tr->i)) { tr->k = k2; tr->i = lo; }
        while (op_time(tr) < m) { if (++tr->i == tr->n) { tr->i = 0; tr->k++; } }
    }
    int64_t v = op_time(tr);
    if (++tr->i == tr->n) { tr->i = 0; tr->k++; }
    return v;
}

/* Departure (ns since t0) of a packet of `bytes` that entered the trace's queue at `entry` (ns since t0 >= 0). */
static int64_t trace_depart(trace_t *tr, int64_t entry, int64_t bytes) {
    int64_t m = entry / 1000000;
    int64_t need = bytes;
    if (tr->left && tr->cur_ms >= m) {
        int64_t use = need < tr->left ? need : tr->left;
        tr->left -= use;
        need -= use;
    }
    while (need > 0) {
        tr->cur_ms = trace_take(tr, m);
        int64_t use = need < OPPORTUNITY_BYTES ? need : OPPORTUNITY_BYTES;
        need -= use;
        tr->left = OPPORTUNITY_BYTES - use;
    }
    int64_t out = tr->cur_ms * 1000000;
    return out > entry ? out : entry;
}

static int load_trace(trace_t *tr, const char *path, int64_t offset_ms) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); return -1; }
    size_t cap = 1 << 16;
    tr->t = malloc(cap * sizeof(int64_t));
    tr->n = 0;
    long long v;
    while (fscanf(f, "%lld", &v) == 1) {
        if (tr->n == cap) { cap *= 2; tr->t = realloc(tr->t, cap * sizeof(int64_t)); }
        tr->t[tr->n++] = v;
    }
    fclose(f);
    if (!tr->n || tr->t[tr->n - 1] <= 0) { fprintf(stderr, "%s: empty trace or last time <= 0\n", path); return -1; }
    tr->period = tr->t[tr->n - 1];
    tr->offset = offset_ms % tr->period;
    tr->k = 0; tr->i = 0; tr->left = 0; tr->cur_ms = -1;
    while (op_time(tr) < 0) { if (++tr->i == tr->n) { tr->i = 0; tr->k++; } }
    return 0;
}

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
    if (f->down) {
        f->dropped_down++;
        return nfq_set_verdict(qh, id, NF_DROP, 0, NULL);
    }
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
    if (f->trace >= 0 && t0_ns >= 0 && arrival + f->pre_ns >= t0_ns && len >= 4) {
        int64_t bytes = ((int64_t)payload[2] << 8) | payload[3];  /* IPv4 total length */
        int64_t entry = arrival + f->pre_ns - t0_ns;
        int64_t dep = trace_depart(&traces[f->trace], entry, bytes);
        release = t0_ns + dep + (d - f->pre_ns > 0 ? d - f->pre_ns : 0);
    }
    if (release < f->last_release) release = f->last_release;
    f->last_release = release;
    f->held++;
    item_t it = {release, seq_no++, id, (uint32_t)(f - flows)};
    heap_push(it);
    return 0;
}

static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static uint64_t n_cmds;
static int control;  /* --control: read commands on stdin */

typedef struct { int64_t at; unsigned long long id; char line[240]; } pending_t;  /* "at" commands, sorted by time */
static pending_t pending[4096];
static size_t n_pending;

static void exec_command(unsigned long long id, char *line);

/* One control line (see the header); acknowledged with "ok N T_NS" or "err N what". */
static void on_command(char *line) {
    long long at;
    unsigned long long id;
    int used = 0;
    n_cmds++;
    if (sscanf(line, "at %lld %llu %n", &at, &id, &used) == 2 && used > 0) {
        if (n_pending == sizeof(pending) / sizeof(pending[0]) || strlen(line + used) >= sizeof(pending[0].line)) {
            printf("err %llu too many pending commands\n", id);
            fflush(stdout);
            return;
        }
        size_t i = n_pending++;
        while (i > 0 && pending[i - 1].at > at) { pending[i] = pending[i - 1]; i--; }
        pending[i].at = at;
        pending[i].id = id;
        strcpy(pending[i].line, line + used);
        return;
    }
    exec_command((unsigned long long)n_cmds, line);
}

/* Apply the "at" commands that are due. */
static void run_pending(int64_t now) {
    size_t k = 0;
    while (k < n_pending && pending[k].at <= now) {
        exec_command(pending[k].id, pending[k].line);
        k++;
    }
    if (k) { memmove(pending, pending + k, (n_pending - k) * sizeof(pending_t)); n_pending -= k; }
}

static void exec_command(unsigned long long n, char *line) {
    char ip[64];
    long long a;
    double dus, jus, loss;
    int on;
    if (sscanf(line, "t0 %lld", &a) == 1) {
        t0_ns = a;
        n_late = n_late_1ms = n_released = 0;
        late_sum_ns = late_max_ns = 0;
    } else if (sscanf(line, "flow %63s %lf %lf %lf", ip, &dus, &jus, &loss) == 4 ||
               sscanf(line, "down %63s %d", ip, &on) == 2) {
        struct in_addr ad;
        flow_t *f = inet_pton(AF_INET, ip, &ad) == 1 ? flow_find(ad.s_addr) : NULL;
        if (!f) { printf("err %llu unknown source %s\n", n, ip); fflush(stdout); return; }
        if (line[0] == 'f') {
            f->delay_ns = (int64_t)(dus * 1000.0);
            f->jitter_ns = (int64_t)(jus * 1000.0);
            f->loss = loss;
        } else {
            f->down = on;
        }
    } else {
        printf("err %llu bad command\n", n);
        fflush(stdout);
        return;
    }
    printf("ok %llu %lld\n", n, (long long)now_ns());
    fflush(stdout);
}

static int selftest_trace(const char *path, long long offset_ms) {
    trace_t tr;
    if (load_trace(&tr, path, offset_ms) < 0) return 1;
    double ts;
    long long bytes;
    while (scanf("%lf %lld", &ts, &bytes) == 2)
        printf("%.9f\n", trace_depart(&tr, (int64_t)llround(ts * 1e9), bytes) / 1e9);
    return 0;
}

static void usage(void) {
    fprintf(stderr, "usage: dsd-delayline --queue N [--comp-us C] [--spin-us S] [--tag T] [--seed S] [--max-pkts M] SRC,DELAY_US,JITTER_US,LOSS_PROB ...\n");
    exit(2);
}

int main(int argc, char **argv) {
    int queue = -1;
    flows = calloc(argc, sizeof(flow_t));
    if (argc == 4 && !strcmp(argv[1], "--selftest-trace")) return selftest_trace(argv[2], atoll(argv[3]));
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--queue") && i + 1 < argc) queue = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--control")) control = 1;
        else if (!strcmp(argv[i], "--trace") && i + 1 < argc) {
            char path[4096];
            int id;
            long long off;
            if (ntraces >= 16 || sscanf(argv[++i], "%d=%4095[^:]:%lld", &id, path, &off) != 3) usage();
            if (load_trace(&traces[ntraces], path, off) < 0) return 1;
            traces[ntraces++].id = id;
        }
        else if (!strcmp(argv[i], "--comp-us") && i + 1 < argc) comp_ns = (int64_t)(atof(argv[++i]) * 1000.0);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) rng_state ^= strtoull(argv[++i], NULL, 10) * 0xD1B54A32D192ED03ull;
        else if (!strcmp(argv[i], "--tag") && i + 1 < argc) i++; /* run tag: lets cleanup find us */
        else if (!strcmp(argv[i], "--spin-us") && i + 1 < argc) spin_ns = (int64_t)(atof(argv[++i]) * 1000.0);
        else if (!strcmp(argv[i], "--max-pkts") && i + 1 < argc) max_pkts = (uint32_t)atoi(argv[++i]);
        else {
            char ip[64];
            double dus, jus, loss, pre_us = 0;
            int tid = -1;
            int got = sscanf(argv[i], "%63[^,],%lf,%lf,%lf,%d,%lf", ip, &dus, &jus, &loss, &tid, &pre_us);
            if (got != 4 && got != 6) usage();
            struct in_addr a;
            if (inet_pton(AF_INET, ip, &a) != 1) usage();
            flow_t *f = &flows[nflows++];
            f->src = a.s_addr;
            f->delay_ns = (int64_t)(dus * 1000.0);
            f->jitter_ns = (int64_t)(jus * 1000.0);
            f->loss = loss;
            f->trace = -1;
            f->pre_ns = (int64_t)(pre_us * 1000.0);
            for (int k = 0; k < ntraces; k++) if (tid >= 0 && traces[k].id == tid) f->trace = k;
            if (tid >= 0 && f->trace < 0) usage();
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
    static char cmd[4096];
    size_t cmd_n = 0;
    int stdin_open = control;
    struct pollfd pfds[2] = {{fd, POLLIN, 0}, {0, POLLIN, 0}};
    while (!stop_flag) {
        int64_t now = now_ns();
        if (n_pending && pending[0].at <= now) run_pending(now);  /* scheduled changes first */
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
        if (heap_n || n_pending) {
            int64_t due = heap_n ? heap[0].release : pending[0].at;
            if (n_pending && pending[0].at < due) due = pending[0].at;
            int64_t wait = due - now;
            if (wait <= spin_ns) { /* close to due: poll without sleeping (timer wake-ups are late on VMs) */
                wait = 0;
            } else {
                wait -= spin_ns;
            }
            ts.tv_sec = wait / 1000000000ll;
            ts.tv_nsec = wait % 1000000000ll;
            tsp = &ts;
        }
        int r = ppoll(pfds, stdin_open ? 2 : 1, tsp, NULL);
        if (r < 0) {
            if (errno == EINTR) continue;
            perror("ppoll");
            break;
        }
        if (r > 0 && stdin_open && (pfds[1].revents & (POLLIN | POLLHUP))) {
            ssize_t n = read(0, cmd + cmd_n, sizeof(cmd) - 1 - cmd_n);
            if (n <= 0) {
                stdin_open = 0;  /* no controller (or it closed the pipe): no more live changes */
            } else {
                cmd_n += (size_t)n;
                char *start = cmd, *nl;
                while ((nl = memchr(start, '\n', cmd + cmd_n - start))) {
                    *nl = 0;
                    on_command(start);
                    start = nl + 1;
                }
                cmd_n -= (size_t)(start - cmd);
                memmove(cmd, start, cmd_n);
                if (cmd_n == sizeof(cmd) - 1) cmd_n = 0;  /* an over-long line: dropped */
            }
        }
        if (r > 0 && (pfds[0].revents & POLLIN)) {
            for (int k = 0; k < 64; k++) { /* drain what is there, then release what is due */
                ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (n <= 0) break;
                nfq_handle_packet(h, buf, (int)n);
            }
        }
    }
    uint64_t pk = 0, lo = 0, ov = 0, dd = 0;
    for (int i = 0; i < nflows; i++) { pk += flows[i].pkts; lo += flows[i].lost; ov += flows[i].overflow; dd += flows[i].dropped_down; }
    fprintf(stderr, "{\"packets\": %llu, \"lost\": %llu, \"overflow\": %llu, \"dropped_down\": %llu, \"commands\": %llu, "
            "\"unknown\": %llu, \"released\": %llu, "
            "\"late_over_100us\": %llu, \"late_over_1ms\": %llu, \"late_mean_us\": %.1f, \"late_max_us\": %.1f, "
            "\"held_at_exit\": %zu, \"kernel_stamped\": %llu, \"sched\": \"%s\"}\n",
            (unsigned long long)pk, (unsigned long long)lo, (unsigned long long)ov, (unsigned long long)dd,
            (unsigned long long)n_cmds, (unsigned long long)n_unknown,
            (unsigned long long)n_released, (unsigned long long)n_late, (unsigned long long)n_late_1ms,
            n_released ? late_sum_ns / 1000.0 / n_released : 0.0, late_max_ns / 1000.0, heap_n,
            (unsigned long long)n_kernel_stamp, sched_name);
    nfq_destroy_queue(qh);
    nfq_close(h);
    return 0;
}
