/* An upload cut off before its Report was acknowledged, kept to resume
 * before the reporting deadline (docs/protocol.md, "Resuming an upload"):
 * in memory, and with state_path in the device state, sealed with a key
 * derived from the example store's key when there is one, so that a
 * restarted app takes it up. */
#include <sodium.h>
#include <string.h>

#include "client_int.h"
#include "shoal/alloc.h"
#include "shoal/encoding.h"

/* Forgets the saved upload held in memory (the device state keeps its
 * copy). The update is wiped: it was computed from the examples. */
void shoal_devc_saved_forget(shoal_client *c)
{
    struct shoal_devc_saved_upload *s = &c->saved;
    if (s->bytes)
        sodium_memzero(s->bytes, s->len);
    if (s->update)
        sodium_memzero(s->update, s->update_count * sizeof(float));
    shoal_free(s->bytes);
    shoal_free(s->update);
    memset(s, 0, sizeof *s);
}

/* Drops a saved upload for good (sent, refused, or past its deadline),
 * from memory and from the device state. */
void shoal_devc_saved_drop(shoal_client *c)
{
    shoal_devc_saved_forget(c);
    shoal_errinfo ei = {{0}};
    if (c->saved_row && c->db.db &&
        shoal_devc_db_drop_upload(&c->db, c->population, &ei) != SHOAL_OK)
        shoal_devc_log(c, 4, "device state: %s", ei.msg);
    c->saved_row = 0;
}

/* The key a saved upload is sealed with in the device state: derived from
 * the example store's key, so an update computed from encrypted examples
 * is not kept in clear either. */
#define SEAL_KEY   crypto_aead_xchacha20poly1305_ietf_KEYBYTES
#define SEAL_NONCE crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define SEAL_TAG   crypto_aead_xchacha20poly1305_ietf_ABYTES

static void row_key(const shoal_client *c, const char *context, uint8_t key[SEAL_KEY])
{
    crypto_generichash(key, SEAL_KEY, (const uint8_t *)context, strlen(context), c->cfg.store_key,
                       c->cfg.store_key_len);
}

shoal_err shoal_devc_seal(const shoal_client *c, const char *context, const uint8_t *plain,
                          size_t len, const uint8_t *ad, size_t ad_len, uint8_t **out,
                          size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    uint8_t *sealed = shoal_malloc(SEAL_NONCE + len + SEAL_TAG);
    if (!sealed)
        return SHOAL_ENOMEM;
    shoal_err err = c->port->random(c->port->ctx, sealed, SEAL_NONCE);
    if (err != SHOAL_OK) {
        shoal_free(sealed);
        return err;
    }
    uint8_t key[SEAL_KEY];
    row_key(c, context, key);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(sealed + SEAL_NONCE, &clen, plain, len, ad, ad_len,
                                               NULL, sealed, key);
    sodium_memzero(key, sizeof key);
    *out = sealed;
    *out_len = SEAL_NONCE + (size_t)clen;
    return SHOAL_OK;
}

shoal_err shoal_devc_unseal(const shoal_client *c, const char *context, const uint8_t *sealed,
                            size_t len, const uint8_t *ad, size_t ad_len, uint8_t **out,
                            size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (len <= SEAL_NONCE + SEAL_TAG)
        return SHOAL_EFORMAT;
    uint8_t *plain = shoal_malloc(len);
    if (!plain)
        return SHOAL_ENOMEM;
    uint8_t key[SEAL_KEY];
    row_key(c, context, key);
    unsigned long long mlen = 0;
    int bad =
        crypto_aead_xchacha20poly1305_ietf_decrypt(plain, &mlen, NULL, sealed + SEAL_NONCE,
                                                   len - SEAL_NONCE, ad, ad_len, sealed, key) != 0;
    sodium_memzero(key, sizeof key);
    if (bad) {
        sodium_memzero(plain, len);
        shoal_free(plain);
        return SHOAL_ECRYPTO;
    }
    *out = plain;
    *out_len = (size_t)mlen;
    return SHOAL_OK;
}

