/* Dataset readers (IDX, plain and gzip; CSV) and transforms. Fixture files
 * are written at run time into a fresh mkdtemp directory per test. Every
 * bad input must give its documented error code and a message naming the
 * file and the problem; every allocation failure must give SHOAL_ENOMEM and
 * leak nothing. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "shoal/alloc.h"
#include "shoal/dataset.h"

/* ---- fixture directory ---------------------------------------------------- */

static char fixture_dir[PATH_MAX];

static void fixture_dir_make(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(fixture_dir, sizeof fixture_dir, "%s/shoal-dataset-XXXXXX",
             base && *base ? base : "/tmp");
    cr_assert_not_null(mkdtemp(fixture_dir), "mkdtemp(%s) failed", fixture_dir);
}

static void fixture_dir_remove(void)
{
    DIR *dir = opendir(fixture_dir);
    if (!dir)
        return;
    struct dirent *entry;
    char path[PATH_MAX + 256];
    while ((entry = readdir(dir))) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", fixture_dir, entry->d_name);
        unlink(path);
    }
    closedir(dir);
    rmdir(fixture_dir);
}

TestSuite(ml_dataset, .init = fixture_dir_make, .fini = fixture_dir_remove);

/* A path in the fixture directory; the caller's buffer holds PATH_MAX. */
static char *fixture_path(char *out, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", fixture_dir, name);
    cr_assert(n > 0 && n < PATH_MAX, "fixture path too long");
    return out;
}

static char *write_plain(char *path, const char *name, const void *bytes, size_t len)
{
    fixture_path(path, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    cr_assert_eq(fwrite(bytes, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
    return path;
}

static char *write_gzip(char *path, const char *name, const void *bytes, size_t len)
{
    fixture_path(path, name);
    gzFile f = gzopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    if (len)
        cr_assert_eq(gzwrite(f, bytes, (unsigned)len), (int)len);
    cr_assert_eq(gzclose(f), Z_OK);
    return path;
}

/* Reads a fixture file back (to damage a gzip stream). */
static size_t read_back(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, cap, f);
    cr_assert_lt(n, cap, "fixture larger than the buffer");
    fclose(f);
    return n;
}

/* An IDX file: 0x00 0x00 type rank, big-endian dims, then data bytes. */
static size_t idx_build(uint8_t *buf, uint8_t type, uint8_t rank, const uint32_t *dims,
                        const uint8_t *data, size_t data_len)
{
    size_t n = 0;
    buf[n++] = 0;
    buf[n++] = 0;
    buf[n++] = type;
    buf[n++] = rank;
    for (uint8_t i = 0; i < rank; i++) {
        buf[n++] = (uint8_t)(dims[i] >> 24);
        buf[n++] = (uint8_t)(dims[i] >> 16);
        buf[n++] = (uint8_t)(dims[i] >> 8);
        buf[n++] = (uint8_t)dims[i];
    }
    if (data_len)
        memcpy(buf + n, data, data_len);
    return n + data_len;
}

/* Three 2x2 images and their labels. */
static const uint8_t pixels3[12] = {0, 255, 128, 51, 1, 2, 3, 4, 200, 100, 50, 25};
static const uint32_t image_dims3[3] = {3, 2, 2};
static const uint8_t labels3[3] = {2, 0, 1};

static char *write_images3(char *path, const char *name, int gzip)
{
    uint8_t buf[64];
    size_t len = idx_build(buf, 0x08, 3, image_dims3, pixels3, sizeof pixels3);
    return gzip ? write_gzip(path, name, buf, len) : write_plain(path, name, buf, len);
}

static char *write_labels(char *path, const char *name, const uint8_t *labels, uint32_t count,
                          int gzip)
{
    uint8_t buf[64];
    cr_assert_leq(count, 32);
    size_t len = idx_build(buf, 0x08, 1, &count, labels, count);
    return gzip ? write_gzip(path, name, buf, len) : write_plain(path, name, buf, len);
}

/* The error code, and a message naming the file and the problem. */
static void expect_error(shoal_err got, shoal_err want, const shoal_errinfo *ei, const char *name,
                         const char *phrase)
{
    cr_expect_eq(got, want, "got %s, expected %s; message: %s", shoal_err_name(got),
                 shoal_err_name(want), ei->msg);
    cr_expect_not_null(strstr(ei->msg, name), "message '%s' does not name '%s'", ei->msg, name);
    cr_expect_not_null(strstr(ei->msg, phrase), "message '%s' does not say '%s'", ei->msg, phrase);
}

/* Both sizes appear in the message after the file name (which, being a
 * mkdtemp name, may hold digits itself), the first before the second. */
static void expect_after_name(const shoal_errinfo *ei, const char *name, const char *first,
                              const char *second)
{
    const char *rest = strstr(ei->msg, name);
    cr_assert_not_null(rest, "message '%s' does not name '%s'", ei->msg, name);
    rest += strlen(name);
    const char *at = strstr(rest, first);
    cr_expect_not_null(at, "message '%s' lacks size %s", ei->msg, first);
    if (at)
        cr_expect_not_null(strstr(at + strlen(first), second), "message '%s' lacks size %s",
                           ei->msg, second);
}

/* Loads a pair that must fail; checks *out is left NULL. */
static shoal_err load_idx_failing(const char *images, const char *labels, uint32_t classes,
                                  shoal_errinfo *ei)
{
    shoal_dataset sentinel, *ds = &sentinel;
    memset(ei, 0, sizeof *ei);
    shoal_err err = shoal_dataset_load_idx(images, labels, classes, &ds, ei);
    cr_expect_null(ds, "failed load left *out set");
    if (err == SHOAL_OK && ds != &sentinel)
        shoal_dataset_free(ds);
    return err;
}

/* An images file `name` holding the given raw bytes, with good labels. */
static shoal_err load_bad_images(const uint8_t *bytes, size_t len, const char *name, int gzip,
                                 char *path, shoal_errinfo *ei)
{
    char labels[PATH_MAX];
    if (gzip)
        write_gzip(path, name, bytes, len);
    else
        write_plain(path, name, bytes, len);
    write_labels(labels, "labels.idx", labels3, 3, 0);
    return load_idx_failing(path, labels, 0, ei);
}

/* ---- IDX: valid files ----------------------------------------------------- */

static void expect_dataset3(const shoal_dataset *ds, uint32_t classes)
{
    cr_assert_not_null(ds);
    cr_expect_eq(ds->count, 3);
    cr_expect_eq(ds->features, 4);
    cr_expect_eq(ds->shape.c, 1);
    cr_expect_eq(ds->shape.h, 2);
    cr_expect_eq(ds->shape.w, 2);
    cr_expect_eq(ds->classes, classes);
    for (size_t i = 0; i < 12; i++)
        cr_expect(fabs((double)ds->x[i] - pixels3[i] / 255.0) <= 1e-7,
                  "x[%zu] = %.9g, expected %d/255", i, (double)ds->x[i], pixels3[i]);
    cr_expect_eq(ds->x[0], 0.0f);
    cr_expect_eq(ds->x[1], 1.0f);
    for (size_t i = 0; i < 3; i++)
        cr_expect_eq(ds->y[i], labels3[i], "y[%zu] = %d", i, ds->y[i]);
}

Test(ml_dataset, idx_parse_reads_header_and_data)
{
    uint32_t dims[2] = {2, 3};
    uint8_t data[6] = {9, 8, 7, 6, 5, 4}, buf[64];
    size_t len = idx_build(buf, 0x08, 2, dims, data, sizeof data);
    shoal_idx *idx = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_idx_parse(buf, len, "m.idx", &idx, &ei), SHOAL_OK, "%s", ei.msg);
    cr_expect_eq(idx->rank, 2);
    cr_expect_eq(idx->dims[0], 2);
    cr_expect_eq(idx->dims[1], 3);
    cr_expect_eq(idx->count, 6);
    cr_expect_arr_eq(idx->data, data, sizeof data);
    shoal_idx_free(idx);
    shoal_idx_free(NULL);
}

Test(ml_dataset, idx_parse_reads_big_endian_dimensions)
{
    /* 0x00000102 = 258: a little-endian reader would see 0x02010000. */
    uint32_t dims[1] = {258};
    uint8_t data[258], buf[300];
    for (int i = 0; i < 258; i++)
        data[i] = (uint8_t)i;
    size_t len = idx_build(buf, 0x08, 1, dims, data, sizeof data);
    shoal_idx *idx = NULL;
    cr_assert_eq(shoal_idx_parse(buf, len, "big.idx", &idx, NULL), SHOAL_OK);
    cr_expect_eq(idx->dims[0], 258);
    cr_expect_eq(idx->data[257], 1);
    shoal_idx_free(idx);
}

Test(ml_dataset, idx_plain_pair_loads_shape_pixels_and_labels)
{
    char images[PATH_MAX], labels[PATH_MAX];
    write_images3(images, "images.idx", 0);
    write_labels(labels, "labels.idx", labels3, 3, 0);
    shoal_dataset *ds = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_dataset_load_idx(images, labels, 0, &ds, &ei), SHOAL_OK, "%s", ei.msg);
    expect_dataset3(ds, 3); /* max label 2, plus one */
    shoal_dataset_free(ds);
}

