/* The device model: traits and availability of virtual device d, derived
 * on demand from (seed, d) so that a device costs no memory. */
#ifndef SHOAL_POPULATION_INT_H
#define SHOAL_POPULATION_INT_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/sim.h"

#define SIM_DAY_MS (24LL * 3600 * 1000)

struct device_traits {
    int64_t tz_offset_ms; /* local time = sim time + offset */
    double speed_mflops;
    double bandwidth_kbps;
};

void shoal_sim_device_traits(const shoal_sim_config *cfg, uint32_t device, struct device_traits *t);

/* The availability interval [*start, *end) that contains t, or the next one
 * after t. Always available devices get [t, INT64_MAX). */
void shoal_sim_device_window(const shoal_sim_config *cfg, uint32_t device,
                             const struct device_traits *t, int64_t now, int64_t *start,
                             int64_t *end);

/* Session timing: how long a device takes to download, train (or
 * evaluate) and upload. */
int64_t shoal_sim_session_ms(const shoal_sim_config *cfg, const struct device_traits *t,
                             uint64_t model_bytes, uint64_t macs_per_example, uint64_t examples,
                             int train);

/* Whether device d is one of the cfg->robust.attackers fraction of
 * attackers: floor or ceil of that fraction of the clients, spread evenly
 * over the device ids from an offset drawn from the seed. */
int shoal_sim_device_attacks(const shoal_sim_config *cfg, uint32_t device);

/* Replaces an attacker's update[0..d) by what cfg->robust.attack sends;
 * the noise derives from the seed and the session. */
void shoal_sim_attack_update(const shoal_sim_config *cfg, uint64_t session, float *update,
                             size_t d);

#endif