static const char saved_context[] = "shoal device state: saved upload v1";

static size_t put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return 8;
}

/* What a sealed upload is bound to besides its bytes: the population, the
 * session, the checkpoint, and every figure stored beside it (round,
 * example count, metrics, deadline, and adaptive clipping's bit when there
 * is one: a row saved without it opens as before), so that none can be
 * changed in the file without the row failing to open. ad holds
 * SAVED_AD_MAX bytes. */
#define SAVED_AD_MAX (SHOAL_PROTOCOL_ID_MAX * 2 + 5 * 8 + 1 + 256)
static size_t saved_ad(const shoal_client *c, const shoal_devc_db_upload *u, uint8_t *ad)
{
    size_t plen = strlen(c->population) + 1, n = 0;
    if (plen > 256 || u->session_len > SHOAL_PROTOCOL_ID_MAX ||
        u->checkpoint_len > SHOAL_PROTOCOL_ID_MAX)
        return 0;
    memcpy(ad, c->population, plen);
    n = plen;
    ad[n++] = (uint8_t)u->session_len;
    memcpy(ad + n, u->session, u->session_len);
    n += u->session_len;
    ad[n++] = (uint8_t)u->checkpoint_len;
    memcpy(ad + n, u->checkpoint, u->checkpoint_len);
    n += u->checkpoint_len;
    uint64_t loss, accuracy;
    memcpy(&loss, &u->loss, sizeof loss);
    memcpy(&accuracy, &u->accuracy, sizeof accuracy);
    n += put_u64le(ad + n, u->round);
    n += put_u64le(ad + n, u->example_count);
    n += put_u64le(ad + n, (uint64_t)u->deadline_unix_ms);
    n += put_u64le(ad + n, loss);
    n += put_u64le(ad + n, accuracy);
    if (u->unclipped >= 0)
        ad[n++] = (uint8_t)(u->unclipped ? 1 : 0);
    return n;
}

/* Writes the saved upload to the device state, so that a restarted app
 * can resume it before the deadline. Best effort: without it the upload
 * is only lost on a restart. */
static void saved_persist(shoal_client *c)
{
    struct shoal_devc_saved_upload *s = &c->saved;
    if (!c->db.db || !s->held)
        return;
    shoal_errinfo ei = {{0}};
    shoal_devc_db_upload u = {.session_len = s->session_len,
                              .checkpoint_len = s->checkpoint_len,
                              .round = s->round,
                              .example_count = s->example_count,
                              .loss = s->loss,
                              .accuracy = s->accuracy,
                              .unclipped = s->unclipped};
    memcpy(u.session, s->session, s->session_len);
    memcpy(u.checkpoint, s->checkpoint, s->checkpoint_len);
    int64_t left = s->deadline_ms - c->port->monotonic_ms(c->port->ctx);
    u.deadline_unix_ms = c->port->wall_ms(c->port->ctx) + (left > 0 ? left : 0);
    uint8_t *sealed = NULL;
    if (c->cfg.store_key) {
        uint8_t ad[SAVED_AD_MAX];
        size_t ad_len = saved_ad(c, &u, ad), sealed_len = 0;
        if (!ad_len || shoal_devc_seal(c, saved_context, s->bytes, s->len, ad, ad_len, &sealed,
                                       &sealed_len) != SHOAL_OK) {
            shoal_devc_log(c, 4, "device state: cannot seal the saved upload; not kept");
            return;
        }
        u.sealed = 1;
        u.payload = sealed;
        u.payload_len = sealed_len;
    } else {
        u.payload = s->bytes;
        u.payload_len = s->len;
    }
    if (shoal_devc_db_save_upload(&c->db, c->population, &u, &ei) != SHOAL_OK)
        shoal_devc_log(c, 4, "device state: %s", ei.msg);
    else
        c->saved_row = 1;
    shoal_free(sealed);
}

