/* server_load: clocks, the server's figures from /proc, and statistics. */
#include "server_load.h"

/* ---- clocks and /proc ------------------------------------------------------------- */

int64_t load_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The server's log stamps are CLOCK_REALTIME; so are the round mode's. */
int64_t load_real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void load_sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A "Name:   123 kB" field of /proc/PID/status in KiB; -1 when unreadable.
 * pid 0 is this process. */
long load_proc_status_kib(long pid, const char *field)
{
    char path[64], line[256];
    if (pid)
        snprintf(path, sizeof path, "/proc/%ld/status", pid);
    else
        snprintf(path, sizeof path, "/proc/self/status");
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

double load_mib(long kib)
{
    return kib < 0 ? NAN : (double)kib / 1024.0;
}

/* utime + stime of a process in seconds, from /proc/PID/stat; NAN when
 * unreadable. */
double load_proc_cpu_s(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return NAN;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces: fields count from its ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return NAN;
    unsigned long long ut = 0, st = 0;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return NAN;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

double load_self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

long load_proc_fd_count(long pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/fd", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

void load_proc_threads(long pid, thread_cpu *out)
{
    memset(out, 0, sizeof *out);
    char path[96];
    snprintf(path, sizeof path, "/proc/%ld/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) && out->n < MAX_THREADS) {
        if (e->d_name[0] == '.')
            continue;
        long tid = strtol(e->d_name, NULL, 10);
        char buf[1024];
        snprintf(path, sizeof path, "/proc/%ld/task/%ld/stat", pid, tid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        char *open = strchr(buf, '('), *close = strrchr(buf, ')');
        unsigned long long ut = 0, st = 0;
        if (!open || !close ||
            sscanf(close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) !=
                2)
            continue;
        int i = out->n++;
        out->tid[i] = tid;
        snprintf(out->name[i], sizeof out->name[i], "%.*s", (int)(close - open - 1), open + 1);
        out->cpu_s[i] = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    closedir(d);
}

/* Prints each thread's CPU between two snapshots, busiest first, and
 * returns the main thread's: in shoal-server it runs the libwebsockets
 * service loop, so all TLS and socket I/O. */
double load_print_thread_cpu(const char *mode, long pid, const thread_cpu *a, const thread_cpu *b)
{
    double d[MAX_THREADS], service = NAN;
    int order[MAX_THREADS];
    for (int i = 0; i < b->n; i++) {
        d[i] = b->cpu_s[i];
        for (int j = 0; j < a->n; j++)
            if (a->tid[j] == b->tid[i])
                d[i] -= a->cpu_s[j];
        order[i] = i;
        if (b->tid[i] == pid)
            service = d[i];
    }
    for (int i = 1; i < b->n; i++)
        for (int j = i; j > 0 && d[order[j]] > d[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    printf("%s: server CPU by thread:", mode);
    for (int k = 0; k < b->n && k < 8; k++) {
        int i = order[k];
        if (d[i] < 0.05)
            break;
        printf(" %s %ld%s %.1f s;", b->name[i], b->tid[i],
               b->tid[i] == pid ? " (main: lws service loop)" : "", d[i]);
    }
    printf("\n");
    return service;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double load_median(double *v, size_t n)
{
    if (!n)
        return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

pthread_t load_spawn(void *(*fn)(void *), void *arg, size_t stack)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, stack);
    pthread_t t;
    int rc = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        fprintf(stderr, "server_load: pthread_create: %s\n", strerror(rc));
        exit(1);
    }
    return t;
}
