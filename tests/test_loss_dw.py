"""Strategy ``dw`` (Dual Weighting, CVPR 2022, on the YOLOv5 head).

Pinned reference behaviour (strongwolf/DW ``dw_head.py``): ``dw_weights`` and the whole loss are
compared with plain-loop transcriptions of the official formulas (EPS 1e-12, ``exp(5p)`` over the
object's ``sum exp(3p)``, the ``t(x)`` min-max with ``min(1, max)``, 1 below IoU 0.5, objects counted
in the positive normaliser, ``sum(1 - w)`` the negative one). Where we deviate on purpose (an
(anchor, class) inside two objects of one class takes the smaller IoU factor; the official winner of
its duplicate indexed write is unspecified) the test says so.
"""
import math

import pytest
import torch

from utils.assign.centre_prior import cells_inside_boxes, gaussian_centre_prior
from utils.assign.yolo_candidates import LevelCandidates
from utils.hyp import HypError, load_hyp
from utils.loss import LOSSES, build_loss
from utils.loss.functional import dw_weights
from fakes import fake_model

EPS = 1e-12
SIGMA = 1.11


def ref_dw_weights(p_cls, p_loc, prior, iou, inside):
    """The official ``_loss_single`` weight formulas, one object (column) at a time, in Python floats."""
    m, n = len(p_cls), len(p_cls[0])
    w_pos = [[0.0] * n for _ in range(m)]
    w_neg = [[1.0] * n for _ in range(m)]
    for j in range(n):
        p = [p_cls[i][j] * p_loc[i][j] for i in range(m)]
        den = max(sum(math.exp(3 * p[i]) * p[i] * prior[i][j] for i in range(m)), EPS)
        for i in range(m):
            w_pos[i][j] = math.exp(5 * p[i]) * p[i] * prior[i][j] / den
        rows = [i for i in range(m) if inside[i][j]]
        if not rows:
            continue
        t = {i: 1 / (0.5 ** 2 - 1) * iou[i][j] ** 2 - 1 / (0.5 ** 2 - 1) for i in rows}
        t1, t2 = min(t.values()), min(1.0, max(t.values()))
        for i in rows:
            w_neg[i][j] = 1.0 if iou[i][j] < 0.5 else (t[i] - t1 + EPS) / (t2 - t1 + EPS)
    return w_pos, w_neg


@pytest.mark.parametrize("seed", range(4))
def test_dw_weights_equal_the_official_formulas_on_random_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    m, n = 30, 6
    inside = torch.rand(m, n, generator=g) < 0.4
    inside[:, 4] = False  # an object without candidates
    inside[:, 5] = False
    inside[7, 5] = True  # an object with a single candidate
    prior = torch.rand(m, n, generator=g, dtype=torch.float64) * inside  # CenterPrior: 0 outside
    p_cls, p_loc = (torch.rand(m, n, generator=g, dtype=torch.float64) for _ in range(2))
    iou = torch.rand(m, n, generator=g, dtype=torch.float64) * inside
    iou[7, 5] = 0.8
    iou[:, 3] = iou[:, 3] * 0.49  # every candidate below 0.5
    w_pos, w_neg = dw_weights(p_cls, p_loc, prior, iou, inside)
    ref_pos, ref_neg = ref_dw_weights(p_cls.tolist(), p_loc.tolist(), prior.tolist(), iou.tolist(), inside.tolist())
    assert torch.allclose(w_pos, torch.tensor(ref_pos, dtype=torch.float64), rtol=1e-12, atol=1e-15)
    assert torch.allclose(w_neg, torch.tensor(ref_neg, dtype=torch.float64), rtol=1e-12, atol=1e-15)
    assert w_neg[7, 5] == 1.0  # single candidate: EPS / EPS
    assert (w_neg[:, 3] == 1).all() and (w_neg[~inside] == 1).all()
    # float32 as the official code runs it
    w32, n32 = dw_weights(p_cls.float(), p_loc.float(), prior.float(), iou.float(), inside)
    assert torch.allclose(w32.double(), w_pos, rtol=1e-5, atol=1e-6)
    assert torch.allclose(n32.double(), w_neg, rtol=1e-4, atol=1e-6)


