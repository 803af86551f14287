/* bench/secagg: the cost of SecAgg and SecAgg+ for one device and for the
 * server, next to the crypto floor measured in the same run.
 *
 * The floor of a party is the X25519 operations the protocol needs times
 * the measured cost of one, plus the ChaCha20 keystream bytes it needs
 * times the measured cost of a byte:
 *   device: 2 key pairs + 2k agreements; (k + 1) masks of m elements;
 *   server: for each dropped device, one agreement and one mask per
 *           surviving neighbour; one mask per survivor (its self mask).
 * Ring elements are 4 bytes (a 32-bit ring).
 *
 * How a cell is run: n devices go through the real protocol. The devices
 * whose masking is not being timed run with a one-element vector (their
 * masked inputs are then replaced by random bytes of full length for the
 * server): the server's work does not depend on the values it adds, and
 * the keys, shares and graph are the same as with full vectors. One device
 * runs with the full vector and is timed. Dropouts leave after sending
 * their shares and before their masked input, the case that costs the
 * server most. A cell whose measured floor exceeds --max-seconds is
 * skipped and says so.
 *
 * Usage: bench/secagg [--quick] [--max-seconds S] [--n N ...]
 * Prints one line per cell: protocol, n, k, t, m, dropout, device seconds
 * and floor, server seconds and floor, and their ratios; then the server's
 * seconds by phase. */
#define _DEFAULT_SOURCE /* getloadavg */
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shoal/secagg.h"
#include "shoal/secagg_protocol.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const shoal_errinfo *ei)
{
    fprintf(stderr, "secagg bench: %s: %s\n", what, ei ? ei->msg : "");
    exit(1);
}

/* ---- the floor ---------------------------------------------------------------------- */

static double x25519_s;      /* one crypto_scalarmult */
static double chacha_byte_s; /* one keystream byte */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of FLOOR_BATCHES timed batches of each primitive: one batch
 * is at the mercy of the scheduler (single timings swung by 2x). */
enum { FLOOR_BATCHES = 9 };

static void measure_floor(void)
{
    uint8_t sk[32], pk[32], out[32];
    randombytes_buf(sk, sizeof sk);
    crypto_scalarmult_base(pk, sk);
    double batch[FLOOR_BATCHES];
    const int reps = 300;
    for (int b = 0; b < FLOOR_BATCHES; b++) {
        double t0 = now_s();
        for (int i = 0; i < reps; i++) {
            sk[0] ^= (uint8_t)i;
            if (crypto_scalarmult(out, sk, pk) != 0)
                die("x25519", NULL);
        }
        batch[b] = (now_s() - t0) / reps;
    }
    qsort(batch, FLOOR_BATCHES, sizeof *batch, cmp_double);
    x25519_s = batch[FLOOR_BATCHES / 2];
    size_t len = 8u << 20;
    uint8_t *buf = malloc(len), key[32] = {1}, nonce[12] = {0};
    if (!buf)
        die("out of memory", NULL);
    for (int b = 0; b < FLOOR_BATCHES; b++) {
        double t0 = now_s();
        crypto_stream_chacha20_ietf(buf, len, nonce, key);
        batch[b] = (now_s() - t0) / (double)len;
    }
    qsort(batch, FLOOR_BATCHES, sizeof *batch, cmp_double);
    chacha_byte_s = batch[FLOOR_BATCHES / 2];
    free(buf);
}

/* ---- one cell ------------------------------------------------------------------------- */

typedef struct cell {
    const char *protocol;
    uint32_t n, k, t;
    size_t m;
    double dropout;
} cell;

