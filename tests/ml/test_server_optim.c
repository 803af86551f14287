/* Server optimizers (shoal_server_optim_*): known-answer vectors from
 * tests/vectors/server_optim.exp, produced by gen_server_optim.py, an
 * independent float64 implementation of Reddi et al. 2021, Algorithm 2. The
 * file format is documented at the top of the .exp file; in short, records
 * `key value...` per line:
 *   vector <name> / kind <k> / lr / momentum / beta1 / beta2 / tau /
 *   x0 <n values> / (delta <n values> / x <n values>) x 3 / end
 * The test also pins the NaN/Inf refusal (params and state untouched), the
 * checkpoint round trip, state sizes and config checks. */
#include <criterion/criterion.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/optim.h"

#define KAT_MAX_VALUES 16
#define KAT_STEPS      3

typedef struct server_kat {
    char name[64];
    shoal_server_optim_config cfg;
    size_t count;
    double x0[KAT_MAX_VALUES];
    double delta[KAT_STEPS][KAT_MAX_VALUES];
    double expected[KAT_STEPS][KAT_MAX_VALUES];
} server_kat;

static char *kat_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s: %s (is SHOAL_VECTORS_DIR set?)", path, strerror(errno));
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long size = ftell(f);
    cr_assert_geq(size, 0);
    rewind(f);
    char *text = malloc((size_t)size + 1);
    cr_assert_not_null(text);
    cr_assert_eq(fread(text, 1, (size_t)size, f), (size_t)size, "short read of %s", path);
    text[size] = 0;
    fclose(f);
    return text;
}

/* Parses the numbers left on a line that strtok_r (state *save) is
 * splitting; returns how many. */
static size_t kat_numbers(const char *path, size_t line, char **save, double *out, size_t cap)
{
    size_t n = 0;
    for (char *tok = strtok_r(NULL, " \t\r", save); tok; tok = strtok_r(NULL, " \t\r", save)) {
        cr_assert_lt(n, cap, "%s:%zu: more than %zu values", path, line, cap);
        char *end;
        errno = 0;
        out[n++] = strtod(tok, &end);
        cr_assert(*end == 0 && errno == 0, "%s:%zu: bad number '%s'", path, line, tok);
    }
    return n;
}

/* Reads every vector of server_optim.exp into *out (malloc'd); returns the
 * number of vectors. Any syntax error fails the test with file:line. */
