/* No-grad matching kernels of the `freeanchor` strategy (utils/loss/freeanchor.py), built and loaded
 * by utils/native.py. Both walk objects [o0, o1), so callers split the objects between threads.
 *
 * Levels are described by parallel arrays: ny[l], nx[l], stride[l] (px per cell), start[l] (index of
 * the level's first prior in the all-level prior order: level, anchor, row, column) and
 * anchor_wh[(l * na + a) * 2 + {0, 1}] in pixels. A prior is the box (cell centre, anchor w h).
 * Objects are boxes[o * 4 + {x, y, w, h}] in pixels.
 */
#include <math.h>
#include <stdint.h>

/* IoU of an object with a prior box, as utils.loss.freeanchor.prior_iou computes it */
static inline float prior_iou_1(float gx, float gy, float gw, float gh, float cx, float cy, float aw, float ah) {
    float iw = (gw + aw) / 2 - fabsf(gx - cx);
    iw = iw < 0 ? 0 : iw;
    iw = fminf(iw, fminf(gw, aw));
    float ih = (gh + ah) / 2 - fabsf(gy - cy);
    ih = ih < 0 ? 0 : ih;
    ih = fminf(ih, fminf(gh, ah));
    const float inter = ih * iw;
    return inter / (gw * gh + aw * ah - inter + 1e-7f);
}

/* insert (iou, idx) into a list sorted by iou descending; ties keep the earlier (lower) index first */
static inline void top_insert(float *top_iou, int64_t *top_idx, int64_t *len, int64_t k, float iou, int64_t idx) {
    if (*len == k && !(iou > top_iou[k - 1])) return;
    int64_t i = *len < k ? (*len)++ : k - 1;
    while (i > 0 && iou > top_iou[i - 1]) {
        top_iou[i] = top_iou[i - 1];
        top_idx[i] = top_idx[i - 1];
        --i;
    }
    top_iou[i] = iou;
    top_idx[i] = idx;
}

/* Bags: per object the k priors of highest IoU with it (ties: lower prior index first), into
 * member[o * k ...], highest first. Only priors overlapping the object are scored; when fewer
 * than k overlap, the rest of the bag is the lowest-index priors of IoU 0. work: 2 * k floats. */
void fa_bags(int64_t o0, int64_t o1, const float *boxes, int64_t nlev, int64_t na, const int64_t *ny,
             const int64_t *nx, const float *stride, const int64_t *start, const float *anchor_wh, int64_t k,
             int64_t *member) {
    float top_iou[k];
    int64_t top_idx[k];
    for (int64_t o = o0; o < o1; ++o) {
        const float gx = boxes[o * 4], gy = boxes[o * 4 + 1], gw = boxes[o * 4 + 2], gh = boxes[o * 4 + 3];
        int64_t len = 0;
        for (int64_t l = 0; l < nlev; ++l) {
            const float s = stride[l];
            for (int64_t a = 0; a < na; ++a) {
                const float aw = anchor_wh[(l * na + a) * 2], ah = anchor_wh[(l * na + a) * 2 + 1];
                /* cells whose prior overlaps: |g - c| < (g + a) / 2, c = (i + 0.5) s */
                int64_t c0 = (int64_t)ceilf((gx - (gw + aw) / 2) / s - 0.5f) - 1;
                int64_t c1 = (int64_t)floorf((gx + (gw + aw) / 2) / s - 0.5f) + 1;
                int64_t r0 = (int64_t)ceilf((gy - (gh + ah) / 2) / s - 0.5f) - 1;
                int64_t r1 = (int64_t)floorf((gy + (gh + ah) / 2) / s - 0.5f) + 1;
                c0 = c0 < 0 ? 0 : c0;
                r0 = r0 < 0 ? 0 : r0;
                c1 = c1 > nx[l] - 1 ? nx[l] - 1 : c1;
                r1 = r1 > ny[l] - 1 ? ny[l] - 1 : r1;
                for (int64_t r = r0; r <= r1; ++r) {
                    const float cy = (r + 0.5f) * s;
                    for (int64_t c = c0; c <= c1; ++c) {
                        const float iou = prior_iou_1(gx, gy, gw, gh, (c + 0.5f) * s, cy, aw, ah);
                        if (iou > 0) top_insert(top_iou, top_idx, &len, k, iou, start[l] + (a * ny[l] + r) * nx[l] + c);
                    }
                }
            }
        }
        /* fewer than k overlapping priors: the lowest-index priors of IoU 0 (not already members) */
        for (int64_t idx = 0; len < k; ++idx) {
            int64_t taken = 0;
            for (int64_t i = 0; i < len; ++i) taken |= top_idx[i] == idx;
            if (!taken) top_idx[len++] = idx;
        }
        for (int64_t i = 0; i < k; ++i) member[o * k + i] = top_idx[i];
    }
}

