/* Tests for protocol/tls: the self-signed certificate generator, the
 * sans-socket TLS session (against an mbedTLS server through in-memory
 * callbacks that push back with EAGAIN), and the blocking wss client
 * against an in-process libwebsockets 4.1 TLS echo server (OpenSSL). */
#define _DEFAULT_SOURCE /* timegm */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <libwebsockets.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/x509_crt.h>

#include "shoal/alloc.h"
#include "shoal/selfsigned.h"
#include "shoal/tls.h"
#include "shoal/wire.h"
#include "shoal/wss.h"
#include "tls_util.h"

/* Temporary directory and certificates, and the in-memory mbedTLS server:
 * tls_util.h. */

static int count_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            count++;
    closedir(d);
    return count;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void fill_pattern(uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
}

/* ------------------------------------------------------------------ */
/* shoal_selfsigned_make */

static void tmp_only_init(void)
{
    make_tmpdir();
}

/* Seconds since the epoch of a certificate time (always UTC in X.509). */
static time_t x509_time_to_unix(const mbedtls_x509_time *t)
{
    struct tm tm = {.tm_year = t->year - 1900,
                    .tm_mon = t->mon - 1,
                    .tm_mday = t->day,
                    .tm_hour = t->hour,
                    .tm_min = t->min,
                    .tm_sec = t->sec};
    time_t when = timegm(&tm);
    cr_assert_neq(when, (time_t)-1, "%04d-%02d-%02d is not a date", t->year, t->mon, t->day);
    return when;
}

TestSuite(tls_selfsigned, .init = tmp_only_init, .fini = remove_tmpdir);

Test(tls_selfsigned, makes_a_p256_ca_certificate_for_the_name_with_a_0600_key)
{
    shoal_errinfo ei = {{0}};
    time_t before = time(NULL);
    cr_assert_eq(shoal_selfsigned_make(cert_path, key_path, "shoal.test", 30, &ei), SHOAL_OK, "%s",
                 ei.msg);
    time_t after = time(NULL);

    struct stat st;
    cr_assert_eq(stat(key_path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600, "key mode %o", (unsigned)(st.st_mode & 0777));
    cr_assert_eq(count_dir_entries(tmpdir), 2, "temporary files were left behind");

    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    cr_assert_eq(mbedtls_x509_crt_parse_file(&crt, cert_path), 0);
    cr_assert_eq(crt.version, 3);
    cr_assert(crt.ca_istrue, "basicConstraints CA:true missing");
    cr_assert_eq(mbedtls_pk_get_type(&crt.pk), MBEDTLS_PK_ECKEY);
    cr_assert_eq(mbedtls_pk_get_bitlen(&crt.pk), 256);
    cr_assert_eq(crt.sig_md, MBEDTLS_MD_SHA256);
    /* subjectAltName holds exactly the one DNS name. */
    const mbedtls_x509_sequence *san = &crt.subject_alt_names;
    cr_assert_eq(san->buf.tag, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2);
    cr_assert_eq(san->buf.len, strlen("shoal.test"));
    cr_assert_eq(memcmp(san->buf.p, "shoal.test", san->buf.len), 0);
    cr_assert_null(san->next);
    char subject[128];
    cr_assert_gt(mbedtls_x509_dn_gets(subject, sizeof subject, &crt.subject), 0);
    cr_assert_str_eq(subject, "CN=shoal.test");
    /* Valid now: from five minutes before the call until 30 days after it,
     * to the second, whatever the date (month and year ends included). */
    cr_assert_eq(mbedtls_x509_time_is_past(&crt.valid_from), 1);
    cr_assert_eq(mbedtls_x509_time_is_future(&crt.valid_to), 1);
    time_t from = x509_time_to_unix(&crt.valid_from), to = x509_time_to_unix(&crt.valid_to);
    cr_assert(from >= before - 300 && from <= after - 300,
              "valid from %lld, not five minutes before the call (%lld..%lld)", (long long)from,
              (long long)before, (long long)after);
    cr_assert_eq(to - from, (time_t)30 * 86400 + 300, "validity of %lld s", (long long)(to - from));
    /* Its own trust anchor, for the name and only for it. */
    uint32_t flags = 0;
    cr_assert_eq(mbedtls_x509_crt_verify(&crt, &crt, NULL, "shoal.test", &flags, NULL, NULL), 0,
                 "flags 0x%x", flags);
    cr_assert_neq(mbedtls_x509_crt_verify(&crt, &crt, NULL, "other.test", &flags, NULL, NULL), 0);
    cr_assert(flags & MBEDTLS_X509_BADCERT_CN_MISMATCH);

    /* The key file holds the certificate's private key. */
    mbedtls_pk_context key;
    mbedtls_pk_init(&key);
    cr_assert_eq(mbedtls_pk_parse_keyfile(&key, key_path, NULL), 0);
    cr_assert_eq(mbedtls_pk_check_pair(&crt.pk, &key), 0);

    /* A second certificate gets a different serial and key. */
    char cert2[160], key2[160];
    path_in_tmp(cert2, sizeof cert2, "cert2.pem");
    path_in_tmp(key2, sizeof key2, "key2.pem");
    cr_assert_eq(shoal_selfsigned_make(cert2, key2, "shoal.test", 30, &ei), SHOAL_OK);
    mbedtls_x509_crt crt2;
    mbedtls_x509_crt_init(&crt2);
    cr_assert_eq(mbedtls_x509_crt_parse_file(&crt2, cert2), 0);
    cr_assert_eq(crt2.serial.len, crt.serial.len);
    cr_assert_neq(memcmp(crt2.serial.p, crt.serial.p, crt.serial.len), 0);
    cr_assert_neq(mbedtls_pk_check_pair(&crt2.pk, &key), 0,
                  "the second certificate reuses the key");
    mbedtls_pk_free(&key);
    mbedtls_x509_crt_free(&crt2);
    mbedtls_x509_crt_free(&crt);
}

Test(tls_selfsigned, refuses_to_overwrite_an_existing_key_and_writes_nothing)
{
    FILE *f = fopen(key_path, "w");
    cr_assert_not_null(f);
    fputs("keep me", f);
    fclose(f);
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_selfsigned_make(cert_path, key_path, "localhost", 30, &ei), SHOAL_ESTATE);
    cr_assert(strstr(ei.msg, key_path) != NULL, "message does not name the file: %s", ei.msg);
    cr_assert(strstr(ei.msg, "already exists") != NULL, "%s", ei.msg);
    char *text = read_text(key_path);
    cr_assert_str_eq(text, "keep me");
    free(text);
    cr_assert_eq(count_dir_entries(tmpdir), 1, "something was written");
}

