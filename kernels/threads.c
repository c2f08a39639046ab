/* threads.c - the public entry points: type dispatch and pthreads over row ranges.
 *
 * Rows are independent (no imatrix, no cross-row state), so a matrix
 * [nrows][n_per_row] is cut into n_threads contiguous row ranges and each thread
 * quantizes its own range. The result does not depend on the thread count.
 */
#include "pl_quants.h"
#include "pl_internal.h"

#include <pthread.h>
#include <stdlib.h>

#define PL_API_VERSION 1
#define PL_MAX_THREADS 256

typedef void (*row_fn)(const void *src, void *dst, int64_t k);   /* one row of k values */

typedef struct {
    int      type;
    int      block;      /* values per block  */
    size_t   bytes;      /* bytes per block   */
    row_fn   quantize;   /* float -> blocks   */
    row_fn   dequantize; /* blocks -> float   */
} type_traits;

/* ================================================================ type table */
/* Block sizes and byte sizes are those of ggml (ggml.c type_traits), checked in
 * tests against gguf.GGML_QUANT_SIZES. */
#define ROWFN(f) ((row_fn)(void (*)(void))(f))
static type_traits traits[] = {
    { 2,  QK32, sizeof(block_q4_0), ROWFN(pl_quantize_row_q4_0), ROWFN(pl_dequantize_row_q4_0) },
    { 3,  QK32, sizeof(block_q4_1), ROWFN(pl_quantize_row_q4_1), ROWFN(pl_dequantize_row_q4_1) },
    { 6,  QK32, sizeof(block_q5_0), ROWFN(pl_quantize_row_q5_0), ROWFN(pl_dequantize_row_q5_0) },
    { 7,  QK32, sizeof(block_q5_1), ROWFN(pl_quantize_row_q5_1), ROWFN(pl_dequantize_row_q5_1) },
    { 8,  QK32, sizeof(block_q8_0), ROWFN(pl_quantize_row_q8_0), ROWFN(pl_dequantize_row_q8_0) },
    { 12, QK_K, sizeof(block_q4_K), ROWFN(pl_quantize_row_q4_K), ROWFN(pl_dequantize_row_q4_K) },
    { 13, QK_K, sizeof(block_q5_K), ROWFN(pl_quantize_row_q5_K), ROWFN(pl_dequantize_row_q5_K) },
    { 14, QK_K, sizeof(block_q6_K), ROWFN(pl_quantize_row_q6_K), ROWFN(pl_dequantize_row_q6_K) },
};
#define N_TRAITS ((int)(sizeof(traits)/sizeof(traits[0])))

static const char *simd_info = "scalar";
static pthread_once_t simd_once = PTHREAD_ONCE_INIT;

/* Pick SIMD row functions once, at first use, if the CPU has them. They produce
 * the same bytes as the scalar ones (tests check both paths). */
static void select_simd(void) {
#ifdef PL_HAVE_X86_SIMD
    if (getenv("PL_QUANTS_SCALAR") == NULL && pl_have_avx2()) {
        for (int i = 0; i < N_TRAITS; i++) {
            switch (traits[i].type) {
                case 2:  traits[i].quantize = ROWFN(pl_quantize_row_q4_0_avx2); break;
                case 3:  traits[i].quantize = ROWFN(pl_quantize_row_q4_1_avx2); break;
                case 6:  traits[i].quantize = ROWFN(pl_quantize_row_q5_0_avx2); break;
                case 7:  traits[i].quantize = ROWFN(pl_quantize_row_q5_1_avx2); break;
                case 8:  traits[i].quantize = ROWFN(pl_quantize_row_q8_0_avx2); break;
                case 12: traits[i].quantize = ROWFN(pl_quantize_row_q4_K_avx2); break;
                case 13: traits[i].quantize = ROWFN(pl_quantize_row_q5_K_avx2); break;
                case 14: traits[i].quantize = ROWFN(pl_quantize_row_q6_K_avx2); break;
                default: break;
            }
        }
        simd_info = "avx2";
    }
#elif defined(PL_HAVE_NEON)
    /* NEON is part of every arm64 CPU: no run-time check needed */
    if (getenv("PL_QUANTS_SCALAR") == NULL) {
        for (int i = 0; i < N_TRAITS; i++) {
            switch (traits[i].type) {
                case 12: traits[i].quantize = ROWFN(pl_quantize_row_q4_K_neon); break;
                case 13: traits[i].quantize = ROWFN(pl_quantize_row_q5_K_neon); break;
                case 14: traits[i].quantize = ROWFN(pl_quantize_row_q6_K_neon); break;
                default: break;
            }
        }
        simd_info = "neon";
    }
#endif
}

