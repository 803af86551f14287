/* Attacking devices: a fixed fraction of the population that sends a
 * poisoned update instead of its own (untargeted model poisoning: Blanchard
 * et al. 2017, Gaussian; Bhagoji et al. 2019, boosting by a factor; Li et
 * al. 2019, sign flipping). */
#include <math.h>

#include "population_int.h"
#include "shoal/rng.h"

/* How much the scale attack boosts an update. */
#define ATTACK_SCALE 100.0f

/* Evenly spaced from a seeded offset, so that exactly floor or ceil of
 * F x clients devices attack, whatever the population size. */
int shoal_sim_device_attacks(const shoal_sim_config *cfg, uint32_t device)
{
    const double f = cfg->robust.attackers;
    if (cfg->robust.attack == SHOAL_SIM_ATTACK_NONE || !(f > 0.0))
        return 0;
    shoal_rng r;
    shoal_rng_derive(&r, cfg->seed ^ 0xA77AC4ULL, 0);
    const double offset = shoal_rng_double(&r);
    return floor((double)(device + 1) * f + offset) > floor((double)device * f + offset);
}

void shoal_sim_attack_update(const shoal_sim_config *cfg, uint64_t session, float *update, size_t d)
{
    shoal_rng r;
    switch (cfg->robust.attack) {
    case SHOAL_SIM_ATTACK_SIGN_FLIP:
        for (size_t i = 0; i < d; i++)
            update[i] = -update[i];
        break;
    case SHOAL_SIM_ATTACK_SCALE:
        for (size_t i = 0; i < d; i++)
            update[i] *= ATTACK_SCALE;
        break;
    case SHOAL_SIM_ATTACK_NOISE:
        shoal_rng_derive(&r, cfg->seed ^ 0x6A0551ULL, session);
        for (size_t i = 0; i < d; i++)
            update[i] = (float)shoal_rng_normal(&r);
        break;
    case SHOAL_SIM_ATTACK_NONE:
        break;
    }
}
