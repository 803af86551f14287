#include "shoal/state.h"

#include <math.h>
#include <sqlite3.h>
#include <string.h>
#include <zlib.h>

#include "shoal/alloc.h"
#include "shoal/sqlite_util.h"

/* Bump when the schema changes; migrations go in migrate().
 * 1: the first.
 * 2: round.started_ms and round.ended_ms are Unix time in ms (NULL when
 *    unknown); schema 1 mixed them with the server's monotonic clock.
 * 3: dp_round.clip, unclipped_fraction and next_clip (adaptive clipping:
 *    the clip a restart resumes with). */
#define SCHEMA_VERSION 3
/* "SHOL" in the database header's application_id: tells a Shoal state
 * database from any other SQLite file. */
#define APPLICATION_ID 0x53484f4c

struct shoal_state {
    sqlite3 *db;
    char *path;
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS population ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  model TEXT NOT NULL,"
    "  param_count INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS round ("
    "  population INTEGER NOT NULL REFERENCES population(id),"
    "  number INTEGER NOT NULL,"
    "  task INTEGER NOT NULL,"
    "  status TEXT NOT NULL," /* running, committed, abandoned, evaluated, interrupted */
    "  started_ms INTEGER, ended_ms INTEGER,"
    "  selected INTEGER, reported INTEGER, dropped INTEGER, late INTEGER,"
    "  examples INTEGER, loss REAL, accuracy REAL,"
    "  PRIMARY KEY (population, number));"
    "CREATE TABLE IF NOT EXISTS checkpoint ("
    "  population INTEGER NOT NULL REFERENCES population(id),"
    "  version INTEGER NOT NULL,"
    "  round INTEGER NOT NULL,"
    "  committed_ms INTEGER NOT NULL,"
    "  params BLOB NOT NULL, params_crc INTEGER NOT NULL,"
    "  server_state BLOB NOT NULL, state_crc INTEGER NOT NULL,"
    "  server_steps INTEGER NOT NULL,"
    "  PRIMARY KEY (population, version));";

/* Differential privacy (issue 16): the accountant committed with each DP
 * round's checkpoint, and the round's epsilon. A table of its own, created
 * when missing: databases written before it need no other change, and
 * older servers ignore it. */
static const char dp_schema[] =
    "CREATE TABLE IF NOT EXISTS dp_round ("
    "  population INTEGER NOT NULL REFERENCES population(id),"
    "  number INTEGER NOT NULL,"  /* round.number */
    "  version INTEGER NOT NULL," /* the checkpoint committed with it */
    "  steps INTEGER NOT NULL, epsilon REAL NOT NULL, delta REAL NOT NULL,"
    "  accountant BLOB NOT NULL, accountant_crc INTEGER NOT NULL,"
    "  clip REAL, unclipped_fraction REAL, next_clip REAL," /* schema 3 */
    "  PRIMARY KEY (population, number));";

/* Schema 3: the clip columns, on a dp_round made before them (one made
 * by dp_schema in this very transaction has them already). */
static const char migrate_dp_clip[] = "ALTER TABLE dp_round ADD COLUMN clip REAL;"
                                      "ALTER TABLE dp_round ADD COLUMN unclipped_fraction REAL;"
                                      "ALTER TABLE dp_round ADD COLUMN next_clip REAL;";

static shoal_err db_error(shoal_state *st, shoal_errinfo *ei, const char *doing)
{
    int code = sqlite3_errcode(st->db);
    shoal_err err = code == SQLITE_NOMEM                              ? SHOAL_ENOMEM
                    : code == SQLITE_CORRUPT || code == SQLITE_NOTADB ? SHOAL_EFORMAT
                                                                      : SHOAL_EIO;
    return shoal_errinfo_set(ei, err, "%s: %s: %s%s", st->path, doing, sqlite3_errmsg(st->db),
                             err == SHOAL_EFORMAT
                                 ? " (the file is damaged or not a Shoal state database: "
                                   "restore it from a backup, or move it away to start afresh)"
                                 : "");
}

static shoal_err exec(shoal_state *st, const char *sql, shoal_errinfo *ei, const char *doing)
{
    if (sqlite3_exec(st->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_error(st, ei, doing);
    return SHOAL_OK;
}

/* Schema 1 wrote round times from two clocks: Unix ms from the round's
 * start record, the monotonic clock (ms since boot) from the engine's
 * statistics. A value below UNIX_MS_MIN (2001-09-09) cannot be Unix ms.
 * The one anchor that ties a monotonic value to the wall clock is the
 * checkpoint committed for the same round: its committed_ms (Unix) was
 * taken at the round's end, so the round's monotonic ended_ms maps to it
 * and its monotonic started_ms moves by the same offset. A value with no
 * such anchor (abandoned and evaluation rounds, pruned checkpoints) would
 * only mislead: it becomes NULL. Unix values stay as they are. */
#define UNIX_MS_MIN "1000000000000"
static const char migrate_round_clocks[] =
    "WITH anchor AS (SELECT population, round, max(committed_ms) AS committed_ms FROM "
    "checkpoint WHERE committed_ms >= " UNIX_MS_MIN " GROUP BY population, round) "
    "UPDATE round SET "
    "started_ms = CASE "
    "  WHEN started_ms >= " UNIX_MS_MIN " THEN started_ms "
    "  WHEN started_ms > 0 AND ended_ms > 0 AND ended_ms < " UNIX_MS_MIN " THEN "
    "    (SELECT a.committed_ms FROM anchor a WHERE a.population = round.population AND "
    "     a.round = round.number) - ended_ms + started_ms "
    "  ELSE NULL END, "
    "ended_ms = CASE "
    "  WHEN ended_ms >= " UNIX_MS_MIN " THEN ended_ms "
    "  WHEN ended_ms > 0 THEN (SELECT a.committed_ms FROM anchor a WHERE "
    "    a.population = round.population AND a.round = round.number) "
    "  ELSE NULL END "
    "WHERE (started_ms IS NOT NULL AND started_ms < " UNIX_MS_MIN ") OR "
    "(ended_ms IS NOT NULL AND ended_ms < " UNIX_MS_MIN ")";

/* Brings a file of schema `from` (>= 1) to SCHEMA_VERSION, inside the
 * schema transaction. */
static shoal_err column_exists(shoal_state *st, const char *table, const char *column, int *exists,
                               shoal_errinfo *ei);

static shoal_err migrate(shoal_state *st, int from, shoal_errinfo *ei)
{
    shoal_err err = SHOAL_OK;
    if (from < 2 &&
        (err = exec(st, migrate_round_clocks, ei, "cannot migrate round times to Unix ms")))
        return err;
    int has_clip = 0;
    if (from < 3 && !(err = column_exists(st, "dp_round", "clip", &has_clip, ei)) && !has_clip)
        err = exec(st, migrate_dp_clip, ei, "cannot add the clip to the privacy table");
    return err;
}

void shoal_state_close(shoal_state *st)
{
    if (!st)
        return;
    sqlite3_close_v2(st->db);
    shoal_free(st->path);
    shoal_free(st);
}

static const shoal_sqlite_owner state_owner = {
    .application_id = APPLICATION_ID,
    .schema_version = SCHEMA_VERSION,
    .kind = "a Shoal server state",
    .schema = "state schema",
    .if_foreign = "choose another state path",
    .if_newer = "upgrade shoal-server",
};

shoal_err shoal_state_open(const char *path, shoal_state **out, shoal_errinfo *ei)
{
    if (!path || !out)
        return SHOAL_EINVAL;
    *out = NULL;
    shoal_state *st = shoal_calloc(1, sizeof *st);
    if (!st || !(st->path = shoal_strdup(path))) {
        shoal_free(st);
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory", path);
    }
    shoal_err err;
    if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        err = shoal_errinfo_set(ei, SHOAL_EIO, "%s: cannot open the state database: %s", path,
                                st->db ? sqlite3_errmsg(st->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(st->db, 5000);
    shoal_sqlite_header h;
    if (shoal_sqlite_header_read(st->db, &h)) {
        err = db_error(st, ei, "cannot read the database");
        goto fail;
    }
    const int64_t version = h.user_version;
    if ((err = shoal_sqlite_check_owner(&h, &state_owner, path, ei)))
        goto fail;
    if ((err = exec(st, "PRAGMA journal_mode=WAL", ei, "cannot enable WAL")) ||
        (err = exec(st, "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON", ei,
                    "cannot configure the database")) ||
        (err = exec(st, "BEGIN IMMEDIATE", ei, "cannot start the schema transaction")))
        goto fail;
    if ((err = exec(st, schema, ei, "cannot create the schema")) ||
        (err = exec(st, dp_schema, ei, "cannot create the privacy table")) ||
        (h.tables > 0 && version >= 1 && (err = migrate(st, (int)version, ei)))) {
        shoal_sqlite_rollback(st->db);
        goto fail;
    }
    if (shoal_sqlite_stamp(st->db, APPLICATION_ID, SCHEMA_VERSION))
        err = db_error(st, ei, "cannot stamp the schema");
    if (err || (err = exec(st, "COMMIT", ei, "cannot commit the schema"))) {
        shoal_sqlite_rollback(st->db);
        goto fail;
    }
    *out = st;
    return SHOAL_OK;
fail:
    shoal_state_close(st);
    return err;
}

/* ---- statements -------------------------------------------------------------- */

static shoal_err prepare(shoal_state *st, const char *sql, sqlite3_stmt **s, shoal_errinfo *ei)
{
    if (sqlite3_prepare_v2(st->db, sql, -1, s, NULL) != SQLITE_OK)
        return db_error(st, ei, "cannot prepare a statement");
    return SHOAL_OK;
}

/* Steps a statement that returns no rows and finalizes it. */
static shoal_err run(shoal_state *st, sqlite3_stmt *s, shoal_errinfo *ei, const char *doing)
{
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? SHOAL_OK : db_error(st, ei, doing);
}

/* Steps to a statement's first row: SHOAL_OK with the statement on that
 * row (the caller finalizes it); else finalized, SHOAL_ENOTFOUND when
 * there is none or the error. */
static shoal_err first_row(shoal_state *st, sqlite3_stmt *s, shoal_errinfo *ei, const char *doing)
{
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW)
        return SHOAL_OK;
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? SHOAL_ENOTFOUND : db_error(st, ei, doing);
}

/* The one integer that `sql` selects for population `pop`. */
static shoal_err query_int(shoal_state *st, const char *sql, int64_t pop, int64_t *value,
                           shoal_errinfo *ei, const char *doing)
{
    sqlite3_stmt *s;
    shoal_err err = prepare(st, sql, &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, pop);
    if ((err = first_row(st, s, ei, doing)))
        return err == SHOAL_ENOTFOUND ? db_error(st, ei, doing) : err;
    *value = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return SHOAL_OK;
}

shoal_err shoal_state_population(shoal_state *st, const char *name, const char *model,
                                 uint64_t param_count, int64_t *id, shoal_errinfo *ei)
{
    if (!st || !name || !*name || !model || !id)
        return SHOAL_EINVAL;
    sqlite3_stmt *s;
    shoal_err err =
        prepare(st, "SELECT id, model, param_count FROM population WHERE name = ?", &s, ei);
    if (err)
        return err;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const char *have = (const char *)sqlite3_column_text(s, 1);
        uint64_t have_count = (uint64_t)sqlite3_column_int64(s, 2);
        *id = sqlite3_column_int64(s, 0);
        if (strcmp(have ? have : "", model) != 0 || have_count != param_count)
            err =
                shoal_errinfo_set(ei, SHOAL_EINVAL,
                                  "%s: population \"%s\" was created for model \"%s\" (%llu "
                                  "parameters), not \"%s\" (%llu): give the new model a new "
                                  "population name",
                                  st->path, name, have ? have : "", (unsigned long long)have_count,
                                  model, (unsigned long long)param_count);
        sqlite3_finalize(s);
        return err;
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE)
        return db_error(st, ei, "cannot read populations");
    if ((err = prepare(st, "INSERT INTO population (name, model, param_count) VALUES (?, ?, ?)", &s,
                       ei)))
        return err;
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)param_count);
    if ((err = run(st, s, ei, "cannot create the population")))
        return err;
    *id = sqlite3_last_insert_rowid(st->db);
    return SHOAL_OK;
}

/* Floats to a little-endian byte string, whatever the host order. */
static void *to_le(const float *v, size_t n)
{
    unsigned char *b = shoal_mallocarray(n ? n : 1, 4);
    if (!b)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &v[i], 4);
        b[4 * i] = (unsigned char)u;
        b[4 * i + 1] = (unsigned char)(u >> 8);
        b[4 * i + 2] = (unsigned char)(u >> 16);
        b[4 * i + 3] = (unsigned char)(u >> 24);
    }
    return b;
}

