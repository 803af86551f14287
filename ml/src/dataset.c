#include "shoal/dataset.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "shoal/alloc.h"

/* Larger inputs are refused rather than exhausting memory: 4 GiB holds
 * ImageNet-sized IDX files; anything beyond is surely not meant. */
#define MAX_FILE_BYTES ((size_t)4 << 30)

shoal_err shoal_dataset_new(size_t count, shoal_shape shape, uint32_t classes, shoal_dataset **out)
{
    if (!out)
        return SHOAL_EINVAL;
    *out = NULL;
    if (shoal_shape_size(shape) == 0)
        return SHOAL_EINVAL;
    shoal_dataset *ds = shoal_calloc(1, sizeof *ds);
    if (!ds)
        return SHOAL_ENOMEM;
    ds->count = count;
    ds->shape = shape;
    ds->features = shoal_shape_size(shape);
    ds->classes = classes;
    if (ds->features && count > SIZE_MAX / sizeof(float) / ds->features)
        goto nomem;
    ds->x = shoal_calloc(count ? count * ds->features : 1, sizeof(float));
    ds->y = shoal_calloc(count ? count : 1, sizeof(int32_t));
    if (!ds->x || !ds->y)
        goto nomem;
    *out = ds;
    return SHOAL_OK;
nomem:
    shoal_dataset_free(ds);
    return SHOAL_ENOMEM;
}

void shoal_dataset_free(shoal_dataset *ds)
{
    if (!ds)
        return;
    shoal_free(ds->x);
    shoal_free(ds->y);
    shoal_free(ds);
}

/* Reads a whole file, gunzipping it when it is gzip-compressed (zlib reads
 * plain files through the same calls). A NUL is appended so text parsers can
 * use the C library; *len excludes it. */
static shoal_err read_file(const char *path, uint8_t **out, size_t *len, shoal_errinfo *ei)
{
    *out = NULL;
    *len = 0;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return shoal_errinfo_set(ei, SHOAL_EIO, "%s: cannot open: %s", path,
                                 errno ? strerror(errno) : "out of memory");
    size_t cap = 1 << 16, used = 0;
    uint8_t *buf = shoal_malloc(cap + 1);
    if (!buf) {
        gzclose(f);
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory reading the file", path);
    }
    for (;;) {
        if (used == cap) {
            if (cap >= MAX_FILE_BYTES) {
                shoal_free(buf);
                gzclose(f);
                return shoal_errinfo_set(ei, SHOAL_ELIMIT,
                                         "%s: larger than the %zu-byte limit for one file", path,
                                         MAX_FILE_BYTES);
            }
            size_t ncap = cap * 2;
            uint8_t *nbuf = shoal_realloc(buf, ncap + 1);
            if (!nbuf) {
                shoal_free(buf);
                gzclose(f);
                return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory reading the file",
                                         path);
            }
            buf = nbuf;
            cap = ncap;
        }
        size_t want = cap - used;
        if (want > INT_MAX)
            want = INT_MAX;
        int got = gzread(f, buf + used, (unsigned)want);
        if (got < 0) {
            int zerr = 0;
            const char *msg = gzerror(f, &zerr);
            shoal_err err = shoal_errinfo_set(
                ei, SHOAL_EIO, "%s: corrupt or unreadable gzip data after %zu bytes: %s", path,
                used, zerr == Z_ERRNO ? strerror(errno) : msg);
            shoal_free(buf);
            gzclose(f);
            return err;
        }
        if (got == 0)
            break;
        used += (size_t)got;
    }
    /* gzread returns 0 both at a clean end and when a gzip stream is cut
     * short; only gzerror tells them apart. */
    int zerr = Z_OK;
    const char *msg = gzerror(f, &zerr);
    if (zerr != Z_OK && zerr != Z_STREAM_END) {
        shoal_err err =
            shoal_errinfo_set(ei, SHOAL_EIO, "%s: truncated or corrupt gzip data: %s", path, msg);
        shoal_free(buf);
        gzclose(f);
        return err;
    }
    gzclose(f);
    buf[used] = 0;
    *out = buf;
    *len = used;
    return SHOAL_OK;
}