static void run_cell(const cell *c, double max_seconds)
{
    const uint32_t n = c->n, k = c->k;
    const uint32_t dropped = (uint32_t)floor(c->dropout * n);
    const uint32_t survivors = n - dropped;
    /* Each dropped device's neighbours among the survivors, on average. */
    const double surv_nb = (double)k * (double)(survivors) / (double)(n - 1);
    const double dev_floor = (2 + 2.0 * k) * x25519_s + (k + 1.0) * c->m * 4 * chacha_byte_s;
    const double srv_floor = dropped * surv_nb * (x25519_s + c->m * 4 * chacha_byte_s) +
                             survivors * c->m * 4 * chacha_byte_s;
    /* Setting the cell up costs about 2 n k agreements. */
    const double setup = 2.0 * n * k * x25519_s;
    printf("%-8s n=%-5u k=%-4u t=%-4u m=%-7zu drop=%2.0f%% ", c->protocol, n, k, c->t, c->m,
           c->dropout * 100);
    if (srv_floor + dev_floor + setup > max_seconds) {
        printf(" skipped: the floor alone is %.1f s (raise --max-seconds)\n",
               srv_floor + dev_floor + setup);
        fflush(stdout);
        return;
    }

    shoal_secagg_config full = {.n = n, .degree = k, .threshold = c->t, .bits = 32, .length = c->m};
    randombytes_buf(full.session_id, 32);
    randombytes_buf(full.graph_seed, 32);
    shoal_secagg_config small = full;
    small.length = 1;
    shoal_errinfo ei = {{0}};
    shoal_secagg_server *srv = NULL;
    if (shoal_secagg_server_new(&full, &srv, &ei) != SHOAL_OK)
        die("server", &ei);
    shoal_secagg_client **dev = calloc(n, sizeof *dev);
    /* Device 0 (never dropped) is the one timed, with the full vector. */
    for (uint32_t i = 0; i < n; i++)
        if (shoal_secagg_client_new(i == 0 ? &full : &small, i, NULL, &dev[i], &ei) != SHOAL_OK)
            die("client", &ei);
    int *gone = calloc(n, sizeof *gone);
    for (uint32_t i = 0, left = dropped; left > 0 && i < n; i++) {
        /* Spread the dropouts over the ring's indices. */
        uint32_t d = 1 + (uint32_t)((uint64_t)i * (n - 1) / (dropped ? dropped : 1));
        if (d < n && !gone[d]) {
            gone[d] = 1;
            left--;
        }
    }
    double dev_time = 0, srv_time = 0, t0;
    double phase_end[4]; /* the server's time at the end of each phase */

    for (uint32_t i = 0; i < n; i++) {
        shoal_secagg_advertise a;
        t0 = now_s();
        if (shoal_secagg_client_advertise(dev[i], &a, &ei) != SHOAL_OK)
            die("advertise", &ei);
        if (i == 0)
            dev_time += now_s() - t0;
        t0 = now_s();
        if (shoal_secagg_server_on_advertise(srv, &a, &ei) != SHOAL_OK)
            die("on_advertise", &ei);
        srv_time += now_s() - t0;
    }
    t0 = now_s();
    if (shoal_secagg_server_close_phase(srv, &ei) != SHOAL_OK)
        die("close advertise", &ei);
    srv_time += now_s() - t0;
    phase_end[0] = srv_time;

    shoal_secagg_advertise *keys = calloc(k, sizeof *keys);
    shoal_secagg_sealed_shares *sh = calloc(k, sizeof *sh);
    for (uint32_t i = 0; i < n; i++) {
        size_t nk = 0, ns = 0;
        t0 = now_s();
        if (shoal_secagg_server_keys_for(srv, i, keys, &nk) != SHOAL_OK)
            die("keys_for", NULL);
        srv_time += now_s() - t0;
        t0 = now_s();
        if (shoal_secagg_client_share(dev[i], keys, nk, sh, &ns, &ei) != SHOAL_OK)
            die("share", &ei);
        if (i == 0)
            dev_time += now_s() - t0;
        t0 = now_s();
        if (shoal_secagg_server_on_shares(srv, i, sh, ns, &ei) != SHOAL_OK)
            die("on_shares", &ei);
        srv_time += now_s() - t0;
    }
    t0 = now_s();
    if (shoal_secagg_server_close_phase(srv, &ei) != SHOAL_OK)
        die("close share", &ei);
    srv_time += now_s() - t0;
    phase_end[1] = srv_time;

    uint64_t *input = calloc(c->m, sizeof *input);
    uint8_t *masked = malloc(c->m * 4), one[4];
    for (uint32_t i = 0; i < n; i++) {
        if (gone[i])
            continue;
        const shoal_secagg_sealed_shares *in = NULL;
        size_t nin = 0;
        if (shoal_secagg_server_inbox(srv, i, &in, &nin) != SHOAL_OK)
            die("inbox", NULL);
        t0 = now_s();
        if (shoal_secagg_client_mask(dev[i], in, nin, input, i == 0 ? masked : one, &ei) !=
            SHOAL_OK)
            die("mask", &ei);
        if (i == 0)
            dev_time += now_s() - t0;
        else
            randombytes_buf(masked, c->m * 4); /* stands in for a full masked input */
        t0 = now_s();
        if (shoal_secagg_server_on_masked(srv, i, masked, c->m * 4, &ei) != SHOAL_OK)
            die("on_masked", &ei);
        srv_time += now_s() - t0;
    }
    t0 = now_s();
    if (shoal_secagg_server_close_phase(srv, &ei) != SHOAL_OK)
        die("close mask", &ei);
    srv_time += now_s() - t0;
    phase_end[2] = srv_time;

    size_t nu3 = 0;
    const uint32_t *u3 = shoal_secagg_server_survivors(srv, &nu3);
    shoal_secagg_revealed_share *rev = calloc(k, sizeof *rev);
    for (uint32_t i = 0; i < n; i++) {
        if (gone[i])
            continue;
        size_t nr = 0;
        t0 = now_s();
        if (shoal_secagg_client_unmask(dev[i], u3, nu3, NULL, NULL, 0, rev, &nr, &ei) != SHOAL_OK)
            die("unmask", &ei);
        if (i == 0)
            dev_time += now_s() - t0;
        t0 = now_s();
        if (shoal_secagg_server_on_unmask(srv, i, rev, nr, &ei) != SHOAL_OK)
            die("on_unmask", &ei);
        srv_time += now_s() - t0;
    }
    t0 = now_s();
    if (shoal_secagg_server_close_phase(srv, &ei) != SHOAL_OK)
        die("close unmask", &ei);
    srv_time += now_s() - t0;
    phase_end[3] = srv_time;

    printf(" device %7.3f s (floor %7.3f, x%.2f)  server %8.3f s (floor %8.3f, x%.2f)\n", dev_time,
           dev_floor, dev_time / dev_floor, srv_time, srv_floor,
           srv_floor > 0 ? srv_time / srv_floor : 0.0);
    /* SecAgg+ should grow close to n log n (k grows with log n): the
     * server's time over n log2 n, to compare across sizes. */
    printf("%-8s   server by phase: keys %.3f s, shares %.3f s, masked inputs %.3f s, "
           "unmasking %.3f s; server / (n log2 n) %.2f us\n",
           "", phase_end[0], phase_end[1] - phase_end[0], phase_end[2] - phase_end[1],
           phase_end[3] - phase_end[2], srv_time / (n * log2((double)n)) * 1e6);
    fflush(stdout);
    for (uint32_t i = 0; i < n; i++)
        shoal_secagg_client_free(dev[i]);
    shoal_secagg_server_free(srv);
    free(dev);
    free(gone);
    free(keys);
    free(sh);
    free(input);
    free(masked);
    free(rev);
}

