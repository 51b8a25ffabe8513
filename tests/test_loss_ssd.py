"""Strategy ``ssd``: hard negative mining counts, the assignment on hand-built priors (rectangular
input included), the objectness term against a hand computation, and behaviour without objects."""
import math

import pytest
import torch

from utils.hyp import HypError, load_hyp
from utils.loss import LOSSES, build_loss
from utils.loss.functional import hard_negative_mask
from fakes import fake_model




# --- hard_negative_mask -------------------------------------------------------------------------

def test_hard_negatives_are_ratio_times_positives_and_the_hardest():
    g = torch.Generator().manual_seed(0)
    loss = torch.rand(3, 100, generator=g)
    positive = torch.zeros(3, 100, dtype=torch.bool)
    positive[0, [3, 50]] = True  # 2 positives -> 6 negatives
    positive[1, :5] = True  # 5 -> 15
    neg = hard_negative_mask(loss, positive, 3.0)
    assert neg.sum(1).tolist() == [6, 15, 0]  # row 2 has no positive: SSD keeps no negative
    assert not (neg & positive).any()
    for b in range(2):
        candidates = loss[b].masked_fill(positive[b], -1)
        expected = candidates.topk(int(neg[b].sum())).indices
        assert sorted(neg[b].nonzero().squeeze(1).tolist()) == sorted(expected.tolist())


def test_hard_negatives_all_when_too_few_and_positives_never_selected():
    loss = torch.tensor([[9.0, 8.0, 7.0, 0.1, 0.2]])  # positives carry the largest losses
    positive = torch.tensor([[True, True, True, False, False]])
    neg = hard_negative_mask(loss, positive, 3.0)
    assert neg.tolist() == [[False, False, False, True, True]]


def test_hard_negatives_ties_take_the_lower_index_and_min_neg_floor():
    loss = torch.tensor([[0.5, 1.0, 0.5, 0.5, 0.5, 0.5]])
    positive = torch.tensor([[False, True, False, False, False, False]])
    assert hard_negative_mask(loss, positive, 2.0).tolist() == [[True, False, True, False, False, False]]
    none = torch.zeros(1, 6, dtype=torch.bool)
    assert hard_negative_mask(loss, none, 3.0, min_neg=2).tolist() == [[True, True, False, False, False, False]]
    assert hard_negative_mask(loss, positive, 0.5).sum() == 0  # floor(0.5 * 1) = 0


def test_hard_negatives_skip_the_ignore_band_and_keep_their_count():
    loss = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]])
    positive = torch.tensor([[False, False, False, False, False, False, False, True]])
    ignore = torch.tensor([[True, False, True, False, False, False, False, True]])  # overlaps a positive
    neg = hard_negative_mask(loss, positive, 3.0, ignore=ignore)
    assert neg.tolist() == [[False, True, False, True, True, False, False, False]]  # 3 = 3 x 1, hardest eligible
    # more wanted than eligible: all eligible, none of the ignored
    neg = hard_negative_mask(loss, positive, 10.0, ignore=ignore)
    assert neg.tolist() == [[False, True, False, True, True, True, True, False]]


@pytest.mark.parametrize("seed", range(4))
def test_hard_negatives_equal_a_stable_sort_on_tied_losses(seed):
    g = torch.Generator().manual_seed(seed)
    loss = torch.randint(0, 5, (4, 60), generator=g).float() / 4  # many exact ties
    positive = torch.rand(4, 60, generator=g) < 0.1
    positive[3] = False
    ratio, min_neg = [1.0, 3.0, 2.5, 7.0][seed], [0, 0, 4, 10][seed]
    got = hard_negative_mask(loss, positive, ratio, min_neg)
    for b in range(4):
        negatives = [i for i in range(60) if not positive[b, i]]
        k = min(max(int(int(positive[b].sum()) * ratio), min_neg), len(negatives))
        chosen = sorted(negatives, key=lambda i: (-loss[b, i].item(), i))[:k]
        assert got[b].nonzero().squeeze(1).tolist() == sorted(chosen)


# --- assignment ---------------------------------------------------------------------------------

def one_level_loss(hyp=None, nc=3, anchors_grid=((2.0, 2.0),), stride=8):
    anchors = torch.tensor([anchors_grid])  # (1, na, 2) grid units
    return build_loss(fake_model(nc, anchors, strides=(stride,)), {"loss": "ssd", **(hyp or {})})