/* ---- IDX ------------------------------------------------------------------ */

shoal_err shoal_idx_parse(const uint8_t *buf, size_t len, const char *name, shoal_idx **out,
                          shoal_errinfo *ei)
{
    if (!out || (!buf && len))
        return SHOAL_EINVAL;
    *out = NULL;
    if (!name)
        name = "<idx>";
    if (len < 4)
        return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                 "%s: %zu bytes is too short for an IDX file (4-byte magic "
                                 "number missing)",
                                 name, len);
    if (buf[0] != 0 || buf[1] != 0)
        return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                 "%s: bad magic number 0x%02x%02x%02x%02x: not an IDX file "
                                 "(expected 0x0000 then type and rank, e.g. 0x00000803)",
                                 name, buf[0], buf[1], buf[2], buf[3]);
    if (buf[2] != 0x08)
        return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                 "%s: IDX data type 0x%02x is not supported (only 0x08, "
                                 "unsigned byte)",
                                 name, buf[2]);
    uint32_t rank = buf[3];
    if (rank == 0 || rank > 4)
        return shoal_errinfo_set(
            ei, SHOAL_EFORMAT, "%s: IDX rank %u is not supported (1 to 4 dimensions)", name, rank);
    size_t header = 4 + 4 * (size_t)rank;
    if (len < header)
        return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                 "%s: truncated header: rank %u needs %zu header bytes, file has "
                                 "%zu",
                                 name, rank, header, len);
    shoal_idx idx = {.rank = rank, .count = 1};
    for (uint32_t i = 0; i < rank; i++) {
        const uint8_t *d = buf + 4 + 4 * i;
        idx.dims[i] = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
        if (idx.dims[i] == 0)
            return shoal_errinfo_set(ei, SHOAL_EFORMAT, "%s: dimension %u is 0", name, i);
        if (idx.count > MAX_FILE_BYTES / idx.dims[i])
            return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                     "%s: dimensions describe more than %zu bytes of data", name,
                                     MAX_FILE_BYTES);
        idx.count *= idx.dims[i];
    }
    size_t body = len - header;
    if (body < idx.count)
        return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                 "%s: truncated: header promises %zu data bytes, file holds %zu",
                                 name, idx.count, body);
    if (body > idx.count)
        return shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                 "%s: %zu unexpected bytes after the %zu data bytes the header "
                                 "describes",
                                 name, body - idx.count, idx.count);
    shoal_idx *res = shoal_malloc(sizeof *res);
    uint8_t *data = shoal_malloc(idx.count);
    if (!res || !data) {
        shoal_free(res);
        shoal_free(data);
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory for %zu bytes", name,
                                 idx.count);
    }
    memcpy(data, buf + header, idx.count);
    *res = idx;
    res->data = data;
    *out = res;
    return SHOAL_OK;
}

shoal_err shoal_idx_read(const char *path, shoal_idx **out, shoal_errinfo *ei)
{
    if (!path || !out)
        return SHOAL_EINVAL;
    *out = NULL;
    uint8_t *buf;
    size_t len;
    shoal_err err = read_file(path, &buf, &len, ei);
    if (err)
        return err;
    err = shoal_idx_parse(buf, len, path, out, ei);
    shoal_free(buf);
    return err;
}

void shoal_idx_free(shoal_idx *idx)
{
    if (!idx)
        return;
    shoal_free(idx->data);
    shoal_free(idx);
}