/* At construction: takes up an upload a previous client saved, if its
 * deadline has not passed. One that cannot be read, opened or decoded is
 * dropped (logged): the worst case is a device that trains again. */
void shoal_devc_saved_restore(shoal_client *c)
{
    if (!c->db.db)
        return;
    shoal_errinfo ei = {{0}};
    shoal_devc_db_upload u;
    int found = 0;
    if (shoal_devc_db_load_upload(&c->db, c->population, &u, &found, &ei) != SHOAL_OK) {
        shoal_devc_log(c, 4, "device state: %s", ei.msg);
        if (shoal_devc_db_drop_upload(&c->db, c->population, &ei) != SHOAL_OK)
            shoal_devc_log(c, 4, "device state: %s", ei.msg);
        return;
    }
    if (!found)
        return;
    c->saved_row = 1;
    struct shoal_devc_saved_upload *s = &c->saved;
    int64_t left = u.deadline_unix_ms - c->port->wall_ms(c->port->ctx);
    const char *why = NULL;
    uint8_t *bytes = u.payload;
    size_t len = u.payload_len;
    if (left <= 0) {
        why = "its reporting deadline has passed";
    } else if (u.sealed != (c->cfg.store_key != NULL)) {
        why = u.sealed ? "it is sealed and no store_key is set" : "it is not sealed";
    } else if (u.sealed) {
        uint8_t ad[SAVED_AD_MAX];
        size_t ad_len = saved_ad(c, &u, ad);
        bytes = NULL;
        if (!ad_len || shoal_devc_unseal(c, saved_context, u.payload, u.payload_len, ad, ad_len,
                                         &bytes, &len) != SHOAL_OK)
            why = "it fails authentication with this store_key";
    }
    float *update = NULL;
    if (!why &&
        (len % 4 != 0 || !(update = shoal_mallocarray(len / 4, sizeof(float))) ||
         shoal_tensor_decode_f32le(bytes, len, update, len / 4, "saved update", &ei) != SHOAL_OK))
        why = "it cannot be decoded";
    if (why) {
        shoal_devc_log(c, 5, "the saved upload of \"%s\" is dropped: %s", c->population, why);
        if (update)
            sodium_memzero(update, (len / 4) * sizeof(float));
        shoal_free(update);
        if (bytes && bytes != u.payload) {
            sodium_memzero(bytes, u.payload_len);
            shoal_free(bytes);
        }
        shoal_free(u.payload);
        shoal_devc_saved_drop(c);
        return;
    }
    if (bytes != u.payload)
        shoal_free(u.payload);
    s->held = 1;
    memcpy(s->session, u.session, u.session_len);
    s->session_len = u.session_len;
    memcpy(s->checkpoint, u.checkpoint, u.checkpoint_len);
    s->checkpoint_len = u.checkpoint_len;
    s->bytes = bytes;
    s->len = len;
    s->update = update;
    s->update_count = len / 4;
    s->round = u.round;
    s->example_count = u.example_count;
    s->loss = u.loss;
    s->accuracy = u.accuracy;
    s->unclipped = u.unclipped;
    s->deadline_ms = c->port->monotonic_ms(c->port->ctx) + left;
    shoal_devc_log(c, 6, "a saved upload of %zu bytes for round %llu is kept from an earlier run",
                   len, (unsigned long long)u.round);
}

void shoal_devc_saved_expire(shoal_client *c)
{
    if (c->saved.held && c->port->monotonic_ms(c->port->ctx) >= c->saved.deadline_ms) {
        shoal_devc_log(c, 6, "the saved upload missed its reporting deadline: dropped");
        shoal_devc_saved_drop(c);
    }
}

