/* shoal-device: the reference device program for Linux and IoT boards.
 *
 *   import  fills the device's example store from IDX or CSV files,
 *           optionally only one shard: the shard shoal-sim and
 *           shoal-fleet give client i of n (same partitioner, same seed),
 *           normalised as they normalise (mean/sd of the whole training
 *           file), so the model trains on the device as in the simulator;
 *   info    prints what a store holds;
 *   run     runs sessions with shoal_client_run against a shoal-server,
 *           sleeping until the next check-in the server's retry window
 *           gives, with one progress line per session on stderr;
 *   eval    evaluates a model file (little-endian float32, as the server's
 *           GET /v1/populations/<name>/model serves it) on Fashion-MNIST's
 *           test split: what scripts/federate prints per round.
 *
 * Exit status: 0 done, 1 a runtime failure (a file, the store, the server
 * refusing the device for good), 2 a bad command line. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shoal/alloc.h"
#include "shoal/client.h"
#include "shoal/dataset.h"
#include "shoal/model.h"
#include "shoal/partition.h"
#include "shoal/port_posix.h"
#include "shoal/store.h"
#include "shoal/version.h"

static const char usage[] =
    "usage: shoal-device import --store FILE --collection NAME SOURCE [shard options]\n"
    "       shoal-device info   --store FILE [--collection NAME]\n"
    "       shoal-device run    --store FILE --port PORT --ca FILE --population NAME\n"
    "                           --token-file FILE [options]\n"
    "       shoal-device eval   --model FILE --arch ARCH [--data-dir DIR]\n"
    "       shoal-device --version\n"
    "\n"
    "import SOURCE (one of):\n"
    "  --idx IMAGES LABELS    IDX files, gzip-compressed or plain\n"
    "  --fashion-mnist DIR    Fashion-MNIST's training split in DIR\n"
    "  --csv FILE             label,f1,f2,... per line\n"
    "import options:\n"
    "  --shard I/N            only client I's shard of N (0 <= I < N)\n"
    "  --partition SCHEME     iid, dirichlet, shards, ... (default dirichlet)\n"
    "  --alpha A              dirichlet concentration (default 0.5)\n"
    "  --seed S               partition seed (default 1, as shoal-fleet)\n"
    "  --classes K            number of classes (default: max label + 1)\n"
    "  --no-normalize         store the features as read\n"
    "  --replace              drop the collection's examples first\n"
    "run options:\n"
    "  --host HOST            server address (default 127.0.0.1)\n"
    "  --server-name NAME     DNS name in the server certificate (default localhost)\n"
    "  --sessions N           stop after N sessions (default: no limit)\n"
    "  --until-version V      stop once a session trained on model version >= V\n"
    "  --max-wait-ms MS       cap on the wait between sessions (default: none)\n"
    "  --assume-charging      charging when /sys has no battery (default unknown)\n"
    "  --assume-unmetered     the network is unmetered (default unknown)\n"
    "  --assume-idle          the device is idle (default unknown)\n"
    "  --battery PERCENT      battery level when /sys has no battery\n"
    "  --require-charging, --require-unmetered, --require-idle, --min-battery P\n"
    "                         the eligibility policy (default: always eligible)\n"
    "  --state FILE           the device state database: retry windows kept across\n"
    "                         restarts, the operational log, uploads to resume\n"
    "  --max-examples N       most examples one session trains on\n"
    "  --budget-memory BYTES  memory for a session's local work (default: none)\n"
    "  --quiet                no progress lines\n";

static const char *prog = "shoal-device";

static int bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", prog);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see --help)\n");
    return 2;
}

static int parse_u64(const char *flag, const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s || v > max || s[0] == '-') {
        fprintf(stderr, "%s: %s: '%s' is not an integer from 0 to %llu\n", prog, flag, s,
                (unsigned long long)max);
        return -1;
    }
    *out = v;
    return 0;
}

static int64_t now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reads a whole file as a NUL-terminated string; the error names it. */
static char *read_file(const char *what, const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s %s: %s\n", prog, what, path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
        if (len + 1 == cap) {
            char *more = cap < (64u << 20) ? realloc(buf, cap * 2) : NULL;
            if (!more) {
                free(buf);
                buf = NULL;
                fprintf(stderr, "%s: %s %s: too large\n", prog, what, path);
                fclose(f);
                return NULL;
            }
            buf = more;
            cap *= 2;
        }
    }
    int failed = ferror(f);
    fclose(f);
    if (!buf || failed) {
        free(buf);
        fprintf(stderr, "%s: %s %s: cannot read it\n", prog, what, path);
        return NULL;
    }
    buf[len] = '\0';
    if (len_out)
        *len_out = len;
    return buf;
}

