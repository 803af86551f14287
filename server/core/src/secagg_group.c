/* One secure-aggregation group on the server: the driver of a
 * shoal_secagg_server (Bonawitz et al. CCS 2017, figure 4, the server's
 * side; Bell et al. CCS 2020 for the sparse graph). The state machine
 * decides what is admissible; this file turns wire messages into its
 * inputs, closes phases on deadlines or completion, and queues what each
 * phase sends. */
#include "secagg_group.h"

#include <stdio.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/secagg_wire.h"

struct shoal_sa_group {
    sa_group_params p;
    shoal_codec codec;
    shoal_secagg_server *srv;
    sa_group_state state;
    char why[512]; /* why it failed: no key, share or input in it */
    int64_t deadline;
    uint8_t *answered;      /* per device: phases answered (0: none, 1: advertised, ...) */
    uint8_t **upload;       /* per device: the masked input being reassembled */
    uint64_t *upload_bytes; /* per device: bytes of it received */
    uint32_t dropped[5];    /* devices lost at each phase */
    sa_frame *frames;
    size_t frame_count, frame_cap;
    /* scratch for building messages: degree entries each */
    shoal_secagg_advertise *keys;
    shoal_secagg_sealed_shares *sealed;
    shoal_secagg_revealed_share *revealed;
    double *sum;
    uint64_t total_weight;
    uint64_t flagged; /* survivors that set the first flag */
    uint32_t *survivors;
    size_t survivor_count;
};

static size_t input_bytes(const shoal_sa_group *g)
{
    return g->p.cfg.length * shoal_secagg_ring_bytes(g->p.cfg.bits);
}

shoal_err shoal_sa_group_new(const sa_group_params *p, const shoal_codec *codec,
                             shoal_sa_group **out, shoal_errinfo *ei)
{
    *out = NULL;
    shoal_sa_group *g = shoal_calloc(1, sizeof *g);
    if (!g)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "secure aggregation group: out of memory");
    if (p->flags > 1 || p->cfg.length < 1 + (size_t)p->flags)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secure aggregation group: %u flags in an input of %zu elements",
                                 (unsigned)p->flags, p->cfg.length);
    g->p = *p;
    g->p.cfg.verify_keys = NULL;
    g->codec = *codec;
    g->deadline = p->advertise_deadline;
    const uint32_t n = p->cfg.n, k = p->cfg.degree;
    shoal_err err = shoal_secagg_init();
    if (err)
        shoal_errinfo_set(ei, err, "secure aggregation group: libsodium did not initialise");
    else
        err = shoal_secagg_server_new(&g->p.cfg, &g->srv, ei);
    if (!err) {
        g->answered = shoal_calloc(n, 1);
        g->upload = shoal_calloc(n, sizeof *g->upload);
        g->upload_bytes = shoal_calloc(n, sizeof *g->upload_bytes);
        g->keys = shoal_calloc(k, sizeof *g->keys);
        g->sealed = shoal_calloc(k, sizeof *g->sealed);
        g->revealed = shoal_calloc(k, sizeof *g->revealed);
        if (!g->answered || !g->upload || !g->upload_bytes || !g->keys || !g->sealed ||
            !g->revealed)
            err = shoal_errinfo_set(ei, SHOAL_ENOMEM, "secure aggregation group: out of memory");
    }
    if (err) {
        shoal_sa_group_free(g);
        return err;
    }
    *out = g;
    return SHOAL_OK;
}

void shoal_sa_group_free(shoal_sa_group *g)
{
    if (!g)
        return;
    for (uint32_t i = 0; g->upload && i < g->p.cfg.n; i++)
        shoal_free(g->upload[i]);
    for (size_t i = 0; i < g->frame_count; i++)
        shoal_free(g->frames[i].bytes);
    shoal_secagg_server_free(g->srv);
    shoal_free(g->answered);
    shoal_free(g->upload);
    shoal_free(g->upload_bytes);
    shoal_free(g->frames);
    shoal_free(g->keys);
    shoal_free(g->sealed);
    shoal_free(g->revealed);
    shoal_free(g->sum);
    shoal_free(g->survivors);
    shoal_free(g);
}

static void queue(shoal_sa_group *g, uint32_t index, uint8_t *bytes, size_t len)
{
    if (g->frame_count == g->frame_cap) {
        size_t cap = g->frame_cap ? 2 * g->frame_cap : 16;
        sa_frame *f = shoal_realloc(g->frames, cap * sizeof *f);
        if (!f) {
            /* The device misses this phase's message and drops out of the
             * group at the next deadline, like one that lost its network. */
            shoal_free(bytes);
            return;
        }
        g->frames = f;
        g->frame_cap = cap;
    }
    g->frames[g->frame_count++] = (sa_frame){index, bytes, len};
}