Test(ml_dataset, idx_gzip_pair_loads_like_plain)
{
    char images[PATH_MAX], labels[PATH_MAX];
    write_images3(images, "images.idx.gz", 1);
    write_labels(labels, "labels.idx.gz", labels3, 3, 1);
    shoal_dataset *ds = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_dataset_load_idx(images, labels, 0, &ds, &ei), SHOAL_OK, "%s", ei.msg);
    expect_dataset3(ds, 3);
    shoal_dataset_free(ds);
}

Test(ml_dataset, idx_mixed_gzip_and_plain_load)
{
    char images[PATH_MAX], labels[PATH_MAX];
    write_images3(images, "images.idx.gz", 1);
    write_labels(labels, "labels.idx", labels3, 3, 0);
    shoal_dataset *ds = NULL;
    cr_assert_eq(shoal_dataset_load_idx(images, labels, 10, &ds, NULL), SHOAL_OK);
    expect_dataset3(ds, 10); /* explicit classes are kept */
    shoal_dataset_free(ds);
}

Test(ml_dataset, idx_rank4_images_give_channel_shape)
{
    /* 2 examples of 3 channels x 1 x 2, NCHW. */
    uint32_t dims[4] = {2, 3, 1, 2};
    uint8_t data[12], buf[64];
    for (int i = 0; i < 12; i++)
        data[i] = (uint8_t)(i * 20);
    char images[PATH_MAX], labels[PATH_MAX];
    write_gzip(images, "rgb.idx.gz", buf, idx_build(buf, 0x08, 4, dims, data, sizeof data));
    const uint8_t y[2] = {4, 1};
    write_labels(labels, "rgb-labels.idx", y, 2, 1);
    shoal_dataset *ds = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_dataset_load_idx(images, labels, 0, &ds, &ei), SHOAL_OK, "%s", ei.msg);
    cr_expect_eq(ds->count, 2);
    cr_expect_eq(ds->features, 6);
    cr_expect_eq(ds->shape.c, 3);
    cr_expect_eq(ds->shape.h, 1);
    cr_expect_eq(ds->shape.w, 2);
    cr_expect_eq(ds->classes, 5);
    cr_expect_float_eq(ds->x[7], 140.0f / 255.0f, 1e-7);
    cr_expect_eq(ds->y[0], 4);
    cr_expect_eq(ds->y[1], 1);
    shoal_dataset_free(ds);
}

Test(ml_dataset, idx_label_just_below_classes_is_accepted)
{
    char images[PATH_MAX], labels[PATH_MAX];
    write_images3(images, "images.idx", 0);
    const uint8_t y[3] = {4, 0, 4};
    write_labels(labels, "labels.idx", y, 3, 0);
    shoal_dataset *ds = NULL;
    cr_assert_eq(shoal_dataset_load_idx(images, labels, 5, &ds, NULL), SHOAL_OK);
    cr_expect_eq(ds->classes, 5);
    cr_expect_eq(ds->y[2], 4);
    shoal_dataset_free(ds);
}