Test(tls_selfsigned, refuses_to_overwrite_an_existing_certificate)
{
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_selfsigned_make(cert_path, key_path, "localhost", 30, &ei), SHOAL_OK);
    char *before = read_text(cert_path);
    char key2[160];
    path_in_tmp(key2, sizeof key2, "key2.pem");
    cr_assert_eq(shoal_selfsigned_make(cert_path, key2, "localhost", 30, &ei), SHOAL_ESTATE);
    cr_assert(strstr(ei.msg, cert_path) != NULL, "%s", ei.msg);
    char *after = read_text(cert_path);
    cr_assert_str_eq(before, after);
    cr_assert_eq(access(key2, F_OK), -1, "the new key was written anyway");
    cr_assert_eq(count_dir_entries(tmpdir), 2);
    free(before);
    free(after);
}

Test(tls_selfsigned, refuses_bad_arguments)
{
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_selfsigned_make(cert_path, key_path, "bad name", 30, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "bad name") != NULL, "%s", ei.msg);
    cr_assert_eq(shoal_selfsigned_make(cert_path, key_path, "", 30, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_selfsigned_make(cert_path, key_path, "localhost", 0, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_selfsigned_make(cert_path, cert_path, "localhost", 30, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_selfsigned_make(NULL, key_path, "localhost", 30, &ei), SHOAL_EINVAL);
    cr_assert_eq(count_dir_entries(tmpdir), 0);
}

Test(tls_selfsigned, names_the_path_when_the_directory_is_missing)
{
    char cert[160], key[160];
    path_in_tmp(cert, sizeof cert, "missing/cert.pem");
    path_in_tmp(key, sizeof key, "missing/key.pem");
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_selfsigned_make(cert, key, "localhost", 30, &ei), SHOAL_EIO);
    cr_assert(strstr(ei.msg, "missing/") != NULL, "%s", ei.msg);
}

static const char *suites_name_ok(const char *name)
{
    bool ok = strncmp(name, "TLS-ECDHE-", 10) == 0 &&
              (strstr(name, "-GCM-") != NULL || strstr(name, "CHACHA20-POLY1305") != NULL);
    return ok ? NULL : name;
}

typedef struct session_fixture {
    char *ca;
    char *other_ca;
} session_fixture;

static session_fixture sf;

static void session_init(void)
{
    make_tmpdir();
    make_certs();
    sf.ca = read_text(cert_path);
    sf.other_ca = read_text(other_cert_path);
}

static void session_fini(void)
{
    free(sf.ca);
    free(sf.other_ca);
    remove_tmpdir();
}

TestSuite(tls_session, .init = session_init, .fini = session_fini);

/* Sends `len` bytes client->server and server->client through callbacks
 * that refuse every third call and move at most 700 bytes at a time. */
Test(tls_session, moves_data_both_ways_through_callbacks_that_return_eagain)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_3);
    l->client.again_every = 3;
    l->client.max_chunk = 700;
    l->server.end.again_every = 5;
    l->server.end.max_chunk = 1000;
    shoal_tls_config c = client_config(l, sf.ca, "localhost");
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_str_eq(shoal_tls_ciphersuite(tls), "");
    unsigned agains = 0;
    cr_assert_eq(run_handshake(l, tls, &agains, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_gt(agains, 0);
    cr_assert_gt(l->client.agains, 0, "the callbacks never pushed back");
    cr_assert_null(suites_name_ok(shoal_tls_ciphersuite(tls)), "suite %s",
                   shoal_tls_ciphersuite(tls));
    cr_assert_eq(shoal_tls_handshake(tls, &ei), SHOAL_OK, "a second call must be a no-op");

    enum { TOTAL = 200000 };
    uint8_t *up = malloc(TOTAL), *down = malloc(TOTAL);
    uint8_t *got_up = malloc(TOTAL), *got_down = malloc(TOTAL);
    cr_assert(up && down && got_up && got_down);
    fill_pattern(up, TOTAL, 1);
    fill_pattern(down, TOTAL, 2);
    size_t sent_up = 0, recv_up = 0, sent_down = 0, recv_down = 0;
    unsigned write_agains = 0, read_agains = 0;
    for (int round = 0; round < 1000000 && (recv_up < TOTAL || recv_down < TOTAL); round++) {
        if (sent_up < TOTAL) {
            size_t n = 0;
            shoal_err err = shoal_tls_write(tls, up + sent_up, TOTAL - sent_up, &n, &ei);
            cr_assert(err == SHOAL_OK || err == SHOAL_EAGAIN, "write: %s", ei.msg);
            if (err == SHOAL_EAGAIN) {
                cr_assert_eq(n, 0);
                write_agains++;
            }
            sent_up += n;
        } else {
            shoal_err err = shoal_tls_flush(tls, &ei);
            cr_assert(err == SHOAL_OK || err == SHOAL_EAGAIN, "flush: %s", ei.msg);
        }
        int r = mbedtls_ssl_read(&l->server.ssl, got_up + recv_up, TOTAL - recv_up);
        if (r > 0)
            recv_up += (size_t)r;
        else
            cr_assert(r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE,
                      "server read -0x%x", -r);
        if (sent_down < TOTAL) {
            r = mbedtls_ssl_write(&l->server.ssl, down + sent_down,
                                  TOTAL - sent_down < 4000 ? TOTAL - sent_down : 4000);
            if (r > 0)
                sent_down += (size_t)r;
        }
        size_t got = 0;
        shoal_err err = shoal_tls_read(tls, got_down + recv_down, TOTAL - recv_down, &got, &ei);
        cr_assert(err == SHOAL_OK || err == SHOAL_EAGAIN, "read: %s", ei.msg);
        if (err == SHOAL_EAGAIN)
            read_agains++;
        recv_down += got;
    }
    cr_assert_eq(recv_up, TOTAL);
    cr_assert_eq(recv_down, TOTAL);
    cr_assert_eq(memcmp(up, got_up, TOTAL), 0, "server received corrupted data");
    cr_assert_eq(memcmp(down, got_down, TOTAL), 0, "client received corrupted data");
    cr_assert_gt(write_agains + read_agains, 0);

    free(up);
    free(down);
    free(got_up);
    free(got_down);
    shoal_tls_free(tls);
    link_free(l);
}

Test(tls_session, write_takes_a_record_then_reports_eagain_while_the_transport_is_full)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_3);
    shoal_tls_config c = client_config(l, sf.ca, "localhost");
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(run_handshake(l, tls, NULL, &ei), SHOAL_OK, "%s", ei.msg);

    static uint8_t data[50000];
    fill_pattern(data, sizeof data, 3);
    l->client.stalled = true;
    size_t n = 0;
    cr_assert_eq(shoal_tls_write(tls, data, sizeof data, &n, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert(n > 0 && n <= 16384, "took %zu bytes", n);
    size_t m = 0;
    cr_assert_eq(shoal_tls_write(tls, data + n, sizeof data - n, &m, &ei), SHOAL_EAGAIN);
    cr_assert_eq(m, 0);
    cr_assert_eq(shoal_tls_flush(tls, &ei), SHOAL_EAGAIN);
    cr_assert(shoal_tls_want_write(tls));

    l->client.stalled = false;
    cr_assert_eq(shoal_tls_flush(tls, &ei), SHOAL_OK, "%s", ei.msg);
    uint8_t back[16384];
    int r = mbedtls_ssl_read(&l->server.ssl, back, sizeof back);
    cr_assert_eq(r, (int)n);
    cr_assert_eq(memcmp(back, data, n), 0);

    shoal_tls_free(tls);
    link_free(l);
}

Test(tls_session, close_notify_reaches_the_peer_and_the_peers_reads_as_closed)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_3);
    l->client.again_every = 2;
    shoal_tls_config c = client_config(l, sf.ca, "localhost");
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(run_handshake(l, tls, NULL, &ei), SHOAL_OK, "%s", ei.msg);

    shoal_err err;
    int tries = 0;
    while ((err = shoal_tls_close_notify(tls, &ei)) == SHOAL_EAGAIN)
        cr_assert_lt(++tries, 100);
    cr_assert_eq(err, SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_tls_close_notify(tls, &ei), SHOAL_OK, "a second call must be a no-op");
    uint8_t buf[64];
    cr_assert_eq(mbedtls_ssl_read(&l->server.ssl, buf, sizeof buf),
                 MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY);
    size_t n = 99;
    cr_assert_eq(shoal_tls_write(tls, (const uint8_t *)"x", 1, &n, &ei), SHOAL_ECLOSED);
    cr_assert_eq(n, 0);

    /* The server's own close_notify reads as a clean close. */
    cr_assert_eq(mbedtls_ssl_close_notify(&l->server.ssl), 0);
    size_t got = 0;
    do
        err = shoal_tls_read(tls, buf, sizeof buf, &got, &ei);
    while (err == SHOAL_EAGAIN && ++tries < 100);
    cr_assert_eq(err, SHOAL_ECLOSED);
    cr_assert(strstr(ei.msg, "close_notify") != NULL && strstr(ei.msg, "without") == NULL, "%s",
              ei.msg);
    shoal_tls_free(tls);
    link_free(l);
}

