/* Shoal: levelled logging with a replaceable sink.
 *
 * The level check happens before any formatting, so a disabled SHOAL_DEBUG
 * costs one comparison. Never log keys, shares, masks, tokens, model updates
 * or examples. */
#ifndef SHOAL_LOG_H
#define SHOAL_LOG_H

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* syslog-style levels: lower is more severe. */
typedef enum shoal_log_level {
    SHOAL_LOG_ERROR = 3,
    SHOAL_LOG_WARN = 4,
    SHOAL_LOG_NOTICE = 5,
    SHOAL_LOG_INFO = 6,
    SHOAL_LOG_DEBUG = 7,
} shoal_log_level;

/* A sink receives one formatted line without a trailing newline. It may be
 * called from any thread that logs; it must be thread-safe itself. */
typedef void (*shoal_log_sink)(void *ctx, shoal_log_level level, const char *component,
                               const char *line);

/* Messages above `level` are dropped. Default SHOAL_LOG_NOTICE, or the value
 * of the SHOAL_LOG environment variable (error, warn, notice, info, debug)
 * read on the first log call. Thread-safe (atomic). */
SHOAL_API void shoal_log_set_level(shoal_log_level level);
SHOAL_API shoal_log_level shoal_log_get_level(void);

/* Replaces the sink; NULL restores the default (stderr, with a timestamp).
 * Not synchronised with concurrent logging: set it once at start-up. */
SHOAL_API void shoal_log_set_sink(shoal_log_sink sink, void *ctx);

/* Parses "error", "warn", "notice", "info" or "debug". */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_log_level_parse(const char *name, shoal_log_level *out);

SHOAL_API void shoal_log_write(shoal_log_level level, const char *component, const char *fmt, ...)
    SHOAL_PRINTF(3, 4);

#define SHOAL_LOG(level, component, ...)                                                           \
    do {                                                                                           \
        if ((level) <= shoal_log_get_level())                                                      \
            shoal_log_write((level), (component), __VA_ARGS__);                                    \
    } while (0)

#define SHOAL_ERROR(c, ...)  SHOAL_LOG(SHOAL_LOG_ERROR, c, __VA_ARGS__)
#define SHOAL_WARN(c, ...)   SHOAL_LOG(SHOAL_LOG_WARN, c, __VA_ARGS__)
#define SHOAL_NOTICE(c, ...) SHOAL_LOG(SHOAL_LOG_NOTICE, c, __VA_ARGS__)
#define SHOAL_INFO(c, ...)   SHOAL_LOG(SHOAL_LOG_INFO, c, __VA_ARGS__)
#define SHOAL_DEBUG(c, ...)  SHOAL_LOG(SHOAL_LOG_DEBUG, c, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif
