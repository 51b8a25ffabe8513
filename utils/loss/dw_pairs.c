/* The (candidate, object) pair terms of the `dw` strategy (utils/loss/dw.py) in one pass, built and
 * loaded by utils/native.py. Same formulas as ComputeLossDW.pair_terms / weights and the two positive
 * losses, with the gradient of those losses written out by hand (tested against autograd).
 *
 * Candidate i: rows[i * 6 + {0..5}] = its x, y, w, h, obj and own-class logits (float32);
 * box[i * 4 ...] = the object's xywh in grid units with xy relative to the cell's top-left corner;
 * anchor[i * 2 ...] = anchor wh in grid units; target[i] = its object, in 0 .. n_obj - 1.
 * Work arrays: den, tmin, tmax (n_obj doubles each), work (k * WORK floats). Outputs, per candidate: w_pos[i], w_neg[i] (the
 * negative IoU factor), iou[i]; grad[i * 6 ...] = d(cls_pos)/d(obj, cls logits) in columns 4, 5 and
 * d(loc)/d(box logits) in columns 0..3; sums[0] = cls_pos = sum w_pos (softplus(-cls) + softplus(-obj)),
 * sums[1] = loc = sum w_pos * loc_scale * (1 - GIoU). Decode: YOLOv5 v6/v7, xy = 2 sigmoid - 0.5,
 * wh = (2 sigmoid)^2 * anchor. Ties of min / max split the gradient in halves, as PyTorch's.
 * float32 as the PyTorch code, sums in double. Built with -ffast-math so the elementwise passes
 * vectorise (glibc's vector expf / logf); inputs with inf / NaN are refused (returns 0) and the
 * caller runs its PyTorch code.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define DW_EPS 1e-12 /* the official EPS of both normalisations */
#define BOX_EPS 1e-7f /* utils.boxes.bbox_iou's eps */
#define WORK 31 /* floats of work space per candidate (see dw_pairs) */

static inline float sigf(float v) { return 1.0f / (1.0f + expf(-v)); }
static inline float minf(float a, float b) { return a < b ? a : b; }
static inline float maxf(float a, float b) { return a > b ? a : b; }
/* d min(a, b) / d a and d max(a, b) / d a, halves on ties */
static inline float dmin_a(float a, float b) { return a < b ? 1.0f : (a == b ? 0.5f : 0.0f); }
static inline float dmax_a(float a, float b) { return a > b ? 1.0f : (a == b ? 0.5f : 0.0f); }
static inline int64_t nonfinite(float v) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    return (b & 0x7f800000u) == 0x7f800000u;
}