Test(tls_session, end_of_stream_without_close_notify_is_closed_and_says_so)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_3);
    shoal_tls_config c = client_config(l, sf.ca, "localhost");
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(run_handshake(l, tls, NULL, &ei), SHOAL_OK, "%s", ei.msg);
    l->client.peer_gone = true;
    uint8_t buf[64];
    size_t got = 0;
    cr_assert_eq(shoal_tls_read(tls, buf, sizeof buf, &got, &ei), SHOAL_ECLOSED);
    cr_assert(strstr(ei.msg, "without close_notify") != NULL, "%s", ei.msg);
    cr_assert_eq(shoal_tls_read(tls, buf, sizeof buf, &got, &ei), SHOAL_ECLOSED);
    shoal_tls_free(tls);
    link_free(l);
}

Test(tls_session, wrong_server_name_is_eauth_naming_the_name)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_3);
    shoal_tls_config c = client_config(l, sf.ca, "wrong.example");
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(run_handshake(l, tls, NULL, &ei), SHOAL_EAUTH, "%s", ei.msg);
    cr_assert(strstr(ei.msg, "TLS: certificate of localhost:8443 not trusted") != NULL, "%s",
              ei.msg);
    cr_assert(strstr(ei.msg, "\"wrong.example\"") != NULL, "%s", ei.msg);
    /* The session is finished. */
    cr_assert_eq(shoal_tls_handshake(tls, &ei), SHOAL_ECLOSED);
    shoal_tls_free(tls);
    link_free(l);
}

Test(tls_session, ip_address_as_server_name_fails_with_a_hint)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_3);
    shoal_tls_config c = client_config(l, sf.ca, "127.0.0.1");
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(run_handshake(l, tls, NULL, &ei), SHOAL_EAUTH, "%s", ei.msg);
    cr_assert(strstr(ei.msg, "IP addresses") != NULL, "%s", ei.msg);
    shoal_tls_free(tls);
    link_free(l);
}

Test(tls_session, certificate_from_another_ca_is_eauth_pointing_at_the_ca)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_3);
    shoal_tls_config c = client_config(l, sf.other_ca, "localhost");
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(run_handshake(l, tls, NULL, &ei), SHOAL_EAUTH, "%s", ei.msg);
    cr_assert(strstr(ei.msg, "not trusted") != NULL, "%s", ei.msg);
    cr_assert(strstr(ei.msg, "check the CA file test-ca.pem") != NULL, "%s", ei.msg);
    shoal_tls_free(tls);
    link_free(l);
}

Test(tls_session, wrong_name_and_wrong_ca_are_both_reported)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_3);
    shoal_tls_config c = client_config(l, sf.other_ca, "wrong.example");
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(run_handshake(l, tls, NULL, &ei), SHOAL_EAUTH, "%s", ei.msg);
    cr_assert(strstr(ei.msg, "\"wrong.example\"") != NULL, "%s", ei.msg);
    cr_assert(strstr(ei.msg, "check the CA file test-ca.pem") != NULL, "%s", ei.msg);
    shoal_tls_free(tls);
    link_free(l);
}

Test(tls_session, server_offering_only_cbc_is_refused)
{
    static const int cbc_only[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, 0};
    mem_link *l = link_new(cbc_only, MBEDTLS_SSL_MINOR_VERSION_3);
    shoal_tls_config c = client_config(l, sf.ca, "localhost");
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(run_handshake(l, tls, NULL, &ei), SHOAL_EPROTO, "%s", ei.msg);
    cr_assert(strstr(ei.msg, "localhost:8443") != NULL, "%s", ei.msg);
    cr_assert_neq(l->server.ssl.state, MBEDTLS_SSL_HANDSHAKE_OVER);
    shoal_tls_free(tls);
    link_free(l);
}

