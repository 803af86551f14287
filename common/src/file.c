/* Shoal: reading a small file whole (shoal/file.h). */
#include "shoal/file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shoal/alloc.h"

/* A wipe the compiler may not drop: the store goes through a volatile
 * pointer. */
static void wipe(char *buf, size_t n)
{
    volatile char *p = buf;
    while (n--)
        *p++ = 0;
}

void shoal_file_free(char *buf, size_t len)
{
    if (!buf)
        return;
    wipe(buf, len + 1);
    shoal_free(buf);
}

shoal_err shoal_file_read(const char *path, const char *what, const char *hint, size_t max_bytes,
                          char **out, size_t *len, shoal_errinfo *ei)
{
    if (out)
        *out = NULL;
    if (len)
        *len = 0;
    if (!path || !what || !out)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "reading a file: no path, name or result");
    const char *sep = hint ? "; " : "", *tail = hint ? hint : "";
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s: cannot open %s: %s%s%s", path, what,
                                 strerror(e), sep, tail);
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s: %s is not a regular file%s%s", path, what, sep,
                                 tail);
    }
    if ((unsigned long long)st.st_size > max_bytes) {
        close(fd);
        return shoal_errinfo_set(ei, SHOAL_ELIMIT,
                                 "%s: %s has %lld bytes, more than the %zu it may have%s%s", path,
                                 what, (long long)st.st_size, max_bytes, sep, tail);
    }
    /* One byte more than the size: a file that grew meanwhile fills it. */
    const size_t cap = (size_t)st.st_size + 1;
    char *buf = shoal_malloc(cap);
    if (!buf) {
        close(fd);
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory reading %s", path, what);
    }
    size_t used = 0;
    while (used < cap) {
        ssize_t got = read(fd, buf + used, cap - used);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int e = errno;
            close(fd);
            wipe(buf, cap);
            shoal_free(buf);
            return shoal_errinfo_set(ei, SHOAL_EIO, "%s: cannot read %s: %s", path, what,
                                     strerror(e));
        }
        if (got == 0)
            break;
        used += (size_t)got;
    }
    close(fd);
    if (used == cap) {
        wipe(buf, cap);
        shoal_free(buf);
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s: %s changed while it was read; try again", path,
                                 what);
    }
    buf[used] = '\0';
    *out = buf;
    if (len)
        *len = used;
    return SHOAL_OK;
}
