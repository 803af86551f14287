/* Shoal: DP-FTRL's tree aggregation (Kairouz et al. 2021, "Practical and
 * Private (Deep) Learning without Sampling or Shuffling"), the mechanism
 * whose guarantee needs no sampling assumption.
 *
 * Instead of noising each round's sum independently, the server releases
 * noised *prefix sums* of the (clipped) round sums: round t's prefix is the
 * true prefix plus the noise of the O(log t) nodes of a binary tree that
 * cover rounds 1..t, each node's noise drawn once. A device that takes
 * part in one round touches one leaf and so at most `height` nodes on its
 * path; with noise z x S per node the release is rho-zCDP with rho =
 * participations^2 x height / (2 z^2) (a device taking part k times can
 * put all k contributions into the same nodes; Kairouz et al., section 4).
 * The tree restarts every `restart_every` rounds (a fresh tree, its
 * prefixes starting from the last release), which bounds the height.
 *
 * Each node's noise is regenerated from a 32-byte seed, so the whole state
 * is a few seeds and counters: it is committed with each checkpoint
 * (shoal_dp_tree_pack) and survives a restart exactly.
 *
 * Thread safety: one object, one thread at a time. */
#ifndef SHOAL_DP_FTRL_H
#define SHOAL_DP_FTRL_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHOAL_DP_TREE_MAX_HEIGHT 32

typedef struct shoal_dp_tree {
    uint64_t step;                              /* rounds released in the current tree */
    uint64_t restart_every;                     /* rounds per tree; 0: never restart */
    uint64_t restarts;                          /* trees completed */
    double stddev;                              /* noise per node: z x S */
    size_t dim;                                 /* coordinates */
    uint8_t seed[SHOAL_DP_TREE_MAX_HEIGHT][32]; /* live nodes' noise, by level */
} shoal_dp_tree;

/* A tree for `dim` coordinates with noise `stddev` per node, restarting
 * every `restart_every` rounds (0: never; at most 2^31 otherwise).
 * SHOAL_EINVAL for dim 0, stddev not positive and finite. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dp_tree_init(shoal_dp_tree *tree, size_t dim,
                                                       double stddev, uint64_t restart_every);

/* The step the tree's next round will have: 1 when that round begins a
 * new tree (none released yet, or restart_every rounds done), else step +
 * 1. Reads only; thread-safe for a tree nobody changes meanwhile. */
SHOAL_API uint64_t shoal_dp_tree_next_step(const shoal_dp_tree *tree);

/* Advances to the next round and writes into noise[0..dim) the noise of
 * that round's prefix: the sum of the live nodes' noise. The caller
 * releases prefix_sum + noise. *restarted is set to 1 when this round
 * begins a new tree (the caller's prefix starts again from zero).
 * SHOAL_ELIMIT after 2^32 - 1 rounds of one tree; SHOAL_ECRYPTO when
 * libsodium cannot start. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dp_tree_next(shoal_dp_tree *tree, float *noise,
                                                       int *restarted);

/* Advances to the next round like shoal_dp_tree_next, and writes into
 * increment[0..dim) how the prefix noise changes from the previous round
 * to this one, in grid steps of stddev / SHOAL_DP_NOISE_SIGMA: the
 * integers N_t - N_(t-1), where N_t is the sum of the live nodes'
 * discrete Gaussian steps and N_0 = 0 (a fresh tree starts from the last
 * release, so its first increment is its first node). A caller that
 * releases each round its sum rounded to that grid plus the increment
 * has released, in total, the prefix sum plus N_t exactly: no floating
 * point decides the noise (shoal_round_dp_ftrl_mean does this). Costs
 * 1 + (trailing zero bits of t) nodes of dim samples. Errors as
 * shoal_dp_tree_next; on SHOAL_ECRYPTO nothing has changed. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dp_tree_advance(shoal_dp_tree *tree, int64_t *increment,
                                                          int *restarted);

/* N_t of the current round in grid steps (as shoal_dp_tree_advance
 * counts them), from the live nodes' seeds, without advancing.
 * SHOAL_ESTATE before the first round. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dp_tree_current_steps(const shoal_dp_tree *tree,
                                                                int64_t *steps);

/* Writes the noise of the current round's prefix again, from the live
 * nodes' seeds, without advancing: what a restarted server needs to
 * rebuild the last release. SHOAL_ESTATE before the first round. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dp_tree_current(const shoal_dp_tree *tree, float *noise);

/* The tree's height for `rounds` rounds: ceil(log2(rounds + 1)). */
SHOAL_API unsigned shoal_dp_tree_height(uint64_t rounds);

/* rho (zCDP) of `rounds` rounds with noise multiplier z, each device taking
 * part at most `participations` times, restarting every `restart_every`
 * rounds (0: never). Restarts compose: each tree's rho adds (a device may
 * take part in every tree). SHOAL_EINVAL for z <= 0, participations 0. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dp_tree_rho(uint64_t rounds, double z,
                                                      uint32_t participations,
                                                      uint64_t restart_every, double *rho);

/* (epsilon, delta) of rho-zCDP: the minimum over orders a > 1 of the
 * improved RDP conversion of the RDP curve rho x a (Canonne, Kamath,
 * Steinke 2020), on a grid of 1.01 ... 10000. Never above the classic
 * rho + 2 sqrt(rho log(1/delta)) (Bun and Steinke 2016, proposition 1.3).
 * SHOAL_EINVAL for rho < 0 or delta outside (0, 1). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_zcdp_epsilon(double rho, double delta, double *epsilon);

/* Serialised state: "SDPT", version 1, then the fields, little-endian.
 * SHOAL_DP_TREE_PACKED_BYTES bytes. */
#define SHOAL_DP_TREE_PACKED_BYTES (4 + 4 + 8 * 5 + 32 * SHOAL_DP_TREE_MAX_HEIGHT)
SHOAL_API void shoal_dp_tree_pack(const shoal_dp_tree *tree,
                                  uint8_t out[SHOAL_DP_TREE_PACKED_BYTES]);
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dp_tree_unpack(const uint8_t *in, size_t len,
                                                         shoal_dp_tree *tree);

/* DP-FTRL's accounting as a server commits it with each checkpoint: the
 * tree, the rounds released under DP-FTRL, rho in total and rho of the
 * trees closed before the current one. Plain data. */
typedef struct shoal_dp_ftrl_state {
    shoal_dp_tree tree;
    uint64_t rounds;
    double rho, rho_closed;
} shoal_dp_ftrl_state;

/* Serialised: "SFTR", version 1, rounds, rho, rho_closed (IEEE-754), then
 * shoal_dp_tree_pack's bytes; little-endian. Unpack refuses
 * (SHOAL_EFORMAT) another magic, version or length, a negative, NaN or
 * infinite rho, rho_closed above rho, and a tree unpack refuses. */
#define SHOAL_DP_FTRL_STATE_PACKED_BYTES (4 + 4 + 8 * 3 + SHOAL_DP_TREE_PACKED_BYTES)
SHOAL_API void shoal_dp_ftrl_state_pack(const shoal_dp_ftrl_state *state,
                                        uint8_t out[SHOAL_DP_FTRL_STATE_PACKED_BYTES]);
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dp_ftrl_state_unpack(const uint8_t *in, size_t len,
                                                               shoal_dp_ftrl_state *state);

#ifdef __cplusplus
}
#endif

#endif
