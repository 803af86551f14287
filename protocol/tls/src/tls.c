/* The sans-socket TLS 1.2 client session (see shoal/tls.h). Only mbedTLS
 * and Shoal headers here: the device SDK builds this file for phones. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h> /* only for the MBEDTLS_ERR_NET_* codes */
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/x509_crt.h>

#include "shoal/alloc.h"
#include "shoal/tls.h"

#if !defined(MBEDTLS_SSL_PROTO_TLS1_2) || !defined(MBEDTLS_SSL_CLI_C) ||                           \
    !defined(MBEDTLS_KEY_EXCHANGE_ECDHE_ECDSA_ENABLED) || !defined(MBEDTLS_GCM_C) ||               \
    !defined(MBEDTLS_CTR_DRBG_C) || !defined(MBEDTLS_X509_CRT_PARSE_C) ||                          \
    !defined(MBEDTLS_SSL_SERVER_NAME_INDICATION) || !defined(MBEDTLS_SHA256_C)
#error                                                                                             \
    "shoal-tls needs mbedTLS with TLS 1.2 client, ECDHE-ECDSA, GCM, CTR_DRBG, X.509, SNI, SHA-256"
#endif

/* ECDHE only (forward secrecy), AEAD only. Ordered by preference: AES-GCM
 * first (hardware AES on current phones), ChaCha20-Poly1305 for devices
 * without it. The ChaCha suites exist only when mbedTLS was built with
 * them. */
static const int allowed_ciphersuites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
#if defined(MBEDTLS_CHACHAPOLY_C)
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
#endif
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
#if defined(MBEDTLS_CHACHAPOLY_C)
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
#endif
    0,
};

/* RFC 1035: a name is at most 253 characters in text form. */
#define TLS_MAX_SERVER_NAME 253
#define TLS_LABEL_LEN       256

/* A saved session (shoal_tls_get_session): this magic, then the binding
 * (SHA-256 of the server name and the pinned CA text), then mbedTLS's own
 * serialisation, which carries its version and configuration. */
static const uint8_t session_magic[4] = {'S', 'T', 'S', '1'};
#define TLS_BINDING_LEN    32
#define TLS_SESSION_HEADER (sizeof session_magic + TLS_BINDING_LEN)

enum tls_phase {
    TLS_HANDSHAKING = 1,
    TLS_OPEN,
    TLS_FAILED, /* a final error: only free is left */
};

struct shoal_tls {
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_entropy_context entropy; /* used only without a caller source */

    shoal_tls_send_fn send;
    shoal_tls_recv_fn recv;
    void *io_ctx;
    shoal_tls_entropy_fn entropy_fn;
    void *entropy_ctx;

    enum tls_phase phase;
    bool want_write;
    bool io_failed;    /* a transport callback reported an error */
    bool peer_closed;  /* close_notify or EOF seen */
    bool close_queued; /* our close_notify went into the record layer */
    bool close_sent;   /* ... and out to the transport */
    bool initialised;  /* the mbedTLS contexts are set up (for free) */
    bool default_entropy;
    bool handshake_begun;
    bool session_offered; /* shoal_tls_set_session took one */
    bool full_handshake;  /* the server's Certificate was read: not resumed */

    /* What a saved session is bound to (TLS_SESSION_HEADER). */
    uint8_t binding[TLS_BINDING_LEN];

    char server_name[TLS_MAX_SERVER_NAME + 1];
    char peer_label[TLS_LABEL_LEN];
    char ca_label[TLS_LABEL_LEN];
};

/* A one-byte buffer for flushing through mbedtls_ssl_write with length 0:
 * never read (see flush_output). */
static const unsigned char flush_dummy[1] = {0};

