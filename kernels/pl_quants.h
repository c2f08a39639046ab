/* pl_quants.h - public API of prometheus-lite's native quantization kernels.
 *
 * The only header convert/kernels.py needs to know about. Every function works
 * on whole rows of a 2-D float32 matrix [nrows][n_per_row] (row-major) and on
 * the GGML block layout of the target type; the bytes produced are the bytes
 * llama.cpp's reference quantizers (quantize_row_*_ref in ggml-quants.c, the
 * path llama_model_quantize takes when no importance matrix is given) produce.
 *
 * Type ids are GGML's (enum ggml_type in ggml.h): 2 = Q4_0, 3 = Q4_1,
 * 6 = Q5_0, 7 = Q5_1, 8 = Q8_0, 12 = Q4_K, 13 = Q5_K, 14 = Q6_K.
 */
#ifndef PL_QUANTS_H
#define PL_QUANTS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define PL_API __declspec(dllexport)
#else
#define PL_API __attribute__((visibility("default")))
#endif

/* Return codes. */
#define PL_OK             0
#define PL_ERR_TYPE      -1   /* type id not supported by these kernels   */
#define PL_ERR_SHAPE     -2   /* n_per_row not a multiple of the block size */
#define PL_ERR_THREADS   -3   /* a worker thread could not be started       */

/* Bytes of one quantized row of n_per_row values; 0 if type is unknown or the
 * row length is not a multiple of the type's block size. */
PL_API size_t pl_row_size(int type, int64_t n_per_row);

/* Elements per block (32 or 256); 0 if unknown. */
PL_API int pl_block_size(int type);

/* src: float32 [nrows][n_per_row]  ->  dst: bytes [nrows][pl_row_size(type, n_per_row)].
 * Rows are split over n_threads pthreads (n_threads <= 1: the calling thread). */
PL_API int pl_quantize(int type, const float *src, void *dst,
                       int64_t nrows, int64_t n_per_row, int n_threads);

/* src: bytes [nrows][pl_row_size(type, n_per_row)]  ->  dst: float32 [nrows][n_per_row]. */
PL_API int pl_dequantize(int type, const void *src, float *dst,
                         int64_t nrows, int64_t n_per_row, int n_threads);

/* float32 -> IEEE half (round to nearest even), bit-identical to ggml's
 * GGML_FP32_TO_FP16; n values. Used for the "round to F16 first" option. */
PL_API void pl_fp32_to_fp16(const float *src, uint16_t *dst, int64_t n);

/* Which code paths this build selected, e.g. "scalar" or "avx2". */
PL_API const char *pl_simd_info(void);

/* Version of this C API; bumped on any signature change. */
PL_API int pl_api_version(void);

#ifdef __cplusplus
}
#endif
#endif /* PL_QUANTS_H */