static float *from_le(const unsigned char *b, size_t n)
{
    float *v = shoal_mallocarray(n ? n : 1, sizeof *v);
    if (!v)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
                     (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
        memcpy(&v[i], &u, 4);
    }
    return v;
}

static uint32_t crc(const void *b, size_t len)
{
    uLong c = crc32(0L, Z_NULL, 0);
    const unsigned char *p = b;
    while (len) {
        uInt chunk = len > 1u << 30 ? 1u << 30 : (uInt)len;
        c = crc32(c, p, chunk);
        p += chunk;
        len -= chunk;
    }
    return (uint32_t)c;
}

static shoal_err finish_round(shoal_state *st, int64_t pop, const shoal_round_record *r,
                              const char *status, shoal_errinfo *ei)
{
    sqlite3_stmt *s;
    shoal_err err = prepare(
        st,
        "INSERT INTO round (population, number, task, status, started_ms, ended_ms, selected, "
        "reported, dropped, late, examples, loss, accuracy) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT (population, number) DO UPDATE SET status = excluded.status, "
        "started_ms = coalesce(round.started_ms, excluded.started_ms), "
        "ended_ms = excluded.ended_ms, selected = excluded.selected, "
        "reported = excluded.reported, dropped = excluded.dropped, late = excluded.late, "
        "examples = excluded.examples, loss = excluded.loss, accuracy = excluded.accuracy",
        &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, pop);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)r->round);
    sqlite3_bind_int(s, 3, r->task);
    sqlite3_bind_text(s, 4, status, -1, SQLITE_STATIC);
    /* 0: not known (yet) */
    if (r->started_ms > 0)
        sqlite3_bind_int64(s, 5, r->started_ms);
    else
        sqlite3_bind_null(s, 5);
    if (r->ended_ms > 0)
        sqlite3_bind_int64(s, 6, r->ended_ms);
    else
        sqlite3_bind_null(s, 6);
    sqlite3_bind_int(s, 7, (int)r->selected);
    sqlite3_bind_int(s, 8, (int)r->reported);
    sqlite3_bind_int(s, 9, (int)r->dropped);
    sqlite3_bind_int(s, 10, (int)r->late);
    sqlite3_bind_int64(s, 11, (sqlite3_int64)r->examples);
    if (isnan(r->loss))
        sqlite3_bind_null(s, 12);
    else
        sqlite3_bind_double(s, 12, r->loss);
    if (isnan(r->accuracy))
        sqlite3_bind_null(s, 13);
    else
        sqlite3_bind_double(s, 13, r->accuracy);
    return run(st, s, ei, "cannot record the round");
}