static void copy_label(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void describe_mbedtls(int ret, char *buf, size_t cap)
{
    char text[160];
    mbedtls_strerror(ret, text, sizeof text);
    snprintf(buf, cap, "%s (-0x%04X)", text, (unsigned)-ret);
}

/* The bio adapters: map the Shoal callback convention onto mbedTLS's. */
static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    shoal_tls *tls = ctx;
    int n = tls->send(tls->io_ctx, buf, len);
    if (n > 0 && (size_t)n <= len)
        return n;
    if (n == 0 || n == SHOAL_TLS_IO_AGAIN) {
        tls->want_write = true;
        return MBEDTLS_ERR_SSL_WANT_WRITE;
    }
    tls->io_failed = true;
    return MBEDTLS_ERR_NET_SEND_FAILED;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    shoal_tls *tls = ctx;
    int n = tls->recv(tls->io_ctx, buf, len);
    if (n > 0 && (size_t)n <= len)
        return n;
    if (n == SHOAL_TLS_IO_AGAIN) {
        tls->want_write = false;
        return MBEDTLS_ERR_SSL_WANT_READ;
    }
    if (n == 0 || n == SHOAL_TLS_IO_CLOSED)
        return 0; /* mbedTLS reports MBEDTLS_ERR_SSL_CONN_EOF */
    tls->io_failed = true;
    return MBEDTLS_ERR_NET_RECV_FAILED;
}

static int entropy_adapter(void *ctx, unsigned char *buf, size_t len)
{
    shoal_tls *tls = ctx;
    return tls->entropy_fn(tls->entropy_ctx, buf, len) == SHOAL_OK
               ? 0
               : MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
}

static bool is_want(int ret)
{
    return ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE;
}

static shoal_err want(shoal_tls *tls, int ret)
{
    tls->want_write = ret == MBEDTLS_ERR_SSL_WANT_WRITE;
    return SHOAL_EAGAIN;
}

static shoal_err fail(shoal_tls *tls, shoal_errinfo *ei, shoal_err err, const char *fmt,
                      const char *detail)
{
    tls->phase = TLS_FAILED;
    return shoal_errinfo_set(ei, err, fmt, tls->peer_label, detail);
}

static shoal_err already_failed(const shoal_tls *tls, shoal_errinfo *ei)
{
    return shoal_errinfo_set(ei, SHOAL_ECLOSED,
                             "TLS: the session with %s already ended with an error; free it and "
                             "connect again",
                             tls->peer_label);
}

static bool looks_like_ip(const char *name)
{
    bool digits_and_dots = true;
    for (const char *p = name; *p; p++) {
        if (*p == ':')
            return true; /* IPv6 */
        if (!((*p >= '0' && *p <= '9') || *p == '.'))
            digits_and_dots = false;
    }
    return digits_and_dots;
}

/* ei: "TLS: certificate of host:port not trusted: <mbedTLS reasons>; <what
 * to do>". */
static shoal_err verify_failure(shoal_tls *tls, uint32_t flags, shoal_errinfo *ei)
{
    char lines[256];
    char info[300];
    if (mbedtls_x509_crt_verify_info(lines, sizeof lines, "", flags) < 0)
        snprintf(lines, sizeof lines, "verification flags 0x%08X\n", (unsigned)flags);
    /* mbedTLS gives one line per reason: join them with "; ". */
    size_t at = 0;
    for (const char *p = lines; *p && at + 3 < sizeof info; p++) {
        if (*p != '\n') {
            info[at++] = *p;
        } else if (p[1] != '\0') {
            info[at++] = ';';
            info[at++] = ' ';
        }
    }
    info[at] = '\0';

    /* What to do, for each kind of reason present. */
    char advice[400];
    size_t used = 0;
    advice[0] = '\0';
    if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH)
        used += (size_t)snprintf(
            advice + used, sizeof advice - used,
            "the certificate is not for server name \"%s\"%s; set server_name to a DNS name the "
            "certificate lists",
            tls->server_name,
            looks_like_ip(tls->server_name) ? " (mbedTLS 2.28 never matches IP addresses)" : "");
    if (used < sizeof advice &&
        (flags & (MBEDTLS_X509_BADCERT_NOT_TRUSTED | MBEDTLS_X509_BADCERT_MISSING |
                  MBEDTLS_X509_BADCERT_BAD_KEY | MBEDTLS_X509_BADCERT_BAD_MD |
                  MBEDTLS_X509_BADCERT_BAD_PK)))
        used += (size_t)snprintf(advice + used, sizeof advice - used, "%scheck the %s",
                                 used ? "; " : "", tls->ca_label);
    if (used < sizeof advice &&
        (flags & (MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE)))
        used += (size_t)snprintf(advice + used, sizeof advice - used,
                                 "%scheck this device's clock and the certificate's validity "
                                 "dates",
                                 used ? "; " : "");
    if (used == 0)
        snprintf(advice, sizeof advice, "check the server's certificate and the %s", tls->ca_label);
    tls->phase = TLS_FAILED;
    return shoal_errinfo_set(ei, SHOAL_EAUTH, "TLS: certificate of %s not trusted: %s; %s",
                             tls->peer_label, info, advice);
}