def test_dw_weights_hand_built_cases():
    # one object, three candidates with equal prior: candidate 0 has the higher score and IoU
    p_cls = torch.tensor([[0.9], [0.5], [0.3]])
    iou = torch.tensor([[0.9], [0.7], [0.3]])
    p_loc = iou.clone()
    prior = torch.ones(3, 1)
    inside = torch.ones(3, 1, dtype=torch.bool)
    w_pos, w_neg = dw_weights(p_cls, p_loc, prior, iou, inside)
    assert w_pos[0, 0] > w_pos[1, 0] > w_pos[2, 0] > 0
    p = p_cls * p_loc
    assert w_pos[0, 0].item() == pytest.approx((torch.exp(5 * p[0, 0]) * p[0, 0] / (torch.exp(3 * p) * p).sum()).item())
    assert w_neg[2, 0] == 1.0  # IoU 0.3 < 0.5: a plain negative
    assert w_neg[0, 0] == pytest.approx(0.0, abs=1e-6)  # the best-IoU box is hardly a negative
    t = lambda x: (1 - x ** 2) / 0.75  # noqa: E731
    assert w_neg[1, 0].item() == pytest.approx((t(0.7) - t(0.9)) / (1.0 - t(0.9)), rel=1e-5)  # min(1, max t) = 1
    # the prior alone decides between candidates of equal score
    w_pos, _ = dw_weights(torch.full((2, 1), 0.5), torch.full((2, 1), 0.5), torch.tensor([[0.9], [0.1]]),
                          torch.zeros(2, 1), torch.ones(2, 1, dtype=torch.bool))
    assert w_pos[0, 0] == pytest.approx(9 * w_pos[1, 0].item())




def yolo_model(nc=3):
    anchors_px = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                               [116, 90, 156, 198, 373, 326]], dtype=torch.float32).view(3, 3, 2)
    strides = (8.0, 16.0, 32.0)
    return fake_model(nc, anchors_px / torch.tensor(strides).view(3, 1, 1), strides)


def test_cells_inside_boxes_worked_example_and_brute_force():
    boxes = torch.tensor([[0.6, 1.2, 2.4, 1.8], [0.9, 0.2, 1.1, 3.9], [-1.0, 2.6, 0.7, 9.0], [2.5, 0.5, 3.6, 1.6]])
    obj, gj, gi = cells_inside_boxes(boxes, (4, 4))
    got = sorted(zip(obj.tolist(), gj.tolist(), gi.tolist()))
    brute = sorted((o, j, i) for o, (x1, y1, x2, y2) in enumerate(boxes.tolist()) for j in range(4) for i in range(4)
                   if x1 < i + 0.5 < x2 and y1 < j + 0.5 < y2)
    assert got == brute
    assert [x for x in got if x[0] == 0] == [(0, 1, 1)]  # the module docstring's example
    assert not any(x[0] == 1 for x in got)  # x 0.9..1.1 holds no centre
    assert [x for x in got if x[0] == 3] == [(3, 1, 3)]  # edges exactly on centres are outside (strict)
    e = cells_inside_boxes(torch.zeros(0, 4), (4, 4))
    assert all(len(x) == 0 for x in e)