/* ---- IDX: header and size errors ------------------------------------------ */

Test(ml_dataset, idx_wrong_magic_names_file)
{
    uint8_t buf[64];
    size_t len = idx_build(buf, 0x08, 3, image_dims3, pixels3, sizeof pixels3);
    buf[0] = 0x1f; /* looks like nothing Shoal reads */
    buf[1] = 0x01;
    char path[PATH_MAX];
    shoal_errinfo ei;
    shoal_err err = load_bad_images(buf, len, "magic.idx", 0, path, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "magic");
}

Test(ml_dataset, idx_wrong_magic_inside_gzip_names_file)
{
    const char text[] = "this is not an IDX file at all";
    char path[PATH_MAX];
    shoal_errinfo ei;
    shoal_err err =
        load_bad_images((const uint8_t *)text, sizeof text - 1, "text.idx.gz", 1, path, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "magic");
}

Test(ml_dataset, idx_unsupported_type_names_type)
{
    uint8_t buf[64];
    size_t len = idx_build(buf, 0x0D, 3, image_dims3, pixels3, sizeof pixels3); /* float */
    char path[PATH_MAX];
    shoal_errinfo ei;
    shoal_err err = load_bad_images(buf, len, "float.idx", 0, path, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "not supported");
    cr_expect_not_null(strstr(ei.msg, "0x0d"), "type byte missing from '%s'", ei.msg);
}

Test(ml_dataset, idx_rank_zero_refused)
{
    uint8_t buf[8] = {0, 0, 0x08, 0, 1, 2, 3, 4};
    char path[PATH_MAX];
    shoal_errinfo ei;
    shoal_err err = load_bad_images(buf, sizeof buf, "rank0.idx", 0, path, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "rank 0");
}

Test(ml_dataset, idx_rank_five_refused)
{
    uint32_t dims[5] = {1, 1, 1, 1, 1};
    uint8_t data[1] = {7}, buf[64];
    size_t len = idx_build(buf, 0x08, 5, dims, data, 1);
    char path[PATH_MAX];
    shoal_errinfo ei;
    shoal_err err = load_bad_images(buf, len, "rank5.idx", 0, path, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "rank 5");
}

Test(ml_dataset, idx_zero_dimension_refused)
{
    uint32_t dims[3] = {3, 0, 2};
    uint8_t buf[64];
    size_t len = idx_build(buf, 0x08, 3, dims, NULL, 0);
    char path[PATH_MAX];
    shoal_errinfo ei;
    shoal_err err = load_bad_images(buf, len, "zero.idx", 0, path, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "dimension 1 is 0");
}

Test(ml_dataset, idx_too_short_for_magic)
{
    const uint8_t buf[3] = {0, 0, 8};
    char path[PATH_MAX];
    shoal_errinfo ei;
    shoal_err err = load_bad_images(buf, sizeof buf, "short.idx", 0, path, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "too short");
    err = load_bad_images(buf, 0, "empty.idx", 0, path, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "too short");
}

Test(ml_dataset, idx_truncated_header_names_file_and_sizes)
{
    /* Rank 3 needs 16 header bytes; give it 10. */
    uint8_t buf[64];
    idx_build(buf, 0x08, 3, image_dims3, NULL, 0);
    char path[PATH_MAX];
    shoal_errinfo ei;
    shoal_err err = load_bad_images(buf, 10, "header.idx", 0, path, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "truncated header");
    expect_after_name(&ei, path, "16", "10");
}

Test(ml_dataset, idx_truncated_data_names_file_and_sizes)
{
    uint8_t buf[64];
    size_t len = idx_build(buf, 0x08, 3, image_dims3, pixels3, sizeof pixels3);
    char path[PATH_MAX];
    shoal_errinfo ei;
    shoal_err err = load_bad_images(buf, len - 5, "cut.idx", 0, path, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "truncated");
    expect_after_name(&ei, path, "12", "7");
}

Test(ml_dataset, idx_truncated_data_inside_gzip_names_file)
{
    uint8_t buf[64];
    size_t len = idx_build(buf, 0x08, 3, image_dims3, pixels3, sizeof pixels3);
    char path[PATH_MAX];
    shoal_errinfo ei;
    shoal_err err = load_bad_images(buf, len - 1, "cut.idx.gz", 1, path, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "truncated");
}

Test(ml_dataset, idx_trailing_bytes_refused)
{
    uint8_t buf[64];
    size_t len = idx_build(buf, 0x08, 3, image_dims3, pixels3, sizeof pixels3);
    buf[len++] = 0xaa;
    buf[len++] = 0xbb;
    char path[PATH_MAX];
    shoal_errinfo ei;
    shoal_err err = load_bad_images(buf, len, "trailing.idx", 0, path, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "2 unexpected bytes");
}

Test(ml_dataset, idx_huge_dimensions_refused_before_reading_data)
{
    /* 65536 x 65536 x 2 bytes is 8 GiB: refused from the header alone. */
    uint32_t dims[3] = {65536, 65536, 2};
    uint8_t buf[64];
    size_t len = idx_build(buf, 0x08, 3, dims, pixels3, 4);
    char path[PATH_MAX];
    shoal_errinfo ei;
    shoal_err err = load_bad_images(buf, len, "huge.idx", 0, path, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "more than");
}

Test(ml_dataset, idx_parse_without_name_or_errinfo)
{
    const uint8_t buf[4] = {1, 2, 3, 4};
    shoal_idx sentinel, *idx = &sentinel;
    shoal_errinfo ei = {{0}};
    cr_expect_eq(shoal_idx_parse(buf, sizeof buf, NULL, &idx, &ei), SHOAL_EFORMAT);
    cr_expect_null(idx);
    cr_expect_gt(strlen(ei.msg), 0);
    cr_expect_eq(shoal_idx_parse(buf, sizeof buf, "x", &idx, NULL), SHOAL_EFORMAT);
    cr_expect_eq(shoal_idx_parse(NULL, 5, "x", &idx, NULL), SHOAL_EINVAL);
}