static size_t kat_load(server_kat **out)
{
    const char *dir = getenv("SHOAL_VECTORS_DIR");
    cr_assert_not_null(dir, "SHOAL_VECTORS_DIR is not set (meson test sets it)");
    char path[4096];
    snprintf(path, sizeof path, "%s/server_optim.exp", dir);
    char *text = kat_slurp(path);

    size_t cap = 8, n = 0;
    server_kat *kats = calloc(cap, sizeof *kats);
    cr_assert_not_null(kats);
    server_kat *cur = NULL;
    size_t steps = 0, xs = 0, line_no = 0;
    char *save = NULL;
    /* Split lines by hand (strtok_r would skip empty ones) so that
     * messages give the right line number; strtok_r splits each line. */
    for (char *line = text, *next; line && *line; line = next) {
        line_no++;
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        while (*line == ' ' || *line == '\t')
            line++;
        if (*line == 0 || *line == '#' || *line == '\r')
            continue;
        char *key = strtok_r(line, " \t\r", &save);
        double values[KAT_MAX_VALUES];
        if (strcmp(key, "vector") == 0) {
            cr_assert_null(cur, "%s:%zu: 'vector' before 'end'", path, line_no);
            if (n == cap) {
                cap *= 2;
                kats = realloc(kats, cap * sizeof *kats);
                cr_assert_not_null(kats);
            }
            cur = &kats[n++];
            memset(cur, 0, sizeof *cur);
            char *name = strtok_r(NULL, " \t\r", &save);
            cr_assert_not_null(name, "%s:%zu: vector without a name", path, line_no);
            snprintf(cur->name, sizeof cur->name, "%s", name);
            steps = xs = 0;
            continue;
        }
        cr_assert_not_null(cur, "%s:%zu: '%s' outside a vector", path, line_no, key);
        if (strcmp(key, "end") == 0) {
            cr_assert(steps == KAT_STEPS && xs == KAT_STEPS,
                      "%s:%zu: vector %s has %zu deltas and %zu results, expected %d", path,
                      line_no, cur->name, steps, xs, KAT_STEPS);
            cur = NULL;
            continue;
        }
        if (strcmp(key, "kind") == 0) {
            char *kind = strtok_r(NULL, " \t\r", &save);
            cr_assert_not_null(kind, "%s:%zu: kind without a name", path, line_no);
            cr_assert_eq(shoal_server_optim_kind_parse(kind, &cur->cfg.kind), SHOAL_OK,
                         "%s:%zu: unknown kind '%s'", path, line_no, kind);
            continue;
        }
        size_t got = kat_numbers(path, line_no, &save, values, KAT_MAX_VALUES);
        if (strcmp(key, "lr") == 0 || strcmp(key, "momentum") == 0 || strcmp(key, "beta1") == 0 ||
            strcmp(key, "beta2") == 0 || strcmp(key, "tau") == 0) {
            cr_assert_eq(got, 1, "%s:%zu: %s takes one value", path, line_no, key);
            float v = (float)values[0];
            cr_assert_eq((double)v, values[0], "%s:%zu: %s is not a float32 value", path, line_no,
                         key);
            if (strcmp(key, "lr") == 0)
                cur->cfg.lr = v;
            else if (strcmp(key, "momentum") == 0)
                cur->cfg.momentum = v;
            else if (strcmp(key, "beta1") == 0)
                cur->cfg.beta1 = v;
            else if (strcmp(key, "beta2") == 0)
                cur->cfg.beta2 = v;
            else
                cur->cfg.tau = v;
        } else if (strcmp(key, "x0") == 0) {
            cr_assert_gt(got, 0, "%s:%zu: empty x0", path, line_no);
            cur->count = got;
            memcpy(cur->x0, values, got * sizeof *values);
        } else if (strcmp(key, "delta") == 0) {
            cr_assert(got == cur->count && steps < KAT_STEPS && steps == xs,
                      "%s:%zu: misplaced delta or %zu values for %zu parameters", path, line_no,
                      got, cur->count);
            memcpy(cur->delta[steps++], values, got * sizeof *values);
        } else if (strcmp(key, "x") == 0) {
            cr_assert(got == cur->count && xs + 1 == steps,
                      "%s:%zu: misplaced x or %zu values for %zu parameters", path, line_no, got,
                      cur->count);
            memcpy(cur->expected[xs++], values, got * sizeof *values);
        } else {
            cr_assert_fail("%s:%zu: unknown key '%s'", path, line_no, key);
        }
    }
    cr_assert_null(cur, "%s: last vector has no 'end'", path);
    free(text);
    *out = kats;
    return n;
}

/* float32 arithmetic against a float64 reference over three steps. */
static int close_enough(double got, double want)
{
    return fabs(got - want) <= 2e-6 + 2e-6 * fabs(want);
}