shoal_err shoal_state_round_started(shoal_state *st, int64_t pop, uint64_t round, int task,
                                    int64_t started_ms, shoal_errinfo *ei)
{
    if (!st)
        return SHOAL_EINVAL;
    shoal_round_record r = {
        .round = round, .task = task, .started_ms = started_ms, .loss = NAN, .accuracy = NAN};
    return finish_round(st, pop, &r, "running", ei);
}

shoal_err shoal_state_round_finished(shoal_state *st, int64_t pop, const shoal_round_record *rec,
                                     const char *status, shoal_errinfo *ei)
{
    if (!st || !rec || !status)
        return SHOAL_EINVAL;
    return finish_round(st, pop, rec, status, ei);
}

static shoal_err insert_dp(shoal_state *st, int64_t pop, const shoal_checkpoint *cp,
                           const shoal_round_record *rec, const shoal_dp_record *dp,
                           shoal_errinfo *ei);

shoal_err shoal_state_commit(shoal_state *st, int64_t pop, const shoal_checkpoint *cp,
                             const shoal_round_record *rec, shoal_errinfo *ei)
{
    return shoal_state_commit_dp(st, pop, cp, rec, NULL, ei);
}

shoal_err shoal_state_commit_dp(shoal_state *st, int64_t pop, const shoal_checkpoint *cp,
                                const shoal_round_record *rec, const shoal_dp_record *dp,
                                shoal_errinfo *ei)
{
    if (!st || !cp || !rec || !cp->params || (cp->state_count && !cp->server_state))
        return SHOAL_EINVAL;
    unsigned char *pb = to_le(cp->params, cp->param_count);
    unsigned char *sb = to_le(cp->server_state, cp->state_count);
    shoal_err err = SHOAL_OK;
    sqlite3_stmt *s = NULL;
    if (!pb || !sb) {
        err = shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory for a checkpoint", st->path);
        goto out;
    }
    if ((err = exec(st, "BEGIN IMMEDIATE", ei, "cannot start the commit")))
        goto out;
    int64_t latest = -1;
    const char *latest_sql =
        "SELECT coalesce(max(version), -1) FROM checkpoint WHERE population = ?";
    if ((err = query_int(st, latest_sql, pop, &latest, ei, "cannot read checkpoints")))
        goto rollback;
    if ((int64_t)cp->version <= latest) {
        err = shoal_errinfo_set(ei, SHOAL_ESTATE,
                                "%s: checkpoint version %llu is not newer than the stored %lld",
                                st->path, (unsigned long long)cp->version, (long long)latest);
        goto rollback;
    }
    if ((err = prepare(st,
                       "INSERT INTO checkpoint (population, version, round, committed_ms, params, "
                       "params_crc, server_state, state_crc, server_steps) VALUES "
                       "(?,?,?,?,?,?,?,?,?)",
                       &s, ei)))
        goto rollback;
    size_t pbytes = cp->param_count * 4, sbytes = cp->state_count * 4;
    sqlite3_bind_int64(s, 1, pop);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)cp->version);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)cp->round);
    sqlite3_bind_int64(s, 4, cp->committed_ms);
    sqlite3_bind_blob64(s, 5, pb, pbytes, SQLITE_STATIC);
    sqlite3_bind_int64(s, 6, crc(pb, pbytes));
    sqlite3_bind_blob64(s, 7, sb, sbytes, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, crc(sb, sbytes));
    sqlite3_bind_int64(s, 9, (sqlite3_int64)cp->server_steps);
    if ((err = run(st, s, ei, "cannot store the checkpoint")) ||
        (err = finish_round(st, pop, rec, "committed", ei)))
        goto rollback;
    if (dp && (err = insert_dp(st, pop, cp, rec, dp, ei)))
        goto rollback;
    if ((err = exec(st, "COMMIT", ei, "cannot commit the checkpoint")))
        goto rollback;
    goto out;