/* Keeps an update whose upload was cut off, for the next session to
 * resume (docs/protocol.md, "Resuming an upload"): only before the
 * server's Abort or refusal (those end the session on its side too), and
 * only for a trained update. In memory: a client freed, or a process
 * restarted, starts over. */
void shoal_devc_saved_keep(shoal_client *c, shoal_session_outcome outcome, shoal_err err)
{
    int cut = outcome == SHOAL_SESSION_INTERRUPTED ||
              (outcome == SHOAL_SESSION_ERROR &&
               (err == SHOAL_EIO || err == SHOAL_ECLOSED || err == SHOAL_ETIMEDOUT));
    if (!cut || (c->state != ST_UPLOAD && c->state != ST_AWAIT_ACK) || !c->upload_bytes ||
        !c->accepted || c->pending_outcome != SHOAL_SESSION_TRAINED || c->res.reason)
        return;
    shoal_devc_saved_forget(c);
    struct shoal_devc_saved_upload *s = &c->saved;
    s->held = 1;
    memcpy(s->session, c->session, c->session_len);
    s->session_len = c->session_len;
    memcpy(s->checkpoint, c->held, c->held_len);
    s->checkpoint_len = c->held_len;
    s->bytes = c->upload_bytes;
    s->len = c->upload_len;
    c->upload_bytes = NULL;
    c->upload_len = 0;
    s->update = c->update;
    s->update_count = c->update_count;
    c->update = NULL;
    c->update_count = 0;
    s->round = c->res.round;
    s->example_count = c->res.example_count;
    s->loss = c->res.loss;
    s->accuracy = c->res.accuracy;
    s->unclipped = c->res.unclipped;
    s->deadline_ms = c->accepted_ms + shoal_devc_clamp_ms(c->accepted->plan->report_deadline_ms);
    c->res.upload_saved = 1;
    saved_persist(c);
    shoal_devc_log(c, 6, "upload of %zu bytes cut off at %zu: kept to resume before the deadline",
                   s->len, c->chunker.offset);
}

/* Continues a saved upload when the server resumed its session: the
 * ReportChunks start at upload_resume_offset, the Report repeats the
 * metrics of the training that produced the update. Returns 0 when the
 * answer is not a resume of the saved session. */
int shoal_devc_saved_resume(shoal_client *c, const Shoal__CheckInResult__Accepted *a)
{
    struct shoal_devc_saved_upload *s = &c->saved;
    if (!a->has_upload_resume_offset || a->upload_resume_offset > s->len ||
        a->task_kind != SHOAL__TASK_KIND__TASK_KIND_TRAIN || a->session_id.len != s->session_len ||
        memcmp(a->session_id.data, s->session, s->session_len) != 0 ||
        a->plan->model->parameter_count != s->update_count)
        return 0;
    if (shoal_chunker_init(&c->chunker, s->bytes, s->len,
                           shoal_chunk_max_payload(c->codec_out.max_message_bytes)) != SHOAL_OK ||
        shoal_chunker_resume(&c->chunker, a->upload_resume_offset) != SHOAL_OK)
        return 0;
    c->upload_bytes = s->bytes;
    c->upload_len = s->len;
    shoal_free(c->update);
    c->update = s->update;
    c->update_count = s->update_count;
    c->res.example_count = s->example_count;
    c->res.loss = s->loss;
    c->res.accuracy = s->accuracy;
    c->res.unclipped = s->unclipped;
    c->res.upload_resumed = 1;
    c->res.upload_resume_offset = a->upload_resume_offset;
    s->bytes = NULL;
    s->update = NULL;
    /* The device state keeps its copy until the Report is acknowledged:
     * a process killed during this upload resumes it again. */
    shoal_devc_saved_forget(c);
    c->pending_outcome = SHOAL_SESSION_TRAINED;
    shoal_devc_log(c, 6, "resuming the upload at byte %llu of %zu",
                   (unsigned long long)a->upload_resume_offset, c->upload_len);
    c->state = ST_UPLOAD;
    return 1;
}