Test(tls_session, server_limited_to_tls_1_1_is_refused)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_2);
    shoal_tls_config c = client_config(l, sf.ca, "localhost");
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(run_handshake(l, tls, NULL, &ei), SHOAL_EPROTO, "%s", ei.msg);
    cr_assert_neq(l->server.ssl.state, MBEDTLS_SSL_HANDSHAKE_OVER);
    shoal_tls_free(tls);
    link_free(l);
}

Test(tls_session, transport_failure_is_eio)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_3);
    l->client.broken = true;
    shoal_tls_config c = client_config(l, sf.ca, "localhost");
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(shoal_tls_handshake(tls, &ei), SHOAL_EIO);
    cr_assert(strstr(ei.msg, "transport") != NULL, "%s", ei.msg);
    shoal_tls_free(tls);
    link_free(l);
}

Test(tls_session, read_and_write_before_the_handshake_are_estate)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_3);
    shoal_tls_config c = client_config(l, sf.ca, "localhost");
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    uint8_t buf[8];
    size_t n = 0;
    cr_assert_eq(shoal_tls_read(tls, buf, sizeof buf, &n, &ei), SHOAL_ESTATE);
    cr_assert_eq(shoal_tls_write(tls, buf, sizeof buf, &n, &ei), SHOAL_ESTATE);
    cr_assert_eq(l->to_server.len, 0, "nothing may be sent");
    cr_assert_eq(shoal_tls_read(tls, NULL, 8, &n, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_tls_handshake(NULL, &ei), SHOAL_EINVAL);
    shoal_tls_free(tls);
    shoal_tls_free(NULL);
    link_free(l);
}

Test(tls_session, configuration_errors_are_einval_with_a_reason)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_3);
    shoal_tls *tls = (shoal_tls *)l; /* must be reset to NULL */
    shoal_errinfo ei = {{0}};

    shoal_tls_config c = client_config(l, sf.ca, NULL);
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_EINVAL);
    cr_assert_null(tls);
    cr_assert(strstr(ei.msg, "server_name") != NULL, "%s", ei.msg);

    c = client_config(l, NULL, "localhost");
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "ca_pem") != NULL, "%s", ei.msg);

    c = client_config(l, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
                      "localhost");
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "CA file test-ca.pem") != NULL, "%s", ei.msg);

    c = client_config(l, "hello", "localhost");
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_EINVAL);

    c = client_config(l, sf.ca, "localhost");
    c.recv = NULL;
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_tls_new(NULL, &tls, &ei), SHOAL_EINVAL);

    /* ca_pem_len limits what is read: a truncated certificate fails. */
    c = client_config(l, sf.ca, "localhost");
    c.ca_pem_len = strlen(sf.ca) / 2;
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_EINVAL);
    c.ca_pem_len = strlen(sf.ca);
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    shoal_tls_free(tls);
    link_free(l);
}

typedef struct counting_entropy {
    unsigned calls;
    bool fail;
} counting_entropy;

static shoal_err counting_entropy_fill(void *ctx, uint8_t *buf, size_t len)
{
    counting_entropy *e = ctx;
    e->calls++;
    if (e->fail)
        return SHOAL_ECRYPTO;
    /* Test-only source: the OS's, through the mbedTLS default. */
    mbedtls_entropy_context ent;
    mbedtls_entropy_init(&ent);
    int r = mbedtls_entropy_func(&ent, buf, len);
    mbedtls_entropy_free(&ent);
    return r == 0 ? SHOAL_OK : SHOAL_ECRYPTO;
}

Test(tls_session, caller_entropy_source_is_used_and_its_failure_is_ecrypto)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_3);
    counting_entropy ent = {0, false};
    shoal_tls_config c = client_config(l, sf.ca, "localhost");
    c.entropy = counting_entropy_fill;
    c.entropy_ctx = &ent;
    shoal_tls *tls = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_gt(ent.calls, 0);
    cr_assert_eq(run_handshake(l, tls, NULL, &ei), SHOAL_OK, "%s", ei.msg);
    uint8_t a[32], b[32];
    cr_assert_eq(shoal_tls_random(tls, a, sizeof a), SHOAL_OK);
    cr_assert_eq(shoal_tls_random(tls, b, sizeof b), SHOAL_OK);
    cr_assert_neq(memcmp(a, b, sizeof a), 0);
    shoal_tls_free(tls);

    ent.fail = true;
    cr_assert_eq(shoal_tls_new(&c, &tls, &ei), SHOAL_ECRYPTO);
    cr_assert_null(tls);
    cr_assert(strstr(ei.msg, "entropy") != NULL, "%s", ei.msg);
    link_free(l);
}

Test(tls_session, every_allocation_failure_is_enomem_and_leaks_nothing)
{
    mem_link *l = link_new(NULL, MBEDTLS_SSL_MINOR_VERSION_3);
    shoal_tls_config c = client_config(l, sf.ca, "localhost");
    shoal_errinfo ei = {{0}};
    bool succeeded = false;
    for (long budget = 0; budget < 10 && !succeeded; budget++) {
        shoal_tls *tls = NULL;
        shoal_failalloc_install(budget);
        shoal_err err = shoal_tls_new(&c, &tls, &ei);
        long live = shoal_failalloc_live();
        shoal_tls_free(tls);
        long after = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        if (err == SHOAL_OK) {
            succeeded = true;
            cr_assert_gt(live, 0);
        } else {
            cr_assert_eq(err, SHOAL_ENOMEM, "budget %ld: %s", budget, ei.msg);
            cr_assert_null(tls);
        }
        cr_assert_eq(after, 0, "budget %ld leaked %ld blocks", budget, after);
    }
    cr_assert(succeeded);
    link_free(l);
}

/* ------------------------------------------------------------------ */
/* The wss client against a libwebsockets 4.1 TLS echo server. */

/* Commands the echo server understands (binary messages):
 *   "CLOSE <code> <reason>"  close the connection with that code
 *   "TEXT <text>"            answer with a text message
 *   "PING <text>"            send a Ping, then echo <text>
 * Anything else is echoed back in 32 KiB frames. */