/* Matched pairs: every (object, prior) whose YOLOv5-decoded prediction overlaps the object with IoU
 * above thr, as (obj, prior, iou). preds[l] points at level l's float32 (bs, na, ny, nx, no) output;
 * image[o] is the object's image. Cells are those utils.loss.freeanchor.reachable_pairs allows.
 * Writes at most cap pairs and returns how many there are (call again with more room if larger). */
int64_t fa_matched_pairs(int64_t o0, int64_t o1, const float *boxes, const int64_t *image, int64_t nlev,
                         int64_t na, const int64_t *ny, const int64_t *nx, const float *stride,
                         const int64_t *start, const float *anchor_wh, const int64_t *preds, int64_t no,
                         float thr, int64_t cap, int64_t *out_obj, int64_t *out_prior, float *out_iou) {
    const float t = thr > 0 ? thr : 0;
    int64_t count = 0;
    for (int64_t o = o0; o < o1; ++o) {
        const float g[4] = {boxes[o * 4], boxes[o * 4 + 1], boxes[o * 4 + 2], boxes[o * 4 + 3]};
        const float gx1 = g[0] - g[2] / 2, gx2 = g[0] + g[2] / 2, gy1 = g[1] - g[3] / 2, gy2 = g[1] + g[3] / 2;
        const float garea = (gx2 - gx1) * (gy2 - gy1);
        for (int64_t l = 0; l < nlev; ++l) {
            const float s = stride[l];
            const int64_t cells[2] = {nx[l], ny[l]};
            const float *pl = (const float *)(intptr_t)preds[l];
            for (int64_t a = 0; a < na; ++a) {
                int64_t lo[2], hi[2], ok = 1;
                for (int ax = 0; ax < 2; ++ax) {
                    const float size = g[2 + ax], a4 = 4 * anchor_wh[(l * na + a) * 2 + ax];
                    const float mx = fmaxf(a4, size), lim = size / fmaxf(t, 1e-9f);
                    float reach = fminf(a4 / 2 + size / 2, (1 - t) * fminf(mx, lim));
                    reach = reach * (1 + 1e-5f) + s + 1e-3f;
                    ok &= a4 * (1 + 1e-5f) >= t * size;
                    lo[ax] = (int64_t)ceilf((g[ax] - reach) / s - 0.5f);
                    hi[ax] = (int64_t)floorf((g[ax] + reach) / s - 0.5f);
                    lo[ax] = lo[ax] < 0 ? 0 : lo[ax];
                    hi[ax] = hi[ax] > cells[ax] - 1 ? cells[ax] - 1 : hi[ax];
                }
                if (!ok) continue;
                const float aw = anchor_wh[(l * na + a) * 2], ah = anchor_wh[(l * na + a) * 2 + 1];
                for (int64_t r = lo[1]; r <= hi[1]; ++r) {
                    for (int64_t c = lo[0]; c <= hi[0]; ++c) {
                        const float *p = pl + (((image[o] * na + a) * ny[l] + r) * nx[l] + c) * no;
                        const float tx = 2 / (1 + expf(-p[0])), ty = 2 / (1 + expf(-p[1]));
                        const float tw = 2 / (1 + expf(-p[2])), th = 2 / (1 + expf(-p[3]));
                        const float x = (c + 0.5f) * s + (tx - 1) * s, y = (r + 0.5f) * s + (ty - 1) * s;
                        const float hw = tw * tw * aw / 2, hh = th * th * ah / 2;
                        const float x1 = x - hw, x2 = x + hw, y1 = y - hh, y2 = y + hh;
                        float iw = fminf(x2, gx2) - fmaxf(x1, gx1), ih = fminf(y2, gy2) - fmaxf(y1, gy1);
                        iw = iw < 0 ? 0 : iw;
                        ih = ih < 0 ? 0 : ih;
                        const float inter = iw * ih;
                        const float iou = inter / ((x2 - x1) * (y2 - y1) + garea - inter + 1e-7f);
                        if (iou > thr) {
                            if (count < cap) {
                                out_obj[count] = o;
                                out_prior[count] = start[l] + (a * ny[l] + r) * nx[l] + c;
                                out_iou[count] = iou;
                            }
                            ++count;
                        }
                    }
                }
            }
        }
    }
    return count;
}
