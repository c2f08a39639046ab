/* pl_quant_tool.c - quantize a raw float32 file with libpl_quants, from the command line.
 *
 * For testing builds Python cannot load here (tests/test_kernels.py cross-compiles the
 * library and this tool for arm64 and runs them under qemu):
 *
 *     pl_quant_tool TYPE N_PER_ROW IN.f32 OUT.bin     (TYPE: GGML type id)
 *
 * Prints the code path the library selected ("neon", "scalar", ...).
 */
#include "pl_quants.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s TYPE N_PER_ROW IN.f32 OUT.bin\n", argv[0]);
        return 2;
    }
    const int type = atoi(argv[1]);
    const int64_t n_per_row = atoll(argv[2]);
    FILE *f = fopen(argv[3], "rb");
    if (!f) { perror(argv[3]); return 1; }
    fseek(f, 0, SEEK_END);
    const long nbytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    const int64_t n = nbytes / 4, nrows = n / n_per_row;
    float *src = malloc((size_t)nbytes);
    if (!src || fread(src, 4, (size_t)n, f) != (size_t)n) { fprintf(stderr, "read failed\n"); return 1; }
    fclose(f);
    const size_t row = pl_row_size(type, n_per_row);
    void *dst = malloc(row * (size_t)nrows);
    const int rc = pl_quantize(type, src, dst, nrows, n_per_row, 2);
    if (rc != PL_OK) { fprintf(stderr, "pl_quantize: %d\n", rc); return 1; }
    FILE *o = fopen(argv[4], "wb");
    if (!o || fwrite(dst, row, (size_t)nrows, o) != (size_t)nrows) { perror(argv[4]); return 1; }
    fclose(o);
    printf("%s\n", pl_simd_info());
    free(src);
    free(dst);
    return 0;
}
