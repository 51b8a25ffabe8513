"""Strategy ``ota``: hand-built SimOTA cases with exact expected matches, and the loss against an
independent, loop-by-loop transcription of YOLOv7's ``ComputeLossOTA`` (find_3_positive, per-image
cost matrix over every candidate row of the image, dynamic k from the top-10 IoUs, conflicts to the
cheapest target over all targets, then the YOLOv5 losses on the matched rows).

Pinned YOLOv7 behaviours: candidate rows are columns even when two rows share a cell (duplicates
stay separate), a column may go to a target that did not propose it (it keeps its own cell and
anchor and takes that target's box and class), a conflict goes to the argmin over all the image's
targets, k = max(1, int(sum of the top-min(10, n) IoUs)), obj targets are written in YOLOv7's row
order (image, then level, then candidate order). Deviations, on purpose: x is scaled by the image
width (YOLOv7 uses the height for both), equal costs are taken lowest column first.
"""
import math

import pytest
import torch

from utils.assign.simota import simota_match
from utils.assign.yolo_candidates import LevelCandidates
from utils.hyp import HypError, load_hyp, validate_hyp
from utils.loss import LOSSES, build_loss
from fakes import fake_model

ANCHORS_PX = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                           [116, 90, 156, 198, 373, 326]], dtype=torch.float32).view(3, 3, 2)
STRIDES = (8, 16, 32)




def logit(p):
    return math.log(p / (1 - p))


def rows_of(matches):
    """Multiset of (level, image, anchor, gj, gi, target) rows."""
    out = []
    for level, m in enumerate(matches):
        for r in zip(m.image.tolist(), m.anchor.tolist(), m.gj.tolist(), m.gi.tolist(), m.target.tolist()):
            out.append((level,) + tuple(r))
    return sorted(out)


# ---------------------------------------------------------------- hand-built cases, one level


def one_level(nc=2, na=1, anchors=((1.0, 1.0),), grid=4, stride=8):
    anchors_grid = torch.tensor([list(anchors)], dtype=torch.float32)  # (1, na, 2)
    loss = build_loss(fake_model(nc, anchors_grid, strides=(stride,)), {"loss": "ota"})
    preds = [torch.zeros(1, na, grid, grid, 5 + nc)]
    return loss, preds, torch.zeros(1, 3, grid * stride, grid * stride)


def set_pred(preds, a, gj, gi, xy, wh, anchor_wh):
    """Raw logits whose YOLOv5 decode at cell (gi, gj) is the box xy, wh (grid units)."""
    p = preds[0][0, a, gj, gi]
    p[0] = logit((xy[0] - gi + 0.5) / 2)
    p[1] = logit((xy[1] - gj + 0.5) / 2)
    p[2] = logit(math.sqrt(wh[0] / anchor_wh[0]) / 2)
    p[3] = logit(math.sqrt(wh[1] / anchor_wh[1]) / 2)


def test_two_candidates_one_target_takes_the_cheaper():
    loss, preds, imgs = one_level()
    # x = 1.25: own cell 1 and the left neighbour 0; y = 0.5 exactly: no vertical neighbour
    t = torch.tensor([[0, 1, 1.25 / 4, 0.5 / 4, 1 / 4, 1 / 4]])
    set_pred(preds, 0, 0, 1, (1.25, 0.5), (0.9, 1.0), (1, 1))  # IoU 0.9
    set_pred(preds, 0, 0, 0, (1.25, 0.5), (0.6, 1.0), (1, 1))  # IoU 0.6
    (m,) = loss.assign(preds, t, imgs)
    assert isinstance(m, LevelCandidates)
    assert rows_of([m]) == [(0, 0, 0, 0, 1, 0)]  # k = int(1.5) = 1: cell 1 only
    assert m.cls.tolist() == [1]
    assert torch.allclose(m.box_xywh_cell, torch.tensor([[0.25, 0.5, 1.0, 1.0]]))
    # a much better class score on the worse box wins: cost = class BCE + 3 * -log(IoU)
    preds[0][0, 0, 0, 0, 4:7] = torch.tensor([6.0, -6.0, 6.0])  # obj, class 0, class 1
    (m,) = loss.assign(preds, t, imgs)
    assert rows_of([m]) == [(0, 0, 0, 0, 0, 0)]
    assert torch.allclose(m.box_xywh_cell, torch.tensor([[1.25, 0.5, 1.0, 1.0]]))


