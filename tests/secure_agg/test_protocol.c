/* Tests for the SecAgg / SecAgg+ state machines (shoal/secagg_protocol.h):
 * whole groups run in-process, devices dropping out at every phase; the
 * unmasked sum must equal the plain sum of the survivors' inputs exactly,
 * in the ring. Then every kind of message the protocol must refuse. */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/secagg_protocol.h"

enum { NEVER = 5 };

typedef struct group {
    shoal_secagg_config cfg;
    shoal_secagg_server *srv;
    shoal_secagg_client **dev;
    uint8_t (*vk)[32];
    uint8_t (*sk)[64];
    uint64_t *input; /* n x length */
    uint8_t *masked; /* length x ring bytes, one device at a time */
    int *drop;       /* the phase at which each device stops answering */
} group;

static void group_init(group *g, uint32_t n, uint32_t k, uint32_t t, unsigned bits, size_t length,
                       int malicious)
{
    memset(g, 0, sizeof *g);
    cr_assert_eq(shoal_secagg_init(), SHOAL_OK);
    g->cfg.n = n;
    g->cfg.degree = k;
    g->cfg.threshold = t;
    g->cfg.bits = bits;
    g->cfg.length = length;
    randombytes_buf(g->cfg.session_id, sizeof g->cfg.session_id);
    randombytes_buf(g->cfg.graph_seed, sizeof g->cfg.graph_seed);
    if (malicious) {
        g->vk = calloc(n, sizeof *g->vk);
        g->sk = calloc(n, sizeof *g->sk);
        for (uint32_t i = 0; i < n; i++)
            crypto_sign_keypair(g->vk[i], g->sk[i]);
        g->cfg.verify_keys = (const uint8_t(*)[32])g->vk;
    }
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_secagg_server_new(&g->cfg, &g->srv, &ei), SHOAL_OK, "%s", ei.msg);
    g->dev = calloc(n, sizeof *g->dev);
    g->input = calloc((size_t)n * length, sizeof *g->input);
    g->masked = calloc(length, 8);
    g->drop = calloc(n, sizeof *g->drop);
    uint64_t mask = bits == 64 ? ~(uint64_t)0 : ((uint64_t)1 << bits) - 1;
    for (uint32_t i = 0; i < n; i++) {
        cr_assert_eq(
            shoal_secagg_client_new(&g->cfg, i, malicious ? g->sk[i] : NULL, &g->dev[i], &ei),
            SHOAL_OK, "%s", ei.msg);
        g->drop[i] = NEVER;
        for (size_t j = 0; j < length; j++) {
            uint64_t r;
            randombytes_buf(&r, sizeof r);
            g->input[(size_t)i * length + j] = r & mask;
        }
    }
}

static void group_fini(group *g)
{
    for (uint32_t i = 0; i < g->cfg.n; i++)
        shoal_secagg_client_free(g->dev[i]);
    shoal_secagg_server_free(g->srv);
    free(g->dev);
    free(g->input);
    free(g->masked);
    free(g->drop);
    free(g->vk);
    free(g->sk);
}

static void close_phase(group *g)
{
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_secagg_server_close_phase(g->srv, &ei), SHOAL_OK, "%s", ei.msg);
}

