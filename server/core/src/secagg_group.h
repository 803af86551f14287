/* One secure-aggregation group on the server (DESIGN.md §5): the
 * shoal_secagg_server of the group's devices, its phase deadlines, the
 * reassembly of masked inputs, and the wire messages each phase sends.
 * Pure: messages in (decoded envelopes, by device index), frames out, time
 * passed in. An aggregator actor owns one per group; everything it needs
 * comes by value in sa_group_params, so a group could run in another
 * process. */
#ifndef SHOAL_SECAGG_GROUP_H
#define SHOAL_SECAGG_GROUP_H

#include <stdint.h>

#include "shoal/envelope.h"
#include "shoal/secagg.h"
#include "shoal/secagg_protocol.h"

typedef struct sa_group_params {
    uint64_t id;         /* the group, unique in the server's life */
    uint32_t population; /* index: whose coordinator gets the result */
    uint64_t round;
    shoal_secagg_config cfg; /* verify_keys NULL */
    shoal_secagg_fixed fx;   /* planned (shoal_secagg_fixed_plan) */
    /* Flags after the weight (shoal_secagg_fixed_encode_bits): 1 with
     * adaptive clipping's unclipped bit, else 0. cfg.length is the
     * parameters + 1 + flags. */
    uint32_t flags;
    int64_t advertise_deadline;
    int64_t phase_timeout_ms;
} sa_group_params;

/* One encoded envelope for the group's device `index` (owned bytes). */
typedef struct sa_frame {
    uint32_t index;
    uint8_t *bytes;
    size_t len;
} sa_frame;

typedef enum sa_group_state { SA_GROUP_RUNNING, SA_GROUP_DONE, SA_GROUP_FAILED } sa_group_state;

typedef struct shoal_sa_group shoal_sa_group;

shoal_err shoal_sa_group_new(const sa_group_params *p, const shoal_codec *codec,
                             shoal_sa_group **out, shoal_errinfo *ei);
void shoal_sa_group_free(shoal_sa_group *g);

/* A message from device `index` (env borrowed). Refusals, the group's
 * state unchanged: SHOAL_ESTATE (wrong phase, already answered, dropped
 * earlier), SHOAL_EPROTO (an index that is not the sender's, a masked
 * input that does not fit the group), and the state machine's codes; ei
 * says why. A message that completes a phase closes it at once. */
shoal_err shoal_sa_group_on_message(shoal_sa_group *g, uint32_t index, const shoal_envelope *env,
                                    int64_t now, shoal_errinfo *ei);
/* Closes the current phase if its deadline has passed. */
void shoal_sa_group_tick(shoal_sa_group *g, int64_t now);
/* When the current phase ends, or INT64_MAX once the group is over. */
int64_t shoal_sa_group_deadline(const shoal_sa_group *g);
sa_group_state shoal_sa_group_state(const shoal_sa_group *g);
/* The phase now, and the devices lost so far by each phase (dropped[0..5)). */
shoal_secagg_phase shoal_sa_group_phase(const shoal_sa_group *g);
const uint32_t *shoal_sa_group_dropped(const shoal_sa_group *g);
/* After SA_GROUP_FAILED: why, for the log (holds no secret). */
const char *shoal_sa_group_failure(const shoal_sa_group *g);

/* Takes the frames queued since the last call (*count of them; the caller
 * frees each bytes and the array with shoal_free). */
sa_frame *shoal_sa_group_take_frames(shoal_sa_group *g, size_t *count);

/* After SA_GROUP_DONE: the decoded sum (length - 1 - flags doubles: the
 * weighted sum of the survivors' updates), the sum of their weights, how
 * many survivors set the first flag (the unclipped bit; 0 without flags)
 * and U3. The pointers live as long as the group. */
const double *shoal_sa_group_sum(const shoal_sa_group *g, uint64_t *total_weight, uint64_t *flagged,
                                 const uint32_t **survivors, size_t *survivor_count);

#endif