/* What the phase that just opened sends each device still in the group. */
static void send_phase(shoal_sa_group *g)
{
    const uint32_t n = g->p.cfg.n;
    const shoal_secagg_phase phase = shoal_secagg_server_phase(g->srv);
    size_t u3_count = 0;
    const uint32_t *u3 = phase == SHOAL_SECAGG_PHASE_UNMASK
                             ? shoal_secagg_server_survivors(g->srv, &u3_count)
                             : NULL;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *bytes = NULL;
        size_t len = 0, count = 0;
        shoal_err err = SHOAL_ENOTFOUND;
        if (phase == SHOAL_SECAGG_PHASE_SHARE && g->answered[i] == 1) {
            if (shoal_secagg_server_keys_for(g->srv, i, g->keys, &count) == SHOAL_OK && count)
                err = shoal_secagg_wire_encode_keys(&g->codec, g->keys, count, &bytes, &len, NULL);
        } else if (phase == SHOAL_SECAGG_PHASE_MASK && g->answered[i] == 2) {
            const shoal_secagg_sealed_shares *in;
            if (shoal_secagg_server_inbox(g->srv, i, &in, &count) == SHOAL_OK && count)
                err = shoal_secagg_wire_encode_inbox(&g->codec, in, count, &bytes, &len, NULL);
        } else if (phase == SHOAL_SECAGG_PHASE_UNMASK && g->answered[i] == 3) {
            err = shoal_secagg_wire_encode_request(&g->codec, u3, u3_count, &bytes, &len, NULL);
        }
        if (err == SHOAL_OK)
            queue(g, i, bytes, len);
    }
}

/* The unmasked sum, decoded (shoal_secagg_fixed_decode). */
static void finish(shoal_sa_group *g)
{
    const uint64_t *sum;
    uint32_t contributors;
    size_t u3_count;
    const uint32_t *u3 = shoal_secagg_server_survivors(g->srv, &u3_count);
    g->survivors = shoal_mallocarray(u3_count ? u3_count : 1, sizeof *g->survivors);
    g->sum = shoal_mallocarray(g->p.cfg.length, sizeof *g->sum);
    const size_t params = g->p.cfg.length - 1 - g->p.flags;
    if (!g->survivors || !g->sum ||
        shoal_secagg_server_result(g->srv, &sum, &contributors) != SHOAL_OK ||
        shoal_secagg_fixed_decode_bits(&g->p.fx, sum, params, contributors, g->sum,
                                       &g->total_weight, g->p.flags, &g->flagged) != SHOAL_OK ||
        g->total_weight == 0) {
        snprintf(g->why, sizeof g->why, "the unmasked sum could not be decoded");
        g->state = SA_GROUP_FAILED;
        return;
    }
    memcpy(g->survivors, u3, u3_count * sizeof *u3);
    g->survivor_count = u3_count;
    g->state = SA_GROUP_DONE;
}

static void close_phase(shoal_sa_group *g, int64_t now)
{
    const shoal_secagg_phase phase = shoal_secagg_server_phase(g->srv);
    const uint8_t done = (uint8_t)(phase == SHOAL_SECAGG_PHASE_UNMASK ? 4 : phase + 1);
    for (uint32_t i = 0; i < g->p.cfg.n; i++)
        if (g->answered[i] == done - 1) {
            g->dropped[done - 1]++;
            /* Out for good: a late message cannot rejoin the group. */
            g->answered[i] = 0xff;
            shoal_free(g->upload[i]);
            g->upload[i] = NULL;
        }
    shoal_errinfo ei = {{0}};
    if (shoal_secagg_server_close_phase(g->srv, &ei) != SHOAL_OK) {
        snprintf(g->why, sizeof g->why, "%s", ei.msg);
        g->state = SA_GROUP_FAILED;
        return;
    }
    if (shoal_secagg_server_phase(g->srv) == SHOAL_SECAGG_PHASE_DONE) {
        finish(g);
        return;
    }
    g->deadline = now + g->p.phase_timeout_ms;
    send_phase(g);
}

static shoal_err on_masked_chunk(shoal_sa_group *g, uint32_t index,
                                 const Shoal__SecAggMaskedInput *m, shoal_errinfo *ei)
{
    const size_t total = input_bytes(g);
    const Shoal__TensorInfo *t = m->input;
    if (t->ring_bits != g->p.cfg.bits || t->element_count != g->p.cfg.length)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "SecAggMaskedInput.input: %llu elements of %u bits; the group "
                                 "sums %zu elements of %u bits",
                                 (unsigned long long)t->element_count, (unsigned)t->ring_bits,
                                 g->p.cfg.length, g->p.cfg.bits);
    if (m->offset != g->upload_bytes[index])
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "SecAggMaskedInput.offset: %llu; expected %llu (chunks in order, "
                                 "without gaps or overlaps)",
                                 (unsigned long long)m->offset,
                                 (unsigned long long)g->upload_bytes[index]);
    if (!g->upload[index] && !(g->upload[index] = shoal_malloc(total)))
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "secure aggregation group: out of memory");
    memcpy(g->upload[index] + m->offset, m->data.data, m->data.len);
    g->upload_bytes[index] += m->data.len;
    if (g->upload_bytes[index] < total)
        return SHOAL_OK;
    shoal_err err = shoal_secagg_server_on_masked(g->srv, index, g->upload[index], total, ei);
    shoal_free(g->upload[index]);
    g->upload[index] = NULL;
    return err;
}

