/* Shared by the protocol/tls tests: a temporary directory with two
 * self-signed certificates, and an mbedTLS server in memory that a
 * shoal_tls client talks to through callbacks that can push back with
 * EAGAIN. Helpers assert with Criterion. */
#ifndef SHOAL_TEST_TLS_UTIL_H
#define SHOAL_TEST_TLS_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>

#include "shoal/tls.h"

/* ---- temporary directory: "cert"/"key" for the servers (localhost) and
 * "other"/"other-key" that signed nothing ---- */
extern char tmpdir[64];
extern char cert_path[128], key_path[128], other_cert_path[128], other_key_path[128];
void path_in_tmp(char *out, size_t cap, const char *name);
void make_tmpdir(void);
void remove_tmpdir(void);
void make_certs(void);
/* A whole file as a NUL-terminated string (calloc'd, at most 64 KiB). */
char *read_text(const char *path);

/* ---- the in-memory connection ---- */
typedef struct byte_queue {
    uint8_t data[1 << 16];
    size_t len;
} byte_queue;

/* One end of an in-memory connection. Every `again_every`-th call returns
 * SHOAL_TLS_IO_AGAIN, and at most max_chunk bytes move per call. */
typedef struct mem_end {
    byte_queue *out;
    byte_queue *in;
    unsigned calls;
    unsigned again_every;
    size_t max_chunk;
    bool peer_gone; /* recv reports EOF once `in` is empty */
    bool broken;    /* every call fails */
    bool stalled;   /* send takes nothing */
    unsigned agains;
    uint64_t sent_total; /* bytes send took */
} mem_end;

typedef struct mem_server {
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt cert;
    mbedtls_pk_context key;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mem_end end;
} mem_server;

typedef struct mem_link {
    byte_queue to_server;
    byte_queue to_client;
    mem_end client;
    mem_server server;
} mem_link;

int mem_send(void *ctx, const uint8_t *buf, size_t len);
int mem_recv(void *ctx, uint8_t *buf, size_t len);
/* A server with the "cert"/"key" pair, TLS 1.0 up to server_max_minor,
 * the given suites (NULL: mbedTLS's defaults). */
mem_link *link_new(const int *server_suites, int server_max_minor);
/* The same, issuing and taking session tickets sealed with `tickets`
 * (which several links may share, so that one resumes another's). */
mem_link *link_new_tickets(const int *server_suites, int server_max_minor,
                           mbedtls_ssl_ticket_context *tickets);
void link_free(mem_link *l);
/* A client config for l: CA ca_pem, name server_name. */
shoal_tls_config client_config(mem_link *l, const char *ca_pem, const char *server_name);
/* Runs both handshakes until the client finishes (or fails); counts the
 * client's SHOAL_EAGAIN returns. */
shoal_err run_handshake(mem_link *l, shoal_tls *tls, unsigned *client_agains, shoal_errinfo *ei);

#endif
