#include "refusals.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/envelope.h"
#include "shoal/log.h"

#define LOG_COMPONENT "refusals"
#define MINUTE_MS     60000
/* Addresses tracked at once (a power of two) and how far a lookup probes:
 * enough for the failing addresses of a minute; beyond that the oldest
 * entry of the probe gives way, so memory stays bounded under a flood. */
#define ADDRESS_SLOTS 4096
#define ADDRESS_PROBE 8

typedef struct address_slot {
    char address[64]; /* "" when free */
    int64_t window_start;
    uint32_t failures;
} address_slot;

typedef struct log_window {
    int64_t start;
    uint32_t logged;
    uint64_t suppressed;
} log_window;

struct shoal_refusals {
    size_t populations;
    uint32_t auth_limit, log_limit;
    atomic_uint_least64_t *counts; /* (populations + 1) x SHOAL_REFUSAL_KINDS */
    pthread_mutex_t lock;          /* the two tables below */
    log_window logs[SHOAL_REFUSAL_KINDS];
    address_slot *slots;
};

shoal_err shoal_refusals_new(size_t populations, uint32_t auth_failures_per_minute,
                             uint32_t log_per_minute, shoal_refusals **out)
{
    *out = NULL;
    shoal_refusals *r = shoal_calloc(1, sizeof *r);
    if (!r)
        return SHOAL_ENOMEM;
    r->populations = populations;
    r->auth_limit = auth_failures_per_minute;
    r->log_limit = log_per_minute ? log_per_minute : 1;
    r->counts = shoal_calloc((populations + 1) * SHOAL_REFUSAL_KINDS, sizeof *r->counts);
    r->slots = auth_failures_per_minute ? shoal_calloc(ADDRESS_SLOTS, sizeof *r->slots) : NULL;
    if (!r->counts || (auth_failures_per_minute && !r->slots) ||
        pthread_mutex_init(&r->lock, NULL) != 0) {
        shoal_free(r->counts);
        shoal_free(r->slots);
        shoal_free(r);
        return SHOAL_ENOMEM;
    }
    for (int k = 0; k < SHOAL_REFUSAL_KINDS; k++)
        r->logs[k].start = INT64_MIN;
    *out = r;
    return SHOAL_OK;
}

void shoal_refusals_free(shoal_refusals *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->lock);
    shoal_free(r->counts);
    shoal_free(r->slots);
    shoal_free(r);
}

static atomic_uint_least64_t *counter(const shoal_refusals *r, size_t population, int kind)
{
    if (kind < 0 || kind >= SHOAL_REFUSAL_KINDS)
        kind = 0;
    size_t row = population < r->populations ? population : r->populations;
    return &r->counts[row * SHOAL_REFUSAL_KINDS + (size_t)kind];
}

void shoal_refusals_count(shoal_refusals *r, size_t population, int kind)
{
    if (r)
        atomic_fetch_add(counter(r, population, kind), 1);
}

uint64_t shoal_refusals_total(const shoal_refusals *r, size_t population, int kind)
{
    return r ? atomic_load(counter(r, population, kind)) : 0;
}

const char *shoal_refusals_label(int kind)
{
    static _Thread_local char label[32];
    if (kind == SHOAL_REFUSAL_AUTH_RATE_LIMITED)
        return "auth_rate_limited";
    if (kind == SHOAL_REFUSAL_RESUME_IDENTITY)
        return "resume_other_device";
    const char *name = shoal_protocol_reason_name(kind);
    size_t i = 0;
    for (; name[i] && i + 1 < sizeof label; i++)
        label[i] = (char)tolower((unsigned char)name[i]);
    label[i] = 0;
    return label;
}

int shoal_refusals_may_log(shoal_refusals *r, int kind, int64_t now_ms)
{
    if (!r)
        return 1;
    if (kind < 0 || kind >= SHOAL_REFUSAL_KINDS)
        kind = 0;
    uint64_t summary = 0;
    int ok;
    pthread_mutex_lock(&r->lock);
    log_window *w = &r->logs[kind];
    if (w->start == INT64_MIN || now_ms - w->start >= MINUTE_MS) {
        summary = w->suppressed;
        w->start = now_ms;
        w->logged = 0;
        w->suppressed = 0;
    }
    ok = w->logged < r->log_limit;
    if (ok)
        w->logged++;
    else
        w->suppressed++;
    pthread_mutex_unlock(&r->lock);
    if (summary)
        SHOAL_LOG(SHOAL_LOG_WARN, LOG_COMPONENT,
                  "%llu more refusal(s) for %s in the last minute were not logged (at most %u "
                  "lines a minute: limits.refusal_log_per_minute); /metrics counts them all",
                  (unsigned long long)summary, shoal_refusals_label(kind), r->log_limit);
    return ok;
}

/* FNV-1a */
static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The address's slot, or (create) a free, expired or oldest one of its
 * probe taken over for it; NULL when not found and not creating. Under
 * r->lock. */
static address_slot *slot_of(shoal_refusals *r, const char *address, int64_t now_ms, int create)
{
    uint32_t h = hash(address);
    address_slot *spare = NULL;
    int spare_reusable = 0;
    for (int i = 0; i < ADDRESS_PROBE; i++) {
        address_slot *s = &r->slots[(h + (uint32_t)i) & (ADDRESS_SLOTS - 1)];
        if (s->address[0] && strcmp(s->address, address) == 0)
            return s;
        int reusable = !s->address[0] || now_ms - s->window_start >= MINUTE_MS;
        if (!spare || (reusable && !spare_reusable) ||
            (!spare_reusable && s->window_start < spare->window_start)) {
            spare = s;
            spare_reusable = reusable;
        }
    }
    if (!create)
        return NULL;
    size_t n = strnlen(address, sizeof spare->address - 1);
    memcpy(spare->address, address, n);
    spare->address[n] = 0;
    spare->window_start = now_ms;
    spare->failures = 0;
    return spare;
}

int shoal_refusals_barred(shoal_refusals *r, const char *address, int64_t now_ms, int64_t *retry_ms)
{
    if (!r || !r->auth_limit || !address || !*address)
        return 0;
    int barred = 0;
    pthread_mutex_lock(&r->lock);
    address_slot *s = slot_of(r, address, now_ms, 0);
    if (s && now_ms - s->window_start < MINUTE_MS && s->failures >= r->auth_limit) {
        barred = 1;
        *retry_ms = s->window_start + MINUTE_MS - now_ms;
    }
    pthread_mutex_unlock(&r->lock);
    return barred;
}

void shoal_refusals_auth_failed(shoal_refusals *r, const char *address, int64_t now_ms)
{
    if (!r || !r->auth_limit || !address || !*address)
        return;
    pthread_mutex_lock(&r->lock);
    address_slot *s = slot_of(r, address, now_ms, 1);
    if (now_ms - s->window_start >= MINUTE_MS) {
        s->window_start = now_ms;
        s->failures = 0;
    }
    s->failures++;
    pthread_mutex_unlock(&r->lock);
}
