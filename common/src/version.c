/* The version of the library linked (shoal/version.h). */
#include "shoal/version.h"

const char *shoal_version(void)
{
    return SHOAL_VERSION_STRING;
}
