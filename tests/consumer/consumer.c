/* An app embedding libshoal-device from outside the source tree: it fills
 * an example store (consumer_store.cpp, C++), then runs one session with
 * the POSIX port against a shoal-server and expects to train.
 * Usage: consumer HOST PORT CA_PEM POPULATION TOKEN_FILE STORE */
#include <shoal/client.h>
#include <shoal/port_posix.h>
#include <shoal/store.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = malloc(65536);
    size_t n = buf ? fread(buf, 1, 65535, f) : 0;
    fclose(f);
    if (!buf)
        return NULL;
    buf[n] = '\0';
    *len = n;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: consumer HOST PORT CA_PEM POPULATION TOKEN_FILE STORE\n");
        return 2;
    }
    char msg[SHOAL_ERRINFO_LEN];
    if (consumer_fill_store(argv[6], "consumer", 256, msg, sizeof msg) != 0) {
        fprintf(stderr, "consumer: filling the store: %s\n", msg);
        return 1;
    }

    size_t ca_len = 0, token_len = 0; /* ca_pem_len 0: strlen */
    char *ca = read_file(argv[3], &ca_len);
    char *token = read_file(argv[5], &token_len);
    if (!ca || !token) {
        fprintf(stderr, "consumer: cannot read %s or %s\n", argv[3], argv[5]);
        return 1;
    }
    while (token_len > 0 && token[token_len - 1] == '\n')
        token[--token_len] = '\0';

    shoal_posix_port_config pc = {.power_supply_dir = "",
                                  .battery_percent = -1,
                                  .charging = -1,
                                  .network = SHOAL_NET_UNMETERED,
                                  .idle = 1};
    shoal_port port;
    shoal_errinfo ei = {{0}};
    if (shoal_posix_port_init(&pc, &port, &ei) != SHOAL_OK) {
        fprintf(stderr, "consumer: port: %s\n", ei.msg);
        return 1;
    }
    shoal_client_config cfg = {
        .host = argv[1],
        .port = (uint16_t)atoi(argv[2]),
        .server_name = "localhost",
        .ca_pem = ca,
        .population = argv[4],
        .auth_token = (const uint8_t *)token,
        .auth_token_len = token_len,
        .store_path = argv[6],
    };
    shoal_client *client = NULL;
    if (shoal_client_new(&cfg, &port, &client, &ei) != SHOAL_OK) {
        fprintf(stderr, "consumer: client: %s\n", ei.msg);
        return 1;
    }
    shoal_session_result r;
    shoal_err err = shoal_client_run(client, &r);
    int rc = 1;
    if (err != SHOAL_OK) {
        fprintf(stderr, "consumer: run: %s\n", shoal_strerror(err));
    } else {
        printf("consumer: session %s round %llu examples %llu\n",
               shoal_session_outcome_name(r.outcome), (unsigned long long)r.round,
               (unsigned long long)r.example_count);
        if (r.outcome == SHOAL_SESSION_ERROR)
            fprintf(stderr, "consumer: %s\n", r.errinfo.msg);
        rc = r.outcome == SHOAL_SESSION_TRAINED ? 0 : 1;
    }
    shoal_client_free(client);
    shoal_posix_port_fini(&port);
    free(ca);
    free(token);
    return rc;
}
