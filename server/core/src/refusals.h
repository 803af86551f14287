/* Refusals: what the server turns away and why. Counters per population
 * and reason for /metrics, log lines bounded per reason and minute, and
 * the per-address limit on failed authentications (docs/operations.md,
 * "Abuse limits").
 *
 * Thread safety: every function may be called from any thread at once
 * (selectors and coordinators on the actor workers, HTTP on the network
 * thread). */
#ifndef SHOAL_REFUSALS_H
#define SHOAL_REFUSALS_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

/* Kinds of refusal: the wire's Shoal__Reason values 0..19, then these,
 * which travel as AUTH_FAILED and NOT_SELECTED but are told apart here. */
enum {
    SHOAL_REFUSAL_AUTH_RATE_LIMITED = 20, /* the address failed too often */
    SHOAL_REFUSAL_RESUME_IDENTITY = 21,   /* a resume of another device's session */
    SHOAL_REFUSAL_KINDS = 22,
};

typedef struct shoal_refusals shoal_refusals;

/* populations: how many populations are counted (index 0..populations-1;
 * SHOAL_REFUSALS_NO_POPULATION for a refusal before one is known).
 * auth_failures_per_minute: 0 for no limit. log_per_minute >= 1. */
#define SHOAL_REFUSALS_NO_POPULATION SIZE_MAX
SHOAL_NODISCARD shoal_err shoal_refusals_new(size_t populations, uint32_t auth_failures_per_minute,
                                             uint32_t log_per_minute, shoal_refusals **out);
void shoal_refusals_free(shoal_refusals *r);

/* Counts one refusal of `kind` (a reason or SHOAL_REFUSAL_*) in
 * `population`. */
void shoal_refusals_count(shoal_refusals *r, size_t population, int kind);
/* The count so far. */
uint64_t shoal_refusals_total(const shoal_refusals *r, size_t population, int kind);
/* The metric label of a kind: "auth_failed", "auth_rate_limited", ... */
const char *shoal_refusals_label(int kind);

/* Whether a log line about a refusal of `kind` may be written now: 1 for
 * the first log_per_minute of a minute, 0 after (those are counted). The
 * first call of a new minute that follows suppressed lines writes one
 * summary line with their count first. now_ms: any monotonic clock. */
int shoal_refusals_may_log(shoal_refusals *r, int kind, int64_t now_ms);

/* The per-address limit. `address` is the remote IP (no port), at most 63
 * bytes. shoal_refusals_barred: 1 when `address` failed
 * auth_failures_per_minute times within its current minute, with
 * *retry_ms the time until that minute ends; 0 otherwise.
 * shoal_refusals_auth_failed records one failure. The table is bounded:
 * under a flood of addresses the oldest entries give way. */
int shoal_refusals_barred(shoal_refusals *r, const char *address, int64_t now_ms,
                          int64_t *retry_ms);
void shoal_refusals_auth_failed(shoal_refusals *r, const char *address, int64_t now_ms);

#endif
