/* Fuzz target for shoal_dataset_parse_csv (ml/src/dataset.c).
 *
 * Each input is parsed twice: with classes = 0 (classes inferred from the
 * labels) and with classes = 3 (labels 3 and above must be refused). A
 * refusal must be SHOAL_EFORMAT (or SHOAL_ENOMEM) with no dataset and a
 * message that starts with the file name; an accepted dataset must have at
 * least one row and one feature, every label in [0, classes), every feature
 * finite, and no more cells than the input has commas. The two verdicts must
 * agree with each other. Failing each allocation the parse makes in turn
 * must give SHOAL_ENOMEM and leave nothing allocated. A violated invariant
 * aborts. */
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/alloc.h"
#include "shoal/dataset.h"

#define INPUT_NAME    "fuzz.csv"
#define FIXED_CLASSES 3u

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_refusal(shoal_err err, const shoal_dataset *ds, const shoal_errinfo *ei)
{
    if (err != SHOAL_EFORMAT && err != SHOAL_ENOMEM)
        abort();
    if (ds != NULL)
        abort();
    /* Every reader error names the file (dataset.h). */
    if (strncmp(ei->msg, INPUT_NAME ":", strlen(INPUT_NAME ":")) != 0)
        abort();
}

/* Returns the largest label. */
static int32_t check_accepted(const char *text, size_t size, uint32_t classes,
                              const shoal_dataset *ds)
{
    if (!ds || !ds->x || !ds->y)
        abort();
    if (ds->count < 1 || ds->features < 1)
        abort();
    if (ds->shape.c != ds->features || ds->shape.h != 1 || ds->shape.w != 1)
        abort();
    if (ds->classes < 1 || (classes && ds->classes != classes))
        abort();

    /* Every row holds `features` commas, so the cells cannot outnumber them. */
    size_t commas = 0;
    for (size_t i = 0; i < size; i++)
        commas += text[i] == ',';
    size_t cells;
    if (__builtin_mul_overflow(ds->count, ds->features, &cells) || cells > commas)
        abort();

    int32_t max_label = 0;
    for (size_t i = 0; i < ds->count; i++) {
        if (ds->y[i] < 0 || (uint32_t)ds->y[i] >= ds->classes)
            abort();
        if (ds->y[i] > max_label)
            max_label = ds->y[i];
    }
    /* Inferred classes are max(label) + 1, as for IDX. */
    if (!classes && ds->classes != (uint32_t)max_label + 1)
        abort();
    for (size_t i = 0; i < cells; i++)
        if (!isfinite(ds->x[i]))
            abort();
    return max_label;
}

/* The parse is deterministic, so the k-th allocation of a run that fails it
 * is the k-th of the run that counted them: failing it must end the parse
 * with SHOAL_ENOMEM, no dataset and every block freed. */
static void check_allocation_failures(const char *text, size_t size)
{
    shoal_failalloc_install(LONG_MAX);
    shoal_dataset *ds = NULL;
    shoal_err counted = shoal_dataset_parse_csv(text, size, INPUT_NAME, 0, &ds, NULL);
    if (counted != SHOAL_OK && counted != SHOAL_EFORMAT)
        abort();
    shoal_dataset_free(ds);
    const long allocations = shoal_failalloc_attempts();
    if (shoal_failalloc_live() != 0)
        abort();
    for (long successes = 0; successes < allocations; successes++) {
        shoal_failalloc_install(successes);
        shoal_errinfo ei;
        ei.msg[0] = 0;
        ds = NULL;
        shoal_err err = shoal_dataset_parse_csv(text, size, INPUT_NAME, 0, &ds, &ei);
        const long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        if (err != SHOAL_ENOMEM || live != 0)
            abort();
        check_refusal(err, ds, &ei);
    }
    shoal_failalloc_uninstall();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    shoal_errinfo ei;

    ei.msg[0] = 0;
    shoal_dataset *inferred = NULL;
    shoal_err err = shoal_dataset_parse_csv(text, size, INPUT_NAME, 0, &inferred, &ei);
    int32_t max_label = -1;
    if (err != SHOAL_OK)
        check_refusal(err, inferred, &ei);
    else
        max_label = check_accepted(text, size, 0, inferred);

    ei.msg[0] = 0;
    shoal_dataset *fixed = NULL;
    shoal_err err_fixed =
        shoal_dataset_parse_csv(text, size, INPUT_NAME, FIXED_CLASSES, &fixed, &ei);
    if (err_fixed != SHOAL_OK)
        check_refusal(err_fixed, fixed, &ei);
    else
        (void)check_accepted(text, size, FIXED_CLASSES, fixed);

    /* A fixed class count only adds the range check on labels. */
    if (err == SHOAL_OK && err_fixed != SHOAL_ENOMEM) {
        int in_range = (uint32_t)max_label < FIXED_CLASSES;
        if (in_range != (err_fixed == SHOAL_OK))
            abort();
        if (!in_range && (err_fixed != SHOAL_EFORMAT || !strstr(ei.msg, "out of range")))
            abort();
        if (fixed &&
            (fixed->count != inferred->count || fixed->features != inferred->features ||
             memcmp(fixed->y, inferred->y, fixed->count * sizeof *fixed->y) != 0 ||
             memcmp(fixed->x, inferred->x, fixed->count * fixed->features * sizeof *fixed->x) != 0))
            abort();
    } else if (err == SHOAL_EFORMAT && err_fixed == SHOAL_OK) {
        abort();
    }

    shoal_dataset_free(fixed);
    shoal_dataset_free(inferred);

    check_allocation_failures(text, size);
    return 0;
}
