/* Shoal device SDK: the porting layer.
 *
 * The SDK reaches the operating system only through one shoal_port: a
 * struct of function pointers, each taking the port's `ctx`, that the app or
 * platform fills in (like sqlite3_vfs or libsodium's
 * randombytes_implementation). Every member is marked REQUIRED or OPTIONAL;
 * an optional member may be NULL and the SDK then uses the stated default.
 *
 * Ports shipped with the SDK:
 *   shoal/port_posix.h  the reference port for Linux and other POSIX
 *                       systems (non-blocking sockets with poll,
 *                       clock_gettime, getrandom, /sys/class/power_supply);
 *   shoal/port_test.h   a deterministic port for tests and simulation.
 *
 * Socket I/O never blocks: send and recv return a byte count or one of the
 * SHOAL_PORT_IO_* codes, which are exactly the codes shoal_tls's transport
 * callbacks use (shoal/tls.h), as with mbedtls_ssl_set_bio. A blocking
 * driver (shoal_client_run) waits with the optional `wait` member; an
 * event-loop driver (shoal_client_step) waits however it likes.
 *
 * Thread safety: the SDK calls a port from the thread that drives the
 * client; a port used by several clients on different threads must be
 * thread-safe itself. This header includes no OS header.
 *
 * Memory is not a port member: every Shoal allocation (the client, the
 * models, the store's buffers, the protocol's messages) goes through the
 * one process-wide hook of shoal/alloc.h (shoal_alloc_set, before any
 * Shoal object exists), because the layers under the client allocate
 * outside any one client. SQLite and mbedTLS have process-wide hooks of
 * their own (sqlite3_config(SQLITE_CONFIG_MALLOC, ...) before SQLite is
 * first used; mbedtls_platform_set_calloc_free when mbedTLS is built with
 * MBEDTLS_PLATFORM_MEMORY). docs/sdk.md, "Memory". */
#ifndef SHOAL_PORT_H
#define SHOAL_PORT_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What send/recv return besides a byte count (> 0); equal to
 * SHOAL_TLS_IO_AGAIN, SHOAL_TLS_IO_CLOSED and SHOAL_TLS_IO_ERROR. */
#define SHOAL_PORT_IO_AGAIN  (-(int)SHOAL_EAGAIN)
#define SHOAL_PORT_IO_CLOSED (-(int)SHOAL_ECLOSED)
#define SHOAL_PORT_IO_ERROR  (-(int)SHOAL_EIO)

/* The kind of network the device is on. */
typedef enum shoal_net_kind {
    SHOAL_NET_UNKNOWN = 0,
    SHOAL_NET_NONE,      /* no network */
    SHOAL_NET_METERED,   /* cellular, a metered hotspot */
    SHOAL_NET_UNMETERED, /* Wi-Fi, Ethernet */
} shoal_net_kind;

/* An open connection, opaque to the SDK. */
typedef struct shoal_port_conn shoal_port_conn;

typedef struct shoal_port {
    /* Passed to every function below; owned by whoever filled the port. */
    void *ctx;

    /* REQUIRED. Milliseconds of a monotonic clock (never goes back; any
     * origin). Deadlines and rate limits are measured with it. */
    int64_t (*monotonic_ms)(void *ctx);
    /* REQUIRED. Wall-clock time, unix milliseconds (for the absolute next
     * check-in time in shoal_session_result). */
    int64_t (*wall_ms)(void *ctx);
    /* REQUIRED. Fills buf with len bytes from a cryptographically secure
     * source (getrandom, SecRandomCopyBytes, a hardware TRNG). SHOAL_OK or
     * an error, which fails the session with SHOAL_ECRYPTO. Seeds TLS, the
     * WebSocket masks and the choice of the next check-in time. */
    shoal_err (*random)(void *ctx, uint8_t *buf, size_t len);

    /* OPTIONAL (NULL: unknown). Battery level 0..100, or -1 if unknown. */
    int (*battery_percent)(void *ctx);
    /* OPTIONAL (NULL: unknown). 1 charging (or full on external power),
     * 0 on battery, -1 unknown. */
    int (*charging)(void *ctx);
    /* OPTIONAL (NULL: SHOAL_NET_UNKNOWN). The current network. */
    shoal_net_kind (*network)(void *ctx);
    /* OPTIONAL (NULL: unknown). 1 when the user is not using the device
     * (screen off, no input for a while), 0 when in use, -1 unknown. */
    int (*idle)(void *ctx);

    /* REQUIRED. Starts a non-blocking TCP connection to host:port (host is
     * a name or address) and returns its handle in *conn. It may return
     * before the connection is established: send then returns
     * SHOAL_PORT_IO_AGAIN until it is. Returns SHOAL_OK; SHOAL_ENOTFOUND
     * (host does not resolve), SHOAL_EIO (refused, unreachable), with ei
     * (may be NULL) saying what failed. */
    shoal_err (*connect)(void *ctx, const char *host, uint16_t port, shoal_port_conn **conn,
                         shoal_errinfo *ei);
    /* REQUIRED. Sends up to len (> 0) bytes; never blocks. Returns the
     * bytes taken (1..len), SHOAL_PORT_IO_AGAIN (0 means the same), or
     * SHOAL_PORT_IO_ERROR. Must never raise SIGPIPE. */
    int (*send)(void *ctx, shoal_port_conn *conn, const uint8_t *buf, size_t len);
    /* REQUIRED. Receives up to len (> 0) bytes; never blocks. Returns the
     * bytes stored (1..len), SHOAL_PORT_IO_AGAIN, 0 or SHOAL_PORT_IO_CLOSED
     * when the peer closed, or SHOAL_PORT_IO_ERROR. */
    int (*recv)(void *ctx, shoal_port_conn *conn, uint8_t *buf, size_t len);
    /* REQUIRED. Closes the connection and frees the handle. */
    void (*close)(void *ctx, shoal_port_conn *conn);
    /* OPTIONAL (needed by shoal_client_run only). Waits until conn is
     * readable (or, with want_write, writable) or timeout_ms (>= 0)
     * passed. SHOAL_OK (ready, or may be: a spurious wake-up is fine),
     * SHOAL_ETIMEDOUT, SHOAL_EIO. */
    shoal_err (*wait)(void *ctx, shoal_port_conn *conn, int want_write, int timeout_ms);

    /* OPTIONAL (NULL: silent). Receives the SDK's log lines; level is
     * syslog-style (3 error, 4 warning, 5 notice, 6 info, 7 debug). The SDK
     * never logs tokens, keys, model updates or examples. */
    void (*log)(void *ctx, int level, const char *message);
} shoal_port;

/* Checks that every REQUIRED member of port is set. SHOAL_OK, or
 * SHOAL_EINVAL with ei naming the first missing member. Thread-safe. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_port_check(const shoal_port *port, shoal_errinfo *ei);

#ifdef __cplusplus
}
#endif

#endif
