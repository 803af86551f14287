/* Fuzz target for shoal_idx_parse (ml/src/dataset.c).
 *
 * Any byte string is either refused with SHOAL_EFORMAT (or SHOAL_ENOMEM), no
 * result and a message that starts with the file name, or accepted as an IDX
 * whose header, element count and data all agree with the input bytes.
 * Failing each allocation the parse makes in turn must give SHOAL_ENOMEM and
 * leave nothing allocated. A violated invariant aborts, which libFuzzer and
 * the standalone replayer report as a crash. */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/dataset.h"

#define INPUT_NAME "fuzz.idx"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t read_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void check_refusal(shoal_err err, const shoal_idx *idx, const shoal_errinfo *ei)
{
    if (err != SHOAL_EFORMAT && err != SHOAL_ENOMEM)
        abort();
    if (idx != NULL)
        abort();
    /* Every reader error names the file (dataset.h). */
    if (strncmp(ei->msg, INPUT_NAME ": ", strlen(INPUT_NAME ": ")) != 0)
        abort();
}

static void check_accepted(const uint8_t *data, size_t size, const shoal_idx *idx)
{
    if (!idx || !idx->data)
        abort();
    if (idx->rank < 1 || idx->rank > 4)
        abort();
    if (size < 4 || data[0] != 0 || data[1] != 0 || data[2] != 0x08 || data[3] != idx->rank)
        abort();
    const size_t header = 4 + 4 * (size_t)idx->rank;
    if (size < header)
        abort();
    size_t product = 1;
    for (uint32_t i = 0; i < idx->rank; i++) {
        if (idx->dims[i] == 0 || idx->dims[i] != read_be32(data + 4 + 4 * i))
            abort();
        if (__builtin_mul_overflow(product, (size_t)idx->dims[i], &product))
            abort();
    }
    /* count is the product of the dimensions and exactly the bytes after
     * the header: no truncation, no trailing garbage. */
    if (idx->count != product || idx->count != size - header)
        abort();
    if (memcmp(idx->data, data + header, idx->count) != 0)
        abort();
}

/* The parse is deterministic, so the k-th allocation of a run that fails it
 * is the k-th of the run that counted them: failing it must end the parse
 * with SHOAL_ENOMEM, no result and every block freed. */
static void check_allocation_failures(const uint8_t *data, size_t size)
{
    shoal_failalloc_install(LONG_MAX);
    shoal_idx *idx = NULL;
    shoal_err counted = shoal_idx_parse(data, size, INPUT_NAME, &idx, NULL);
    if (counted != SHOAL_OK && counted != SHOAL_EFORMAT)
        abort();
    shoal_idx_free(idx);
    const long allocations = shoal_failalloc_attempts();
    if (shoal_failalloc_live() != 0)
        abort();
    for (long successes = 0; successes < allocations; successes++) {
        shoal_failalloc_install(successes);
        shoal_errinfo ei;
        ei.msg[0] = 0;
        idx = NULL;
        shoal_err err = shoal_idx_parse(data, size, INPUT_NAME, &idx, &ei);
        const long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        if (err != SHOAL_ENOMEM || live != 0)
            abort();
        check_refusal(err, idx, &ei);
    }
    shoal_failalloc_uninstall();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    shoal_errinfo ei;
    ei.msg[0] = 0;
    shoal_idx *idx = NULL;
    shoal_err err = shoal_idx_parse(data, size, INPUT_NAME, &idx, &ei);
    if (err != SHOAL_OK)
        check_refusal(err, idx, &ei);
    else
        check_accepted(data, size, idx);

    /* errinfo is optional: without it the verdict must be the same. */
    shoal_idx *again = NULL;
    shoal_err err_again = shoal_idx_parse(data, size, INPUT_NAME, &again, NULL);
    if (err_again != err || (err == SHOAL_OK) != (again != NULL))
        abort();
    if (again && (again->count != idx->count || memcmp(again->data, idx->data, idx->count) != 0))
        abort();

    shoal_idx_free(again);
    shoal_idx_free(idx);

    check_allocation_failures(data, size);
    return 0;
}