rollback:
    shoal_sqlite_rollback(st->db);
out:
    shoal_free(pb);
    shoal_free(sb);
    return err;
}

void shoal_checkpoint_fini(shoal_checkpoint *cp)
{
    if (!cp)
        return;
    shoal_free(cp->params);
    shoal_free(cp->server_state);
    cp->params = cp->server_state = NULL;
}

shoal_err shoal_state_latest(shoal_state *st, int64_t pop, shoal_checkpoint *cp, shoal_errinfo *ei)
{
    if (!st || !cp)
        return SHOAL_EINVAL;
    memset(cp, 0, sizeof *cp);
    sqlite3_stmt *s;
    shoal_err err = prepare(st,
                            "SELECT version, round, committed_ms, params, params_crc, "
                            "server_state, state_crc, server_steps FROM checkpoint WHERE "
                            "population = ? ORDER BY version DESC LIMIT 1",
                            &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, pop);
    if ((err = first_row(st, s, ei, "cannot read the latest checkpoint")))
        return err;
    cp->version = (uint64_t)sqlite3_column_int64(s, 0);
    cp->round = (uint64_t)sqlite3_column_int64(s, 1);
    cp->committed_ms = sqlite3_column_int64(s, 2);
    const void *pb = sqlite3_column_blob(s, 3);
    size_t pbytes = (size_t)sqlite3_column_bytes(s, 3);
    uint32_t pcrc = (uint32_t)sqlite3_column_int64(s, 4);
    const void *sb = sqlite3_column_blob(s, 5);
    size_t sbytes = (size_t)sqlite3_column_bytes(s, 5);
    uint32_t scrc = (uint32_t)sqlite3_column_int64(s, 6);
    cp->server_steps = (uint64_t)sqlite3_column_int64(s, 7);
    if (pbytes % 4 || sbytes % 4 || pbytes == 0 || crc(pb, pbytes) != pcrc ||
        (sbytes && crc(sb, sbytes) != scrc)) {
        err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                "%s: checkpoint version %llu is damaged (checksum mismatch): "
                                "restore the database from a backup",
                                st->path, (unsigned long long)cp->version);
        goto fail;
    }
    cp->param_count = pbytes / 4;
    cp->state_count = sbytes / 4;
    cp->params = from_le(pb, cp->param_count);
    cp->server_state = from_le(sb, cp->state_count);
    if (!cp->params || !cp->server_state) {
        err =
            shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory loading a checkpoint", st->path);
        goto fail;
    }
    sqlite3_finalize(s);
    return SHOAL_OK;