shoal_err shoal_dataset_load_idx(const char *images_path, const char *labels_path, uint32_t classes,
                                 shoal_dataset **out, shoal_errinfo *ei)
{
    if (!images_path || !labels_path || !out)
        return SHOAL_EINVAL;
    *out = NULL;
    shoal_idx *images = NULL, *labels = NULL;
    shoal_dataset *ds = NULL;
    shoal_err err = shoal_idx_read(images_path, &images, ei);
    if (err)
        goto done;
    if ((err = shoal_idx_read(labels_path, &labels, ei)))
        goto done;
    if (images->rank != 3 && images->rank != 4) {
        err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                "%s: images must have 3 (n,h,w) or 4 (n,c,h,w) dimensions, "
                                "found %u",
                                images_path, images->rank);
        goto done;
    }
    if (labels->rank != 1) {
        err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                "%s: labels must have 1 dimension, found %u (is this an images "
                                "file?)",
                                labels_path, labels->rank);
        goto done;
    }
    if (images->dims[0] != labels->dims[0]) {
        err = shoal_errinfo_set(ei, SHOAL_EFORMAT, "%s holds %u images but %s holds %u labels",
                                images_path, images->dims[0], labels_path, labels->dims[0]);
        goto done;
    }
    shoal_shape shape = images->rank == 3
                            ? (shoal_shape){1, images->dims[1], images->dims[2]}
                            : (shoal_shape){images->dims[1], images->dims[2], images->dims[3]};
    uint32_t max_label = 0;
    for (size_t i = 0; i < labels->count; i++)
        if (labels->data[i] > max_label)
            max_label = labels->data[i];
    if (classes && max_label >= classes) {
        err = shoal_errinfo_set(ei, SHOAL_EFORMAT, "%s: label %u is out of range for %u classes",
                                labels_path, max_label, classes);
        goto done;
    }
    if ((err = shoal_dataset_new(images->dims[0], shape, classes ? classes : max_label + 1, &ds))) {
        shoal_errinfo_set(ei, err, "%s: out of memory for %u examples", images_path,
                          images->dims[0]);
        goto done;
    }
    for (size_t i = 0; i < images->count; i++)
        ds->x[i] = (float)images->data[i] * (1.0f / 255.0f);
    for (size_t i = 0; i < labels->count; i++)
        ds->y[i] = labels->data[i];
    *out = ds;
    ds = NULL;
done:
    shoal_idx_free(images);
    shoal_idx_free(labels);
    shoal_dataset_free(ds);
    return err;
}

shoal_err shoal_dataset_load_fashion_mnist(const char *dir, int train, shoal_dataset **out,
                                           shoal_errinfo *ei)
{
    if (!out)
        return SHOAL_EINVAL;
    *out = NULL;
    if (!dir)
        dir = SHOAL_FASHION_MNIST_DIR;
    const char *prefix = train ? "train" : "t10k";
    char images[4096], labels[4096];
    /* A name too long for these buffers would fill the whole message: the
     * error shows only its start. */
    if ((size_t)snprintf(images, sizeof images, "%s/%s-images-idx3-ubyte.gz", dir, prefix) >=
            sizeof images ||
        (size_t)snprintf(labels, sizeof labels, "%s/%s-labels-idx1-ubyte.gz", dir, prefix) >=
            sizeof labels)
        return shoal_errinfo_set(ei, SHOAL_EINVAL, "%.64s...: directory name too long (%zu bytes)",
                                 dir, strlen(dir));
    shoal_err err = shoal_dataset_load_idx(images, labels, 10, out, ei);
    if (err == SHOAL_EIO && ei) {
        char detail[SHOAL_ERRINFO_LEN];
        memcpy(detail, ei->msg, sizeof detail);
        shoal_errinfo_set(ei, err,
                          "%s (install Debian's dataset-fashion-mnist package: "
                          "scripts/bootstrap does, or pass another --data-dir)",
                          detail);
    }
    return err;
}

/* ---- CSV ------------------------------------------------------------------- */

struct csv_cursor {
    const char *name;
    const char *p, *end;
    size_t line;
    const char *line_start;
};