/* Runs phases 0..3 for every device that is still there. */
static void run_to_unmask(group *g)
{
    shoal_errinfo ei = {{0}};
    const uint32_t n = g->cfg.n, k = g->cfg.degree;
    for (uint32_t i = 0; i < n; i++) {
        if (g->drop[i] <= 0)
            continue;
        shoal_secagg_advertise a;
        cr_assert_eq(shoal_secagg_client_advertise(g->dev[i], &a, &ei), SHOAL_OK, "%s", ei.msg);
        cr_assert_eq(shoal_secagg_server_on_advertise(g->srv, &a, &ei), SHOAL_OK, "%s", ei.msg);
    }
    close_phase(g);

    shoal_secagg_advertise *keys = calloc(k, sizeof *keys);
    shoal_secagg_sealed_shares *out = calloc(k, sizeof *out);
    for (uint32_t i = 0; i < n; i++) {
        if (g->drop[i] <= 1)
            continue;
        size_t nk = 0, ns = 0;
        cr_assert_eq(shoal_secagg_server_keys_for(g->srv, i, keys, &nk), SHOAL_OK);
        cr_assert_eq(shoal_secagg_client_share(g->dev[i], keys, nk, out, &ns, &ei), SHOAL_OK,
                     "device %u: %s", i, ei.msg);
        cr_assert_eq(shoal_secagg_server_on_shares(g->srv, i, out, ns, &ei), SHOAL_OK, "%s",
                     ei.msg);
    }
    close_phase(g);
    free(keys);
    free(out);

    const size_t rb = shoal_secagg_ring_bytes(g->cfg.bits);
    for (uint32_t i = 0; i < n; i++) {
        if (g->drop[i] <= 2)
            continue;
        const shoal_secagg_sealed_shares *in = NULL;
        size_t nin = 0;
        cr_assert_eq(shoal_secagg_server_inbox(g->srv, i, &in, &nin), SHOAL_OK);
        cr_assert_eq(shoal_secagg_client_mask(g->dev[i], in, nin,
                                              g->input + (size_t)i * g->cfg.length, g->masked, &ei),
                     SHOAL_OK, "device %u: %s", i, ei.msg);
        cr_assert_eq(shoal_secagg_server_on_masked(g->srv, i, g->masked, g->cfg.length * rb, &ei),
                     SHOAL_OK, "%s", ei.msg);
    }
    close_phase(g);

    if (g->cfg.verify_keys) {
        size_t nu3 = 0;
        const uint32_t *u3 = shoal_secagg_server_survivors(g->srv, &nu3);
        for (uint32_t i = 0; i < n; i++) {
            if (g->drop[i] <= 3)
                continue;
            uint8_t sig[64];
            cr_assert_eq(shoal_secagg_client_confirm(g->dev[i], u3, nu3, sig, &ei), SHOAL_OK, "%s",
                         ei.msg);
            cr_assert_eq(shoal_secagg_server_on_confirm(g->srv, i, sig, &ei), SHOAL_OK, "%s",
                         ei.msg);
        }
        close_phase(g);
    }
}

static void run_unmask(group *g)
{
    shoal_errinfo ei = {{0}};
    size_t nu3 = 0;
    const uint32_t *u3 = shoal_secagg_server_survivors(g->srv, &nu3);
    const uint32_t *signers = NULL;
    const uint8_t(*sigs)[64] = NULL;
    size_t nsig = shoal_secagg_server_signatures(g->srv, &signers, &sigs);
    shoal_secagg_revealed_share *rev = calloc(g->cfg.degree, sizeof *rev);
    for (uint32_t i = 0; i < g->cfg.n; i++) {
        if (g->drop[i] <= 4)
            continue;
        size_t nr = 0;
        cr_assert_eq(
            shoal_secagg_client_unmask(g->dev[i], u3, nu3, signers, sigs, nsig, rev, &nr, &ei),
            SHOAL_OK, "device %u: %s", i, ei.msg);
        cr_assert_eq(shoal_secagg_server_on_unmask(g->srv, i, rev, nr, &ei), SHOAL_OK, "%s",
                     ei.msg);
    }
    free(rev);
    close_phase(g);
}

/* The sum of the inputs of the devices that sent a masked input (U3). */
static void check_sum(group *g)
{
    const uint64_t *sum = NULL;
    uint32_t contributors = 0;
    cr_assert_eq(shoal_secagg_server_result(g->srv, &sum, &contributors), SHOAL_OK);
    const uint64_t mask = g->cfg.bits == 64 ? ~(uint64_t)0 : ((uint64_t)1 << g->cfg.bits) - 1;
    uint32_t want_contributors = 0;
    for (uint32_t i = 0; i < g->cfg.n; i++)
        want_contributors += g->drop[i] > 2;
    cr_assert_eq(contributors, want_contributors);
    for (size_t j = 0; j < g->cfg.length; j++) {
        uint64_t want = 0;
        for (uint32_t i = 0; i < g->cfg.n; i++)
            if (g->drop[i] > 2)
                want = (want + g->input[(size_t)i * g->cfg.length + j]) & mask;
        cr_assert_eq(sum[j], want, "n=%u k=%u element %zu: %llu, want %llu", g->cfg.n,
                     g->cfg.degree, j, (unsigned long long)sum[j], (unsigned long long)want);
    }
}

/* Devices drop at phase p with probability rate each, never so many that a
 * phase falls below t (the group would then fail by design), and never more
 * than rate x n in all: a sparse graph is chosen to survive that many
 * dropouts, not the binomial tail above it (at 5% of 60 devices, more than
 * 3 drop about one run in three, and a device can then keep fewer than t
 * surviving neighbours). */