/* ---- import ------------------------------------------------------------------------- */

static int cmd_import(int argc, char **argv)
{
    const char *store_path = NULL, *collection = NULL, *idx_images = NULL, *idx_labels = NULL,
               *fmnist_dir = NULL, *csv = NULL;
    uint64_t shard = 0, shards = 0, seed = 1, classes = 0;
    int sharded = 0, normalize = 1, replace = 0;
    shoal_partition_kind kind = SHOAL_PARTITION_DIRICHLET;
    double alpha = 0.5;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--no-normalize") == 0) {
            normalize = 0;
            continue;
        }
        if (strcmp(a, "--replace") == 0) {
            replace = 1;
            continue;
        }
        if (strcmp(a, "--idx") == 0) {
            if (i + 2 >= argc)
                return bad_usage("%s needs two files: IMAGES LABELS", a);
            idx_images = argv[++i];
            idx_labels = argv[++i];
            continue;
        }
        if (i + 1 >= argc)
            return bad_usage("%s needs a value", a);
        const char *val = argv[++i];
        if (strcmp(a, "--store") == 0)
            store_path = val;
        else if (strcmp(a, "--collection") == 0)
            collection = val;
        else if (strcmp(a, "--fashion-mnist") == 0)
            fmnist_dir = val;
        else if (strcmp(a, "--csv") == 0)
            csv = val;
        else if (strcmp(a, "--shard") == 0) {
            char *end;
            errno = 0;
            shard = strtoull(val, &end, 10);
            if (errno || end == val || *end != '/' || val[0] == '-')
                return bad_usage("--shard: '%s' is not I/N", val);
            const char *n = end + 1;
            shards = strtoull(n, &end, 10);
            if (errno || end == n || *end || n[0] == '-' || shards == 0 || shards > 1000000 ||
                shard >= shards)
                return bad_usage("--shard: '%s' must be I/N with 0 <= I < N <= 1000000", val);
            sharded = 1;
        } else if (strcmp(a, "--partition") == 0) {
            if (shoal_partition_kind_parse(val, &kind) != SHOAL_OK)
                return bad_usage("--partition: unknown scheme '%s'", val);
        } else if (strcmp(a, "--alpha") == 0) {
            char *end;
            alpha = strtod(val, &end);
            if (*end || end == val || !(alpha > 0) || !isfinite(alpha))
                return bad_usage("--alpha: '%s' must be a positive number", val);
        } else if (strcmp(a, "--seed") == 0) {
            if (parse_u64(a, val, UINT64_MAX, &seed))
                return 2;
        } else if (strcmp(a, "--classes") == 0) {
            if (parse_u64(a, val, 65536, &classes))
                return 2;
        } else
            return bad_usage("import: unknown option '%s'", a);
    }
    if (!store_path || !collection)
        return bad_usage("import: --store and --collection are required%s", "");
    if ((idx_images != NULL) + (fmnist_dir != NULL) + (csv != NULL) != 1)
        return bad_usage("import: give exactly one of --idx, --fashion-mnist, --csv%s", "");

    shoal_errinfo ei = {0};
    shoal_dataset *ds = NULL;
    shoal_err err;
    if (idx_images)
        err = shoal_dataset_load_idx(idx_images, idx_labels, (uint32_t)classes, &ds, &ei);
    else if (fmnist_dir)
        err = shoal_dataset_load_fashion_mnist(fmnist_dir, 1, &ds, &ei);
    else
        err = shoal_dataset_load_csv(csv, (uint32_t)classes, &ds, &ei);
    if (err) {
        fprintf(stderr, "%s: %s\n", prog, ei.msg[0] ? ei.msg : shoal_strerror(err));
        return 1;
    }
    /* Statistics over the whole training file, as shoal-fleet and shoal-sim
     * take them, whatever shard this device keeps. */
    float mean = 0, sd = 1;
    if (normalize) {
        shoal_dataset_stats(ds, &mean, &sd);
        if (shoal_dataset_normalize(ds, mean, sd) != SHOAL_OK) {
            fprintf(stderr, "%s: the features are constant (sd 0): use --no-normalize\n", prog);
            shoal_dataset_free(ds);
            return 1;
        }
    }
    shoal_partition *part = NULL;
    const uint32_t *indices = NULL;
    size_t count = ds->count;
    if (sharded) {
        shoal_partition_config pc = shoal_partition_defaults(kind);
        pc.alpha = alpha;
        if (shoal_partition_new(&pc, ds->y, ds->count, ds->classes, (uint32_t)shards, seed, &part,
                                &ei) != SHOAL_OK) {
            fprintf(stderr, "%s: --shard: %s\n", prog, ei.msg);
            shoal_dataset_free(ds);
            return 1;
        }
        indices = part->indices + part->offsets[shard];
        count = part->offsets[shard + 1] - part->offsets[shard];
    }

    shoal_store *st = NULL;
    int rc = 1;
    shoal_example *examples = NULL;
    if (shoal_store_open(store_path, NULL, &st, &ei) != SHOAL_OK) {
        fprintf(stderr, "%s: %s\n", prog, ei.msg);
        goto out;
    }
    shoal_store_criteria all = {.collection = collection};
    uint64_t existing = 0;
    if (shoal_store_count(st, &all, &existing, &ei) != SHOAL_OK) {
        fprintf(stderr, "%s: %s\n", prog, ei.msg);
        goto out;
    }
    if (existing && !replace) {
        fprintf(stderr,
                "%s: %s: collection '%s' already holds %llu examples: add --replace to "
                "import afresh\n",
                prog, store_path, collection, (unsigned long long)existing);
        goto out;
    }
    if (existing && shoal_store_drop_collection(st, collection, &ei) != SHOAL_OK) {
        fprintf(stderr, "%s: %s\n", prog, ei.msg);
        goto out;
    }
    /* One transaction per block: a crash leaves whole blocks, and memory
     * stays bounded. */
    const size_t block = 4096;
    examples = calloc(block, sizeof *examples);
    if (!examples)
        goto out;
    int64_t now = now_unix_ms();
    for (size_t done = 0; done < count;) {
        size_t n = count - done < block ? count - done : block;
        for (size_t k = 0; k < n; k++) {
            size_t row = indices ? indices[done + k] : done + k;
            examples[k] = (shoal_example){.features = ds->x + row * ds->features,
                                          .feature_count = ds->features,
                                          .label = ds->y[row],
                                          .timestamp_ms = now};
        }
        if (shoal_store_add_batch(st, collection, examples, n, now, &ei) != SHOAL_OK) {
            fprintf(stderr, "%s: %s\n", prog, ei.msg);
            goto out;
        }
        done += n;
    }
    fprintf(stderr, "%s: imported %zu examples (%zu features, %u classes%s) into %s '%s'\n", prog,
            count, ds->features, ds->classes, normalize ? ", normalised" : "", store_path,
            collection);
    rc = 0;
