/* Starting a real shoal-server in-process (on its own thread) or as a
 * child process, on an ephemeral loopback port with a fresh self-signed
 * certificate and state database in a temporary directory. */
#ifndef SHOAL_TEST_HARNESS_H
#define SHOAL_TEST_HARNESS_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include "device.h"
#include "shoal/server.h"
#include "shoal/server_config.h"

#define TEST_SECRET "integration-test-secret-0123456789"

typedef struct tserver {
    char dir[128];
    char cert[192], key[192], state[192], config[192];
    shoal_server_config *cfg;
    shoal_server *srv;
    pthread_t thread;
    int running;
    tdev_server endpoint;
    pid_t pid; /* child-process mode */
} tserver;

/* A population entry for the config: logreg on 1x2x2 inputs, 2 classes
 * (10 parameters), shared secret TEST_SECRET, and `round` spliced into its
 * "round" object (e.g. "\"goal_count\": 3, \"pipelining\": false"). */
char *tpop(const char *name, const char *round_fields, const char *strategy);
/* tpop with `plan_fields` spliced into its "plan" object (e.g.
 * "\"max_examples\": 100") and `population_fields` (whole keys, each
 * followed by a comma, e.g. "\"update_bound\": {...},") into the
 * population; NULL for none. */
char *tpop_ex(const char *name, const char *round_fields, const char *strategy,
              const char *plan_fields, const char *population_fields);

/* Makes the directory, certificate and config file. `populations` is a
 * JSON array body (tpop() entries joined by commas). */
void tserver_prepare(tserver *t, const char *populations);
/* Replaces the first `from` in the config file with `to` (after
 * tserver_prepare, before starting). */
void tserver_config_edit(const tserver *t, const char *from, const char *to);
/* In-process: loads the config, starts the server thread. */
void tserver_start(tserver *t);
/* tserver_prepare with one population "p" (tpop with `round_fields`,
 * FedAvg); tserver_start_one then starts it in-process. */
void tserver_prepare_one(tserver *t, const char *round_fields);
void tserver_start_one(tserver *t, const char *round_fields);
/* Stops and frees the in-process server (the directory stays). */
void tserver_stop(tserver *t);
/* Child process: runs the shoal-server binary (SHOAL_SERVER_BIN) and waits
 * for its "listening on" line. */
void tserver_spawn(tserver *t);
/* Sends `sig` to the child and waits for it; returns its wait status. */
int tserver_kill(tserver *t, int sig);
/* Removes the directory. */
void tserver_cleanup(tserver *t);

/* One whole session of a device in population "p": checks in, waits for
 * its task, and reports (a train update of PARAMS floats delta_scale *
 * (i + 1) over `examples`, or an evaluation), asserting that the report is
 * accepted. With model_out (10 floats), the model it downloaded. */
void tserver_session(const tserver *t, float delta_scale, uint64_t examples, float *model_out);

/* GET path over HTTPS with curl; returns the body (malloc'd) and HTTP
 * status, or NULL. */
char *thttp_get(const tserver *t, const char *path, int *status, size_t *len);
/* The same with an Authorization header (NULL: none). */
/* GET url (any scheme curl knows; extra: more curl arguments, or "")
 * with curl; as thttp_get. */
char *thttp_fetch(const tserver *t, const char *url, const char *extra, int *status, size_t *len);
char *thttp_get_auth(const tserver *t, const char *path, const char *authorization, int *status,
                     size_t *len);

/* Loads the latest checkpoint of `population` from the state database. */
int tstate_latest(const tserver *t, const char *population, float **params, size_t *count,
                  uint64_t *version);

#endif