static void random_drops(group *g, double rate, int max_phase)
{
    uint32_t left = g->cfg.n;
    const uint32_t most = (uint32_t)(rate * g->cfg.n);
    for (uint32_t i = 0; i < g->cfg.n; i++) {
        if (randombytes_uniform(1000000) < rate * 1e6 && g->cfg.n - left < most &&
            left > g->cfg.threshold + g->cfg.degree / 2 && left * 10 > g->cfg.n * 6) {
            g->drop[i] = (int)randombytes_uniform((uint32_t)max_phase + 1);
            left--;
        }
    }
}

static void run_group(uint32_t n, uint32_t k, uint32_t t, unsigned bits, size_t length,
                      int malicious, double drop_rate)
{
    group g;
    group_init(&g, n, k, t, bits, length, malicious);
    random_drops(&g, drop_rate, 4);
    run_to_unmask(&g);
    run_unmask(&g);
    cr_assert_eq(shoal_secagg_server_phase(g.srv), SHOAL_SECAGG_PHASE_DONE);
    check_sum(&g);
    group_fini(&g);
}

Test(secagg_protocol, three_devices_sum_exactly)
{
    run_group(3, 2, 2, 32, 100, 0, 0.0);
}

Test(secagg_protocol, complete_graphs_with_dropouts_at_every_phase)
{
    run_group(4, 3, 2, 32, 50, 0, 0.3);
    run_group(10, 9, 5, 20, 300, 0, 0.3);
    run_group(40, 39, 20, 32, 200, 0, 0.2);
    run_group(25, 24, 13, 48, 100, 0, 0.2); /* a 48-bit ring: 8 bytes an element */
}

Test(secagg_protocol, secagg_plus_groups_up_to_500_devices)
{
    const uint32_t sizes[] = {50, 120, 500};
    for (size_t i = 0; i < 3; i++) {
        shoal_secagg_plus_params p;
        shoal_errinfo ei = {{0}};
        cr_assert_eq(
            shoal_secagg_plus_choose(sizes[i], 0.1, 0.1, SHOAL_SECAGG_SEMI_HONEST, &p, &ei),
            SHOAL_OK, "%s", ei.msg);
        run_group(sizes[i], p.degree, p.threshold, 32, 64, 0, 0.1);
    }
}

Test(secagg_protocol, malicious_variant_with_dropouts)
{
    run_group(12, 11, 7, 32, 80, 1, 0.2);
    shoal_secagg_plus_params p;
    cr_assert_eq(shoal_secagg_plus_choose(60, 0.05, 0.1, SHOAL_SECAGG_MALICIOUS, &p, NULL),
                 SHOAL_OK);
    run_group(60, p.degree, p.threshold, 32, 40, 1, 0.05);
}

/* Of the 8 devices that sent a masked input, 3 drop out before unmasking,
 * leaving 5, so each of them still has t = 4 others to hold its shares:
 * the sum, the dropouts' inputs included, still comes out. */
Test(secagg_protocol, devices_that_drop_after_their_masked_input_still_count)
{
    group g;
    group_init(&g, 9, 8, 4, 32, 30, 0);
    for (uint32_t i = 0; i < 3; i++)
        g.drop[i] = 4; /* masked input sent, no unmask answer */
    g.drop[8] = 2;     /* and one gone before masking */
    run_to_unmask(&g);
    run_unmask(&g);
    check_sum(&g);
    group_fini(&g);
}

