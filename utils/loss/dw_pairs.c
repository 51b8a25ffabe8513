/* The (candidate, object) pair terms of the `dw` strategy (utils/loss/dw.py) in one pass, built and
 * loaded by utils/native.py. Same formulas as ComputeLossDW.pair_terms / weights and the two positive
 * losses, with the gradient of those losses written out by hand (tested against autograd).
 *
 * Candidate i: rows[i * 6 + {0..5}] = its x, y, w, h, obj and own-class logits (float32);
 * box[i * 4 ...] = the object's xywh in grid units with xy relative to the cell's top-left corner;
 * anchor[i * 2 ...] = anchor wh in grid units; target[i] = its object, in 0 .. n_obj - 1.
 * Work arrays: den, tmin, tmax (n_obj doubles each). Outputs, per candidate: w_pos[i], w_neg[i] (the
 * negative IoU factor), iou[i]; grad[i * 6 ...] = d(cls_pos)/d(obj, cls logits) in columns 4, 5 and
 * d(loc)/d(box logits) in columns 0..3; sums[0] = cls_pos = sum w_pos (softplus(-cls) + softplus(-obj)),
 * sums[1] = loc = sum w_pos * loc_scale * (1 - GIoU). Decode: YOLOv5 v6/v7, xy = 2 sigmoid - 0.5,
 * wh = (2 sigmoid)^2 * anchor. Ties of min / max split the gradient in halves, as PyTorch's.
 */
#include <math.h>
#include <stdint.h>

#define DW_EPS 1e-12 /* the official EPS of both normalisations */
#define BOX_EPS 1e-7 /* utils.boxes.bbox_iou's eps */

static inline double sig(double v) { return 1.0 / (1.0 + exp(-v)); }
static inline double softplus_neg(double v) { return v > 0 ? log1p(exp(-v)) : -v + log1p(exp(v)); } /* softplus(-v) */
/* d min(a, b) / d a and d max(a, b) / d a, halves on ties */
static inline double dmin_a(double a, double b) { return a < b ? 1.0 : (a == b ? 0.5 : 0.0); }
static inline double dmax_a(double a, double b) { return a > b ? 1.0 : (a == b ? 0.5 : 0.0); }

typedef struct {
    double px, py, pw, ph, giou, iou;
    double d[4]; /* d giou / d (x, y, w, h logits) */
} Pair;

static void giou_pair(const float *r, const float *g, const float *an, Pair *o) {
    const double sx = sig(r[0]), sy = sig(r[1]), sw = sig(r[2]), sh = sig(r[3]);
    const double px = sx * 2 - 0.5, py = sy * 2 - 0.5;
    const double pw = (2 * sw) * (2 * sw) * an[0], ph = (2 * sh) * (2 * sh) * an[1];
    const double gx = g[0], gy = g[1], gw = g[2], gh = g[3];
    const double ax1 = px - pw / 2, ax2 = px + pw / 2, ay1 = py - ph / 2, ay2 = py + ph / 2;
    const double bx1 = gx - gw / 2, bx2 = gx + gw / 2, by1 = gy - gh / 2, by2 = gy + gh / 2;
    const double iw_raw = fmin(ax2, bx2) - fmax(ax1, bx1), ih_raw = fmin(ay2, by2) - fmax(ay1, by1);
    const double iw = iw_raw > 0 ? iw_raw : 0, ih = ih_raw > 0 ? ih_raw : 0;
    const double inter = iw * ih;
    const double uni = pw * ph + gw * gh - inter + BOX_EPS;
    const double iou = inter / uni;
    const double cw = fmax(ax2, bx2) - fmin(ax1, bx1), ch = fmax(ay2, by2) - fmin(ay1, by1);
    const double carea = cw * ch + BOX_EPS;
    o->px = px, o->py = py, o->pw = pw, o->ph = ph;
    o->iou = iou;
    o->giou = iou - (carea - uni) / carea;
    /* d giou = A d inter + B d(pw ph) + C d carea */
    const double A = 1 / uni + inter / (uni * uni) - 1 / carea;
    const double B = 1 / carea - inter / (uni * uni);
    const double C = -uni / (carea * carea);
    /* clamp(min=0) passes the gradient where its input >= 0 (PyTorch's rule) */
    const double giw = iw_raw >= 0 ? 1.0 : 0.0, gih = ih_raw >= 0 ? 1.0 : 0.0;
    /* d iw / d ax1, d ax2; d cw / d ax1, d ax2 (and the same in y) */
    const double diw_a1 = -giw * dmax_a(ax1, bx1), diw_a2 = giw * dmin_a(ax2, bx2);
    const double dih_a1 = -gih * dmax_a(ay1, by1), dih_a2 = gih * dmin_a(ay2, by2);
    const double dcw_a1 = -dmin_a(ax1, bx1), dcw_a2 = dmax_a(ax2, bx2);
    const double dch_a1 = -dmin_a(ay1, by1), dch_a2 = dmax_a(ay2, by2);
    /* giou as a function of the box edges ax1, ax2, ay1, ay2 and of pw, ph through pw * ph */
    const double g_ax1 = A * ih * diw_a1 + C * ch * dcw_a1, g_ax2 = A * ih * diw_a2 + C * ch * dcw_a2;
    const double g_ay1 = A * iw * dih_a1 + C * cw * dch_a1, g_ay2 = A * iw * dih_a2 + C * cw * dch_a2;
    /* edges: a*1 = p - pw / 2, a*2 = p + pw / 2 */
    const double g_px = g_ax1 + g_ax2, g_py = g_ay1 + g_ay2;
    const double g_pw = (g_ax2 - g_ax1) / 2 + B * ph, g_ph = (g_ay2 - g_ay1) / 2 + B * pw;
    o->d[0] = g_px * 2 * sx * (1 - sx);
    o->d[1] = g_py * 2 * sy * (1 - sy);
    o->d[2] = g_pw * 8 * an[0] * sw * sw * (1 - sw);
    o->d[3] = g_ph * 8 * an[1] * sh * sh * (1 - sh);
}

