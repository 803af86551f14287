/* server_load: load on a running shoal-server, over TLS WebSockets on
 * loopback, with the real protocol (bench/run_server_load starts the server
 * and runs the first three modes, bench/run_tls_resume the fourth;
 * docs/benchmarks.md has the figures).
 *
 *   hold      opens --connections sessions from --threads threads; each
 *             sends a CheckIn for a population whose round needs more
 *             devices than will ever come, so every device is accepted and
 *             waits in selection. Then reads the server's VmRSS/VmHWM
 *             (/proc/PID/status) and /metrics, holds for --hold-s seconds,
 *             checks that no session was answered or dropped, and closes.
 *             Baseline: the server's RSS before the first connection.
 *   checkins  --threads threads loop for --seconds: connect, CheckIn, read
 *             the CheckInResult (the population's only round is full, so
 *             each is Rejected with a retry window), close. Baselines in the
 *             same run: TCP + TLS handshake + close_notify + close (no HTTP),
 *             and TCP + TLS + WebSocket upgrade + close (no CheckIn). The
 *             three variants run --reps times in rotated order; medians.
 *             Server and client CPU per operation come from /proc and
 *             getrusage over each interval.
 *   round     --devices device threads take part in --rounds synchronous
 *             rounds (goal_count = devices): check in, download the model
 *             (received and discarded), upload one update (the same bytes
 *             for every device: the server cannot tell), report, read the
 *             ack, check in again. Times every step on CLOCK_REALTIME and,
 *             given --server-log, reads the coordinator's "round N committed"
 *             lines, so the time from the last report to the commit comes
 *             out of the same clock.
 *   handshakes  server CPU per full and per resumed TLS handshake (session
 *             tickets), one connection after another, against OpenSSL's
 *             X25519 and ECDSA P-256 costs measured in the same run
 *             (load_handshakes.c).
 *
 * Output: readable lines, then "RESULT key value" lines for the driver.
 * All times are wall time; "MiB" is 2^20 bytes. */
#include "server_load.h"

static const char usage[] =
    "usage: server_load MODE --port PORT --ca FILE [options]\n"
    "\n"
    "Modes (see the comment at the top of bench/server_load.c):\n"
    "  hold       N concurrent sessions waiting in selection; server memory\n"
    "  checkins   check-ins per second, against TLS-only and TLS+WebSocket\n"
    "             connect/close rates measured in the same run\n"
    "  round      D devices through R synchronous rounds; per-round timings\n"
    "  handshakes server CPU per full and per resumed TLS handshake (tickets)\n"
    "\n"
    "Common options:\n"
    "  --host ADDR          server address (default 127.0.0.1)\n"
    "  --port PORT          server port (required)\n"
    "  --ca FILE            CA (the server's self-signed certificate) (required)\n"
    "  --server-name NAME   DNS name in the certificate (default localhost)\n"
    "  --population NAME    population to check in to (hold, checkins, round)\n"
    "  --token TOKEN        auth token (the population's shared secret)\n"
    "  --token-file FILE    read the token from FILE (one trailing newline stripped)\n"
    "  --server-pid PID     the server process, for /proc figures\n"
    "\n"
    "hold:     --connections N (10000)  --threads T (64)  --hold-s S (5)\n"
    "checkins: --threads K (16)  --seconds T (10)  --reps R (3)\n"
    "round:    --devices D (1000)  --rounds R (2)  --server-log FILE\n"
    "          --max-wait-ms MS (1000): cap on a rejected device's retry wait\n"
    "handshakes: --connections N per measurement (10000)  --threads T (1)  --reps R (3)\n"
    "          --server-pid PID\n"
    "          (no --population or --token: no protocol is spoken)\n";

/* ---- options ---------------------------------------------------------------------- */

options load_opt;
char *load_ca_pem; /* the CA file, read once */
struct sockaddr_storage load_server_addr;
socklen_t load_server_addr_len;

void load_die(const char *fmt, const char *a)
{
    fprintf(stderr, "server_load: ");
    fprintf(stderr, fmt, a);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t parse_u64(const char *flag, const char *v, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (v[0] == '-' || end == v || *end || errno || x < min || x > max) {
        fprintf(stderr, "server_load: %s: '%s' is not a whole number from %llu to %llu\n", flag, v,
                (unsigned long long)min, (unsigned long long)max);
        exit(2);
    }
    return x;
}

static char *read_file(const char *path, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max, f) : 0;
    fclose(f);
    if (!buf)
        return NULL;
    buf[n] = '\0';
    return buf;
}

