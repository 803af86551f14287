/* Tests for DP-FTRL's tree aggregation (shoal/dp_ftrl.h): the noise of
 * every prefix is the sum of the right nodes, each drawn once; restarts;
 * the state survives packing; rho and its conversion. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/dp_ftrl.h"
#include "shoal/dp_noise.h"

Test(privacy_ftrl, heights_and_rho)
{
    cr_assert_eq(shoal_dp_tree_height(0), 0u);
    cr_assert_eq(shoal_dp_tree_height(1), 1u);
    cr_assert_eq(shoal_dp_tree_height(2), 2u);
    cr_assert_eq(shoal_dp_tree_height(3), 2u);
    cr_assert_eq(shoal_dp_tree_height(4), 3u);
    cr_assert_eq(shoal_dp_tree_height(1023), 10u);
    cr_assert_eq(shoal_dp_tree_height(1024), 11u);
    double rho;
    /* 1000 rounds, z = 5, one participation: 10 / 50 = 0.2. */
    cr_assert_eq(shoal_dp_tree_rho(1000, 5.0, 1, 0, &rho), SHOAL_OK);
    cr_assert_float_eq(rho, 0.2, 1e-12);
    /* Two participations cost four times as much. */
    cr_assert_eq(shoal_dp_tree_rho(1000, 5.0, 2, 0, &rho), SHOAL_OK);
    cr_assert_float_eq(rho, 0.8, 1e-12);
    /* Restarts every 100 rounds: 10 trees of height 7. */
    cr_assert_eq(shoal_dp_tree_rho(1000, 5.0, 1, 100, &rho), SHOAL_OK);
    cr_assert_float_eq(rho, 10 * 7 / 50.0, 1e-12);
    cr_assert_eq(shoal_dp_tree_rho(1000, 0.0, 1, 0, &rho), SHOAL_EINVAL);
    cr_assert_eq(shoal_dp_tree_rho(1000, 1.0, 0, 0, &rho), SHOAL_EINVAL);
}

Test(privacy_ftrl, zcdp_conversion_is_below_the_classic_bound)
{
    const double rhos[] = {0.01, 0.2, 0.81, 2.0};
    for (int i = 0; i < 4; i++) {
        double eps;
        cr_assert_eq(shoal_zcdp_epsilon(rhos[i], 1e-10, &eps), SHOAL_OK);
        double classic = rhos[i] + 2.0 * sqrt(rhos[i] * log(1e10));
        cr_assert_leq(eps, classic, "rho %g: %g above the classic %g", rhos[i], eps, classic);
        cr_assert_gt(eps, 0.8 * classic, "rho %g: %g implausibly far below %g", rhos[i], eps,
                     classic);
    }
    double eps;
    cr_assert_eq(shoal_zcdp_epsilon(0.0, 1e-5, &eps), SHOAL_OK);
    cr_assert_eq(eps, 0.0);
    cr_assert_eq(shoal_zcdp_epsilon(-1.0, 1e-5, &eps), SHOAL_EINVAL);
    cr_assert_eq(shoal_zcdp_epsilon(1.0, 0.0, &eps), SHOAL_EINVAL);
}

/* The noise of prefix t is the sum of the nodes covering 1..t: so the
 * difference between consecutive prefixes' noise, at t = 2^j, removes
 * every node below level j and adds one; and two trees never share noise.
 * Checked through its variance: prefix t's noise has variance
 * popcount(t) x stddev^2. */
Test(privacy_ftrl, prefix_noise_sums_one_node_per_set_bit)
{
    enum { DIM = 200000 };
    float *noise = malloc(DIM * sizeof *noise);
    shoal_dp_tree tree;
    cr_assert_eq(shoal_dp_tree_init(&tree, DIM, 2.0, 0), SHOAL_OK);
    for (uint64_t t = 1; t <= 7; t++) {
        int restarted = -1;
        cr_assert_eq(shoal_dp_tree_next(&tree, noise, &restarted), SHOAL_OK);
        cr_assert_eq(restarted, t == 1);
        double sq = 0;
        for (size_t i = 0; i < DIM; i++)
            sq += (double)noise[i] * noise[i];
        double var = sq / DIM, want = __builtin_popcountll(t) * 4.0;
        cr_assert(fabs(var / want - 1.0) < 0.02, "prefix %llu: variance %.3f, want %.1f",
                  (unsigned long long)t, var, want);
    }
    free(noise);
}

/* The state carries everything: packed after round 6 and unpacked, it
 * rebuilds round 6's noise to the bit; the next round keeps the live
 * level-1 node (the two copies' round 7 differ only by their fresh
 * level-0 nodes, so the difference has variance 2 stddev^2, not 4). */