fail:
    sqlite3_finalize(s);
    shoal_checkpoint_fini(cp);
    return err;
}

shoal_err shoal_state_close_running(shoal_state *st, int64_t pop, const char *status,
                                    int64_t ended_ms, uint64_t *closed, shoal_errinfo *ei)
{
    if (!st || !status || !closed)
        return SHOAL_EINVAL;
    sqlite3_stmt *s;
    shoal_err err = prepare(st,
                            "UPDATE round SET status = ?2, ended_ms = coalesce(?3, ended_ms) "
                            "WHERE population = ?1 AND status = 'running'",
                            &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, pop);
    sqlite3_bind_text(s, 2, status, -1, SQLITE_STATIC);
    if (ended_ms > 0)
        sqlite3_bind_int64(s, 3, ended_ms);
    else
        sqlite3_bind_null(s, 3);
    if ((err = run(st, s, ei, "cannot close the running rounds")))
        return err;
    *closed = (uint64_t)sqlite3_changes(st->db);
    return SHOAL_OK;
}

shoal_err shoal_state_recover(shoal_state *st, int64_t pop, uint64_t *interrupted,
                              shoal_errinfo *ei)
{
    return shoal_state_close_running(st, pop, "interrupted", 0, interrupted, ei);
}

shoal_err shoal_state_last_round(shoal_state *st, int64_t pop, uint64_t *round, shoal_errinfo *ei)
{
    if (!st || !round)
        return SHOAL_EINVAL;
    int64_t last = 0;
    shoal_err err = query_int(st, "SELECT coalesce(max(number), 0) FROM round WHERE population = ?",
                              pop, &last, ei, "cannot read rounds");
    if (!err)
        *round = (uint64_t)last;
    return err;
}