typedef struct echo_server {
    struct lws_context *ctx;
    pthread_t thread;
    atomic_int stop;
    int port;
    atomic_size_t largest_frame; /* of the last complete message */
    atomic_size_t last_message_len;
    atomic_int messages;
    atomic_int peer_close_code; /* from the client's Close; -1: none */
    atomic_int closed;          /* connections ended */
    char authorization[128];    /* of the last upgrade request */
    atomic_int pongs;
    atomic_int authorization_seen;
} echo_server;

typedef struct echo_session {
    uint8_t *msg;
    size_t len, cap;
    size_t frame_max;
    uint8_t *out;
    size_t out_len, out_sent;
    bool out_text;
    bool close_pending;
    bool ping_pending;
    int close_code;
    char close_reason[64];
    uint8_t frame[LWS_PRE + 32768];
} echo_session;

static echo_server *server_of(struct lws *wsi)
{
    return lws_context_user(lws_get_context(wsi));
}

static int echo_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    echo_session *ps = user;
    echo_server *srv;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char uri[64];
        srv = server_of(wsi);
        if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) > 0 &&
            strcmp(uri, "/forbidden") == 0) {
            lws_return_http_status(wsi, HTTP_STATUS_FORBIDDEN, NULL);
            return 1;
        }
        if (lws_hdr_copy(wsi, srv->authorization, sizeof srv->authorization,
                         WSI_TOKEN_HTTP_AUTHORIZATION) > 0)
            atomic_store(&srv->authorization_seen, 1);
        return 0;
    }
    case LWS_CALLBACK_ESTABLISHED:
        memset(ps, 0, sizeof *ps);
        return 0;
    case LWS_CALLBACK_RECEIVE: {
        size_t frame = len + lws_remaining_packet_payload(wsi);
        if (frame > ps->frame_max)
            ps->frame_max = frame;
        if (ps->len + len > ps->cap) {
            size_t cap = ps->cap ? ps->cap : 4096;
            while (cap < ps->len + len)
                cap *= 2;
            uint8_t *grown = realloc(ps->msg, cap);
            if (grown == NULL)
                return -1;
            ps->msg = grown;
            ps->cap = cap;
        }
        memcpy(ps->msg + ps->len, in, len);
        ps->len += len;
        if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi) > 0)
            return 0;
        srv = server_of(wsi);
        atomic_store(&srv->largest_frame, ps->frame_max);
        atomic_store(&srv->last_message_len, ps->len);
        atomic_fetch_add(&srv->messages, 1);
        ps->frame_max = 0;
        if (ps->len > 6 && memcmp(ps->msg, "CLOSE ", 6) == 0) {
            char text[80];
            size_t n = ps->len < sizeof text - 1 ? ps->len : sizeof text - 1;
            memcpy(text, ps->msg, n);
            text[n] = '\0';
            ps->close_code = atoi(text + 6);
            const char *space = strchr(text + 6, ' ');
            snprintf(ps->close_reason, sizeof ps->close_reason, "%s", space ? space + 1 : "");
            ps->close_pending = true;
        } else {
            free(ps->out);
            ps->out_text = ps->len >= 5 && memcmp(ps->msg, "TEXT ", 5) == 0;
            ps->ping_pending = ps->len >= 5 && memcmp(ps->msg, "PING ", 5) == 0;
            size_t skip = ps->out_text || ps->ping_pending ? 5 : 0;
            ps->out_len = ps->len - skip;
            ps->out = malloc(ps->out_len ? ps->out_len : 1);
            if (ps->out == NULL)
                return -1;
            memcpy(ps->out, ps->msg + skip, ps->out_len);
            ps->out_sent = 0;
        }
        ps->len = 0;
        lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (ps->close_pending) {
            lws_close_reason(wsi, (enum lws_close_status)ps->close_code,
                             (unsigned char *)ps->close_reason, strlen(ps->close_reason));
            return -1;
        }
        if (ps->ping_pending) {
            ps->ping_pending = false;
            memcpy(ps->frame + LWS_PRE, "are you there", 13);
            if (lws_write(wsi, ps->frame + LWS_PRE, 13, LWS_WRITE_PING) < 13)
                return -1;
            lws_callback_on_writable(wsi); /* one write per callback */
            return 0;
        }
        if (ps->out != NULL) {
            size_t left = ps->out_len - ps->out_sent;
            size_t chunk = left < 32768 ? left : 32768;
            memcpy(ps->frame + LWS_PRE, ps->out + ps->out_sent, chunk);
            int flags = lws_write_ws_flags(ps->out_text ? LWS_WRITE_TEXT : LWS_WRITE_BINARY,
                                           ps->out_sent == 0, chunk == left);
            if (lws_write(wsi, ps->frame + LWS_PRE, chunk, (enum lws_write_protocol)flags) <
                (int)chunk)
                return -1;
            ps->out_sent += chunk;
            if (ps->out_sent == ps->out_len) {
                free(ps->out);
                ps->out = NULL;
            } else {
                lws_callback_on_writable(wsi);
            }
        }
        return 0;
    case LWS_CALLBACK_RECEIVE_PONG:
        srv = server_of(wsi);
        if (len == 13 && memcmp(in, "are you there", 13) == 0)
            atomic_fetch_add(&srv->pongs, 1);
        return 0;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: {
        const uint8_t *p = in;
        srv = server_of(wsi);
        atomic_store(&srv->peer_close_code, len >= 2 ? (p[0] << 8) | p[1] : 1005);
        return 0;
    }
    case LWS_CALLBACK_CLOSED:
        srv = server_of(wsi);
        free(ps->msg);
        free(ps->out);
        ps->msg = ps->out = NULL;
        atomic_fetch_add(&srv->closed, 1);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols echo_protocols[] = {
    {.name = SHOAL_PROTOCOL_SUBPROTOCOL,
     .callback = echo_callback,
     .per_session_data_size = sizeof(echo_session),
     .rx_buffer_size = 0},
    {0}, /* lws 4.1 has no LWS_PROTOCOL_LIST_TERM */
};

static void *echo_service(void *arg)
{
    echo_server *s = arg;
    while (!atomic_load(&s->stop))
        lws_service(s->ctx, 0);
    return NULL;
}

static echo_server server;

