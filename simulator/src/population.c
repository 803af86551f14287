#include <math.h>

#include "population_int.h"
#include "shoal/rng.h"

/* Distinct RNG streams per purpose, so that changing one draw does not
 * shift the others. */
enum { STREAM_TRAITS = 1, STREAM_DAY = 2 };

static uint64_t stream_seed(uint64_t seed, uint64_t purpose)
{
    return seed ^ (purpose * 0x9E3779B97F4A7C15ULL);
}

void shoal_sim_device_traits(const shoal_sim_config *cfg, uint32_t device, struct device_traits *t)
{
    shoal_rng r;
    shoal_rng_derive(&r, stream_seed(cfg->seed, STREAM_TRAITS), device);
    t->tz_offset_ms = (int64_t)(shoal_rng_double(&r) * (double)SIM_DAY_MS);
    double zs = shoal_rng_normal(&r), zb = shoal_rng_normal(&r);
    t->speed_mflops = cfg->compute_mflops * exp(cfg->speed_sigma * zs);
    t->bandwidth_kbps = cfg->bandwidth_kbps * exp(cfg->speed_sigma * zb);
}

/* The windows of local day `day`: the main one and an optional extra hour. */
static void day_windows(const shoal_sim_config *cfg, uint32_t device, int64_t day, int64_t w[2][2],
                        int *n)
{
    shoal_rng r;
    shoal_rng_derive(&r, stream_seed(cfg->seed, STREAM_DAY),
                     ((uint64_t)device << 20) ^ (uint64_t)(day & 0xFFFFF));
    const double hour = 3600.0 * 1000.0;
    double start = cfg->avail_start_hour + 4.0 * (shoal_rng_double(&r) - 0.5);
    double len = cfg->avail_hours * (0.75 + 0.5 * shoal_rng_double(&r));
    int64_t base = day * SIM_DAY_MS;
    w[0][0] = base + (int64_t)(start * hour);
    w[0][1] = w[0][0] + (int64_t)(len * hour);
    *n = 1;
    if (shoal_rng_double(&r) < cfg->avail_extra) {
        w[1][0] = base + (int64_t)(shoal_rng_double(&r) * 23.0 * hour);
        w[1][1] = w[1][0] + (int64_t)hour;
        *n = 2;
    }
}

void shoal_sim_device_window(const shoal_sim_config *cfg, uint32_t device,
                             const struct device_traits *t, int64_t now, int64_t *start,
                             int64_t *end)
{
    if (cfg->avail_hours >= 24.0) {
        *start = now;
        *end = INT64_MAX;
        return;
    }
    int64_t local = now + t->tz_offset_ms;
    int64_t day = local >= 0 ? local / SIM_DAY_MS : -((-local + SIM_DAY_MS - 1) / SIM_DAY_MS);
    /* Windows can start late in one day and run into the next: look at the
     * previous day too, and far enough ahead to find the next window. */
    int64_t best_s = INT64_MAX, best_e = INT64_MAX;
    for (int64_t d = day - 1; d <= day + 2; d++) {
        int64_t w[2][2];
        int n;
        day_windows(cfg, device, d, w, &n);
        for (int i = 0; i < n; i++) {
            if (w[i][1] <= local)
                continue;
            int64_t s = w[i][0] > local ? w[i][0] : local;
            if (s < best_s || (s == best_s && w[i][1] > best_e)) {
                best_s = s;
                best_e = w[i][1];
            }
        }
    }
    *start = best_s - t->tz_offset_ms;
    *end = best_e - t->tz_offset_ms;
}

int64_t shoal_sim_session_ms(const shoal_sim_config *cfg, const struct device_traits *t,
                             uint64_t model_bytes, uint64_t macs_per_example, uint64_t examples,
                             int train)
{
    double bits = (double)model_bytes * 8.0;
    double net_s = bits / (t->bandwidth_kbps * 1000.0);
    /* A training step costs about three forward passes (forward, backward
     * through activations, backward through weights); 2 flops per MAC. */
    double flops = 2.0 * (double)macs_per_example * (double)examples *
                   (train ? 3.0 * (double)cfg->train.epochs : 1.0);
    double compute_s = flops / (t->speed_mflops * 1e6);
    double total = net_s * (train ? 2.0 : 1.0) + compute_s;
    return (int64_t)ceil(total * 1000.0) + 1;
}
