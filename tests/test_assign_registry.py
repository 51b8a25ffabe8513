"""The registry of matching rules: one signature on both heads, empty ground truth, one row per cell where
the dfl losses need it, ATSS on the anchor head against a plain-loop mmdetection transcription, SimOTA's
YOLOX candidates on the dfl head, and each rule's own hyp keys."""
import math

import pytest
import torch

from models.geometry import PriorGenerator
from utils.assign import ASSIGNERS
from utils.assign.priors import HeadPriors
from utils.assign.targets import Targets
from utils.assign.view import PredictionView
from utils.hyp import HypError, load_hyp

ANCHORS_PX = torch.tensor([[[10., 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]],
                           [[116, 90], [156, 198], [373, 326]]])
STRIDES = torch.tensor([8.0, 16.0, 32.0])


def head_priors(kind: str, img: int = 64, levels: int = 3) -> HeadPriors:
    anchors = (ANCHORS_PX / STRIDES.view(3, 1, 1))[:levels] if kind == "anchor" else None
    gen = PriorGenerator(STRIDES[:levels], anchors)
    return HeadPriors(kind, gen.levels([(img // int(s), img // int(s)) for s in STRIDES[:levels]]), gen)


class FakeView(PredictionView):
    """Every prior predicts ``box`` (xyxy px) with class probability ``p`` for every class."""

    def __init__(self, priors, box, p=0.5, nc=3):
        self.priors, self.box, self.p, self.nc = priors, torch.tensor(box), p, nc

    def rows(self, image, prior):
        return torch.zeros(len(prior), 5 + self.nc)

    def boxes_xyxy_px(self, rows, prior):
        return self.box.expand(len(prior), 4).clone()

    def class_probs(self, rows):
        return torch.full((len(rows), self.nc), self.p)


def px_targets(rows, img=64):
    """(image, class, x1, y1, x2, y2) pixel rows -> Targets of ``img`` px images."""
    t = torch.tensor(rows, dtype=torch.float32)
    xywh = torch.cat(((t[:, 2:4] + t[:, 4:6]) / 2, t[:, 4:6] - t[:, 2:4]), 1) / img
    return Targets.of_size(torch.cat((t[:, :2], xywh), 1), (img, img), int(t[:, 0].max()) + 1)


CASES = [(name, head) for name, rule in ASSIGNERS.items() for head in rule.heads]


@pytest.mark.parametrize("name,head", CASES)
def test_every_rule_on_its_heads_without_objects_gives_no_rows(name, head):
    priors = head_priors(head)
    empty = Targets.of_size(torch.zeros(0, 6), (64, 64), 2)
    view = FakeView(priors, [0.0, 0.0, 8.0, 8.0])
    out = ASSIGNERS[name]({})(priors, view, empty)
    assert len(out) == 3 and out.num_rows == 0 and out.num_targets == 0 and out.row_kind == ASSIGNERS[name].row_kind


@pytest.mark.parametrize("name", [n for n, r in ASSIGNERS.items() if "dfl" in r.heads])
def test_rules_on_the_dfl_head_give_one_row_per_cell_and_anchor_zero(name):
    g = torch.Generator().manual_seed(3)
    rows = []
    for k in range(8):
        wh = torch.rand(2, generator=g) * 40 + 6
        c = torch.rand(2, generator=g) * (64 - wh) + wh / 2
        rows.append((k % 2, k % 3, *(c - wh / 2).tolist(), *(c + wh / 2).tolist()))
    targets = px_targets(rows)
    priors = head_priors("dfl")
    out = ASSIGNERS[name]({})(priors, FakeView(priors, [20.0, 20.0, 40.0, 44.0], 0.3), targets)
    assert out.num_rows > 0
    for lv in out:
        keys = list(zip(lv.image.tolist(), lv.gj.tolist(), lv.gi.tolist()))
        assert len(set(keys)) == len(keys) and (lv.anchor == 0).all()
        assert (lv.image == targets.image[lv.target]).all() and (lv.cls == targets.cls[lv.target]).all()


def reference_atss_anchors(boxes, priors: HeadPriors, topk):
    """mmdetection's ATSSAssigner with the anchor boxes as priors and ``topk * na`` anchors ranked by centre
    distance per level (all anchors of a location tie, so that is the ``topk`` nearest locations), one image,
    plain Python. Returns {global prior: object}."""
    pri = []
    for lv in priors.levels:
        for a in range(lv.na):
            for gj in range(lv.ny):
                for gi in range(lv.nx):
                    w, h = (lv.anchors_grid[a] * lv.stride).tolist()
                    pri.append(((gi + 0.5) * lv.stride, (gj + 0.5) * lv.stride, w, h))

    def iou(p, b):
        iw = max(0.0, min(p[0] + p[2] / 2, b[2]) - max(p[0] - p[2] / 2, b[0]))
        ih = max(0.0, min(p[1] + p[3] / 2, b[3]) - max(p[1] - p[3] / 2, b[1]))
        return iw * ih / (p[2] * p[3] + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih)

    best = {}
    for g, b in enumerate(boxes):
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        cand = []
        for lv in priors.levels:
            idx = list(range(lv.start, lv.start + lv.na * lv.ny * lv.nx))
            idx.sort(key=lambda k: ((pri[k][0] - cx) ** 2 + (pri[k][1] - cy) ** 2, k))
            cand += idx[:min(topk, lv.ny * lv.nx) * lv.na]
        ious = [iou(pri[k], b) for k in cand]
        mean = sum(ious) / len(ious)
        std = math.sqrt(sum((v - mean) ** 2 for v in ious) / (len(ious) - 1))
        for k, v in zip(cand, ious):
            inside = min(pri[k][0] - b[0], pri[k][1] - b[1], b[2] - pri[k][0], b[3] - pri[k][1]) > 0.01
            if v >= mean + std and inside and (k not in best or v > best[k][0]):
                best[k] = (v, g)
    return {k: g for k, (v, g) in best.items()}


def test_atss_on_the_anchor_head_matches_a_plain_loop_transcription_of_mmdetection():
    g = torch.Generator().manual_seed(0)
    priors = head_priors("anchor", img=128)
    for trial in range(4):
        wh = torch.rand(6, 2, generator=g) * 90 + 4
        c = torch.rand(6, 2, generator=g) * (128 - wh) + wh / 2
        xyxy = torch.cat((c - wh / 2, c + wh / 2), 1)
        out = ASSIGNERS["atss"]({"atss_topk": 9})(priors, None, px_targets([(0, 0, *b) for b in xyxy.tolist()], 128))
        got = {}
        for lv, m in zip(priors.levels, out):
            for a, j, i, t in zip(m.anchor.tolist(), m.gj.tolist(), m.gi.tolist(), m.target.tolist()):
                got[lv.start + (a * lv.ny + j) * lv.nx + i] = t
            assert torch.equal(m.anchor_wh, lv.anchors_grid[m.anchor])  # the row's own anchor, grid units
        assert got and got == reference_atss_anchors(xyxy.tolist(), priors, 9), trial


def test_simota_on_the_dfl_head_takes_yolox_candidates_cheapest_first():
    """One level of stride 8 on a 64 px image, one object xyxy (16, 16, 48, 48). The cells whose centre is
    inside the box (x, y in 20, 28, 36, 44) are all within 2.5 strides (20 px) of its centre (32, 32), and
    the centre region adds none (12 and 52 are 20 px away, not strictly within): 16 candidates. Every
    prediction is the object's box (IoU 1), so dynamic k = int(10 * 1.0) = 10, every cost is equal and the
    10 lowest cells in raster order are positive."""
    priors = head_priors("dfl", levels=1)
    targets = px_targets([(0, 1, 16.0, 16.0, 48.0, 48.0)])
    out = ASSIGNERS["simota"]({})(priors, FakeView(priors, [16.0, 16.0, 48.0, 48.0]), targets)
    (lv,) = out
    inside = [(j, i) for j in range(2, 6) for i in range(2, 6)]
    assert list(zip(lv.gj.tolist(), lv.gi.tolist())) == inside[:10]
    assert (lv.target == 0).all() and (lv.cls == 1).all() and lv.weight is None
    # a radius of 1 stride (8 px) leaves only the 4 central cells in both regions: k = 10 still takes
    # them first, then 6 cells of the box alone (cost + 1e5), lowest first
    out = ASSIGNERS["simota"]({"ota_radius": 1.0})(priors, FakeView(priors, [16.0, 16.0, 48.0, 48.0]), targets)
    central = [(3, 3), (3, 4), (4, 3), (4, 4)]
    got = list(zip(out[0].gj.tolist(), out[0].gi.tolist()))
    assert got == sorted(central + [c for c in inside if c not in central][:6])  # rows in raster order


def test_targets_are_scaled_once_in_pixels():
    t = Targets.build(torch.tensor([[1, 2, 0.5, 0.25, 0.5, 0.5]]), torch.zeros(2, 3, 32, 64))
    assert t.img_hw == (32, 64) and t.bs == 2 and t.image.tolist() == [1] and t.cls.tolist() == [2]
    assert t.xywh_px.tolist() == [[32.0, 8.0, 32.0, 16.0]] and t.xyxy_px.tolist() == [[16.0, 0.0, 48.0, 16.0]]
    assert t.xywh_grid(4, 8).tolist() == [[4.0, 1.0, 4.0, 2.0]]  # stride 8


@pytest.mark.parametrize("hyp,words", [
    ({"loss": "yolov5", "assigner": "atss", "atss_topk": 0}, ["'atss_topk'", "(0, inf)"]),
    ({"loss": "yolov5", "assigner": "simota", "ota_topk": 0}, ["'ota_topk' must be >= 1"]),
    ({"loss": "yolov5", "assigner": "atss", "tal_topk": 5}, ["'tal_topk'", "rule 'tal'", "assigner: tal"]),
    ({"loss": "gfl", "assigner": "max_iou", "ssd_iou_thr": 1.5}, ["'ssd_iou_thr'", "[0, 1]"]),
])
def test_rule_keys_are_checked_with_their_rule(hyp, words):
    with pytest.raises(HypError) as e:
        load_hyp(hyp)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_rule_keys_reach_the_rule():
    from models.yolo import Model
    from utils.loss import build_loss

    model = Model("models/yolov5n.yaml", nc=3)
    fn = build_loss(model, load_hyp({"loss": "yolov5", "assigner": "tal", "tal_topk": 4, "tal_alpha": 1.0}))
    assert (fn.rule.hyp.tal_topk, fn.rule.hyp.tal_alpha, fn.rule.hyp.tal_beta) == (4, 1.0, 6.0)