def test_assign_rectangular_input_cell_and_box_grid_convention():
    loss_fn = one_level_loss()
    imgs = torch.zeros(2, 3, 32, 64)  # H 32, W 64 -> grid 4 x 8 at stride 8
    preds = [torch.zeros(2, 1, 4, 8, 8)]
    # a 16x16 px object centred on the centre of cell (gi 2, gj 2) = (20, 20) px, in image 1
    t = torch.tensor([[1, 2, 20 / 64, 20 / 32, 16 / 64, 16 / 32]])
    (lv,) = loss_fn.assign(preds, t, imgs)
    # the anchor there matches exactly; shifted neighbours overlap 1/3 < 0.5
    assert list(zip(lv.image.tolist(), lv.gj.tolist(), lv.gi.tolist())) == [(1, 2, 2)]
    assert lv.target.tolist() == [0] and lv.cls.tolist() == [2] and lv.anchor.tolist() == [0]
    assert lv.box_xywh_cell[0].tolist() == pytest.approx([0.5, 0.5, 2.0, 2.0])
    assert lv.anchor_wh.tolist() == [[2.0, 2.0]]


def test_assign_levels_and_forced_anchor_on_the_right_level():
    anchors = torch.tensor([[[1.0, 1.0]], [[1.0, 1.0]]])  # 8 px at P3, 16 px at P4
    loss_fn = build_loss(fake_model(2, anchors, strides=(8, 16)), {"loss": "ssd"})
    preds = [torch.zeros(1, 1, 4, 4, 7), torch.zeros(1, 1, 2, 2, 7)]
    t = torch.tensor([[0, 1, 0.5, 0.5, 14 / 32, 14 / 32]])  # 14 px at the image centre (16, 16)
    p3, p4 = loss_fn.assign(preds, t, torch.zeros(1, 3, 32, 32))
    # P3's four centre anchors (8 px) tie at 49/211 = 0.23, P4's (16 px) reach 49/403: the object is
    # forced onto the first of P3's ties, none passes 0.5
    assert len(p3) + len(p4) == 1
    assert len(p3) == 1 and (p3.gj.item(), p3.gi.item()) == (1, 1)
    assert p3.box_xywh_cell[0].tolist() == pytest.approx([1.0, 1.0, 1.75, 1.75])


# --- losses -------------------------------------------------------------------------------------

def bce0(x):
    return math.log1p(math.exp(x))


