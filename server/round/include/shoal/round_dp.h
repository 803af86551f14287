/* Shoal: the server's step of DP-FedAvg (McMahan, Ramage, Talwar, Zhang
 * 2018, "Learning differentially private recurrent language models",
 * algorithm 1 with the fixed-denominator estimator), as pure functions the
 * simulator and the server share.
 *
 * Each device clips its whole update to L2 norm S (shoal_round_dp_clip),
 * so one device changes the sum by at most S. The server adds Gaussian
 * noise of standard deviation z x S to the sum, once per round
 * (shoal_dp_add_gaussian_noise: exact discrete-Gaussian grid noise), and
 * divides by the EXPECTED number of reports q x N, not the realised one:
 * the realised count depends on who took part, and dividing by it would
 * leak through the denominator what the noise hides in the numerator.
 * Every report counts once, whatever its example count.
 *
 * The privacy of the result is what shoal_rdp_accountant (shoal/privacy.h)
 * composes for rate q and multiplier z, under Poisson sampling.
 *
 * Thread-safe on distinct buffers; no allocation. */
#ifndef SHOAL_ROUND_DP_H
#define SHOAL_ROUND_DP_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/dp_ftrl.h"
#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct shoal_round_dp_config {
    double clip;             /* S: every update's L2 norm bound, > 0 */
    double noise_multiplier; /* z >= 0: the noise's stddev is z x S; 0 adds none */
    double expected_reports; /* q x N, > 0: the mean's denominator */
} shoal_round_dp_config;

/* Checks the config: SHOAL_EINVAL (ei names the field and the rule) for a
 * clip that is not positive and finite, a negative or non-finite noise
 * multiplier, or an expected count that is not positive and finite. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_dp_config_check(const shoal_round_dp_config *cfg,
                                                                shoal_errinfo *ei);

/* The device's step: scales update[0..d) so its L2 norm over the whole
 * update is at most `clip` (an update already within it is left exactly
 * as it is) and reports the norm it had in *norm (may be NULL).
 * SHOAL_EINVAL for a clip that is not positive and finite or a NULL update
 * with d > 0; SHOAL_ENUMERIC for a non-finite norm (nothing changed). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_dp_clip(float *update, size_t d, double clip,
                                                        double *norm);

/* The server's step: adds noise of stddev noise_multiplier x clip to
 * every coordinate of sum[0..d) (in place, once), then writes
 * sum / expected_reports to mean[0..d) (mean may be sum). Errors as
 * shoal_round_dp_config_check (ei may be NULL); SHOAL_ENUMERIC for a
 * non-finite coordinate of sum (nothing changed); SHOAL_ECRYPTO when the
 * noise's random source cannot start. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_dp_mean(float *sum, size_t d,
                                                        const shoal_round_dp_config *cfg,
                                                        float *mean, shoal_errinfo *ei);

/* DP-FTRL's server step (Kairouz, McMahan, Song, Thakkar, Thakurta, Xu
 * 2021, "Practical and Private (Deep) Learning without Sampling or
 * Shuffling", algorithm 1 with the tree aggregation of section 4): the
 * server releases the noised prefix sum of the rounds' sums, and the model
 * after round t is the initial model plus the server step applied to that
 * prefix over the expected reports. This function returns the change of
 * the release from round t - 1 to round t, over expected_reports:
 *
 *   mean = (round(sum / g) + N_t - N_(t-1)) x g / expected_reports
 *
 * with g = noise_multiplier x clip / SHOAL_DP_NOISE_SIGMA and N_t the
 * tree's prefix noise in grid steps (shoal_dp_tree_advance), so the means
 * of rounds 1..t add up to (the prefix of the sums + N_t) x g / expected:
 * a strategy that applies each mean with server learning rate eta (FedAvg)
 * holds theta_0 + eta x that, up to float rounding. Noise and sum meet as
 * integers; floating point only scales the result.
 *
 * The tree advances one round (a fresh tree when it is full); it must have
 * been made with dim d and stddev noise_multiplier x clip. scratch holds d
 * int64_t. mean may be sum. Errors as shoal_round_dp_mean, and
 * SHOAL_EINVAL for a tree of another dimension or stddev, or a noise
 * multiplier of 0; SHOAL_ELIMIT when a tree that never restarts has run
 * 2^32 - 1 rounds. On any error the tree, sum and mean are unchanged. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_dp_ftrl_mean(shoal_dp_tree *tree, float *sum,
                                                             size_t d,
                                                             const shoal_round_dp_config *cfg,
                                                             int64_t *scratch, float *mean,
                                                             shoal_errinfo *ei);

/* Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021,
 * "Differentially Private Learning with Adaptive Clipping", algorithm 1):
 * the clip norm C follows the target quantile gamma of the devices'
 * update norms. Each device reports, with its clipped update, the bit
 * b = 1 when its norm was at most C, sent as b - 1/2 (so one device moves
 * the sum by at most 1/2); the server adds noise of stddev count_noise to
 * the sum of the bits once, estimates the unclipped fraction
 * (shoal_round_dp_noised_fraction) and moves C geometrically toward the
 * quantile (shoal_round_dp_adaptive_clip). The update's noise and the
 * count's together are one Gaussian mechanism of noise multiplier z with
 * z^-2 = z_update^-2 + (2 count_noise)^-2 (their theorem 1): the
 * accountant composes z, and the update gets z_update
 * (shoal_round_dp_adaptive_update_noise) x the round's C. */

/* z_update = (z^-2 - (2 count_noise)^-2)^(-1/2): the multiplier left for
 * the update when z is the total. SHOAL_EINVAL (ei names the rule) unless
 * z > 0 and 2 count_noise > z (the count would take all the privacy). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_dp_adaptive_update_noise(double z,
                                                                         double count_noise,
                                                                         double *z_update,
                                                                         shoal_errinfo *ei);

/* The estimated fraction of unclipped updates:
 *   (unclipped - reports / 2 + N(0, count_noise^2)) / expected + 1/2,
 * the noise a discrete Gaussian on a grid of count_noise / 1024
 * (shoal_dp_add_gaussian_noise); count_noise 0 adds none. reports is the
 * round's number of reports, unclipped how many of them had norm <= C.
 * SHOAL_EINVAL for unclipped > reports, expected not positive and finite
 * or count_noise negative or not finite; SHOAL_ECRYPTO when the noise's
 * random source cannot start. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_round_dp_noised_fraction(
    uint64_t unclipped, uint64_t reports, double expected, double count_noise, double *fraction);

/* The geometric update: clip x exp(-rate x (fraction - target_quantile)):
 * more unclipped than the target shrinks the clip, fewer grows it. Pure. */
SHOAL_API double shoal_round_dp_adaptive_clip(double clip, double fraction, double target_quantile,
                                              double rate);

#ifdef __cplusplus
}
#endif

#endif