/* Runs every vector of `kind` and returns how many there were. */
static size_t kat_run_kind(shoal_server_optim_kind kind)
{
    server_kat *kats;
    size_t n = kat_load(&kats), ran = 0;
    for (size_t k = 0; k < n; k++) {
        const server_kat *kat = &kats[k];
        if (kat->cfg.kind != kind)
            continue;
        ran++;
        shoal_errinfo ei = {{0}};
        cr_assert_eq(shoal_server_optim_config_check(&kat->cfg, &ei), SHOAL_OK, "%s: %s", kat->name,
                     ei.msg);
        shoal_server_optim *opt;
        cr_assert_eq(shoal_server_optim_new(&kat->cfg, kat->count, &opt), SHOAL_OK);
        float x[KAT_MAX_VALUES], delta[KAT_MAX_VALUES];
        for (size_t i = 0; i < kat->count; i++)
            x[i] = (float)kat->x0[i];
        for (int s = 0; s < KAT_STEPS; s++) {
            for (size_t i = 0; i < kat->count; i++)
                delta[i] = (float)kat->delta[s][i];
            cr_assert_eq(shoal_server_optim_apply(opt, x, delta), SHOAL_OK);
            for (size_t i = 0; i < kat->count; i++)
                cr_expect(close_enough(x[i], kat->expected[s][i]),
                          "%s: step %d, x[%zu] = %.9g, expected %.9g", kat->name, s + 1, i,
                          (double)x[i], kat->expected[s][i]);
        }
        uint64_t steps = 0;
        shoal_server_optim_state_get(opt, NULL, &steps);
        cr_expect_eq(steps, KAT_STEPS, "%s: %llu steps counted", kat->name,
                     (unsigned long long)steps);
        shoal_server_optim_free(opt);
    }
    free(kats);
    return ran;
}

Test(ml_server_optim, vector_file_covers_every_kind)
{
    server_kat *kats;
    size_t n = kat_load(&kats);
    int seen[SHOAL_SERVER_FEDYOGI + 1] = {0};
    for (size_t k = 0; k < n; k++) {
        cr_assert_leq((unsigned)kats[k].cfg.kind, (unsigned)SHOAL_SERVER_FEDYOGI);
        seen[kats[k].cfg.kind]++;
    }
    for (int kind = 0; kind <= SHOAL_SERVER_FEDYOGI; kind++)
        cr_expect_geq(seen[kind], 2, "only %d vectors for %s", seen[kind],
                      shoal_server_optim_kind_name((shoal_server_optim_kind)kind));
    free(kats);
}

Test(ml_server_optim, fedavg_matches_known_answers)
{
    cr_assert_gt(kat_run_kind(SHOAL_SERVER_FEDAVG), 0);
}

Test(ml_server_optim, fedavgm_matches_known_answers)
{
    cr_assert_gt(kat_run_kind(SHOAL_SERVER_FEDAVGM), 0);
}

Test(ml_server_optim, fedadagrad_matches_known_answers)
{
    cr_assert_gt(kat_run_kind(SHOAL_SERVER_FEDADAGRAD), 0);
}

Test(ml_server_optim, fedadam_matches_known_answers)
{
    cr_assert_gt(kat_run_kind(SHOAL_SERVER_FEDADAM), 0);
}

Test(ml_server_optim, fedyogi_matches_known_answers)
{
    cr_assert_gt(kat_run_kind(SHOAL_SERVER_FEDYOGI), 0);
}

/* ---- NaN/Inf refusal, checkpoints, state ---------------------------------- */

#define N_PARAMS 4
static const shoal_server_optim_kind all_kinds[] = {
    SHOAL_SERVER_FEDAVG,  SHOAL_SERVER_FEDAVGM, SHOAL_SERVER_FEDADAGRAD,
    SHOAL_SERVER_FEDADAM, SHOAL_SERVER_FEDYOGI,
};
#define KIND_COUNT (sizeof all_kinds / sizeof all_kinds[0])

static const float x_start[N_PARAMS] = {0.5f, -1.25f, 2.0f, 0.0f};
static const float delta1[N_PARAMS] = {0.1f, -0.2f, 0.3f, 0.05f};
static const float delta2[N_PARAMS] = {-0.05f, 0.4f, 0.0f, 1.5f};
static const float delta3[N_PARAMS] = {0.25f, 0.25f, -0.75f, -2.0f};

