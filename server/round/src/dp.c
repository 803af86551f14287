/* DP-FedAvg's clip and noisy mean (see shoal/round_dp.h). */
#include <math.h>

#include "shoal/dp_noise.h"
#include "shoal/robust.h"
#include "shoal/round_dp.h"

shoal_err shoal_round_dp_config_check(const shoal_round_dp_config *cfg, shoal_errinfo *ei)
{
    if (!cfg)
        return SHOAL_EINVAL;
    if (!(cfg->clip > 0.0) || !isfinite(cfg->clip))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "dp clip: must be a positive finite L2 norm, got %g", cfg->clip);
    if (!(cfg->noise_multiplier >= 0.0) || !isfinite(cfg->noise_multiplier))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "dp noise multiplier: must be a finite number >= 0, got %g",
                                 cfg->noise_multiplier);
    if (!(cfg->expected_reports > 0.0) || !isfinite(cfg->expected_reports))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "dp expected reports: must be positive (q x N), got %g",
                                 cfg->expected_reports);
    return SHOAL_OK;
}

shoal_err shoal_round_dp_clip(float *update, size_t d, double clip, double *norm)
{
    /* shoal_robust_clip never leaves the norm above the clip, which the
     * sensitivity needs. */
    return shoal_robust_clip(update, d, clip, norm);
}

shoal_err shoal_round_dp_mean(float *sum, size_t d, const shoal_round_dp_config *cfg, float *mean,
                              shoal_errinfo *ei)
{
    shoal_err err = shoal_round_dp_config_check(cfg, ei);
    if (err)
        return err;
    if ((!sum || !mean) && d > 0)
        return SHOAL_EINVAL;
    for (size_t i = 0; i < d; i++)
        if (!isfinite(sum[i]))
            return shoal_errinfo_set(ei, SHOAL_ENUMERIC, "dp: coordinate %zu of the sum is %g", i,
                                     (double)sum[i]);
    if (cfg->noise_multiplier > 0.0 &&
        (err = shoal_dp_add_gaussian_noise(sum, d, cfg->noise_multiplier * cfg->clip)))
        return shoal_errinfo_set(ei, err, "dp: the noise could not be drawn: %s",
                                 shoal_strerror(err));
    const double inv = 1.0 / cfg->expected_reports;
    for (size_t i = 0; i < d; i++)
        mean[i] = (float)((double)sum[i] * inv);
    return SHOAL_OK;
}

shoal_err shoal_round_dp_ftrl_mean(shoal_dp_tree *tree, float *sum, size_t d,
                                   const shoal_round_dp_config *cfg, int64_t *scratch, float *mean,
                                   shoal_errinfo *ei)
{
    shoal_err err = shoal_round_dp_config_check(cfg, ei);
    if (err)
        return err;
    if (!tree || ((!sum || !mean || !scratch) && d > 0))
        return SHOAL_EINVAL;
    const double stddev = cfg->noise_multiplier * cfg->clip;
    if (!(stddev > 0.0) || tree->dim != d || tree->stddev != stddev)
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "dp-ftrl: the tree has %zu coordinates and noise %g; the round "
                                 "needs %zu and noise multiplier x clip = %g (> 0)",
                                 tree->dim, tree->stddev, d, stddev);
    for (size_t i = 0; i < d; i++)
        if (!isfinite(sum[i]))
            return shoal_errinfo_set(ei, SHOAL_ENUMERIC, "dp: coordinate %zu of the sum is %g", i,
                                     (double)sum[i]);
    if ((err = shoal_dp_tree_advance(tree, scratch, NULL)))
        return shoal_errinfo_set(ei, err, "dp-ftrl: the tree's noise could not be drawn: %s",
                                 shoal_strerror(err));
    const double grid = stddev / SHOAL_DP_NOISE_SIGMA, scale = grid / cfg->expected_reports;
    for (size_t i = 0; i < d; i++)
        mean[i] = (float)((nearbyint((double)sum[i] / grid) + (double)scratch[i]) * scale);
    return SHOAL_OK;
}

shoal_err shoal_round_dp_adaptive_update_noise(double z, double count_noise, double *z_update,
                                               shoal_errinfo *ei)
{
    if (!z_update)
        return SHOAL_EINVAL;
    if (!(z > 0.0) || !isfinite(z) || !(2.0 * count_noise > z) || !isfinite(count_noise))
        return shoal_errinfo_set(ei, SHOAL_EINVAL,
                                 "dp adaptive clipping: the count's noise (%g) must be above half "
                                 "the noise multiplier z (%g), or the count takes all the privacy; "
                                 "raise the count noise or lower z",
                                 count_noise, z);
    const double inv = 1.0 / (z * z) - 1.0 / (4.0 * count_noise * count_noise);
    *z_update = 1.0 / sqrt(inv);
    return SHOAL_OK;
}

shoal_err shoal_round_dp_noised_fraction(uint64_t unclipped, uint64_t reports, double expected,
                                         double count_noise, double *fraction)
{
    if (!fraction || unclipped > reports || !(expected > 0.0) || !isfinite(expected) ||
        !(count_noise >= 0.0) || !isfinite(count_noise))
        return SHOAL_EINVAL;
    /* Each device's bit as b - 1/2: the sum moves by at most 1/2. */
    float centred = (float)((double)unclipped - 0.5 * (double)reports);
    shoal_err err =
        count_noise > 0.0 ? shoal_dp_add_gaussian_noise(&centred, 1, count_noise) : SHOAL_OK;
    if (err)
        return err;
    *fraction = (double)centred / expected + 0.5;
    return SHOAL_OK;
}

double shoal_round_dp_adaptive_clip(double clip, double fraction, double target_quantile,
                                    double rate)
{
    return clip * exp(-rate * (fraction - target_quantile));
}
