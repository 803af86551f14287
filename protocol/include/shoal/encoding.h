/* Shoal: tensor encodings on the wire.
 *
 * Models and updates travel as flat vectors of parameters in one of the
 * shoal.TensorEncoding layouts (protocol/shoal.proto). Version 1 implements
 * TENSOR_ENCODING_FLOAT32_LE: IEEE 754 binary32, 4 bytes per element, least
 * significant byte first, whatever the host's byte order. UINT32_RING and
 * UINT64_RING carry secure aggregation's masked inputs (little-endian ring
 * elements; secure-agg/ reads and writes them). INT8_SCALED is reserved:
 * its element size is known (so the codec can check TensorInfo.byte_size)
 * but decoding it returns SHOAL_EPROTO.
 *
 * NaN and Inf never cross the wire: encoding one is SHOAL_EINVAL, decoding
 * one is SHOAL_ENUMERIC, both naming the element index. All functions
 * allocate nothing and are thread-safe; the scan functions change only the
 * shoal_tensor_scan they are given. */
#ifndef SHOAL_ENCODING_H
#define SHOAL_ENCODING_H

#include <stddef.h>
#include <stdint.h>

#include "shoal/err.h"
#include "shoal.pb-c.h"

/* Bytes per element of `encoding` (a Shoal__TensorEncoding value): 4 for
 * FLOAT32_LE and UINT32_RING, 8 for UINT64_RING, 1 for INT8_SCALED, 0 for UNSPECIFIED or an
 * unknown value. */
SHOAL_API size_t shoal_tensor_element_size(int encoding);

/* Writes values[0..count) as FLOAT32_LE into out, which must hold exactly
 * out_len == 4 * count bytes. SHOAL_EINVAL (ei names the element) for a NaN
 * or Inf value, a size mismatch or NULL pointers with count > 0; out is
 * unspecified on error. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tensor_encode_f32le(const float *values, size_t count,
                                                              uint8_t *out, size_t out_len,
                                                              shoal_errinfo *ei);

/* Reads `len` bytes of FLOAT32_LE into out[0..count). SHOAL_EPROTO when len
 * is not 4 * count ("update: 10 bytes is not a whole number of float32
 * elements"); SHOAL_ENUMERIC when an element is NaN or Inf ("update:
 * element 3 is NaN"), so a caller can tell a non-finite tensor from a
 * malformed one by the code; SHOAL_EINVAL for NULL pointers. `what` names the tensor in messages
 * (NULL: "tensor"). On error out may be partly written; callers decoding into an accumulator should
 * decode into scratch first. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tensor_decode_f32le(const uint8_t *bytes, size_t len,
                                                              float *out, size_t count,
                                                              const char *what, shoal_errinfo *ei);

/* The facts a receiver needs before it takes a FLOAT32_LE update, built
 * up as its bytes arrive (so each chunk is checked while it is still in
 * cache, and nothing is left to read when the last one lands): every
 * element finite and at most max_abs in magnitude, and the sum of squares
 * for the L2 norm. Squares go to SHOAL_TENSOR_SCAN_LANES double sums by
 * element index, so the norm is the same however the bytes were split.
 * A plain struct: it can be copied and moved with the upload it belongs
 * to. */
#define SHOAL_TENSOR_SCAN_LANES 16
typedef struct shoal_tensor_scan {
    double lane[SHOAL_TENSOR_SCAN_LANES];
    size_t elements; /* scanned so far */
    float max_abs;   /* INFINITY: no bound */
    int failed;      /* a bad element was found: the scan is over */
} shoal_tensor_scan;

/* Starts a scan with the element bound max_abs (> 0; INFINITY for none;
 * a bad bound is refused by the first shoal_tensor_scan_add). The scan is
 * the caller's struct, nothing is allocated; one scan serves one thread at
 * a time. */
SHOAL_API void shoal_tensor_scan_init(shoal_tensor_scan *scan, float max_abs);

/* Scans the next `count` whole elements (4 * count bytes). SHOAL_ENUMERIC:
 * an element is NaN or Inf; SHOAL_ELIMIT: an element is above max_abs
 * (ei names the first such element by its index in the whole tensor);
 * then the scan is over and further calls give SHOAL_ESTATE. SHOAL_EINVAL:
 * NULL pointers or max_abs not > 0. */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tensor_scan_add(shoal_tensor_scan *scan,
                                                          const uint8_t *bytes, size_t count,
                                                          const char *what, shoal_errinfo *ei);

/* The L2 norm of what was scanned (the lanes added in a fixed order). */
SHOAL_API double shoal_tensor_scan_norm(const shoal_tensor_scan *scan);

/* The whole scan at once for `len` bytes holding `count` elements:
 * SHOAL_EPROTO when len is not 4 * count, else as shoal_tensor_scan_add,
 * with the norm in *norm (0 on error). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tensor_scan_f32le(const uint8_t *bytes, size_t len,
                                                            size_t count, float max_abs,
                                                            double *norm, const char *what,
                                                            shoal_errinfo *ei);

/* acc[i] += weight * element i of count FLOAT32_LE elements at `bytes`,
 * in one pass, without decoding into a buffer. The bytes must have passed
 * shoal_tensor_scan_f32le (or decode): nothing is checked here. acc and
 * bytes must not overlap. */
SHOAL_API void shoal_tensor_fold_f32le(float *acc, const uint8_t *bytes, float weight,
                                       size_t count);

/* Decodes the tensor described by `info` (a validated TensorInfo) from
 * `bytes`: checks that info->element_count == count and info->byte_size ==
 * len, then dispatches on info->encoding. Reserved encodings give
 * SHOAL_EPROTO ("update: encoding INT8_SCALED is reserved and not
 * implemented in protocol version 1"). */
SHOAL_NODISCARD SHOAL_API shoal_err shoal_tensor_decode(const Shoal__TensorInfo *info,
                                                        const uint8_t *bytes, size_t len,
                                                        float *out, size_t count, const char *what,
                                                        shoal_errinfo *ei);

#endif