@pytest.mark.parametrize("ious,expected_cells", [
    ((0.95, 0.9, 0.85, 0.4, 0.3, 0.1), [(1, 0), (1, 1), (1, 2)]),  # sum 3.5 -> k = 3
    ((0.95, 0.9, 0.35, 0.1, 0.1, 0.1), [(1, 0), (1, 1)]),  # sum 2.5 -> k = 2
    ((0.3, 0.2, 0.1, 0.05, 0.02, 0.9), [(0, 2)]),  # sum 1.57 -> k = 1: the best IoU
    ((0.1, 0.1, 0.1, 0.1, 0.1, 0.2), [(0, 2)]),  # sum 0.7 -> k = max(1, 0) = 1
])
def test_dynamic_k_from_known_ious(ious, expected_cells):
    loss, preds, imgs = one_level(na=3, anchors=((1.0, 1.0),) * 3)
    t = torch.tensor([[0, 0, 1.25 / 4, 0.5 / 4, 1 / 4, 1 / 4]])
    columns = [(1, a) for a in range(3)] + [(0, a) for a in range(3)]  # (gi, anchor)
    for (gi, a), iou in zip(columns, ious):
        set_pred(preds, a, 0, gi, (1.25, 0.5), (iou, 1.0), (1, 1))
    (m,) = loss.assign(preds, t, imgs)
    assert sorted(zip(m.gi.tolist(), m.anchor.tolist())) == expected_cells
    assert m.target.tolist() == [0] * len(expected_cells)


def test_candidate_claimed_by_two_targets_goes_to_the_cheaper():
    # anchor 1 (4x4 cells) is a candidate of the 2x2 target A only (0.5x0.5 target B: ratio 8 > 4)
    loss, preds, imgs = one_level(na=2, anchors=((1.0, 1.0), (4.0, 4.0)))
    t = torch.tensor([[0, 0, 1.5 / 4, 0.5 / 4, 2 / 4, 2 / 4],  # A
                      [0, 1, 1.5 / 4, 0.5 / 4, 0.5 / 4, 0.5 / 4]])  # B
    set_pred(preds, 0, 0, 1, (1.5, 0.5), (0.01, 0.01), (1, 1))  # anchor 0: a tiny box, IoU ~0 for both
    set_pred(preds, 1, 0, 1, (1.5, 0.5), (0.8, 0.8), (4, 4))  # anchor 1: IoU A 0.16, B 0.39
    # columns: [A anchor 0, B anchor 0, A anchor 1]; both targets' k = 1 and both pick column 2
    (m,) = loss.assign(preds, t, imgs)
    assert rows_of([m]) == [(0, 0, 1, 0, 1, 1)]  # anchor 1 goes to B, which never proposed it
    assert m.cls.tolist() == [1]
    assert torch.allclose(m.box_xywh_cell, torch.tensor([[0.5, 0.5, 0.5, 0.5]]))
    assert torch.allclose(m.anchor_wh, torch.tensor([[4.0, 4.0]]))


