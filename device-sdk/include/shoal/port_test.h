/* Shoal device SDK: a deterministic port for tests and simulation.
 *
 * Everything a test wants to script is a plain field of shoal_test_port:
 *   - the clocks: each call of monotonic_ms returns `monotonic_ms` and then
 *     advances it by `monotonic_step_ms` (0: time stands still unless the
 *     test moves it); wall_ms returns `wall_ms` + the monotonic time passed;
 *   - random bytes from a xoshiro256** stream seeded with `seed` (NOT
 *     secure: tests only);
 *   - eligibility: battery, charging, network, idle; and a scripted flip:
 *     after `charging_flip_after` calls of charging() (0: never), charging
 *     becomes `charging_after`;
 *   - transport: connect/send/recv/close/wait are forwarded to the
 *     `transport` port (e.g. the POSIX port, to reach a real server in
 *     process, or a test's own in-memory pipe); with NULL, connect fails
 *     with SHOAL_EIO. Every byte sent is appended to `sent` when
 *     `record_sent` is set.
 * Counters (`connects`, `charging_polls`) let a test check what the SDK
 * did. Not thread-safe. */
#ifndef SHOAL_PORT_TEST_H
#define SHOAL_PORT_TEST_H

#include "shoal/port.h"
#include "shoal/rng.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_test_port {
    int64_t monotonic_ms;
    int64_t monotonic_step_ms;
    int64_t wall_ms; /* at monotonic time 0 */
    uint64_t seed;

    int battery_percent; /* -1 unknown */
    int charging;        /* 1, 0, -1 unknown */
    shoal_net_kind network;
    int idle; /* 1, 0, -1 unknown */
    unsigned charging_flip_after;
    int charging_after;

    const shoal_port *transport;
    int record_sent;

    /* Out: what happened. */
    unsigned connects;
    unsigned charging_polls;
    uint8_t *sent; /* shoal_malloc'd; freed by shoal_test_port_fini */
    size_t sent_len;
    size_t sent_cap;
    int record_failed; /* the recording ran out of memory */

    shoal_rng rng; /* private */

    /* Added in 0.3. Out: bytes the transport took and gave (all
     * connections). */
    uint64_t bytes_sent;
    uint64_t bytes_received;
    /* Optional hook, called before every send (sending 1) and recv
     * (sending 0) is forwarded: it may change the port's fields (flip
     * `network` mid-transfer) and returns 0 to forward the call, or a
     * SHOAL_PORT_IO_* code to return instead without calling the
     * transport (cut the connection after so many bytes). */
    int (*io_hook)(void *hook_ctx, struct shoal_test_port *tp, int sending, size_t len);
    void *hook_ctx;
} shoal_test_port;

/* Sets defaults: clock at 1000 ms stepping 1 ms per call, wall clock
 * 2026-01-01, seed 1, battery 100 %, charging, unmetered, idle, no flip,
 * no transport, no recording. */
SHOAL_API void shoal_test_port_init(shoal_test_port *tp);

/* Fills *port with functions reading and updating *tp (borrowed: it must
 * outlive the port's use). Call after changing `seed` to reseed. */
SHOAL_API void shoal_test_port_bind(shoal_test_port *tp, shoal_port *port);

/* Frees the recording. NULL is a no-op. */
SHOAL_API void shoal_test_port_fini(shoal_test_port *tp);

#ifdef __cplusplus
}
#endif

#endif
