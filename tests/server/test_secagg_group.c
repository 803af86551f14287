/* A secure-aggregation group on the server (server/core/src/secagg_group.c)
 * driven over the wire messages by devices running the secure-agg client
 * state machine: the group's decoded sum must be the weighted sum of the
 * survivors' clipped updates within the fixed-point error, a device that
 * drops out mid-protocol must not spoil it, and a group that falls below
 * its threshold must end without a sum. With adaptive clipping's flag the
 * group learns only how many survivors set it. */
#include <criterion/criterion.h>
#include <math.h>
#include <sodium.h>
#include <string.h>

#include "secagg_group.h"
#include "shoal/alloc.h"
#include "shoal/secagg_wire.h"

#define N      8
#define PARAMS 40
#define NEVER  99

static const uint8_t session[] = "device-session";

typedef struct device {
    shoal_secagg_client *sa;
    float update[PARAMS];
    uint32_t weight;
    uint8_t bit; /* its unclipped bit, with flags */
    int stop_at; /* first phase it does not answer (0 advertise .. 4 unmask) */
} device;

typedef struct bench {
    sa_group_params p;
    shoal_sa_group *g;
    device dev[N];
    shoal_codec device_codec, server_codec;
    int64_t now;
} bench;

static void bench_init_flags(bench *b, uint32_t degree, uint32_t threshold, uint32_t flags)
{
    memset(b, 0, sizeof *b);
    cr_assert_eq(shoal_secagg_init(), SHOAL_OK);
    b->device_codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    b->server_codec = shoal_codec_defaults(SHOAL_PEER_SERVER);
    b->p.id = 7;
    b->p.round = 3;
    b->p.cfg.n = N;
    b->p.cfg.degree = degree;
    b->p.cfg.threshold = threshold;
    b->p.cfg.bits = 32;
    b->p.cfg.length = PARAMS + 1 + flags;
    b->p.flags = flags;
    randombytes_buf(b->p.cfg.graph_seed, sizeof b->p.cfg.graph_seed);
    randombytes_buf(b->p.cfg.session_id, sizeof b->p.cfg.session_id);
    b->p.fx =
        (shoal_secagg_fixed){.clip = 0.5, .max_weight = 100, .max_contributors = N, .bits = 32};
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_secagg_fixed_plan(&b->p.fx, &ei), SHOAL_OK, "%s", ei.msg);
    b->p.advertise_deadline = 1000;
    b->p.phase_timeout_ms = 500;
    cr_assert_eq(shoal_sa_group_new(&b->p, &b->server_codec, &b->g, &ei), SHOAL_OK, "%s", ei.msg);
    for (uint32_t i = 0; i < N; i++) {
        device *d = &b->dev[i];
        cr_assert_eq(shoal_secagg_client_new(&b->p.cfg, i, NULL, &d->sa, &ei), SHOAL_OK, "%s",
                     ei.msg);
        d->weight = 10 + 7 * i;
        d->bit = (uint8_t)(i % 3 != 1);
        d->stop_at = NEVER;
        for (int j = 0; j < PARAMS; j++)
            d->update[j] = 0.6f * sinf((float)(i * PARAMS + j)); /* some beyond the clip */
    }
}

static void bench_init(bench *b, uint32_t degree, uint32_t threshold)
{
    bench_init_flags(b, degree, threshold, 0);
}

static void bench_fini(bench *b)
{
    for (uint32_t i = 0; i < N; i++)
        shoal_secagg_client_free(b->dev[i].sa);
    shoal_sa_group_free(b->g);
}