/* ---- main --------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    load_opt.mode = argv[1];
    load_opt.host = "127.0.0.1";
    load_opt.server_name = "localhost";
    load_opt.connections = 10000;
    load_opt.threads = 16;
    load_opt.hold_s = 5;
    load_opt.seconds = 10;
    load_opt.reps = 3;
    load_opt.devices = 1000;
    load_opt.rounds = 2;
    load_opt.max_wait_ms = 1000;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "server_load: %s needs a value\n%s", a, usage);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--host") == 0)
            load_opt.host = v;
        else if (strcmp(a, "--port") == 0)
            load_opt.port = (uint16_t)parse_u64(a, v, 1, 65535);
        else if (strcmp(a, "--ca") == 0)
            load_opt.ca_file = v;
        else if (strcmp(a, "--server-name") == 0)
            load_opt.server_name = v;
        else if (strcmp(a, "--population") == 0)
            load_opt.population = v;
        else if (strcmp(a, "--token") == 0)
            load_opt.token = v;
        else if (strcmp(a, "--token-file") == 0) {
            char *t = read_file(v, 4096);
            if (!t)
                load_die("--token-file: cannot read %s", v);
            size_t n = strlen(t);
            if (n && t[n - 1] == '\n')
                t[--n] = '\0';
            if (n && t[n - 1] == '\r')
                t[--n] = '\0';
            load_opt.token = t;
        } else if (strcmp(a, "--server-pid") == 0)
            load_opt.server_pid = (long)parse_u64(a, v, 1, INT_MAX);
        else if (strcmp(a, "--server-log") == 0)
            load_opt.server_log = v;
        else if (strcmp(a, "--connections") == 0)
            load_opt.connections = (uint32_t)parse_u64(a, v, 1, 1000000);
        else if (strcmp(a, "--threads") == 0) {
            load_opt.threads = (uint32_t)parse_u64(a, v, 1, 4096);
            load_opt.threads_set = 1;
        } else if (strcmp(a, "--hold-s") == 0)
            load_opt.hold_s = (uint32_t)parse_u64(a, v, 0, 86400);
        else if (strcmp(a, "--seconds") == 0)
            load_opt.seconds = (uint32_t)parse_u64(a, v, 1, 86400);
        else if (strcmp(a, "--reps") == 0)
            load_opt.reps = (uint32_t)parse_u64(a, v, 1, 64);
        else if (strcmp(a, "--devices") == 0)
            load_opt.devices = (uint32_t)parse_u64(a, v, 1, 100000);
        else if (strcmp(a, "--rounds") == 0)
            load_opt.rounds = (uint32_t)parse_u64(a, v, 1, MAX_ROUNDS);
        else if (strcmp(a, "--max-wait-ms") == 0)
            load_opt.max_wait_ms = (int64_t)parse_u64(a, v, 0, 86400000);
        else {
            fprintf(stderr, "server_load: unknown option '%s'\n%s", a, usage);
            return 2;
        }
    }
    int handshakes = strcmp(load_opt.mode, "handshakes") == 0;
    if (strcmp(load_opt.mode, "hold") && strcmp(load_opt.mode, "checkins") &&
        strcmp(load_opt.mode, "round") && !handshakes) {
        fprintf(stderr, "server_load: unknown mode '%s'\n%s", load_opt.mode, usage);
        return 2;
    }
    if (!load_opt.port || !load_opt.ca_file ||
        (!handshakes && (!load_opt.population || !load_opt.token))) {
        fprintf(stderr, "server_load: --port, --ca, --population and --token are required\n%s",
                usage);
        return 2;
    }
    if (!load_opt.threads_set && strcmp(load_opt.mode, "hold") == 0)
        load_opt.threads = 64;
    load_ca_pem = read_file(load_opt.ca_file, 1 << 20);
    if (!load_ca_pem)
        load_die("--ca: cannot read %s", load_opt.ca_file);
    struct sockaddr_in *in4 = (struct sockaddr_in *)&load_server_addr;
    if (inet_pton(AF_INET, load_opt.host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(load_opt.port);
        load_server_addr_len = sizeof *in4;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&load_server_addr;
        if (inet_pton(AF_INET6, load_opt.host, &in6->sin6_addr) != 1)
            load_die("--host: '%s' is not a numeric IPv4 or IPv6 address", load_opt.host);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(load_opt.port);
        load_server_addr_len = sizeof *in6;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && strcmp(load_opt.mode, "hold") == 0 &&
        rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)load_opt.connections + 64)
        fprintf(stderr,
                "server_load: warning: ulimit -n is %llu, below --connections %u + 64; raise it\n",
                (unsigned long long)rl.rlim_cur, load_opt.connections);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rc;
    if (strcmp(load_opt.mode, "hold") == 0)
        rc = load_run_hold();
    else if (strcmp(load_opt.mode, "checkins") == 0)
        rc = load_run_checkins();
    else if (handshakes)
        rc = load_run_handshakes();
    else
        rc = load_run_round();
    free(load_ca_pem);
    return rc;
}
