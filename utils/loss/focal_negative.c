/* Fused CPU kernel of utils.loss.functional.focal_negative_sum (float32), built and loaded by
 * utils/native.py with the system C compiler (gcc -O3 -march=native -ffast-math, glibc's vector
 * expf/logf from libmvec). One pass per row: the loss and its gradient together.
 *
 * For rows [r0, r1) of x (n, no) = (box, obj, nc class logits), with s = sigmoid(obj) * sigmoid(cls):
 *   returns   sum over the rows' (row, class) of s^gamma * -log(max(1 - s, floor_q))
 *   writes    grad[row, 0:4] = 0,
 *             grad[row, 4]   = sum_c g_c * (1 - sigmoid(obj)),   (1 - sigmoid(v) as exp(-v) * sigmoid(v))
 *             grad[row, 5+c] = g_c * (1 - sigmoid(cls_c)),
 *             with g = s^gamma * (gamma * L + s / q) = s * d(s^gamma L)/ds, L = -log q, q = max(1 - s, floor_q)
 *   (grad may be NULL: the sum only). Where s > 1/2, 1 - s is computed without cancellation as
 *   (ea + eo + ea * eo) * a * so (ea = exp(-cls), eo = exp(-obj), a, so the sigmoids), so it stays
 *   accurate as s nears 1 where the float32 PyTorch code rounds 1 - s to 0 and takes the floor.
 * Built with -ffast-math (vector expf / logf), which assumes finite values: logits are clamped to
 * [-80, 80] before expf (sigmoid(-80) = 1.8e-35: s^gamma and its gradient are 0 in float32 anyway;
 * sigmoid(80) = 1),
 * and *nonfinite counts inf / NaN inputs (bit test, not subject to fast-math) so the caller can
 * redo such an input with the PyTorch code, which propagates them.
 * Rows of different calls never overlap, so callers split [0, n) between threads.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 256 /* rows per block in the few-classes layout */
#define NARROW 16 /* fewer classes than this: the few-classes layout */

static inline float expnegf(float v) { return expf(-fminf(fmaxf(v, -80.0f), 80.0f)); } /* exp(-v), v clamped */

/* 1 - a * so for a = 1 / (1 + ea), so = 1 / (1 + eo), floored at floor_q */
static inline float one_minus(float a, float ea, float so, float eo, float floor_q) {
    const float s = a * so;
    const float exact = (ea + eo + ea * eo) * s, plain = 1.0f - s; /* both computed: a select, no branch */
    return fmaxf(s > 0.5f ? exact : plain, floor_q);
}

/* s^gamma: the loops are written twice through this macro, for gamma == 2 (a product) and any gamma */
#define SQ_POW(s, sq, gamma) ((sq) ? (s) * (s) : powf((s), (gamma)))

static inline int64_t nonfinite(float v) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    return (b & 0x7f800000u) == 0x7f800000u;
}

/* many classes: the class loop is contiguous and vectorises */
static inline __attribute__((always_inline)) double
rows_wide(const float *x, float *grad, int64_t r0, int64_t r1, int64_t no, float gamma, float floor_q,
          int64_t *bad, const int sq) {
    const int64_t nc = no - 5;
    double total = 0.0;
    for (int64_t r = r0; r < r1; ++r) {
        const float *xr = x + r * no;
        int64_t nf = 0;
#pragma omp simd reduction(+ : nf)
        for (int64_t c = 4; c < no; ++c) nf += nonfinite(xr[c]);
        *bad += nf;
        const float eo = expnegf(xr[4]), so = 1.0f / (1.0f + eo);
        float tsum = 0.0f, gsum = 0.0f;
        if (grad) {
            float *gr = grad + r * no;
#pragma omp simd reduction(+ : tsum, gsum)
            for (int64_t c = 0; c < nc; ++c) {
                const float ea = expnegf(xr[5 + c]), a = 1.0f / (1.0f + ea);
                const float s = a * so;
                const float q = one_minus(a, ea, so, eo, floor_q);
                const float L = -logf(q);
                const float sg = SQ_POW(s, sq, gamma);
                tsum += sg * L;
                const float g = sg * (gamma * L + s / q);
                gsum += g;
                gr[5 + c] = g * ea * a;
            }
            gr[0] = gr[1] = gr[2] = gr[3] = 0.0f;
            gr[4] = gsum * eo * so;
        } else {
#pragma omp simd reduction(+ : tsum)
            for (int64_t c = 0; c < nc; ++c) {
                const float ea = expnegf(xr[5 + c]), a = 1.0f / (1.0f + ea);
                const float s = a * so;
                const float L = -logf(one_minus(a, ea, so, eo, floor_q));
                tsum += SQ_POW(s, sq, gamma) * L;
            }
        }
        total += tsum;
    }
    return total;
}