def test_objectness_is_positive_plus_hardest_negatives_over_positives():
    loss_fn = one_level_loss({"ssd_obj_iou": False, "ssd_min_neg": 0, "ssd_neg_pos_ratio": 3.0, "box": 0.0, "cls": 0.0})
    g = torch.Generator().manual_seed(1)
    preds = [torch.randn(1, 1, 4, 8, 8, generator=g)]
    t = torch.tensor([[0, 0, 20 / 64, 20 / 32, 16 / 64, 16 / 32]])
    loss, items = loss_fn(preds, t, torch.zeros(1, 3, 32, 64))
    logits = preds[0][0, 0, ..., 4].flatten().tolist()  # (4 * 8,)
    pos = 2 * 8 + 2
    negatives = sorted((bce0(x) for i, x in enumerate(logits) if i != pos), reverse=True)[:3]
    expected = bce0(-logits[pos]) + sum(negatives)  # one positive: N = 1
    assert items.tolist() == pytest.approx([0.0, expected, 0.0], rel=1e-5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ignore_band_keeps_the_positives_neighbours_out_of_mining():
    """A 16x16 px object on the anchor box of cell (2, 2): the anchor boxes of the four cells beside it
    overlap it 1/3 (8 of 16 px in one direction), so ssd_neg_iou_thr 0.3 takes them out of mining."""
    imgs = torch.zeros(1, 3, 64, 64)  # 8 x 8 cells at stride 8, one 16x16 px anchor
    t = torch.tensor([[0, 0, 20 / 64, 20 / 64, 16 / 64, 16 / 64]])
    preds = torch.full((1, 1, 8, 8, 8), -5.0)
    preds[0, 0, 2, [1, 3], 4] = 4.0  # left and right neighbours: the hardest negatives
    preds[0, 0, [1, 3], 2, 4] = 3.0  # above and below
    preds[0, 0, 6, 6, 4] = 2.0  # far from the object
    touched = {}
    for thr in (1.0, 0.3):
        p = preds.clone().requires_grad_()
        loss, _ = one_level_loss({"ssd_neg_pos_ratio": 3.0, "ssd_min_neg": 0, "ssd_neg_iou_thr": thr})([p], t, imgs)
        loss.backward()
        g = p.grad[0, 0, ..., 4]
        touched[thr] = sorted((j, i) for j, i in (g != 0).nonzero().tolist() if (j, i) != (2, 2))
    assert touched[1.0] == [(1, 2), (2, 1), (2, 3)]  # 3 x 1 positive: the two at 4.0, then the lower index at 3.0
    assert touched[0.3] == [(0, 0), (0, 1), (6, 6)]  # the 0.3 band skips all four: the far one, then index order


@pytest.mark.parametrize("ratio,obj_iou", [(3.0, False), (30.0, False), (3.0, True)])
def test_objectness_that_cannot_tell_positives_from_mined_negatives_settles_at_target_over_1_plus_ratio(
        ratio, obj_iou):
    """The collapse README's ssd notes measure on BCCD: when every anchor gets the same objectness (a
    model that cannot tell its positives from the negatives mining finds), the loss is stationary at
    sigmoid = target / (1 + ratio) and pulls towards it from either side."""
    loss_fn = one_level_loss({"ssd_obj_iou": obj_iou, "ssd_min_neg": 0, "ssd_neg_pos_ratio": ratio,
                              "box": 0.0, "cls": 0.0})
    t = torch.tensor([[0, 0, 20 / 64, 20 / 64, 16 / 64, 16 / 64]])  # on the anchor box of one cell: 1 positive
    imgs = torch.zeros(1, 3, 64, 64)  # 8 x 8 cells, 63 negatives >= 30 x 1
    target = 1.0  # zero box logits decode to the anchor box, which equals the object: IoU 1 either way

    def grad_at(p):
        z = torch.tensor(math.log(p / (1 - p)), dtype=torch.float64, requires_grad=True)
        pred = torch.zeros(1, 1, 8, 8, 8, dtype=torch.float64)
        pred[..., 4] = 1.0
        loss, _ = loss_fn([pred * z], t, imgs)  # every objectness logit is z; the box logits stay 0
        loss.backward()
        return z.grad.item()

    p_eq = target / (1 + ratio)
    assert grad_at(p_eq) == pytest.approx(0.0, abs=1e-6)  # CIoU of identical boxes is 1 up to its eps
    assert grad_at(p_eq * 0.8) < 0 < grad_at(p_eq * 1.2)


def test_no_objects_gives_a_finite_loss_with_gradient_from_min_neg():
    anchors = torch.rand(3, 3, 2) + 0.5
    preds = [torch.randn(2, 3, s, s, 8, requires_grad=True) for s in (8, 4, 2)]
    imgs = torch.zeros(2, 3, 64, 64)
    loss, items = build_loss(fake_model(3, anchors), {"loss": "ssd"})(preds, torch.zeros(0, 6), imgs)
    assert torch.isfinite(loss) and items[0] == 0 and items[2] == 0 and items[1] > 0
    loss.backward()
    touched = sum(int((p.grad[..., 4] != 0).sum()) for p in preds)
    assert touched == 2 * 16  # ssd_min_neg hardest negatives per image
    assert all(torch.isfinite(p.grad).all() for p in preds)
    ssd_loss, _ = build_loss(fake_model(3, anchors), {"loss": "ssd", "ssd_min_neg": 0})(
        preds, torch.zeros(0, 6), imgs)
    assert ssd_loss.item() == 0.0  # the SSD rule: no positives, no negatives


def test_loss_decreases_with_an_optimiser_on_fixed_targets():
    g = torch.Generator().manual_seed(0)
    anchors = torch.tensor([[[1.25, 1.625], [2.0, 3.75], [4.125, 2.875]],
                            [[1.875, 3.8125], [3.875, 2.8125], [3.6875, 7.4375]],
                            [[3.625, 2.8125], [4.875, 6.1875], [11.65625, 10.1875]]])
    loss_fn = build_loss(fake_model(3, anchors), {"loss": "ssd"})
    imgs = torch.zeros(2, 3, 96, 128)  # rectangular
    preds = [(torch.randn(2, 3, 96 // s, 128 // s, 8, generator=g) * 0.5).requires_grad_() for s in (8, 16, 32)]
    xy = torch.rand(6, 2, generator=g) * 0.8 + 0.1
    wh = torch.rand(6, 2, generator=g) * 0.3 + 0.05
    t = torch.cat((torch.tensor([0, 0, 0, 1, 1, 1.0])[:, None], torch.randint(0, 3, (6, 1), generator=g).float(),
                   xy, wh), 1)
    opt = torch.optim.Adam(preds, lr=0.1)
    history = []
    for _ in range(25):
        loss, items = loss_fn(preds, t, imgs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(items)
    assert all(torch.isfinite(v).all() for v in history)
    first, last = history[0], history[-1]
    assert sum(last) < 0.6 * sum(first) and (last < first).all()  # box, obj and cls each fall


def test_registry_and_hyp_file():
    assert "ssd" in LOSSES and LOSSES["ssd"].__name__ == "ComputeLossSSD"
    hyp = load_hyp("hyp.ssd.yaml")
    assert hyp["loss"] == "ssd" and hyp["ssd_iou_thr"] == 0.5 and hyp["ssd_neg_pos_ratio"] == 30.0
    assert LOSSES["ssd"].Hyp.from_hyp(hyp).ssd_min_neg == 16
    with pytest.raises(HypError, match="belongs to loss 'yolov5'"):
        load_hyp({"loss": "ssd", "anchor_t": 4.0})
    with pytest.raises(HypError, match="must be true or false"):
        load_hyp({"loss": "ssd", "ssd_obj_iou": 1})
    assert hyp["ssd_neg_iou_thr"] == 1.0  # the ignore band is off: SSD mines among all negatives
    with pytest.raises(HypError, match="ssd_neg_iou_thr"):
        load_hyp({"loss": "ssd", "ssd_neg_iou_thr": 1.5})
