/* Private: the client's own state database (config.state_path), used by
 * the client (client_*.c). A small SQLite file in WAL mode, application_id "SHDS":
 *   population(name PK, next_checkin_unix_ms, last_contribution_unix_ms)
 *   traffic(day PK, bytes_down, bytes_up)          day: UTC, unix_ms / 86400000
 *   event(id PK AUTOINCREMENT, unix_ms, kind, population, bytes,
 *         duration_ms, example_count, status, detail)   the operational log
 *   saved_upload(population PK, session, checkpoint, round, example_count,
 *         loss, accuracy, deadline_unix_ms, sealed, payload, unclipped)
 *   tls_session(peer PK "host:port", saved_unix_ms, sealed, session)
 * Nothing in it is an example or a model. saved_upload holds, until its
 * reporting deadline, an update whose upload was cut off (sealed with a
 * key derived from the example store's key when there is one), so that a
 * restarted app can resume it; the log never holds update content.
 * tls_session holds the last TLS session with each server
 * (shoal_tls_get_session: the server's ticket and the session's master
 * secret), sealed the same way, so that the next connection resumes it
 * instead of making a full handshake (client_tls.c). */
#ifndef SHOAL_CLIENT_STATE_INT_H
#define SHOAL_CLIENT_STATE_INT_H

#include <sqlite3.h>
#include <stdint.h>

#include "shoal/client.h"

#define SHOAL_DEVC_DAY_MS 86400000LL

typedef struct shoal_devc_db {
    sqlite3 *db;
    const char *path; /* borrowed from the client */
    int64_t max_age_ms;
    int64_t max_rows;
} shoal_devc_db;

/* Opens (creating) the database and trims the log. */
shoal_err shoal_devc_db_open(shoal_devc_db *d, const char *path, int64_t now_unix_ms,
                             shoal_errinfo *ei);
void shoal_devc_db_close(shoal_devc_db *d);
/* The population's times; 0 for none. */
shoal_err shoal_devc_db_population(shoal_devc_db *d, const char *population, int64_t *next_checkin,
                                   int64_t *last_contribution, shoal_errinfo *ei);
shoal_err shoal_devc_db_set_next_checkin(shoal_devc_db *d, const char *population, int64_t unix_ms,
                                         shoal_errinfo *ei);
shoal_err shoal_devc_db_set_contribution(shoal_devc_db *d, const char *population, int64_t unix_ms,
                                         shoal_errinfo *ei);
shoal_err shoal_devc_db_traffic(shoal_devc_db *d, int64_t day, uint64_t *down, uint64_t *up,
                                shoal_errinfo *ei);
shoal_err shoal_devc_db_add_traffic(shoal_devc_db *d, int64_t day, uint64_t down, uint64_t up,
                                    shoal_errinfo *ei);
/* Appends a log row (ev->id is ignored) and applies the caps. */
shoal_err shoal_devc_db_log(shoal_devc_db *d, const shoal_client_event *ev, shoal_errinfo *ei);
shoal_err shoal_devc_db_log_read(shoal_devc_db *d, int64_t since_unix_ms,
                                 int (*fn)(void *ctx, const shoal_client_event *event), void *ctx,
                                 shoal_errinfo *ei);

/* An upload cut off, as kept for a restarted client. payload: the encoded
 * update, or nonce + sealed update when sealed (client_saved.c). */
typedef struct shoal_devc_db_upload {
    uint8_t session[64];
    size_t session_len;
    uint8_t checkpoint[64];
    size_t checkpoint_len;
    uint64_t round, example_count;
    double loss, accuracy;
    int64_t deadline_unix_ms;
    int sealed;
    uint8_t *payload; /* shoal_malloc'd by load */
    size_t payload_len;
    int unclipped; /* adaptive clipping's bit, 0 or 1; -1: none (NULL) */
} shoal_devc_db_upload;

/* One saved upload per population (a new one replaces the old). */
shoal_err shoal_devc_db_save_upload(shoal_devc_db *d, const char *population,
                                    const shoal_devc_db_upload *u, shoal_errinfo *ei);
/* *found 0 when there is none; u->payload is the caller's to free. */
shoal_err shoal_devc_db_load_upload(shoal_devc_db *d, const char *population,
                                    shoal_devc_db_upload *u, int *found, shoal_errinfo *ei);
shoal_err shoal_devc_db_drop_upload(shoal_devc_db *d, const char *population, shoal_errinfo *ei);

/* One TLS session per peer ("host:port"; a new one replaces the old).
 * session: shoal_tls_get_session's bytes, or nonce + sealed bytes when
 * sealed (client_tls.c). Load: *session 0 when there is none, else
 * shoal_malloc'd and the caller's to wipe and free. */
shoal_err shoal_devc_db_save_tls(shoal_devc_db *d, const char *peer, const uint8_t *session,
                                 size_t len, int sealed, int64_t now_unix_ms, shoal_errinfo *ei);
shoal_err shoal_devc_db_load_tls(shoal_devc_db *d, const char *peer, uint8_t **session, size_t *len,
                                 int *sealed, shoal_errinfo *ei);
shoal_err shoal_devc_db_drop_tls(shoal_devc_db *d, const char *peer, shoal_errinfo *ei);

#endif