int main(int argc, char **argv)
{
    double max_seconds = 120;
    int quick = 0;
    uint32_t ns[8] = {100, 500, 1000};
    size_t n_count = 3;
    int n_given = 0; /* the first --n replaces the default sizes */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else if (strcmp(argv[i], "--max-seconds") == 0 && i + 1 < argc) {
            char *end = NULL;
            max_seconds = strtod(argv[++i], &end);
            if (end == argv[i] || *end || !(max_seconds > 0)) {
                fprintf(stderr, "secagg: --max-seconds: '%s' is not a positive number\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
            char *end = NULL;
            unsigned long n = strtoul(argv[++i], &end, 10);
            if (end == argv[i] || *end || n < 3 || n > SHOAL_SECAGG_MAX_SHAREHOLDERS) {
                fprintf(stderr, "secagg: --n: '%s' is not a group size from 3 to %u\n", argv[i],
                        SHOAL_SECAGG_MAX_SHAREHOLDERS);
                return 2;
            }
            if (!n_given)
                n_count = 0, n_given = 1;
            if (n_count == 8) {
                fprintf(stderr, "secagg: at most 8 --n\n");
                return 2;
            }
            ns[n_count++] = (uint32_t)n;
        } else {
            fprintf(stderr, "usage: secagg [--quick] [--max-seconds S] [--n N]...\n"
                            "  --quick: vectors of 100K only, dropout 0 and 30%%\n");
            return 2;
        }
    }
    if (shoal_secagg_init() != SHOAL_OK)
        die("libsodium", NULL);
    measure_floor();
    double load[3] = {0};
    if (getloadavg(load, 3) < 0)
        load[0] = load[1] = load[2] = -1;
    printf("load average %.2f %.2f %.2f (figures taken above 1 are not quotable)\n", load[0],
           load[1], load[2]);
    printf("crypto floor, this run (median of %d batches): X25519 %.1f us/op (%.0f ops/s), "
           "ChaCha20 %.2f GB/s\n",
           FLOOR_BATCHES, x25519_s * 1e6, 1 / x25519_s, 1e-9 / chacha_byte_s);
    const size_t ms[2] = {100000, 1000000};
    const double drops[3] = {0.0, 0.1, 0.3};
    for (size_t ni = 0; ni < n_count; ni++) {
        uint32_t n = ns[ni];
        shoal_secagg_plus_params plus;
        shoal_errinfo ei = {{0}};
        int have_plus = shoal_secagg_plus_choose(n, 0.3, 0.05, SHOAL_SECAGG_SEMI_HONEST, &plus,
                                                 &ei) == SHOAL_OK;
        for (size_t mi = 0; mi < (quick ? 1u : 2u); mi++)
            for (size_t di = 0; di < 3; di++) {
                if (quick && di == 1)
                    continue;
                /* SecAgg: the complete graph, threshold above half. */
                cell full = {"SecAgg", n, n - 1, n / 2 + 1, ms[mi], drops[di]};
                if (n <= 1000)
                    run_cell(&full, max_seconds);
                if (have_plus) {
                    cell sparse = {"SecAgg+", n, plus.degree, plus.threshold, ms[mi], drops[di]};
                    run_cell(&sparse, max_seconds);
                }
            }
    }
    return 0;
}
