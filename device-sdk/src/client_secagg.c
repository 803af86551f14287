/* Secure aggregation on the device (docs/protocol.md, "Secure
 * aggregation"): after training, the update is clipped and encoded in
 * fixed point with its weight (and with adaptive clipping its unclipped
 * bit: shoal_secagg_fixed_encode_bits), then the
 * client state machine of secure-agg/ (Bonawitz et al. CCS 2017, figure 4,
 * the user's side) answers the server's phase messages: keys, sealed
 * shares, the masked input in chunks, the unmasking shares. The update
 * itself never leaves the device. */
#include <stdio.h>
#include <string.h>

#include "client_int.h"
#include "shoal/alloc.h"
#include "shoal/secagg_wire.h"

struct shoal_devc_secagg {
    shoal_secagg_config cfg;
    shoal_secagg_fixed fx;
    uint32_t index;
    shoal_secagg_client *client;
    uint64_t *input; /* the encoded update, until it is masked */
    int64_t wait_ms;
};

uint64_t shoal_devc_secagg_bytes(const Shoal__SecureAggregation *sa)
{
    const uint64_t ring = sa->ring_bits <= 32 ? 4 : 8;
    /* The input and its masked copy, and per neighbour its keys, the shares
     * sealed to it, those it received, and the shares revealed. */
    return sa->vector_length * (8 + ring) +
           (uint64_t)sa->degree *
               (sizeof(shoal_secagg_advertise) + 3 * sizeof(shoal_secagg_sealed_shares) +
                sizeof(shoal_secagg_revealed_share)) +
           4096;
}

void shoal_devc_secagg_free(shoal_client *c)
{
    if (!c->sa)
        return;
    shoal_secagg_client_free(c->sa->client);
    shoal_free(c->sa->input);
    shoal_free(c->sa);
    c->sa = NULL;
}

int64_t shoal_devc_secagg_wait_ms(const shoal_client *c)
{
    return c->sa && c->sa->wait_ms > c->cfg.io_timeout_ms ? c->sa->wait_ms : c->cfg.io_timeout_ms;
}

static void send_or_fail(shoal_client *c, shoal_err err, uint8_t *bytes, size_t len,
                         const char *what, const shoal_errinfo *ei)
{
    (void)shoal_devc_send_encoded(c, err, bytes, len, what, ei);
}

int shoal_devc_secagg_start(shoal_client *c, float *delta, size_t count, uint64_t example_count)
{
    const Shoal__Plan *plan = c->accepted->plan;
    if (!plan->secure_aggregation)
        return 0;
    c->update = delta; /* shoal_client_last_update: the device's own view */
    c->update_count = count;
    struct shoal_devc_secagg *sa = shoal_calloc(1, sizeof *sa);
    shoal_errinfo ei = {{0}};
    if (!sa) {
        shoal_devc_fail(c, SHOAL_ENOMEM, SHOAL_SESSION_REASON_DEVICE,
                        "no memory for secure aggregation");
        return 1;
    }
    c->sa = sa;
    shoal_err err = shoal_secagg_init();
    if (err)
        shoal_errinfo_set(&ei, err, "libsodium did not initialise");
    else
        err = shoal_secagg_wire_plan(plan->secure_aggregation, &sa->cfg, &sa->index, &sa->fx, &ei);
    /* The weight, and with adaptive clipping the unclipped bit after it. */
    const size_t flags = c->res.unclipped >= 0 ? 1 : 0;
    if (!err && sa->cfg.length != count + 1 + flags)
        err = shoal_errinfo_set(&ei, SHOAL_EPROTO,
                                "Plan.secure_aggregation.vector_length %zu does not fit an update "
                                "of %zu parameters%s",
                                sa->cfg.length, count, flags ? " and the unclipped bit" : "");
    if (err) {
        shoal_devc_fail(c, err, SHOAL_SESSION_REASON_PROTOCOL, "%s", ei.msg);
        return 1;
    }
    sa->wait_ms = shoal_devc_clamp_ms(plan->secure_aggregation->phase_timeout_ms) * 4 +
                  shoal_devc_clamp_ms(plan->report_deadline_ms);
    const uint32_t weight = example_count > sa->fx.max_weight ? sa->fx.max_weight
                            : example_count                   ? (uint32_t)example_count
                                                              : 1;
    sa->input = shoal_mallocarray(sa->cfg.length, sizeof *sa->input);
    if (!sa->input) {
        shoal_devc_fail(c, SHOAL_ENOMEM, SHOAL_SESSION_REASON_DEVICE,
                        "no memory for the encoded update (%zu elements)", sa->cfg.length);
        return 1;
    }
    /* Clipping and encoding happen here, before any key exists; the bit
     * is masked with the update, so the server learns only the group's
     * count of them. */
    const uint8_t bit = c->res.unclipped == 1;
    err = shoal_secagg_fixed_encode_bits(&sa->fx, delta, count, weight, &bit, flags, sa->input);
    if (!err)
        err = shoal_secagg_client_new(&sa->cfg, sa->index, NULL, &sa->client, &ei);
    shoal_secagg_advertise adv;
    if (!err)
        err = shoal_secagg_client_advertise(sa->client, &adv, &ei);
    if (err) {
        shoal_devc_fail(c, err,
                        err == SHOAL_ENUMERIC ? SHOAL_SESSION_REASON_WORK_FAILED
                                              : SHOAL_SESSION_REASON_DEVICE,
                        "secure aggregation: %s", ei.msg[0] ? ei.msg : shoal_strerror(err));
        return 1;
    }
    c->pending_outcome = SHOAL_SESSION_TRAINED;
    c->pending_reason = SHOAL_SESSION_REASON_NONE;
    shoal_devc_event(c, SHOAL_EVENT_TRAINED, 0, shoal_devc_phase_ms(c), example_count, 0, NULL);
    c->phase_start_ms = c->port->monotonic_ms(c->port->ctx);
    c->state = ST_SECAGG;
    /* The group's answer ends the session as a Report's would. */
    c->report_queued = 1;
    uint8_t *bytes = NULL;
    size_t len = 0;
    err = shoal_secagg_wire_encode_advertise(&c->codec_out, c->session, c->session_len, &adv,
                                             &bytes, &len, &ei);
    send_or_fail(c, err, bytes, len, "SecAggAdvertise", &ei);
    return 1;
}