out:
    free(examples);
    shoal_store_close(st);
    shoal_partition_free(part);
    shoal_dataset_free(ds);
    return rc;
}

/* ---- info --------------------------------------------------------------------------- */

static int cmd_info(int argc, char **argv)
{
    const char *store_path = NULL, *collection = NULL;
    for (int i = 0; i < argc; i++) {
        if (i + 1 >= argc)
            return bad_usage("%s needs a value", argv[i]);
        if (strcmp(argv[i], "--store") == 0)
            store_path = argv[++i];
        else if (strcmp(argv[i], "--collection") == 0)
            collection = argv[++i];
        else
            return bad_usage("info: unknown option '%s'", argv[i]);
    }
    if (!store_path)
        return bad_usage("info: --store is required%s", "");
    shoal_errinfo ei = {0};
    shoal_store *st = NULL;
    if (shoal_store_open(store_path, NULL, &st, &ei) != SHOAL_OK) {
        fprintf(stderr, "%s: %s\n", prog, ei.msg);
        return 1;
    }
    int rc = 0;
    if (collection) {
        shoal_store_collection_info info;
        shoal_err err = shoal_store_describe(st, collection, &info, &ei);
        if (err == SHOAL_ENOTFOUND)
            printf("collection %s: 0 examples\n", collection);
        else if (err) {
            fprintf(stderr, "%s: %s\n", prog, ei.msg);
            rc = 1;
        } else
            printf("collection %s: %llu examples, %zu features, %llu payload bytes\n", collection,
                   (unsigned long long)info.example_count, info.feature_count,
                   (unsigned long long)info.payload_bytes);
    } else {
        shoal_store_criteria all = {0};
        uint64_t n = 0;
        if (shoal_store_count(st, &all, &n, &ei) != SHOAL_OK) {
            fprintf(stderr, "%s: %s\n", prog, ei.msg);
            rc = 1;
        } else
            printf("store %s: %llu examples\n", store_path, (unsigned long long)n);
    }
    shoal_store_close(st);
    return rc;
}

