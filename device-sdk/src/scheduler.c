/* Several populations on one device, one session at a time (see
 * shoal/scheduler.h). Each population keeps its own client, so each keeps
 * its own model and checkpoint id across sessions; the scheduler only
 * chooses whose turn it is. */
#include <string.h>

#include "client_int.h"
#include "shoal/alloc.h"
#include "shoal/scheduler.h"

struct shoal_scheduler {
    const shoal_port *port;
    size_t count;
    shoal_client **clients;
    int64_t *next_unix_ms; /* chosen by the last session, in memory */
    uint64_t *last_run;    /* sequence number of the last session; 0: never */
    uint64_t runs;
    int running;
};

void shoal_scheduler_free(shoal_scheduler *s)
{
    if (!s)
        return;
    for (size_t i = 0; s->clients && i < s->count; i++)
        shoal_client_free(s->clients[i]);
    shoal_free(s->clients);
    shoal_free(s->next_unix_ms);
    shoal_free(s->last_run);
    shoal_free(s);
}

shoal_err shoal_scheduler_new(const shoal_client_config *configs, size_t count,
                              const shoal_port *port, shoal_scheduler **out, shoal_errinfo *ei)
{
    if (!out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "shoal_scheduler_new: out is NULL");
    *out = NULL;
    if (!configs || !port || count == 0)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "shoal_scheduler_new: configs, port and a count >= 1 are needed");
    for (size_t i = 0; i < count; i++)
        for (size_t j = 0; j < i; j++)
            if (configs[i].population && configs[j].population &&
                strcmp(configs[i].population, configs[j].population) == 0)
                return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                         "configs[%zu] and configs[%zu] both name population "
                                         "\"%s\"; give each population one config",
                                         j, i, configs[i].population);
    shoal_scheduler *s = shoal_calloc(1, sizeof *s);
    if (!s)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "no memory for the scheduler");
    s->port = port;
    s->count = count;
    s->clients = shoal_calloc(count, sizeof *s->clients);
    s->next_unix_ms = shoal_calloc(count, sizeof *s->next_unix_ms);
    s->last_run = shoal_calloc(count, sizeof *s->last_run);
    if (!s->clients || !s->next_unix_ms || !s->last_run) {
        shoal_scheduler_free(s);
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "no memory for the scheduler");
    }
    for (size_t i = 0; i < count; i++) {
        shoal_errinfo cei = {{0}};
        shoal_err err = shoal_client_new(&configs[i], port, &s->clients[i], &cei);
        if (err) {
            shoal_scheduler_free(s);
            return shoal_errinfo_set(ei, err, "configs[%zu]: %s", i, cei.msg);
        }
    }
    *out = s;
    return SHOAL_OK;
}

/* The population's next allowed check-in: the in-memory time, and with a
 * state database the persisted window and contribution period (the same
 * holds shoal_client_run would apply, read here so a held population is
 * not picked). An unreadable database adds nothing: the client logs it
 * and the server's own admission still applies. */
static int64_t due_at(shoal_scheduler *s, size_t i)
{
    shoal_client *c = s->clients[i];
    int64_t due = s->next_unix_ms[i];
    if (c->db.db) {
        int64_t next = 0, last = 0;
        shoal_errinfo ei = {{0}};
        if (shoal_devc_db_population(&c->db, c->population, &next, &last, &ei) == SHOAL_OK) {
            if (next > due)
                due = next;
            uint64_t period = c->cfg.min_contribution_period_ms;
            if (period && last && period < (uint64_t)INT64_MAX / 4 && last + (int64_t)period > due)
                due = last + (int64_t)period;
        }
    }
    return due;
}

static size_t pick(shoal_scheduler *s, int64_t *due_out)
{
    size_t best = 0;
    int64_t best_due = due_at(s, 0);
    for (size_t i = 1; i < s->count; i++) {
        int64_t due = due_at(s, i);
        if (due < best_due || (due == best_due && s->last_run[i] < s->last_run[best])) {
            best = i;
            best_due = due;
        }
    }
    *due_out = best_due;
    return best;
}

shoal_err shoal_scheduler_next_due(shoal_scheduler *s, int64_t *unix_ms, size_t *index)
{
    if (!s || !unix_ms || !index)
        return SHOAL_EINVAL;
    *index = pick(s, unix_ms);
    return SHOAL_OK;
}

shoal_err shoal_scheduler_run_next(shoal_scheduler *s, shoal_scheduler_result *out)
{
    if (!s || !out)
        return SHOAL_EINVAL;
    if (s->running)
        return SHOAL_ESTATE;
    memset(out, 0, sizeof *out);
    int64_t due = 0;
    size_t i = pick(s, &due);
    if (due > s->port->wall_ms(s->port->ctx)) {
        out->next_due_unix_ms = due;
        out->next_index = i;
        return SHOAL_EAGAIN;
    }
    s->running = 1;
    shoal_err err = shoal_client_run(s->clients[i], &out->session);
    s->running = 0;
    if (err)
        return err;
    s->last_run[i] = ++s->runs;
    /* Every outcome carries the next check-in: the server's window, the
     * fallback window, or the hold's end. */
    s->next_unix_ms[i] = out->session.next_checkin_unix_ms;
    out->ran = 1;
    out->index = i;
    out->population = s->clients[i]->population;
    out->next_index = pick(s, &out->next_due_unix_ms);
    return SHOAL_OK;
}

shoal_client *shoal_scheduler_client(shoal_scheduler *s, size_t index)
{
    return s && index < s->count ? s->clients[index] : NULL;
}