static shoal_err handshake_failure(shoal_tls *tls, int ret, shoal_errinfo *ei)
{
    char detail[200];
    describe_mbedtls(ret, detail, sizeof detail);

    uint32_t flags = mbedtls_ssl_get_verify_result(&tls->ssl);
    if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED ||
        (flags != 0 && flags != (uint32_t)-1 && ret == MBEDTLS_ERR_SSL_BAD_HS_CERTIFICATE))
        return verify_failure(tls, flags, ei);
    if (tls->io_failed)
        return fail(tls, ei, SHOAL_EIO, "TLS: handshake with %s failed: the transport failed (%s)",
                    detail);
    switch (ret) {
    case MBEDTLS_ERR_SSL_CONN_EOF:
    case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY:
        return fail(tls, ei, SHOAL_ECLOSED,
                    "TLS: %s closed the connection during the TLS handshake (%s); is it a TLS "
                    "server, and does it accept this client?",
                    detail);
    case MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE:
        return fail(tls, ei, SHOAL_EPROTO,
                    "TLS: %s refused the handshake with a fatal alert (%s); it must offer TLS "
                    "1.2 with ECDHE and AES-GCM or ChaCha20-Poly1305",
                    detail);
    case MBEDTLS_ERR_SSL_NO_USABLE_CIPHERSUITE:
    case MBEDTLS_ERR_SSL_BAD_HS_PROTOCOL_VERSION:
    case MBEDTLS_ERR_SSL_BAD_HS_SERVER_HELLO:
        return fail(tls, ei, SHOAL_EPROTO,
                    "TLS: handshake with %s failed: %s; the server must offer TLS 1.2 with "
                    "ECDHE and AES-GCM or ChaCha20-Poly1305",
                    detail);
    case MBEDTLS_ERR_SSL_INVALID_RECORD:
    case MBEDTLS_ERR_SSL_UNEXPECTED_MESSAGE:
    case MBEDTLS_ERR_SSL_INVALID_MAC:
        return fail(tls, ei, SHOAL_EPROTO,
                    "TLS: handshake with %s failed: %s; is the port a TLS server?", detail);
    case MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED:
    case MBEDTLS_ERR_CTR_DRBG_REQUEST_TOO_BIG:
        return fail(tls, ei, SHOAL_ECRYPTO,
                    "TLS: handshake with %s failed: the random generator failed (%s)", detail);
    case MBEDTLS_ERR_SSL_ALLOC_FAILED:
        return fail(tls, ei, SHOAL_ENOMEM, "TLS: handshake with %s failed: %s", detail);
    default:
        return fail(tls, ei, SHOAL_EPROTO, "TLS: handshake with %s failed: %s", detail);
    }
}

/* Errors of read/write/flush/close after the handshake: all final. */
static shoal_err session_failure(shoal_tls *tls, int ret, const char *doing, shoal_errinfo *ei)
{
    char detail[200];
    describe_mbedtls(ret, detail, sizeof detail);
    tls->phase = TLS_FAILED;
    if (tls->io_failed)
        return shoal_errinfo_set(ei, SHOAL_EIO, "TLS: %s %s failed: the transport failed", doing,
                                 tls->peer_label);
    if (ret == MBEDTLS_ERR_SSL_ALLOC_FAILED)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "TLS: %s %s: out of memory", doing,
                                 tls->peer_label);
    return shoal_errinfo_set(ei, SHOAL_EPROTO, "TLS: %s %s failed: %s", doing, tls->peer_label,
                             detail);
}

static shoal_err setup_failure(const shoal_tls *tls, int ret, shoal_errinfo *ei)
{
    if (ret == MBEDTLS_ERR_SSL_ALLOC_FAILED)
        return shoal_errinfo_set(
            ei, SHOAL_ENOMEM, "TLS: out of memory setting up the session with %s", tls->peer_label);
    char detail[200];
    describe_mbedtls(ret, detail, sizeof detail);
    return shoal_errinfo_set(ei, SHOAL_ECRYPTO, "TLS: setting up the session with %s failed: %s",
                             tls->peer_label, detail);
}

