/* shoal-sim: federations of virtual devices on real data, driven by the
 * production round engine. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shoal/blas.h"
#include "shoal/secagg_protocol.h"
#include "shoal/sim.h"
#include "shoal/version.h"
#include "sim_dp.h"

struct opts {
    shoal_sim_config cfg;
    const char *out_dir;
    const char *plot; /* png, svg, none */
    double target;
    int quiet;
    int eval_clients_set; /* --eval-clients given: --clients-per-round leaves it alone */
};

/* ---- options: one table for the command line and the JSON config ---------- */

enum kind { K_UINT, K_U64, K_FLOAT, K_DOUBLE, K_MS, K_STR, K_BOOL, K_CHOICE };

struct option {
    const char *name; /* without "--"; also the JSON key */
    enum kind kind;
    int early; /* applied before the others: resets defaults */
    const char *help;
};

static const struct option options[] = {
    {"config", K_STR, 0, "FILE  JSON file with any of these options as keys"},
    {"dataset", K_STR, 0, "NAME  fashion-mnist (the only dataset for now)"},
    {"data-dir", K_STR, 0, "DIR  Fashion-MNIST IDX files (default " SHOAL_FASHION_MNIST_DIR ")"},
    {"model", K_CHOICE, 0, "NAME  logreg | mlp | cnn | cnn2 (default cnn)"},
    {"clients", K_UINT, 0, "N  virtual devices in the population (default 100)"},
    {"partition", K_CHOICE, 1,
     "NAME  iid | dirichlet | shards | contiguous | round-robin | random | overlap-reshuffle"},
    {"alpha", K_DOUBLE, 0, "A  dirichlet concentration (default 0.5)"},
    {"shards-per-client", K_UINT, 0, "S  shards partition (default 2)"},
    {"overlap", K_DOUBLE, 0, "F  overlap-reshuffle extra fraction (default 0.1)"},
    {"examples-per-client", K_UINT, 0, "N  dirichlet with more clients than data (default 20)"},
    {"mode", K_CHOICE, 1, "sync | async (FedBuff)"},
    {"strategy", K_CHOICE, 1, "NAME  fedavg | fedavgm | fedadam | fedyogi | fedadagrad"},
    {"rounds", K_UINT, 0, "R  committed rounds (sync) or server steps (async) (default 50)"},
    {"clients-per-round", K_UINT, 0,
     "K  sync: reports per round; async: devices training at once (default 10)"},
    {"over-selection", K_FLOAT, 0, "F  selected = K * F (default 1.3)"},
    {"min-report-fraction", K_FLOAT, 0, "F  reports that suffice at the deadline (default 0.8)"},
    {"selection-window", K_MS, 0, "SECONDS  selection window (default 60)"},
    {"deadline", K_MS, 0, "SECONDS  reporting deadline (default 3600)"},
    {"retry-min", K_MS, 0, "SECONDS  shortest retry window the server gives (default 60)"},
    {"retry-max", K_MS, 0, "SECONDS  longest retry window the server gives (default 21600)"},
    {"pipelining", K_BOOL, 0, "on|off  select round i+1 while round i reports (default on)"},
    {"weighting", K_CHOICE, 0, "examples | uniform (default examples)"},
    {"eval-every", K_UINT, 0, "R  federated evaluation every R rounds (default 0: off)"},
    {"eval-clients", K_UINT, 0, "N  devices per federated evaluation (default K)"},
    {"local-epochs", K_UINT, 0, "E  local epochs (default 1)"},
    {"batch", K_UINT, 0, "B  local batch size (default 64)"},
    {"optimizer", K_CHOICE, 1,
     "NAME  client optimizer: sgd | momentum | nesterov | adagrad | "
     "rmsprop | adam (default momentum)"},
    {"lr", K_FLOAT, 0, "LR  client learning rate (default 0.01)"},
    {"momentum", K_FLOAT, 0, "M  client momentum (default 0.9)"},
    {"weight-decay", K_FLOAT, 0, "WD  client L2 penalty (default 0)"},
    {"prox-mu", K_FLOAT, 0, "MU  FedProx proximal term (default 0)"},
    {"server-lr", K_FLOAT, 0, "ETA  server learning rate (fedavg 1, adaptive 0.003)"},
    {"server-momentum", K_FLOAT, 0, "B  fedavgm momentum (default 0.9)"},
    {"beta1", K_FLOAT, 0, "B1  adaptive strategies (default 0.9)"},
    {"beta2", K_FLOAT, 0, "B2  fedadam, fedyogi (default 0.99)"},
    {"tau", K_FLOAT, 0, "T  adaptivity (default 1e-3)"},
    {"buffer-size", K_UINT, 0, "K  async: reports per server step (default 10)"},
    {"max-staleness", K_UINT, 0, "S  async: refuse staler updates (default 0: no limit)"},
    {"staleness-exponent", K_FLOAT, 0, "X  async weight (1+s)^-X (default 0.5)"},
    {"avail-hours", K_DOUBLE, 0, "H  hours a day a device is available; >= 24: always (default 8)"},
    {"avail-start", K_DOUBLE, 0, "H  local hour the window opens (default 22)"},
    {"avail-extra", K_DOUBLE, 0, "P  chance of one extra available hour a day (default 0.3)"},
    {"compute-mflops", K_DOUBLE, 0, "F  median device speed (default 2000)"},
    {"bandwidth-kbps", K_DOUBLE, 0, "B  median device bandwidth (default 4000)"},
    {"speed-sigma", K_DOUBLE, 0, "S  log-normal spread of speed and bandwidth (default 0.5)"},
    {"dropout", K_DOUBLE, 0, "P  chance a session fails midway (default 0.05)"},
    {"secagg", K_BOOL, 0, "on|off  secure aggregation (SecAgg, complete graph per group)"},
    {"secagg-plus", K_BOOL, 0, "on|off  SecAgg+ (sparse graph per group from the rates below)"},
    {"secagg-group-size", K_UINT, 0, "N  reports per secure-aggregation group (default 0: all)"},
    {"secagg-clip", K_DOUBLE, 0, "C  fixed-point range [-C, C] of each update element (default 1)"},
    {"secagg-bits", K_UINT, 0, "B  ring bits; refused if a group's sum could wrap (default 32)"},
    {"secagg-max-weight", K_UINT, 0, "W  cap on a report's weight, its examples (default 1000)"},
    {"secagg-dropout-rate", K_DOUBLE, 0, "P  SecAgg+: dropout rate to tolerate (default 0.1)"},
    {"secagg-corrupt-rate", K_DOUBLE, 0, "P  SecAgg+: colluding fraction to resist (default 0.1)"},
    {"secagg-phase-dropout", K_DOUBLE, 0,
     "P  chance a device drops at each secure-aggregation phase (default 0)"},
    {"dp-clip", K_DOUBLE, 0, "S  DP-FedAvg: clip each update to L2 norm S (default 0: no DP)"},
    {"dp-noise", K_DOUBLE, 0, "Z  DP-FedAvg: noise stddev Z x S on each round's sum (default 0)"},
    {"dp-delta", K_DOUBLE, 0, "D  DP: the delta epsilon is reported at (default 1e-5)"},
    {"dp-budget", K_DOUBLE, 0, "EPS  DP: stop before a round would exceed this epsilon"},
    {"dp-mechanism", K_CHOICE, 0,
     "fedavg | ftrl: DP-FedAvg (noise on each round) or DP-FTRL (tree) (default fedavg)"},
    {"dp-ftrl-restart", K_UINT, 0, "R  DP-FTRL: a fresh tree every R rounds (default 0: never)"},
    {"dp-adaptive-quantile", K_DOUBLE, 0,
     "G  DP-FedAvg: move the clip toward this quantile of update norms (default 0: fixed)"},
    {"dp-adaptive-rate", K_DOUBLE, 0, "ETA  adaptive clipping's geometric rate (default 0.2)"},
    {"dp-adaptive-count-noise", K_DOUBLE, 0,
     "S  noise stddev on the unclipped count (default clients-per-round / 20)"},
    {"sampling", K_CHOICE, 0,
     "checkin | poisson | shuffle: who joins a round (default checkin: the engine's selection)"},
    {"aggregator", K_CHOICE, 0,
     "mean | median | trimmed_mean | norm_bounded (default mean; not with --secagg)"},
    {"trim-fraction", K_DOUBLE, 0, "B  trimmed_mean: fraction dropped at each end (default 0.1)"},
    {"norm-bound", K_DOUBLE, 0, "L  norm_bounded: clip each update to L2 norm L"},
    {"attackers", K_DOUBLE, 0, "F  fraction of clients that attack (default 0)"},
    {"attack", K_CHOICE, 0, "sign_flip | scale (x100) | noise (Gaussian, stddev 1)"},
    {"max-sim-hours", K_DOUBLE, 0, "H  stop after this much simulated time (default 8760)"},
    {"test-every", K_UINT, 0, "R  central test-set accuracy every R rounds (default 1)"},
    {"target", K_DOUBLE, 0, "ACC  report the first round reaching this test accuracy"},
    {"threads", K_UINT, 0, "T  training threads (default 1)"},
    {"seed", K_U64, 0, "S  seed for everything random (default 1)"},
    {"out", K_STR, 0, "DIR  write rounds.csv, summary.json and a plot there"},
    {"plot", K_CHOICE, 0, "png | svg | none (default png; needs gnuplot)"},
    {"quiet", K_BOOL, 0, "on|off  no progress output, only the last line"},
};