Test(secagg_protocol, too_few_survivors_fail_the_group_before_any_share_is_asked)
{
    group g;
    group_init(&g, 6, 5, 4, 32, 10, 0);
    for (uint32_t i = 0; i < 3; i++)
        g.drop[i] = 2;
    shoal_errinfo ei = {{0}};
    for (uint32_t i = 0; i < 6; i++) {
        shoal_secagg_advertise a;
        cr_assert_eq(shoal_secagg_client_advertise(g.dev[i], &a, &ei), SHOAL_OK);
        cr_assert_eq(shoal_secagg_server_on_advertise(g.srv, &a, &ei), SHOAL_OK);
    }
    close_phase(&g);
    shoal_secagg_advertise keys[5];
    shoal_secagg_sealed_shares out[5];
    for (uint32_t i = 0; i < 6; i++) {
        size_t nk = 0, ns = 0;
        cr_assert_eq(shoal_secagg_server_keys_for(g.srv, i, keys, &nk), SHOAL_OK);
        cr_assert_eq(shoal_secagg_client_share(g.dev[i], keys, nk, out, &ns, &ei), SHOAL_OK);
        cr_assert_eq(shoal_secagg_server_on_shares(g.srv, i, out, ns, &ei), SHOAL_OK);
    }
    close_phase(&g);
    for (uint32_t i = 3; i < 6; i++) {
        const shoal_secagg_sealed_shares *in;
        size_t nin;
        cr_assert_eq(shoal_secagg_server_inbox(g.srv, i, &in, &nin), SHOAL_OK);
        cr_assert_eq(shoal_secagg_client_mask(g.dev[i], in, nin, g.input + i * 10, g.masked, &ei),
                     SHOAL_OK);
        cr_assert_eq(shoal_secagg_server_on_masked(g.srv, i, g.masked, 40, &ei), SHOAL_OK);
    }
    cr_assert_eq(shoal_secagg_server_close_phase(g.srv, &ei), SHOAL_ELIMIT);
    cr_assert_not_null(strstr(ei.msg, "3 devices answered the mask phase; the threshold is 4"),
                       "%s", ei.msg);
    cr_assert_eq(shoal_secagg_server_phase(g.srv), SHOAL_SECAGG_PHASE_FAILED);
    const uint64_t *sum;
    uint32_t c;
    cr_assert_eq(shoal_secagg_server_result(g.srv, &sum, &c), SHOAL_ESTATE);
    group_fini(&g);
}

/* ---- refusals ---------------------------------------------------------------------------- */

/* A group of 5 (complete, t = 3) advanced to the mask phase. */
static void to_mask_phase(group *g)
{
    group_init(g, 5, 4, 3, 32, 8, 0);
    shoal_errinfo ei = {{0}};
    for (uint32_t i = 0; i < 5; i++) {
        shoal_secagg_advertise a;
        cr_assert_eq(shoal_secagg_client_advertise(g->dev[i], &a, &ei), SHOAL_OK);
        cr_assert_eq(shoal_secagg_server_on_advertise(g->srv, &a, &ei), SHOAL_OK);
    }
    close_phase(g);
    shoal_secagg_advertise keys[4];
    shoal_secagg_sealed_shares out[4];
    for (uint32_t i = 0; i < 5; i++) {
        size_t nk = 0, ns = 0;
        cr_assert_eq(shoal_secagg_server_keys_for(g->srv, i, keys, &nk), SHOAL_OK);
        cr_assert_eq(shoal_secagg_client_share(g->dev[i], keys, nk, out, &ns, &ei), SHOAL_OK);
        cr_assert_eq(shoal_secagg_server_on_shares(g->srv, i, out, ns, &ei), SHOAL_OK);
    }
    close_phase(g);
}

