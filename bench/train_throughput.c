/* train_throughput: training examples per second of one epoch of local SGD.
 *
 * The workload is what a device does in a round: shoal_trainer_epoch over
 * Fashion-MNIST (shuffled index permutation, each batch gathered into the
 * trainer's batch buffer, forward, backward, plain SGD step). The baseline
 * is bench/torch_train_throughput.py, the same workload in PyTorch; the two
 * print the same line format and bench/run_train_throughput runs them
 * interleaved and prints the ratio.
 *
 * Against the hardware: each line also gives the GFLOP/s the training step
 * achieves (shoal_model_train_flops_per_example, counted from the layer
 * shapes, times examples per second) next to the GFLOP/s of one large
 * square SGEMM on the same backend and threads, measured in the same
 * process (median of several), and the 1-minute load average. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shoal/blas.h"
#include "shoal/dataset.h"
#include "shoal/model.h"
#include "shoal/rng.h"
#include "shoal/train.h"

static const char usage[] =
    "Usage: train_throughput [options]\n"
    "\n"
    "Times one epoch of local SGD (lr 0.01, no momentum) on the Fashion-MNIST\n"
    "training set and prints one line per repeat and a median line:\n"
    "  impl=shoal model=M batch=B threads=T examples=K repeat=R seconds=S "
    "ex_per_s=X loss=L\n"
    "    gflops=G sgemm_gflops=P of_sgemm=G/P load=A\n"
    "where G is the training step's GFLOP/s (the model's forward and backward\n"
    "GEMM FLOPs per example times X), P the GFLOP/s of an NxN SGEMM on the same\n"
    "backend and threads measured right before the repeat (median of 5), and A\n"
    "the 1-minute load average when the repeat ended. The median line gives\n"
    "the medians of each column over the repeats.\n"
    "\n"
    "Options:\n"
    "  --model NAME        mlp | cnn (also logreg, cnn2) (default mlp)\n"
    "  --batch B           mini-batch size, >= 1 (default 64)\n"
    "  --threads T         OpenBLAS threads, >= 1 (default 1)\n"
    "  --repeats N         timed epochs, each from the same initial model (default 3)\n"
    "  --examples K        examples per epoch, the first K of the training set\n"
    "                      (default 60000, all of it)\n"
    "  --warmup-steps S    untimed batches before the first repeat (default 10)\n"
    "  --data-dir DIR      Fashion-MNIST IDX files (default " SHOAL_FASHION_MNIST_DIR ")\n"
    "  --seed S            initialisation and shuffling seed (default 1)\n"
    "  --sgemm-size N      side of the square SGEMM baseline, 0 to skip it\n"
    "                      (default 1024)\n"
    "  --help              show this text and exit\n";

static void die_usage(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "train_throughput: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\nRun 'train_throughput --help' for the list of options.\n");
    exit(2);
}

static unsigned long parse_uint(const char *flag, const char *v, unsigned long min,
                                unsigned long max)
{
    char *end;
    errno = 0;
    if (*v == '-' || *v == '+')
        die_usage("%s: expected a whole number, got '%s'", flag, v);
    unsigned long x = strtoul(v, &end, 10);
    if (end == v || *end || errno)
        die_usage("%s: expected a whole number, got '%s'", flag, v);
    if (x < min || x > max) {
        char range[96];
        snprintf(range, sizeof range, "%s: %lu is out of range [%lu, %lu]", flag, x, min, max);
        die_usage("%s%s", range, "");
    }
    return x;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, size_t n)
{
    qsort(values, n, sizeof *values, compare_double);
    return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

/* The 1-minute load average, as uptime prints it (Linux's /proc/loadavg);
 * -1 where there is none. */
static double load_average(void)
{
    double load = -1.0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &load) != 1)
            load = -1.0;
        fclose(f);
    }
    return load;
}

/* GFLOP/s of C = A * B with n x n matrices on the configured GEMM backend and
 * threads: the median of `runs` products after one untimed one. */