static const struct option *find_option(const char *name)
{
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
        if (strcmp(options[i].name, name) == 0)
            return &options[i];
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "Usage: shoal-sim [--option VALUE]...\n\n"
               "Simulates a federation of virtual devices training on Fashion-MNIST with\n"
               "the same round engine and training code as the server and the device SDK.\n"
               "Prints one line per round (a progress bar on a terminal) and ends with\n"
               "final_test_accuracy=0.xxxx.\n\nOptions:\n");
    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++) {
        const char *h = options[i].help;
        const char *sp = strchr(h, ' ');
        int arg_is_word = sp && sp != h && h[0] >= 'A' && h[0] <= 'Z';
        if (options[i].kind == K_CHOICE || options[i].kind == K_BOOL)
            arg_is_word = 0;
        char left[64];
        snprintf(left, sizeof left, "--%s %.*s", options[i].name, arg_is_word ? (int)(sp - h) : 0,
                 h);
        fprintf(f, "  %-28s %s\n", left, arg_is_word ? sp + 1 : h);
    }
    fprintf(f,
            "  %-28s %s\n  %-28s %s\n\nExample (NIID-Bench, dirichlet 0.5):\n"
            "  shoal-sim --model cnn --clients 10 --clients-per-round 10 --over-selection 1 \\\n"
            "    --partition dirichlet --alpha 0.5 --rounds 50 --local-epochs 10 --batch 64 \\\n"
            "    --lr 0.01 --momentum 0.9 --avail-hours 24 --dropout 0 --out results/niid\n",
            "--help", "show this text", "--version", "print the version and exit");
}