static int is_blank_line(const char *p, const char *end)
{
    for (; p < end && *p != '\n'; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r')
            return 0;
    return 1;
}

static const char *line_end(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    return nl ? nl : end;
}

/* Copies up to 24 characters of the field starting at p for an error. */
static void field_preview(const char *p, const char *end, char *out, size_t cap)
{
    size_t n = 0;
    while (p + n < end && p[n] != ',' && p[n] != '\n' && p[n] != '\r' && n + 1 < cap && n < 24)
        n++;
    memcpy(out, p, n);
    out[n] = 0;
}

static size_t count_fields(const char *p, const char *e)
{
    size_t fields = 1;
    for (; p < e; p++)
        fields += *p == ',';
    return fields;
}

/* Whether a number parsed up to p ends its field: only blanks until the
 * next comma or the end of the line e. strtol/strtof skip leading white
 * space, newlines included, so p past e means the field was empty. */
static int field_ends(const char *p, const char *e)
{
    if (p > e)
        return 0;
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r'))
        p++;
    return p == e || *p == ',';
}

/* Whether the first field of the line [p, e) is an integer: a header's is not. */
static int label_is_number(const char *p, const char *e)
{
    char *num_end;
    (void)strtol(p, &num_end, 10);
    return num_end != p && field_ends(num_end, e);
}

shoal_err shoal_dataset_parse_csv(const char *text, size_t len, const char *name, uint32_t classes,
                                  shoal_dataset **out, shoal_errinfo *ei)
{
    if (!out || (!text && len))
        return SHOAL_EINVAL;
    *out = NULL;
    if (!name)
        name = "<csv>";
    /* strtof needs a terminated string: work on a terminated copy. */
    char *copy = shoal_malloc(len + 1);
    if (!copy)
        return shoal_errinfo_set(ei, SHOAL_ENOMEM, "%s: out of memory", name);
    if (len)
        memcpy(copy, text, len);
    copy[len] = 0;
    if (memchr(copy, 0, len)) {
        shoal_free(copy);
        return shoal_errinfo_set(ei, SHOAL_EFORMAT, "%s: contains a NUL byte: not a text file",
                                 name);
    }
    const char *end = copy + len;
    shoal_err err = SHOAL_OK;
    shoal_dataset *ds = NULL;

    /* Pass 1: find the header, the field count and the number of rows. */
    const char *p, *data_start = NULL;
    size_t fields = 0, rows = 0, line = 1, first_data_line = 0;
    int seen_header = 0;
    for (p = copy; p < end; line++) {
        const char *e = line_end(p, end);
        if (!is_blank_line(p, e)) {
            if (data_start) {
                rows++;
            } else if (!seen_header && !label_is_number(p, e)) {
                seen_header = 1;
            } else {
                data_start = p;
                first_data_line = line;
                fields = count_fields(p, e);
                rows++;
            }
        }
        p = e < end ? e + 1 : end;
    }
    if (!data_start || rows == 0) {
        err = shoal_errinfo_set(ei, SHOAL_EFORMAT, "%s: no data rows (expected label,f1,...,fn)",
                                name);
        goto done;
    }
    if (fields < 2) {
        err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                "%s:%zu: a row needs a label and at least one feature, found %zu "
                                "field",
                                name, first_data_line, fields);
        goto done;
    }
    if ((err = shoal_dataset_new(rows, (shoal_shape){(uint32_t)(fields - 1), 1, 1},
                                 classes ? classes : 1, &ds))) {
        shoal_errinfo_set(ei, err, "%s: out of memory for %zu rows", name, rows);
        goto done;
    }

    /* Pass 2: parse and check every field. */
    size_t row = 0;
    int32_t max_label = 0;
    line = first_data_line;
    for (p = data_start; p < end; line++) {
        const char *e = line_end(p, end);
        if (is_blank_line(p, e)) {
            p = e < end ? e + 1 : e;
            continue;
        }
        size_t have = count_fields(p, e);
        if (have != fields) {
            err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                    "%s:%zu: expected %zu fields like the first row, found %zu",
                                    name, line, fields, have);
            goto done;
        }
        const char *f = p;
        for (size_t k = 0; k < fields; k++) {
            char *num_end;
            char preview[32];
            size_t col = (size_t)(f - p) + 1;
            errno = 0;
            if (k == 0) {
                long v = strtol(f, &num_end, 10);
                if (num_end == f || !field_ends(num_end, e) || errno || v < 0 ||
                    v > INT32_MAX - 1 || (classes && (unsigned long)v >= classes)) {
                    field_preview(f, e, preview, sizeof preview);
                    if (classes && num_end != f && field_ends(num_end, e) && !errno && v >= 0)
                        err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                                "%s:%zu:%zu: label %ld is out of range for %u "
                                                "classes",
                                                name, line, col, v, classes);
                    else
                        err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                                "%s:%zu:%zu: label must be a non-negative "
                                                "integer, found '%s'",
                                                name, line, col, preview);
                    goto done;
                }
                ds->y[row] = (int32_t)v;
                if (v > max_label)
                    max_label = (int32_t)v;
            } else {
                float v = strtof(f, &num_end);
                if (num_end == f || !field_ends(num_end, e) || !isfinite(v)) {
                    field_preview(f, e, preview, sizeof preview);
                    err = shoal_errinfo_set(ei, SHOAL_EFORMAT,
                                            "%s:%zu:%zu: feature %zu must be a finite number, "
                                            "found '%s'",
                                            name, line, col, k, preview);
                    goto done;
                }
                ds->x[row * ds->features + k - 1] = v;
            }
            const char *comma = memchr(f, ',', (size_t)(e - f));
            f = comma ? comma + 1 : e;
        }
        row++;
        p = e < end ? e + 1 : e;
    }
    if (!classes)
        ds->classes = (uint32_t)max_label + 1;
    *out = ds;
    ds = NULL;