/* ---- IDX: file and gzip errors -------------------------------------------- */

Test(ml_dataset, idx_corrupt_gzip_is_io_error)
{
    /* A valid gzip member header, then bytes that are no deflate stream
     * (0xff starts a block of the reserved type 3). */
    uint8_t buf[48] = {0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03};
    memset(buf + 10, 0xff, sizeof buf - 10);
    char path[PATH_MAX];
    shoal_errinfo ei;
    shoal_err err = load_bad_images(buf, sizeof buf, "garbage.idx.gz", 0, path, &ei);
    expect_error(err, SHOAL_EIO, &ei, path, "corrupt");
}

Test(ml_dataset, idx_cut_gzip_stream_is_io_error)
{
    char path[PATH_MAX];
    uint8_t gz[256];
    write_images3(path, "whole.idx.gz", 1);
    size_t len = read_back(path, gz, sizeof gz);
    cr_assert_gt(len, 20);
    shoal_errinfo ei;
    /* In the middle of the deflate data, and just before the CRC/size
     * trailer: both are cut short, neither is a clean end. */
    shoal_err err = load_bad_images(gz, 14, "cut-deflate.idx.gz", 0, path, &ei);
    expect_error(err, SHOAL_EIO, &ei, path, "corrupt");
    err = load_bad_images(gz, len - 8, "cut-trailer.idx.gz", 0, path, &ei);
    expect_error(err, SHOAL_EIO, &ei, path, "corrupt");
}

Test(ml_dataset, idx_gzip_checksum_mismatch_is_io_error)
{
    char path[PATH_MAX];
    uint8_t gz[256];
    write_images3(path, "whole.idx.gz", 1);
    size_t len = read_back(path, gz, sizeof gz);
    gz[len - 8] ^= 0x55; /* first CRC-32 byte of the trailer */
    shoal_errinfo ei;
    shoal_err err = load_bad_images(gz, len, "crc.idx.gz", 0, path, &ei);
    expect_error(err, SHOAL_EIO, &ei, path, "corrupt");
}

Test(ml_dataset, idx_missing_file_is_io_error)
{
    char images[PATH_MAX], labels[PATH_MAX];
    fixture_path(images, "no-such-images.idx");
    write_labels(labels, "labels.idx", labels3, 3, 0);
    shoal_errinfo ei;
    shoal_err err = load_idx_failing(images, labels, 0, &ei);
    expect_error(err, SHOAL_EIO, &ei, images, "cannot open");

    write_images3(images, "images.idx", 0);
    fixture_path(labels, "no-such-labels.idx");
    err = load_idx_failing(images, labels, 0, &ei);
    expect_error(err, SHOAL_EIO, &ei, labels, "cannot open");

    shoal_idx sentinel, *idx = &sentinel;
    err = shoal_idx_read(labels, &idx, &ei);
    expect_error(err, SHOAL_EIO, &ei, labels, "cannot open");
    cr_expect_null(idx, "failed read left *out set");
}

Test(ml_dataset, idx_directory_is_io_error)
{
    char labels[PATH_MAX];
    write_labels(labels, "labels.idx", labels3, 3, 0);
    shoal_errinfo ei;
    shoal_err err = load_idx_failing(fixture_dir, labels, 0, &ei);
    expect_error(err, SHOAL_EIO, &ei, fixture_dir, "directory");
}

/* ---- IDX: images and labels that disagree --------------------------------- */

Test(ml_dataset, idx_count_mismatch_names_both_files)
{
    char images[PATH_MAX], labels[PATH_MAX];
    write_images3(images, "images.idx", 0);
    write_labels(labels, "labels.idx", labels3, 2, 0);
    shoal_errinfo ei;
    shoal_err err = load_idx_failing(images, labels, 0, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, images, "3 images");
    expect_error(err, SHOAL_EFORMAT, &ei, labels, "2 labels");
}

Test(ml_dataset, idx_labels_of_wrong_rank_refused)
{
    char images[PATH_MAX], labels[PATH_MAX];
    write_images3(images, "images.idx", 0);
    uint32_t dims[2] = {3, 1};
    uint8_t buf[64];
    write_plain(labels, "labels2d.idx", buf, idx_build(buf, 0x08, 2, dims, labels3, 3));
    shoal_errinfo ei;
    shoal_err err = load_idx_failing(images, labels, 0, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, labels, "1 dimension");

    /* Images passed as labels: the common slip. */
    err = load_idx_failing(images, images, 0, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, images, "found 3");
}

Test(ml_dataset, idx_images_of_wrong_rank_refused)
{
    char images[PATH_MAX], labels[PATH_MAX];
    uint32_t dims[2] = {3, 4};
    uint8_t buf[64];
    write_plain(images, "flat.idx", buf, idx_build(buf, 0x08, 2, dims, pixels3, 12));
    write_labels(labels, "labels.idx", labels3, 3, 0);
    shoal_errinfo ei;
    shoal_err err = load_idx_failing(images, labels, 0, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, images, "found 2");
}

Test(ml_dataset, idx_label_at_or_above_classes_refused)
{
    char images[PATH_MAX], labels[PATH_MAX];
    write_images3(images, "images.idx", 0);
    const uint8_t y[3] = {0, 7, 1};
    write_labels(labels, "labels.idx", y, 3, 0);
    shoal_errinfo ei;
    shoal_err err = load_idx_failing(images, labels, 5, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, labels, "label 7 is out of range for 5 classes");
    err = load_idx_failing(images, labels, 7, &ei); /* exactly `classes` */
    expect_error(err, SHOAL_EFORMAT, &ei, labels, "label 7 is out of range for 7 classes");
}

/* ---- Fashion-MNIST layout ------------------------------------------------- */