shoal_err shoal_state_prune(shoal_state *st, int64_t pop, unsigned keep, shoal_errinfo *ei)
{
    if (!st || keep == 0)
        return SHOAL_EINVAL;
    sqlite3_stmt *s;
    shoal_err err = prepare(st,
                            "DELETE FROM checkpoint WHERE population = ?1 AND version NOT IN "
                            "(SELECT version FROM checkpoint WHERE population = ?1 ORDER BY "
                            "version DESC LIMIT ?2)",
                            &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, pop);
    sqlite3_bind_int(s, 2, (int)keep);
    return run(st, s, ei, "cannot prune checkpoints");
}

/* ---- differential privacy ------------------------------------------------------ */

static shoal_err column_exists(shoal_state *st, const char *table, const char *column, int *exists,
                               shoal_errinfo *ei)
{
    sqlite3_stmt *s;
    shoal_err err =
        prepare(st, "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2", &s, ei);
    if (err)
        return err;
    sqlite3_bind_text(s, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, column, -1, SQLITE_STATIC);
    if ((err = first_row(st, s, ei, "cannot read the schema")))
        return err == SHOAL_ENOTFOUND ? db_error(st, ei, "cannot read the schema") : err;
    *exists = sqlite3_column_int(s, 0) > 0;
    sqlite3_finalize(s);
    return SHOAL_OK;
}