def test_simota_conflict_goes_to_argmin_over_all_targets():
    # target 2 claims nothing (k = 1 and column 0 is its cheapest) yet is the cheapest on column 1
    cost = torch.tensor([[1.0, 5.0, 9.0], [2.0, 4.0, 9.0], [0.5, 3.0, 9.0]])
    iou = torch.full((3, 3), 0.2)
    iou[0, 0] = iou[0, 1] = 0.95  # k0 = int(2.3) = 2: columns 0 and 1
    iou[1, 1] = 0.9  # k1 = int(1.3) = 1: column 0
    matched, fg = simota_match(cost, iou, torch.zeros(3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool))
    # column 0: claimed by 0, 1 and 2 -> argmin = 2; column 1: claimed by 0 only -> 0
    assert fg.tolist() == [[True, True, False]] and matched[0, :2].tolist() == [2, 0]
    # another image's rows and padded columns are inert: image 1 has one target that would be the
    # cheapest everywhere, and an extra padded column slot
    cost2 = torch.nn.functional.pad(torch.cat((cost, torch.tensor([[0.1, 0.1, 0.1]]))), (0, 1), value=float("inf"))
    iou2 = torch.nn.functional.pad(torch.cat((iou, torch.tensor([[1.0, 1.0, 1.0]]))), (0, 1), value=0.0)
    valid = torch.tensor([[True] * 3 + [False], [True] * 3 + [False]])
    m2, fg2 = simota_match(cost2, iou2, torch.tensor([0, 0, 0, 1]), valid)
    assert fg2[0].tolist() == [True, True, False, False] and m2[0, :2].tolist() == [2, 0]
    # image 1: k = int(3.0) = 3, its only target (row 3) takes all three real columns
    assert fg2[1].tolist() == [True, True, True, False] and m2[1, :3].tolist() == [3, 3, 3]


def test_equal_costs_take_the_lower_column():
    cost = torch.tensor([[2.0, 1.0, 1.0, 1.0]])
    iou = torch.full((1, 4), 0.6)  # k = int(2.4) = 2
    matched, fg = simota_match(cost, iou, torch.zeros(1, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool))
    assert fg.tolist() == [[False, True, True, False]]


# ---------------------------------------------------------------- YOLOv7 transcription


