/* Shoal device SDK: the reference POSIX port (Linux first).
 *
 * Sockets are non-blocking TCP (O_NONBLOCK, MSG_NOSIGNAL) waited on with
 * poll(); the clocks are clock_gettime(CLOCK_MONOTONIC) and
 * clock_gettime(CLOCK_REALTIME); random bytes come from getrandom(2).
 * Battery level and charging come from /sys/class/power_supply when a
 * battery is listed there, otherwise from the values in the config (a
 * desktop or a container has none). Network kind and idleness always come
 * from the config: POSIX has no portable way to learn them.
 *
 *     shoal_posix_port_config pc = {.battery_percent = -1, .charging = 1,
 *                                   .network = SHOAL_NET_UNMETERED, .idle = 1};
 *     shoal_port port;
 *     shoal_posix_port_init(&pc, &port, &ei);
 *     ... shoal_client_new(&cfg, &port, &client, &ei) ...
 *     shoal_posix_port_fini(&port);
 *
 * The port's state may be used by several threads at once. */
#ifndef SHOAL_PORT_POSIX_H
#define SHOAL_PORT_POSIX_H

#include "shoal/port.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_posix_port_config {
    /* Where to look for power supplies. NULL: "/sys/class/power_supply";
     * "" : never look (use the values below). */
    const char *power_supply_dir;
    /* Used when no battery is found: 0..100 or -1 unknown. */
    int battery_percent;
    /* Used when no power supply says otherwise: 1, 0 or -1 unknown. */
    int charging;
    shoal_net_kind network; /* reported as is */
    int idle;               /* reported as is: 1, 0 or -1 unknown */
    /* Optional log sink and its context; NULL: silent. */
    void (*log)(void *log_ctx, int level, const char *message);
    void *log_ctx;
} shoal_posix_port_config;

/* Fills *port with the POSIX port; cfg is copied (NULL: everything
 * unknown). Returns SHOAL_OK, SHOAL_EINVAL (NULL port, a value out of
 * range), SHOAL_ENOMEM. Free with shoal_posix_port_fini. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_posix_port_init(const shoal_posix_port_config *cfg,
                                                          shoal_port *port, shoal_errinfo *ei);

/* Frees what shoal_posix_port_init allocated and clears *port. Connections
 * must have been closed first. NULL is a no-op. */
SHOAL_API void shoal_posix_port_fini(shoal_port *port);

/* Changes the config values of an initialised POSIX port (the app learnt
 * that the network or idleness changed). Thread-safe. */
SHOAL_API void shoal_posix_port_set(shoal_port *port, int charging, shoal_net_kind network,
                                    int idle);

#ifdef __cplusplus
}
#endif

#endif