Test(ml_dataset, fashion_mnist_reads_standard_names)
{
    char path[PATH_MAX];
    uint8_t buf[64];
    write_gzip(path, "train-images-idx3-ubyte.gz", buf,
               idx_build(buf, 0x08, 3, image_dims3, pixels3, sizeof pixels3));
    const uint8_t y[3] = {9, 3, 0};
    write_labels(path, "train-labels-idx1-ubyte.gz", y, 3, 1);
    shoal_dataset *ds = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_dataset_load_fashion_mnist(fixture_dir, 1, &ds, &ei), SHOAL_OK, "%s",
                 ei.msg);
    cr_expect_eq(ds->count, 3);
    cr_expect_eq(ds->classes, 10);
    cr_expect_eq(ds->y[0], 9);
    shoal_dataset_free(ds);

    /* No test split here: the message names the file and how to get it. */
    shoal_dataset sentinel;
    ds = &sentinel;
    shoal_err err = shoal_dataset_load_fashion_mnist(fixture_dir, 0, &ds, &ei);
    expect_error(err, SHOAL_EIO, &ei, "t10k-images-idx3-ubyte.gz", "dataset-fashion-mnist");
    cr_expect_null(ds);
}

Test(ml_dataset, fashion_mnist_overlong_directory_refused)
{
    char dir[5000];
    memset(dir, 'd', sizeof dir - 1);
    dir[sizeof dir - 1] = 0;
    shoal_dataset sentinel, *ds = &sentinel;
    shoal_errinfo ei = {{0}};
    cr_expect_eq(shoal_dataset_load_fashion_mnist(dir, 1, &ds, &ei), SHOAL_EINVAL);
    cr_expect_not_null(strstr(ei.msg, "too long"), "'%s'", ei.msg);
    cr_expect_null(ds, "failed load left *out set");
}

/* ---- IDX: allocation failures --------------------------------------------- */

static void idx_load_under_failalloc(int gzip)
{
    char images[PATH_MAX], labels[PATH_MAX];
    write_images3(images, gzip ? "images.idx.gz" : "images.idx", gzip);
    write_labels(labels, gzip ? "labels.idx.gz" : "labels.idx", labels3, 3, gzip);
    long allow;
    for (allow = 0; allow < 1000; allow++) {
        shoal_dataset *ds = NULL;
        shoal_errinfo ei = {{0}};
        shoal_failalloc_install(allow);
        shoal_err err = shoal_dataset_load_idx(images, labels, 0, &ds, &ei);
        if (err == SHOAL_OK) {
            expect_dataset3(ds, 3);
            shoal_dataset_free(ds);
        } else {
            cr_expect_eq(err, SHOAL_ENOMEM, "%ld allocations allowed: %s (%s)", allow,
                         shoal_err_name(err), ei.msg);
            cr_expect_null(ds);
            cr_expect_not_null(strstr(ei.msg, "memory"), "%ld allowed: message '%s'", allow,
                               ei.msg);
        }
        long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        cr_assert_eq(live, 0, "%ld blocks leaked with %ld allocations allowed", live, allow);
        if (err == SHOAL_OK)
            break;
    }
    cr_assert_lt(allow, 1000, "never succeeded");
    cr_expect_gt(allow, 2, "only %ld allocations: is the hook used?", allow);
}

Test(ml_dataset, idx_load_survives_every_allocation_failure)
{
    idx_load_under_failalloc(0);
}

Test(ml_dataset, idx_gzip_load_survives_every_allocation_failure)
{
    idx_load_under_failalloc(1);
}

Test(ml_dataset, idx_parse_survives_every_allocation_failure)
{
    uint8_t buf[64];
    size_t len = idx_build(buf, 0x08, 3, image_dims3, pixels3, sizeof pixels3);
    long allow;
    for (allow = 0; allow < 100; allow++) {
        shoal_idx *idx = NULL;
        shoal_errinfo ei = {{0}};
        shoal_failalloc_install(allow);
        shoal_err err = shoal_idx_parse(buf, len, "mem.idx", &idx, &ei);
        if (err == SHOAL_OK) {
            cr_expect_arr_eq(idx->data, pixels3, sizeof pixels3);
            shoal_idx_free(idx);
        } else {
            cr_expect_eq(err, SHOAL_ENOMEM, "%s", shoal_err_name(err));
            cr_expect_null(idx);
            cr_expect_not_null(strstr(ei.msg, "mem.idx"), "'%s'", ei.msg);
        }
        long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        cr_assert_eq(live, 0, "%ld blocks leaked with %ld allocations allowed", live, allow);
        if (err == SHOAL_OK)
            break;
    }
    cr_assert_lt(allow, 100, "never succeeded");
}

/* ---- CSV: valid input ----------------------------------------------------- */

static shoal_dataset *parse_csv_ok(const char *text, size_t len, uint32_t classes)
{
    shoal_dataset *ds = NULL;
    shoal_errinfo ei = {{0}};
    cr_assert_eq(shoal_dataset_parse_csv(text, len, "t.csv", classes, &ds, &ei), SHOAL_OK, "%s",
                 ei.msg);
    cr_assert_not_null(ds);
    return ds;
}

/* The three rows used by the valid-input tests: labels 1, 0, 2 and two
 * features each. */
static void expect_rows3(const shoal_dataset *ds)
{
    cr_expect_eq(ds->count, 3);
    cr_expect_eq(ds->features, 2);
    cr_expect_eq(ds->shape.c, 2);
    cr_expect_eq(ds->shape.h, 1);
    cr_expect_eq(ds->shape.w, 1);
    const int32_t y[3] = {1, 0, 2};
    const float x[6] = {0.5f, -2.0f, 3e2f, 0.125f, -1.5f, 7.0f};
    for (int i = 0; i < 3; i++)
        cr_expect_eq(ds->y[i], y[i], "y[%d] = %d", i, ds->y[i]);
    for (int i = 0; i < 6; i++)
        cr_expect_eq(ds->x[i], x[i], "x[%d] = %g, expected %g", i, (double)ds->x[i], (double)x[i]);
}