Test(privacy_ftrl, state_survives_packing_exactly)
{
    enum { DIM = 100000 };
    float *a = malloc(DIM * sizeof *a), *b = malloc(DIM * sizeof *b);
    shoal_dp_tree tree, copy;
    cr_assert_eq(shoal_dp_tree_init(&tree, DIM, 1.5, 4), SHOAL_OK);
    cr_assert_eq(shoal_dp_tree_current(&tree, a), SHOAL_ESTATE);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(shoal_dp_tree_next(&tree, a, NULL), SHOAL_OK);
    cr_assert_eq(tree.restarts, 1u, "4 rounds a tree: the fifth starts the second");
    cr_assert_eq(tree.step, 2u);
    uint8_t packed[SHOAL_DP_TREE_PACKED_BYTES];
    shoal_dp_tree_pack(&tree, packed);
    cr_assert_eq(shoal_dp_tree_unpack(packed, sizeof packed, &copy), SHOAL_OK);
    cr_assert_eq(shoal_dp_tree_current(&copy, b), SHOAL_OK);
    cr_assert_eq(memcmp(a, b, DIM * sizeof *a), 0, "the rebuilt noise differs");

    cr_assert_eq(shoal_dp_tree_next(&tree, a, NULL), SHOAL_OK);
    cr_assert_eq(shoal_dp_tree_next(&copy, b, NULL), SHOAL_OK);
    double sq = 0;
    for (size_t i = 0; i < DIM; i++)
        sq += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    double var = sq / DIM;
    cr_assert(fabs(var / (2 * 1.5 * 1.5) - 1.0) < 0.03, "difference variance %.3f", var);

    packed[0] = 'X';
    cr_assert_eq(shoal_dp_tree_unpack(packed, sizeof packed, &copy), SHOAL_EFORMAT);
    packed[0] = 'S';
    cr_assert_eq(shoal_dp_tree_unpack(packed, sizeof packed - 1, &copy), SHOAL_EFORMAT);
    free(a);
    free(b);
}

/* shoal_dp_tree_advance's increments add up, exactly in integers, to the
 * prefix noise shoal_dp_tree_current_steps rebuilds from the seeds, within
 * each tree (a restart starts again from the last release, so the sum over
 * the second tree equals that tree's prefix alone); and the float noise of
 * shoal_dp_tree_current is the same steps on the grid. */
Test(privacy_ftrl, increments_add_up_to_the_prefix_noise_exactly)
{
    enum { DIM = 5000, EVERY = 5 };
    const double stddev = 0.7, grid = stddev / SHOAL_DP_NOISE_SIGMA;
    int64_t *inc = malloc(DIM * sizeof *inc), *total = calloc(DIM, sizeof *total),
            *prefix = malloc(DIM * sizeof *prefix);
    float *noise = malloc(DIM * sizeof *noise);
    shoal_dp_tree tree;
    cr_assert_eq(shoal_dp_tree_init(&tree, DIM, stddev, EVERY), SHOAL_OK);
    cr_assert_eq(shoal_dp_tree_current_steps(&tree, prefix), SHOAL_ESTATE);
    int64_t moved = 0;
    for (int t = 1; t <= 8; t++) {
        int restarted = -1;
        cr_assert_eq(shoal_dp_tree_advance(&tree, inc, &restarted), SHOAL_OK);
        cr_assert_eq(restarted, t == 1 || t == EVERY + 1, "round %d", t);
        if (restarted)
            memset(total, 0, DIM * sizeof *total);
        for (size_t i = 0; i < DIM; i++) {
            total[i] += inc[i];
            moved += inc[i] != 0;
        }
        cr_assert_eq(shoal_dp_tree_current_steps(&tree, prefix), SHOAL_OK);
        cr_assert_eq(memcmp(prefix, total, DIM * sizeof *total), 0, "round %d", t);
        cr_assert_eq(shoal_dp_tree_current(&tree, noise), SHOAL_OK);
        for (size_t i = 0; i < DIM; i++)
            cr_assert(fabs((double)noise[i] - (double)prefix[i] * grid) < 1e-5 * stddev,
                      "round %d coordinate %zu: %g vs %g steps", t, i, (double)noise[i],
                      (double)prefix[i]);
    }
    cr_assert_gt(moved, 8 * DIM * 9 / 10, "the increments should carry noise");
    free(inc);
    free(total);
    free(prefix);
    free(noise);
}

Test(privacy_ftrl, the_committed_state_round_trips_and_damage_is_refused)
{
    shoal_dp_ftrl_state s = {.rounds = 7, .rho = 0.875, .rho_closed = 0.5}, back;
    cr_assert_eq(shoal_dp_tree_init(&s.tree, 3, 2.0, 4), SHOAL_OK);
    int64_t inc[3];
    for (int i = 0; i < 3; i++)
        cr_assert_eq(shoal_dp_tree_advance(&s.tree, inc, NULL), SHOAL_OK);
    uint8_t packed[SHOAL_DP_FTRL_STATE_PACKED_BYTES];
    shoal_dp_ftrl_state_pack(&s, packed);
    cr_assert_eq(shoal_dp_ftrl_state_unpack(packed, sizeof packed, &back), SHOAL_OK);
    cr_assert_eq(back.rounds, 7u);
    cr_assert_eq(back.rho, 0.875);
    cr_assert_eq(back.rho_closed, 0.5);
    cr_assert_eq(back.tree.step, 3u);
    cr_assert_eq(memcmp(back.tree.seed, s.tree.seed, sizeof s.tree.seed), 0);
    cr_assert_eq(shoal_dp_ftrl_state_unpack(packed, sizeof packed - 1, &back), SHOAL_EFORMAT);
    s.rho_closed = 1.0; /* above rho */
    shoal_dp_ftrl_state_pack(&s, packed);
    cr_assert_eq(shoal_dp_ftrl_state_unpack(packed, sizeof packed, &back), SHOAL_EFORMAT);
    s.rho_closed = 0.5;
    shoal_dp_ftrl_state_pack(&s, packed);
    packed[0] = 'X';
    cr_assert_eq(shoal_dp_ftrl_state_unpack(packed, sizeof packed, &back), SHOAL_EFORMAT);
}
