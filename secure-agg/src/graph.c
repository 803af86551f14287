/* SecAgg+'s random Harary graph (Bell et al. CCS 2020, section 3.1): the
 * devices on a ring in a random order, each joined to k/2 on either side. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "secagg_int.h"
#include "shoal/alloc.h"
#include "shoal/secagg.h"

struct shoal_secagg_graph {
    uint32_t n, k;
    uint32_t *device_at; /* device_at[position] */
    uint32_t *position;  /* position[device] */
};

shoal_err shoal_secagg_graph_new(uint32_t n, uint32_t k, const uint8_t seed[32],
                                 shoal_secagg_graph **out)
{
    if (!out)
        return SHOAL_EINVAL;
    *out = NULL;
    if (!seed || n < 3 || n > SHOAL_SECAGG_MAX_SHAREHOLDERS ||
        !(k == n - 1 || (k >= 2 && k <= n - 2 && k % 2 == 0)))
        return SHOAL_EINVAL;
    shoal_secagg_graph *g = shoal_calloc(1, sizeof *g);
    if (!g)
        return SHOAL_ENOMEM;
    g->n = n;
    g->k = k;
    g->device_at = shoal_calloc(n, sizeof *g->device_at);
    g->position = shoal_calloc(n, sizeof *g->position);
    if (!g->device_at || !g->position) {
        shoal_secagg_graph_free(g);
        return SHOAL_ENOMEM;
    }
    /* The permutation's stream is keyed by a hash of the seed under its own
     * label, so the announced seed serves no other purpose by accident. */
    static const char label[] = "shoal secagg+ harary graph";
    uint8_t key[32];
    crypto_generichash(key, sizeof key, (const uint8_t *)label, sizeof label - 1, seed, 32);
    shoal_secagg_stream s;
    shoal_secagg_stream_init(&s, key);
    for (uint32_t i = 0; i < n; i++)
        g->device_at[i] = i;
    for (uint32_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        uint32_t j = shoal_secagg_stream_uniform(&s, i + 1);
        uint32_t t = g->device_at[i];
        g->device_at[i] = g->device_at[j];
        g->device_at[j] = t;
    }
    for (uint32_t p = 0; p < n; p++)
        g->position[g->device_at[p]] = p;
    shoal_secagg_stream_wipe(&s);
    sodium_memzero(key, sizeof key);
    *out = g;
    return SHOAL_OK;
}

void shoal_secagg_graph_free(shoal_secagg_graph *g)
{
    if (!g)
        return;
    shoal_free(g->device_at);
    shoal_free(g->position);
    shoal_free(g);
}

uint32_t shoal_secagg_graph_degree(const shoal_secagg_graph *g)
{
    return g->k;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

shoal_err shoal_secagg_graph_neighbors(const shoal_secagg_graph *g, uint32_t i, uint32_t *out)
{
    if (!g || !out || i >= g->n)
        return SHOAL_EINVAL;
    if (g->k == g->n - 1) {
        for (uint32_t d = 0, o = 0; d < g->n; d++)
            if (d != i)
                out[o++] = d;
        return SHOAL_OK;
    }
    uint32_t p = g->position[i], half = g->k / 2, o = 0;
    for (uint32_t d = 1; d <= half; d++) {
        out[o++] = g->device_at[(p + d) % g->n];
        out[o++] = g->device_at[(p + g->n - d) % g->n];
    }
    qsort(out, g->k, sizeof *out, cmp_u32);
    return SHOAL_OK;
}

int shoal_secagg_graph_adjacent(const shoal_secagg_graph *g, uint32_t i, uint32_t j)
{
    if (!g || i >= g->n || j >= g->n || i == j)
        return 0;
    if (g->k == g->n - 1)
        return 1;
    uint32_t a = g->position[i], b = g->position[j];
    uint32_t d = a > b ? a - b : b - a;
    if (g->n - d < d)
        d = g->n - d;
    return d <= g->k / 2;
}
