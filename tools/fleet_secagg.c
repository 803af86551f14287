/* shoal-fleet's side of secure aggregation: the device SDK's sequence
 * (device-sdk/src/client_secagg.c; Bonawitz et al. CCS 2017, figure 4, the
 * user's side) run as one blocking loop per device thread. */
#include "fleet_secagg.h"

#include <string.h>

#include "shoal/alloc.h"
#include "shoal/chunk.h"
#include "shoal/secagg_wire.h"

shoal_err shoal_fleet_secagg_plan(const Shoal__Plan *plan, size_t param_count,
                                  fleet_secagg_plan *out, shoal_errinfo *ei)
{
    memset(out, 0, sizeof *out);
    shoal_err err = shoal_secagg_init();
    if (err)
        return shoal_errinfo_set(ei, err, "secure aggregation: libsodium did not initialise");
    err = shoal_secagg_wire_plan(plan->secure_aggregation, &out->cfg, &out->index, &out->fx, ei);
    if (err)
        return err;
    if (out->cfg.length != param_count + 1)
        return shoal_errinfo_set(ei, SHOAL_EPROTO,
                                 "Plan.secure_aggregation.vector_length %zu does not fit an "
                                 "update of %zu parameters",
                                 out->cfg.length, param_count);
    /* The first phase runs to the report deadline, each of the four after
     * it to the phase timeout; a second of slack for the last answer. */
    out->wait_ms = (int64_t)plan->report_deadline_ms +
                   4 * (int64_t)plan->secure_aggregation->phase_timeout_ms + 1000;
    return SHOAL_OK;
}

static shoal_err send_bytes(shoal_wss *wss, uint8_t *bytes, size_t len, shoal_errinfo *ei)
{
    shoal_err err = shoal_wss_send(wss, bytes, len, 60000, ei);
    shoal_free(bytes);
    return err;
}

static shoal_err on_keys(shoal_wss *wss, const shoal_codec *codec, const uint8_t *session,
                         size_t session_len, shoal_secagg_client *sa, const fleet_secagg_plan *p,
                         const Shoal__SecAggKeys *m, shoal_errinfo *ei)
{
    shoal_secagg_advertise *keys = shoal_calloc(m->n_keys ? m->n_keys : 1, sizeof *keys);
    shoal_secagg_sealed_shares *out = shoal_calloc(p->cfg.degree, sizeof *out);
    shoal_err err = keys && out ? SHOAL_OK : SHOAL_ENOMEM;
    size_t count = 0;
    uint8_t *bytes = NULL;
    size_t len = 0;
    for (size_t i = 0; !err && i < m->n_keys; i++)
        shoal_secagg_wire_key_get(m->keys[i], &keys[i]);
    if (!err)
        err = shoal_secagg_client_share(sa, keys, m->n_keys, out, &count, ei);
    if (!err)
        err = shoal_secagg_wire_encode_shares(codec, session, session_len, out, count, &bytes, &len,
                                              ei);
    shoal_free(keys);
    shoal_free(out);
    if (err == SHOAL_ENOMEM)
        shoal_errinfo_set(ei, err, "secure aggregation: no memory for the shares");
    return err ? err : send_bytes(wss, bytes, len, ei);
}

static shoal_err on_inbox(shoal_wss *wss, const shoal_codec *codec, const uint8_t *session,
                          size_t session_len, shoal_secagg_client *sa, const fleet_secagg_plan *p,
                          const uint64_t *input, const Shoal__SecAggInbox *m, shoal_errinfo *ei)
{
    const size_t total = p->cfg.length * shoal_secagg_ring_bytes(p->cfg.bits);
    shoal_secagg_sealed_shares *in = shoal_calloc(m->n_shares ? m->n_shares : 1, sizeof *in);
    uint8_t *masked = shoal_malloc(total);
    shoal_err err = in && masked ? SHOAL_OK : SHOAL_ENOMEM;
    if (err)
        shoal_errinfo_set(ei, err, "secure aggregation: no memory for the masked input");
    if (!err && shoal_secagg_wire_sealed_get(m->shares, m->n_shares, in, m->n_shares) != SHOAL_OK)
        err =
            shoal_errinfo_set(ei, SHOAL_EPROTO, "SecAggInbox: %zu shares do not fit", m->n_shares);
    if (!err)
        err = shoal_secagg_client_mask(sa, in, m->n_shares, input, masked, ei);
    /* In chunks of the largest payload one message carries, in order. */
    const size_t step = shoal_chunk_max_payload(codec->max_message_bytes);
    for (size_t off = 0; !err && off < total; off += step) {
        const size_t n = total - off < step ? total - off : step;
        uint8_t *bytes = NULL;
        size_t len = 0;
        err =
            shoal_secagg_wire_encode_masked(codec, session, session_len, p->cfg.bits, p->cfg.length,
                                            off, masked + off, n, &bytes, &len, ei);
        if (!err)
            err = send_bytes(wss, bytes, len, ei);
    }
    shoal_free(in);
    shoal_free(masked);
    return err;
}