/* A positive double, or NULL. */
static void bind_positive(sqlite3_stmt *s, int i, double v)
{
    if (v > 0 && isfinite(v))
        sqlite3_bind_double(s, i, v);
    else
        sqlite3_bind_null(s, i);
}

static shoal_err insert_dp(shoal_state *st, int64_t pop, const shoal_checkpoint *cp,
                           const shoal_round_record *rec, const shoal_dp_record *dp,
                           shoal_errinfo *ei)
{
    if (!dp->accountant || !dp->accountant_len)
        return SHOAL_EINVAL;
    sqlite3_stmt *s;
    shoal_err err = prepare(st,
                            "INSERT OR REPLACE INTO dp_round (population, number, version, steps, "
                            "epsilon, delta, accountant, accountant_crc, clip, unclipped_fraction, "
                            "next_clip) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                            &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, pop);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)rec->round);
    sqlite3_bind_int64(s, 3, (sqlite3_int64)cp->version);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)dp->steps);
    sqlite3_bind_double(s, 5, dp->epsilon);
    sqlite3_bind_double(s, 6, dp->delta);
    sqlite3_bind_blob64(s, 7, dp->accountant, dp->accountant_len, SQLITE_STATIC);
    sqlite3_bind_int64(s, 8, crc(dp->accountant, dp->accountant_len));
    bind_positive(s, 9, dp->clip);
    const int adaptive = dp->next_clip > 0 && isfinite(dp->next_clip);
    if (adaptive && isfinite(dp->unclipped_fraction))
        sqlite3_bind_double(s, 10, dp->unclipped_fraction);
    else
        sqlite3_bind_null(s, 10);
    bind_positive(s, 11, dp->next_clip);
    return run(st, s, ei, "cannot store the privacy accountant");
}

shoal_err shoal_state_dp_load(shoal_state *st, int64_t pop, uint64_t version, uint8_t *accountant,
                              size_t cap, shoal_dp_record *dp, shoal_errinfo *ei)
{
    if (!st || !accountant || !dp)
        return SHOAL_EINVAL;
    memset(dp, 0, sizeof *dp);
    sqlite3_stmt *s;
    shoal_err err = prepare(st,
                            "SELECT steps, epsilon, delta, accountant, accountant_crc, clip, "
                            "unclipped_fraction, next_clip FROM dp_round WHERE population = ? "
                            "AND version = ?",
                            &s, ei);
    if (err)
        return err;
    sqlite3_bind_int64(s, 1, pop);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)version);
    if ((err = first_row(st, s, ei, "cannot read the privacy accountant")))
        return err;
    const void *blob = sqlite3_column_blob(s, 3);
    size_t len = (size_t)sqlite3_column_bytes(s, 3);
    if (!blob || len == 0 || len > cap || crc(blob, len) != (uint32_t)sqlite3_column_int64(s, 4)) {
        err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                "%s: the privacy accountant of checkpoint version %llu is damaged "
                                "(checksum or size): restore the database from a backup",
                                st->path, (unsigned long long)version);
    } else {
        memcpy(accountant, blob, len);
        dp->accountant = accountant;
        dp->accountant_len = len;
        dp->steps = (uint64_t)sqlite3_column_int64(s, 0);
        dp->epsilon = sqlite3_column_double(s, 1);
        dp->delta = sqlite3_column_double(s, 2);
        /* NULL reads as 0: no clip recorded (a round before schema 3), no
         * adaptive clipping. */
        dp->clip = sqlite3_column_double(s, 5);
        dp->unclipped_fraction =
            sqlite3_column_type(s, 6) == SQLITE_NULL ? NAN : sqlite3_column_double(s, 6);
        dp->next_clip = sqlite3_column_double(s, 7);
    }
    sqlite3_finalize(s);
    return err;
}