/* The device's bytes, decoded as the server's selector would, into the group. */
static void deliver(bench *b, uint32_t index, uint8_t *bytes, size_t len)
{
    shoal_envelope *env;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_envelope_decode(&b->device_codec, bytes, len, &env, &ei), SHOAL_OK, "%s",
                 ei.msg);
    shoal_free(bytes);
    cr_assert_eq(shoal_sa_group_on_message(b->g, index, env, b->now, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_envelope_free(env);
}

static void advertise(bench *b)
{
    for (uint32_t i = 0; i < N; i++) {
        if (b->dev[i].stop_at <= 0)
            continue;
        shoal_secagg_advertise adv;
        uint8_t *bytes;
        size_t len;
        cr_assert_eq(shoal_secagg_client_advertise(b->dev[i].sa, &adv, NULL), SHOAL_OK);
        cr_assert_eq(shoal_secagg_wire_encode_advertise(&b->device_codec, session, sizeof session,
                                                        &adv, &bytes, &len, NULL),
                     SHOAL_OK);
        deliver(b, i, bytes, len);
    }
}

/* The device's answer to one server frame. */
static void answer(bench *b, const sa_frame *f)
{
    device *d = &b->dev[f->index];
    shoal_envelope *env;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_envelope_decode(&b->server_codec, f->bytes, f->len, &env, &ei), SHOAL_OK,
                 "%s", ei.msg);
    uint8_t *bytes = NULL;
    size_t len = 0;
    const uint32_t k = b->p.cfg.degree;
    switch (env->body_case) {
    case SHOAL__ENVELOPE__BODY_SECAGG_KEYS: {
        if (d->stop_at <= 1)
            break;
        shoal_secagg_advertise keys[N];
        shoal_secagg_sealed_shares out[N];
        size_t count = 0;
        for (size_t i = 0; i < env->secagg_keys->n_keys; i++)
            shoal_secagg_wire_key_get(env->secagg_keys->keys[i], &keys[i]);
        cr_assert_eq(
            shoal_secagg_client_share(d->sa, keys, env->secagg_keys->n_keys, out, &count, &ei),
            SHOAL_OK, "%s", ei.msg);
        cr_assert_eq(shoal_secagg_wire_encode_shares(&b->device_codec, session, sizeof session, out,
                                                     count, &bytes, &len, &ei),
                     SHOAL_OK, "%s", ei.msg);
        deliver(b, f->index, bytes, len);
        break;
    }
    case SHOAL__ENVELOPE__BODY_SECAGG_INBOX: {
        if (d->stop_at <= 2)
            break;
        shoal_secagg_sealed_shares in[N];
        const Shoal__SecAggInbox *m = env->secagg_inbox;
        cr_assert_eq(shoal_secagg_wire_sealed_get(m->shares, m->n_shares, in, k), SHOAL_OK);
        const size_t length = b->p.cfg.length;
        uint64_t input[PARAMS + 2];
        uint8_t masked[(PARAMS + 2) * 4];
        cr_assert_eq(shoal_secagg_fixed_encode_bits(&b->p.fx, d->update, PARAMS, d->weight, &d->bit,
                                                    b->p.flags, input),
                     SHOAL_OK);
        cr_assert_eq(shoal_secagg_client_mask(d->sa, in, m->n_shares, input, masked, &ei), SHOAL_OK,
                     "%s", ei.msg);
        /* In two chunks, as a large input would travel. */
        const size_t half = 64;
        cr_assert_eq(shoal_secagg_wire_encode_masked(&b->device_codec, session, sizeof session, 32,
                                                     length, 0, masked, half, &bytes, &len, &ei),
                     SHOAL_OK, "%s", ei.msg);
        deliver(b, f->index, bytes, len);
        cr_assert_eq(shoal_secagg_wire_encode_masked(&b->device_codec, session, sizeof session, 32,
                                                     length, half, masked + half, length * 4 - half,
                                                     &bytes, &len, &ei),
                     SHOAL_OK, "%s", ei.msg);
        deliver(b, f->index, bytes, len);
        break;
    }
    case SHOAL__ENVELOPE__BODY_SECAGG_UNMASK_REQUEST: {
        if (d->stop_at <= 4)
            break;
        const Shoal__SecAggUnmaskRequest *m = env->secagg_unmask_request;
        shoal_secagg_revealed_share out[N];
        size_t count = 0;
        cr_assert_eq(shoal_secagg_client_unmask(d->sa, m->survivors, m->n_survivors, NULL, NULL, 0,
                                                out, &count, &ei),
                     SHOAL_OK, "%s", ei.msg);
        cr_assert_eq(shoal_secagg_wire_encode_unmask(&b->device_codec, session, sizeof session, out,
                                                     count, &bytes, &len, &ei),
                     SHOAL_OK, "%s", ei.msg);
        deliver(b, f->index, bytes, len);
        break;
    }
    default:
        cr_assert_fail("unexpected %s", shoal_envelope_body_name(env));
    }
    shoal_envelope_free(env);
}