static shoal_err dispatch(shoal_sa_group *g, uint32_t index, const shoal_envelope *env,
                          shoal_errinfo *ei)
{
    const uint32_t k = g->p.cfg.degree;
    switch (env->body_case) {
    case SHOAL__ENVELOPE__BODY_SECAGG_ADVERTISE: {
        shoal_secagg_advertise adv;
        shoal_secagg_wire_key_get(env->secagg_advertise->key, &adv);
        if (adv.index != index)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "SecAggAdvertise.key.index: %u is not the sender's index %u",
                                     (unsigned)adv.index, (unsigned)index);
        return shoal_secagg_server_on_advertise(g->srv, &adv, ei);
    }
    case SHOAL__ENVELOPE__BODY_SECAGG_SHARES: {
        const Shoal__SecAggShares *m = env->secagg_shares;
        if (m->shares[0]->from != index)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "SecAggShares.shares[0].from: %u is not the sender's index %u",
                                     (unsigned)m->shares[0]->from, (unsigned)index);
        if (shoal_secagg_wire_sealed_get(m->shares, m->n_shares, g->sealed, k) != SHOAL_OK)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "SecAggShares.shares: %zu entries; a device has %u neighbours",
                                     m->n_shares, (unsigned)k);
        return shoal_secagg_server_on_shares(g->srv, index, g->sealed, m->n_shares, ei);
    }
    case SHOAL__ENVELOPE__BODY_SECAGG_MASKED_INPUT:
        if (shoal_secagg_server_phase(g->srv) != SHOAL_SECAGG_PHASE_MASK || g->answered[index] != 2)
            return shoal_errinfo_set(ei, SHOAL_ESTATE,
                                     "SecAggMaskedInput: device %u is not expected to mask now",
                                     (unsigned)index);
        return on_masked_chunk(g, index, env->secagg_masked_input, ei);
    case SHOAL__ENVELOPE__BODY_SECAGG_UNMASK: {
        const Shoal__SecAggUnmask *m = env->secagg_unmask;
        if (shoal_secagg_wire_revealed_get(m->shares, m->n_shares, g->revealed, k) != SHOAL_OK)
            return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                     "SecAggUnmask.shares: %zu entries; a device has %u neighbours",
                                     m->n_shares, (unsigned)k);
        return shoal_secagg_server_on_unmask(g->srv, index, g->revealed, m->n_shares, ei);
    }
    default:
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "%s is not a device's secure aggregation message",
                                 shoal_envelope_body_name(env));
    }
}

shoal_err shoal_sa_group_on_message(shoal_sa_group *g, uint32_t index, const shoal_envelope *env,
                                    int64_t now, shoal_errinfo *ei)
{
    if (!g || !env || index >= g->p.cfg.n)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "secure aggregation group: bad arguments");
    if (g->state != SA_GROUP_RUNNING || g->answered[index] == 0xff)
        return shoal_errinfo_set(ei, SHOAL_ESTATE,
                                 "device %u is out of its secure aggregation group (it missed a "
                                 "phase, or the group has ended)",
                                 (unsigned)index);
    const uint32_t before = shoal_secagg_server_participants(g->srv, shoal_sa_group_phase(g));
    shoal_err err = dispatch(g, index, env, ei);
    if (err)
        return err;
    if (shoal_secagg_server_participants(g->srv, shoal_sa_group_phase(g)) > before)
        g->answered[index]++;
    if (shoal_secagg_server_phase_complete(g->srv))
        close_phase(g, now);
    return SHOAL_OK;
}

void shoal_sa_group_tick(shoal_sa_group *g, int64_t now)
{
    if (g && g->state == SA_GROUP_RUNNING && now >= g->deadline)
        close_phase(g, now);
}

int64_t shoal_sa_group_deadline(const shoal_sa_group *g)
{
    return g->state == SA_GROUP_RUNNING ? g->deadline : INT64_MAX;
}

sa_group_state shoal_sa_group_state(const shoal_sa_group *g)
{
    return g->state;
}

shoal_secagg_phase shoal_sa_group_phase(const shoal_sa_group *g)
{
    return shoal_secagg_server_phase(g->srv);
}

const char *shoal_sa_group_failure(const shoal_sa_group *g)
{
    return g->why;
}

const uint32_t *shoal_sa_group_dropped(const shoal_sa_group *g)
{
    return g->dropped;
}

sa_frame *shoal_sa_group_take_frames(shoal_sa_group *g, size_t *count)
{
    sa_frame *f = g->frames;
    *count = g->frame_count;
    g->frames = NULL;
    g->frame_count = g->frame_cap = 0;
    return f;
}

const double *shoal_sa_group_sum(const shoal_sa_group *g, uint64_t *total_weight, uint64_t *flagged,
                                 const uint32_t **survivors, size_t *survivor_count)
{
    if (g->state != SA_GROUP_DONE)
        return NULL;
    *total_weight = g->total_weight;
    *flagged = g->flagged;
    *survivors = g->survivors;
    *survivor_count = g->survivor_count;
    return g->sum;
}