/* Errors name where the value came from: "--rounds" or "cfg.json: rounds". */
static int fail(const char *origin, const char *name, const char *fmt, const char *value)
{
    fprintf(stderr, "shoal-sim: %s%s: ", origin, name);
    fprintf(stderr, fmt, value);
    fprintf(stderr, "\nRun 'shoal-sim --help' for the options.\n");
    return -1;
}

static int parse_u64(const char *v, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    if (*v == '-' || *v == '+' || !*v)
        return -1;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end || errno || x > max)
        return -1;
    *out = x;
    return 0;
}

static int parse_double(const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(x))
        return -1;
    *out = x;
    return 0;
}

static const char *attack_name(shoal_sim_attack attack)
{
    static const char *const names[] = {"none", "sign_flip", "scale", "noise"};
    return (unsigned)attack <= SHOAL_SIM_ATTACK_NOISE ? names[attack] : "unknown";
}

static int set_choice(struct opts *o, const char *name, const char *v)
{
    shoal_sim_config *c = &o->cfg;
    if (strcmp(name, "model") == 0)
        return shoal_model_arch_parse(v, &c->model) == SHOAL_OK ? 0 : -1;
    if (strcmp(name, "partition") == 0) {
        shoal_partition_kind k;
        if (shoal_partition_kind_parse(v, &k) != SHOAL_OK)
            return -1;
        shoal_partition_config keep = c->partition;
        c->partition = shoal_partition_defaults(k);
        (void)keep;
        return 0;
    }
    if (strcmp(name, "mode") == 0) {
        if (strcmp(v, "sync") == 0)
            c->round.mode = SHOAL_ROUND_SYNC;
        else if (strcmp(v, "async") == 0)
            c->round.mode = SHOAL_ROUND_ASYNC;
        else
            return -1;
        return 0;
    }
    if (strcmp(name, "strategy") == 0) {
        shoal_server_optim_kind k;
        if (shoal_server_optim_kind_parse(v, &k) != SHOAL_OK)
            return -1;
        c->round.server_optim = shoal_server_optim_defaults(k);
        return 0;
    }
    if (strcmp(name, "optimizer") == 0) {
        shoal_optim_kind k;
        if (shoal_optim_kind_parse(v, &k) != SHOAL_OK)
            return -1;
        shoal_optim_config prev = c->train.optim;
        c->train.optim = shoal_optim_defaults(k, prev.lr);
        return 0;
    }
    if (strcmp(name, "weighting") == 0) {
        if (strcmp(v, "examples") == 0)
            c->round.weighting = SHOAL_WEIGHT_EXAMPLES;
        else if (strcmp(v, "uniform") == 0)
            c->round.weighting = SHOAL_WEIGHT_UNIFORM;
        else
            return -1;
        return 0;
    }
    if (strcmp(name, "aggregator") == 0)
        return shoal_robust_parse(v, &c->robust.aggregator) == SHOAL_OK ? 0 : -1;
    if (strcmp(name, "attack") == 0) {
        for (int k = 0; k <= SHOAL_SIM_ATTACK_NOISE; k++)
            if (strcmp(v, attack_name((shoal_sim_attack)k)) == 0) {
                c->robust.attack = (shoal_sim_attack)k;
                return 0;
            }
        return -1;
    }
    if (strcmp(name, "sampling") == 0) {
        if (strcmp(v, "checkin") == 0)
            c->sampling = SHOAL_SIM_SAMPLING_CHECKIN;
        else if (strcmp(v, "poisson") == 0)
            c->sampling = SHOAL_SIM_SAMPLING_POISSON;
        else if (strcmp(v, "shuffle") == 0)
            c->sampling = SHOAL_SIM_SAMPLING_SHUFFLE;
        else
            return -1;
        return 0;
    }
    if (strcmp(name, "dp-mechanism") == 0)
        return shoal_sim_cli_dp_mechanism_parse(v, &c->dp.mechanism);
    if (strcmp(name, "plot") == 0) {
        if (strcmp(v, "png") && strcmp(v, "svg") && strcmp(v, "none"))
            return -1;
        o->plot = v;
        return 0;
    }
    return -1;
}