static void expect_csv3(const char *text, uint32_t classes, uint32_t want_classes)
{
    shoal_dataset *ds = parse_csv_ok(text, strlen(text), classes);
    expect_rows3(ds);
    cr_expect_eq(ds->classes, want_classes);
    shoal_dataset_free(ds);
}

Test(ml_dataset, csv_with_header)
{
    expect_csv3("label,a,b\n1,0.5,-2\n0,3e2,0.125\n2,-1.5,7\n", 0, 3);
}

Test(ml_dataset, csv_without_header)
{
    expect_csv3("1,0.5,-2\n0,3e2,0.125\n2,-1.5,7\n", 0, 3);
}

Test(ml_dataset, csv_classes_given_are_kept)
{
    expect_csv3("1,0.5,-2\n0,3e2,0.125\n2,-1.5,7\n", 10, 10);
}

Test(ml_dataset, csv_blank_lines_are_skipped)
{
    expect_csv3("\n  \nlabel,a,b\n\n1,0.5,-2\n\n\t\n0,3e2,0.125\n2,-1.5,7\n\n\n", 0, 3);
}

Test(ml_dataset, csv_last_line_without_newline)
{
    expect_csv3("1,0.5,-2\n0,3e2,0.125\n2,-1.5,7", 0, 3);
}

Test(ml_dataset, csv_crlf_line_endings)
{
    expect_csv3("label,a,b\r\n1,0.5,-2\r\n0,3e2,0.125\r\n\r\n2,-1.5,7\r\n", 0, 3);
}

Test(ml_dataset, csv_spaces_around_fields)
{
    expect_csv3("1, 0.5 ,-2\n 0 ,3e2,\t0.125\n2,-1.5,7 \n", 0, 3);
}

Test(ml_dataset, csv_text_need_not_be_terminated)
{
    /* The parser gets a length, not a C string: bytes past it are not read. */
    const char text[] = "1,0.5,-2\n0,3e2,0.125\n2,-1.5,7\n9,9,9\n";
    shoal_dataset *ds = parse_csv_ok(text, strlen(text) - 6, 0);
    expect_rows3(ds);
    shoal_dataset_free(ds);
}

Test(ml_dataset, csv_load_file_plain_and_gzip)
{
    const char text[] = "label,a,b\n1,0.5,-2\n0,3e2,0.125\n2,-1.5,7\n";
    char path[PATH_MAX];
    for (int gzip = 0; gzip <= 1; gzip++) {
        if (gzip)
            write_gzip(path, "d.csv.gz", text, sizeof text - 1);
        else
            write_plain(path, "d.csv", text, sizeof text - 1);
        shoal_dataset *ds = NULL;
        shoal_errinfo ei = {{0}};
        cr_assert_eq(shoal_dataset_load_csv(path, 0, &ds, &ei), SHOAL_OK, "%s", ei.msg);
        expect_rows3(ds);
        shoal_dataset_free(ds);
    }
}

/* ---- CSV: errors ---------------------------------------------------------- */

static shoal_err parse_csv_failing(const char *text, size_t len, uint32_t classes,
                                   shoal_errinfo *ei)
{
    shoal_dataset sentinel, *ds = &sentinel;
    memset(ei, 0, sizeof *ei);
    shoal_err err = shoal_dataset_parse_csv(text, len, "bad.csv", classes, &ds, ei);
    cr_expect_null(ds, "failed parse left *out set");
    if (err == SHOAL_OK && ds != &sentinel)
        shoal_dataset_free(ds);
    return err;
}

static void expect_csv_error(const char *text, uint32_t classes, const char *where,
                             const char *phrase)
{
    shoal_errinfo ei;
    shoal_err err = parse_csv_failing(text, strlen(text), classes, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, where, phrase);
}

Test(ml_dataset, csv_wrong_field_count_names_line)
{
    expect_csv_error("label,a,b\n1,2,3\n0,4\n", 0, "bad.csv:3:", "expected 3 fields");
    expect_csv_error("1,2,3\n0,4,5,6\n", 0, "bad.csv:2:", "found 4");
}

Test(ml_dataset, csv_line_numbers_count_blank_lines)
{
    expect_csv_error("\nh,a\n\n1,2\n\n\n0,4,5\n", 0, "bad.csv:7:", "expected 2 fields");
    expect_csv_error("1,2\r\n\r\n0,x\r\n", 0, "bad.csv:3:3:", "'x'");
}

Test(ml_dataset, csv_non_numeric_feature_names_line_column_and_text)
{
    expect_csv_error("label,a,b\n1,2,3\n0,4,abc\n", 0, "bad.csv:3:5:", "'abc'");
    expect_csv_error("1,2,3\n0,4,abc\n", 0, "bad.csv:2:5:", "finite number");
}

Test(ml_dataset, csv_feature_with_trailing_junk_refused)
{
    expect_csv_error("1,2.5x\n", 0, "bad.csv:1:3:", "'2.5x'");
    expect_csv_error("1,2\n0,3 4\n", 0, "bad.csv:2:3:", "'3 4'");
}

Test(ml_dataset, csv_empty_feature_refused)
{
    expect_csv_error("1,2,3\n0,,4\n", 0, "bad.csv:2:3:", "finite number");
    /* An empty last field must not borrow the number on the next line. */
    expect_csv_error("1,2\n0,\n1,5\n", 0, "bad.csv:2:3:", "finite number");
}

Test(ml_dataset, csv_negative_label_refused)
{
    expect_csv_error("1,2\n-1,3\n", 0, "bad.csv:2:1:", "'-1'");
    expect_csv_error("1,2\n-1,3\n", 0, "bad.csv:2:1:", "non-negative integer");
}

Test(ml_dataset, csv_non_integer_label_refused)
{
    expect_csv_error("1,2\n1.5,3\n", 0, "bad.csv:2:1:", "'1.5'");
    expect_csv_error("1,2\n99999999999999999999,3\n", 0, "bad.csv:2:1:", "non-negative integer");
    expect_csv_error("1,2\n,3\n", 0, "bad.csv:2:1:", "non-negative integer");
}

