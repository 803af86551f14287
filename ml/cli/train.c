/* shoal-train: centralised training of a Shoal model on Fashion-MNIST.
 *
 * The reference point for everything federated: the same layers, models
 * and optimizers, trained on the whole dataset in one place. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shoal/blas.h"
#include "shoal/dataset.h"
#include "shoal/log.h"
#include "shoal/model.h"
#include "shoal/rng.h"
#include "shoal/train.h"
#include "shoal/version.h"

static const char usage[] =
    "Usage: shoal-train [options]\n"
    "\n"
    "Trains a model on Fashion-MNIST in one place (no federation) and reports\n"
    "test accuracy after every epoch. The last line is test_accuracy=0.xxxx.\n"
    "\n"
    "Options:\n"
    "  --dataset NAME        dataset to train on; only fashion-mnist (default)\n"
    "  --data-dir DIR        directory with the four Fashion-MNIST IDX files\n"
    "                        (default " SHOAL_FASHION_MNIST_DIR ")\n"
    "  --model NAME          logreg | mlp | cnn | cnn2 (default mlp)\n"
    "  --epochs E            passes over the training set, >= 1 (default 5)\n"
    "  --batch B             mini-batch size, >= 1 (default 64)\n"
    "  --lr LR               learning rate, > 0 (default 0.05)\n"
    "  --optimizer NAME      sgd | momentum | nesterov | adagrad | rmsprop | adam\n"
    "                        (default sgd)\n"
    "  --momentum M          momentum for momentum/nesterov, in [0, 1) (default 0.9)\n"
    "  --weight-decay WD     L2 penalty, >= 0 (default 0)\n"
    "  --lr-schedule NAME    constant | cosine: cosine decays the rate from LR\n"
    "                        towards 0 over the epochs, per epoch (default constant)\n"
    "  --seed S              seed for initialisation and shuffling (default 1)\n"
    "  --threads T           threads for the GEMM backend, >= 1 (default 1)\n"
    "  --quiet               no progress bar, only the per-epoch lines\n"
    "  --help                show this text and exit\n"
    "  --version             print the version and exit\n"
    "\n"
    "Example:\n"
    "  shoal-train --model cnn --epochs 10 --batch 64 --lr 0.05 --optimizer momentum\n";

static void die_usage(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "shoal-train: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\nRun 'shoal-train --help' for the list of options.\n");
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

static float parse_float(const char *flag, const char *v)
{
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (end == v || *end || errno || !isfinite(x))
        die_usage("%s: expected a number, got '%s'", flag, v);
    return x;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct progress {
    int enabled;
    size_t total, done, batch;
    unsigned epoch;
    double start, last_draw;
};

static int should_stop_progress(void *ctx)
{
    /* Called before every batch: counts it and redraws the bar on stderr at
     * most ten times a second. Never asks training to stop. */
    struct progress *p = ctx;
    if (!p->enabled)
        return 0;
    double t = now_seconds();
    if (p->done < p->total && t - p->last_draw >= 0.1) {
        p->last_draw = t;
        double frac = (double)p->done / (double)p->total;
        int fill = (int)(frac * 30.0);
        char bar[31];
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = 0;
        double rate = t > p->start ? (double)p->done / (t - p->start) : 0.0;
        fprintf(stderr, "\repoch %u [%s] %3.0f%%  %.0f examples/s ", p->epoch, bar, frac * 100.0,
                rate);
        fflush(stderr);
    }
    p->done += p->batch;
    return 0;
}

static void progress_clear(struct progress *p)
{
    if (p->enabled)
        fprintf(stderr, "\r%70s\r", "");
}

