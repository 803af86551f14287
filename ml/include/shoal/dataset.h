/* Shoal: labelled datasets in memory, and the readers that fill them.
 *
 * A dataset is `count` examples of `features` floats each ([count][features],
 * NCHW order for images, shape {c, h, w}) and one int32 label per example in
 * [0, classes). Readers:
 *   - IDX (LeCun's MNIST format), gzip-compressed or plain: unsigned-byte
 *     images scaled to [0, 1], labels as class indices;
 *   - CSV: one example per line, `label,f1,f2,...`, optional header line;
 *   - Fashion-MNIST from a directory holding the four standard IDX files
 *     (Debian's dataset-fashion-mnist installs them in
 *     /usr/share/datasets/fashion-mnist).
 * Every reader error names the file and what was wrong with it, in
 * shoal_errinfo. Datasets are read-only after loading (apart from
 * shoal_dataset_normalize) and may be shared between threads. */
#ifndef SHOAL_DATASET_H
#define SHOAL_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"
#include "shoal/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SHOAL_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct shoal_dataset {
    size_t count;
    size_t features;
    shoal_shape shape; /* features == c*h*w */
    uint32_t classes;
    float *x;   /* [count][features] */
    int32_t *y; /* [count] */
} shoal_dataset;

/* A parsed IDX file: unsigned-byte data (type 0x08) only. */
typedef struct shoal_idx {
    uint32_t rank;
    uint32_t dims[4];
    size_t count; /* product of dims */
    uint8_t *data;
} shoal_idx;

/* Parses an IDX image of `len` bytes. `name` is used in error messages.
 * SHOAL_EFORMAT (with ei filled) for a wrong magic, unsupported type, rank 0
 * or above 4, a zero dimension, or a size that does not match the header
 * (truncated or trailing bytes); SHOAL_ENOMEM. Free with shoal_idx_free. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_idx_parse(const uint8_t *buf, size_t len,
                                                    const char *name, shoal_idx **out,
                                                    shoal_errinfo *ei);
/* Reads and parses an IDX file, gunzipping it if compressed. SHOAL_EIO when
 * the file cannot be opened or the gzip stream is corrupt. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_idx_read(const char *path, shoal_idx **out,
                                                   shoal_errinfo *ei);
SHOAL_API void shoal_idx_free(shoal_idx *idx);

/* Builds a dataset from an images IDX (rank 3: n x h x w, or rank 4: n x c x
 * h x w) and a labels IDX (rank 1: n). Pixels are scaled to [0, 1]; classes
 * is max(label) + 1 unless `classes` is non-zero, in which case labels at or
 * above it are an error. SHOAL_EFORMAT when counts disagree. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dataset_load_idx(const char *images_path,
                                                           const char *labels_path,
                                                           uint32_t classes, shoal_dataset **out,
                                                           shoal_errinfo *ei);

/* Fashion-MNIST's training (train != 0, 60000 examples) or test (10000)
 * split from `dir` (NULL: SHOAL_FASHION_MNIST_DIR). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dataset_load_fashion_mnist(const char *dir, int train,
                                                                     shoal_dataset **out,
                                                                     shoal_errinfo *ei);

/* Parses CSV text: `label,f1,...,fn` per line, all lines with the same
 * number of fields (at least 2), labels non-negative integers, features
 * decimal numbers. A first line whose label field is not a number is a
 * header and skipped. Blank lines and a final line without newline are fine.
 * Errors give name:line:column. shape is {n,1,1}. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dataset_parse_csv(const char *text, size_t len,
                                                            const char *name, uint32_t classes,
                                                            shoal_dataset **out, shoal_errinfo *ei);
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dataset_load_csv(const char *path, uint32_t classes,
                                                           shoal_dataset **out, shoal_errinfo *ei);

/* An empty dataset with room for `count` examples (x and y zeroed). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dataset_new(size_t count, shoal_shape shape,
                                                      uint32_t classes, shoal_dataset **out);
SHOAL_API void shoal_dataset_free(shoal_dataset *ds);

/* Mean and standard deviation over all feature values. */
SHOAL_API void shoal_dataset_stats(const shoal_dataset *ds, float *mean, float *stddev);
/* x = (x - mean) / stddev in place. Use the training set's statistics for
 * both splits. SHOAL_EINVAL for stddev <= 0. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_dataset_normalize(shoal_dataset *ds, float mean,
                                                            float stddev);

/* Copies examples indices[0..n) into x_out ([n][features]) and y_out. The
 * caller guarantees the indices are < count. */
SHOAL_API void shoal_dataset_gather(const shoal_dataset *ds, const uint32_t *indices, size_t n,
                                    float *x_out, int32_t *y_out);

#ifdef __cplusplus
}
#endif

#endif