Test(secagg_refusals, out_of_phase_duplicate_and_late_messages)
{
    group g;
    to_mask_phase(&g);
    shoal_errinfo ei = {{0}};
    shoal_secagg_advertise a = {0};
    a.index = 0;
    cr_assert_eq(shoal_secagg_server_on_advertise(g.srv, &a, &ei), SHOAL_ESTATE);
    cr_assert_not_null(strstr(ei.msg, "advertise message from device 0 in the mask phase"), "%s",
                       ei.msg);
    const shoal_secagg_sealed_shares *in;
    size_t nin;
    cr_assert_eq(shoal_secagg_server_inbox(g.srv, 0, &in, &nin), SHOAL_OK);
    cr_assert_eq(shoal_secagg_client_mask(g.dev[0], in, nin, g.input, g.masked, &ei), SHOAL_OK);
    cr_assert_eq(shoal_secagg_server_on_masked(g.srv, 0, g.masked, 32, &ei), SHOAL_OK);
    cr_assert_eq(shoal_secagg_server_on_masked(g.srv, 0, g.masked, 32, &ei), SHOAL_ESTATE,
                 "a duplicate masked input was added twice");
    cr_assert_not_null(strstr(ei.msg, "already answered"), "%s", ei.msg);
    cr_assert_eq(shoal_secagg_server_on_masked(g.srv, 1, g.masked, 31, &ei), SHOAL_EPROTO,
                 "a truncated masked input");
    for (uint32_t i = 1; i < 4; i++) {
        cr_assert_eq(shoal_secagg_server_inbox(g.srv, i, &in, &nin), SHOAL_OK);
        cr_assert_eq(shoal_secagg_client_mask(g.dev[i], in, nin, g.input + i * 8, g.masked, &ei),
                     SHOAL_OK);
        cr_assert_eq(shoal_secagg_server_on_masked(g.srv, i, g.masked, 32, &ei), SHOAL_OK);
    }
    close_phase(&g);
    /* Device 4 comes back after the phase closed: it cannot rejoin. */
    cr_assert_eq(shoal_secagg_server_inbox(g.srv, 4, &in, &nin), SHOAL_ESTATE);
    cr_assert_eq(shoal_secagg_server_on_masked(g.srv, 4, g.masked, 32, &ei), SHOAL_ESTATE);
    cr_assert_eq(shoal_secagg_server_participants(g.srv, SHOAL_SECAGG_PHASE_MASK), 4u);

    /* A device answers the unmask request once. */
    size_t nu3;
    const uint32_t *u3 = shoal_secagg_server_survivors(g.srv, &nu3);
    shoal_secagg_revealed_share rev[4];
    size_t nr;
    cr_assert_eq(shoal_secagg_client_unmask(g.dev[0], u3, nu3, NULL, NULL, 0, rev, &nr, &ei),
                 SHOAL_OK);
    cr_assert_eq(nr, 4u);
    int self = 0, key = 0;
    for (size_t i = 0; i < nr; i++) {
        self += rev[i].kind == SHOAL_SECAGG_SHARE_SELF_MASK;
        key += rev[i].kind == SHOAL_SECAGG_SHARE_MASK_KEY && rev[i].of == 4;
    }
    cr_assert(self == 3 && key == 1, "survivors' self-mask shares and the dropout's key share");
    shoal_secagg_revealed_share again[4];
    cr_assert_eq(shoal_secagg_client_unmask(g.dev[0], u3, nu3, NULL, NULL, 0, again, &nr, &ei),
                 SHOAL_ESTATE);
    cr_assert_not_null(strstr(ei.msg, "already answered"), "%s", ei.msg);

    /* The server refuses the wrong kind of share for a device. */
    shoal_secagg_revealed_share wrong = rev[0];
    wrong.kind = wrong.kind == SHOAL_SECAGG_SHARE_SELF_MASK ? SHOAL_SECAGG_SHARE_MASK_KEY
                                                            : SHOAL_SECAGG_SHARE_SELF_MASK;
    cr_assert_eq(shoal_secagg_server_on_unmask(g.srv, 0, &wrong, 1, &ei), SHOAL_EPROTO);
    /* Two shares of one device in one answer. */
    shoal_secagg_revealed_share twice[2] = {rev[0], rev[0]};
    cr_assert_eq(shoal_secagg_server_on_unmask(g.srv, 0, twice, 2, &ei), SHOAL_EPROTO);
    cr_assert_not_null(strstr(ei.msg, "revealed two shares of device"), "%s", ei.msg);
    cr_assert_eq(shoal_secagg_server_on_unmask(g.srv, 0, rev, nr == 4 ? 4 : nr, &ei), SHOAL_OK);
    cr_assert_eq(shoal_secagg_server_on_unmask(g.srv, 0, rev, 4, &ei), SHOAL_ESTATE);
    group_fini(&g);
}