static void echo_server_start(echo_server *s)
{
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = 0; /* the kernel picks a free port */
    info.iface = "127.0.0.1";
    info.protocols = echo_protocols;
    info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.ssl_cert_filepath = cert_path;
    info.ssl_private_key_filepath = key_path;
    info.gid = -1;
    info.uid = -1;
    info.user = s;
    atomic_store(&s->peer_close_code, -1);
    s->ctx = lws_create_context(&info);
    cr_assert_not_null(s->ctx, "lws_create_context failed");
    struct lws_vhost *vh = lws_get_vhost_by_name(s->ctx, "default");
    cr_assert_not_null(vh);
    s->port = lws_get_vhost_listen_port(vh);
    cr_assert_gt(s->port, 0, "no listen port");
    cr_assert_eq(pthread_create(&s->thread, NULL, echo_service, s), 0);
}

static void echo_server_stop(echo_server *s)
{
    if (s->ctx == NULL)
        return;
    atomic_store(&s->stop, 1);
    lws_cancel_service(s->ctx);
    pthread_join(s->thread, NULL);
    lws_context_destroy(s->ctx);
    s->ctx = NULL;
}

static void wss_init(void)
{
    make_tmpdir();
    make_certs();
    echo_server_start(&server);
}

static void wss_fini(void)
{
    echo_server_stop(&server);
    remove_tmpdir();
}

TestSuite(tls_wss, .init = wss_init, .fini = wss_fini, .timeout = 60);

static shoal_wss_config wss_config(void)
{
    shoal_wss_config c;
    memset(&c, 0, sizeof c);
    c.host = "127.0.0.1";
    c.port = (uint16_t)server.port;
    c.server_name = "localhost";
    c.ca_file = cert_path;
    c.timeout_ms = 5000;
    return c;
}

static shoal_wss *connect_ok(const shoal_wss_config *c)
{
    shoal_wss *w = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_wss_connect(c, &w, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_not_null(w);
    return w;
}

static void echo_roundtrip(shoal_wss *w, const uint8_t *data, size_t len)
{
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_wss_send(w, data, len, 10000, &ei), SHOAL_OK, "%s", ei.msg);
    uint8_t *got = NULL;
    size_t got_len = 0;
    cr_assert_eq(shoal_wss_recv(w, &got, &got_len, 10000, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_not_null(got);
    cr_assert_eq(got_len, len);
    cr_assert_eq(memcmp(got, data, len), 0, "echo differs");
    shoal_free(got);
}

Test(tls_wss, echoes_small_messages_over_a_verified_connection)
{
    shoal_wss_config c = wss_config();
    shoal_wss *w = connect_ok(&c);
    cr_assert_null(suites_name_ok(shoal_wss_ciphersuite(w)), "suite %s", shoal_wss_ciphersuite(w));
    echo_roundtrip(w, (const uint8_t *)"hello", 5);
    uint8_t bytes[300];
    fill_pattern(bytes, sizeof bytes, 9);
    echo_roundtrip(w, bytes, sizeof bytes);
    echo_roundtrip(w, (const uint8_t *)"", 0);
    cr_assert_eq(atomic_load(&server.messages), 3);
    cr_assert_eq(shoal_wss_close_code(w, NULL), 0);
    cr_assert_eq(shoal_wss_close(w, SHOAL_WS_CLOSE_NORMAL, 5000), SHOAL_OK);
    shoal_wss_free(w);
}

Test(tls_wss, ca_given_as_pem_text_works_too)
{
    char *pem = read_text(cert_path);
    shoal_wss_config c = wss_config();
    c.ca_file = NULL;
    c.ca_pem = pem;
    shoal_wss *w = connect_ok(&c);
    echo_roundtrip(w, (const uint8_t *)"pem", 3);
    shoal_wss_free(w);
    free(pem);
}

Test(tls_wss, echoes_a_message_larger_than_1_mib_in_one_frame)
{
    const size_t len = (size_t)3 << 19; /* 1.5 MiB */
    shoal_wss_config c = wss_config();
    c.max_message = (size_t)4 << 20;
    shoal_wss *w = connect_ok(&c);
    uint8_t *data = malloc(len);
    cr_assert_not_null(data);
    fill_pattern(data, len, 4);
    echo_roundtrip(w, data, len);
    cr_assert_eq(atomic_load(&server.last_message_len), len);
    cr_assert_eq(atomic_load(&server.largest_frame), len, "expected one frame, largest %zu",
                 atomic_load(&server.largest_frame));
    free(data);
    shoal_wss_free(w);
}

Test(tls_wss, max_frame_send_fragments_a_large_message)
{
    const size_t len = ((size_t)1 << 20) + 12345;
    shoal_wss_config c = wss_config();
    c.max_message = (size_t)4 << 20;
    c.max_frame_send = 65536;
    shoal_wss *w = connect_ok(&c);
    uint8_t *data = malloc(len);
    cr_assert_not_null(data);
    fill_pattern(data, len, 5);
    echo_roundtrip(w, data, len);
    cr_assert_eq(atomic_load(&server.last_message_len), len);
    cr_assert_leq(atomic_load(&server.largest_frame), 65536, "largest frame %zu",
                  atomic_load(&server.largest_frame));
    free(data);
    shoal_wss_free(w);
}

Test(tls_wss, message_over_max_message_is_elimit_and_the_connection_stays_usable)
{
    shoal_wss_config c = wss_config();
    c.max_message = 1000;
    shoal_wss *w = connect_ok(&c);
    static uint8_t big[1001];
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_wss_send(w, big, sizeof big, 1000, &ei), SHOAL_ELIMIT);
    cr_assert(strstr(ei.msg, "127.0.0.1:") != NULL, "%s", ei.msg);
    echo_roundtrip(w, big, 1000);
    shoal_wss_free(w);
}

Test(tls_wss, server_close_code_and_reason_reach_the_client)
{
    shoal_wss_config c = wss_config();
    shoal_wss *w = connect_ok(&c);
    shoal_errinfo ei = {{0}};
    const char *cmd = "CLOSE 4001 round over";
    cr_assert_eq(shoal_wss_send(w, (const uint8_t *)cmd, strlen(cmd), 5000, &ei), SHOAL_OK, "%s",
                 ei.msg);
    uint8_t *msg = (uint8_t *)1;
    size_t len = 7;
    cr_assert_eq(shoal_wss_recv(w, &msg, &len, 5000, &ei), SHOAL_ECLOSED, "%s", ei.msg);
    cr_assert_null(msg);
    cr_assert_eq(len, 0);
    cr_assert(strstr(ei.msg, "4001") != NULL, "%s", ei.msg);
    const char *reason = NULL;
    cr_assert_eq(shoal_wss_close_code(w, &reason), 4001);
    cr_assert_str_eq(reason, "round over");
    cr_assert_eq(shoal_wss_send(w, (const uint8_t *)"x", 1, 1000, &ei), SHOAL_ECLOSED);
    cr_assert(strstr(ei.msg, "4001") != NULL, "%s", ei.msg);
    cr_assert_eq(shoal_wss_close(w, SHOAL_WS_CLOSE_NORMAL, 1000), SHOAL_OK);
    shoal_wss_free(w);
}

Test(tls_wss, client_close_code_reaches_the_server)
{
    shoal_wss_config c = wss_config();
    shoal_wss *w = connect_ok(&c);
    echo_roundtrip(w, (const uint8_t *)"x", 1);
    cr_assert_eq(shoal_wss_close(w, 4321, 5000), SHOAL_OK);
    cr_assert_eq(atomic_load(&server.peer_close_code), 4321);
    cr_assert_eq(shoal_wss_close_code(w, NULL), 4321, "the server echoes the code");
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_wss_send(w, (const uint8_t *)"x", 1, 1000, &ei), SHOAL_ECLOSED);
    cr_assert_eq(shoal_wss_close(w, 1000, 1000), SHOAL_OK, "closing twice is harmless");
    shoal_wss_free(w);
}