static shoal_server_optim *new_server(shoal_server_optim_kind kind)
{
    shoal_server_optim_config cfg = shoal_server_optim_defaults(kind);
    cfg.lr = 0.5f; /* big enough that every step moves every parameter */
    shoal_server_optim *opt = NULL;
    cr_assert_eq(shoal_server_optim_new(&cfg, N_PARAMS, &opt), SHOAL_OK);
    cr_assert_not_null(opt);
    return opt;
}

static void apply_ok(shoal_server_optim *opt, float *x, const float *delta)
{
    cr_assert_eq(shoal_server_optim_apply(opt, x, delta), SHOAL_OK);
}

Test(ml_server_optim, nonfinite_delta_leaves_params_and_state_untouched)
{
    const float bad_values[] = {NAN, INFINITY, -INFINITY};
    for (size_t k = 0; k < KIND_COUNT; k++) {
        for (size_t b = 0; b < sizeof bad_values / sizeof bad_values[0]; b++) {
            /* The bad value sits in each position in turn: the last one
             * catches an update loop that stops only when it meets it. */
            for (size_t pos = 0; pos < N_PARAMS; pos++) {
                const char *kind = shoal_server_optim_kind_name(all_kinds[k]);
                shoal_server_optim *opt = new_server(all_kinds[k]);
                float x[N_PARAMS];
                memcpy(x, x_start, sizeof x);
                apply_ok(opt, x, delta1);

                float x_before[N_PARAMS], state_before[2 * N_PARAMS + 1];
                float state_after[2 * N_PARAMS + 1];
                uint64_t steps_before = 99, steps_after = 99;
                size_t state_count = shoal_server_optim_state_count(opt);
                cr_assert_leq(state_count, 2 * N_PARAMS);
                memcpy(x_before, x, sizeof x);
                shoal_server_optim_state_get(opt, state_before, &steps_before);

                float bad[N_PARAMS];
                memcpy(bad, delta2, sizeof bad);
                bad[pos] = bad_values[b];
                cr_assert_eq(shoal_server_optim_apply(opt, x, bad), SHOAL_ENUMERIC,
                             "%s: %g at %zu accepted", kind, (double)bad_values[b], pos);
                cr_assert_arr_eq(x, x_before, sizeof x, "%s: params changed by a refused delta",
                                 kind);
                shoal_server_optim_state_get(opt, state_after, &steps_after);
                cr_assert_eq(steps_after, steps_before, "%s: step count changed", kind);
                cr_assert_arr_eq(state_after, state_before, state_count * sizeof(float),
                                 "%s: state changed by a refused delta", kind);

                /* The next good delta behaves as if the bad one never came. */
                shoal_server_optim *fresh = new_server(all_kinds[k]);
                float y[N_PARAMS];
                memcpy(y, x_start, sizeof y);
                apply_ok(fresh, y, delta1);
                apply_ok(fresh, y, delta2);
                apply_ok(opt, x, delta2);
                cr_assert_arr_eq(x, y, sizeof x, "%s: refused delta leaked into the next step",
                                 kind);
                shoal_server_optim_free(opt);
                shoal_server_optim_free(fresh);
            }
        }
    }
}