done:
    shoal_dataset_free(ds);
    shoal_free(copy);
    return err;
}

shoal_err shoal_dataset_load_csv(const char *path, uint32_t classes, shoal_dataset **out,
                                 shoal_errinfo *ei)
{
    if (!path || !out)
        return SHOAL_EINVAL;
    *out = NULL;
    uint8_t *buf;
    size_t len;
    shoal_err err = read_file(path, &buf, &len, ei);
    if (err)
        return err;
    err = shoal_dataset_parse_csv((const char *)buf, len, path, classes, out, ei);
    shoal_free(buf);
    return err;
}

/* ---- transforms ------------------------------------------------------------ */

void shoal_dataset_stats(const shoal_dataset *ds, float *mean, float *stddev)
{
    const size_t n = ds->count * ds->features;
    double sum = 0.0, sq = 0.0;
    for (size_t i = 0; i < n; i++) {
        sum += ds->x[i];
        sq += (double)ds->x[i] * ds->x[i];
    }
    double mu = n ? sum / (double)n : 0.0;
    double var = n ? sq / (double)n - mu * mu : 0.0;
    if (mean)
        *mean = (float)mu;
    if (stddev)
        *stddev = (float)sqrt(var > 0.0 ? var : 0.0);
}

shoal_err shoal_dataset_normalize(shoal_dataset *ds, float mean, float stddev)
{
    if (!ds || !(stddev > 0.0f) || !isfinite(stddev) || !isfinite(mean))
        return SHOAL_EINVAL;
    const size_t n = ds->count * ds->features;
    const float inv = 1.0f / stddev;
    for (size_t i = 0; i < n; i++)
        ds->x[i] = (ds->x[i] - mean) * inv;
    return SHOAL_OK;
}

void shoal_dataset_gather(const shoal_dataset *ds, const uint32_t *indices, size_t n, float *x_out,
                          int32_t *y_out)
{
    const size_t f = ds->features;
    for (size_t i = 0; i < n; i++) {
        memcpy(x_out + i * f, ds->x + (size_t)indices[i] * f, f * sizeof *x_out);
        y_out[i] = ds->y[indices[i]];
    }
}
