/* The envelope seed corpus was written by a second encoder
 * (tests/protocol/make_fuzz_corpus.py): every "valid-*" file must decode,
 * every "bad-*" file must be refused. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoal/envelope.h"

#ifndef SHOAL_PROTOCOL_CORPUS_DIR
#error "SHOAL_PROTOCOL_CORPUS_DIR must name tests/fuzz/corpus/envelope"
#endif

static uint8_t *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    static uint8_t buf[1 << 16];
    *len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    uint8_t *copy = malloc(*len ? *len : 1);
    memcpy(copy, buf, *len);
    return copy;
}

Test(protocol_corpus, valid_seeds_decode_and_bad_seeds_are_refused)
{
    DIR *dir = opendir(SHOAL_PROTOCOL_CORPUS_DIR);
    cr_assert_not_null(dir, "%s", SHOAL_PROTOCOL_CORPUS_DIR);
    const shoal_codec codec = shoal_codec_defaults(SHOAL_PEER_ANY);
    size_t valid = 0, bad = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        const int is_valid = strncmp(e->d_name, "valid-", 6) == 0;
        const int is_bad = strncmp(e->d_name, "bad-", 4) == 0;
        if (!is_valid && !is_bad)
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", SHOAL_PROTOCOL_CORPUS_DIR, e->d_name);
        size_t len;
        uint8_t *bytes = read_all(path, &len);
        shoal_envelope *env = NULL;
        shoal_errinfo ei = {{0}};
        shoal_err err = shoal_envelope_decode(&codec, bytes, len, &env, &ei);
        if (is_valid) {
            cr_assert_eq(err, SHOAL_OK, "%s: %s", e->d_name, ei.msg);
            valid++;
        } else {
            cr_assert_eq(err, SHOAL_EPROTO, "%s: accepted", e->d_name);
            bad++;
        }
        shoal_envelope_free(env);
        free(bytes);
    }
    closedir(dir);
    cr_assert_geq(valid, 15);
    cr_assert_geq(bad, 20);
}
