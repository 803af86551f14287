/* Private: the client's own state database (config.state_path), used by
 * client.c. A small SQLite file in WAL mode, application_id "SHDS":
 *   population(name PK, next_checkin_unix_ms, last_contribution_unix_ms)
 *   traffic(day PK, bytes_down, bytes_up)          day: UTC, unix_ms / 86400000
 *   event(id PK AUTOINCREMENT, unix_ms, kind, population, bytes,
 *         duration_ms, example_count, status, detail)   the operational log
 * Nothing in it is an example, a model or an update. */
#ifndef SHOAL_CLIENT_STATE_INT_H
#define SHOAL_CLIENT_STATE_INT_H

#include <sqlite3.h>
#include <stdint.h>

#include "shoal/client.h"

#define CLIENT_DAY_MS 86400000LL

typedef struct client_db {
    sqlite3 *db;
    const char *path; /* borrowed from the client */
    int64_t max_age_ms;
    int64_t max_rows;
} client_db;

/* Opens (creating) the database and trims the log. */
shoal_err client_db_open(client_db *d, const char *path, int64_t now_unix_ms, shoal_errinfo *ei);
void client_db_close(client_db *d);
/* The population's times; 0 for none. */
shoal_err client_db_population(client_db *d, const char *population, int64_t *next_checkin,
                               int64_t *last_contribution, shoal_errinfo *ei);
shoal_err client_db_set_next_checkin(client_db *d, const char *population, int64_t unix_ms,
                                     shoal_errinfo *ei);
shoal_err client_db_set_contribution(client_db *d, const char *population, int64_t unix_ms,
                                     shoal_errinfo *ei);
shoal_err client_db_traffic(client_db *d, int64_t day, uint64_t *down, uint64_t *up,
                            shoal_errinfo *ei);
shoal_err client_db_add_traffic(client_db *d, int64_t day, uint64_t down, uint64_t up,
                                shoal_errinfo *ei);
/* Appends a log row (ev->id is ignored) and applies the caps. */
shoal_err client_db_log(client_db *d, const shoal_client_event *ev, shoal_errinfo *ei);
shoal_err client_db_log_read(client_db *d, int64_t since_unix_ms,
                             int (*fn)(void *ctx, const shoal_client_event *event), void *ctx,
                             shoal_errinfo *ei);

#endif