static double sgemm_gflops(size_t n, int runs)
{
    float *a = malloc(n * n * sizeof *a), *b = malloc(n * n * sizeof *b),
          *c = malloc(n * n * sizeof *c);
    double rates[16], result = 0.0;
    if (a && b && c && runs > 0 && runs <= 16) {
        shoal_rng rng;
        shoal_rng_seed(&rng, 42);
        for (size_t i = 0; i < n * n; i++) {
            a[i] = shoal_rng_float(&rng) - 0.5f;
            b[i] = shoal_rng_float(&rng) - 0.5f;
        }
        for (int r = -1; r < runs; r++) {
            double t0 = now_seconds();
            shoal_gemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            double seconds = now_seconds() - t0;
            if (r >= 0)
                rates[r] = 2.0 * (double)n * (double)n * (double)n / seconds * 1e-9;
        }
        result = median(rates, (size_t)runs);
    }
    free(a);
    free(b);
    free(c);
    return result;
}

int main(int argc, char **argv)
{
    const char *model_name = "mlp", *data_dir = NULL;
    unsigned long batch = 64, threads = 1, repeats = 3, examples = 60000, warmup_steps = 10;
    unsigned long sgemm_size = 1024;
    unsigned long long seed = 1;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (strncmp(arg, "--", 2) != 0)
            die_usage("unexpected argument '%s'%s", arg, "");
        const char *value;
        char flag[64];
        const char *eq = strchr(arg, '=');
        if (eq) {
            size_t n = (size_t)(eq - arg);
            if (n >= sizeof flag)
                die_usage("unknown option '%s'%s", arg, "");
            memcpy(flag, arg, n);
            flag[n] = 0;
            value = eq + 1;
        } else {
            snprintf(flag, sizeof flag, "%s", arg);
            if (i + 1 >= argc)
                die_usage("%s needs a value%s", arg, "");
            value = argv[++i];
        }
        if (strcmp(flag, "--model") == 0)
            model_name = value;
        else if (strcmp(flag, "--batch") == 0)
            batch = parse_uint(flag, value, 1, 65536);
        else if (strcmp(flag, "--threads") == 0)
            threads = parse_uint(flag, value, 1, 256);
        else if (strcmp(flag, "--repeats") == 0)
            repeats = parse_uint(flag, value, 1, 1000);
        else if (strcmp(flag, "--examples") == 0)
            examples = parse_uint(flag, value, 1, 100000000);
        else if (strcmp(flag, "--warmup-steps") == 0)
            warmup_steps = parse_uint(flag, value, 0, 1000000);
        else if (strcmp(flag, "--data-dir") == 0)
            data_dir = value;
        else if (strcmp(flag, "--sgemm-size") == 0)
            sgemm_size = parse_uint(flag, value, 0, 8192);
        else if (strcmp(flag, "--seed") == 0)
            seed = parse_uint(flag, value, 0, (unsigned long)-1);
        else
            die_usage("unknown option '%s'%s", flag, "");
    }

    shoal_model_arch arch;
    if (shoal_model_arch_parse(model_name, &arch) != SHOAL_OK)
        die_usage("--model: unknown model '%s' (choose mlp or cnn)%s", model_name, "");

    shoal_train_config cfg = {0};
    cfg.epochs = 1;
    cfg.batch = (uint32_t)batch;
    cfg.optim = shoal_optim_defaults(SHOAL_OPTIM_SGD, 0.01f);
    shoal_blas_set_threads((int)threads);

    shoal_errinfo ei = {{0}};
    shoal_dataset *train = NULL;
    if (shoal_dataset_load_fashion_mnist(data_dir, 1, &train, &ei) != SHOAL_OK) {
        fprintf(stderr, "train_throughput: %s\n", ei.msg);
        return 1;
    }
    if (examples > train->count) {
        fprintf(stderr,
                "train_throughput: --examples %lu: the training set holds only %zu examples\n",
                examples, train->count);
        shoal_dataset_free(train);
        return 2;
    }
    /* Standardised inputs, as shoal-train and the PyTorch side use. */
    float mean, stddev;
    shoal_dataset_stats(train, &mean, &stddev);
    if (shoal_dataset_normalize(train, mean, stddev) != SHOAL_OK) {
        fprintf(stderr, "train_throughput: the training set has no variance\n");
        shoal_dataset_free(train);
        return 1;
    }

    int status = 1;
    shoal_model *model = NULL;
    shoal_trainer *trainer = NULL;
    float *params = NULL;
    uint32_t *subset = NULL;
    double *rates = NULL, *times = NULL, *peaks = NULL, *shares = NULL;
    shoal_err err = shoal_model_new(arch, train->shape, train->classes, &model);
    if (!err)
        err = shoal_trainer_new(model, &cfg, &trainer);
    if (!err && !(params = malloc(shoal_model_param_count(model) * sizeof *params)))
        err = SHOAL_ENOMEM;
    if (!err && !(subset = malloc(examples * sizeof *subset)))
        err = SHOAL_ENOMEM;
    if (!err &&
        (!(rates = malloc(repeats * sizeof *rates)) || !(times = malloc(repeats * sizeof *times)) ||
         !(peaks = malloc(repeats * sizeof *peaks)) ||
         !(shares = malloc(repeats * sizeof *shares))))
        err = SHOAL_ENOMEM;
    if (err) {
        fprintf(stderr, "train_throughput: cannot build model %s: %s\n", model_name,
                shoal_strerror(err));
        goto out;
    }
    for (size_t i = 0; i < examples; i++)
        subset[i] = (uint32_t)i;

    shoal_rng rng;
    shoal_rng_derive(&rng, seed, 0x5348554646ULL);
    /* Warm-up: faults in the workspace and starts OpenBLAS's thread pool,
     * as the PyTorch side's warm-up does for its allocator. */
    size_t warmup_examples = warmup_steps * batch < examples ? warmup_steps * batch : examples;
    if (warmup_steps) {
        shoal_model_init_params(model, seed, params);
        shoal_batch_stats warm_stats = {0};
        err = shoal_trainer_epoch(trainer, params, NULL, train, subset, warmup_examples, &rng,
                                  &warm_stats);
        if (err) {
            fprintf(stderr, "train_throughput: warm-up failed: %s\n", shoal_strerror(err));
            goto out;
        }
    }

    const double flops = (double)shoal_model_train_flops_per_example(model);
    printf("# backend=%s sgemm n=%lu threads=%lu; model %s: %.3f MFLOP per example per "
           "training step; load=%.2f\n",
           shoal_blas_backend(), sgemm_size, threads, model_name, flops * 1e-6, load_average());

    for (unsigned long r = 0; r < repeats; r++) {
        /* The hardware baseline right before each epoch, so that both see
         * the same load on a shared machine. */
        const double peak = sgemm_size ? sgemm_gflops(sgemm_size, 5) : 0.0;
        /* Every repeat trains the same model from the same start. */
        shoal_model_init_params(model, seed, params);
        shoal_batch_stats stats = {0};
        double t0 = now_seconds();
        err = shoal_trainer_epoch(trainer, params, NULL, train, subset, examples, &rng, &stats);
        double seconds = now_seconds() - t0;
        if (err) {
            fprintf(stderr, "train_throughput: epoch failed: %s\n", shoal_strerror(err));
            goto out;
        }
        times[r] = seconds;
        rates[r] = (double)examples / seconds;
        double gflops = flops * rates[r] * 1e-9;
        peaks[r] = peak;
        shares[r] = peak > 0 ? gflops / peak : 0.0;
        printf("impl=shoal model=%s batch=%lu threads=%lu examples=%lu repeat=%lu "
               "seconds=%.4f ex_per_s=%.1f loss=%.4f gflops=%.2f sgemm_gflops=%.1f "
               "of_sgemm=%.3f load=%.2f\n",
               model_name, batch, threads, examples, r + 1, seconds, rates[r],
               stats.loss_sum / (double)stats.count, gflops, peak, shares[r], load_average());
        fflush(stdout);
    }
    double median_seconds = median(times, repeats), median_rate = median(rates, repeats);
    double median_gflops = flops * median_rate * 1e-9;
    double median_peak = median(peaks, repeats), median_share = median(shares, repeats);
    printf("impl=shoal model=%s batch=%lu threads=%lu examples=%lu repeat=median "
           "seconds=%.4f ex_per_s=%.1f gflops=%.2f sgemm_gflops=%.1f of_sgemm=%.3f "
           "load=%.2f\n",
           model_name, batch, threads, examples, median_seconds, median_rate, median_gflops,
           median_peak, median_share, load_average());
    status = 0;
out:
    free(rates);
    free(peaks);
    free(shares);
    free(times);
    free(subset);
    free(params);
    shoal_trainer_free(trainer);
    shoal_model_free(model);
    shoal_dataset_free(train);
    return status;
}
