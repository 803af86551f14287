#include "shoal/names.h"

#include <string.h>

const char *shoal_names_get(const char *const *names, size_t count, int value, const char *unknown)
{
    return value >= 0 && (size_t)value < count && names[value] ? names[value] : unknown;
}

shoal_err shoal_names_find(const char *const *names, size_t count, const char *name, int *value)
{
    for (size_t i = 0; name && i < count; i++)
        if (names[i] && strcmp(names[i], name) == 0) {
            *value = (int)i;
            return SHOAL_OK;
        }
    return SHOAL_EINVAL;
}