static const char *choices_of(const char *name)
{
    if (strcmp(name, "model") == 0)
        return "logreg, mlp, cnn or cnn2";
    if (strcmp(name, "partition") == 0)
        return "iid, dirichlet, shards, contiguous, round-robin, random or overlap-reshuffle";
    if (strcmp(name, "mode") == 0)
        return "sync or async";
    if (strcmp(name, "strategy") == 0)
        return "fedavg, fedavgm, fedadam, fedyogi or fedadagrad";
    if (strcmp(name, "optimizer") == 0)
        return "sgd, momentum, nesterov, adagrad, rmsprop or adam";
    if (strcmp(name, "weighting") == 0)
        return "examples or uniform";
    if (strcmp(name, "sampling") == 0)
        return "checkin, poisson or shuffle";
    if (strcmp(name, "dp-mechanism") == 0)
        return "fedavg or ftrl";
    if (strcmp(name, "aggregator") == 0)
        return "mean, median, trimmed_mean or norm_bounded";
    if (strcmp(name, "attack") == 0)
        return "none, sign_flip, scale or noise";
    return "png, svg or none";
}

/* Applies one option from any origin. Returns 0 or -1 (message printed). */
static int apply(struct opts *o, const char *origin, const struct option *opt, const char *v)
{
    shoal_sim_config *c = &o->cfg;
    const char *n = opt->name;
    unsigned long long u = 0;
    double d = 0;
    switch (opt->kind) {
    case K_UINT:
        if (parse_u64(v, 0xFFFFFFFFull, &u))
            return fail(origin, n, "expected a whole number, got '%s'", v);
        break;
    case K_U64:
        if (parse_u64(v, ~0ull, &u))
            return fail(origin, n, "expected a whole number, got '%s'", v);
        break;
    case K_FLOAT:
    case K_DOUBLE:
    case K_MS:
        if (parse_double(v, &d))
            return fail(origin, n, "expected a number, got '%s'", v);
        if (opt->kind == K_MS && !(d > 0.0))
            return fail(origin, n, "must be a positive number of seconds, got '%s'", v);
        break;
    case K_BOOL:
        if (strcmp(v, "on") == 0 || strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
            u = 1;
        else if (strcmp(v, "off") == 0 || strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
            u = 0;
        else
            return fail(origin, n, "expected on or off, got '%s'", v);
        break;
    case K_CHOICE:
        if (set_choice(o, n, v)) {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown value '%%s' (choose %s)", choices_of(n));
            return fail(origin, n, msg, v);
        }
        return 0;
    case K_STR:
        break;
    }
    float f = (float)d;
    int64_t ms = (int64_t)(d * 1000.0);
#define IS(s) (strcmp(n, s) == 0)
    if (IS("dataset")) {
        if (strcmp(v, "fashion-mnist"))
            return fail(origin, n, "unknown dataset '%s' (supported: fashion-mnist)", v);
    } else if (IS("data-dir"))
        c->data_dir = v;
    else if (IS("out"))
        o->out_dir = v;
    else if (IS("clients"))
        c->clients = (uint32_t)u;
    else if (IS("alpha"))
        c->partition.alpha = d;
    else if (IS("shards-per-client"))
        c->partition.shards_per_client = (uint32_t)u;
    else if (IS("overlap"))
        c->partition.overlap = d;
    else if (IS("examples-per-client"))
        c->partition.examples_per_client = (uint32_t)u;
    else if (IS("rounds"))
        c->rounds = (uint32_t)u;
    else if (IS("clients-per-round")) {
        c->round.goal_count = (uint32_t)u;
        if (!o->eval_clients_set)
            c->round.eval_goal_count = (uint32_t)u;
    } else if (IS("over-selection"))
        c->round.over_selection = f;
    else if (IS("min-report-fraction"))
        c->round.min_report_fraction = f;
    else if (IS("selection-window"))
        c->round.selection_window_ms = ms;
    else if (IS("deadline"))
        c->round.reporting_deadline_ms = ms;
    else if (IS("retry-min"))
        c->round.retry_min_ms = ms;
    else if (IS("retry-max"))
        c->round.retry_max_ms = ms;
    else if (IS("pipelining"))
        c->round.pipelining = (int)u;
    else if (IS("eval-every"))
        c->round.eval_every = (uint32_t)u;
    else if (IS("eval-clients")) {
        c->round.eval_goal_count = (uint32_t)u;
        o->eval_clients_set = 1;
    } else if (IS("local-epochs"))
        c->train.epochs = (uint32_t)u;
    else if (IS("batch"))
        c->train.batch = (uint32_t)u;
    else if (IS("lr"))
        c->train.optim.lr = f;
    else if (IS("momentum"))
        c->train.optim.momentum = f;
    else if (IS("weight-decay"))
        c->train.optim.weight_decay = f;
    else if (IS("prox-mu"))
        c->train.optim.prox_mu = f;
    else if (IS("server-lr"))
        c->round.server_optim.lr = f;
    else if (IS("server-momentum"))
        c->round.server_optim.momentum = f;
    else if (IS("beta1"))
        c->round.server_optim.beta1 = f;
    else if (IS("beta2"))
        c->round.server_optim.beta2 = f;
    else if (IS("tau"))
        c->round.server_optim.tau = f;
    else if (IS("buffer-size"))
        c->round.buffer_size = (uint32_t)u;
    else if (IS("max-staleness"))
        c->round.max_staleness = (uint32_t)u;
    else if (IS("staleness-exponent"))
        c->round.staleness_exponent = f;
    else if (IS("avail-hours"))
        c->avail_hours = d;
    else if (IS("avail-start"))
        c->avail_start_hour = d;
    else if (IS("avail-extra"))
        c->avail_extra = d;
    else if (IS("compute-mflops"))
        c->compute_mflops = d;
    else if (IS("bandwidth-kbps"))
        c->bandwidth_kbps = d;
    else if (IS("speed-sigma"))
        c->speed_sigma = d;
    else if (IS("dropout"))
        c->dropout = d;
    else if (IS("secagg") || IS("secagg-plus")) {
        if (u)
            c->secagg.mode = IS("secagg") ? SHOAL_SIM_SECAGG_FULL : SHOAL_SIM_SECAGG_PLUS;
        else if (c->secagg.mode == (IS("secagg") ? SHOAL_SIM_SECAGG_FULL : SHOAL_SIM_SECAGG_PLUS))
            c->secagg.mode = SHOAL_SIM_SECAGG_OFF;
    } else if (IS("secagg-group-size"))
        c->secagg.group_size = (uint32_t)u;
    else if (IS("secagg-clip"))
        c->secagg.clip = d;
    else if (IS("secagg-bits"))
        c->secagg.bits = (unsigned)u;
    else if (IS("secagg-max-weight"))
        c->secagg.max_weight = (uint32_t)u;
    else if (IS("secagg-dropout-rate"))
        c->secagg.dropout_rate = d;
    else if (IS("secagg-corrupt-rate"))
        c->secagg.corrupt_rate = d;
    else if (IS("secagg-phase-dropout"))
        c->secagg.phase_dropout = d;
    else if (IS("dp-clip"))
        c->dp.clip = d;
    else if (IS("dp-noise"))
        c->dp.noise = d;
    else if (IS("dp-delta"))
        c->dp.delta = d;
    else if (IS("dp-budget"))
        c->dp.budget = d;
    else if (IS("dp-ftrl-restart"))
        c->dp.ftrl_restart = (uint32_t)u;
    else if (IS("dp-adaptive-quantile"))
        c->dp.adaptive_quantile = d;
    else if (IS("dp-adaptive-rate"))
        c->dp.adaptive_rate = d;
    else if (IS("dp-adaptive-count-noise"))
        c->dp.adaptive_count_noise = d;
    else if (IS("trim-fraction"))
        c->robust.trim_fraction = d;
    else if (IS("norm-bound"))
        c->robust.norm_bound = d;
    else if (IS("attackers"))
        c->robust.attackers = d;
    else if (IS("max-sim-hours"))
        c->max_sim_hours = d;
    else if (IS("test-every"))
        c->test_every = (uint32_t)u;
    else if (IS("target"))
        o->target = d;
    else if (IS("threads"))
        c->threads = (uint32_t)u;
    else if (IS("seed"))
        c->seed = u;
    else if (IS("quiet"))
        o->quiet = (int)u;
#undef IS
    return 0;
}

/* JSON config: an object whose keys are option names. Values are strings,
 * numbers or booleans. Returned strings live as long as *root. */
static int apply_json(struct opts *o, const char *path, json_t **root, int early)
{
    if (!*root) {
        json_error_t jerr;
        *root = json_load_file(path, 0, &jerr);
        if (!*root) {
            fprintf(stderr, "shoal-sim: %s:%d:%d: %s\n", path, jerr.line, jerr.column, jerr.text);
            return -1;
        }
        if (!json_is_object(*root)) {
            fprintf(stderr, "shoal-sim: %s: expected a JSON object of options\n", path);
            return -1;
        }
    }
    char origin[512];
    snprintf(origin, sizeof origin, "%s: ", path);
    const char *key;
    json_t *val;
    json_object_foreach(*root, key, val)
    {
        const struct option *opt = find_option(key);
        if (!opt || strcmp(key, "config") == 0) {
            fprintf(stderr, "shoal-sim: %s: unknown option \"%s\"\n", path, key);
            return -1;
        }
        if (opt->early != early)
            continue;
        char buf[64];
        const char *v = buf;
        if (json_is_string(val))
            v = json_string_value(val);
        else if (json_is_integer(val))
            snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(val));
        else if (json_is_real(val))
            snprintf(buf, sizeof buf, "%.17g", json_real_value(val));
        else if (json_is_boolean(val))
            snprintf(buf, sizeof buf, "%s", json_is_true(val) ? "on" : "off");
        else {
            fprintf(stderr, "shoal-sim: %s: \"%s\" must be a string, number or boolean\n", path,
                    key);
            return -1;
        }
        if (apply(o, origin, opt, v))
            return -1;
    }
    return 0;
}

/* ---- output ----------------------------------------------------------------------- */

struct output {
    FILE *csv;
    int tty, quiet, dp;
    uint32_t rounds;
    double last_acc;
};

static void on_round(void *ctx, const shoal_sim_round *r)
{
    struct output *out = ctx;
    if (!isnan(r->test_accuracy))
        out->last_acc = r->test_accuracy;
    if (out->csv) {
        fprintf(out->csv, "%llu,%.3f,%u,%u,%u,%u,%.6f,", (unsigned long long)r->round,
                r->sim_time_s, r->selected, r->reported, r->dropped, r->late, r->train_loss);
        if (isnan(r->test_accuracy))
            fprintf(out->csv, ",");
        else
            fprintf(out->csv, "%.4f,", r->test_accuracy);
        if (isnan(r->fed_eval_accuracy))
            fprintf(out->csv, ",");
        else
            fprintf(out->csv, "%.4f,", r->fed_eval_accuracy);
        fprintf(out->csv, "%llu,%llu,%.3f,%d,%.4f,%u,%u,%u,%u,%u,%u,",
                (unsigned long long)r->bytes_down, (unsigned long long)r->bytes_up, r->wall_s,
                r->abandoned, r->secagg_s, r->secagg_dropouts[SHOAL_SECAGG_PHASE_ADVERTISE],
                r->secagg_dropouts[SHOAL_SECAGG_PHASE_SHARE],
                r->secagg_dropouts[SHOAL_SECAGG_PHASE_MASK],
                r->secagg_dropouts[SHOAL_SECAGG_PHASE_UNMASK], r->secagg_groups,
                r->secagg_groups_failed);
        if (out->dp)
            fprintf(out->csv, "%.6g,%g,%.6g,%.6g,", r->epsilon, r->epsilon_order, r->rho,
                    r->dp_clip);
        else
            fprintf(out->csv, ",,,,");
        fprintf(out->csv, "%.4f\n", r->train_s);
        fflush(out->csv);
    }
    if (out->quiet)
        return;
    if (out->tty) {
        double frac = (double)r->round / (double)out->rounds;
        int fill = (int)(frac * 30.0);
        char bar[31];
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        fprintf(stderr, "\rround %llu/%u [%s] acc %.4f  sim %.1fh  wall %.0fs ",
                (unsigned long long)r->round, out->rounds, bar, out->last_acc,
                r->sim_time_s / 3600.0, r->wall_s);
        fflush(stderr);
    } else {
        printf("round %llu%s sim_time %.0fs selected %u reported %u dropped %u late %u "
               "train_loss %.4f test_acc %.4f wall %.1fs training %.2fs",
               (unsigned long long)r->round, r->abandoned ? " abandoned" : "", r->sim_time_s,
               r->selected, r->reported, r->dropped, r->late, r->train_loss, out->last_acc,
               r->wall_s, r->train_s);
        if (r->secagg_groups)
            printf(" secagg %.3fs groups %u failed %u dropouts %u/%u/%u/%u", r->secagg_s,
                   r->secagg_groups, r->secagg_groups_failed,
                   r->secagg_dropouts[SHOAL_SECAGG_PHASE_ADVERTISE],
                   r->secagg_dropouts[SHOAL_SECAGG_PHASE_SHARE],
                   r->secagg_dropouts[SHOAL_SECAGG_PHASE_MASK],
                   r->secagg_dropouts[SHOAL_SECAGG_PHASE_UNMASK]);
        if (out->dp)
            shoal_sim_cli_dp_row(r);
        printf("\n");
        fflush(stdout);
    }
}

static int make_dir(const char *dir)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

static void write_plot(const char *dir, const char *fmt)
{
    char script[8192];
    const char *term = strcmp(fmt, "svg") == 0 ? "svg size 1100,450" : "pngcairo size 1100,450";
    snprintf(script, sizeof script,
             "set terminal %s\n"
             "set output '%s/accuracy.%s'\n"
             "set datafile separator ','\n"
             "set key autotitle columnhead bottom right\n"
             "set multiplot layout 1,2 title 'shoal-sim: test accuracy'\n"
             "set xlabel 'round'; set ylabel 'test accuracy'; set grid\n"
             "plot '%s/rounds.csv' using 1:8 with lines lw 2 title 'test accuracy'\n"
             "set xlabel 'simulated time (hours)'\n"
             "plot '%s/rounds.csv' using ($2/3600):8 with lines lw 2 title 'test accuracy'\n"
             "unset multiplot\n",
             term, dir, fmt, dir, dir);
    FILE *g = popen("gnuplot 2>/dev/null", "w");
    if (!g) {
        fprintf(stderr, "shoal-sim: gnuplot not found: no plot (install gnuplot-nox)\n");
        return;
    }
    fputs(script, g);
    if (pclose(g) != 0) {
        /* pngcairo may be missing in gnuplot-nox: fall back to png. */
        if (strcmp(fmt, "png") == 0 && (g = popen("gnuplot 2>/dev/null", "w"))) {
            char *t = strstr(script, "pngcairo");
            memmove(t, t + 5, strlen(t + 5) + 1);
            fputs(script, g);
            if (pclose(g) == 0)
                return;
        }
        fprintf(stderr, "shoal-sim: gnuplot failed: no plot written\n");
    }
}

static void write_summary(const char *dir, const struct opts *o, const shoal_sim_result *r)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/summary.json", dir);
    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:I, s:I, s:f, s:f, s:f, s:f, s:I, s:I, s:I, "
        "s:I, s:I, s:I, s:i, s:I}",
        "model", shoal_model_arch_name(o->cfg.model), "partition",
        shoal_partition_kind_name(o->cfg.partition.kind), "strategy",
        shoal_server_optim_kind_name(o->cfg.round.server_optim.kind), "mode",
        o->cfg.round.mode == SHOAL_ROUND_SYNC ? "sync" : "async", "clients", (int)o->cfg.clients,
        "clients_per_round", (int)o->cfg.round.goal_count, "rounds", (int)o->cfg.rounds,
        "rounds_committed", (json_int_t)r->rounds_committed, "rounds_abandoned",
        (json_int_t)r->rounds_abandoned, "final_test_accuracy", r->final_test_accuracy,
        "final_test_loss", r->final_test_loss, "sim_time_s", r->sim_time_s, "wall_s", r->wall_s,
        "bytes_down", (json_int_t)r->bytes_down, "bytes_up", (json_int_t)r->bytes_up, "sessions",
        (json_int_t)r->sessions, "reports", (json_int_t)r->reports, "dropouts",
        (json_int_t)r->dropouts, "late", (json_int_t)r->late, "rounds_to_target",
        r->rounds_to_target, "peak_rss_bytes", (json_int_t)r->peak_rss_bytes);
    if (j) {
        json_object_set_new(j, "seed", json_integer((json_int_t)o->cfg.seed));
        json_object_set_new(j, "train_s", json_real(r->train_s));
        static const char *const secagg_names[] = {"off", "secagg", "secagg+"};
        json_object_set_new(j, "secure_aggregation", json_string(secagg_names[o->cfg.secagg.mode]));
        json_object_set_new(j, "aggregator",
                            json_string(shoal_robust_name(o->cfg.robust.aggregator)));
        if (o->cfg.robust.attackers > 0.0) {
            json_object_set_new(j, "attackers", json_real(o->cfg.robust.attackers));
            json_object_set_new(j, "attack", json_string(attack_name(o->cfg.robust.attack)));
        }
        if (o->cfg.dp.clip > 0.0) {
            json_t *dp = shoal_sim_cli_dp_json(&o->cfg, r);
            if (dp)
                json_object_set_new(j, "dp", dp);
        }
        if (o->cfg.secagg.mode != SHOAL_SIM_SECAGG_OFF) {
            json_object_set_new(j, "secagg_s", json_real(r->secagg_s));
            json_object_set_new(j, "secagg_groups_failed",
                                json_integer((json_int_t)r->secagg_groups_failed));
            json_t *drops = json_object();
            for (int p = 0; p < SHOAL_SIM_SECAGG_PHASES; p++)
                if (p != SHOAL_SECAGG_PHASE_CONFIRM)
                    json_object_set_new(drops, shoal_secagg_phase_name((shoal_secagg_phase)p),
                                        json_integer((json_int_t)r->secagg_dropouts[p]));
            json_object_set_new(j, "secagg_dropouts", drops);
        }
        json_object_set_new(j, "federated_eval_accuracy",
                            isnan(r->fed_eval_accuracy) ? json_null()
                                                        : json_real(r->fed_eval_accuracy));
        if (json_dump_file(j, path, JSON_INDENT(2) | JSON_SORT_KEYS))
            fprintf(stderr, "shoal-sim: cannot write %s\n", path);
        json_decref(j);
    }
}