def test_candidates_exact_cells_anchors_and_prior_on_a_hand_built_grid():
    # one level of stride 8 on a 32x32 image (4x4 grid), two anchors
    model = fake_model(2, torch.tensor([[[1.0, 1.0], [2.0, 3.0]]]), (8.0,))
    loss_fn = build_loss(model, {"loss": "dw"})
    preds = [torch.zeros(1, 2, 4, 4, 7)]
    # object x 0.6..2.4, y 1.1..2.7 grid units: centres (1.5, 1.5) and (1.5, 2.5); object centre (1.5, 1.9)
    t = torch.tensor([[0, 1, 1.5 / 4, 1.9 / 4, 1.8 / 4, 1.6 / 4]])
    (lv,) = loss_fn.candidates(preds, t)
    assert sorted(zip(lv.gi.tolist(), lv.gj.tolist(), lv.anchor.tolist())) == [(1, 1, 0), (1, 1, 1), (1, 2, 0), (1, 2, 1)]
    assert lv.cls.tolist() == [1] * 4 and lv.target.tolist() == [0] * 4 and lv.image.tolist() == [0] * 4
    own = (lv.gj == 1) & (lv.anchor == 1)
    assert torch.allclose(lv.box_xywh_cell[own], torch.tensor([[0.5, 0.9, 1.8, 1.6]]))
    assert torch.allclose(lv.anchor_wh[own], torch.tensor([[2.0, 3.0]]))
    prior = loss_fn.pair_terms(loss_fn.candidate_rows(preds, [lv]), [lv], preds).prior
    expected = torch.where(lv.gj == 1, math.exp(-0.4 ** 2 / (2 * SIGMA ** 2)), math.exp(-0.6 ** 2 / (2 * SIGMA ** 2)))
    assert torch.allclose(prior, expected)
    off = torch.tensor([[1.0, -2.0]])
    assert gaussian_centre_prior(off, SIGMA).item() == pytest.approx(
        math.exp(-1 / (2 * SIGMA ** 2)) * math.exp(-4 / (2 * SIGMA ** 2)))


def decode(q, gi, gj, anchor_wh):
    """YOLOv5 v6/v7 decode of one prediction row in grid units (absolute xyxy)."""
    sx, sy, sw, sh = (1 / (1 + math.exp(-v)) for v in q[:4])
    x, y = 2 * sx - 0.5 + gi, 2 * sy - 0.5 + gj
    w, h = (2 * sw) ** 2 * anchor_wh[0], (2 * sh) ** 2 * anchor_wh[1]
    return x - w / 2, y - h / 2, x + w / 2, y + h / 2


def iou_giou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-7
    c = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1])) + 1e-7
    return inter / union, inter / union - (c - union) / c


def reference_loss(preds, targets, model, gain=0.1, pos_weight=1.0):
    """The official ``loss`` + ``_loss_single`` per image on the dense point layout, in Python loops.

    Points are (level, anchor, cell); an (anchor, class) inside two objects of its class takes the
    smaller IoU factor (our documented choice).
    """
    head = model.model[0]
    bs, nc = preds[0].shape[0], head.nc
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    cls_pos = loc = neg = neg_norm = 0.0
    for b in range(bs):
        objs = [t for t in targets.tolist() if int(t[0]) == b]
        points = []  # (level, anchor, gj, gi)
        for lv, p in enumerate(preds):
            _, na, ny, nx, _ = p.shape
            points += [(lv, a, j, i) for a in range(na) for j in range(ny) for i in range(nx)]
        m, n = len(points), len(objs)
        cols = {k: [[0.0] * n for _ in range(m)] for k in ("p_cls", "p_loc", "prior", "iou", "giou")}
        inside = [[False] * n for _ in range(m)]
        for r, (lv, a, j, i) in enumerate(points):
            ny, nx = preds[lv].shape[2:4]
            q = preds[lv][b, a, j, i].tolist()
            box = decode(q, i, j, head.anchors[lv, a].tolist())
            for k, (_, c, x, y, w, h) in enumerate(objs):
                gx, gy, gw, gh = x * nx, y * ny, w * nx, h * ny
                g = (gx - gw / 2, gy - gh / 2, gx + gw / 2, gy + gh / 2)
                inside[r][k] = g[0] < i + 0.5 < g[2] and g[1] < j + 0.5 < g[3]
                iou, giou = iou_giou(box, g)
                cols["iou"][r][k] = iou if inside[r][k] else 0.0
                cols["p_loc"][r][k] = math.exp(-5 * (1 - giou))
                cols["giou"][r][k] = giou
                cols["p_cls"][r][k] = sig(q[5 + int(c)]) * sig(q[4])
                d2 = (i + 0.5 - gx) ** 2 + (j + 0.5 - gy) ** 2
                cols["prior"][r][k] = math.exp(-d2 / (2 * SIGMA ** 2)) if inside[r][k] else 0.0
        w_pos, w_neg = ref_dw_weights(cols["p_cls"], cols["p_loc"], cols["prior"], cols["iou"], inside)
        for r in range(m):
            for k in range(n):
                cls_pos += w_pos[r][k] * -math.log(cols["p_cls"][r][k])
                loc += w_pos[r][k] * 5 * (1 - cols["giou"][r][k])
        for r, (lv, a, j, i) in enumerate(points):
            q = preds[lv][b, a, j, i].tolist()
            for c in range(nc):
                w = min([w_neg[r][k] for k in range(n) if int(objs[k][1]) == c] + [1.0])
                s = sig(q[5 + c]) * sig(q[4])
                neg += w * s ** 2 * -math.log(1 - s)
                neg_norm += 1 - w
    n_obj = max(len(targets), 1)
    items = (pos_weight * loc / n_obj * gain, pos_weight * cls_pos / n_obj * gain, neg / max(neg_norm, 1.0) * gain)
    return sum(items) * bs, items