static shoal_err parse_ca(shoal_tls *tls, const char *pem, size_t len, shoal_errinfo *ei)
{
    /* mbedTLS parses PEM only from a NUL-terminated buffer whose length
     * includes the NUL. */
    unsigned char *copy = len < SIZE_MAX ? shoal_malloc(len + 1) : NULL;
    if (copy == NULL)
        return setup_failure(tls, MBEDTLS_ERR_SSL_ALLOC_FAILED, ei);
    memcpy(copy, pem, len);
    copy[len] = '\0';
    int ret = mbedtls_x509_crt_parse(&tls->ca, copy, len + 1);
    shoal_free(copy);
    if (ret == MBEDTLS_ERR_X509_ALLOC_FAILED)
        return setup_failure(tls, MBEDTLS_ERR_SSL_ALLOC_FAILED, ei);
    if (ret < 0) {
        char detail[200];
        describe_mbedtls(ret, detail, sizeof detail);
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "TLS: %s: not a usable PEM certificate: %s; give the server's "
                                 "CA certificate (\"-----BEGIN CERTIFICATE-----\")",
                                 tls->ca_label, detail);
    }
    if (ret > 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "TLS: %s: %d certificate(s) could not be parsed; fix or remove "
                                 "them",
                                 tls->ca_label, ret);
    if (tls->ca.version == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "TLS: %s: holds no certificate", tls->ca_label);
    return SHOAL_OK;
}

/* The binding of a saved session: what the handshake that made it
 * verified the server against. A session is resumed without looking at a
 * certificate, so one saved under another name or another pin must not be
 * offered. */
static int bind_session(shoal_tls *tls, const char *ca_pem, size_t ca_len)
{
    static const char context[] = "shoal tls session binding v1";
    mbedtls_sha256_context h;
    mbedtls_sha256_init(&h);
    int ret = mbedtls_sha256_starts_ret(&h, 0);
    if (!ret)
        ret = mbedtls_sha256_update_ret(&h, (const unsigned char *)context, sizeof context);
    if (!ret)
        ret = mbedtls_sha256_update_ret(&h, (const unsigned char *)tls->server_name,
                                        strlen(tls->server_name) + 1);
    if (!ret)
        ret = mbedtls_sha256_update_ret(&h, (const unsigned char *)ca_pem, ca_len);
    if (!ret)
        ret = mbedtls_sha256_finish_ret(&h, tls->binding);
    mbedtls_sha256_free(&h);
    return ret;
}

