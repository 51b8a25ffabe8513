"""Strategy ``yolov5``: candidate rule on hand-built cases, and the loss against an independent,
loop-by-loop transcription of YOLOv5 v7.0's ComputeLoss (assignment order, CIoU, BCE, balance)."""
import math

import pytest
import torch

from utils.assign.yolo_candidates import yolo_candidates
from utils.hyp import HypError, load_hyp, validate_hyp
from utils.loss import LOSSES, build_loss
from fakes import fake_model


def cells(level):
    return sorted(zip(level.gi.tolist(), level.gj.tolist(), level.anchor.tolist()))


def test_candidates_own_cell_and_two_nearest_neighbours():
    anchors = torch.tensor([[[1.0, 1.0]]])  # one level, one anchor of one cell
    t = torch.tensor([[0, 2, 1.3 / 4, 2.8 / 4, 1 / 4, 1 / 4]])  # grid 4x4: x=1.3, y=2.8
    (lv,) = yolo_candidates(t, anchors, [(4, 4)])
    # own (1, 2); left (0, 2) since x%1=0.3<0.5; down (1, 3) since 4-2.8=1.2 and 0.2<0.5
    assert cells(lv) == [(0, 2, 0), (1, 2, 0), (1, 3, 0)]
    assert lv.cls.tolist() == [2, 2, 2] and lv.target.tolist() == [0, 0, 0]
    own = (lv.gi == 1) & (lv.gj == 2)
    assert torch.allclose(lv.box_xywh_cell[own], torch.tensor([[0.3, 0.8, 1.0, 1.0]]))
    left = lv.gi == 0
    assert torch.allclose(lv.box_xywh_cell[left], torch.tensor([[1.3, 0.8, 1.0, 1.0]]))


def test_candidates_no_neighbour_outside_the_grid_and_ratio_filter():
    anchors = torch.tensor([[[1.0, 1.0], [8.0, 8.0]]])
    # x=0.4 < 1: no left neighbour though x%1 < 0.5; y=3.6: up? 3.6%1=0.6 no; down? 4-3.6=0.4 < 1 no
    t = torch.tensor([[1, 0, 0.4 / 4, 3.6 / 4, 1 / 4, 1 / 4]])
    (lv,) = yolo_candidates(t, anchors, [(4, 4)])
    assert cells(lv) == [(0, 3, 0)]  # anchor 1 is 8x larger: ratio 8 >= 4, filtered
    assert lv.image.tolist() == [1]


def test_candidates_empty_targets():
    anchors = torch.rand(3, 3, 2) + 0.5
    out = yolo_candidates(torch.zeros(0, 6), anchors, [(8, 8), (4, 4), (2, 2)])
    assert [len(x) for x in out] == [0, 0, 0]