/* Runs the group to its end: frames answered as they come, deadlines
 * passed whenever nothing is left to answer. */
static void run(bench *b)
{
    advertise(b);
    for (int guard = 0; guard < 100 && shoal_sa_group_state(b->g) == SA_GROUP_RUNNING; guard++) {
        size_t count;
        sa_frame *frames = shoal_sa_group_take_frames(b->g, &count);
        for (size_t i = 0; i < count; i++) {
            answer(b, &frames[i]);
            shoal_free(frames[i].bytes);
        }
        shoal_free(frames);
        if (!count) {
            b->now = shoal_sa_group_deadline(b->g);
            shoal_sa_group_tick(b->g, b->now);
        }
    }
    cr_assert_neq(shoal_sa_group_state(b->g), SA_GROUP_RUNNING);
}

static void check_sum(bench *b)
{
    cr_assert_eq(shoal_sa_group_state(b->g), SA_GROUP_DONE);
    uint64_t weight, flagged = 99;
    const uint32_t *u3;
    size_t u3_count;
    const double *sum = shoal_sa_group_sum(b->g, &weight, &flagged, &u3, &u3_count);
    cr_assert_not_null(sum);
    double want[PARAMS] = {0};
    uint64_t want_weight = 0, want_flagged = 0;
    size_t expected_survivors = 0;
    for (uint32_t i = 0; i < N; i++) {
        if (b->dev[i].stop_at <= 2)
            continue;
        cr_assert_eq(u3[expected_survivors++], i);
        want_weight += b->dev[i].weight;
        want_flagged += b->p.flags ? b->dev[i].bit : 0;
        for (int j = 0; j < PARAMS; j++) {
            double x = fmin(fmax(b->dev[i].update[j], -0.5), 0.5);
            want[j] += b->dev[i].weight * x;
        }
    }
    cr_assert_eq(u3_count, expected_survivors);
    cr_assert_eq(weight, want_weight);
    cr_assert_eq(flagged, want_flagged);
    /* Stochastic rounding: each input is off by less than one step. */
    const double tolerance = (double)u3_count / b->p.fx.scale;
    for (int j = 0; j < PARAMS; j++)
        cr_assert_leq(fabs(sum[j] - want[j]), tolerance, "element %d: %g vs %g", j, sum[j],
                      want[j]);
}

Test(server_secagg_group, all_devices_sum_to_the_weighted_sum)
{
    bench b;
    bench_init(&b, N - 1, 5);
    run(&b);
    check_sum(&b);
    for (int p = 0; p < 4; p++)
        cr_assert_eq(shoal_sa_group_dropped(b.g)[p], 0);
    bench_fini(&b);
}

Test(server_secagg_group, a_device_lost_after_sharing_is_unmasked_away)
{
    bench b;
    bench_init(&b, 6, 3); /* SecAgg+: a sparse graph */
    b.dev[2].stop_at = 2; /* shares its secrets, never sends its input */
    b.dev[5].stop_at = 0; /* never advertises */
    run(&b);
    check_sum(&b);
    cr_assert_eq(shoal_sa_group_dropped(b.g)[0], 1);
    cr_assert_eq(shoal_sa_group_dropped(b.g)[2], 1);
    bench_fini(&b);
}

/* Adaptive clipping: the unclipped bit is one more element after the
 * weight; the group's count is the survivors' bits, a dropped device's
 * not among them (devices 0, 2, 3, 5, 6 set it; 2 and 5 drop out). */