def bce(p, y):
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def iou_xyxy(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def ciou(b1, b2, eps=1e-7):
    (x1, y1, w1, h1), (x2, y2, w2, h2) = b1, b2
    a = (x1 - w1 / 2, y1 - h1 / 2, x1 + w1 / 2, y1 + h1 / 2)
    b = (x2 - w2 / 2, y2 - h2 / 2, x2 + w2 / 2, y2 + h2 / 2)
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    c2 = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2 + eps
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = 4 / math.pi ** 2 * (math.atan(w2 / h2) - math.atan(w1 / h1)) ** 2
    alpha = v / (v - iou + 1 + eps)
    return iou - (rho2 / c2 + v * alpha)


def find_3_positive(targets, anchors, shapes, anchor_t=4.0):
    """Per level, YOLOv7's candidate rows (image, anchor, gj, gi, target row) in its order."""
    out = []
    for level, (ny, nx) in enumerate(shapes):
        rows = []
        for d, (dx, dy) in enumerate([(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1)]):
            for a in range(anchors.shape[1]):
                for ti, (b, c, x, y, w, h) in enumerate(targets.tolist()):
                    gx, gy, gw, gh = x * nx, y * ny, w * nx, h * ny
                    aw, ah = anchors[level][a].tolist()
                    if max(gw / aw, aw / gw, gh / ah, ah / gh) >= anchor_t:
                        continue
                    use = {0: True, 1: gx % 1 < 0.5 and gx > 1, 2: gy % 1 < 0.5 and gy > 1,
                           3: (nx - gx) % 1 < 0.5 and nx - gx > 1, 4: (ny - gy) % 1 < 0.5 and ny - gy > 1}[d]
                    if use:
                        gi = min(max(int(gx - dx * 0.5), 0), nx - 1)
                        gj = min(max(int(gy - dy * 0.5), 0), ny - 1)
                        rows.append((int(b), a, gj, gi, ti))
        out.append(rows)
    return out


def yolov7_ota_rows(preds, targets, anchors, strides, img_hw, nc, topk=10, iou_weight=3.0):
    """YOLOv7 ``build_targets``: per image, per target, with plain Python numbers."""
    shapes = [p.shape[2:4] for p in preds]
    cand = find_3_positive(targets, anchors, shapes)
    height, width = img_hw
    matched = [[] for _ in preds]  # per level: (image, anchor, gj, gi, target row)
    for image in range(preds[0].shape[0]):
        tids = [i for i, t in enumerate(targets.tolist()) if int(t[0]) == image]
        cols = []  # (level, anchor, gj, gi, box_xyxy_px, score per class)
        for level, rows in enumerate(cand):
            s = strides[level]
            for b, a, gj, gi, _ in rows:
                if b != image:
                    continue
                q = preds[level][b, a, gj, gi].double().tolist()
                aw, ah = anchors[level][a].tolist()
                x = (sigmoid(q[0]) * 2 - 0.5 + gi) * s
                y = (sigmoid(q[1]) * 2 - 0.5 + gj) * s
                w = (sigmoid(q[2]) * 2) ** 2 * aw * s
                h = (sigmoid(q[3]) * 2) ** 2 * ah * s
                score = [math.sqrt(sigmoid(q[5 + c]) * sigmoid(q[4])) for c in range(nc)]
                cols.append((level, a, gj, gi, (x - w / 2, y - h / 2, x + w / 2, y + h / 2), score))
        if not tids or not cols:
            continue
        cost, claims = {}, {}
        for ti in tids:
            _, c, x, y, w, h = targets[ti].tolist()
            tb = (x * width - w * width / 2, y * height - h * height / 2,
                  x * width + w * width / 2, y * height + h * height / 2)
            ious = [iou_xyxy(tb, col[4]) for col in cols]
            k = max(1, int(sum(sorted(ious, reverse=True)[:topk])))
            for j, col in enumerate(cols):
                cls_cost = sum(bce(col[5][cc], 1.0 if cc == int(c) else 0.0) for cc in range(nc))
                cost[ti, j] = cls_cost + iou_weight * -math.log(ious[j] + 1e-8)
            for j in sorted(range(len(cols)), key=lambda j: (cost[ti, j], j))[:k]:
                claims.setdefault(j, []).append(ti)
        for j in range(len(cols)):  # columns in order, so per level: image, then candidate order
            if j not in claims:
                continue
            owner = claims[j][0] if len(claims[j]) == 1 else min(tids, key=lambda ti: cost[ti, j])
            level, a, gj, gi, _, _ = cols[j]
            matched[level].append((image, a, gj, gi, owner))
    return matched


def yolov7_ota_loss(preds, targets, anchors, matched, nc, box=0.05, obj=1.0, cls=0.5):
    """YOLOv7 ``ComputeLossOTA.__call__`` on the matched rows (YOLOv5's losses)."""
    balance = [4.0, 1.0, 0.4]
    lbox = lobj = lcls = 0.0
    for i, p in enumerate(preds):
        ny, nx = p.shape[2:4]
        tobj = torch.zeros(p.shape[:4], dtype=torch.float64)
        ious, cls_terms = [], []
        for b, a, gj, gi, ti in matched[i]:
            q = p[b, a, gj, gi].double().tolist()
            aw, ah = anchors[i][a].tolist()
            pb = (sigmoid(q[0]) * 2 - 0.5, sigmoid(q[1]) * 2 - 0.5,
                  (sigmoid(q[2]) * 2) ** 2 * aw, (sigmoid(q[3]) * 2) ** 2 * ah)
            _, c, x, y, w, h = targets[ti].tolist()
            v = ciou(pb, (x * nx - gi, y * ny - gj, w * nx, h * ny))
            ious.append(v)
            tobj[b, a, gj, gi] = max(v, 0.0)  # in row order: the last write wins, as in YOLOv7
            cls_terms.append(sum(bce(sigmoid(q[5 + k]), 1.0 if k == int(c) else 0.0) for k in range(nc)) / nc)
        if ious:
            lbox += sum(1 - v for v in ious) / len(ious)
            if nc > 1:
                lcls += sum(cls_terms) / len(cls_terms)
        lobj += torch.nn.functional.binary_cross_entropy_with_logits(p[..., 4].double(), tobj).item() * balance[i]
    bs = preds[0].shape[0]
    return (lbox * box + lobj * obj + lcls * cls) * bs, (lbox * box, lobj * obj, lcls * cls)


def random_case(seed, nc, img_hw, bs, n, wh_max=0.4):
    g = torch.Generator().manual_seed(seed)
    h, w = img_hw
    preds = [torch.randn(bs, 3, h // s, w // s, 5 + nc, generator=g) for s in STRIDES]
    xy = torch.rand(n, 2, generator=g) * 0.9 + 0.05
    wh = torch.rand(n, 2, generator=g) * wh_max + 0.02
    targets = torch.cat((torch.randint(0, bs, (n, 1), generator=g).float(),
                         torch.randint(0, nc, (n, 1), generator=g).float(), xy, wh), 1)
    return preds, targets, torch.zeros(bs, 3, h, w)


def reference_rows(matched):
    return sorted((level,) + r for level, rows in enumerate(matched) for r in rows)


@pytest.mark.parametrize("seed,nc,img_hw,bs,n", [
    (0, 80, (256, 256), 2, 10),
    (1, 3, (160, 160), 3, 24),  # crowded: shared cells, duplicate columns, conflicts
    (2, 1, (128, 128), 2, 6),
    (3, 5, (256, 320), 2, 12),  # rectangular: x scaled by the width, y by the height
    (4, 3, (128, 128), 4, 1),  # one target; three images without targets
])
def test_ota_matches_yolov7_transcription(seed, nc, img_hw, bs, n):
    anchors = ANCHORS_PX / torch.tensor(STRIDES, dtype=torch.float32).view(3, 1, 1)
    preds, targets, imgs = random_case(seed, nc, img_hw, bs, n)
    loss_fn = build_loss(fake_model(nc, anchors), {"loss": "ota"})
    matches = loss_fn.assign(preds, targets, imgs)
    ref = yolov7_ota_rows(preds, targets, anchors, STRIDES, img_hw, nc)
    assert rows_of(matches) == reference_rows(ref)
    assert sum(len(m) for m in matches) > 0
    for level, m in enumerate(matches):  # YOLOv7's row order (decides duplicate obj writes)
        assert list(zip(m.image.tolist(), m.anchor.tolist(), m.gj.tolist(), m.gi.tolist(),
                        m.target.tolist())) == ref[level]
    loss, items = loss_fn(preds, targets, imgs)
    ref_loss, ref_items = yolov7_ota_loss(preds, targets, anchors, ref, nc)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)
    assert items.tolist() == pytest.approx(list(ref_items), rel=1e-5, abs=1e-7)
    assert loss_fn.names == ("box", "obj", "cls")


def test_chunked_matching_gives_identical_results():
    anchors = ANCHORS_PX / torch.tensor(STRIDES, dtype=torch.float32).view(3, 1, 1)
    preds, targets, imgs = random_case(5, 20, (160, 160), 4, 30)
    model = fake_model(20, anchors)
    whole = build_loss(model, {"loss": "ota"})
    tiny = LOSSES["ota"](model, {"loss": "ota"}, max_pair_elems=1)  # one image per chunk
    a, b = whole.assign(preds, targets, imgs), tiny.assign(preds, targets, imgs)
    for x, y in zip(a, b):
        for f in ("image", "anchor", "gj", "gi", "target", "cls", "box_xywh_cell", "anchor_wh"):
            assert torch.equal(getattr(x, f), getattr(y, f)), f
    assert torch.equal(whole(preds, targets, imgs)[0], tiny(preds, targets, imgs)[0])


# ---------------------------------------------------------------- edge cases and precision


def grads_ok(preds):
    return all(p.grad is not None and torch.isfinite(p.grad).all() for p in preds)


def test_empty_targets_objectness_only():
    anchors = ANCHORS_PX / torch.tensor(STRIDES, dtype=torch.float32).view(3, 1, 1)
    preds = [torch.randn(2, 3, 64 // s, 64 // s, 8, requires_grad=True) for s in STRIDES]
    loss, items = build_loss(fake_model(3, anchors), {"loss": "ota"})(preds, torch.zeros(0, 6),
                                                                      torch.zeros(2, 3, 64, 64))
    assert torch.isfinite(loss) and items[0] == 0 and items[2] == 0 and items[1] > 0
    loss.backward()
    assert grads_ok(preds)


def test_targets_without_candidates_are_defined():
    anchors = ANCHORS_PX / torch.tensor(STRIDES, dtype=torch.float32).view(3, 1, 1)
    g = torch.Generator().manual_seed(7)
    preds = [torch.randn(2, 3, 128 // s, 128 // s, 8, generator=g).requires_grad_() for s in STRIDES]
    # image 0: a needle no anchor accepts (w/h ratio > 4 everywhere) next to a normal box;
    # image 1: only a needle -> no candidate in the whole image
    t = torch.tensor([[0, 1, 0.5, 0.5, 0.005, 0.9], [0, 2, 0.3, 0.3, 0.2, 0.2], [1, 0, 0.5, 0.5, 0.005, 0.9]])
    loss_fn = build_loss(fake_model(3, anchors), {"loss": "ota"})
    matches = loss_fn.assign(preds, t, torch.zeros(2, 3, 128, 128))
    owners = [r[5] for r in rows_of(matches)]
    # as in YOLOv7, the needle still takes k = max(1, int(0)) = 1 of its image's columns (proposed by
    # target 1); the needle alone in image 1 has no column to take
    assert owners.count(0) == 1 and owners.count(1) >= 1 and 2 not in owners
    loss, items = loss_fn(preds, t, torch.zeros(2, 3, 128, 128))
    assert torch.isfinite(loss) and torch.isfinite(items).all()
    loss.backward()
    assert grads_ok(preds)
    ref = yolov7_ota_rows(preds, t, anchors, STRIDES, (128, 128), 3)
    assert rows_of(matches) == reference_rows(ref)


def test_low_precision_and_saturated_logits_stay_finite():
    anchors = ANCHORS_PX / torch.tensor(STRIDES, dtype=torch.float32).view(3, 1, 1)
    preds, targets, imgs = random_case(8, 3, (128, 128), 2, 8)
    preds[0] = preds[0] * 40  # sigmoid saturates at 1.0: YOLOv7's log(y / (1 - y)) would be inf
    loss_fn = build_loss(fake_model(3, anchors), {"loss": "ota"})
    leaves = [p.clone().requires_grad_() for p in preds]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = [(p * 1.0).to(torch.bfloat16) for p in leaves]
        loss, items = loss_fn(low, targets, imgs)
    assert torch.isfinite(loss) and torch.isfinite(items).all()
    loss.backward()
    assert grads_ok(leaves)
    half = [p.half() for p in preds]
    assert all(torch.isfinite(m.box_xywh_cell).all() for m in loss_fn.assign(half, targets, imgs))
    assert torch.isfinite(loss_fn([p.float() for p in half], targets, imgs)[0])


def test_hyp_file_and_keys():
    hyp = load_hyp("hyp.ota.yaml")
    assert hyp["loss"] == "ota" and hyp["ota_topk"] == 10 and hyp["ota_iou_weight"] == 3.0
    scratch = load_hyp("hyp.scratch.yaml")
    assert hyp["assigner"] == "simota" and scratch["assigner"] == "yolov5"  # filled in: runs record the rule
    assert {k: v for k, v in hyp.items() if not k.startswith("ota_") and k not in ("loss", "assigner")} == \
        {k: v for k, v in scratch.items() if k not in ("loss", "assigner")}
    anchors = ANCHORS_PX / torch.tensor(STRIDES, dtype=torch.float32).view(3, 1, 1)
    loss_fn = build_loss(fake_model(3, anchors), {**hyp, "ota_topk": 5.0})
    assert loss_fn.rule.hyp.ota_topk == 5 and isinstance(loss_fn.rule.hyp.ota_topk, int)
    with pytest.raises(HypError, match=r"'ota_topk' must be a whole number"):
        validate_hyp({"loss": "ota", "ota_topk": 2.5})
    with pytest.raises(HypError, match=r"'ota_topk' must be >= 1"):
        validate_hyp({"loss": "ota", "ota_topk": 0})
    with pytest.raises(HypError, match=r"belongs to loss 'ota'"):
        validate_hyp({"loss": "yolov5", "ota_iou_weight": 3.0})
