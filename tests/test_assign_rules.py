"""The matching rules of utils/assign/ in mmdetection's style: exact rows on tiny hand-built cases,
empty ground truth, and objects without candidates. (ATSS: test_assign_atss.py; SSD's per-image
max-IoU rule: test_assign_max_iou.py; SimOTA's conflicts and ties: test_loss_ota.py.)"""
import math

import torch

from models.geometry import PriorGenerator
from utils.assign.centre_prior import centre_candidates
from utils.assign.free_anchor import Bags, anchor_bags, highest_first, matched_class_prob
from utils.assign.max_iou import max_iou_assign
from utils.assign.simota import simota_match
from utils.assign.yolo_candidates import yolo_candidates

ONE_ANCHOR = torch.ones(1, 1, 2)  # one level, one anchor of 1x1 cells


def cells(m):
    return list(zip(m.gi.tolist(), m.gj.tolist()))


def test_yolo_candidates_worked_example():
    """Docstring example: a 1x1 target at grid (1.3, 2.8) of a 4x4 grid -> own cell, left, down."""
    t = torch.tensor([[0, 2, 1.3 / 4, 2.8 / 4, 0.25, 0.25]])
    (m,) = yolo_candidates(t, ONE_ANCHOR, [(4, 4)])
    assert cells(m) == [(1, 2), (0, 2), (1, 3)]
    assert m.target.tolist() == [0, 0, 0] and m.cls.tolist() == [2, 2, 2] and m.anchor.tolist() == [0, 0, 0]
    assert torch.allclose(m.box_xywh_cell, torch.tensor([[0.3, 0.8, 1, 1], [1.3, 0.8, 1, 1], [0.3, -0.2, 1, 1]]), atol=1e-6)


def test_yolo_candidates_empty_and_no_candidate():
    (m,) = yolo_candidates(torch.zeros(0, 6), ONE_ANCHOR, [(4, 4)])
    assert len(m) == 0 and m.box_xywh_cell.shape == (0, 4)
    big = torch.tensor([[0, 0, 0.5, 0.5, 2.0, 2.0]])  # 8x8 cells against a 1x1 anchor: ratio 8 > anchor_t 4
    (m,) = yolo_candidates(big, ONE_ANCHOR, [(4, 4)])
    assert len(m) == 0


def test_simota_worked_example_and_empty():
    """Docstring example: IoU rows [0.9, 0.8, 0] and [0, 0.7, 0.6], cost -3 log IoU: k = 1 each."""
    iou = torch.tensor([[0.9, 0.8, 0.0], [0.0, 0.7, 0.6]])
    cost = -3 * torch.log(iou + 1e-8)
    matched, fg = simota_match(cost, iou, torch.tensor([0, 0]), torch.ones(1, 3, dtype=torch.bool))
    assert fg.tolist() == [[True, True, False]] and matched[0, :2].tolist() == [0, 1]
    matched, fg = simota_match(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, dtype=torch.long),
                               torch.ones(2, 3, dtype=torch.bool))
    assert not fg.any() and fg.shape == (2, 3)


def test_simota_target_without_valid_columns_takes_nothing():
    """Image 1 has no candidate columns: its target's k = 1 finds no valid column."""
    iou = torch.tensor([[0.9, 0.0], [0.0, 0.0]])
    cost = torch.tensor([[0.1, float("inf")], [float("inf"), float("inf")]])
    valid = torch.tensor([[True, False], [False, False]])
    matched, fg = simota_match(cost, iou, torch.tensor([0, 1]), valid)
    assert fg.tolist() == [[True, False], [False, False]] and matched[0, 0] == 0


def test_centre_candidates_worked_example_empty_and_tiny():
    """Docstring example: x 0.6..2.4, y 1.2..1.8 on a 4x4 grid holds only the centre of cell (1, 1),
    offered to all 3 anchors; a box between centres (x 0.9..1.1) has none."""
    anchors = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]])
    t = torch.tensor([[1, 2, 1.5 / 4, 1.5 / 4, 1.8 / 4, 0.6 / 4], [0, 0, 1.0 / 4, 1.5 / 4, 0.2 / 4, 2.0 / 4]])
    (m,) = centre_candidates(t, anchors, [(4, 4)])
    assert cells(m) == [(1, 1)] * 3 and m.anchor.tolist() == [0, 1, 2]
    assert m.image.tolist() == [1, 1, 1] and m.target.tolist() == [0, 0, 0] and m.cls.tolist() == [2, 2, 2]
    assert torch.allclose(m.box_xywh_cell, torch.tensor([[0.5, 0.5, 1.8, 0.6]]).expand(3, 4))
    assert torch.equal(m.anchor_wh, anchors[0])
    (m,) = centre_candidates(torch.zeros(0, 6), anchors, [(4, 4)])
    assert len(m) == 0


