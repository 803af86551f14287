/* Shoal: the project's one error type.
 *
 * Every function that can fail returns a shoal_err and is marked
 * SHOAL_NODISCARD; results come back through out-parameters. SHOAL_OK is 0,
 * errors are positive, and statuses that are not errors (SHOAL_ROW,
 * SHOAL_DONE) sit above SHOAL_STATUS_BASE, outside the error range. */
#ifndef SHOAL_ERR_H
#define SHOAL_ERR_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define SHOAL_NODISCARD         __attribute__((warn_unused_result))
#define SHOAL_API               __attribute__((visibility("default")))
#define SHOAL_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define SHOAL_NODISCARD
#define SHOAL_API
#define SHOAL_PRINTF(fmt, args)
#endif

typedef enum shoal_err {
    SHOAL_OK = 0,
    SHOAL_ENOMEM,    /* an allocation failed */
    SHOAL_EINVAL,    /* an argument or configuration value is invalid */
    SHOAL_EIO,       /* reading or writing a file or socket failed */
    SHOAL_EFORMAT,   /* input data is malformed (bad magic, truncated, corrupt) */
    SHOAL_EPROTO,    /* a peer violated the protocol */
    SHOAL_ECRYPTO,   /* a cryptographic operation failed */
    SHOAL_ETIMEDOUT, /* a deadline passed */
    SHOAL_ECLOSED,   /* the connection or object was closed */
    SHOAL_EAGAIN,    /* would block; try again later */
    SHOAL_EAUTH,     /* authentication failed */
    SHOAL_ELIMIT,    /* a configured limit was exceeded */
    SHOAL_ENOTFOUND, /* the named thing does not exist */
    SHOAL_ESTATE,    /* the call is not valid in the object's current state */
    SHOAL_ENUMERIC,  /* a computation produced NaN or Inf */
    SHOAL_ECANCELED, /* the caller asked the work to stop (not a failure) */
    SHOAL_ERR_COUNT_,

    SHOAL_STATUS_BASE = 100,
    SHOAL_ROW = SHOAL_STATUS_BASE, /* one more item is available */
    SHOAL_DONE,                    /* iteration or work is complete */
} shoal_err;

/* Returns a short, static, English description of err (never NULL; unknown
 * values give "unknown error"). Thread-safe. */
SHOAL_API const char *shoal_strerror(shoal_err err);

/* Returns the symbolic name of err ("SHOAL_EINVAL"), or "SHOAL_E?" for an
 * unknown value. Thread-safe. */
SHOAL_API const char *shoal_err_name(shoal_err err);

/* Detail for an error a person will read: what was wrong, where, and what
 * to do ("train.idx: truncated: header says 60000 images, file holds 1200").
 * Functions that parse user input take an optional shoal_errinfo * (NULL is
 * allowed) and fill it when they fail. Caller-allocated; no cleanup. */
#define SHOAL_ERRINFO_LEN 512
typedef struct shoal_errinfo {
    char msg[SHOAL_ERRINFO_LEN];
} shoal_errinfo;

/* Formats a message into ei (no-op when ei is NULL) and returns err, so that
 * `return shoal_errinfo_set(ei, SHOAL_EFORMAT, "%s: ...", path);` reads well. */
SHOAL_API shoal_err shoal_errinfo_set(shoal_errinfo *ei, shoal_err err, const char *fmt, ...)
    SHOAL_PRINTF(3, 4);

#ifdef __cplusplus
}
#endif

#endif