static shoal_err setup(shoal_tls *tls, const shoal_tls_config *c, shoal_errinfo *ei)
{
    static const char personalization[] = "shoal tls client";
    char detail[200];
    int ret;
    if (tls->default_entropy)
        ret = mbedtls_ctr_drbg_seed(&tls->drbg, mbedtls_entropy_func, &tls->entropy,
                                    (const unsigned char *)personalization,
                                    sizeof personalization - 1);
    else
        ret = mbedtls_ctr_drbg_seed(&tls->drbg, entropy_adapter, tls,
                                    (const unsigned char *)personalization,
                                    sizeof personalization - 1);
    if (ret != 0) {
        describe_mbedtls(ret, detail, sizeof detail);
        return shoal_errinfo_set(ei, SHOAL_ECRYPTO,
                                 "TLS: seeding the random generator failed: %s; check the "
                                 "entropy source",
                                 detail);
    }

    size_t ca_len = c->ca_pem_len ? c->ca_pem_len : strlen(c->ca_pem);
    shoal_err err = parse_ca(tls, c->ca_pem, ca_len, ei);
    if (err != SHOAL_OK)
        return err;
    if ((ret = bind_session(tls, c->ca_pem, ca_len)) != 0)
        return setup_failure(tls, ret, ei);

    ret = mbedtls_ssl_config_defaults(&tls->conf, MBEDTLS_SSL_IS_CLIENT,
                                      MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0)
        return setup_failure(tls, ret, ei);
    mbedtls_ssl_conf_min_version(&tls->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(&tls->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(&tls->conf, allowed_ciphersuites);
    mbedtls_ssl_conf_authmode(&tls->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&tls->conf, &tls->ca, NULL);
    mbedtls_ssl_conf_rng(&tls->conf, mbedtls_ctr_drbg_random, &tls->drbg);
#if defined(MBEDTLS_SSL_RENEGOTIATION)
    mbedtls_ssl_conf_renegotiation(&tls->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
#endif
#if defined(MBEDTLS_SSL_SESSION_TICKETS)
    mbedtls_ssl_conf_session_tickets(&tls->conf, c->session_tickets
                                                     ? MBEDTLS_SSL_SESSION_TICKETS_ENABLED
                                                     : MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
#endif

    ret = mbedtls_ssl_setup(&tls->ssl, &tls->conf);
    if (ret != 0)
        return setup_failure(tls, ret, ei);
    /* Sets SNI and the name the certificate must match. */
    ret = mbedtls_ssl_set_hostname(&tls->ssl, tls->server_name);
    if (ret != 0)
        return setup_failure(tls, ret, ei);
    mbedtls_ssl_set_bio(&tls->ssl, tls, bio_send, bio_recv, NULL);
    return SHOAL_OK;
}

shoal_err shoal_tls_new(const shoal_tls_config *config, shoal_tls **out, shoal_errinfo *ei)
{
    if (out == NULL)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "TLS: out is NULL");
    *out = NULL;
    if (config == NULL)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "TLS: config is NULL");
    if (config->server_name == NULL || config->server_name[0] == '\0')
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "TLS: server_name is required: the DNS name the server's "
                                 "certificate is issued for (e.g. localhost)");
    if (strlen(config->server_name) > TLS_MAX_SERVER_NAME)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "TLS: server_name is longer than %d characters",
                                 TLS_MAX_SERVER_NAME);
    if (config->ca_pem == NULL)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "TLS: ca_pem is required: the PEM CA certificate(s) the "
                                 "server's certificate must chain to");
    if (config->send == NULL || config->recv == NULL)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "TLS: the send and recv callbacks are required");

    shoal_tls *tls = shoal_calloc(1, sizeof *tls);
    if (tls == NULL)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "TLS: out of memory");
    copy_label(tls->server_name, sizeof tls->server_name, config->server_name);
    copy_label(tls->peer_label, sizeof tls->peer_label,
               config->peer_label ? config->peer_label : config->server_name);
    if (config->ca_label)
        copy_label(tls->ca_label, sizeof tls->ca_label, config->ca_label);
    else
        copy_label(tls->ca_label, sizeof tls->ca_label, "pinned CA certificates");
    tls->send = config->send;
    tls->recv = config->recv;
    tls->io_ctx = config->io_ctx;
    tls->entropy_fn = config->entropy;
    tls->entropy_ctx = config->entropy_ctx;
    tls->default_entropy = config->entropy == NULL;
    tls->phase = TLS_HANDSHAKING;

    mbedtls_ssl_init(&tls->ssl);
    mbedtls_ssl_config_init(&tls->conf);
    mbedtls_x509_crt_init(&tls->ca);
    mbedtls_ctr_drbg_init(&tls->drbg);
    if (tls->default_entropy)
        mbedtls_entropy_init(&tls->entropy);
    tls->initialised = true;

    shoal_err err = setup(tls, config, ei);
    if (err != SHOAL_OK) {
        shoal_tls_free(tls);
        return err;
    }
    *out = tls;
    return SHOAL_OK;
}

void shoal_tls_free(shoal_tls *tls)
{
    if (tls == NULL)
        return;
    if (tls->initialised) {
        /* Each _free zeroizes what it held (keys, records, DRBG state). */
        mbedtls_ssl_free(&tls->ssl);
        mbedtls_ssl_config_free(&tls->conf);
        mbedtls_x509_crt_free(&tls->ca);
        mbedtls_ctr_drbg_free(&tls->drbg);
        if (tls->default_entropy)
            mbedtls_entropy_free(&tls->entropy);
    }
    mbedtls_platform_zeroize(tls, sizeof *tls);
    shoal_free(tls);
}