int main(int argc, char **argv)
{
    struct opts o;
    memset(&o, 0, sizeof o);
    o.cfg = shoal_sim_defaults();
    o.plot = "png";
    const char *config_path = NULL;
    json_t *root = NULL;

    /* Pass 0: --help and --config; pass 1: options that reset defaults
     * (strategy, optimizer, mode, partition); pass 2: everything else. The
     * config file applies before the command line in each pass. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("shoal-sim %s\n", shoal_version());
            return 0;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config_path = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            config_path = argv[i] + 9;
    }
    for (int pass = 1; pass <= 2; pass++) {
        int early = pass == 1;
        if (config_path && apply_json(&o, config_path, &root, early))
            goto usage_error;
        for (int i = 1; i < argc; i++) {
            const char *arg = argv[i], *value;
            char name[64];
            if (strncmp(arg, "--", 2) != 0) {
                fprintf(stderr, "shoal-sim: unexpected argument '%s'\n", arg);
                goto usage_error;
            }
            const char *eq = strchr(arg, '=');
            if (eq) {
                snprintf(name, sizeof name, "%.*s", (int)(eq - arg - 2), arg + 2);
                value = eq + 1;
            } else {
                snprintf(name, sizeof name, "%s", arg + 2);
                const struct option *opt = find_option(name);
                if (opt && opt->kind == K_BOOL &&
                    (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0))
                    value = "on";
                else if (i + 1 >= argc) {
                    fprintf(stderr, "shoal-sim: %s needs a value\n", arg);
                    goto usage_error;
                } else
                    value = argv[++i];
            }
            const struct option *opt = find_option(name);
            if (!opt) {
                fprintf(stderr, "shoal-sim: unknown option '--%s'\n", name);
                goto usage_error;
            }
            if (opt->early != early || strcmp(name, "config") == 0)
                continue;
            if (apply(&o, "--", opt, value))
                goto fail_silently;
        }
    }

    shoal_errinfo ei = {{0}};
    if (shoal_sim_config_check(&o.cfg, &ei) != SHOAL_OK) {
        fprintf(stderr, "shoal-sim: --%s\n", ei.msg);
        goto usage_error;
    }
    shoal_blas_set_threads(1); /* parallelism comes from training devices on threads */

    struct output out = {.tty = isatty(STDERR_FILENO),
                         .quiet = o.quiet,
                         .dp = o.cfg.dp.clip > 0.0,
                         .rounds = o.cfg.rounds,
                         .last_acc = 0.0};
    if (o.out_dir) {
        char path[4096];
        if (make_dir(o.out_dir)) {
            fprintf(stderr, "shoal-sim: --out: cannot create directory %s: %s\n", o.out_dir,
                    strerror(errno));
            goto fail_silently;
        }
        snprintf(path, sizeof path, "%s/rounds.csv", o.out_dir);
        if (!(out.csv = fopen(path, "w"))) {
            fprintf(stderr, "shoal-sim: --out: cannot write %s: %s\n", path, strerror(errno));
            goto fail_silently;
        }
        fprintf(out.csv, "round,sim_time_s,selected,reported,dropped,late,train_loss,"
                         "test_accuracy,federated_eval_accuracy,bytes_down,bytes_up,wall_s,"
                         "abandoned,secagg_s,secagg_drop_advertise,secagg_drop_share,"
                         "secagg_drop_mask,secagg_drop_unmask,secagg_groups,"
                         "secagg_groups_failed,epsilon,epsilon_order,rho,dp_clip,train_s\n");
    }
    if (!o.quiet)
        printf("shoal-sim: %s, %u clients (%s), %s %s, %u %s, %u per round, %u local epochs, "
               "batch %u, seed %llu, %u threads\n",
               shoal_model_arch_name(o.cfg.model), o.cfg.clients,
               shoal_partition_kind_name(o.cfg.partition.kind),
               o.cfg.round.mode == SHOAL_ROUND_SYNC ? "sync" : "async",
               shoal_server_optim_kind_name(o.cfg.round.server_optim.kind), o.cfg.rounds,
               o.cfg.round.mode == SHOAL_ROUND_SYNC ? "rounds" : "server steps",
               o.cfg.round.goal_count, o.cfg.train.epochs, o.cfg.train.batch,
               (unsigned long long)o.cfg.seed, o.cfg.threads);
    if (!o.quiet && (o.cfg.robust.aggregator != SHOAL_ROBUST_MEAN || o.cfg.robust.attackers > 0.0))
        printf("aggregator %s; %.0f%% of the clients attack (%s)\n",
               shoal_robust_name(o.cfg.robust.aggregator), 100.0 * o.cfg.robust.attackers,
               attack_name(o.cfg.robust.attack));
    if (!o.quiet && o.cfg.dp.clip > 0.0)
        shoal_sim_cli_dp_setting(&o.cfg);
    fflush(stdout);
    shoal_sim_result res;
    shoal_err err = shoal_sim_run(&o.cfg, on_round, &out, o.target, &res, &ei);
    if (out.tty && !o.quiet)
        fprintf(stderr, "\n");
    if (out.csv)
        fclose(out.csv);
    if (err) {
        fprintf(stderr, "shoal-sim: %s\n", ei.msg[0] ? ei.msg : shoal_strerror(err));
        json_decref(root);
        return 1;
    }
    if (o.out_dir) {
        write_summary(o.out_dir, &o, &res);
        if (strcmp(o.plot, "none"))
            write_plot(o.out_dir, o.plot);
    }
    if (!o.quiet) {
        printf("rounds %llu committed, %llu abandoned; simulated %.1f h in %.1f s wall; "
               "peak RSS %.0f MiB; %llu sessions, %llu reports, %llu dropouts\n",
               (unsigned long long)res.rounds_committed, (unsigned long long)res.rounds_abandoned,
               res.sim_time_s / 3600.0, res.wall_s, (double)res.peak_rss_bytes / 1048576.0,
               (unsigned long long)res.sessions, (unsigned long long)res.reports,
               (unsigned long long)res.dropouts);
        if (o.target > 0)
            printf("rounds_to_target(%.4f)=%d\n", o.target, res.rounds_to_target);
        if (!isnan(res.fed_eval_accuracy))
            printf("federated_eval_accuracy=%.4f\n", res.fed_eval_accuracy);
    }
    if (o.cfg.dp.clip > 0.0)
        shoal_sim_cli_dp_result(&o.cfg, &res);
    printf("final_test_accuracy=%.4f\n", res.final_test_accuracy);
    json_decref(root);
    return 0;

usage_error:
    fprintf(stderr, "Run 'shoal-sim --help' for the options.\n");
fail_silently:
    json_decref(root);
    return 2;
}