Test(ml_dataset, csv_label_out_of_range_for_classes)
{
    expect_csv_error("0,1\n2,5\n3,2\n", 3, "bad.csv:3:1:", "label 3 is out of range for 3 classes");
    shoal_dataset *ds = parse_csv_ok("0,1\n2,5\n", 3, 3);
    cr_expect_eq(ds->classes, 3);
    shoal_dataset_free(ds);
}

Test(ml_dataset, csv_nonfinite_feature_refused)
{
    const char *texts[] = {"0,1\n1,nan\n",      "0,1\n1,inf\n", "0,1\n1,-inf\n",
                           "0,1\n1,Infinity\n", "0,1\n1,NAN\n", "0,1\n1,1e999\n"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        expect_csv_error(texts[i], 0, "bad.csv:2:3:", "finite number");
}

Test(ml_dataset, csv_empty_input_refused)
{
    shoal_errinfo ei;
    shoal_err err = parse_csv_failing("", 0, 0, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, "bad.csv", "no data rows");
    err = parse_csv_failing(NULL, 0, 0, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, "bad.csv", "no data rows");
    expect_csv_error("\n\n  \r\n", 0, "bad.csv", "no data rows");
}

Test(ml_dataset, csv_header_only_refused)
{
    expect_csv_error("label,a,b\n", 0, "bad.csv", "no data rows");
    expect_csv_error("label,a,b", 0, "bad.csv", "no data rows");
}

Test(ml_dataset, csv_single_field_rows_refused)
{
    expect_csv_error("1\n0\n", 0, "bad.csv:1", "at least one feature");
}

Test(ml_dataset, csv_nul_byte_refused)
{
    const char text[] = "0,1\n1,\0002\n";
    shoal_errinfo ei;
    shoal_err err = parse_csv_failing(text, sizeof text - 1, 0, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, "bad.csv", "NUL");

    char path[PATH_MAX];
    write_plain(path, "nul.csv", text, sizeof text - 1);
    shoal_dataset *ds = NULL;
    err = shoal_dataset_load_csv(path, 0, &ds, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, path, "NUL");
    cr_expect_null(ds);
}

Test(ml_dataset, csv_file_errors_name_the_path)
{
    char path[PATH_MAX];
    const char text[] = "1,2\n0,x\n";
    write_gzip(path, "bad.csv.gz", text, sizeof text - 1);
    shoal_dataset sentinel, *ds = &sentinel;
    shoal_errinfo ei;
    char where[PATH_MAX + 16];
    snprintf(where, sizeof where, "%s:2:3:", path);
    shoal_err err = shoal_dataset_load_csv(path, 0, &ds, &ei);
    expect_error(err, SHOAL_EFORMAT, &ei, where, "'x'");
    cr_expect_null(ds);

    fixture_path(path, "missing.csv");
    ds = &sentinel;
    err = shoal_dataset_load_csv(path, 0, &ds, &ei);
    expect_error(err, SHOAL_EIO, &ei, path, "cannot open");
    cr_expect_null(ds, "failed load left *out set");
}

/* ---- CSV: allocation failures ---------------------------------------------- */

Test(ml_dataset, csv_parse_survives_every_allocation_failure)
{
    const char text[] = "label,a,b\n1,0.5,-2\n0,3e2,0.125\n2,-1.5,7\n";
    long allow;
    for (allow = 0; allow < 100; allow++) {
        shoal_dataset *ds = NULL;
        shoal_errinfo ei = {{0}};
        shoal_failalloc_install(allow);
        shoal_err err = shoal_dataset_parse_csv(text, sizeof text - 1, "m.csv", 0, &ds, &ei);
        if (err == SHOAL_OK) {
            expect_rows3(ds);
            shoal_dataset_free(ds);
        } else {
            cr_expect_eq(err, SHOAL_ENOMEM, "%ld allowed: %s", allow, shoal_err_name(err));
            cr_expect_null(ds);
            cr_expect_not_null(strstr(ei.msg, "m.csv"), "'%s'", ei.msg);
        }
        long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        cr_assert_eq(live, 0, "%ld blocks leaked with %ld allocations allowed", live, allow);
        if (err == SHOAL_OK)
            break;
    }
    cr_assert_lt(allow, 100, "never succeeded");
    cr_expect_gt(allow, 1);
}

Test(ml_dataset, csv_load_survives_every_allocation_failure)
{
    const char text[] = "1,0.5,-2\n0,3e2,0.125\n2,-1.5,7";
    char path[PATH_MAX];
    write_gzip(path, "m.csv.gz", text, sizeof text - 1);
    long allow;
    for (allow = 0; allow < 100; allow++) {
        shoal_dataset *ds = NULL;
        shoal_errinfo ei = {{0}};
        shoal_failalloc_install(allow);
        shoal_err err = shoal_dataset_load_csv(path, 0, &ds, &ei);
        if (err == SHOAL_OK) {
            expect_rows3(ds);
            shoal_dataset_free(ds);
        } else {
            cr_expect_eq(err, SHOAL_ENOMEM, "%ld allowed: %s", allow, shoal_err_name(err));
            cr_expect_null(ds);
            cr_expect_not_null(strstr(ei.msg, path), "'%s'", ei.msg);
        }
        long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        cr_assert_eq(live, 0, "%ld blocks leaked with %ld allocations allowed", live, allow);
        if (err == SHOAL_OK)
            break;
    }
    cr_assert_lt(allow, 100, "never succeeded");
    cr_expect_gt(allow, 2);
}

/* ---- transforms ------------------------------------------------------------ */

static shoal_dataset *small_dataset(const float *x, size_t count, uint32_t features)
{
    shoal_dataset *ds = NULL;
    cr_assert_eq(shoal_dataset_new(count, (shoal_shape){features, 1, 1}, 4, &ds), SHOAL_OK);
    memcpy(ds->x, x, count * features * sizeof *x);
    for (size_t i = 0; i < count; i++)
        ds->y[i] = (int32_t)(i % 4);
    return ds;
}

static const float stats_x[8] = {1.0f, 2.0f, 4.0f, 8.0f, -3.0f, 0.5f, 10.0f, 6.5f};

Test(ml_dataset, new_is_zeroed_and_refuses_empty_shape)
{
    shoal_dataset *ds = NULL;
    cr_assert_eq(shoal_dataset_new(3, (shoal_shape){2, 2, 2}, 7, &ds), SHOAL_OK);
    cr_expect_eq(ds->count, 3);
    cr_expect_eq(ds->features, 8);
    cr_expect_eq(ds->classes, 7);
    for (size_t i = 0; i < 24; i++)
        cr_expect_eq(ds->x[i], 0.0f);
    for (size_t i = 0; i < 3; i++)
        cr_expect_eq(ds->y[i], 0);
    shoal_dataset_free(ds);
    shoal_dataset sentinel;
    ds = &sentinel;
    cr_expect_eq(shoal_dataset_new(3, (shoal_shape){2, 0, 2}, 7, &ds), SHOAL_EINVAL);
    cr_expect_null(ds, "failed new left *out set");
    shoal_dataset_free(NULL);
}

Test(ml_dataset, stats_match_direct_computation)
{
    shoal_dataset *ds = small_dataset(stats_x, 4, 2);
    double sum = 0.0;
    for (int i = 0; i < 8; i++)
        sum += stats_x[i];
    double mean = sum / 8.0, sq = 0.0;
    for (int i = 0; i < 8; i++)
        sq += (stats_x[i] - mean) * (stats_x[i] - mean);
    double stddev = sqrt(sq / 8.0); /* over all values: the population form */
    float got_mean = -1.0f, got_std = -1.0f;
    shoal_dataset_stats(ds, &got_mean, &got_std);
    cr_expect_float_eq(got_mean, (float)mean, 1e-6, "mean %g, expected %g", (double)got_mean, mean);
    cr_expect_float_eq(got_std, (float)stddev, 1e-5, "stddev %g, expected %g", (double)got_std,
                       stddev);
    shoal_dataset_stats(ds, NULL, &got_std); /* either output may be NULL */
    shoal_dataset_stats(ds, &got_mean, NULL);
    shoal_dataset_free(ds);
}

Test(ml_dataset, normalize_gives_zero_mean_unit_stddev)
{
    shoal_dataset *ds = small_dataset(stats_x, 4, 2);
    float mean, stddev;
    shoal_dataset_stats(ds, &mean, &stddev);
    cr_assert_eq(shoal_dataset_normalize(ds, mean, stddev), SHOAL_OK);
    for (int i = 0; i < 8; i++)
        cr_expect_float_eq(ds->x[i], (stats_x[i] - mean) / stddev, 1e-5, "x[%d]", i);
    shoal_dataset_stats(ds, &mean, &stddev);
    cr_expect_float_eq(mean, 0.0f, 1e-6, "mean after %g", (double)mean);
    cr_expect_float_eq(stddev, 1.0f, 1e-5, "stddev after %g", (double)stddev);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(ds->y[i], i % 4, "labels touched");
    shoal_dataset_free(ds);
}

Test(ml_dataset, normalize_refuses_bad_stddev_and_leaves_data)
{
    shoal_dataset *ds = small_dataset(stats_x, 4, 2);
    const float bad[] = {0.0f, -1.0f, -0.0f, NAN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_expect_eq(shoal_dataset_normalize(ds, 1.0f, bad[i]), SHOAL_EINVAL, "stddev %g",
                     (double)bad[i]);
        cr_expect_arr_eq(ds->x, stats_x, sizeof stats_x, "data changed by a refused call");
    }
    cr_expect_eq(shoal_dataset_normalize(NULL, 0.0f, 1.0f), SHOAL_EINVAL);
    shoal_dataset_free(ds);
}

Test(ml_dataset, constant_data_has_zero_stddev_and_cannot_be_normalized)
{
    const float same[6] = {0.25f, 0.25f, 0.25f, 0.25f, 0.25f, 0.25f};
    shoal_dataset *ds = small_dataset(same, 3, 2);
    float mean, stddev;
    shoal_dataset_stats(ds, &mean, &stddev);
    cr_expect_eq(mean, 0.25f);
    cr_expect_eq(stddev, 0.0f);
    cr_expect_eq(shoal_dataset_normalize(ds, mean, stddev), SHOAL_EINVAL);
    cr_expect_arr_eq(ds->x, same, sizeof same);
    shoal_dataset_free(ds);
}

Test(ml_dataset, gather_copies_rows_and_labels)
{
    shoal_dataset *ds = small_dataset(stats_x, 4, 2);
    const uint32_t indices[5] = {3, 0, 3, 2, 1};
    float x[10];
    int32_t y[5];
    shoal_dataset_gather(ds, indices, 5, x, y);
    for (int i = 0; i < 5; i++) {
        cr_expect_eq(x[2 * i], stats_x[2 * indices[i]], "row %d", i);
        cr_expect_eq(x[2 * i + 1], stats_x[2 * indices[i] + 1], "row %d", i);
        cr_expect_eq(y[i], (int32_t)(indices[i] % 4), "label %d", i);
    }
    shoal_dataset_free(ds);
}

Test(ml_dataset, new_survives_every_allocation_failure)
{
    long allow;
    for (allow = 0; allow < 100; allow++) {
        shoal_dataset *ds = NULL;
        shoal_failalloc_install(allow);
        shoal_err err = shoal_dataset_new(5, (shoal_shape){1, 2, 3}, 2, &ds);
        if (err == SHOAL_OK)
            shoal_dataset_free(ds);
        else
            cr_expect_eq(err, SHOAL_ENOMEM, "%s", shoal_err_name(err));
        long live = shoal_failalloc_live();
        shoal_failalloc_uninstall();
        cr_assert_eq(live, 0, "%ld blocks leaked with %ld allocations allowed", live, allow);
        if (err == SHOAL_OK)
            break;
    }
    cr_assert_lt(allow, 100, "never succeeded");
}