/* ---- run ---------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Sleeps ms, waking early when a stop is requested. */
static void sleep_ms(uint64_t ms)
{
    while (ms > 0 && !stop_requested) {
        uint64_t step = ms < 100 ? ms : 100;
        struct timespec ts = {0, (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* The sessions' reasons that another session would meet again: the
 * server refuses this device's token, population or SDK version, or the
 * server's certificate is not the pinned CA's. */
static int gives_up(shoal_session_reason reason)
{
    switch (reason) {
    case SHOAL_SESSION_REASON_AUTH_FAILED:
    case SHOAL_SESSION_REASON_UNKNOWN_POPULATION:
    case SHOAL_SESSION_REASON_VERSION_UNSUPPORTED:
    case SHOAL_SESSION_REASON_SERVER_UNTRUSTED:
        return 1;
    default:
        return 0;
    }
}

static int cmd_run(int argc, char **argv)
{
    shoal_client_config cfg = {.host = "127.0.0.1", .server_name = "localhost"};
    shoal_posix_port_config pc = {.battery_percent = -1, .charging = -1, .idle = -1};
    const char *ca_file = NULL, *token_file = NULL;
    uint64_t sessions = 0, until_version = 0, max_wait_ms = UINT64_MAX, v;
    int have_until = 0, quiet = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--assume-charging") == 0)
            pc.charging = 1;
        else if (strcmp(a, "--assume-unmetered") == 0)
            pc.network = SHOAL_NET_UNMETERED;
        else if (strcmp(a, "--assume-idle") == 0)
            pc.idle = 1;
        else if (strcmp(a, "--require-charging") == 0)
            cfg.policy.require_charging = 1;
        else if (strcmp(a, "--require-unmetered") == 0)
            cfg.policy.require_unmetered = 1;
        else if (strcmp(a, "--require-idle") == 0)
            cfg.policy.require_idle = 1;
        else if (strcmp(a, "--quiet") == 0)
            quiet = 1;
        else {
            if (i + 1 >= argc)
                return bad_usage("%s needs a value", a);
            const char *val = argv[++i];
            if (strcmp(a, "--store") == 0)
                cfg.store_path = val;
            else if (strcmp(a, "--host") == 0)
                cfg.host = val;
            else if (strcmp(a, "--server-name") == 0)
                cfg.server_name = val;
            else if (strcmp(a, "--ca") == 0)
                ca_file = val;
            else if (strcmp(a, "--population") == 0)
                cfg.population = val;
            else if (strcmp(a, "--token-file") == 0)
                token_file = val;
            else if (strcmp(a, "--port") == 0) {
                if (parse_u64(a, val, 65535, &v))
                    return 2;
                if (v == 0)
                    return bad_usage("--port: '%s' is not an integer from 1 to 65535", val);
                cfg.port = (uint16_t)v;
            } else if (strcmp(a, "--sessions") == 0) {
                if (parse_u64(a, val, UINT64_MAX, &sessions))
                    return 2;
            } else if (strcmp(a, "--until-version") == 0) {
                if (parse_u64(a, val, UINT64_MAX, &until_version))
                    return 2;
                have_until = 1;
            } else if (strcmp(a, "--max-wait-ms") == 0) {
                if (parse_u64(a, val, 86400000, &max_wait_ms))
                    return 2;
            } else if (strcmp(a, "--battery") == 0) {
                if (parse_u64(a, val, 100, &v))
                    return 2;
                pc.battery_percent = (int)v;
            } else if (strcmp(a, "--min-battery") == 0) {
                if (parse_u64(a, val, 100, &v))
                    return 2;
                cfg.policy.min_battery_percent = (int)v;
            } else if (strcmp(a, "--state") == 0) {
                cfg.state_path = val;
            } else if (strcmp(a, "--max-examples") == 0) {
                if (parse_u64(a, val, UINT64_MAX, &cfg.max_examples))
                    return 2;
            } else if (strcmp(a, "--budget-memory") == 0) {
                if (parse_u64(a, val, UINT64_MAX, &cfg.budget_session_bytes))
                    return 2;
            } else
                return bad_usage("run: unknown option '%s'", a);
        }
    }
    if (!cfg.store_path || !cfg.port || !ca_file || !cfg.population || !token_file)
        return bad_usage("run: --store, --port, --ca, --population and --token-file are required%s",
                         "");

    size_t ca_len = 0, token_len = 0;
    char *ca = read_file("--ca", ca_file, &ca_len);
    if (!ca)
        return 1;
    if (!strstr(ca, "-----BEGIN CERTIFICATE-----")) {
        fprintf(stderr, "%s: --ca %s: no PEM certificate in it\n", prog, ca_file);
        free(ca);
        return 1;
    }
    char *token = read_file("--token-file", token_file, &token_len);
    if (!token) {
        free(ca);
        return 1;
    }
    while (token_len && (token[token_len - 1] == '\n' || token[token_len - 1] == '\r'))
        token[--token_len] = '\0';
    if (!token_len) {
        fprintf(stderr, "%s: --token-file %s: empty file\n", prog, token_file);
        free(ca);
        free(token);
        return 1;
    }
    /* The store must exist: the client opens it read-only per session, and
     * a typo would otherwise only show as INSUFFICIENT_DATA forever. */
    FILE *probe = fopen(cfg.store_path, "rb");
    if (!probe) {
        fprintf(stderr, "%s: --store %s: %s (create it with shoal-device import)\n", prog,
                cfg.store_path, strerror(errno));
        free(ca);
        free(token);
        return 1;
    }
    fclose(probe);
    cfg.ca_pem = ca;
    cfg.ca_pem_len = ca_len;
    cfg.auth_token = (const uint8_t *)token;
    cfg.auth_token_len = token_len;

    shoal_errinfo ei = {0};
    shoal_port port;
    shoal_client *client = NULL;
    int rc = 1;
    if (shoal_posix_port_init(&pc, &port, &ei) != SHOAL_OK) {
        fprintf(stderr, "%s: %s\n", prog, ei.msg);
        goto free_files;
    }
    if (shoal_client_new(&cfg, &port, &client, &ei) != SHOAL_OK) {
        fprintf(stderr, "%s: %s\n", prog, ei.msg);
        goto fini;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    rc = 0;
    for (uint64_t n = 1; !stop_requested && (sessions == 0 || n <= sessions); n++) {
        shoal_session_result res;
        if (shoal_client_run(client, &res) != SHOAL_OK) {
            fprintf(stderr, "%s: cannot run a session\n", prog);
            rc = 1;
            break;
        }
        uint64_t wait = res.next_checkin_ms < max_wait_ms ? res.next_checkin_ms : max_wait_ms;
        if (!quiet) {
            fprintf(stderr, "%s: session %llu: %s", prog, (unsigned long long)n,
                    shoal_session_outcome_name(res.outcome));
            if (res.round &&
                (res.outcome == SHOAL_SESSION_TRAINED || res.outcome == SHOAL_SESSION_EVALUATED ||
                 res.outcome == SHOAL_SESSION_INTERRUPTED))
                fprintf(stderr, " round %llu examples %llu loss %.4f",
                        (unsigned long long)res.round, (unsigned long long)res.example_count,
                        res.loss);
            if (res.upload_resumed)
                fprintf(stderr, " (upload resumed at byte %llu)",
                        (unsigned long long)res.upload_resume_offset);
            if (res.outcome == SHOAL_SESSION_TRAINED && res.unclipped >= 0)
                fprintf(stderr, " (update %s the round's clip)",
                        res.unclipped ? "within" : "clipped to");
            if (res.outcome == SHOAL_SESSION_ERROR || res.outcome == SHOAL_SESSION_REJECTED ||
                res.outcome == SHOAL_SESSION_INELIGIBLE || res.outcome == SHOAL_SESSION_NOT_YET ||
                res.outcome == SHOAL_SESSION_INTERRUPTED ||
                res.outcome == SHOAL_SESSION_OVER_BUDGET)
                fprintf(stderr, " (%s)", res.errinfo.msg[0] ? res.errinfo.msg : "no detail");
            fprintf(stderr, " next check-in %llu ms\n", (unsigned long long)wait);
        }
        /* Refusals that waiting will not cure end the program. */
        if (gives_up(res.session_reason)) {
            fprintf(stderr, "%s: giving up (%s): %s\n", prog,
                    shoal_session_reason_name(res.session_reason), res.errinfo.msg);
            rc = 1;
            break;
        }
        /* Round r trains on the checkpoint round r-1 committed (the
         * client does not expose the checkpoint's version itself). */
        if (have_until && res.round > until_version &&
            (res.outcome == SHOAL_SESSION_TRAINED || res.outcome == SHOAL_SESSION_EVALUATED)) {
            if (!quiet)
                fprintf(stderr, "%s: model version %llu reached\n", prog,
                        (unsigned long long)until_version);
            break;
        }
        if (sessions && n == sessions)
            break;
        sleep_ms(wait);
    }
    shoal_client_free(client);
fini:
    shoal_posix_port_fini(&port);
free_files:
    free(ca);
    free(token);
    return rc;
}

/* ---- eval --------------------------------------------------------------------------- */

static int cmd_eval(int argc, char **argv)
{
    const char *model_file = NULL, *arch_name = NULL, *data_dir = NULL;
    for (int i = 0; i < argc; i++) {
        if (i + 1 >= argc)
            return bad_usage("%s needs a value", argv[i]);
        if (strcmp(argv[i], "--model") == 0)
            model_file = argv[++i];
        else if (strcmp(argv[i], "--arch") == 0)
            arch_name = argv[++i];
        else if (strcmp(argv[i], "--data-dir") == 0)
            data_dir = argv[++i];
        else
            return bad_usage("eval: unknown option '%s'", argv[i]);
    }
    if (!model_file || !arch_name)
        return bad_usage("eval: --model and --arch are required%s", "");
    shoal_model_arch arch;
    if (shoal_model_arch_parse(arch_name, &arch) != SHOAL_OK)
        return bad_usage("--arch: unknown architecture '%s' (logreg, mlp, cnn, cnn2)", arch_name);
    shoal_errinfo ei = {0};
    shoal_dataset *train = NULL, *test = NULL;
    shoal_model *model = NULL;
    shoal_model_ws *ws = NULL;
    char *bytes = NULL;
    float *params = NULL;
    int rc = 1;
    if (shoal_dataset_load_fashion_mnist(data_dir, 1, &train, &ei) != SHOAL_OK ||
        shoal_dataset_load_fashion_mnist(data_dir, 0, &test, &ei) != SHOAL_OK) {
        fprintf(stderr, "%s: %s\n", prog, ei.msg);
        goto out;
    }
    float mean, sd;
    shoal_dataset_stats(train, &mean, &sd);
    if (shoal_dataset_normalize(test, mean, sd) != SHOAL_OK ||
        shoal_model_new(arch, test->shape, test->classes, &model) != SHOAL_OK)
        goto out;
    size_t len = 0, count = shoal_model_param_count(model);
    if (!(bytes = read_file("--model", model_file, &len)))
        goto out;
    if (len != count * sizeof(float)) {
        fprintf(stderr, "%s: --model %s: %zu bytes, a %s model has %zu parameters (%zu bytes)\n",
                prog, model_file, len, arch_name, count, count * sizeof(float));
        goto out;
    }
    params = malloc(len);
    if (!params)
        goto out;
    /* The file is little-endian float32. */
    for (size_t i = 0; i < count; i++) {
        const unsigned char *p = (const unsigned char *)bytes + 4 * i;
        uint32_t u =
            (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        memcpy(&params[i], &u, 4);
    }
    shoal_batch_stats stats = {0};
    if (shoal_model_ws_new(model, 500, &ws) != SHOAL_OK)
        goto out;
    for (size_t i = 0; i < test->count; i += 500) {
        size_t n = test->count - i < 500 ? test->count - i : 500;
        if (shoal_model_eval(model, ws, params, test->x + i * test->features, test->y + i, n,
                             &stats) != SHOAL_OK)
            goto out;
    }
    printf("test_accuracy %.4f test_loss %.4f\n", (double)stats.correct / (double)stats.count,
           stats.loss_sum / (double)stats.count);
    rc = 0;
out:
    shoal_model_ws_free(ws);
    shoal_model_free(model);
    free(params);
    free(bytes);
    shoal_dataset_free(train);
    shoal_dataset_free(test);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return bad_usage("a subcommand is required: import, info, run or eval%s", "");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0) {
        printf("shoal-device %s\n", shoal_version());
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0) {
            fputs(usage, stdout);
            return 0;
        }
    if (strcmp(cmd, "import") == 0)
        return cmd_import(argc - 2, argv + 2);
    if (strcmp(cmd, "info") == 0)
        return cmd_info(argc - 2, argv + 2);
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 2, argv + 2);
    if (strcmp(cmd, "eval") == 0)
        return cmd_eval(argc - 2, argv + 2);
    return bad_usage("unknown subcommand '%s' (import, info, run, eval)", cmd);
}