Test(secagg_refusals, a_key_another_device_advertised_and_a_repeated_recipient)
{
    group g;
    group_init(&g, 6, 5, 3, 32, 4, 0);
    shoal_errinfo ei = {{0}};
    shoal_secagg_advertise a[6];
    for (uint32_t i = 0; i < 6; i++)
        cr_assert_eq(shoal_secagg_client_advertise(g.dev[i], &a[i], &ei), SHOAL_OK);
    for (uint32_t i = 0; i < 3; i++)
        cr_assert_eq(shoal_secagg_server_on_advertise(g.srv, &a[i], &ei), SHOAL_OK, "%s", ei.msg);
    /* Device 3 sends device 1's s_pk, as either of its keys. */
    for (int w = 0; w < 2; w++) {
        shoal_secagg_advertise copy = a[3];
        memcpy(w ? copy.s_pk : copy.c_pk, a[1].s_pk, 32);
        cr_assert_eq(shoal_secagg_server_on_advertise(g.srv, &copy, &ei), SHOAL_EPROTO);
        cr_assert_not_null(strstr(ei.msg, "device 3 advertises a key device 1 already advertised"),
                           "%s", ei.msg);
    }
    /* Its own keys, and the others', are taken. */
    for (uint32_t i = 3; i < 6; i++)
        cr_assert_eq(shoal_secagg_server_on_advertise(g.srv, &a[i], &ei), SHOAL_OK, "%s", ei.msg);
    close_phase(&g);

    shoal_secagg_advertise keys[5];
    shoal_secagg_sealed_shares out[5];
    size_t nk = 0, ns = 0;
    cr_assert_eq(shoal_secagg_server_keys_for(g.srv, 0, keys, &nk), SHOAL_OK);
    cr_assert_eq(nk, 5u);
    cr_assert_eq(shoal_secagg_client_share(g.dev[0], keys, nk, out, &ns, &ei), SHOAL_OK);
    shoal_secagg_sealed_shares twice[5];
    memcpy(twice, out, sizeof twice);
    twice[4] = twice[1];
    cr_assert_eq(shoal_secagg_server_on_shares(g.srv, 0, twice, ns, &ei), SHOAL_EPROTO);
    cr_assert_not_null(strstr(ei.msg, "device 0 sent two shares to"), "%s", ei.msg);
    /* The refusal left nothing behind: the real message is taken. */
    cr_assert_eq(shoal_secagg_server_on_shares(g.srv, 0, out, ns, &ei), SHOAL_OK, "%s", ei.msg);
    group_fini(&g);
}