def make_targets(g, bs, n, nc, lo=0.15, hi=0.6):
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * (hi - lo) + lo
    xy = wh / 2 + torch.rand(n, 2, generator=g, dtype=torch.float64) * (1 - wh)
    return torch.cat((torch.randint(0, bs, (n, 1), generator=g).double(),
                      torch.randint(0, nc, (n, 1), generator=g).double(), xy, wh), 1).float()


@pytest.mark.parametrize("seed,hw,hyp", [(0, (64, 64), {}), (1, (32, 96), {"dw_pos_weight": 0.25})])
def test_loss_equals_the_reference_transcription(seed, hw, hyp):
    g = torch.Generator().manual_seed(seed)
    model = yolo_model(nc=3)
    bs, (h, w) = 2, hw
    preds = [torch.randn(bs, 3, h // s, w // s, 8, generator=g, dtype=torch.float64) * 1.5 for s in (8, 16, 32)]
    targets = make_targets(g, bs, 5, 3)
    targets[1] = targets[0]
    targets[1, 2] += 0.02  # two overlapping objects of one class in one image
    loss_fn = build_loss(model, {"loss": "dw", **hyp})
    loss, items = loss_fn(preds, targets, torch.zeros(bs, 3, h, w))
    ref, ref_items = reference_loss(preds, targets, model, pos_weight=hyp.get("dw_pos_weight", 1.0))
    assert loss.item() == pytest.approx(ref, rel=1e-6)
    assert items.tolist() == pytest.approx(list(ref_items), rel=1e-6, abs=1e-12)
    assert loss_fn.names == ("loc", "cls_pos", "cls_neg")


def test_assign_exposes_positive_weights_and_select_keeps_them():
    g = torch.Generator().manual_seed(3)
    preds = [torch.randn(2, 3, s, s, 8, generator=g) for s in (8, 4, 2)]
    targets = make_targets(g, 2, 4, 3)
    loss_fn = build_loss(yolo_model(), {"loss": "dw"})
    levels = loss_fn.assign(preds, targets, torch.zeros(2, 3, 64, 64))
    assert len(levels) == 3 and all(isinstance(lv, LevelCandidates) for lv in levels)
    assert all(lv.weight is not None and lv.weight.shape == (len(lv),) and (lv.weight >= 0).all() for lv in levels)
    total = torch.zeros(len(targets)).index_add_(0, torch.cat([lv.target for lv in levels]),
                                                   torch.cat([lv.weight for lv in levels]))
    assert ((total >= 1 - 1e-5) & (total <= math.e ** 2 + 1e-5)).all()  # exp(5p) / exp(3p) in [1, e^2]
    lv = levels[0].select(levels[0].weight > levels[0].weight.median())
    assert len(lv) == len(lv.weight) > 0
    plain = LevelCandidates(*(torch.zeros(2) for _ in range(8)))
    assert plain.weight is None and plain.select(torch.tensor([True, False])).weight is None


def test_best_object_keeps_a_shared_anchor_for_the_object_it_fits():
    # one 4x4 level, one anchor of 2x2 cells; objects A (x 0.2..2.8) and B (x 1.2..3.8), both y 0.2..2.8:
    # the cells with centres x 1.5 and 2.5 lie inside both; every prediction is the box of A
    model = fake_model(2, torch.tensor([[[2.0, 2.0]]]), (8.0,))
    t = torch.tensor([[0, 0, 1.5 / 4, 1.5 / 4, 2.6 / 4, 2.6 / 4], [0, 0, 2.5 / 4, 1.5 / 4, 2.6 / 4, 2.6 / 4]])
    preds = [torch.zeros(1, 1, 4, 4, 7)]
    gi = torch.arange(4.0).view(1, 4)
    # decoded x = 2 sigmoid(tx) - 0.5 + gi = 1.5 (A's centre) -> sigmoid(tx) = (2 - gi) / 2, inside (0, 1) for gi 1, 2
    sx = ((2.0 - gi) / 2).clamp(0.02, 0.98).expand(4, 4)
    preds[0][0, 0, :, :, 0] = torch.log(sx / (1 - sx))
    preds[0][0, 0, :, :, 1] = torch.log(torch.tensor(0.5 / 0.5))  # y = 1.0 + gj: not the point here
    preds[0][0, 0, :, :, 2:4] = math.log(0.65 / 0.35)  # wh = (2 * 0.65)^2 * 2 = 3.38 cells
    preds[0][0, 0, :, :, 4:] = 2.0
    def weights(flag, targets):
        loss_fn = build_loss(model, {"loss": "dw", "dw_best_object": flag})
        (lv,) = loss_fn.assign(preds, targets, torch.zeros(1, 3, 32, 32))
        return {(o, j, i): w for o, j, i, w in zip(lv.target.tolist(), lv.gj.tolist(), lv.gi.tolist(), lv.weight.tolist())}

    both = {flag: weights(flag, t) for flag in (False, True)}
    # 'class': the same as true for two objects of one class ...
    assert weights("class", t) == both[True]
    # ... and as false when B has another class (the anchor answers with a separate class output)
    t_other = t.clone()
    t_other[1, 1] = 1
    assert weights("class", t_other) == weights(False, t_other)
    assert weights(True, t_other) != weights(False, t_other)
    with pytest.raises(ValueError, match="dw_best_object"):
        build_loss(model, {"loss": "dw", "dw_best_object": "yes"})
    shared = [(j, i) for (o, j, i) in both[False] if o == 0 and (1, j, i) in both[False]]
    assert shared and all(i in (1, 2) for _, i in shared)
    for j, i in shared:
        # the anchor regresses A's box: without the option it is a positive of both objects
        assert both[False][0, j, i] > 0 and both[False][1, j, i] > 0
        # with it, only of A (its p = p_cls * p_loc is higher there); B's weight is exactly 0
        assert both[True][0, j, i] > 0 and both[True][1, j, i] == 0.0
    # anchors inside one object only are untouched in kind (positive for that object)
    assert all(w > 0 for (o, j, i), w in both[True].items() if (1 - o, j, i) not in both[True])


def test_images_without_objects_give_a_finite_loss_with_gradient():
    g = torch.Generator().manual_seed(4)
    loss_fn = build_loss(yolo_model(), {"loss": "dw"})
    preds = [torch.randn(2, 3, s, s, 8, generator=g).requires_grad_() for s in (8, 4, 2)]
    loss, items = loss_fn(preds, torch.zeros(0, 6), torch.zeros(2, 3, 64, 64))
    assert torch.isfinite(loss) and items[0] == 0 and items[1] == 0 and items[2] > 0
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in preds)
    # one image with objects, one without; a tiny object between cell centres has no candidate
    targets = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.4], [0, 2, 0.07, 0.07, 0.01, 0.01]])
    loss, items = loss_fn(preds, targets, torch.zeros(2, 3, 64, 64))
    assert torch.isfinite(loss) and (items > 0).all()
    assert sum(len(lv) for lv in loss_fn.candidates(preds, targets[1:])) == 0