static shoal_err on_request(shoal_wss *wss, const shoal_codec *codec, const uint8_t *session,
                            size_t session_len, shoal_secagg_client *sa, const fleet_secagg_plan *p,
                            const Shoal__SecAggUnmaskRequest *m, shoal_errinfo *ei)
{
    shoal_secagg_revealed_share *out = shoal_calloc(p->cfg.degree, sizeof *out);
    size_t count = 0;
    uint8_t *bytes = NULL;
    size_t len = 0;
    shoal_err err = out ? SHOAL_OK : SHOAL_ENOMEM;
    if (err)
        shoal_errinfo_set(ei, err, "secure aggregation: no memory for the unmasking shares");
    if (!err)
        err = shoal_secagg_client_unmask(sa, m->survivors, m->n_survivors, NULL, NULL, 0, out,
                                         &count, ei);
    if (!err)
        err = shoal_secagg_wire_encode_unmask(codec, session, session_len, out, count, &bytes, &len,
                                              ei);
    shoal_free(out);
    return err ? err : send_bytes(wss, bytes, len, ei);
}

/* Waits for the group's next message, polling give_up. */
static shoal_err next_message(shoal_wss *wss, int64_t wait_ms, const atomic_int *give_up,
                              shoal_envelope **out, shoal_errinfo *ei)
{
    const shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_SERVER);
    for (int64_t waited = 0;; waited += 250) {
        if (give_up && atomic_load(give_up))
            return shoal_errinfo_set(ei, SHOAL_ECLOSED, "secure aggregation: the fleet is done");
        if (waited >= wait_ms)
            return shoal_errinfo_set(ei, SHOAL_ETIMEDOUT,
                                     "secure aggregation: no message from the group in %lld ms",
                                     (long long)wait_ms);
        uint8_t *msg = NULL;
        size_t len = 0;
        shoal_err err = shoal_wss_recv(wss, &msg, &len, 250, ei);
        if (err == SHOAL_ETIMEDOUT)
            continue;
        if (err)
            return err;
        err = shoal_envelope_decode(&codec, msg, len, out, ei);
        shoal_free(msg);
        return err;
    }
}

shoal_err shoal_fleet_secagg_run(shoal_wss *wss, const uint8_t *session, size_t session_len,
                                 const fleet_secagg_plan *p, const float *delta, size_t count,
                                 uint64_t example_count, const atomic_int *give_up,
                                 shoal_envelope **end, shoal_errinfo *ei)
{
    *end = NULL;
    const shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_DEVICE);
    const uint32_t weight = example_count > p->fx.max_weight ? p->fx.max_weight
                            : example_count                  ? (uint32_t)example_count
                                                             : 1;
    if (count + 1 != p->cfg.length)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "secure aggregation: an update of %zu parameters for a group "
                                 "summing %zu elements",
                                 count, p->cfg.length);
    uint64_t *input = shoal_mallocarray(p->cfg.length, sizeof *input);
    if (!input)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM,
                                 "secure aggregation: no memory for the encoded update");
    /* Clipping and encoding happen before any key exists. */
    shoal_err err = shoal_secagg_fixed_encode(&p->fx, delta, count, weight, input);
    if (err)
        shoal_errinfo_set(ei, err, "secure aggregation: the update could not be encoded");
    shoal_secagg_client *sa = NULL;
    shoal_secagg_advertise adv;
    uint8_t *bytes = NULL;
    size_t len = 0;
    if (!err)
        err = shoal_secagg_client_new(&p->cfg, p->index, NULL, &sa, ei);
    if (!err)
        err = shoal_secagg_client_advertise(sa, &adv, ei);
    if (!err)
        err = shoal_secagg_wire_encode_advertise(&codec, session, session_len, &adv, &bytes, &len,
                                                 ei);
    if (!err)
        err = send_bytes(wss, bytes, len, ei);
    while (!err) {
        shoal_envelope *env = NULL;
        if ((err = next_message(wss, p->wait_ms, give_up, &env, ei)) != SHOAL_OK)
            break;
        switch (env->body_case) {
        case SHOAL__ENVELOPE__BODY_SECAGG_KEYS:
            err = on_keys(wss, &codec, session, session_len, sa, p, env->secagg_keys, ei);
            break;
        case SHOAL__ENVELOPE__BODY_SECAGG_INBOX:
            err = on_inbox(wss, &codec, session, session_len, sa, p, input, env->secagg_inbox, ei);
            break;
        case SHOAL__ENVELOPE__BODY_SECAGG_UNMASK_REQUEST:
            err = on_request(wss, &codec, session, session_len, sa, p, env->secagg_unmask_request,
                             ei);
            break;
        case SHOAL__ENVELOPE__BODY_REPORT_ACK:
        case SHOAL__ENVELOPE__BODY_ABORT:
            *end = env;
            env = NULL;
            break;
        default:
            err = shoal_errinfo_set(ei, SHOAL_EPROTO, "unexpected %s during secure aggregation",
                                    shoal_envelope_body_name(env));
            break;
        }
        shoal_envelope_free(env);
        if (*end)
            break;
    }
    shoal_secagg_client_free(sa);
    shoal_free(input);
    return err;
}