def test_max_iou_assign_per_image_and_empty():
    anchors = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20]])
    gt = torch.tensor([[0.0, 0, 10, 10], [9, 9, 11, 11], [10, 0, 20, 10]])
    anchor, target, best = max_iou_assign(gt, torch.tensor([0, 0, 2]), anchors, bs=3)
    # image 0: gt 0 takes anchor 0 (IoU 1); gt 1 overlaps everything a little, its best is anchor 0 too
    # (first maximum), and rule 1 gives a shared best anchor to the later object; image 1 has no objects;
    # image 2: gt 2 on anchor 1
    assert anchor.tolist() == [0, 1] and target.tolist() == [1, 2]
    # iou: anchor 0 serves gt 1 (a 1x1 px overlap, 1 / 103); background anchors 1 and 2 touch gt 1 in
    # a 1x1 px corner (their largest IoU, 1 / 103); image 1 has no objects; image 2: anchor 1 is gt 2
    assert torch.allclose(best, torch.tensor([[1 / 103, 1 / 103, 1 / 103], [0, 0, 0], [0, 1.0, 0]]))
    anchor, target, _ = max_iou_assign(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), anchors, bs=2)
    assert anchor.numel() == 0 and target.numel() == 0


def test_freeanchor_bags_worked_example():
    """Docstring example: stride 8, 4x4 cells, one 16x16 px anchor, a 16x16 px object centred on the
    corner of cells (1..2, 1..2): the four IoU-0.391 priors, then the lowest two of eight at 0.103."""
    levels = PriorGenerator(torch.tensor([8.0]), torch.tensor([[[2.0, 2.0]]])).levels([(4, 4)])
    box = torch.tensor([[16.0, 16.0, 16.0, 16.0]])
    assert anchor_bags(box, levels, 6).tolist() == [[5, 6, 9, 10, 1, 2]]
    assert anchor_bags(torch.zeros(0, 4), levels, 6).shape == (0, 6)


def test_highest_first_orders_ties_by_index_zeros_included():
    v = torch.tensor([[0.0, 0.5, 0.25, 0.5, 0.0, 1e-40]])
    assert highest_first(v, 6).tolist() == [[1, 3, 2, 5, 0, 4]]


def test_matched_class_prob_exact_pair_and_unreachable_threshold():
    """One prior predicting exactly its own anchor box (logits 0: centre at the cell centre, wh = anchor)
    on an object equal to it: IoU 1 -> P = 1 at (image 0, prior 0, class 2), nothing else above 0.6."""
    gen = PriorGenerator(torch.tensor([8.0]), torch.tensor([[[2.0, 2.0]]]))
    levels, pri = gen.levels([(2, 2)]), gen.anchor_boxes([(2, 2)])
    bags = Bags(image=torch.tensor([0]), cls=torch.tensor([2]), box_xywh_px=torch.tensor([[4.0, 4.0, 16.0, 16.0]]),
                member=torch.zeros(1, 1, dtype=torch.long))
    box_logits = torch.zeros(1, 4, 4)
    keys, values = matched_class_prob(box_logits, pri, levels, bags, nc=3, thr=0.6)
    assert keys.tolist() == [0 * 3 + 2] and math.isclose(values.item(), 1.0, rel_tol=1e-6)
    empty = Bags(image=torch.zeros(0, dtype=torch.long), cls=torch.zeros(0, dtype=torch.long),
                 box_xywh_px=torch.zeros(0, 4), member=torch.zeros(0, 1, dtype=torch.long))
    keys, values = matched_class_prob(box_logits, pri, levels, empty, nc=3, thr=0.6)
    assert keys.numel() == 0 and values.numel() == 0