/* few classes: a block of rows is copied class-major into local buffers, so the math runs over
 * contiguous arrays of BLOCK rows, one class at a time; the gradient goes back the same way */
static inline __attribute__((always_inline)) double
rows_narrow(const float *x, float *grad, int64_t r0, int64_t r1, int64_t no, float gamma, float floor_q,
            int64_t *bad, const int sq) {
    const int64_t nc = no - 5;
    float so[BLOCK], eo[BLOCK], gs[BLOCK], xc[BLOCK], gc[BLOCK * NARROW];
    double total = 0.0;
    for (int64_t b = r0; b < r1; b += BLOCK) {
        const int64_t m = r1 - b < BLOCK ? r1 - b : BLOCK;
        const float *xb = x + b * no;
        int64_t nf = 0;
        for (int64_t i = 0; i < m; ++i)
            for (int64_t c = 4; c < no; ++c) nf += nonfinite(xb[i * no + c]);
        *bad += nf;
        for (int64_t i = 0; i < m; ++i) xc[i] = xb[i * no + 4];
#pragma omp simd
        for (int64_t i = 0; i < m; ++i) {
            eo[i] = expnegf(xc[i]);
            so[i] = 1.0f / (1.0f + eo[i]);
            gs[i] = 0.0f;
        }
        for (int64_t c = 0; c < nc; ++c) {
            float tsum = 0.0f;
            for (int64_t i = 0; i < m; ++i) xc[i] = xb[i * no + 5 + c];
            if (grad) {
                float *g_out = gc + c * BLOCK;
#pragma omp simd reduction(+ : tsum)
                for (int64_t i = 0; i < m; ++i) {
                    const float ea = expnegf(xc[i]), a = 1.0f / (1.0f + ea);
                    const float s = a * so[i];
                    const float q = one_minus(a, ea, so[i], eo[i], floor_q);
                    const float L = -logf(q);
                    const float sg = SQ_POW(s, sq, gamma);
                    tsum += sg * L;
                    const float g = sg * (gamma * L + s / q);
                    gs[i] += g;
                    g_out[i] = g * ea * a;
                }
            } else {
#pragma omp simd reduction(+ : tsum)
                for (int64_t i = 0; i < m; ++i) {
                    const float ea = expnegf(xc[i]), a = 1.0f / (1.0f + ea);
                    const float s = a * so[i];
                    const float L = -logf(one_minus(a, ea, so[i], eo[i], floor_q));
                    tsum += SQ_POW(s, sq, gamma) * L;
                }
            }
            total += tsum;
        }
        if (grad) {
            for (int64_t i = 0; i < m; ++i) {
                float *gr = grad + (b + i) * no;
                gr[0] = gr[1] = gr[2] = gr[3] = 0.0f;
                gr[4] = gs[i] * eo[i] * so[i];
                for (int64_t c = 0; c < nc; ++c) gr[5 + c] = gc[c * BLOCK + i];
            }
        }
    }
    return total;
}

double focal_negative_rows(const float *x, float *grad, int64_t r0, int64_t r1, int64_t no, float gamma,
                           float floor_q, int64_t *nonfinite_inputs) {
    *nonfinite_inputs = 0;
    if (no <= 5 || r1 <= r0) {
        if (grad)
            for (int64_t i = r0 * no; i < r1 * no; ++i) grad[i] = 0.0f;
        return 0.0;
    }
    if (no - 5 >= NARROW)
        return gamma == 2.0f ? rows_wide(x, grad, r0, r1, no, gamma, floor_q, nonfinite_inputs, 1)
                             : rows_wide(x, grad, r0, r1, no, gamma, floor_q, nonfinite_inputs, 0);
    return gamma == 2.0f ? rows_narrow(x, grad, r0, r1, no, gamma, floor_q, nonfinite_inputs, 1)
                         : rows_narrow(x, grad, r0, r1, no, gamma, floor_q, nonfinite_inputs, 0);
}
