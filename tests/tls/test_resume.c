/* Session resumption in protocol/tls (shoal_tls_get_session,
 * shoal_tls_set_session, shoal_tls_resumed) against the in-memory mbedTLS
 * server issuing RFC 5077 tickets: a saved session resumes without the
 * server's certificate, a session the server no longer takes falls back to
 * a full handshake whose new session then resumes, and saved bytes made
 * for another name or pin, or not made by shoal_tls at all, are refused. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/tls.h"
#include "tls_util.h"

typedef struct resume_fixture {
    char *ca;
    char *other_ca;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    /* Two ticket keys: a server, and the same server after a restart. */
    mbedtls_ssl_ticket_context tickets, other_tickets;
} resume_fixture;

static resume_fixture rf;

static void resume_init(void)
{
    make_tmpdir();
    make_certs();
    rf.ca = read_text(cert_path);
    rf.other_ca = read_text(other_cert_path);
    mbedtls_entropy_init(&rf.entropy);
    mbedtls_ctr_drbg_init(&rf.drbg);
    cr_assert_eq(mbedtls_ctr_drbg_seed(&rf.drbg, mbedtls_entropy_func, &rf.entropy, NULL, 0), 0);
    mbedtls_ssl_ticket_init(&rf.tickets);
    mbedtls_ssl_ticket_init(&rf.other_tickets);
    cr_assert_eq(mbedtls_ssl_ticket_setup(&rf.tickets, mbedtls_ctr_drbg_random, &rf.drbg,
                                          MBEDTLS_CIPHER_AES_256_GCM, 3600),
                 0);
    cr_assert_eq(mbedtls_ssl_ticket_setup(&rf.other_tickets, mbedtls_ctr_drbg_random, &rf.drbg,
                                          MBEDTLS_CIPHER_AES_256_GCM, 3600),
                 0);
}

static void resume_fini(void)
{
    mbedtls_ssl_ticket_free(&rf.tickets);
    mbedtls_ssl_ticket_free(&rf.other_tickets);
    mbedtls_ctr_drbg_free(&rf.drbg);
    mbedtls_entropy_free(&rf.entropy);
    free(rf.ca);
    free(rf.other_ca);
    remove_tmpdir();
}

TestSuite(tls_resume, .init = resume_init, .fini = resume_fini);

/* One connection to a server with `tickets`, offering `saved` (NULL:
 * none); the client is returned after a successful handshake, with the
 * bytes the server sent during it. */