Test(ml_server_optim, state_round_trip_reproduces_next_steps)
{
    for (size_t k = 0; k < KIND_COUNT; k++) {
        const char *kind = shoal_server_optim_kind_name(all_kinds[k]);
        shoal_server_optim *a = new_server(all_kinds[k]);
        float xa[N_PARAMS];
        memcpy(xa, x_start, sizeof xa);
        apply_ok(a, xa, delta1);
        apply_ok(a, xa, delta2);

        float state[2 * N_PARAMS + 1];
        uint64_t steps = 0;
        size_t state_count = shoal_server_optim_state_count(a);
        shoal_server_optim_state_get(a, state, &steps);
        cr_assert_eq(steps, 2, "%s", kind);

        /* A new optimizer restored from the checkpoint continues exactly
         * like the original. */
        shoal_server_optim *b = new_server(all_kinds[k]);
        shoal_server_optim_state_set(b, state, steps);
        float xb[N_PARAMS];
        memcpy(xb, xa, sizeof xb);
        apply_ok(a, xa, delta3);
        apply_ok(b, xb, delta3);
        cr_assert_arr_eq(xa, xb, sizeof xa, "%s: restored optimizer took another step", kind);

        float sa[2 * N_PARAMS + 1], sb[2 * N_PARAMS + 1];
        uint64_t steps_a = 0, steps_b = 0;
        shoal_server_optim_state_get(a, sa, &steps_a);
        shoal_server_optim_state_get(b, sb, &steps_b);
        cr_assert_eq(steps_a, 3, "%s", kind);
        cr_assert_eq(steps_b, 3, "%s", kind);
        cr_assert_arr_eq(sa, sb, state_count * sizeof(float), "%s", kind);

        /* Without the restore, the stateful methods would differ: proves
         * the round trip carried something. */
        if (state_count > 0) {
            shoal_server_optim *c = new_server(all_kinds[k]);
            float xc[N_PARAMS];
            memcpy(xc, xb, sizeof xc);
            apply_ok(c, xc, delta3);
            apply_ok(b, xb, delta3);
            cr_assert(memcmp(xb, xc, sizeof xb) != 0, "%s: state made no difference", kind);
            shoal_server_optim_free(c);
        }
        shoal_server_optim_free(a);
        shoal_server_optim_free(b);
    }
}

Test(ml_server_optim, state_count_per_kind)
{
    const size_t n = 7;
    const size_t expected[] = {
        [SHOAL_SERVER_FEDAVG] = 0,         [SHOAL_SERVER_FEDAVGM] = 7,
        [SHOAL_SERVER_FEDADAGRAD] = 2 * 7, [SHOAL_SERVER_FEDADAM] = 2 * 7,
        [SHOAL_SERVER_FEDYOGI] = 2 * 7,
    };
    for (size_t k = 0; k < KIND_COUNT; k++) {
        shoal_server_optim_config cfg = shoal_server_optim_defaults(all_kinds[k]);
        shoal_server_optim *opt;
        cr_assert_eq(shoal_server_optim_new(&cfg, n, &opt), SHOAL_OK);
        cr_expect_eq(shoal_server_optim_state_count(opt), expected[all_kinds[k]], "%s: %zu",
                     shoal_server_optim_kind_name(all_kinds[k]),
                     shoal_server_optim_state_count(opt));
        shoal_server_optim_free(opt);
    }
}

Test(ml_server_optim, fresh_adaptive_state_is_zero_momentum_and_tau_squared)
{
    const shoal_server_optim_kind adaptive[] = {SHOAL_SERVER_FEDADAGRAD, SHOAL_SERVER_FEDADAM,
                                                SHOAL_SERVER_FEDYOGI};
    for (size_t k = 0; k < 3; k++) {
        shoal_server_optim_config cfg = shoal_server_optim_defaults(adaptive[k]);
        cfg.tau = 0.25f;
        shoal_server_optim *opt;
        cr_assert_eq(shoal_server_optim_new(&cfg, 3, &opt), SHOAL_OK);
        float state[6];
        uint64_t steps = 99;
        shoal_server_optim_state_get(opt, state, &steps);
        cr_expect_eq(steps, 0);
        for (int i = 0; i < 3; i++) {
            cr_expect_eq(state[i], 0.0f, "m[%d] = %g", i, (double)state[i]);
            cr_expect_eq(state[3 + i], 0.0625f, "v[%d] = %g, expected tau^2", i,
                         (double)state[3 + i]);
        }
        shoal_server_optim_free(opt);
    }
}