Test(tls_wss, text_message_from_the_server_is_refused_with_1003)
{
    shoal_wss_config c = wss_config();
    shoal_wss *w = connect_ok(&c);
    shoal_errinfo ei = {{0}};
    const char *cmd = "TEXT hello";
    cr_assert_eq(shoal_wss_send(w, (const uint8_t *)cmd, strlen(cmd), 5000, &ei), SHOAL_OK);
    uint8_t *msg = NULL;
    size_t len = 0;
    cr_assert_eq(shoal_wss_recv(w, &msg, &len, 5000, &ei), SHOAL_EPROTO, "%s", ei.msg);
    cr_assert(strstr(ei.msg, "text message") != NULL, "%s", ei.msg);
    cr_assert_null(msg);
    for (int i = 0; i < 200 && atomic_load(&server.peer_close_code) < 0; i++)
        sleep_ms(10);
    cr_assert_eq(atomic_load(&server.peer_close_code), 1003);
    shoal_wss_free(w);
}

Test(tls_wss, recv_times_out_and_the_connection_still_works)
{
    shoal_wss_config c = wss_config();
    shoal_wss *w = connect_ok(&c);
    shoal_errinfo ei = {{0}};
    uint8_t *msg = NULL;
    size_t len = 0;
    int64_t t0 = now_ms();
    cr_assert_eq(shoal_wss_recv(w, &msg, &len, 300, &ei), SHOAL_ETIMEDOUT, "%s", ei.msg);
    int64_t took = now_ms() - t0;
    cr_assert(took >= 290 && took < 2000, "took %lld ms", (long long)took);
    cr_assert(strstr(ei.msg, "300 ms") != NULL, "%s", ei.msg);
    echo_roundtrip(w, (const uint8_t *)"still here", 10);
    shoal_wss_free(w);
}

Test(tls_wss, wrong_server_name_is_eauth_naming_it)
{
    shoal_wss_config c = wss_config();
    c.server_name = "wrong.example";
    shoal_wss *w = (shoal_wss *)&c;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_wss_connect(&c, &w, &ei), SHOAL_EAUTH, "%s", ei.msg);
    cr_assert_null(w);
    cr_log_info("%s", ei.msg);
    cr_assert(strstr(ei.msg, "wrong.example") != NULL, "%s", ei.msg);
    char peer[64];
    snprintf(peer, sizeof peer, "127.0.0.1:%d", server.port);
    cr_assert(strstr(ei.msg, peer) != NULL, "%s", ei.msg);
    cr_assert_eq(atomic_load(&server.messages), 0);
}

Test(tls_wss, certificate_not_signed_by_the_ca_is_eauth)
{
    shoal_wss_config c = wss_config();
    c.ca_file = other_cert_path;
    shoal_wss *w = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_wss_connect(&c, &w, &ei), SHOAL_EAUTH, "%s", ei.msg);
    cr_assert_null(w);
    cr_assert(strstr(ei.msg, "not trusted") != NULL, "%s", ei.msg);
    cr_log_info("%s", ei.msg);
    cr_assert(strstr(ei.msg, other_cert_path) != NULL, "%s", ei.msg);
}

Test(tls_wss, missing_ca_file_is_eio_naming_it)
{
    shoal_wss_config c = wss_config();
    char missing[160];
    path_in_tmp(missing, sizeof missing, "nope.pem");
    c.ca_file = missing;
    shoal_wss *w = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_wss_connect(&c, &w, &ei), SHOAL_EIO, "%s", ei.msg);
    cr_assert(strstr(ei.msg, missing) != NULL, "%s", ei.msg);
    c.ca_file = NULL;
    cr_assert_eq(shoal_wss_connect(&c, &w, &ei), SHOAL_EINVAL);
    cr_assert(strstr(ei.msg, "ca_file") != NULL, "%s", ei.msg);
}

/* A port nobody listens on: bind to get one, then close it. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t alen = sizeof a;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    return ntohs(a.sin_port);
}

Test(tls_wss, nothing_listening_is_eio_connection_refused)
{
    shoal_wss_config c = wss_config();
    c.port = (uint16_t)free_port();
    shoal_wss *w = NULL;
    shoal_errinfo ei = {{0}};
    int64_t t0 = now_ms();
    cr_assert_eq(shoal_wss_connect(&c, &w, &ei), SHOAL_EIO, "%s", ei.msg);
    cr_assert_lt(now_ms() - t0, 2000);
    char peer[64];
    snprintf(peer, sizeof peer, "127.0.0.1:%u", (unsigned)c.port);
    cr_assert(strstr(ei.msg, peer) != NULL, "%s", ei.msg);
    cr_log_info("%s", ei.msg);
    cr_assert(strstr(ei.msg, "refused") != NULL, "%s", ei.msg);
}

Test(tls_wss, listener_that_never_answers_times_out_in_the_tls_handshake)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fd, 4), 0); /* the kernel completes connects; nobody reads */
    socklen_t alen = sizeof a;
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &alen), 0);

    shoal_wss_config c = wss_config();
    c.port = ntohs(a.sin_port);
    c.timeout_ms = 600;
    shoal_wss *w = NULL;
    shoal_errinfo ei = {{0}};
    int64_t t0 = now_ms();
    cr_assert_eq(shoal_wss_connect(&c, &w, &ei), SHOAL_ETIMEDOUT, "%s", ei.msg);
    int64_t took = now_ms() - t0;
    cr_assert(took >= 590 && took < 2500, "took %lld ms", (long long)took);
    cr_assert(strstr(ei.msg, "TLS handshake") != NULL, "%s", ei.msg);
    cr_log_info("%s", ei.msg);
    cr_assert(strstr(ei.msg, "600 ms") != NULL, "%s", ei.msg);
    close(fd);
}

