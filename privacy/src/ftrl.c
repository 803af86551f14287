/* DP-FTRL's tree aggregation and zCDP accounting (see shoal/dp_ftrl.h). */
#include <math.h>
#include <sodium.h>
#include <string.h>

#include "noise_int.h"
#include "shoal/dp_ftrl.h"
#include "shoal/privacy.h"

shoal_err shoal_dp_tree_init(shoal_dp_tree *tree, size_t dim, double stddev, uint64_t restart_every)
{
    if (!tree || dim == 0 || !(stddev > 0.0) || isinf(stddev) || restart_every > (1ull << 31))
        return SHOAL_EINVAL;
    memset(tree, 0, sizeof *tree);
    tree->dim = dim;
    tree->stddev = stddev;
    tree->restart_every = restart_every;
    return SHOAL_OK;
}

static unsigned trailing_zeros(uint64_t t)
{
    unsigned n = 0;
    while (!(t & 1)) {
        t >>= 1;
        n++;
    }
    return n;
}

uint64_t shoal_dp_tree_next_step(const shoal_dp_tree *tree)
{
    return tree->restart_every && tree->step == tree->restart_every ? 1 : tree->step + 1;
}

/* Opens the next round: restarts the tree when it is full, draws the seed
 * of the node round t opens (at the level of t's lowest set bit; the nodes
 * below it are complete and no longer part of any prefix) and returns
 * that level; *restarted (may be NULL) says whether a new tree began. */
static shoal_err open_round(shoal_dp_tree *tree, int *restarted, unsigned *level)
{
    if (sodium_init() < 0)
        return SHOAL_ECRYPTO;
    const int fresh = shoal_dp_tree_next_step(tree) == 1;
    if (fresh && tree->step) {
        sodium_memzero(tree->seed, sizeof tree->seed);
        tree->step = 0;
        tree->restarts++;
    }
    if (tree->step >= (1ull << SHOAL_DP_TREE_MAX_HEIGHT) - 1)
        return SHOAL_ELIMIT;
    *level = trailing_zeros(++tree->step);
    randombytes_buf(tree->seed[*level], 32);
    if (restarted)
        *restarted = fresh;
    return SHOAL_OK;
}

shoal_err shoal_dp_tree_next(shoal_dp_tree *tree, float *noise, int *restarted)
{
    if (!tree || !noise)
        return SHOAL_EINVAL;
    unsigned level = 0;
    shoal_err err = open_round(tree, restarted, &level);
    if (err)
        return err;
    return shoal_dp_tree_current(tree, noise);
}

shoal_err shoal_dp_tree_advance(shoal_dp_tree *tree, int64_t *increment, int *restarted)
{
    if (!tree || !increment)
        return SHOAL_EINVAL;
    unsigned level = 0;
    shoal_err err = open_round(tree, restarted, &level);
    if (err)
        return err;
    /* t - 1 held the nodes below `level` (all its low bits are set) and
     * t holds the new one instead; the nodes above are common to both
     * prefixes and cancel. In a fresh tree t = 1 and nothing leaves. */
    memset(increment, 0, tree->dim * sizeof *increment);
    for (unsigned l = 0; l < level && !err; l++)
        err = shoal_dp_seeded_steps(tree->seed[l], -1, increment, tree->dim);
    if (!err)
        err = shoal_dp_seeded_steps(tree->seed[level], +1, increment, tree->dim);
    return err;
}

/* The current prefix's noise: the sum of the live nodes (one per set bit
 * of step), into noise (floats on the grid) or steps (grid steps). */
static shoal_err live_nodes(const shoal_dp_tree *tree, float *noise, int64_t *steps)
{
    if (!tree || (!noise && !steps))
        return SHOAL_EINVAL;
    if (tree->step == 0)
        return SHOAL_ESTATE;
    if (noise)
        memset(noise, 0, tree->dim * sizeof *noise);
    if (steps)
        memset(steps, 0, tree->dim * sizeof *steps);
    shoal_err err = SHOAL_OK;
    for (unsigned level = 0; level < SHOAL_DP_TREE_MAX_HEIGHT && !err; level++) {
        if (!(tree->step >> level & 1))
            continue;
        err = noise ? shoal_dp_seeded_noise(tree->seed[level], tree->stddev, noise, tree->dim)
                    : shoal_dp_seeded_steps(tree->seed[level], +1, steps, tree->dim);
    }
    return err;
}

shoal_err shoal_dp_tree_current_steps(const shoal_dp_tree *tree, int64_t *steps)
{
    return steps ? live_nodes(tree, NULL, steps) : SHOAL_EINVAL;
}

shoal_err shoal_dp_tree_current(const shoal_dp_tree *tree, float *noise)
{
    return noise ? live_nodes(tree, noise, NULL) : SHOAL_EINVAL;
}

unsigned shoal_dp_tree_height(uint64_t rounds)
{
    /* ceil(log2(rounds + 1)): the number of bits of rounds. */
    unsigned h = 0;
    for (; rounds; rounds >>= 1)
        h++;
    return h;
}