Test(ml_server_optim, fedavgm_state_is_the_momentum_buffer)
{
    shoal_server_optim_config cfg = shoal_server_optim_defaults(SHOAL_SERVER_FEDAVGM);
    cfg.momentum = 0.5f;
    shoal_server_optim *opt;
    cr_assert_eq(shoal_server_optim_new(&cfg, 2, &opt), SHOAL_OK);
    float x[2] = {0, 0};
    const float d1[2] = {1.0f, -2.0f}, d2[2] = {0.5f, 0.25f};
    apply_ok(opt, x, d1);
    apply_ok(opt, x, d2);
    float m[2];
    uint64_t steps;
    shoal_server_optim_state_get(opt, m, &steps);
    /* m = 0.5 * d1 + d2 */
    cr_expect_float_eq(m[0], 1.0f, 1e-7);
    cr_expect_float_eq(m[1], -0.75f, 1e-7);
    cr_expect_eq(steps, 2);
    shoal_server_optim_free(opt);
}

/* ---- names, defaults, config checks --------------------------------------- */

Test(ml_server_optim, kind_names_round_trip)
{
    const char *names[] = {"fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi"};
    for (size_t k = 0; k < KIND_COUNT; k++) {
        cr_assert_str_eq(shoal_server_optim_kind_name(all_kinds[k]), names[k]);
        shoal_server_optim_kind kind = (shoal_server_optim_kind)-1;
        cr_assert_eq(shoal_server_optim_kind_parse(names[k], &kind), SHOAL_OK);
        cr_assert_eq(kind, all_kinds[k]);
    }
}

Test(ml_server_optim, unknown_kind_names_are_refused)
{
    const char *bad[] = {"", "fedavg ", "FedAvg", "fedprox", "adam", "fedavgmm", "fed"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        shoal_server_optim_kind kind;
        cr_expect_eq(shoal_server_optim_kind_parse(bad[i], &kind), SHOAL_EINVAL, "'%s'", bad[i]);
    }
    shoal_server_optim_kind kind;
    cr_expect_eq(shoal_server_optim_kind_parse(NULL, &kind), SHOAL_EINVAL);
    const char *name = shoal_server_optim_kind_name((shoal_server_optim_kind)42);
    cr_assert_not_null(name);
    cr_expect_eq(shoal_server_optim_kind_parse(name, &kind), SHOAL_EINVAL);
}

Test(ml_server_optim, defaults_match_header)
{
    for (size_t k = 0; k < KIND_COUNT; k++) {
        shoal_server_optim_config c = shoal_server_optim_defaults(all_kinds[k]);
        cr_expect_eq(c.kind, all_kinds[k]);
        if (all_kinds[k] == SHOAL_SERVER_FEDAVG || all_kinds[k] == SHOAL_SERVER_FEDAVGM)
            cr_expect_eq(c.lr, 1.0f);
        else
            cr_expect(c.lr > 0.0f && c.lr < 1.0f);
        cr_expect_eq(c.momentum, 0.9f);
        cr_expect_eq(c.beta1, 0.9f);
        cr_expect_eq(c.beta2, 0.99f);
        cr_expect_eq(c.tau, 1e-3f);
        shoal_errinfo ei = {{0}};
        cr_expect_eq(shoal_server_optim_config_check(&c, &ei), SHOAL_OK, "%s", ei.msg);
    }
}

struct bad_server_config {
    const char *field; /* must appear in the message */
    float value;
};

static void expect_server_config_refused(shoal_server_optim_config cfg, const char *field)
{
    shoal_errinfo ei = {{0}};
    cr_expect_eq(shoal_server_optim_config_check(&cfg, &ei), SHOAL_EINVAL, "%s accepted", field);
    cr_expect_not_null(strstr(ei.msg, field), "message '%s' does not name %s", ei.msg, field);
    cr_expect_eq(shoal_server_optim_config_check(&cfg, NULL), SHOAL_EINVAL);
    shoal_server_optim *opt = (shoal_server_optim *)&cfg; /* sentinel */
    cr_expect_eq(shoal_server_optim_new(&cfg, 3, &opt), SHOAL_EINVAL);
    cr_expect_null(opt, "bad config left *out set");
}