/* returns 1, or 0 (nothing written) when rows hold inf / NaN. work: WORK * k floats */
int dw_pairs(int64_t k, const float *restrict rows, const float *restrict box, const float *restrict anchor,
             const int64_t *restrict target, int64_t n_obj, double sigma, double loc_scale, double *restrict den,
             double *restrict tmin, double *restrict tmax, float *restrict work, float *restrict w_pos,
             float *restrict w_neg, float *restrict iou_out, float *restrict grad, double *restrict sums) {
    int64_t bad = 0;
#pragma omp simd reduction(+ : bad)
    for (int64_t i = 0; i < k * 6; ++i) bad += nonfinite(rows[i]);
    if (bad) return 0;
    const float inv2s2 = (float)(1 / (2 * sigma * sigma)), ls = (float)loc_scale;
    /* structure-of-arrays work space, so the two elementwise passes vectorise */
    float *restrict X = work;            /* 6 rows of k: the logits */
    float *restrict G = work + 6 * k;    /* 4: the object box */
    float *restrict AN = work + 10 * k;  /* 2: the anchor */
    float *restrict P = work + 12 * k, *restrict PRI = work + 13 * k, *restrict GIOU = work + 14 * k;
    float *restrict T = work + 15 * k, *restrict SO = work + 16 * k, *restrict SC = work + 17 * k;
    float *restrict D = work + 18 * k;   /* 4: d giou / d box logits */
    float *restrict DEN = work + 22 * k, *restrict LO = work + 23 * k, *restrict HI = work + 24 * k;
    float *restrict GR = work + 25 * k;  /* 6: the gradient, column-major */
    for (int64_t i = 0; i < k; ++i) {
        for (int c = 0; c < 6; ++c) X[c * k + i] = rows[i * 6 + c];
        for (int c = 0; c < 4; ++c) G[c * k + i] = box[i * 4 + c];
        AN[i] = anchor[i * 2], AN[k + i] = anchor[i * 2 + 1];
    }
    /* pass 1, elementwise: decode, IoU / GIoU and their gradient, prior, p, the IoU factor t */
#pragma omp simd
    for (int64_t i = 0; i < k; ++i) {
        const float gx = G[i], gy = G[k + i], gw = G[2 * k + i], gh = G[3 * k + i];
        const float aw = AN[i], ah = AN[k + i];
        const float sx = sigf(X[i]), sy = sigf(X[k + i]), sw = sigf(X[2 * k + i]), sh = sigf(X[3 * k + i]);
        const float px = sx * 2 - 0.5f, py = sy * 2 - 0.5f;
        const float pw = (2 * sw) * (2 * sw) * aw, ph = (2 * sh) * (2 * sh) * ah;
        const float ax1 = px - pw / 2, ax2 = px + pw / 2, ay1 = py - ph / 2, ay2 = py + ph / 2;
        const float bx1 = gx - gw / 2, bx2 = gx + gw / 2, by1 = gy - gh / 2, by2 = gy + gh / 2;
        const float iw_raw = minf(ax2, bx2) - maxf(ax1, bx1), ih_raw = minf(ay2, by2) - maxf(ay1, by1);
        const float iw = iw_raw > 0 ? iw_raw : 0, ih = ih_raw > 0 ? ih_raw : 0;
        const float inter = iw * ih;
        const float uni = pw * ph + gw * gh - inter + BOX_EPS;
        const float iou = inter / uni;
        const float cw = maxf(ax2, bx2) - minf(ax1, bx1), ch = maxf(ay2, by2) - minf(ay1, by1);
        const float carea = cw * ch + BOX_EPS;
        const float giou = iou - (carea - uni) / carea;
        /* d giou = A d inter + B d(pw ph) + C d carea */
        const float A = 1 / uni + inter / (uni * uni) - 1 / carea;
        const float B = 1 / carea - inter / (uni * uni);
        const float C = -uni / (carea * carea);
        /* clamp(min=0) passes the gradient where its input >= 0 (PyTorch's rule) */
        const float giw = iw_raw >= 0 ? 1.0f : 0.0f, gih = ih_raw >= 0 ? 1.0f : 0.0f;
        const float g_ax1 = -A * ih * giw * dmax_a(ax1, bx1) - C * ch * dmin_a(ax1, bx1);
        const float g_ax2 = A * ih * giw * dmin_a(ax2, bx2) + C * ch * dmax_a(ax2, bx2);
        const float g_ay1 = -A * iw * gih * dmax_a(ay1, by1) - C * cw * dmin_a(ay1, by1);
        const float g_ay2 = A * iw * gih * dmin_a(ay2, by2) + C * cw * dmax_a(ay2, by2);
        /* edges: a*1 = p - pw / 2, a*2 = p + pw / 2; pw also enters through pw * ph */
        D[i] = (g_ax1 + g_ax2) * 2 * sx * (1 - sx);
        D[k + i] = (g_ay1 + g_ay2) * 2 * sy * (1 - sy);
        D[2 * k + i] = ((g_ax2 - g_ax1) / 2 + B * ph) * 8 * aw * sw * sw * (1 - sw);
        D[3 * k + i] = ((g_ay2 - g_ay1) / 2 + B * pw) * 8 * ah * sh * sh * (1 - sh);
        const float dx = gx - 0.5f, dy = gy - 0.5f;
        PRI[i] = expf(-(dx * dx + dy * dy) * inv2s2);
        const float so = sigf(X[4 * k + i]), sc = sigf(X[5 * k + i]);
        SO[i] = so;
        SC[i] = sc;
        P[i] = sc * so * expf(-ls * (1 - giou));
        GIOU[i] = giou;
        T[i] = (1 - iou * iou) / (1 - 0.5f * 0.5f);
        iou_out[i] = iou;
    }
    /* each object's normaliser and IoU-factor range, then read back per candidate */
    for (int64_t o = 0; o < n_obj; ++o) den[o] = 0, tmin[o] = INFINITY, tmax[o] = -INFINITY;
    for (int64_t i = 0; i < k; ++i) {
        const int64_t o = target[i];
        den[o] += (double)(expf(3 * P[i]) * P[i] * PRI[i]);
        tmin[o] = T[i] < tmin[o] ? T[i] : tmin[o];
        tmax[o] = T[i] > tmax[o] ? T[i] : tmax[o];
    }
    for (int64_t i = 0; i < k; ++i) {
        const int64_t o = target[i];
        DEN[i] = (float)(den[o] > DW_EPS ? den[o] : DW_EPS);
        LO[i] = (float)tmin[o];
        HI[i] = (float)(tmax[o] < 1 ? tmax[o] : 1);
    }
    /* pass 2, elementwise: weights, losses and their gradients */
    double cls_pos = 0, loc = 0;
#pragma omp simd reduction(+ : cls_pos, loc)
    for (int64_t i = 0; i < k; ++i) {
        const float w = expf(5 * P[i]) * P[i] * PRI[i] / DEN[i];
        w_pos[i] = w;
        w_neg[i] = iou_out[i] < 0.5f ? 1.0f : (T[i] - LO[i] + (float)DW_EPS) / (HI[i] - LO[i] + (float)DW_EPS);
        /* -log p_cls = softplus(-cls) + softplus(-obj), stable form */
        const float xo = X[4 * k + i], xc = X[5 * k + i];
        const float sp = (xc > 0 ? 0.0f : -xc) + log1pf(expf(-fabsf(xc))) + (xo > 0 ? 0.0f : -xo) +
                         log1pf(expf(-fabsf(xo)));
        cls_pos += w * sp;
        loc += w * ls * (1 - GIOU[i]);
        for (int c = 0; c < 4; ++c) GR[c * k + i] = -w * ls * D[c * k + i];
        GR[4 * k + i] = -w * (1 - SO[i]);
        GR[5 * k + i] = -w * (1 - SC[i]);
    }
    for (int64_t i = 0; i < k; ++i)
        for (int c = 0; c < 6; ++c) grad[i * 6 + c] = GR[c * k + i];
    sums[0] = cls_pos;
    sums[1] = loc;
    return 1;
}