static const type_traits *find_traits(int type) {
    pthread_once(&simd_once, select_simd);
    for (int i = 0; i < N_TRAITS; i++) if (traits[i].type == type) return &traits[i];
    return NULL;
}

/* ================================================================ public small API */
int pl_api_version(void) { return PL_API_VERSION; }

const char *pl_simd_info(void) { pthread_once(&simd_once, select_simd); return simd_info; }

int pl_block_size(int type) {
    const type_traits *t = find_traits(type);
    return t ? t->block : 0;
}

size_t pl_row_size(int type, int64_t n_per_row) {
    const type_traits *t = find_traits(type);
    if (!t || n_per_row <= 0 || n_per_row % t->block) return 0;
    return (size_t)(n_per_row / t->block) * t->bytes;
}

void pl_fp32_to_fp16(const float *src, uint16_t *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = pl_fp32_to_fp16_1(src[i]);
}

/* ================================================================ row-range workers */
typedef struct {
    row_fn         fn;
    const uint8_t *src;         /* first row of this range */
    uint8_t       *dst;
    size_t         src_stride;  /* bytes per source row    */
    size_t         dst_stride;  /* bytes per dest row      */
    int64_t        nrows;
    int64_t        n_per_row;
} job;

static void run_job(const job *j) {
    for (int64_t r = 0; r < j->nrows; r++) {
        j->fn(j->src + r*j->src_stride, j->dst + r*j->dst_stride, j->n_per_row);
    }
}

static void *job_thread(void *arg) { run_job((const job *)arg); return NULL; }

/* Split nrows into n_threads near-equal contiguous ranges; the calling thread
 * takes the first range so n_threads = 1 spawns nothing. */
static int run_rows(row_fn fn, const void *src, void *dst, size_t src_stride, size_t dst_stride,
                    int64_t nrows, int64_t n_per_row, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    if (n_threads > PL_MAX_THREADS) n_threads = PL_MAX_THREADS;
    if (n_threads > nrows) n_threads = (int)(nrows > 0 ? nrows : 1);

    job jobs[PL_MAX_THREADS];
    pthread_t tids[PL_MAX_THREADS];
    int started[PL_MAX_THREADS] = {0};
    int64_t r0 = 0;
    for (int t = 0; t < n_threads; t++) {
        const int64_t n = nrows / n_threads + (t < nrows % n_threads ? 1 : 0);
        jobs[t] = (job){ fn, (const uint8_t *)src + r0*src_stride, (uint8_t *)dst + r0*dst_stride,
                         src_stride, dst_stride, n, n_per_row };
        r0 += n;
    }
    int rc = PL_OK;
    for (int t = 1; t < n_threads; t++) {
        if (pthread_create(&tids[t], NULL, job_thread, &jobs[t]) == 0) started[t] = 1;
        else rc = PL_ERR_THREADS;
    }
    run_job(&jobs[0]);
    for (int t = 1; t < n_threads; t++) {
        if (started[t]) pthread_join(tids[t], NULL);
        else if (rc == PL_ERR_THREADS) run_job(&jobs[t]);   /* do it ourselves: still correct */
    }
    return PL_OK;
}

int pl_quantize(int type, const float *src, void *dst, int64_t nrows, int64_t n_per_row, int n_threads) {
    const type_traits *t = find_traits(type);
    if (!t) return PL_ERR_TYPE;
    if (n_per_row <= 0 || n_per_row % t->block || nrows < 0) return PL_ERR_SHAPE;
    return run_rows(t->quantize, src, dst, (size_t)n_per_row*sizeof(float),
                    pl_row_size(type, n_per_row), nrows, n_per_row, n_threads);
}

int pl_dequantize(int type, const void *src, float *dst, int64_t nrows, int64_t n_per_row, int n_threads) {
    const type_traits *t = find_traits(type);
    if (!t) return PL_ERR_TYPE;
    if (n_per_row <= 0 || n_per_row % t->block || nrows < 0) return PL_ERR_SHAPE;
    return run_rows(t->dequantize, src, dst, pl_row_size(type, n_per_row),
                    (size_t)n_per_row*sizeof(float), nrows, n_per_row, n_threads);
}