static shoal_tls *handshake(mem_link **link, mbedtls_ssl_ticket_context *tickets,
                            const uint8_t *saved, size_t saved_len, uint64_t *server_bytes)
{
    *link = link_new_tickets(NULL, MBEDTLS_SSL_MINOR_VERSION_3, tickets);
    shoal_tls_config c = client_config(*link, rf.ca, "localhost");
    c.session_tickets = 1;
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    if (saved)
        cr_assert_eq(shoal_tls_set_session(tls, saved, saved_len, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(run_handshake(*link, tls, NULL, &ei), SHOAL_OK, "%s", ei.msg);
    if (server_bytes)
        *server_bytes = (*link)->server.end.sent_total;
    return tls;
}

static void save(const shoal_tls *tls, uint8_t **out, size_t *len)
{
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_get_session(tls, out, len, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_not_null(*out);
    cr_assert_gt(*len, 0);
}

/* A full handshake with the fixture's ticket keys; *saved (the caller
 * frees it with shoal_tls_session_free) is the session it leaves. */
static void first_session(uint8_t **saved, size_t *saved_len)
{
    mem_link *l;
    shoal_tls *tls = handshake(&l, &rf.tickets, NULL, 0, NULL);
    save(tls, saved, saved_len);
    shoal_tls_free(tls);
    link_free(l);
}

/* Application data still flows both ways after the handshake. */
static void exchange(mem_link *l, shoal_tls *tls)
{
    static const char ping[] = "ping";
    size_t n = 0;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_write(tls, (const uint8_t *)ping, sizeof ping, &n, &ei), SHOAL_OK, "%s",
                 ei.msg);
    cr_assert_eq(shoal_tls_flush(tls, &ei), SHOAL_OK, "%s", ei.msg);
    unsigned char got[16];
    cr_assert_eq(mbedtls_ssl_read(&l->server.ssl, got, sizeof got), (int)sizeof ping);
    cr_assert_str_eq((const char *)got, ping);
    cr_assert_eq(mbedtls_ssl_write(&l->server.ssl, got, sizeof ping), (int)sizeof ping);
    uint8_t back[16];
    size_t got_len = 0;
    cr_assert_eq(shoal_tls_read(tls, back, sizeof back, &got_len, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(got_len, sizeof ping);
    cr_assert_str_eq((const char *)back, ping);
}

Test(tls_resume, a_saved_session_resumes_without_the_servers_certificate)
{
    mem_link *l1;
    uint64_t full_bytes = 0, resumed_bytes = 0;
    shoal_tls *first = handshake(&l1, &rf.tickets, NULL, 0, &full_bytes);
    cr_assert_not(shoal_tls_resumed(first), "nothing was offered: a full handshake");
    uint8_t *saved;
    size_t saved_len;
    save(first, &saved, &saved_len);
    shoal_tls_free(first);
    link_free(l1);

    mem_link *l2;
    shoal_tls *second = handshake(&l2, &rf.tickets, saved, saved_len, &resumed_bytes);
    cr_assert(shoal_tls_resumed(second));
    exchange(l2, second);
    /* The full handshake carried the certificate (its DER alone is this
     * long); the resumed one did not. */
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    cr_assert_eq(mbedtls_x509_crt_parse_file(&crt, cert_path), 0);
    cr_assert_lt(resumed_bytes + crt.raw.len, full_bytes, "full %llu bytes, resumed %llu",
                 (unsigned long long)full_bytes, (unsigned long long)resumed_bytes);
    mbedtls_x509_crt_free(&crt);

    /* mbedTLS's server issues a new ticket at every resumption: that
     * session resumes in turn. */
    uint8_t *again;
    size_t again_len;
    save(second, &again, &again_len);
    mem_link *l3;
    shoal_tls *third = handshake(&l3, &rf.tickets, again, again_len, NULL);
    cr_assert(shoal_tls_resumed(third));
    shoal_tls_free(third);
    link_free(l3);
    shoal_tls_session_free(again, again_len);
    shoal_tls_session_free(saved, saved_len);
    shoal_tls_free(second);
    link_free(l2);
}

Test(tls_resume, a_ticket_the_server_no_longer_takes_gives_a_full_handshake_and_a_new_session)
{
    uint8_t *saved;
    size_t saved_len;
    first_session(&saved, &saved_len);

    /* The server's ticket keys changed (a restart): the ticket is
     * refused, the certificate checked, a new ticket issued. */
    mem_link *l2;
    shoal_tls *second = handshake(&l2, &rf.other_tickets, saved, saved_len, NULL);
    cr_assert_not(shoal_tls_resumed(second));
    exchange(l2, second);
    uint8_t *renewed;
    size_t renewed_len;
    save(second, &renewed, &renewed_len);
    cr_assert(renewed_len != saved_len || memcmp(renewed, saved, saved_len) != 0,
              "the new session replaces the refused one");
    shoal_tls_free(second);
    link_free(l2);

    mem_link *l3;
    shoal_tls *third = handshake(&l3, &rf.other_tickets, renewed, renewed_len, NULL);
    cr_assert(shoal_tls_resumed(third));
    shoal_tls_free(third);
    link_free(l3);
    shoal_tls_session_free(saved, saved_len);
    shoal_tls_session_free(renewed, renewed_len);
}

/* A session is resumed without looking at a certificate, so one made
 * under another name or pin must not be offered at all. */
Test(tls_resume, a_session_saved_for_another_name_or_ca_is_refused_with_eauth)
{
    mem_link *l1;
    shoal_tls *first = handshake(&l1, &rf.tickets, NULL, 0, NULL);
    uint8_t *saved;
    size_t saved_len;
    save(first, &saved, &saved_len);
    shoal_tls_free(first);

    struct {
        const char *ca, *name;
    } others[] = {{rf.other_ca, "localhost"}, {rf.ca, "fl.example.com"}};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        shoal_tls_config c = client_config(l1, others[i].ca, others[i].name);
        shoal_tls *tls = NULL;
        shoal_errinfo ei = {{0}};
        cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
        cr_assert_eq(shoal_tls_set_session(tls, saved, saved_len, &ei), SHOAL_EAUTH, "case %zu", i);
        cr_assert_not_null(strstr(ei.msg, "another server name or other pinned CA"), "%s", ei.msg);
        shoal_tls_free(tls);
    }
    link_free(l1);
    shoal_tls_session_free(saved, saved_len);
}

Test(tls_resume, bytes_not_saved_by_shoal_tls_are_eformat_and_change_nothing)
{
    uint8_t *saved;
    size_t saved_len;
    first_session(&saved, &saved_len);

    uint8_t garbage[200];
    memset(garbage, 0x5a, sizeof garbage);
    uint8_t *wrong_magic = malloc(saved_len);
    memcpy(wrong_magic, saved, saved_len);
    wrong_magic[0] ^= 1;
    struct {
        const uint8_t *bytes;
        size_t len;
    } bad[] = {
        {garbage, sizeof garbage}, {wrong_magic, saved_len}, {saved, 36}, {saved, saved_len - 1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mem_link *l;
        shoal_tls *tls = NULL;
        l = link_new_tickets(NULL, MBEDTLS_SSL_MINOR_VERSION_3, &rf.tickets);
        shoal_tls_config c = client_config(l, rf.ca, "localhost");
        c.session_tickets = 1;
        shoal_errinfo ei = {{0}};
        cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
        cr_assert_eq(shoal_tls_set_session(tls, bad[i].bytes, bad[i].len, &ei), SHOAL_EFORMAT,
                     "case %zu: %s", i, ei.msg);
        /* Nothing was offered: the handshake is a full, verified one. */
        cr_assert_eq(run_handshake(l, tls, NULL, &ei), SHOAL_OK, "%s", ei.msg);
        cr_assert_not(shoal_tls_resumed(tls));
        shoal_tls_free(tls);
        link_free(l);
    }
    free(wrong_magic);
    shoal_tls_session_free(saved, saved_len);
}

Test(tls_resume, sessions_are_set_before_and_taken_after_the_handshake_only)
{
    mem_link *l = link_new_tickets(NULL, MBEDTLS_SSL_MINOR_VERSION_3, &rf.tickets);
    shoal_tls_config c = client_config(l, rf.ca, "localhost");
    c.session_tickets = 1;
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    uint8_t *out = (uint8_t *)&ei;
    size_t out_len = 7;
    cr_assert_eq(shoal_tls_get_session(tls, &out, &out_len, &ei), SHOAL_ESTATE);
    cr_assert_null(out);
    cr_assert_eq(out_len, 0);
    cr_assert_eq(shoal_tls_handshake(tls, &ei), SHOAL_EAGAIN);
    uint8_t some[64] = {0};
    cr_assert_eq(shoal_tls_set_session(tls, some, sizeof some, &ei), SHOAL_ESTATE);
    cr_assert_eq(shoal_tls_set_session(tls, NULL, 4, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_tls_get_session(NULL, &out, &out_len, &ei), SHOAL_EINVAL);
    cr_assert_not(shoal_tls_resumed(tls));
    cr_assert_not(shoal_tls_resumed(NULL));
    shoal_tls_session_free(NULL, 0);
    shoal_tls_free(tls);
    link_free(l);
}

Test(tls_resume, saving_without_memory_is_enomem_and_leaks_nothing)
{
    mem_link *l;
    shoal_tls *tls = handshake(&l, &rf.tickets, NULL, 0, NULL);
    uint8_t *out = NULL;
    size_t len = 0;
    shoal_errinfo ei = {{0}};
    shoal_failalloc_install(0);
    shoal_err err = shoal_tls_get_session(tls, &out, &len, &ei);
    long live = shoal_failalloc_live();
    shoal_failalloc_uninstall();
    cr_assert_eq(err, SHOAL_ENOMEM, "%s", ei.msg);
    cr_assert_null(out);
    cr_assert_eq(live, 0);
    shoal_tls_free(tls);
    link_free(l);
}
