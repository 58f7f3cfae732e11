/* The sjlt scatter on the CPU, with LESS's Adam transform fused in front of it.
 *
 * Compiled once per process by dataflex/projectors/native.py with the system C compiler
 * and called through ctypes. One pass over a (batch, width) fp32 block: each column is
 * read once, transformed, and added into the nnz output rows its hashed indices name. The accumulator is laid out (2k, batch), so an addition is one
 * contiguous run of `batch` floats (a vector instruction) instead of `batch` scattered
 * ones; the torch backend's (batch, 2k) layout is its transpose.
 *
 * Every output entry receives its additions in column order, as with the torch backend's
 * index_add_ (each entry lies in one row block j of the sjlt construction), so for the
 * identity transform the sums equal that backend's bit for bit. The Adam transform is
 *
 *     y = fma(x, a1, b1 * exp_avg) / (sqrt(fma(a2 * x, x, b2 * exp_avg_sq)) + eps)
 *
 * with a1 = 1 - b1, a2 = 1 - b2, all in fp32: the operations of the torch backend's
 * transform (dataflex.gradients.transforms.ColumnTransform: a scalar product, add(alpha=),
 * addcmul(value=)) with a correctly rounded sqrt (torch's CPU sqrt goes through MKL's
 * vsSqrt, which is within 1 ulp of it).
 * Build flags: -O3 -ffp-contract=off -fno-math-errno (no other contraction, and sqrtf is
 * the IEEE instruction).
 */
#include <math.h>
#include <stdint.h>

enum { TILE_COLUMNS = 16 };

/* mode 0: y = x; mode 2: Adam (the moments and hyper-parameters are read only in this mode).
 *
 * The columns go in groups that fit `scratch` (scratch_len >= batch floats) transposed:
 * the group is transposed and transformed into scratch once, then added into each of
 * the nnz row blocks of acc in turn, so the part of acc being written (one block of
 * 2k/nnz rows) and the group stay in L2 together. */
void dataflex_sjlt_accumulate(
    float *restrict acc, int64_t batch,
    const float *restrict x, int64_t ldx, int64_t width,
    const int64_t *restrict idx, int64_t ldi, int64_t nnz,
    int mode, const float *restrict exp_avg, const float *restrict exp_avg_sq,
    float b1, float b2, float a1, float a2, float eps,
    float *restrict scratch, int64_t scratch_len)
{
    int64_t group = scratch_len / batch;
    for (int64_t c0 = 0; c0 < width; c0 += group) {
        int64_t cols = width - c0 < group ? width - c0 : group;
        for (int64_t t0 = 0; t0 < cols; t0 += TILE_COLUMNS) {
            int64_t tc = cols - t0 < TILE_COLUMNS ? cols - t0 : TILE_COLUMNS;
            for (int64_t b = 0; b < batch; ++b) {
                const float *src = x + b * ldx + c0 + t0;
                float *dst = scratch + t0 * batch + b;
                for (int64_t cc = 0; cc < tc; ++cc) {
                    dst[cc * batch] = src[cc];
                }
            }
        }
        if (mode == 2) {
            for (int64_t c = 0; c < cols; ++c) {
                float mc = b1 * exp_avg[c0 + c], vc = b2 * exp_avg_sq[c0 + c];
                float *y = scratch + c * batch;
                for (int64_t b = 0; b < batch; ++b) {
                    float g = y[b];
                    y[b] = fmaf(g, a1, mc) / (sqrtf(fmaf(a2 * g, g, vc)) + eps);
                }
            }
        }
        for (int64_t j = 0; j < nnz; ++j) {
            const int64_t *ix = idx + j * ldi + c0;
            for (int64_t c = 0; c < cols; ++c) {
                float *dst = acc + ix[c] * batch;
                const float *y = scratch + c * batch;
                for (int64_t b = 0; b < batch; ++b) {
                    dst[b] += y[b];
                }
            }
        }
    }
}
