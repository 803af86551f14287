/* The TLS session kept between connections (docs/sdk.md, "TLS session
 * resumption"): what shoal_tls_get_session gives after a handshake,
 * offered with shoal_tls_set_session on the next connection to the same
 * host:port, so that it skips the key exchange and the certificate. In
 * memory, and with state_path in the device state, sealed there with a
 * key derived from the example store's key when there is one. It holds
 * the session's master secret: every copy is wiped when dropped. */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "client_int.h"
#include "shoal/alloc.h"

/* The sealed row's key context (a saved upload's is another). */
static const char session_context[] = "shoal device state: tls session v1";

void shoal_devc_tls_forget(shoal_client *c)
{
    shoal_tls_session_free(c->tls_session, c->tls_session_len);
    c->tls_session = NULL;
    c->tls_session_len = 0;
}

/* Drops the kept session from memory and from the device state. */
static void drop(shoal_client *c)
{
    shoal_devc_tls_forget(c);
    shoal_errinfo ei = {{0}};
    if (c->db.db && shoal_devc_db_drop_tls(&c->db, c->peer, &ei) != SHOAL_OK)
        shoal_devc_log(c, 4, "device state: %s", ei.msg);
}

/* Writes the kept session to the device state, sealed with the row's
 * peer as associated data (a row copied under another peer does not
 * open). Best effort: without it a restarted app makes one full
 * handshake. */
static void persist(shoal_client *c)
{
    if (!c->db.db)
        return;
    const uint8_t *bytes = c->tls_session;
    size_t len = c->tls_session_len;
    uint8_t *sealed = NULL;
    if (c->cfg.store_key) {
        /* The row's peer is bound: a row copied under another peer does
         * not open. */
        if (shoal_devc_seal(c, session_context, bytes, len, (const uint8_t *)c->peer,
                            strlen(c->peer), &sealed, &len) != SHOAL_OK) {
            shoal_devc_log(c, 4, "device state: cannot seal the TLS session; not kept");
            return;
        }
        bytes = sealed;
    }
    shoal_errinfo ei = {{0}};
    if (shoal_devc_db_save_tls(&c->db, c->peer, bytes, len, sealed != NULL,
                               c->port->wall_ms(c->port->ctx), &ei) != SHOAL_OK)
        shoal_devc_log(c, 4, "device state: %s", ei.msg);
    shoal_free(sealed); /* ciphertext */
}

void shoal_devc_tls_restore(shoal_client *c)
{
    if (!c->db.db)
        return;
    if (c->cfg.disable_tls_resumption) {
        /* Turning resumption off also takes the secret off the disk. */
        drop(c);
        return;
    }
    shoal_errinfo ei = {{0}};
    uint8_t *stored = NULL;
    size_t len = 0;
    int sealed = 0;
    if (shoal_devc_db_load_tls(&c->db, c->peer, &stored, &len, &sealed, &ei) != SHOAL_OK) {
        shoal_devc_log(c, 4, "device state: %s", ei.msg);
        drop(c);
        return;
    }
    if (!stored)
        return;
    const char *why = NULL;
    uint8_t *session = NULL;
    size_t session_len = 0;
    if (sealed != (c->cfg.store_key != NULL)) {
        why = sealed ? "it is sealed and no store_key is set" : "it is not sealed";
    } else if (!sealed) {
        session = stored;
        session_len = len;
        stored = NULL;
    } else {
        shoal_err err = shoal_devc_unseal(c, session_context, stored, len, (const uint8_t *)c->peer,
                                          strlen(c->peer), &session, &session_len);
        if (err != SHOAL_OK)
            why = err == SHOAL_EFORMAT  ? "it is too short"
                  : err == SHOAL_ENOMEM ? "out of memory"
                                        : "it fails authentication with this store_key";
    }
    if (stored) {
        sodium_memzero(stored, len);
        shoal_free(stored);
    }
    if (why) {
        shoal_devc_log(c, 5, "the TLS session kept for %s is dropped: %s", c->peer, why);
        drop(c);
        return;
    }
    c->tls_session = session;
    c->tls_session_len = session_len;
}

void shoal_devc_tls_offer(shoal_client *c)
{
    if (!c->tls_session || c->cfg.disable_tls_resumption)
        return;
    shoal_errinfo ei = {{0}};
    shoal_err err = shoal_tls_set_session(c->tls, c->tls_session, c->tls_session_len, &ei);
    if (err == SHOAL_OK || err == SHOAL_ENOMEM)
        return; /* without memory: a full handshake this time, the session stays */
    /* Made by another mbedTLS, or for another name or pin: useless. */
    shoal_devc_log(c, 5, "the TLS session kept for %s is dropped: %s", c->peer, ei.msg);
    drop(c);
}

void shoal_devc_tls_keep(shoal_client *c)
{
    c->res.tls_resumed = shoal_tls_resumed(c->tls);
    if (c->cfg.disable_tls_resumption)
        return;
    uint8_t *bytes = NULL;
    size_t len = 0;
    shoal_errinfo ei = {{0}};
    shoal_err err = shoal_tls_get_session(c->tls, &bytes, &len, &ei);
    if (err == SHOAL_ENOTFOUND) {
        /* The server gives no tickets (any more): nothing to keep. */
        if (c->tls_session)
            drop(c);
        return;
    }
    if (err) {
        shoal_devc_log(c, 4, "the TLS session with %s is not kept: %s", c->peer, ei.msg);
        return;
    }
    /* A resumption without a new ticket gives the same bytes: no write. */
    if (c->tls_session && len == c->tls_session_len &&
        sodium_memcmp(bytes, c->tls_session, len) == 0) {
        shoal_tls_session_free(bytes, len);
        return;
    }
    shoal_devc_tls_forget(c);
    c->tls_session = bytes;
    c->tls_session_len = len;
    persist(c);
}