Test(tls_wss, server_refusing_the_subprotocol_fails_the_upgrade)
{
    shoal_wss_config c = wss_config();
    c.subprotocol = "shoal.v0";
    shoal_wss *w = NULL;
    shoal_errinfo ei = {{0}};
    shoal_err err = shoal_wss_connect(&c, &w, &ei);
    cr_assert(err == SHOAL_EPROTO || err == SHOAL_ECLOSED, "%s: %s", shoal_err_name(err), ei.msg);
    cr_assert_null(w);
    cr_log_info("%s", ei.msg);
    cr_assert(strstr(ei.msg, "shoal.v0") != NULL, "%s", ei.msg);
    cr_assert(strstr(ei.msg, SHOAL_PROTOCOL_WS_PATH) != NULL, "%s", ei.msg);
}

Test(tls_wss, raw_bytes_breaking_the_framing_make_the_server_close)
{
    shoal_wss_config c = wss_config();
    shoal_wss *w = connect_ok(&c);
    shoal_errinfo ei = {{0}};
    /* A masked frame with the reserved opcode 0x3: RFC 6455 §5.2 makes
     * the server fail the connection. */
    static const uint8_t reserved_opcode[] = {0x83, 0x83, 1, 2, 3, 4, 'a' ^ 1, 'b' ^ 2, 'c' ^ 3};
    cr_assert_eq(shoal_wss_write_raw(w, reserved_opcode, sizeof reserved_opcode, 2000, &ei),
                 SHOAL_OK, "%s", ei.msg);
    uint8_t *msg = NULL;
    size_t len = 0;
    shoal_err err = shoal_wss_recv(w, &msg, &len, 5000, &ei);
    cr_assert_eq(err, SHOAL_ECLOSED, "%s: %s", shoal_err_name(err), ei.msg);
    cr_log_info("%s", ei.msg);
    cr_assert_eq(atomic_load(&server.messages), 0, "the server accepted the bad frame");
    cr_assert_eq(shoal_wss_close_code(w, NULL), SHOAL_WS_CLOSE_PROTOCOL_ERROR);
    shoal_wss_free(w);
}

Test(tls_wss, abort_drops_the_connection_without_a_close)
{
    shoal_wss_config c = wss_config();
    shoal_wss *w = connect_ok(&c);
    echo_roundtrip(w, (const uint8_t *)"x", 1);
    shoal_wss_abort(w);
    for (int i = 0; i < 300 && atomic_load(&server.closed) == 0; i++)
        sleep_ms(10);
    cr_assert_eq(atomic_load(&server.closed), 1, "the server did not notice");
    cr_assert_eq(atomic_load(&server.peer_close_code), -1, "a Close was sent");
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_wss_send(w, (const uint8_t *)"x", 1, 100, &ei), SHOAL_ECLOSED);
    uint8_t *msg = NULL;
    size_t len = 0;
    cr_assert_eq(shoal_wss_recv(w, &msg, &len, 100, &ei), SHOAL_ECLOSED);
    cr_assert_eq(shoal_wss_close(w, 1000, 100), SHOAL_ECLOSED);
    shoal_wss_free(w);
}

Test(tls_wss, extra_headers_are_sent_and_bad_ones_refused)
{
    shoal_wss_config c = wss_config();
    shoal_ws_header bad = {"Sec-WebSocket-Key", "x"};
    c.headers = &bad;
    c.header_count = 1;
    shoal_wss *w = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_wss_connect(&c, &w, &ei), SHOAL_EINVAL, "%s", ei.msg);
    cr_assert_null(w);
    shoal_ws_header good = {"Authorization", "Bearer device-token"};
    c.headers = &good;
    w = connect_ok(&c);
    echo_roundtrip(w, (const uint8_t *)"ok", 2);
    cr_assert_eq(atomic_load(&server.authorization_seen), 1);
    cr_assert_str_eq(server.authorization, "Bearer device-token");
    shoal_wss_free(w);
}

/* libwebsockets 4.1 answers this refusal with an "HTTP/1.0 403" status
 * line, which shoal_ws reports as EPROTO (it expects HTTP/1.1) while
 * quoting the line; an HTTP/1.1 403 would be SHOAL_EAUTH. */
Test(tls_wss, upgrade_refused_with_http_403_names_the_status_and_path)
{
    shoal_wss_config c = wss_config();
    c.path = "/forbidden";
    shoal_wss *w = NULL;
    shoal_errinfo ei = {{0}};
    shoal_err err = shoal_wss_connect(&c, &w, &ei);
    cr_log_info("%s", ei.msg);
    cr_assert(err == SHOAL_EAUTH || err == SHOAL_EPROTO, "%s: %s", shoal_err_name(err), ei.msg);
    cr_assert_null(w);
    cr_assert(strstr(ei.msg, " 403 ") != NULL, "%s", ei.msg);
    cr_assert(strstr(ei.msg, "/forbidden") != NULL, "%s", ei.msg);
}

Test(tls_wss, ping_from_the_server_is_answered_while_receiving)
{
    shoal_wss_config c = wss_config();
    shoal_wss *w = connect_ok(&c);
    shoal_errinfo ei = {{0}};
    const char *cmd = "PING after the ping";
    cr_assert_eq(shoal_wss_send(w, (const uint8_t *)cmd, strlen(cmd), 5000, &ei), SHOAL_OK);
    uint8_t *msg = NULL;
    size_t len = 0;
    cr_assert_eq(shoal_wss_recv(w, &msg, &len, 5000, &ei), SHOAL_OK, "%s", ei.msg);
    cr_assert_eq(len, strlen("after the ping"));
    cr_assert_eq(memcmp(msg, "after the ping", len), 0);
    shoal_free(msg);
    for (int i = 0; i < 300 && atomic_load(&server.pongs) == 0; i++)
        sleep_ms(10);
    cr_assert_eq(atomic_load(&server.pongs), 1, "no Pong with the Ping's payload");
    shoal_wss_free(w);
}
