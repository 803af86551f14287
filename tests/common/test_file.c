/* Reading a small file whole: content, limits and the errors a person reads. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shoal/alloc.h"
#include "shoal/file.h"

static char dir[] = "/tmp/shoal-file-XXXXXX";
static char path[256];

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/f.txt", dir);
}

static void teardown(void)
{
    remove(path);
    rmdir(dir);
    strcpy(dir, "/tmp/shoal-file-XXXXXX");
}

static void write_bytes(const char *bytes, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

TestSuite(file, .init = setup, .fini = teardown);

Test(file, a_file_is_read_whole_with_a_nul_after_it)
{
    const char bytes[] = "line one\n\0binary\xff tail";
    write_bytes(bytes, sizeof bytes - 1);
    char *text = NULL;
    size_t len = 0;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_file_read(path, "the test file", NULL, 64, &text, &len, &ei), SHOAL_OK, "%s",
                 ei.msg);
    cr_assert_eq(len, sizeof bytes - 1);
    cr_assert_eq(memcmp(text, bytes, len), 0);
    cr_assert_eq(text[len], '\0');
    shoal_file_free(text, len);

    /* Exactly at the limit is allowed; an empty file is an empty string. */
    cr_assert_eq(shoal_file_read(path, "the test file", NULL, sizeof bytes - 1, &text, NULL, &ei),
                 SHOAL_OK, "%s", ei.msg);
    shoal_file_free(text, sizeof bytes - 1);
    write_bytes("", 0);
    cr_assert_eq(shoal_file_read(path, "the test file", NULL, 64, &text, &len, &ei), SHOAL_OK);
    cr_assert_eq(len, 0);
    cr_assert_str_eq(text, "");
    shoal_file_free(text, len);
}

Test(file, errors_name_the_file_what_it_is_and_what_to_do)
{
    char *text = (char *)1;
    size_t len = 7;
    shoal_errinfo ei = {{0}};
    char want[512];

    cr_assert_eq(shoal_file_read(path, "the CA file", "check ca_file", 64, &text, &len, &ei),
                 SHOAL_EIO);
    cr_assert_null(text);
    cr_assert_eq(len, 0);
    snprintf(want, sizeof want,
             "%s: cannot open the CA file: No such file or directory; check ca_file", path);
    cr_assert_str_eq(ei.msg, want);

    cr_assert_eq(shoal_file_read(dir, "the CA file", NULL, 64, &text, &len, &ei), SHOAL_EIO);
    snprintf(want, sizeof want, "%s: the CA file is not a regular file", dir);
    cr_assert_str_eq(ei.msg, want);

    write_bytes("0123456789", 10);
    cr_assert_eq(shoal_file_read(path, "the token", "use a shorter one", 9, &text, &len, &ei),
                 SHOAL_ELIMIT);
    cr_assert_null(text);
    snprintf(want, sizeof want,
             "%s: the token has 10 bytes, more than the 9 it may have; use a shorter one", path);
    cr_assert_str_eq(ei.msg, want);

    cr_assert_eq(shoal_file_read(NULL, "x", NULL, 9, &text, &len, &ei), SHOAL_EINVAL);
    cr_assert_eq(shoal_file_read(path, "x", NULL, 9, NULL, &len, &ei), SHOAL_EINVAL);
    shoal_file_free(NULL, 0);
}

Test(file, a_failed_allocation_leaves_nothing_behind)
{
    write_bytes("secret", 6);
    char *text = (char *)1;
    shoal_errinfo ei = {{0}};
    shoal_failalloc_install(0);
    shoal_err err = shoal_file_read(path, "the token", NULL, 64, &text, NULL, &ei);
    long live = shoal_failalloc_live();
    shoal_failalloc_uninstall();
    cr_assert_eq(err, SHOAL_ENOMEM);
    cr_assert_null(text);
    cr_assert_eq(live, 0);
    cr_assert_not_null(strstr(ei.msg, "out of memory reading the token"), "%s", ei.msg);
}
