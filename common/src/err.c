#include "shoal/err.h"

#include <stddef.h>

struct err_entry {
    const char *name;
    const char *text;
};

static const struct err_entry err_table[] = {
    [SHOAL_OK] = {"SHOAL_OK", "success"},
    [SHOAL_ENOMEM] = {"SHOAL_ENOMEM", "out of memory"},
    [SHOAL_EINVAL] = {"SHOAL_EINVAL", "invalid argument"},
    [SHOAL_EIO] = {"SHOAL_EIO", "input/output error"},
    [SHOAL_EFORMAT] = {"SHOAL_EFORMAT", "malformed data"},
    [SHOAL_EPROTO] = {"SHOAL_EPROTO", "protocol error"},
    [SHOAL_ECRYPTO] = {"SHOAL_ECRYPTO", "cryptographic failure"},
    [SHOAL_ETIMEDOUT] = {"SHOAL_ETIMEDOUT", "timed out"},
    [SHOAL_ECLOSED] = {"SHOAL_ECLOSED", "closed"},
    [SHOAL_EAGAIN] = {"SHOAL_EAGAIN", "try again"},
    [SHOAL_EAUTH] = {"SHOAL_EAUTH", "authentication failed"},
    [SHOAL_ELIMIT] = {"SHOAL_ELIMIT", "limit exceeded"},
    [SHOAL_ENOTFOUND] = {"SHOAL_ENOTFOUND", "not found"},
    [SHOAL_ESTATE] = {"SHOAL_ESTATE", "invalid in current state"},
    [SHOAL_ENUMERIC] = {"SHOAL_ENUMERIC", "numeric overflow (NaN or Inf)"},
    [SHOAL_ECANCELED] = {"SHOAL_ECANCELED", "canceled"},
};

/* The entry for err, the two statuses that are not errors included; NULL
 * for a code the table does not know. */
static const struct err_entry *entry_of(shoal_err err)
{
    static const struct err_entry row = {"SHOAL_ROW", "row available"},
                                  done = {"SHOAL_DONE", "done"};
    if (err == SHOAL_ROW)
        return &row;
    if (err == SHOAL_DONE)
        return &done;
    if ((unsigned)err < sizeof err_table / sizeof err_table[0] && err_table[err].name)
        return &err_table[err];
    return NULL;
}

const char *shoal_strerror(shoal_err err)
{
    const struct err_entry *e = entry_of(err);
    return e ? e->text : "unknown error";
}

const char *shoal_err_name(shoal_err err)
{
    const struct err_entry *e = entry_of(err);
    return e ? e->name : "SHOAL_E?";
}

#include <stdarg.h>
#include <stdio.h>

shoal_err shoal_errinfo_set(shoal_errinfo *ei, shoal_err err, const char *fmt, ...)
{
    if (ei) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ei->msg, sizeof ei->msg, fmt, ap);
        va_end(ap);
    }
    return err;
}
