/* The protocol/tls tests' shared fixtures (tls_util.h). */
#include "tls_util.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shoal/selfsigned.h"

/* ---- the temporary directory -------------------------------------- */

char tmpdir[64];
char cert_path[128], key_path[128], other_cert_path[128], other_key_path[128];

void path_in_tmp(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
}

void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/shoal-tls-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir), "mkdtemp: %s", strerror(errno));
    path_in_tmp(cert_path, sizeof cert_path, "cert.pem");
    path_in_tmp(key_path, sizeof key_path, "key.pem");
    path_in_tmp(other_cert_path, sizeof other_cert_path, "other.pem");
    path_in_tmp(other_key_path, sizeof other_key_path, "other-key.pem");
}

void remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(tmpdir);
}

void make_certs(void)
{
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_selfsigned_make(cert_path, key_path, "localhost", 2, &ei), SHOAL_OK, "%s",
                 ei.msg);
    cr_assert_eq(shoal_selfsigned_make(other_cert_path, other_key_path, "localhost", 2, &ei),
                 SHOAL_OK, "%s", ei.msg);
}

char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    char *buf = calloc(1, 65536);
    cr_assert_not_null(buf);
    size_t n = fread(buf, 1, 65535, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* ---- the in-memory mbedTLS server ---------------------------------- */

int mem_send(void *ctx, const uint8_t *buf, size_t len)
{
    mem_end *e = ctx;
    e->calls++;
    if (e->broken)
        return SHOAL_TLS_IO_ERROR;
    if (e->stalled || (e->again_every && e->calls % e->again_every == 0)) {
        e->agains++;
        return SHOAL_TLS_IO_AGAIN;
    }
    size_t room = sizeof e->out->data - e->out->len;
    size_t n = len < room ? len : room;
    if (e->max_chunk && n > e->max_chunk)
        n = e->max_chunk;
    if (n == 0)
        return SHOAL_TLS_IO_AGAIN;
    memcpy(e->out->data + e->out->len, buf, n);
    e->out->len += n;
    e->sent_total += n;
    return (int)n;
}

int mem_recv(void *ctx, uint8_t *buf, size_t len)
{
    mem_end *e = ctx;
    e->calls++;
    if (e->broken)
        return SHOAL_TLS_IO_ERROR;
    if (e->in->len == 0)
        return e->peer_gone ? 0 : SHOAL_TLS_IO_AGAIN;
    if (e->again_every && e->calls % e->again_every == 0) {
        e->agains++;
        return SHOAL_TLS_IO_AGAIN;
    }
    size_t n = len < e->in->len ? len : e->in->len;
    if (e->max_chunk && n > e->max_chunk)
        n = e->max_chunk;
    memcpy(buf, e->in->data, n);
    memmove(e->in->data, e->in->data + n, e->in->len - n);
    e->in->len -= n;
    return (int)n;
}

/* mbedTLS-convention adapters for the server end. */
static int srv_send(void *ctx, const unsigned char *buf, size_t len)
{
    int n = mem_send(ctx, buf, len);
    return n == SHOAL_TLS_IO_AGAIN ? MBEDTLS_ERR_SSL_WANT_WRITE : n;
}

static int srv_recv(void *ctx, unsigned char *buf, size_t len)
{
    int n = mem_recv(ctx, buf, len);
    return n == SHOAL_TLS_IO_AGAIN ? MBEDTLS_ERR_SSL_WANT_READ : n;
}

mem_link *link_new_tickets(const int *server_suites, int server_max_minor,
                           mbedtls_ssl_ticket_context *tickets)
{
    mem_link *l = calloc(1, sizeof *l);
    cr_assert_not_null(l);
    l->client.out = &l->to_server;
    l->client.in = &l->to_client;
    l->server.end.out = &l->to_client;
    l->server.end.in = &l->to_server;

    mem_server *s = &l->server;
    mbedtls_ssl_init(&s->ssl);
    mbedtls_ssl_config_init(&s->conf);
    mbedtls_x509_crt_init(&s->cert);
    mbedtls_pk_init(&s->key);
    mbedtls_entropy_init(&s->entropy);
    mbedtls_ctr_drbg_init(&s->drbg);
    cr_assert_eq(mbedtls_ctr_drbg_seed(&s->drbg, mbedtls_entropy_func, &s->entropy, NULL, 0), 0);
    cr_assert_eq(mbedtls_x509_crt_parse_file(&s->cert, cert_path), 0);
    cr_assert_eq(mbedtls_pk_parse_keyfile(&s->key, key_path, NULL), 0);
    cr_assert_eq(mbedtls_ssl_config_defaults(&s->conf, MBEDTLS_SSL_IS_SERVER,
                                             MBEDTLS_SSL_TRANSPORT_STREAM,
                                             MBEDTLS_SSL_PRESET_DEFAULT),
                 0);
    mbedtls_ssl_conf_rng(&s->conf, mbedtls_ctr_drbg_random, &s->drbg);
    cr_assert_eq(mbedtls_ssl_conf_own_cert(&s->conf, &s->cert, &s->key), 0);
    mbedtls_ssl_conf_min_version(&s->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_1);
    mbedtls_ssl_conf_max_version(&s->conf, MBEDTLS_SSL_MAJOR_VERSION_3, server_max_minor);
    if (server_suites)
        mbedtls_ssl_conf_ciphersuites(&s->conf, server_suites);
    if (tickets)
        mbedtls_ssl_conf_session_tickets_cb(&s->conf, mbedtls_ssl_ticket_write,
                                            mbedtls_ssl_ticket_parse, tickets);
    cr_assert_eq(mbedtls_ssl_setup(&s->ssl, &s->conf), 0);
    mbedtls_ssl_set_bio(&s->ssl, &s->end, srv_send, srv_recv, NULL);
    return l;
}

mem_link *link_new(const int *server_suites, int server_max_minor)
{
    return link_new_tickets(server_suites, server_max_minor, NULL);
}

void link_free(mem_link *l)
{
    mem_server *s = &l->server;
    mbedtls_ssl_free(&s->ssl);
    mbedtls_ssl_config_free(&s->conf);
    mbedtls_x509_crt_free(&s->cert);
    mbedtls_pk_free(&s->key);
    mbedtls_ctr_drbg_free(&s->drbg);
    mbedtls_entropy_free(&s->entropy);
    free(l);
}

shoal_tls_config client_config(mem_link *l, const char *ca_pem, const char *server_name)
{
    shoal_tls_config c;
    memset(&c, 0, sizeof c);
    c.server_name = server_name;
    c.ca_pem = ca_pem;
    c.ca_label = "CA file test-ca.pem";
    c.peer_label = "localhost:8443";
    c.send = mem_send;
    c.recv = mem_recv;
    c.io_ctx = &l->client;
    return c;
}

shoal_err run_handshake(mem_link *l, shoal_tls *tls, unsigned *client_agains, shoal_errinfo *ei)
{
    for (int round = 0; round < 100000; round++) {
        shoal_err err = shoal_tls_handshake(tls, ei);
        if (err != SHOAL_EAGAIN) {
            /* Let the server take the client's last flight. */
            for (int i = 0; i < 50 && l->server.ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER; i++) {
                int r = mbedtls_ssl_handshake(&l->server.ssl);
                if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE)
                    break;
            }
            return err;
        }
        if (client_agains)
            (*client_agains)++;
        int r = mbedtls_ssl_handshake(&l->server.ssl);
        (void)r;
    }
    cr_assert_fail("handshake did not finish");
    return SHOAL_EIO;
}