Test(ml_server_optim, config_check_names_bad_field)
{
    const struct bad_server_config lrs[] = {
        {"lr", 0.0f}, {"lr", -0.5f}, {"lr", NAN}, {"lr", INFINITY}};
    for (size_t i = 0; i < sizeof lrs / sizeof lrs[0]; i++) {
        shoal_server_optim_config c = shoal_server_optim_defaults(SHOAL_SERVER_FEDADAM);
        c.lr = lrs[i].value;
        expect_server_config_refused(c, "lr");
    }
    const float bad_unit[] = {1.0f, 1.5f, -0.1f, NAN};
    for (size_t i = 0; i < sizeof bad_unit / sizeof bad_unit[0]; i++) {
        shoal_server_optim_config c = shoal_server_optim_defaults(SHOAL_SERVER_FEDAVGM);
        c.momentum = bad_unit[i];
        expect_server_config_refused(c, "momentum");
        c = shoal_server_optim_defaults(SHOAL_SERVER_FEDADAM);
        c.beta1 = bad_unit[i];
        expect_server_config_refused(c, "beta1");
        c = shoal_server_optim_defaults(SHOAL_SERVER_FEDYOGI);
        c.beta2 = bad_unit[i];
        expect_server_config_refused(c, "beta2");
    }
    const float bad_tau[] = {0.0f, -1e-3f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_tau / sizeof bad_tau[0]; i++) {
        shoal_server_optim_config c = shoal_server_optim_defaults(SHOAL_SERVER_FEDADAGRAD);
        c.tau = bad_tau[i];
        expect_server_config_refused(c, "tau");
    }
    shoal_server_optim_config c = shoal_server_optim_defaults(SHOAL_SERVER_FEDAVG);
    c.kind = (shoal_server_optim_kind)17;
    expect_server_config_refused(c, "kind");
}

Test(ml_server_optim, config_check_accepts_boundaries)
{
    shoal_server_optim_config c = shoal_server_optim_defaults(SHOAL_SERVER_FEDYOGI);
    c.momentum = 0.0f;
    c.beta1 = 0.0f;
    c.beta2 = 0.0f;
    c.tau = 1e-30f;
    c.lr = 1e3f;
    shoal_errinfo ei = {{0}};
    cr_expect_eq(shoal_server_optim_config_check(&c, &ei), SHOAL_OK, "%s", ei.msg);
    cr_expect_eq(shoal_server_optim_config_check(NULL, &ei), SHOAL_EINVAL);
}

Test(ml_server_optim, new_reports_every_allocation_failure)
{
    for (size_t k = 0; k < KIND_COUNT; k++) {
        shoal_server_optim_config cfg = shoal_server_optim_defaults(all_kinds[k]);
        int done = 0;
        for (long allow = 0; allow < 100 && !done; allow++) {
            shoal_server_optim *opt = NULL;
            shoal_failalloc_install(allow);
            shoal_err err = shoal_server_optim_new(&cfg, 5, &opt);
            if (err == SHOAL_OK) {
                done = 1;
                float x[5] = {0}, d[5] = {1, 2, 3, 4, 5};
                cr_expect_eq(shoal_server_optim_apply(opt, x, d), SHOAL_OK);
                shoal_server_optim_free(opt);
            } else {
                cr_expect_eq(err, SHOAL_ENOMEM, "%s, %ld allocations allowed: %s",
                             shoal_server_optim_kind_name(all_kinds[k]), allow,
                             shoal_err_name(err));
                cr_expect_null(opt);
            }
            long live = shoal_failalloc_live();
            shoal_failalloc_uninstall();
            cr_assert_eq(live, 0, "%s: %ld blocks leaked with %ld allocations allowed",
                         shoal_server_optim_kind_name(all_kinds[k]), live, allow);
        }
        cr_assert(done, "%s: never succeeded", shoal_server_optim_kind_name(all_kinds[k]));
    }
}