int main(int argc, char **argv)
{
    const char *dataset_name = "fashion-mnist", *data_dir = NULL;
    const char *model_name = "mlp", *optimizer_name = "sgd";
    unsigned long epochs = 5, batch = 64, threads = 1;
    unsigned long long seed = 1;
    float lr = 0.05f, momentum = 0.9f, weight_decay = 0.0f;
    int quiet = 0, cosine = 0;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(usage, stdout);
            return 0;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("shoal-train %s\n", shoal_version());
            return 0;
        }
        if (strcmp(arg, "--quiet") == 0) {
            quiet = 1;
            continue;
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
        if (strcmp(flag, "--dataset") == 0)
            dataset_name = value;
        else if (strcmp(flag, "--data-dir") == 0)
            data_dir = value;
        else if (strcmp(flag, "--model") == 0)
            model_name = value;
        else if (strcmp(flag, "--optimizer") == 0)
            optimizer_name = value;
        else if (strcmp(flag, "--lr-schedule") == 0) {
            if (strcmp(value, "cosine") == 0)
                cosine = 1;
            else if (strcmp(value, "constant") != 0)
                die_usage("--lr-schedule: unknown schedule '%s' (choose constant or cosine)%s",
                          value, "");
        } else if (strcmp(flag, "--epochs") == 0)
            epochs = parse_uint(flag, value, 1, 100000);
        else if (strcmp(flag, "--batch") == 0)
            batch = parse_uint(flag, value, 1, 65536);
        else if (strcmp(flag, "--threads") == 0)
            threads = parse_uint(flag, value, 1, 256);
        else if (strcmp(flag, "--seed") == 0)
            seed = parse_uint(flag, value, 0, (unsigned long)-1);
        else if (strcmp(flag, "--lr") == 0)
            lr = parse_float(flag, value);
        else if (strcmp(flag, "--momentum") == 0)
            momentum = parse_float(flag, value);
        else if (strcmp(flag, "--weight-decay") == 0)
            weight_decay = parse_float(flag, value);
        else
            die_usage("unknown option '%s'%s", flag, "");
    }

    if (strcmp(dataset_name, "fashion-mnist") != 0)
        die_usage("--dataset: unknown dataset '%s' (supported: fashion-mnist)%s", dataset_name, "");
    shoal_model_arch arch;
    if (shoal_model_arch_parse(model_name, &arch) != SHOAL_OK)
        die_usage("--model: unknown model '%s' (choose logreg, mlp, cnn or cnn2)%s", model_name,
                  "");
    shoal_optim_kind okind;
    if (shoal_optim_kind_parse(optimizer_name, &okind) != SHOAL_OK)
        die_usage("--optimizer: unknown optimizer '%s' (choose sgd, momentum, nesterov, "
                  "adagrad, rmsprop or adam)%s",
                  optimizer_name, "");

    shoal_train_config cfg = {0};
    cfg.epochs = (uint32_t)epochs;
    cfg.batch = (uint32_t)batch;
    cfg.optim = shoal_optim_defaults(okind, lr);
    cfg.optim.momentum = momentum;
    cfg.optim.weight_decay = weight_decay;
    shoal_errinfo ei = {{0}};
    if (shoal_train_config_check(&cfg, &ei) != SHOAL_OK) {
        fprintf(stderr, "shoal-train: --%s\n", ei.msg);
        return 2;
    }
    shoal_blas_set_threads((int)threads);

    shoal_dataset *train = NULL, *test = NULL;
    if (shoal_dataset_load_fashion_mnist(data_dir, 1, &train, &ei) != SHOAL_OK ||
        shoal_dataset_load_fashion_mnist(data_dir, 0, &test, &ei) != SHOAL_OK) {
        fprintf(stderr, "shoal-train: %s\n", ei.msg);
        shoal_dataset_free(train);
        return 1;
    }
    float mean, stddev;
    shoal_dataset_stats(train, &mean, &stddev);
    if (shoal_dataset_normalize(train, mean, stddev) != SHOAL_OK ||
        shoal_dataset_normalize(test, mean, stddev) != SHOAL_OK) {
        fprintf(stderr, "shoal-train: training set has no variance: is it all one value?\n");
        return 1;
    }

    shoal_model *model = NULL;
    shoal_trainer *trainer = NULL;
    float *params = NULL;
    int status = 1;
    struct progress prog = {.enabled = !quiet && isatty(STDERR_FILENO)};
    cfg.should_stop = should_stop_progress;
    cfg.should_stop_ctx = &prog;
    shoal_err err = shoal_model_new(arch, train->shape, train->classes, &model);
    if (!err)
        err = shoal_trainer_new(model, &cfg, &trainer);
    if (!err && !(params = malloc(shoal_model_param_count(model) * sizeof *params)))
        err = SHOAL_ENOMEM;
    if (err) {
        fprintf(stderr, "shoal-train: cannot build model %s: %s\n", model_name,
                shoal_strerror(err));
        goto out;
    }
    shoal_model_init_params(model, seed, params);
    printf("shoal-train: %s (%zu parameters) on fashion-mnist: %zu train, %zu test; %s, "
           "lr %g%s, batch %lu, %lu epochs, seed %llu, %s GEMM x%lu\n",
           model_name, shoal_model_param_count(model), train->count, test->count, optimizer_name,
           (double)lr, cosine ? " (cosine)" : "", batch, epochs, seed, shoal_blas_backend(),
           threads);
    fflush(stdout);

    shoal_rng rng;
    shoal_rng_derive(&rng, seed, 0x5348554646ULL);
    double accuracy = 0.0, t0 = now_seconds();
    for (unsigned long e = 1; e <= epochs; e++) {
        shoal_batch_stats tr = {0}, te = {0};
        double te0 = now_seconds();
        if (cosine) {
            /* Cosine annealing (Loshchilov & Hutter 2017), one value per
             * epoch: lr * (1 + cos(pi * (e-1) / epochs)) / 2. */
            float epoch_lr =
                lr * 0.5f * (1.0f + cosf(3.14159265f * (float)(e - 1) / (float)epochs));
            if (shoal_trainer_set_lr(trainer, epoch_lr) != SHOAL_OK) {
                fprintf(stderr, "shoal-train: learning rate underflowed at epoch %lu\n", e);
                goto out;
            }
        }
        prog.epoch = (unsigned)e;
        prog.done = 0;
        prog.total = train->count;
        prog.batch = batch;
        prog.start = te0;
        err = shoal_trainer_epoch(trainer, params, NULL, train, NULL, 0, &rng, &tr);
        if (err) {
            fprintf(stderr, "shoal-train: epoch %lu failed: %s%s\n", e, shoal_strerror(err),
                    err == SHOAL_ENUMERIC ? " (training diverged: lower --lr)" : "");
            goto out;
        }
        progress_clear(&prog);
        double train_s = now_seconds() - te0;
        if ((err = shoal_trainer_evaluate(trainer, params, test, NULL, 0, &te))) {
            fprintf(stderr, "shoal-train: evaluation failed: %s\n", shoal_strerror(err));
            goto out;
        }
        accuracy = (double)te.correct / (double)te.count;
        printf("epoch %lu/%lu  train_loss %.4f  train_acc %.4f  test_loss %.4f  test_acc %.4f  "
               "%.1fs (%.0f examples/s)\n",
               e, epochs, tr.loss_sum / (double)tr.count, (double)tr.correct / (double)tr.count,
               te.loss_sum / (double)te.count, accuracy, train_s, (double)tr.count / train_s);
        fflush(stdout);
    }
    printf("total %.1fs\n", now_seconds() - t0);
    printf("test_accuracy=%.4f\n", accuracy);
    status = 0;
out:
    free(params);
    shoal_trainer_free(trainer);
    shoal_model_free(model);
    shoal_dataset_free(train);
    shoal_dataset_free(test);
    return status;
}
