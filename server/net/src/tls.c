/* TLS settings for the vhost, session resumption on its SSL_CTX, and a
 * check of the certificate and key with OpenSSL before libwebsockets sees
 * them: lws reports a bad file only in its own log, and a person starting
 * the server needs to read which file is wrong and why. */
#include "net_int.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

long shoal_net_tls_options(void)
{
    /* TLS 1.2 minimum. No renegotiation-era compression either. */
    return (long)(SSL_OP_NO_SSLv2 | SSL_OP_NO_SSLv3 | SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1 |
                  SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
}

const char *shoal_net_tls12_ciphers(void)
{
    /* Forward secrecy and AEAD only (ECDHE with AES-GCM or
     * ChaCha20-Poly1305), for ECDSA and RSA certificates. */
    return "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
           "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
           "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
}

static int ctx_index = -1; /* SSL_CTX ex data: the shoal_net */
static int ssl_index = -1; /* SSL ex data: the handshake is counted */
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void make_indexes(void)
{
    ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ssl_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* OpenSSL's info callback for every connection of the vhost, set on the
 * SSL_CTX rather than taken through lws's LWS_CALLBACK_SSL_INFO: lws 4.1
 * starts SSL_accept while it adopts a socket whose ClientHello is already
 * there, before LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED gives the
 * connection its net_conn, and a resumed handshake (one round trip) can
 * finish right then (the tests saw it on loopback). Counts each handshake
 * once, full or resumed: OpenSSL may report the end of a handshake again
 * after TLS 1.3's post-handshake tickets. */
static void count_handshake(const SSL *ssl, int where, int ret)
{
    (void)ret;
    static char counted;
    if (!(where & SSL_CB_HANDSHAKE_DONE))
        return;
    SSL *s = (SSL *)ssl; /* OpenSSL passes const; ex data needs the object */
    if (SSL_get_ex_data(s, ssl_index) || SSL_set_ex_data(s, ssl_index, &counted) != 1)
        return;
    shoal_net *net = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ctx_index);
    if (!net)
        return;
    atomic_fetch_add(&net->stat_tls_handshakes, 1);
    if (SSL_session_reused(s))
        atomic_fetch_add(&net->stat_tls_resumed, 1);
}

int shoal_net_tls_setup_ctx(shoal_net *net, void *ssl_ctx)
{
    SSL_CTX *ctx = ssl_ctx;
    pthread_once(&index_once, make_indexes);
    if (ctx_index < 0 || ssl_index < 0 || SSL_CTX_set_ex_data(ctx, ctx_index, net) != 1)
        return -1;
    SSL_CTX_set_info_callback(ctx, count_handshake);
    /* No session cache: OpenSSL's default would keep every session of
     * the last 20,000 handshakes in memory, and a session ID is useless
     * to the next replica behind a load balancer. Tickets carry the
     * session instead, or nothing resumes. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (!net->tickets) {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        return SSL_CTX_set_num_tickets(ctx, 0) == 1 ? 0 : -1;
    }
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
    /* A session lives as long as the keys that seal its tickets: the
     * ticket lifetime hint, and the age past which OpenSSL resumes no
     * session whatever the ticket (renewals keep the first handshake's
     * time in TLS 1.2). */
    int64_t lifetime_s = 2 * net->cfg.ticket_rotation_ms / 1000;
    SSL_CTX_set_timeout(ctx, (long)lifetime_s);
    /* TLS 1.3 sends tickets after the handshake (two by default); a
     * device opens one connection at a time and needs one. */
    if (SSL_CTX_set_num_tickets(ctx, 1) != 1)
        return -1;
    return shoal_net_tickets_install(net->tickets, ctx);
}

static shoal_err readable(const char *path, const char *what, const char *field, shoal_errinfo *ei)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return shoal_errinfo_set(ei, SHOAL_EIO,
                                 "%s: cannot read the TLS %s: %s; check %s and "
                                 "the file's permissions",
                                 path, what, strerror(errno), field);
    fclose(f);
    return SHOAL_OK;
}

/* An encrypted key would make OpenSSL prompt on the terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)userdata;
    return 0;
}

static const char *openssl_reason(char *buf, size_t size)
{
    unsigned long e = ERR_peek_last_error();
    if (!e)
        return "no detail from OpenSSL";
    ERR_error_string_n(e, buf, size);
    return buf;
}

shoal_err shoal_net_tls_check(const char *cert_path, const char *key_path, shoal_errinfo *ei)
{
    shoal_err err = readable(cert_path, "certificate", "cert_path", ei);
    if (!err)
        err = readable(key_path, "private key", "key_path", ei);
    if (err)
        return err;

    char why[256];
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "TLS: cannot create an OpenSSL context: %s",
                                 openssl_reason(why, sizeof why));
    SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
        err = shoal_errinfo_set(ei, SHOAL_EIO,
                                "%s: not a usable PEM certificate (chain): %s; give cert_path a "
                                "PEM file that starts with -----BEGIN CERTIFICATE-----",
                                cert_path, openssl_reason(why, sizeof why));
    } else if (SSL_CTX_use_PrivateKey_file(ctx, key_path, SSL_FILETYPE_PEM) != 1) {
        err = shoal_errinfo_set(ei, SHOAL_EIO,
                                "%s: not a usable PEM private key: %s; give key_path an "
                                "unencrypted PEM key",
                                key_path, openssl_reason(why, sizeof why));
    } else if (SSL_CTX_check_private_key(ctx) != 1) {
        err = shoal_errinfo_set(ei, SHOAL_EIO,
                                "%s does not hold the private key of the certificate in %s; "
                                "give the matching pair",
                                key_path, cert_path);
    }
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return err;
}
