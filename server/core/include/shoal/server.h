/* Shoal: shoal-server as a library.
 *
 * shoal_server_new opens the state database, loads each population's latest
 * committed checkpoint (or initialises the model from its seed), marks
 * rounds a crash interrupted, starts the actors (one coordinator per
 * population, one selector per worker) and binds the port.
 * shoal_server_run serves until shoal_server_stop; then every open round is
 * recorded as abandoned (nothing half-applied) and the database is closed.
 * main.c is a thin command line around this; tests run it in-process. */
#ifndef SHOAL_SERVER_H
#define SHOAL_SERVER_H

#include <stdint.h>

#include "shoal/err.h"
#include "shoal/server_config.h"

typedef struct shoal_server shoal_server;

/* `cfg` is borrowed and must outlive the server. SHOAL_EIO (port, files),
 * SHOAL_EFORMAT (state database), SHOAL_EINVAL (a population whose stored
 * model differs from its config), SHOAL_ENOMEM; ei says what and where. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_server_new(const shoal_server_config *cfg,
                                                     shoal_server **out, shoal_errinfo *ei);

/* The TCP port bound (useful with port 0). */
SHOAL_API uint16_t shoal_server_port(const shoal_server *srv);
/* The port of the operator's HTTP listener (http.listen); 0 without one. */
SHOAL_API uint16_t shoal_server_http_port(const shoal_server *srv);

/* Serves on the calling thread until shoal_server_stop; then shuts down
 * cleanly. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_server_run(shoal_server *srv);

/* Asks a running server to stop: refuse new sessions, close connections,
 * abandon open rounds. Thread-safe; not async-signal-safe (main.c calls it
 * from a signal-waiting thread). */
SHOAL_API void shoal_server_stop(shoal_server *srv);

/* Frees everything (after shoal_server_run returned, or instead of it).
 * NULL is a no-op. */
SHOAL_API void shoal_server_free(shoal_server *srv);

#endif