Test(secagg_refusals, a_device_refuses_repeated_keys_from_the_server)
{
    group g;
    group_init(&g, 80, 79, 40, 32, 4, 0);
    shoal_errinfo ei = {{0}};
    for (uint32_t i = 0; i < 80; i++) {
        shoal_secagg_advertise a;
        cr_assert_eq(shoal_secagg_client_advertise(g.dev[i], &a, &ei), SHOAL_OK);
        cr_assert_eq(shoal_secagg_server_on_advertise(g.srv, &a, &ei), SHOAL_OK, "%s", ei.msg);
    }
    close_phase(&g);
    shoal_secagg_advertise keys[79], bad[79], self;
    shoal_secagg_sealed_shares out[79];
    size_t nk = 0, ns = 0;
    cr_assert_eq(shoal_secagg_server_keys_for(g.srv, 5, keys, &nk), SHOAL_OK);
    cr_assert_eq(nk, 79u);
    cr_assert_eq(shoal_secagg_server_keys_for(g.srv, 6, bad, &ns), SHOAL_OK);
    for (size_t i = 0; i < 79; i++)
        if (bad[i].index == 5)
            self = bad[i]; /* device 5's own keys, as device 6 sees them */
    struct {
        const char *what;
        size_t at, from; /* bad[at] takes a key of keys[from] (from == 79: device 5's) */
        int field;       /* 0: c_pk <- c_pk, 1: s_pk <- s_pk, 2: c_pk <- s_pk, 3: whole entry */
        const char *msg;
    } cases[] = {
        {"one device's keys twice", 70, 3, 3, "'s keys arrived twice"},
        {"a neighbour's c_pk as its s_pk", 41, 41, 2, "'s keys repeat a key"},
        {"another neighbour's c_pk", 60, 2, 0, " advertise the same key"},
        {"another neighbour's s_pk", 1, 77, 1, " advertise the same key"},
        {"the device's own c_pk", 33, 79, 0, "'s keys repeat a key"},
        {"the device's own s_pk, as a c_pk", 12, 79, 2, "'s keys repeat a key"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        memcpy(bad, keys, sizeof bad);
        const shoal_secagg_advertise *src = cases[k].from == 79 ? &self : &keys[cases[k].from];
        shoal_secagg_advertise *dst = &bad[cases[k].at];
        switch (cases[k].field) {
        case 0:
            memcpy(dst->c_pk, src->c_pk, 32);
            break;
        case 1:
            memcpy(dst->s_pk, src->s_pk, 32);
            break;
        case 2:
            memcpy(dst->c_pk, src->s_pk, 32);
            break;
        default:
            *dst = *src;
            break;
        }
        cr_assert_eq(shoal_secagg_client_share(g.dev[5], bad, nk, out, &ns, &ei), SHOAL_EPROTO,
                     "%s accepted", cases[k].what);
        cr_assert_not_null(strstr(ei.msg, cases[k].msg), "%s: %s", cases[k].what, ei.msg);
    }
    /* Nothing was taken from the refusals: the genuine keys still work. */
    cr_assert_eq(shoal_secagg_client_share(g.dev[5], keys, nk, out, &ns, &ei), SHOAL_OK, "%s",
                 ei.msg);
    cr_assert_eq(ns, 79u);
    group_fini(&g);
}

Test(secagg_refusals, a_device_refuses_altered_or_misaddressed_shares)
{
    group g;
    to_mask_phase(&g);
    shoal_errinfo ei = {{0}};
    const shoal_secagg_sealed_shares *in;
    size_t nin;
    cr_assert_eq(shoal_secagg_server_inbox(g.srv, 2, &in, &nin), SHOAL_OK);
    shoal_secagg_sealed_shares bad[4];
    memcpy(bad, in, nin * sizeof *bad);

    bad[1].sealed[50] ^= 1;
    cr_assert_eq(shoal_secagg_client_mask(g.dev[2], bad, nin, g.input, g.masked, &ei),
                 SHOAL_ECRYPTO);
    bad[1].sealed[50] ^= 1;
    /* Device 3's shares for 2, relabelled as coming from device 4. */
    uint32_t from = bad[1].from;
    bad[1].from = bad[2].from;
    cr_assert_neq(shoal_secagg_client_mask(g.dev[2], bad, nin, g.input, g.masked, &ei), SHOAL_OK);
    bad[1].from = from;
    /* Shares meant for device 3 handed to device 2. */
    const shoal_secagg_sealed_shares *in3;
    size_t nin3;
    cr_assert_eq(shoal_secagg_server_inbox(g.srv, 3, &in3, &nin3), SHOAL_OK);
    cr_assert_eq(shoal_secagg_client_mask(g.dev[2], in3, nin3, g.input, g.masked, &ei),
                 SHOAL_EPROTO);
    /* Too few. */
    cr_assert_eq(shoal_secagg_client_mask(g.dev[2], bad, 2, g.input, g.masked, &ei), SHOAL_EPROTO);
    /* After all that, the genuine inbox still works. */
    cr_assert_eq(shoal_secagg_client_mask(g.dev[2], in, nin, g.input, g.masked, &ei), SHOAL_OK,
                 "%s", ei.msg);
    group_fini(&g);
}

Test(secagg_refusals, forged_keys_and_a_lying_server_in_the_malicious_variant)
{
    group g;
    group_init(&g, 5, 4, 3, 32, 8, 1);
    shoal_errinfo ei = {{0}};
    shoal_secagg_advertise a[5];
    for (uint32_t i = 0; i < 5; i++)
        cr_assert_eq(shoal_secagg_client_advertise(g.dev[i], &a[i], &ei), SHOAL_OK);
    /* A key swapped in by someone without device 1's signing key. */
    shoal_secagg_advertise forged = a[1];
    forged.c_pk[0] ^= 1;
    cr_assert_eq(shoal_secagg_server_on_advertise(g.srv, &forged, &ei), SHOAL_EAUTH);
    for (uint32_t i = 0; i < 5; i++)
        cr_assert_eq(shoal_secagg_server_on_advertise(g.srv, &a[i], &ei), SHOAL_OK);
    close_phase(&g);
    /* A device refuses a forged key too (a server that forwards it). */
    shoal_secagg_advertise keys[4];
    size_t nk = 0, ns = 0;
    cr_assert_eq(shoal_secagg_server_keys_for(g.srv, 0, keys, &nk), SHOAL_OK);
    keys[0].s_pk[3] ^= 1;
    shoal_secagg_sealed_shares out[4];
    cr_assert_eq(shoal_secagg_client_share(g.dev[0], keys, nk, out, &ns, &ei), SHOAL_EPROTO);
    cr_assert_not_null(strstr(ei.msg, "not signed"), "%s", ei.msg);

    for (uint32_t i = 0; i < 5; i++) {
        cr_assert_eq(shoal_secagg_server_keys_for(g.srv, i, keys, &nk), SHOAL_OK);
        cr_assert_eq(shoal_secagg_client_share(g.dev[i], keys, nk, out, &ns, &ei), SHOAL_OK, "%s",
                     ei.msg);
        cr_assert_eq(shoal_secagg_server_on_shares(g.srv, i, out, ns, &ei), SHOAL_OK);
    }
    close_phase(&g);
    for (uint32_t i = 0; i < 5; i++) {
        const shoal_secagg_sealed_shares *in;
        size_t nin;
        cr_assert_eq(shoal_secagg_server_inbox(g.srv, i, &in, &nin), SHOAL_OK);
        cr_assert_eq(shoal_secagg_client_mask(g.dev[i], in, nin, g.input + i * 8, g.masked, &ei),
                     SHOAL_OK);
        cr_assert_eq(shoal_secagg_server_on_masked(g.srv, i, g.masked, 32, &ei), SHOAL_OK);
    }
    close_phase(&g);
    /* Everyone confirms U3 = {0..4}. */
    size_t nu3;
    const uint32_t *u3 = shoal_secagg_server_survivors(g.srv, &nu3);
    cr_assert_eq(nu3, 5u);
    uint8_t sig[64];
    for (uint32_t i = 0; i < 5; i++) {
        cr_assert_eq(shoal_secagg_client_confirm(g.dev[i], u3, nu3, sig, &ei), SHOAL_OK);
        cr_assert_eq(shoal_secagg_server_on_confirm(g.srv, i, sig, &ei), SHOAL_OK);
    }
    close_phase(&g);
    const uint32_t *signers;
    const uint8_t(*sigs)[64];
    size_t nsig = shoal_secagg_server_signatures(g.srv, &signers, &sigs);
    cr_assert_eq(nsig, 5u);
    shoal_secagg_revealed_share rev[4];
    size_t nr;
    /* A server that tells device 0 that device 4 dropped (to learn 4's
     * mask key while also holding its masked input) is refused. */
    uint32_t lie[4] = {0, 1, 2, 3};
    cr_assert_eq(shoal_secagg_client_unmask(g.dev[0], lie, 4, signers, sigs, nsig, rev, &nr, &ei),
                 SHOAL_EPROTO);
    cr_assert_not_null(strstr(ei.msg, "changed since"), "%s", ei.msg);
    /* So is one with too few genuine confirmations. */
    uint8_t forged_sigs[5][64];
    memcpy(forged_sigs, sigs, sizeof forged_sigs);
    forged_sigs[0][0] ^= 1;
    forged_sigs[1][0] ^= 1;
    forged_sigs[2][0] ^= 1;
    cr_assert_eq(shoal_secagg_client_unmask(g.dev[0], u3, nu3, signers,
                                            (const uint8_t(*)[64])forged_sigs, 5, rev, &nr, &ei),
                 SHOAL_EPROTO);
    cr_assert_not_null(strstr(ei.msg, "2 valid confirmations"), "%s", ei.msg);
    /* The genuine request is answered. */
    cr_assert_eq(shoal_secagg_client_unmask(g.dev[0], u3, nu3, signers, sigs, nsig, rev, &nr, &ei),
                 SHOAL_OK, "%s", ei.msg);
    group_fini(&g);
}

Test(secagg_refusals, bad_configs_name_the_field)
{
    shoal_secagg_config cfg = {.n = 10, .degree = 9, .threshold = 10, .bits = 32, .length = 4};
    shoal_errinfo ei = {{0}};
    shoal_secagg_server *s = NULL;
    cr_assert_eq(shoal_secagg_server_new(&cfg, &s, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "threshold must be 2..degree (9), got 10"), "%s", ei.msg);
    cfg.threshold = 3;
    cfg.degree = 5;
    cr_assert_eq(shoal_secagg_server_new(&cfg, &s, &ei), SHOAL_EINVAL);
    cr_assert_not_null(strstr(ei.msg, "degree must be"), "%s", ei.msg);
    cfg.degree = 4;
    cfg.bits = 0;
    cr_assert_eq(shoal_secagg_server_new(&cfg, &s, &ei), SHOAL_EINVAL);
    cfg.bits = 32;
    cfg.length = 0;
    cr_assert_eq(shoal_secagg_server_new(&cfg, &s, &ei), SHOAL_EINVAL);
    cfg.length = 4;
    shoal_secagg_client *c = NULL;
    cr_assert_eq(shoal_secagg_client_new(&cfg, 10, NULL, &c, &ei), SHOAL_EINVAL);
    cr_assert_null(s);
    cr_assert_null(c);
}
