/* The keys that seal TLS session tickets, and the OpenSSL callback that
 * uses them (see tickets_int.h for the schedule and why). */
#include "tickets_int.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <sodium.h>
#include <string.h>
#include <time.h>

#include "shoal/alloc.h"

/* RFC 5077 §4's recommended format, which OpenSSL implements: the key
 * name in the clear, AES-256-CBC for the session, HMAC-SHA256 over the
 * whole. */
typedef struct ticket_key {
    uint8_t name[SHOAL_NET_TICKET_NAME_LEN];
    uint8_t cipher[32];
    uint8_t mac[32];
} ticket_key;

struct shoal_net_tickets {
    pthread_mutex_t lock;
    /* Guarded by lock. */
    ticket_key *keys; /* sodium_malloc'd: [0] current, [1] previous */
    int have_previous;
    int64_t period_us;
    int64_t current_since_us; /* when keys[0] became current */
    uint64_t rotations;
    EVP_CIPHER *aes; /* fetched once: not per handshake */
};

static void fresh_key(ticket_key *k)
{
    randombytes_buf(k, sizeof *k);
}

/* Under t->lock: the rotations due by now_us, as if each had happened on
 * time. One period late: the current key becomes the previous one. Two
 * or more: the previous key would have been dropped at the second, and
 * the current one is already past its two periods: both go. */
static void advance(shoal_net_tickets *t, int64_t now_us)
{
    if (now_us - t->current_since_us < t->period_us)
        return;
    int64_t periods = (now_us - t->current_since_us) / t->period_us;
    if (periods == 1) {
        t->keys[1] = t->keys[0];
        t->have_previous = 1;
    } else {
        sodium_memzero(&t->keys[1], sizeof t->keys[1]);
        t->have_previous = 0;
    }
    fresh_key(&t->keys[0]);
    t->current_since_us += periods * t->period_us;
    t->rotations += (uint64_t)periods;
}

shoal_err shoal_net_tickets_new(int64_t period_us, int64_t now_us, shoal_net_tickets **out)
{
    if (!out)
        return SHOAL_EINVAL;
    *out = NULL;
    if (period_us <= 0)
        return SHOAL_EINVAL;
    if (sodium_init() < 0)
        return SHOAL_ECRYPTO;
    shoal_net_tickets *t = shoal_calloc(1, sizeof *t);
    if (!t)
        return SHOAL_ENOMEM;
    t->keys = sodium_malloc(2 * sizeof *t->keys);
    t->aes = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
    if (!t->keys || !t->aes || pthread_mutex_init(&t->lock, NULL) != 0) {
        shoal_err err = t->aes ? SHOAL_ENOMEM : SHOAL_ECRYPTO;
        if (t->keys)
            sodium_free(t->keys);
        EVP_CIPHER_free(t->aes);
        shoal_free(t);
        return err;
    }
    fresh_key(&t->keys[0]);
    sodium_memzero(&t->keys[1], sizeof t->keys[1]);
    t->period_us = period_us;
    t->current_since_us = now_us;
    *out = t;
    return SHOAL_OK;
}

void shoal_net_tickets_free(shoal_net_tickets *t)
{
    if (!t)
        return;
    sodium_free(t->keys); /* wipes them */
    EVP_CIPHER_free(t->aes);
    pthread_mutex_destroy(&t->lock);
    shoal_free(t);
}

/* Under t->lock. */
static shoal_net_ticket_key find(const shoal_net_tickets *t, const uint8_t *name)
{
    if (sodium_memcmp(name, t->keys[0].name, SHOAL_NET_TICKET_NAME_LEN) == 0)
        return SHOAL_NET_TICKET_CURRENT;
    if (t->have_previous && sodium_memcmp(name, t->keys[1].name, SHOAL_NET_TICKET_NAME_LEN) == 0)
        return SHOAL_NET_TICKET_PREVIOUS;
    return SHOAL_NET_TICKET_UNKNOWN;
}