def ciou(b1, b2, eps=1e-7):
    """CIoU of two xywh boxes (plain floats), as defined by Zheng et al. 2020 / YOLOv5."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = b1, b2
    ax1, ax2, ay1, ay2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    bx1, bx2, by1, by2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw, ch = max(ax2, bx2) - min(ax1, bx1), max(ay2, by2) - min(ay1, by1)
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((x2 - x1) ** 2 + (y2 - y1) ** 2)
    v = 4 / math.pi ** 2 * (math.atan(w2 / h2) - math.atan(w1 / h1)) ** 2
    alpha = v / (v - iou + 1 + eps)
    return iou - (rho2 / c2 + v * alpha)


def bce(logit, y):
    p = 1 / (1 + math.exp(-logit))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def reference_loss(preds, targets, anchors, nc, box=0.05, obj=1.0, cls=0.5, anchor_t=4.0):
    """YOLOv5 v7.0 ComputeLoss written out with Python loops over targets, anchors and cells."""
    balance = [4.0, 1.0, 0.4]
    lbox = lobj = lcls = 0.0
    for i, p in enumerate(preds):
        bs, na, ny, nx, _ = p.shape
        rows = []  # YOLOv5 order: direction, then anchor, then target
        for d, (dx, dy) in enumerate([(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1)]):
            for a in range(na):
                for b, c, x, y, w, h in targets.tolist():
                    gx, gy, gw, gh = x * nx, y * ny, w * nx, h * ny
                    aw, ah = anchors[i][a].tolist()
                    if max(gw / aw, aw / gw, gh / ah, ah / gh) >= anchor_t:
                        continue
                    use = {0: True,
                           1: gx % 1 < 0.5 and gx > 1, 2: gy % 1 < 0.5 and gy > 1,
                           3: (nx - gx) % 1 < 0.5 and nx - gx > 1, 4: (ny - gy) % 1 < 0.5 and ny - gy > 1}[d]
                    if use:
                        gi = min(max(int(gx - dx * 0.5), 0), nx - 1)
                        gj = min(max(int(gy - dy * 0.5), 0), ny - 1)
                        rows.append((int(b), a, gj, gi, int(c), (gx - gi, gy - gj, gw, gh), (aw, ah)))
        tobj = torch.zeros(p.shape[:4], dtype=torch.float64)
        if rows:
            ious, cls_terms = [], []
            for b, a, gj, gi, c, tb, (aw, ah) in rows:
                q = p[b, a, gj, gi].double()
                px = torch.sigmoid(q[0]).item() * 2 - 0.5
                py = torch.sigmoid(q[1]).item() * 2 - 0.5
                pw = (torch.sigmoid(q[2]).item() * 2) ** 2 * aw
                ph = (torch.sigmoid(q[3]).item() * 2) ** 2 * ah
                iou = ciou((px, py, pw, ph), tb)
                ious.append(iou)
                tobj[b, a, gj, gi] = max(iou, 0.0)
                cls_terms.append(sum(bce(q[5 + k].item(), 1.0 if k == c else 0.0) for k in range(nc)) / nc)
            lbox += sum(1 - v for v in ious) / len(ious)
            if nc > 1:
                lcls += sum(cls_terms) / len(cls_terms)
        logits = p[..., 4].double()
        lobj += torch.nn.functional.binary_cross_entropy_with_logits(logits, tobj).item() * balance[i]
    bs = preds[0].shape[0]
    return (lbox * box + lobj * obj + lcls * cls) * bs, (lbox * box, lobj * obj, lcls * cls)




@pytest.mark.parametrize("nc,img", [(80, 640), (3, 320), (1, 256)])
def test_yolov5_loss_equals_reference_transcription(nc, img):
    g = torch.Generator().manual_seed(nc)
    anchors_px = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                               [116, 90, 156, 198, 373, 326]], dtype=torch.float32).view(3, 3, 2)
    strides = torch.tensor([8.0, 16.0, 32.0])
    anchors = anchors_px / strides.view(3, 1, 1)
    bs = 2
    preds = [torch.randn(bs, 3, img // s, img // s, 5 + nc, generator=g) for s in (8, 16, 32)]
    n = 7
    xy = torch.rand(n, 2, generator=g) * 0.9 + 0.05
    wh = torch.rand(n, 2, generator=g) * 0.4 + 0.02
    targets = torch.cat((torch.randint(0, bs, (n, 1), generator=g).float(),
                         torch.randint(0, nc, (n, 1), generator=g).float(), xy, wh), 1)
    loss_fn = build_loss(fake_model(nc, anchors), {"loss": "yolov5"})
    loss, items = loss_fn(preds, targets, torch.zeros(bs, 3, img, img))
    ref, ref_items = reference_loss(preds, targets, anchors, nc)
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    assert items.tolist() == pytest.approx(list(ref_items), rel=1e-5, abs=1e-7)
    assert loss_fn.names == ("box", "obj", "cls")


def test_yolov5_loss_without_targets_is_objectness_only_and_has_gradient():
    anchors = torch.rand(3, 3, 2) + 0.5
    preds = [torch.randn(2, 3, s, s, 8, requires_grad=True) for s in (8, 4, 2)]
    loss, items = build_loss(fake_model(3, anchors), {})(preds, torch.zeros(0, 6), torch.zeros(2, 3, 64, 64))
    assert torch.isfinite(loss) and items[0] == 0 and items[2] == 0 and items[1] > 0
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in preds)


def test_registry_and_hyp_validation_errors():
    assert "yolov5" in LOSSES
    with pytest.raises(ValueError, match=r"unknown loss 'yolov55'.*did you mean 'yolov5'.*choose from"):
        build_loss(fake_model(3, torch.ones(3, 3, 2)), {"loss": "yolov55"})
    with pytest.raises(HypError, match=r"unknown hyp key 'anchr_t'.*'anchor_t'"):
        validate_hyp({"anchr_t": 4.0})
    with pytest.raises(HypError, match=r"'box' must be a number"):
        validate_hyp({"box": "0.05"})
    with pytest.raises(HypError, match=r"'lr0' must be a number"):
        validate_hyp({"lr0": [0.01]})
    with pytest.raises(HypError, match=r"not found"):
        load_hyp("hyp.nope.yaml")
    hyp = load_hyp("hyp.scratch.yaml")  # bare names are looked up in hyp/
    assert hyp["loss"] == "yolov5" and hyp["anchor_t"] == 4.0 and hyp["mosaic"] == 1.0


def test_loss_scaling_is_left_to_the_caller():
    """build_loss uses box/obj/cls as given: doubling 'box' doubles the box item exactly."""
    g = torch.Generator().manual_seed(0)
    anchors = torch.tensor([[[1.5, 2.0], [3.0, 2.5], [2.0, 4.0]]] * 3)
    preds = [torch.randn(1, 3, s, s, 7, generator=g) for s in (16, 8, 4)]
    t = torch.tensor([[0, 1, 0.5, 0.5, 0.2, 0.3]])
    imgs = torch.zeros(1, 3, 128, 128)
    a = build_loss(fake_model(2, anchors), {"box": 0.05})(preds, t, imgs)[1]
    b = build_loss(fake_model(2, anchors), {"box": 0.10})(preds, t, imgs)[1]
    assert b[0].item() == pytest.approx(2 * a[0].item(), rel=1e-6) and b[1] == a[1] and b[2] == a[2]