def test_rectangular_input_candidates_match_brute_force():
    g = torch.Generator().manual_seed(5)
    loss_fn = build_loss(yolo_model(), {"loss": "dw"})
    h, w = 32, 96
    preds = [torch.randn(1, 3, h // s, w // s, 8, generator=g) for s in (8, 16, 32)]
    targets = torch.tensor([[0, 0, 0.3, 0.5, 0.25, 0.6]])
    for lv, p in zip(loss_fn.candidates(preds, targets), preds):
        ny, nx = p.shape[2:4]
        x1, y1, x2, y2 = 0.175 * nx, 0.2 * ny, 0.425 * nx, 0.8 * ny
        cells = {(j, i) for j in range(ny) for i in range(nx) if x1 < i + 0.5 < x2 and y1 < j + 0.5 < y2}
        assert set(zip(lv.gj.tolist(), lv.gi.tolist())) == cells and len(lv) == 3 * len(cells)
        assert torch.allclose(lv.box_xywh_cell[:, 0] + lv.gi, torch.full((len(lv),), 0.3 * nx))
        assert torch.allclose(lv.box_xywh_cell[:, 1] + lv.gj, torch.full((len(lv),), 0.5 * ny))
    loss, _ = loss_fn(preds, targets, torch.zeros(1, 3, h, w))
    assert torch.isfinite(loss)


def test_loss_decreases_with_an_optimiser_on_fixed_targets():
    g = torch.Generator().manual_seed(6)
    loss_fn = build_loss(yolo_model(), {"loss": "dw"})
    preds = [(torch.randn(2, 3, s, s, 8, generator=g) * 0.5).requires_grad_() for s in (8, 4, 2)]
    targets = make_targets(g, 2, 6, 3)
    opt = torch.optim.Adam(preds, lr=0.05)

    def best_scores():  # per object, the best consistency p = p_cls * p_loc over its candidates
        with torch.no_grad():
            cands = loss_fn.candidates(preds, targets)
            terms = loss_fn.pair_terms(loss_fn.candidate_rows(preds, cands), cands, preds)
            p = torch.sigmoid(terms.cls_logit) * torch.sigmoid(terms.obj_logit) * torch.exp(-5 * (1 - terms.giou))
            return torch.stack([p[terms.target == k].max() for k in range(len(targets))])

    start, history = best_scores(), []
    for _ in range(15):
        loss, items = loss_fn(preds, targets, torch.zeros(2, 3, 64, 64))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(items)
    assert all(torch.isfinite(v).all() for v in history)
    first, last = history[0], history[-1]
    # loc and neg fall; cls_pos need not: an object's weights sum to more (up to e^2) as p grows
    assert sum(last) < 0.5 * sum(first) and last[0] < first[0] and last[2] < first[2]
    assert (best_scores() > start).all()


def test_registry_and_hyp_file():
    assert LOSSES["dw"].__name__ == "ComputeLossDW"
    hyp = load_hyp("hyp.dw.yaml")
    assert hyp["loss"] == "dw" and hyp["dw_sigma"] == 1.11
    h = LOSSES["dw"].Hyp.from_hyp(hyp)
    assert (h.dw_loc_scale, h.dw_pos_weight, h.dw_neg_weight) == (5.0, 1.0, 1.0)
    with pytest.raises(HypError, match="belongs to loss 'yolov5'"):
        load_hyp({"loss": "dw", "anchor_t": 4.0})
    with pytest.raises(HypError, match="dw_sigma"):
        load_hyp({"loss": "dw", "dw_sigmaa": 1.0})
    with pytest.raises(ValueError, match="dw_sigma"):
        LOSSES["dw"].Hyp.from_hyp({"dw_sigma": 0.0})