shoal_net_ticket_key shoal_net_tickets_find(shoal_net_tickets *t,
                                            const uint8_t name[SHOAL_NET_TICKET_NAME_LEN],
                                            int64_t now_us)
{
    pthread_mutex_lock(&t->lock);
    advance(t, now_us);
    shoal_net_ticket_key which = find(t, name);
    pthread_mutex_unlock(&t->lock);
    return which;
}

void shoal_net_tickets_current_name(shoal_net_tickets *t, int64_t now_us,
                                    uint8_t name[SHOAL_NET_TICKET_NAME_LEN])
{
    pthread_mutex_lock(&t->lock);
    advance(t, now_us);
    memcpy(name, t->keys[0].name, SHOAL_NET_TICKET_NAME_LEN);
    pthread_mutex_unlock(&t->lock);
}

uint64_t shoal_net_tickets_rotations(shoal_net_tickets *t)
{
    pthread_mutex_lock(&t->lock);
    uint64_t n = t->rotations;
    pthread_mutex_unlock(&t->lock);
    return n;
}

/* ---- OpenSSL ------------------------------------------------------------------------- */

static int ex_index = -1;
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;

static void make_ex_index(void)
{
    ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static int64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Under t->lock: keys the cipher and the MAC (both copy the key). */
static int use_key(const shoal_net_tickets *t, const ticket_key *k, EVP_CIPHER_CTX *cctx,
                   EVP_MAC_CTX *hctx, const unsigned char *iv, int enc)
{
    OSSL_PARAM params[3];
    params[0] =
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->mac, sizeof k->mac);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    int ok = enc ? EVP_EncryptInit_ex(cctx, t->aes, NULL, k->cipher, iv)
                 : EVP_DecryptInit_ex(cctx, t->aes, NULL, k->cipher, iv);
    return ok == 1 && EVP_MAC_CTX_set_params(hctx, params) == 1;
}

/* OpenSSL's ticket key callback (SSL_CTX_set_tlsext_ticket_key_evp_cb):
 * enc 1 seals a new ticket (fill the name and IV, key both contexts;
 * return 1), enc 0 opens one (return 0 for an unknown name: OpenSSL then
 * makes a full handshake; 1 to resume; 2 to resume and issue a new
 * ticket sealed with the current key); -1 is an error (the handshake
 * fails). Runs on the service thread. */
static int ticket_key_cb(SSL *ssl, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *cctx,
                         EVP_MAC_CTX *hctx, int enc)
{
    shoal_net_tickets *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index);
    if (!t)
        return -1;
    int64_t now = monotonic_us();
    int ret;
    pthread_mutex_lock(&t->lock);
    advance(t, now);
    if (enc) {
        memcpy(name, t->keys[0].name, SHOAL_NET_TICKET_NAME_LEN);
        randombytes_buf(iv, (size_t)EVP_CIPHER_get_iv_length(t->aes));
        ret = use_key(t, &t->keys[0], cctx, hctx, iv, 1) ? 1 : -1;
    } else {
        shoal_net_ticket_key which = find(t, name);
        ret = which == SHOAL_NET_TICKET_CURRENT ? 1 : which == SHOAL_NET_TICKET_PREVIOUS ? 2 : 0;
        if (ret &&
            !use_key(t, &t->keys[which == SHOAL_NET_TICKET_CURRENT ? 0 : 1], cctx, hctx, iv, 0))
            ret = -1;
    }
    pthread_mutex_unlock(&t->lock);
    return ret;
}

int shoal_net_tickets_install(shoal_net_tickets *t, void *ssl_ctx)
{
    SSL_CTX *ctx = ssl_ctx;
    pthread_once(&ex_once, make_ex_index);
    if (!t || !ctx || ex_index < 0 || SSL_CTX_set_ex_data(ctx, ex_index, t) != 1 ||
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb) != 1)
        return -1;
    return 0;
}
