"""Strategy ``freeanchor``: the three FreeAnchor functions against plain-loop transcriptions of the
reference formulas (zhangxiaosong18/FreeAnchor ``free_anchor_loss.py``, mmdetection
``free_anchor_retina_head.py``), the fused negative term and the sparse matching against their dense
forms, hand-built bags, images without objects, and the loss falling under an optimiser."""
import math

import pytest
import torch

from utils.hyp import HypError, load_hyp
from utils.loss import LOSSES, build_loss
from utils.loss.freeanchor import ComputeLossFreeAnchor, _FlatPreds
from utils.loss import functional
from utils.loss.functional import focal_negative_sum, negative_bag_loss, positive_bag_loss, saturated_linear
from fakes import fake_model




YOLO_ANCHORS_PX = torch.tensor([[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                                [116, 90, 156, 198, 373, 326]], dtype=torch.float32).view(3, 3, 2)


def three_level_loss(nc=3, hyp=None):
    anchors = YOLO_ANCHORS_PX / torch.tensor([8.0, 16.0, 32.0]).view(3, 1, 1)
    return build_loss(fake_model(nc, anchors), {"loss": "freeanchor", **(hyp or {})})


def random_batch(bs, height, width, nc, n, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    preds = [torch.randn(bs, 3, height // s, width // s, 5 + nc, generator=g) * scale for s in (8, 16, 32)]
    t = torch.cat([torch.randint(0, bs, (n, 1), generator=g).float(), torch.randint(0, nc, (n, 1), generator=g).float(),
                   torch.rand(n, 2, generator=g) * 0.6 + 0.2, torch.rand(n, 2, generator=g) * 0.3 + 0.05], 1)
    return preds, t, torch.zeros(bs, 3, height, width)


# --- the reference functions, written out element by element ----------------------------------

def ref_positive_bag_loss(bag):
    out = []
    for row in bag.tolist():
        w = [1 / max(1 - p, 1e-12) for p in row]
        mean_max = sum(wi * p for wi, p in zip(w, row)) / sum(w)
        out.append(-max(math.log(mean_max), -100) if mean_max > 0 else 100.0)
    return torch.tensor(out, dtype=torch.float64)


def ref_negative_bag_loss(prob, gamma):
    out = []
    for p in prob.flatten().tolist():
        p = min(max(p, 1e-12), 1 - 1e-12)
        out.append(p ** gamma * -max(math.log1p(-p), -100) if p < 1 else p ** gamma * 100)
    return torch.tensor(out, dtype=torch.float64).view(prob.shape)


def ref_saturated_linear(iou, thr):
    out = []
    for row in iou.tolist():
        best = max(row)
        out.append([0.0 if best <= thr else min(max((x - thr) / (best - thr), 0.0), 1.0) for x in row])
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("seed", range(3))
def test_positive_bag_loss_equals_the_reference(seed):
    g = torch.Generator().manual_seed(seed)
    bag = torch.rand(7, 50, generator=g) ** 3
    bag[0, 3] = 1.0  # a member at 1: clamped weight 1e12, the bag probability is 1
    bag[1] = 0.0  # an empty bag: BCE's log clamp
    got = positive_bag_loss(bag.double())
    assert got.shape == (7,)
    assert torch.allclose(got, ref_positive_bag_loss(bag.double()).double(), rtol=1e-9, atol=1e-9)
    assert got[0].item() == pytest.approx(0.0, abs=1e-9) and got[1].item() == pytest.approx(100.0)


def test_positive_bag_loss_is_mean_for_flat_bags_and_max_for_a_perfect_member():
    flat = torch.full((1, 50), 0.3)
    assert positive_bag_loss(flat).item() == pytest.approx(-math.log(0.3), rel=1e-6)
    bag = torch.full((1, 50), 0.05)
    bag[0, 17] = 0.999
    # weights 1/(1-p): the perfect member counts 950x more than each other, the bag is close to its p
    assert positive_bag_loss(bag).item() < -math.log(0.95)
    assert positive_bag_loss(bag).item() > -math.log(0.999)


@pytest.mark.parametrize("gamma", [2.0, 1.5, 0.0])
def test_negative_bag_loss_equals_the_reference(gamma):
    g = torch.Generator().manual_seed(1)
    prob = torch.rand(4, 5, 6, generator=g).double()
    prob[0, 0, :3] = torch.tensor([0.0, 1.0, 1e-15])  # clamped away from 0 and 1
    got = negative_bag_loss(prob, gamma)
    assert got.shape == prob.shape and torch.isfinite(got).all()
    assert torch.allclose(got, ref_negative_bag_loss(prob, gamma).double(), rtol=1e-9, atol=1e-12)


def test_saturated_linear_equals_the_reference_and_edge_rows():
    g = torch.Generator().manual_seed(2)
    iou = torch.rand(6, 40, generator=g, dtype=torch.float64)
    iou[1] *= 0.5  # best below the threshold: all 0
    iou[2] = iou[2] * 0.5 + 0.1
    iou[2, 5] = 0.6  # best exactly at the threshold: all 0 (the reference would give 0/0)
    got = saturated_linear(iou, 0.6)
    assert torch.allclose(got, ref_saturated_linear(iou, 0.6), atol=1e-12)
    assert (got[1] == 0).all() and (got[2] == 0).all()
    assert (got.max(1).values[[0, 3, 4, 5]] == 1).all()
    assert saturated_linear(torch.zeros(3, 0), 0.6).shape == (3, 0)


@pytest.mark.parametrize("chunk", [7 * 12, 1 << 18])  # several chunks with a ragged last one; one chunk
@pytest.mark.parametrize("nc", [6, 12])  # class-major and row-major work buffers
def test_focal_negative_sum_equals_autograd_through_negative_bag_loss(monkeypatch, chunk, nc):
    monkeypatch.setattr(functional, "_FOCAL_NEG_CHUNK", chunk)
    assert (nc <= functional._FOCAL_NEG_CLASS_MAJOR) == (nc == 6)
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 3, 5, 5 + nc, generator=g) * 4).double()  # (bs, anchors..., 5 + nc)
    x[0, 0, 0, 4:] = -40.0  # p below the clamp: ~1e-52 here, exactly 0 in the reference
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    fused = focal_negative_sum(a, 2.0)
    plain = negative_bag_loss(b[..., 4:5].sigmoid() * b[..., 5:].sigmoid(), 2.0).sum()
    (fused * 3).backward()
    (plain * 3).backward()
    assert fused.item() == pytest.approx(plain.item(), rel=1e-12)
    assert torch.allclose(a.grad, b.grad, rtol=1e-9, atol=1e-15)
    assert (a.grad[..., :4] == 0).all()
    with torch.no_grad():  # the value-only path
        assert focal_negative_sum(x, 2.0).item() == pytest.approx(plain.item(), rel=1e-12)
    # picked rows (repeats included) carry their own gradient into the same buffer
    idx, ci = torch.tensor([0, 7, 7, 29]), torch.tensor([1, 0, nc - 1, 2])
    c = x.clone().requires_grad_()
    d = x.clone().requires_grad_()
    total, picked = focal_negative_sum(c, 2.0, rows=idx, cls=ci)
    rows_d = d.reshape(-1, 5 + nc)[idx]
    expect = torch.cat((rows_d[:, :5], rows_d[torch.arange(4), 5 + ci][:, None]), 1)
    assert torch.equal(picked, expect.detach())
    (total + (picked ** 2 * torch.arange(1.0, 7.0, dtype=x.dtype)).sum() * 0.5).backward()
    plain = negative_bag_loss(d[..., 4:5].sigmoid() * d[..., 5:].sigmoid(), 2.0).sum()
    (plain + (expect ** 2 * torch.arange(1.0, 7.0, dtype=x.dtype)).sum() * 0.5).backward()
    assert torch.allclose(c.grad, d.grad, rtol=1e-9, atol=1e-15)
    for gamma in (1.0, 1.5):
        c = x.clone().requires_grad_()
        d = x.clone().requires_grad_()
        focal_negative_sum(c, gamma).backward()
        negative_bag_loss(d[..., 4:5].sigmoid() * d[..., 5:].sigmoid(), gamma).sum().backward()
        assert torch.allclose(c.grad, d.grad, rtol=1e-9, atol=1e-15)


def test_focal_negative_sum_half_input_empty_input_and_one_backward():
    x = torch.randn(1, 3, 4, 4, 9)
    h = x.half().requires_grad_()
    val = focal_negative_sum(h)
    assert val.dtype == torch.float32
    val.backward()
    assert h.grad.dtype == torch.float16
    assert val.item() == pytest.approx(focal_negative_sum(x.half().float()).item(), rel=1e-6)
    empty = torch.zeros(2, 3, 0, 0, 9, requires_grad=True)
    v = focal_negative_sum(empty)
    v.backward()
    assert v.item() == 0 and empty.grad.shape == empty.shape
    y = x.clone().requires_grad_()
    v = focal_negative_sum(y)
    v.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward called twice"):
        v.backward()


# --- the strategy ------------------------------------------------------------------------------

def test_registered_and_hyp_file_validates():
    assert LOSSES["freeanchor"] is ComputeLossFreeAnchor
    hyp = load_hyp("hyp.freeanchor.yaml")
    assert (hyp["fa_bag_size"], hyp["fa_iou_thr"], hyp["fa_alpha"], hyp["fa_gamma"]) == (9, 0.6, 0.5, 2.0)
    with pytest.raises(HypError, match="fa_bag_size"):
        load_hyp({**hyp, "fa_bag_size": 2.5})
    with pytest.raises(HypError, match="fa_bag_siz"):
        load_hyp({**hyp, "fa_bag_siz": 50})


def test_matched_class_prob_equals_the_dense_reference_formula():
    loss_fn = three_level_loss(nc=4, hyp={"fa_iou_thr": 0.4})
    preds, t, imgs = random_batch(3, 64, 96, 4, 30, seed=4, scale=0.3)
    flat, pri = _FlatPreds(preds), loss_fn.anchor_boxes(preds)
    bags = loss_fn.bags(preds, t, imgs)
    keys, values = loss_fn.matched_class_prob(flat, pri, bags)
    # dense: decode all, IoU of every object with every prediction of its image, saturated linear,
    # max over the objects of each class (the reference's sparse max)
    from utils.boxes import box_iou, xywh2xyxy
    from utils.assign.free_anchor import decode_xyxy
    pred_xyxy = decode_xyxy(flat.box_logits, pri)
    dense = torch.zeros(3, flat.m, 4)
    for i in range(len(t)):
        b, c = int(t[i, 0]), int(t[i, 1])
        iou = box_iou(xywh2xyxy(bags.box_xywh_px[i:i + 1]), pred_xyxy[b])
        dense[b, :, c] = torch.maximum(dense[b, :, c], saturated_linear(iou, 0.4)[0])
    nz = dense.flatten().nonzero().squeeze(1)
    assert len(nz) > 20
    assert keys.tolist() == nz.tolist()
    assert torch.allclose(values, dense.flatten()[nz], atol=1e-5)


def test_loss_equals_the_dense_formula():
    loss_fn = three_level_loss(nc=3, hyp={"fa_gain": 1.0, "fa_bag_size": 50})
    preds, t, imgs = random_batch(2, 64, 64, 3, 5, seed=5)
    preds = [p.double().requires_grad_() for p in preds]
    loss, items = loss_fn(preds, t, imgs)
    loss.backward()
    fused_grads = [p.grad.clone() for p in preds]
    for p in preds:
        p.grad = None
    flat, pri = _FlatPreds(preds), loss_fn.anchor_boxes(preds)
    bags = loss_fn.bags(preds, t, imgs)
    keys, values = loss_fn.matched_class_prob(flat, pri, bags)
    box_prob = torch.zeros(2 * flat.m * 3)
    box_prob[keys] = values
    p = torch.cat([x[..., 4:5].sigmoid() * x[..., 5:].sigmoid() for x in flat.levels], 1)  # (bs, m, nc)
    neg = negative_bag_loss(p * (1 - box_prob.view(p.shape)), 2.0).sum() / (5 * bags.member.shape[1])
    j = bags.member.reshape(-1)
    k = bags.member.shape[1]
    rows = flat.rows(bags.image.repeat_interleave(k), j, pri.level[j], bags.cls.repeat_interleave(k))
    pos = positive_bag_loss(loss_fn.bag_probs(rows, pri, bags)).mean()
    assert items.tolist() == pytest.approx([0.5 * pos.item(), 0.5 * neg.item()], rel=1e-5)
    assert loss.item() == pytest.approx(2 * (0.5 * pos.item() + 0.5 * neg.item()), rel=1e-5)
    # and the gradient: the fused negative sum + picked rows equal autograd through the dense formula
    (2 * (0.5 * pos + 0.5 * neg)).backward()
    for got, p in zip(fused_grads, preds):
        assert torch.allclose(got, p.grad, rtol=1e-5, atol=1e-8)  # _FlatPreds works in float32


def one_level_loss(nc=2, hyp=None):
    anchors = torch.tensor([[[2.0, 2.0]]])  # one anchor of 16x16 px at stride 8
    return build_loss(fake_model(nc, anchors, strides=(8,)), {"loss": "freeanchor", **(hyp or {})})


def test_bag_is_the_highest_iou_anchors_and_far_anchors_get_no_positive_gradient():
    loss_fn = one_level_loss(hyp={"fa_bag_size": 4})
    imgs = torch.zeros(1, 3, 64, 128)  # rectangular: grid 8 x 16
    preds = [torch.zeros(1, 1, 8, 16, 7, requires_grad=True)]
    t = torch.tensor([[0, 1, 36 / 128, 28 / 64, 16 / 128, 16 / 64]])  # 16 px box on cell (4, 3)'s prior
    (lv,) = loss_fn.assign(preds, t, imgs)
    # prior (4, 3) is the object itself (IoU 1); its 4 neighbours tie at 128/384, any 3 complete the bag
    cells = list(zip(lv.gi.tolist(), lv.gj.tolist()))
    assert cells[0] == (4, 3)
    assert set(cells[1:]) < {(3, 3), (5, 3), (4, 2), (4, 4)}
    assert lv.box_xywh_cell[0].tolist() == pytest.approx([36 / 8 - lv.gi[0].item(), 28 / 8 - 3, 2.0, 2.0])
    weights = [m.weight for m in loss_fn.assign(preds, t, imgs)]
    assert weights[0].sum().item() == pytest.approx(1.0)
    # positive term only: a prior far from the object gets no gradient at all
    pos_only = one_level_loss(hyp={"fa_bag_size": 4, "fa_alpha": 1.0})
    loss, _ = pos_only(preds, t, imgs)
    loss.backward()
    grad = preds[0].grad[0, 0].abs().sum(-1)  # (8, 16)
    members = set(zip(lv.gj.tolist(), lv.gi.tolist()))
    assert all(grad[gj, gi] > 0 for gj, gi in members)
    assert grad.sum() == pytest.approx(sum(grad[gj, gi].item() for gj, gi in members))
    assert grad[7, 15] == 0


def test_a_perfect_member_dominates_its_bag():
    loss_fn = one_level_loss(hyp={"fa_bag_size": 6})
    imgs = torch.zeros(1, 3, 64, 64)
    t = torch.tensor([[0, 0, 36 / 64, 28 / 64, 16 / 64, 16 / 64]])  # centre of cell (4, 3) exactly
    raw = torch.full((1, 1, 8, 8, 6), -4.0)
    raw[..., :4] = 0.0  # every prediction = its prior box: 16 px at the cell centre
    raw[0, 0, 3, 4, 4:6] = 8.0  # the anchor on the object is confident of class 0
    preds = [raw]
    (w,) = [m.weight for m in loss_fn.assign(preds, t, imgs)]
    (lv,) = loss_fn.assign(preds, t, imgs)
    best = ((lv.gi == 4) & (lv.gj == 3)).nonzero().item()
    assert w[best] > 0.9 and w.sum().item() == pytest.approx(1.0)
    loss, items = loss_fn(preds, t, imgs)
    # P_loc = 1 there (the prediction is the object), p = sigmoid(8)^2: the bag probability is close
    # to it, far above the mean over the bag
    p = torch.sigmoid(torch.tensor(8.0)) ** 2
    assert items[0].item() / (0.5 * 0.1) < -math.log(0.9 * p)


def test_images_without_objects_give_the_negative_term_with_gradients():
    loss_fn = three_level_loss(nc=3)
    preds, t, imgs = random_batch(2, 64, 96, 3, 4, seed=6)
    preds = [p.requires_grad_() for p in preds]
    loss, items = loss_fn(preds, t[:0], imgs)
    assert torch.isfinite(loss) and items[0] == 0 and items[1] > 0
    loss.backward()
    for p in preds:
        assert torch.isfinite(p.grad).all()
        assert p.grad[..., 4:].abs().sum() > 0  # objectness and classes learn "no object"
        assert p.grad[..., :4].abs().sum() == 0
    # a batch where only image 0 has objects: image 1 still gets negative gradients
    t0 = t.clone()
    t0[:, 0] = 0
    for p in preds:
        p.grad = None
    loss, _ = loss_fn(preds, t0, imgs)
    loss.backward()
    assert all(p.grad[1, ..., 4:].abs().sum() > 0 for p in preds)


def test_extreme_logits_stay_finite():
    loss_fn = three_level_loss(nc=2)
    preds, t, imgs = random_batch(2, 64, 64, 2, 4, seed=7, scale=60.0)
    preds = [p.requires_grad_() for p in preds]
    loss, items = loss_fn(preds, t, imgs)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in preds)


def test_loss_falls_under_an_optimiser_on_a_fixed_batch():
    torch.manual_seed(0)
    loss_fn = three_level_loss(nc=3, hyp={"fa_gain": 1.0})
    preds, t, imgs = random_batch(2, 64, 96, 3, 6, seed=8, scale=0.1)
    for p, s in zip(preds, (8, 16, 32)):
        p[..., 4] -= math.log((96 / s) * (64 / s) / 8)  # YOLOv5's objectness prior
    preds = [p.requires_grad_() for p in preds]
    opt = torch.optim.Adam(preds, lr=0.1)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss, _ = loss_fn(preds, t, imgs)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert all(math.isfinite(x) for x in losses)