void dw_pairs(int64_t k, const float *rows, const float *box, const float *anchor, const int64_t *target,
              int64_t n_obj, double sigma, double loc_scale, double *den, double *tmin, double *tmax, float *w_pos,
              float *w_neg, float *iou_out, float *grad, double *sums) {
    for (int64_t o = 0; o < n_obj; ++o) den[o] = 0, tmin[o] = INFINITY, tmax[o] = -INFINITY;
    /* pass 1: each object's normaliser and the range of its IoU factors (pass 2 recomputes the pair) */
    for (int64_t i = 0; i < k; ++i) {
        const float *r = rows + i * 6;
        Pair q;
        giou_pair(r, box + i * 4, anchor + i * 2, &q);
        const double dx = box[i * 4] - 0.5, dy = box[i * 4 + 1] - 0.5;
        const double prior = exp(-(dx * dx + dy * dy) / (2 * sigma * sigma));
        const double p = sig(r[5]) * sig(r[4]) * exp(-loc_scale * (1 - q.giou));
        const double t = (1 - q.iou * q.iou) / (1 - 0.5 * 0.5);
        const int64_t o = target[i];
        den[o] += exp(3 * p) * p * prior;
        tmin[o] = t < tmin[o] ? t : tmin[o];
        tmax[o] = t > tmax[o] ? t : tmax[o];
    }
    /* pass 2: weights, losses and their gradients */
    double cls_pos = 0, loc = 0;
    for (int64_t i = 0; i < k; ++i) {
        const float *r = rows + i * 6;
        Pair q;
        giou_pair(r, box + i * 4, anchor + i * 2, &q);
        const double dx = box[i * 4] - 0.5, dy = box[i * 4 + 1] - 0.5;
        const double prior = exp(-(dx * dx + dy * dy) / (2 * sigma * sigma));
        const double p = sig(r[5]) * sig(r[4]) * exp(-loc_scale * (1 - q.giou));
        const int64_t o = target[i];
        const double w = exp(5 * p) * p * prior / (den[o] > DW_EPS ? den[o] : DW_EPS);
        const double t = (1 - q.iou * q.iou) / (1 - 0.5 * 0.5);
        const double hi = tmax[o] < 1 ? tmax[o] : 1;
        w_pos[i] = (float)w;
        iou_out[i] = (float)q.iou;
        w_neg[i] = q.iou < 0.5 ? 1.0f : (float)((t - tmin[o] + DW_EPS) / (hi - tmin[o] + DW_EPS));
        cls_pos += w * (softplus_neg(r[5]) + softplus_neg(r[4]));
        loc += w * loc_scale * (1 - q.giou);
        float *gr = grad + i * 6;
        for (int c = 0; c < 4; ++c) gr[c] = (float)(-w * loc_scale * q.d[c]);
        gr[4] = (float)(-w * (1 - sig(r[4])));
        gr[5] = (float)(-w * (1 - sig(r[5])));
    }
    sums[0] = cls_pos;
    sums[1] = loc;
}
