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
    if (!update && d > 0)
        return SHOAL_EINVAL;
    shoal_err err = shoal_robust_clip(update, d, clip, norm);
    if (err)
        return err;
    /* Rounding each scaled float can leave the norm a few ulps above the
     * clip; the sensitivity must not exceed it, so shrink once more by the
     * excess and a margin far below the noise. */
    for (int tries = 0; tries < 4; tries++) {
        double after = shoal_robust_norm(update, d);
        if (after <= clip)
            break;
        const double scale = clip / after * (1.0 - 0x1p-20);
        for (size_t i = 0; i < d; i++)
            update[i] = (float)(update[i] * scale);
    }
    return SHOAL_OK;
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