shoal_err shoal_tls_handshake(shoal_tls *tls, shoal_errinfo *ei)
{
    if (tls == NULL)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "TLS: tls is NULL");
    if (tls->phase == TLS_OPEN)
        return SHOAL_OK;
    if (tls->phase == TLS_FAILED)
        return already_failed(tls, ei);
    tls->handshake_begun = true;
    /* mbedtls_ssl_handshake's own loop, watching the states go by: a full
     * handshake reads the server's Certificate after the ServerHello; a
     * resumed one goes from the ServerHello to ChangeCipherSpec (RFC 5246
     * §7.3; RFC 5077 §3.1), and mbedTLS 2.28 says so nowhere else once
     * the handshake is over. */
    int ret = 0;
    while (tls->ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER) {
        ret = mbedtls_ssl_handshake_step(&tls->ssl);
        if (tls->ssl.state == MBEDTLS_SSL_SERVER_CERTIFICATE)
            tls->full_handshake = true;
        if (ret != 0)
            break;
    }
    if (ret == 0) {
        tls->phase = TLS_OPEN;
        return SHOAL_OK;
    }
    if (is_want(ret))
        return want(tls, ret);
    return handshake_failure(tls, ret, ei);
}

int shoal_tls_want_write(const shoal_tls *tls)
{
    return tls != NULL && tls->want_write;
}

/* Reading and writing need the handshake done and the session not failed;
 * `doing` is "read from" or "write to". */
static shoal_err check_open(const shoal_tls *tls, const char *doing, shoal_errinfo *ei)
{
    if (tls->phase == TLS_FAILED)
        return already_failed(tls, ei);
    if (tls->phase != TLS_OPEN)
        return shoal_errinfo_set(ei, SHOAL_ESTATE, "TLS: %s %s before the handshake completed",
                                 doing, tls->peer_label);
    return SHOAL_OK;
}

shoal_err shoal_tls_read(shoal_tls *tls, uint8_t *buf, size_t cap, size_t *got, shoal_errinfo *ei)
{
    if (got != NULL)
        *got = 0;
    if (tls == NULL || buf == NULL || got == NULL || cap == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "TLS: read needs a session, a buffer and a "
                                 "non-zero capacity");
    shoal_err err = check_open(tls, "read from", ei);
    if (err != SHOAL_OK)
        return err;
    if (tls->peer_closed)
        return shoal_errinfo_set(ei, SHOAL_ECLOSED, "TLS: %s already closed the connection",
                                 tls->peer_label);
    int ret = mbedtls_ssl_read(&tls->ssl, buf, cap);
    if (ret > 0) {
        *got = (size_t)ret;
        return SHOAL_OK;
    }
    if (is_want(ret))
        return want(tls, ret);
    if (ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
        tls->peer_closed = true;
        return shoal_errinfo_set(ei, SHOAL_ECLOSED, "TLS: %s closed the session (close_notify)",
                                 tls->peer_label);
    }
    if ((ret == 0 || ret == MBEDTLS_ERR_SSL_CONN_EOF) && !tls->io_failed) {
        tls->peer_closed = true;
        tls->phase = TLS_FAILED; /* mbedTLS: stop using the context */
        return shoal_errinfo_set(ei, SHOAL_ECLOSED,
                                 "TLS: %s closed the connection without close_notify",
                                 tls->peer_label);
    }
    return session_failure(tls, ret, "reading from", ei);
}

/* Pushes a record mbedTLS still holds (out_left) to the transport.
 * mbedtls_ssl_write finishes such a pending record before anything else
 * and, with length 0, queues nothing new: flush_dummy is never read. */
static shoal_err flush_output(shoal_tls *tls, shoal_errinfo *ei)
{
    if (tls->ssl.out_left == 0)
        return SHOAL_OK;
    int ret = mbedtls_ssl_write(&tls->ssl, flush_dummy, 0);
    if (ret >= 0)
        return SHOAL_OK;
    if (is_want(ret))
        return want(tls, ret);
    return session_failure(tls, ret, "writing to", ei);
}