Test(server_secagg_group, the_unclipped_bits_are_counted_over_the_survivors)
{
    bench b;
    bench_init_flags(&b, 6, 3, 1);
    b.dev[2].stop_at = 2;
    b.dev[5].stop_at = 0;
    run(&b);
    check_sum(&b);
    uint64_t weight, flagged;
    const uint32_t *u3;
    size_t count;
    cr_assert_not_null(shoal_sa_group_sum(b.g, &weight, &flagged, &u3, &count));
    cr_assert_eq(flagged, 3u, "devices 0, 3 and 6");
    bench_fini(&b);
}

Test(server_secagg_group, below_threshold_fails_without_a_sum)
{
    bench b;
    bench_init(&b, N - 1, 5);
    for (uint32_t i = 0; i < 4; i++)
        b.dev[i].stop_at = 2; /* 4 of 8 mask: below t = 5 before any share is asked for */
    run(&b);
    cr_assert_eq(shoal_sa_group_state(b.g), SA_GROUP_FAILED);
    uint64_t weight, flagged;
    const uint32_t *u3;
    size_t count;
    cr_assert_null(shoal_sa_group_sum(b.g, &weight, &flagged, &u3, &count));
    cr_assert_str_eq(
        shoal_sa_group_failure(b.g),
        "secure aggregation: 4 devices answered the mask phase; the threshold is 5, so the "
        "group fails");
    bench_fini(&b);
}

Test(server_secagg_group, a_forged_index_and_a_late_device_are_refused)
{
    bench b;
    bench_init(&b, N - 1, 5);
    b.dev[1].stop_at = 0;
    shoal_secagg_advertise adv;
    uint8_t *bytes;
    size_t len;
    cr_assert_eq(shoal_secagg_client_advertise(b.dev[0].sa, &adv, NULL), SHOAL_OK);
    cr_assert_eq(shoal_secagg_wire_encode_advertise(&b.device_codec, session, sizeof session, &adv,
                                                    &bytes, &len, NULL),
                 SHOAL_OK);
    shoal_envelope *env;
    cr_assert_eq(shoal_envelope_decode(&b.device_codec, bytes, len, &env, NULL), SHOAL_OK);
    shoal_errinfo ei = {{0}};
    /* Device 3 sending device 0's keys. */
    cr_assert_eq(shoal_sa_group_on_message(b.g, 3, env, 0, &ei), SHOAL_EPROTO);
    cr_assert_str_eq(ei.msg, "SecAggAdvertise.key.index: 0 is not the sender's index 3");
    cr_assert_eq(shoal_sa_group_on_message(b.g, 0, env, 0, &ei), SHOAL_OK, "%s", ei.msg);
    /* The same advertisement again: a replay. */
    cr_assert_eq(shoal_sa_group_on_message(b.g, 0, env, 0, &ei), SHOAL_ESTATE);
    shoal_envelope_free(env);
    shoal_free(bytes);
    b.dev[0].stop_at = 0; /* already advertised */
    advertise(&b);
    b.dev[0].stop_at = NEVER;
    b.now = 1000;
    shoal_sa_group_tick(b.g, b.now); /* the advertise phase closes without device 1 */
    cr_assert_eq(shoal_sa_group_phase(b.g), SHOAL_SECAGG_PHASE_SHARE);
    cr_assert_eq(shoal_secagg_client_advertise(b.dev[1].sa, &adv, NULL), SHOAL_OK);
    cr_assert_eq(shoal_secagg_wire_encode_advertise(&b.device_codec, session, sizeof session, &adv,
                                                    &bytes, &len, NULL),
                 SHOAL_OK);
    cr_assert_eq(shoal_envelope_decode(&b.device_codec, bytes, len, &env, NULL), SHOAL_OK);
    cr_assert_eq(shoal_sa_group_on_message(b.g, 1, env, b.now, &ei), SHOAL_ESTATE);
    shoal_envelope_free(env);
    shoal_free(bytes);
    bench_fini(&b);
}
