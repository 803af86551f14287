#include "shoal/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* 0 means "not yet read from the environment". */
static atomic_int current_level;
static shoal_log_sink current_sink;
static void *current_ctx;

static const char *const level_names[] = {
    [SHOAL_LOG_ERROR] = "error", [SHOAL_LOG_WARN] = "warn",   [SHOAL_LOG_NOTICE] = "notice",
    [SHOAL_LOG_INFO] = "info",   [SHOAL_LOG_DEBUG] = "debug",
};

shoal_err shoal_log_level_parse(const char *name, shoal_log_level *out)
{
    if (!name || !out)
        return SHOAL_EINVAL;
    for (int l = SHOAL_LOG_ERROR; l <= SHOAL_LOG_DEBUG; l++) {
        if (strcmp(name, level_names[l]) == 0) {
            *out = (shoal_log_level)l;
            return SHOAL_OK;
        }
    }
    return SHOAL_EINVAL;
}

void shoal_log_set_level(shoal_log_level level)
{
    atomic_store(&current_level, (int)level);
}

shoal_log_level shoal_log_get_level(void)
{
    int l = atomic_load_explicit(&current_level, memory_order_relaxed);
    if (l == 0) {
        shoal_log_level parsed = SHOAL_LOG_NOTICE;
        const char *env = getenv("SHOAL_LOG");
        if (env && shoal_log_level_parse(env, &parsed) != SHOAL_OK)
            parsed = SHOAL_LOG_NOTICE;
        int expected = 0;
        atomic_compare_exchange_strong(&current_level, &expected, (int)parsed);
        l = atomic_load(&current_level);
    }
    return (shoal_log_level)l;
}

void shoal_log_set_sink(shoal_log_sink sink, void *ctx)
{
    current_sink = sink;
    current_ctx = ctx;
}

static void default_sink(void *ctx, shoal_log_level level, const char *component, const char *line)
{
    (void)ctx;
    struct timespec ts;
    struct tm tm;
    char stamp[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %-6s %s: %s\n", stamp, ts.tv_nsec / 1000000L, level_names[level],
            component ? component : "shoal", line);
}

void shoal_log_write(shoal_log_level level, const char *component, const char *fmt, ...)
{
    if (level < SHOAL_LOG_ERROR || level > SHOAL_LOG_DEBUG || level > shoal_log_get_level())
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    shoal_log_sink sink = current_sink ? current_sink : default_sink;
    sink(current_sink ? current_ctx : NULL, level, component, line);
}