static void take_keys(shoal_client *c, const Shoal__SecAggKeys *m)
{
    struct shoal_devc_secagg *sa = c->sa;
    const size_t k = sa->cfg.degree;
    shoal_secagg_advertise *keys = shoal_calloc(m->n_keys ? m->n_keys : 1, sizeof *keys);
    shoal_secagg_sealed_shares *out = shoal_calloc(k, sizeof *out);
    shoal_errinfo ei = {{0}};
    shoal_err err = keys && out ? SHOAL_OK : SHOAL_ENOMEM;
    size_t count = 0;
    for (size_t i = 0; !err && i < m->n_keys; i++)
        shoal_secagg_wire_key_get(m->keys[i], &keys[i]);
    if (!err)
        err = shoal_secagg_client_share(sa->client, keys, m->n_keys, out, &count, &ei);
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (!err)
        err = shoal_secagg_wire_encode_shares(&c->codec_out, c->session, c->session_len, out, count,
                                              &bytes, &len, &ei);
    shoal_free(keys);
    shoal_free(out);
    send_or_fail(c, err, bytes, len, "SecAggShares", &ei);
}

static void take_inbox(shoal_client *c, const Shoal__SecAggInbox *m)
{
    struct shoal_devc_secagg *sa = c->sa;
    const size_t total = sa->cfg.length * shoal_secagg_ring_bytes(sa->cfg.bits);
    shoal_secagg_sealed_shares *in = shoal_calloc(m->n_shares, sizeof *in);
    uint8_t *masked = shoal_malloc(total);
    shoal_errinfo ei = {{0}};
    shoal_err err = in && masked && sa->input ? SHOAL_OK : SHOAL_ENOMEM;
    if (!err)
        err = shoal_secagg_wire_sealed_get(m->shares, m->n_shares, in, m->n_shares);
    if (!err)
        err = shoal_secagg_client_mask(sa->client, in, m->n_shares, sa->input, masked, &ei);
    shoal_free(in);
    shoal_free(sa->input);
    sa->input = NULL;
    /* In chunks of the largest payload one message carries, in order. */
    const size_t step = shoal_chunk_max_payload(c->codec_out.max_message_bytes);
    for (size_t off = 0; !err && off < total && c->state == ST_SECAGG; off += step) {
        uint8_t *bytes = NULL;
        size_t len = 0;
        const size_t n = total - off < step ? total - off : step;
        err = shoal_secagg_wire_encode_masked(&c->codec_out, c->session, c->session_len,
                                              sa->cfg.bits, sa->cfg.length, off, masked + off, n,
                                              &bytes, &len, &ei);
        send_or_fail(c, err, bytes, len, "SecAggMaskedInput", &ei);
        err = c->state == ST_SECAGG ? SHOAL_OK : SHOAL_ECLOSED;
    }
    shoal_free(masked);
    if (err && c->state == ST_SECAGG)
        send_or_fail(c, err, NULL, 0, "SecAggMaskedInput", &ei);
    if (c->state == ST_SECAGG)
        shoal_devc_event(c, SHOAL_EVENT_UPLOADED, total, shoal_devc_phase_ms(c), 0, 0, NULL);
}

static void take_request(shoal_client *c, const Shoal__SecAggUnmaskRequest *m)
{
    struct shoal_devc_secagg *sa = c->sa;
    shoal_secagg_revealed_share *out = shoal_calloc(sa->cfg.degree, sizeof *out);
    shoal_errinfo ei = {{0}};
    size_t count = 0;
    shoal_err err = out ? SHOAL_OK : SHOAL_ENOMEM;
    if (!err)
        err = shoal_secagg_client_unmask(sa->client, m->survivors, m->n_survivors, NULL, NULL, 0,
                                         out, &count, &ei);
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (!err)
        err = shoal_secagg_wire_encode_unmask(&c->codec_out, c->session, c->session_len, out, count,
                                              &bytes, &len, &ei);
    shoal_free(out);
    send_or_fail(c, err, bytes, len, "SecAggUnmask", &ei);
}

void shoal_devc_secagg_take(shoal_client *c, const shoal_envelope *env)
{
    if (!c->sa) {
        shoal_devc_fail(c, SHOAL_EPROTO, SHOAL_SESSION_REASON_PROTOCOL,
                        "%s from the server, but this session does not aggregate securely",
                        shoal_envelope_body_name(env));
        return;
    }
    switch (env->body_case) {
    case SHOAL__ENVELOPE__BODY_SECAGG_KEYS:
        take_keys(c, env->secagg_keys);
        return;
    case SHOAL__ENVELOPE__BODY_SECAGG_INBOX:
        take_inbox(c, env->secagg_inbox);
        return;
    case SHOAL__ENVELOPE__BODY_SECAGG_UNMASK_REQUEST:
        take_request(c, env->secagg_unmask_request);
        return;
    default:
        shoal_devc_fail(c, SHOAL_EPROTO, SHOAL_SESSION_REASON_PROTOCOL,
                        "unexpected %s from the server during secure aggregation",
                        shoal_envelope_body_name(env));
        return;
    }
}