shoal_err shoal_dp_tree_rho(uint64_t rounds, double z, uint32_t participations,
                            uint64_t restart_every, double *rho)
{
    if (!rho || !(z > 0.0) || participations == 0)
        return SHOAL_EINVAL;
    double k2 = (double)participations * (double)participations, total = 0.0;
    if (restart_every == 0 || rounds <= restart_every) {
        total = k2 * shoal_dp_tree_height(rounds) / (2.0 * z * z);
    } else {
        uint64_t full = rounds / restart_every, rest = rounds % restart_every;
        total = (double)full * k2 * shoal_dp_tree_height(restart_every) / (2.0 * z * z);
        if (rest)
            total += k2 * shoal_dp_tree_height(rest) / (2.0 * z * z);
    }
    *rho = total;
    return SHOAL_OK;
}

shoal_err shoal_zcdp_epsilon(double rho, double delta, double *epsilon)
{
    if (!epsilon || !(rho >= 0.0) || !(delta > 0.0 && delta < 1.0))
        return SHOAL_EINVAL;
    /* rho-zCDP is RDP rho x a at every order a: convert over a fine,
     * log-spaced grid of a - 1 from 0.01 to 10^4. */
    enum { GRID = 2000 };
    double orders[GRID], rdp[GRID];
    for (int i = 0; i < GRID; i++) {
        orders[i] = 1.0 + exp(log(0.01) + (log(1e4) - log(0.01)) * i / (GRID - 1));
        rdp[i] = rho * orders[i];
    }
    return shoal_rdp_epsilon(orders, rdp, GRID, delta, SHOAL_DP_CONVERSION_IMPROVED, epsilon, NULL);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

void shoal_dp_tree_pack(const shoal_dp_tree *tree, uint8_t out[SHOAL_DP_TREE_PACKED_BYTES])
{
    memcpy(out, "SDPT", 4);
    for (int i = 0; i < 4; i++)
        out[4 + i] = i == 0 ? 1 : 0; /* version 1, little-endian */
    uint64_t sd;
    memcpy(&sd, &tree->stddev, 8);
    put_u64(out + 8, tree->step);
    put_u64(out + 16, tree->restart_every);
    put_u64(out + 24, tree->restarts);
    put_u64(out + 32, sd);
    put_u64(out + 40, (uint64_t)tree->dim);
    memcpy(out + 48, tree->seed, sizeof tree->seed);
}

shoal_err shoal_dp_tree_unpack(const uint8_t *in, size_t len, shoal_dp_tree *tree)
{
    if (!in || !tree || len != SHOAL_DP_TREE_PACKED_BYTES || memcmp(in, "SDPT", 4) != 0 ||
        in[4] != 1 || in[5] || in[6] || in[7])
        return SHOAL_EFORMAT;
    shoal_dp_tree t;
    memset(&t, 0, sizeof t);
    t.step = get_u64(in + 8);
    t.restart_every = get_u64(in + 16);
    t.restarts = get_u64(in + 24);
    uint64_t sd = get_u64(in + 32);
    memcpy(&t.stddev, &sd, 8);
    t.dim = (size_t)get_u64(in + 40);
    memcpy(t.seed, in + 48, sizeof t.seed);
    if (t.dim == 0 || !(t.stddev > 0.0) || isinf(t.stddev) ||
        (t.restart_every && t.step > t.restart_every) ||
        t.step >= (1ull << SHOAL_DP_TREE_MAX_HEIGHT))
        return SHOAL_EFORMAT;
    *tree = t;
    return SHOAL_OK;
}

void shoal_dp_ftrl_state_pack(const shoal_dp_ftrl_state *state,
                              uint8_t out[SHOAL_DP_FTRL_STATE_PACKED_BYTES])
{
    uint64_t rho, closed;
    memcpy(&rho, &state->rho, 8);
    memcpy(&closed, &state->rho_closed, 8);
    memcpy(out, "SFTR\1\0\0\0", 8);
    put_u64(out + 8, state->rounds);
    put_u64(out + 16, rho);
    put_u64(out + 24, closed);
    shoal_dp_tree_pack(&state->tree, out + 32);
}

shoal_err shoal_dp_ftrl_state_unpack(const uint8_t *in, size_t len, shoal_dp_ftrl_state *state)
{
    if (!in || !state || len != SHOAL_DP_FTRL_STATE_PACKED_BYTES || memcmp(in, "SFTR\1\0\0\0", 8))
        return SHOAL_EFORMAT;
    shoal_dp_ftrl_state s;
    uint64_t rho = get_u64(in + 16), closed = get_u64(in + 24);
    s.rounds = get_u64(in + 8);
    memcpy(&s.rho, &rho, 8);
    memcpy(&s.rho_closed, &closed, 8);
    if (!(s.rho >= 0.0) || isinf(s.rho) || !(s.rho_closed >= 0.0) || s.rho_closed > s.rho ||
        shoal_dp_tree_unpack(in + 32, SHOAL_DP_TREE_PACKED_BYTES, &s.tree) != SHOAL_OK)
        return SHOAL_EFORMAT;
    *state = s;
    return SHOAL_OK;
}