shoal_err shoal_tls_write(shoal_tls *tls, const uint8_t *data, size_t len, size_t *written,
                          shoal_errinfo *ei)
{
    if (written != NULL)
        *written = 0;
    if (tls == NULL || data == NULL || written == NULL || len == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "TLS: write needs a session, data and a non-zero length");
    shoal_err err = check_open(tls, "write to", ei);
    if (err != SHOAL_OK)
        return err;
    if (tls->close_queued)
        return shoal_errinfo_set(ei, SHOAL_ECLOSED, "TLS: write to %s after close_notify",
                                 tls->peer_label);
    if ((err = flush_output(tls, ei)) != SHOAL_OK)
        return err;

    size_t taken = 0;
    while (taken < len) {
        int max = mbedtls_ssl_get_max_out_record_payload(&tls->ssl);
        if (max <= 0)
            return session_failure(tls, max < 0 ? max : MBEDTLS_ERR_SSL_INTERNAL_ERROR,
                                   "writing to", ei);
        size_t chunk = len - taken < (size_t)max ? len - taken : (size_t)max;
        int ret = mbedtls_ssl_write(&tls->ssl, data + taken, chunk);
        if (ret > 0) {
            taken += (size_t)ret;
            continue;
        }
        if (is_want(ret)) {
            /* The record was built and encrypted before the transport
             * pushed back: the chunk is taken, only its sending waits. */
            if (tls->ssl.out_left > 0)
                taken += chunk;
            (void)want(tls, ret);
            break;
        }
        return session_failure(tls, ret, "writing to", ei);
    }
    *written = taken;
    return taken > 0 ? SHOAL_OK : SHOAL_EAGAIN;
}

shoal_err shoal_tls_flush(shoal_tls *tls, shoal_errinfo *ei)
{
    if (tls == NULL)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "TLS: tls is NULL");
    if (tls->phase == TLS_FAILED)
        return already_failed(tls, ei);
    if (tls->phase != TLS_OPEN)
        return SHOAL_OK;
    return flush_output(tls, ei);
}

shoal_err shoal_tls_close_notify(shoal_tls *tls, shoal_errinfo *ei)
{
    if (tls == NULL)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "TLS: tls is NULL");
    if (tls->phase == TLS_FAILED)
        return already_failed(tls, ei);
    if (tls->phase != TLS_OPEN || tls->close_sent)
        return SHOAL_OK;
    int ret;
    if (!tls->close_queued) {
        shoal_err err = flush_output(tls, ei);
        if (err != SHOAL_OK)
            return err;
        tls->close_queued = true;
        ret = mbedtls_ssl_close_notify(&tls->ssl);
    } else {
        /* With a record pending, mbedtls_ssl_close_notify only flushes. */
        ret = mbedtls_ssl_close_notify(&tls->ssl);
    }
    if (ret == 0) {
        tls->close_sent = true;
        return SHOAL_OK;
    }
    if (is_want(ret))
        return want(tls, ret);
    return session_failure(tls, ret, "sending close_notify to", ei);
}

shoal_err shoal_tls_random(shoal_tls *tls, uint8_t *buf, size_t len)
{
    if (tls == NULL || (buf == NULL && len > 0))
        return SHOAL_EINVAL;
    while (len > 0) {
        size_t part = len < MBEDTLS_CTR_DRBG_MAX_REQUEST ? len : MBEDTLS_CTR_DRBG_MAX_REQUEST;
        if (mbedtls_ctr_drbg_random(&tls->drbg, buf, part) != 0)
            return SHOAL_ECRYPTO;
        buf += part;
        len -= part;
    }
    return SHOAL_OK;
}

