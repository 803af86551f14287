/* Shoal: the server's durable state, in one SQLite database.
 *
 * Populations, rounds and checkpoints (the global model and the server
 * optimizer's state after each committed round), with each round's metrics.
 * The database runs in WAL mode with synchronous=FULL: a commit that
 * returned SHOAL_OK survives a crash or power loss, and a crash in the
 * middle of one leaves the previous checkpoint as the latest. Vectors are
 * stored little-endian with a CRC-32, so a damaged blob is reported instead
 * of loaded.
 *
 * On start the server opens the database, loads each population's latest
 * checkpoint, and marks rounds that were running when it stopped as
 * interrupted (they are restarted, never resumed half-applied).
 *
 * A shoal_state is one SQLite connection: use it from one thread at a
 * time (the coordinator's). Errors a person reads name the database file
 * and say what to do. */
#ifndef SHOAL_STATE_H
#define SHOAL_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

typedef struct shoal_state shoal_state;

/* Opens (creating if needed) the state database at `path`. Refuses, with a
 * message naming the file: a file that is not SQLite or is corrupt
 * (SHOAL_EFORMAT), a SQLite database of another application or of a newer
 * Shoal schema (SHOAL_EFORMAT), a path that cannot be opened (SHOAL_EIO).
 * Free with shoal_state_close (NULL is a no-op). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_state_open(const char *path, shoal_state **out,
                                                     shoal_errinfo *ei);
SHOAL_API void shoal_state_close(shoal_state *st);

/* The id of population `name`, created on first use with its model
 * description (`model`, e.g. "cnn 1x28x28 10") and parameter count. An
 * existing population whose model or parameter count differs is refused
 * (SHOAL_EINVAL): a changed model needs a new population name. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_state_population(shoal_state *st, const char *name,
                                                           const char *model, uint64_t param_count,
                                                           int64_t *population_id,
                                                           shoal_errinfo *ei);

/* A checkpoint: the model after round `round`, as version `version`. */
typedef struct shoal_checkpoint {
    uint64_t version;
    uint64_t round;
    int64_t committed_ms; /* wall-clock time of the commit (ms since the epoch) */
    size_t param_count;
    float *params; /* param_count floats */
    size_t state_count;
    float *server_state; /* state_count floats (may be 0: FedAvg) */
    uint64_t server_steps;
} shoal_checkpoint;

/* Frees the vectors of a checkpoint filled by shoal_state_latest. */
SHOAL_API void shoal_checkpoint_fini(shoal_checkpoint *cp);

/* Metrics of a finished round, as the round engine reports them. */
typedef struct shoal_round_record {
    uint64_t round;
    int task; /* 0 train, 1 evaluate */
    /* Unix time in ms (wall clock); 0: not known, stored as NULL. */
    int64_t started_ms, ended_ms;
    uint32_t selected, reported, dropped, late;
    uint64_t examples;
    double loss, accuracy; /* NaN when not applicable */
} shoal_round_record;

/* Records that round `round` started (so a crash leaves a trace). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_state_round_started(shoal_state *st,
                                                              int64_t population_id, uint64_t round,
                                                              int task, int64_t started_ms,
                                                              shoal_errinfo *ei);

/* In ONE transaction: stores the checkpoint and marks its round committed
 * with its metrics. Either both are durable when SHOAL_OK returns, or
 * neither is. SHOAL_ESTATE if `cp->version` is not above the latest. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_state_commit(shoal_state *st, int64_t population_id,
                                                       const shoal_checkpoint *cp,
                                                       const shoal_round_record *rec,
                                                       shoal_errinfo *ei);

/* Differential privacy: the accountant's state after a round
 * (shoal_rdp_accountant_pack's bytes, opaque here), the rounds it has
 * composed and the epsilon at delta it gives; the clip the round's
 * updates were bounded to and, with adaptive clipping, the noised
 * fraction of them that were within it and the clip it gives the next
 * round. A clip or next_clip of 0 is none (stored as NULL, loaded as 0);
 * unclipped_fraction is stored only with a next_clip (NaN when loaded
 * without one). */
typedef struct shoal_dp_record {
    const uint8_t *accountant;
    size_t accountant_len;
    uint64_t steps;
    double epsilon, delta;
    double clip;               /* S_t, > 0; 0: not recorded */
    double unclipped_fraction; /* adaptive clipping: the noised estimate */
    double next_clip;          /* adaptive clipping: S_(t+1), > 0; 0: none */
} shoal_dp_record;

/* shoal_state_commit, and with it (dp not NULL) the privacy record of the
 * round, keyed by the round's number and the checkpoint's version: in the
 * same transaction, so the accountant on disk always matches the latest
 * checkpoint. SHOAL_EINVAL for a dp without accountant bytes. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_state_commit_dp(shoal_state *st, int64_t population_id,
                                                          const shoal_checkpoint *cp,
                                                          const shoal_round_record *rec,
                                                          const shoal_dp_record *dp,
                                                          shoal_errinfo *ei);

/* The privacy record committed with checkpoint `version`: its accountant
 * bytes are copied into accountant[0..cap) and dp->accountant points
 * there. SHOAL_ENOTFOUND when that checkpoint has none (a population that
 * trained without DP, or none yet); SHOAL_EFORMAT (naming the version)
 * when the stored bytes fail their checksum or exceed cap. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_state_dp_load(shoal_state *st, int64_t population_id,
                                                        uint64_t version, uint8_t *accountant,
                                                        size_t cap, shoal_dp_record *dp,
                                                        shoal_errinfo *ei);

/* Marks a round abandoned (or an evaluation finished: status "evaluated")
 * with its metrics; no checkpoint changes. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_state_round_finished(shoal_state *st,
                                                               int64_t population_id,
                                                               const shoal_round_record *rec,
                                                               const char *status,
                                                               shoal_errinfo *ei);

/* Loads the latest checkpoint into *cp (vectors allocated; release with
 * shoal_checkpoint_fini). SHOAL_ENOTFOUND when the population has none yet,
 * SHOAL_EFORMAT (naming the version) when its stored vectors are damaged. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_state_latest(shoal_state *st, int64_t population_id,
                                                       shoal_checkpoint *cp, shoal_errinfo *ei);

/* Marks every round of the population still "running" as "interrupted"
 * and returns how many there were. Called once at start-up. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_state_recover(shoal_state *st, int64_t population_id,
                                                        uint64_t *interrupted, shoal_errinfo *ei);

/* Marks every round of the population still "running" with `status` (e.g.
 * "abandoned" at a graceful stop) and, when ended_ms > 0, that end time
 * (Unix ms); *closed receives how many there were. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_state_close_running(shoal_state *st,
                                                              int64_t population_id,
                                                              const char *status, int64_t ended_ms,
                                                              uint64_t *closed, shoal_errinfo *ei);

/* Highest round number recorded for the population (0 if none), so a
 * restarted server numbers its rounds on from there. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_state_last_round(shoal_state *st, int64_t population_id,
                                                           uint64_t *round, shoal_errinfo *ei);

/* Deletes all but the newest `keep` checkpoints (keep >= 1). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_state_prune(shoal_state *st, int64_t population_id,
                                                      unsigned keep, shoal_errinfo *ei);

#endif