shoal_err shoal_tls_set_session(shoal_tls *tls, const uint8_t *saved, size_t len, shoal_errinfo *ei)
{
    if (tls == NULL || saved == NULL || len == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "TLS: set_session needs a session and bytes");
    if (tls->handshake_begun || tls->phase != TLS_HANDSHAKING)
        return shoal_errinfo_set(ei, SHOAL_ESTATE,
                                 "TLS: a saved session must be set before the handshake with %s "
                                 "begins",
                                 tls->peer_label);
    if (len <= TLS_SESSION_HEADER || memcmp(saved, session_magic, sizeof session_magic) != 0)
        return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                 "TLS: the saved session for %s is not one shoal_tls_get_session "
                                 "made; drop it",
                                 tls->peer_label);
    if (memcmp(saved + sizeof session_magic, tls->binding, TLS_BINDING_LEN) != 0)
        return shoal_errinfo_set(ei, SHOAL_EAUTH,
                                 "TLS: the saved session was made with another server name or "
                                 "other pinned CA certificates than %s now uses; drop it",
                                 tls->peer_label);
    mbedtls_ssl_session session;
    mbedtls_ssl_session_init(&session);
    int ret =
        mbedtls_ssl_session_load(&session, saved + TLS_SESSION_HEADER, len - TLS_SESSION_HEADER);
    shoal_err err = SHOAL_OK;
    if (ret == MBEDTLS_ERR_SSL_ALLOC_FAILED) {
        err = shoal_errinfo_set(ei, SHOAL_ENOMEM, "TLS: out of memory loading the saved session");
    } else if (ret != 0) {
        char detail[200];
        describe_mbedtls(ret, detail, sizeof detail);
        err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                "TLS: the saved session for %s does not load: %s%s; drop it",
                                tls->peer_label, detail,
                                ret == MBEDTLS_ERR_SSL_VERSION_MISMATCH
                                    ? " (saved by another mbedTLS version or configuration)"
                                    : "");
    } else if (session.verify_result != 0) {
        err = shoal_errinfo_set(ei, SHOAL_EAUTH,
                                "TLS: the saved session for %s comes from a handshake whose "
                                "certificate did not verify; drop it",
                                tls->peer_label);
    } else if ((ret = mbedtls_ssl_set_session(&tls->ssl, &session)) != 0) {
        err = setup_failure(tls, ret, ei);
    } else {
        tls->session_offered = true;
    }
    mbedtls_ssl_session_free(&session); /* wipes the master secret */
    return err;
}

shoal_err shoal_tls_get_session(const shoal_tls *tls, uint8_t **out, size_t *len, shoal_errinfo *ei)
{
    if (out != NULL)
        *out = NULL;
    if (len != NULL)
        *len = 0;
    if (tls == NULL || out == NULL || len == NULL)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "TLS: get_session needs a session and outputs");
    if (tls->phase != TLS_OPEN)
        return shoal_errinfo_set(ei, SHOAL_ESTATE,
                                 "TLS: no session with %s to save: the handshake has not "
                                 "completed, or the session failed",
                                 tls->peer_label);
    const mbedtls_ssl_session *session = mbedtls_ssl_get_session_pointer(&tls->ssl);
    size_t ticket_len = 0;
#if defined(MBEDTLS_SSL_SESSION_TICKETS)
    if (session != NULL)
        ticket_len = session->ticket_len;
#endif
    if (session == NULL || (ticket_len == 0 && session->id_len == 0))
        return shoal_errinfo_set(ei, SHOAL_ENOTFOUND,
                                 "TLS: %s gave neither a session ticket nor a session ID: the "
                                 "session cannot be resumed",
                                 tls->peer_label);
    size_t need = 0;
    int ret = mbedtls_ssl_session_save(session, NULL, 0, &need);
    if (ret != MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL && ret != 0)
        return setup_failure(tls, ret, ei);
    uint8_t *buf =
        need < SIZE_MAX - TLS_SESSION_HEADER ? shoal_malloc(TLS_SESSION_HEADER + need) : NULL;
    if (buf == NULL)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "TLS: out of memory saving the session");
    memcpy(buf, session_magic, sizeof session_magic);
    memcpy(buf + sizeof session_magic, tls->binding, TLS_BINDING_LEN);
    size_t written = 0;
    ret = mbedtls_ssl_session_save(session, buf + TLS_SESSION_HEADER, need, &written);
    if (ret != 0 || written != need) {
        shoal_tls_session_free(buf, TLS_SESSION_HEADER + need);
        return setup_failure(tls, ret != 0 ? ret : MBEDTLS_ERR_SSL_INTERNAL_ERROR, ei);
    }
    *out = buf;
    *len = TLS_SESSION_HEADER + need;
    return SHOAL_OK;
}

void shoal_tls_session_free(uint8_t *saved, size_t len)
{
    if (saved == NULL)
        return;
    mbedtls_platform_zeroize(saved, len);
    shoal_free(saved);
}

int shoal_tls_resumed(const shoal_tls *tls)
{
    return tls != NULL && tls->phase == TLS_OPEN && tls->session_offered && !tls->full_handshake;
}

const char *shoal_tls_ciphersuite(const shoal_tls *tls)
{
    if (tls == NULL || tls->phase != TLS_OPEN)
        return "";
    const char *name = mbedtls_ssl_get_ciphersuite(&tls->ssl);
    return name ? name : "";
}
