"""Task-aligned assigner (utils/assign/tal.py): hand-built cases with the exact expected positives and
soft targets (ties, overlapping objects, an object with no candidate cell, empty images), and equality
with a dense one-image-at-a-time transcription of YOLOv8's assigner on random predictions.

Pinned reference behaviour (ultralytics ``TaskAlignedAssigner`` as ``v8DetectionLoss`` builds it: topk
10, alpha 0.5, beta 6.0, eps 1e-9): candidates are cells whose centre lies strictly inside the object;
t = s^alpha * CIoU^beta (CIoU clamped at 0); top-k t per object; a cell claimed by several objects goes
to the object with the largest CIoU among all objects containing it (claimant or not); soft target
t * max(u) / (max(t) + eps) over the object's positives. Deviations: equal t go to the lower cell index
(YOLOv8 leaves it to torch.topk), and t = 0 pairs are dropped (YOLOv8 keeps them with target 0, which
changes no loss).

All cases: one level of stride 8 on a 32x32 image (4x4 cells, cell index gj * 4 + gi, centres at 4,
12, 20, 28 px) unless said otherwise.
"""
import pytest
import torch

from utils.assign.tal import TAL_EPS, dense_predictor, tal_assign
from utils.boxes import bbox_iou

FAR = (100.0, 100.0, 101.0, 101.0)  # a predicted box with CIoU < 0 (u = 0) against every object here


def px_targets(rows, img=32):
    """[(image, cls, x1, y1, x2, y2) pixels] -> (n, 6) loader targets, xywh normalised."""
    t = torch.tensor(rows, dtype=torch.float32).view(-1, 6)
    xywh = torch.cat(((t[:, 2:4] + t[:, 4:6]) / 2, t[:, 4:6] - t[:, 2:4]), 1) / img
    return torch.cat((t[:, :2], xywh), 1)


def predictions(bs=1, n=16, nc=3, box=FAR, score=1.0):
    """Every cell predicting ``box`` (xyxy px) with class scores ``score``: (bs, n, nc), (bs, n, 4)."""
    return torch.full((bs, n, nc), score), torch.tensor(box).repeat(bs, n, 1)


def run(targets, scores, boxes, topk=10, shapes=((4, 4),), strides=(8.0,), img=32):
    return tal_assign(targets, list(shapes), list(strides), (img, img), dense_predictor(scores, boxes), scores.shape[0],
                      topk, 0.5, 6.0)


def rows(level):
    """(image, cell, target row) of every positive, in the order returned."""
    return list(zip(level.image.tolist(), (level.gj * 4 + level.gi).tolist(), level.target.tolist()))


def test_worked_example_ties_go_to_the_lower_cell():
    # docstring example: object (0, 0, 16, 16) has cells 0, 1, 4, 5; every cell predicts it exactly
    # (u = 1); class score 0.25 at cell 0 (t = 0.5), 0.64 elsewhere (t = 0.8): with topk 2 the three
    # equal t = 0.8 give cells 1 and 4, and each gets 0.8 * 1 / 0.8 = 1
    scores, boxes = predictions(box=(0.0, 0.0, 16.0, 16.0), score=0.64)
    scores[0, 0, 1] = 0.25
    (lv,) = run(px_targets([(0, 1, 0, 0, 16, 16)]), scores, boxes, topk=2)
    assert rows(lv) == [(0, 1, 0), (0, 4, 0)]
    assert lv.cls.tolist() == [1, 1] and lv.anchor.tolist() == [0, 0] and lv.anchor_wh.tolist() == [[0.0, 0.0]] * 2
    assert lv.weight.tolist() == pytest.approx([0.8 / (0.8 + TAL_EPS)] * 2, abs=1e-7)
    # box_xywh_cell: the object's xywh in grid units, xy from the cell's top-left corner (cell 4: gi 0, gj 1)
    assert lv.box_xywh_cell[1].tolist() == [1.0, 0.0, 2.0, 2.0]


def test_fewer_candidates_than_topk_and_the_soft_targets():
    # same object, topk 10: all four cells; targets t / max(t) * max(u) = 0.5 / 0.8, 1, 1, 1
    scores, boxes = predictions(box=(0.0, 0.0, 16.0, 16.0), score=0.64)
    scores[0, 0, 1] = 0.25
    (lv,) = run(px_targets([(0, 1, 0, 0, 16, 16)]), scores, boxes)
    assert rows(lv) == [(0, 0, 0), (0, 1, 0), (0, 4, 0), (0, 5, 0)]
    assert lv.weight.tolist() == pytest.approx([0.625, 1.0, 1.0, 1.0], abs=1e-6)


def test_soft_target_scales_to_the_best_iou_of_the_object():
    # cell 5 predicts the object exactly (u = 1), the other three cells predict a box shifted by 4 px:
    # (4, 0, 20, 16) has IoU 192 / 320 = 0.6, rho^2 / c^2 = 16 / (400 + 256) -> u = 0.5756
    scores, boxes = predictions(box=(4.0, 0.0, 20.0, 16.0), score=0.25)
    boxes[0, 5] = torch.tensor([0.0, 0.0, 16.0, 16.0])
    (lv,) = run(px_targets([(0, 0, 0, 0, 16, 16)]), scores, boxes)
    u = 0.6 - 16 / 656
    t_other, t_best = 0.5 * u ** 6, 0.5
    assert rows(lv) == [(0, 0, 0), (0, 1, 0), (0, 4, 0), (0, 5, 0)]
    assert lv.weight.tolist() == pytest.approx([t_other / t_best] * 3 + [1.0], rel=1e-5)


def test_overlapping_objects_a_shared_cell_goes_to_the_larger_ciou():
    # A (0, 0, 16, 16) class 0: cells 0, 1, 4, 5; B (0, 0, 24, 24) class 1: cells 0-2, 4-6, 8-10.
    # Cell 5 predicts A exactly, every other cell predicts B exactly: both claim the four shared
    # cells; cell 5 goes to A (u 1 vs CIoU(A, B) 0.417), cells 0, 1, 4 to B (u 1 vs 0.417)
    scores, boxes = predictions(box=(0.0, 0.0, 24.0, 24.0))
    boxes[0, 5] = torch.tensor([0.0, 0.0, 16.0, 16.0])
    (lv,) = run(px_targets([(0, 0, 0, 0, 16, 16), (0, 1, 0, 0, 24, 24)]), scores, boxes)
    assert rows(lv) == [(0, 0, 1), (0, 1, 1), (0, 2, 1), (0, 4, 1), (0, 5, 0), (0, 6, 1), (0, 8, 1),
                        (0, 9, 1), (0, 10, 1)]
    assert lv.cls.tolist() == [1, 1, 1, 1, 0, 1, 1, 1, 1]
    assert lv.weight.tolist() == pytest.approx([1.0] * 9, abs=1e-6)


def test_a_contested_cell_goes_to_the_best_ciou_even_if_that_object_did_not_claim_it():
    # topk 1. A (0, 0, 16, 16): cells 0, 1, 4, 5 predict A exactly; A's score is 1 except 0.01 at
    # cell 5, so A claims cell 0 (t 1; cells 0, 1, 4 tie) and not cell 5 (t 0.1). B (8, 8, 24, 24)
    # and C (4, 4, 28, 28) contain cells 5, 6, 9, 10; only at cell 5 (A's box) is their CIoU > 0
    # (B 0.032, C 0.128), so both claim cell 5. YOLOv8 gives a contested cell to the largest CIoU over
    # all objects containing it: A (u 1), with A's own t 0.1; B and C end with nothing.
    scores, boxes = predictions()
    for c in (0, 1, 4, 5):
        boxes[0, c] = torch.tensor([0.0, 0.0, 16.0, 16.0])
    scores[0, 5, 0] = 0.01
    targets = px_targets([(0, 0, 0, 0, 16, 16), (0, 1, 8, 8, 24, 24), (0, 2, 4, 4, 28, 28)])
    (lv,) = run(targets, scores, boxes, topk=1)
    assert rows(lv) == [(0, 0, 0), (0, 5, 0)]
    assert lv.weight.tolist() == pytest.approx([1.0, 0.1], abs=1e-6)


def test_equal_ciou_conflict_goes_to_the_lower_object_row_and_images_do_not_conflict():
    # two identical objects in image 0 (rows 0 and 1) and one in image 1 (row 2): in image 0 every
    # shared cell goes to row 0; image 1's same cells are its own
    scores, boxes = predictions(bs=2, box=(0.0, 0.0, 16.0, 16.0))
    targets = px_targets([(0, 0, 0, 0, 16, 16), (0, 1, 0, 0, 16, 16), (1, 2, 0, 0, 16, 16)])
    (lv,) = run(targets, scores, boxes)
    assert rows(lv) == [(0, 0, 0), (0, 1, 0), (0, 4, 0), (0, 5, 0), (1, 0, 2), (1, 1, 2), (1, 4, 2), (1, 5, 2)]


def test_centre_on_the_edge_is_not_inside_and_an_object_without_a_cell_gets_nothing():
    # (4, 4, 20, 20): centres 4 and 20 lie on its edges, only cell 5 (12, 12) is strictly inside;
    # (13, 13, 19, 19) lies between the centres 12 and 20: no candidate, no rows, no error
    scores, boxes = predictions(box=(4.0, 4.0, 20.0, 20.0))
    (lv,) = run(px_targets([(0, 0, 4, 4, 20, 20), (0, 1, 13, 13, 19, 19)]), scores, boxes)
    assert rows(lv) == [(0, 5, 0)]
    (lv,) = run(px_targets([(0, 1, 13, 13, 19, 19)]), scores, boxes)
    assert len(lv) == 0 and lv.weight.shape == (0,)


def test_zero_alignment_is_never_a_positive():
    # every prediction far away: u = 0 at every candidate, so t = 0 and nothing is assigned
    scores, boxes = predictions()
    (lv,) = run(px_targets([(0, 0, 0, 0, 16, 16)]), scores, boxes)
    assert len(lv) == 0


def test_empty_ground_truth_and_an_empty_image():
    scores, boxes = predictions(bs=2, n=20, box=(0.0, 0.0, 16.0, 16.0))
    out = run(torch.zeros((0, 6)), scores, boxes, shapes=((4, 4), (2, 2)), strides=(8.0, 16.0))
    assert len(out) == 2 and all(len(lv) == 0 for lv in out)
    assert out[0].box_xywh_cell.shape == (0, 4) and out[0].anchor_wh.shape == (0, 2)
    # image 0 has no object, image 1 has one: only image 1's rows
    lv0, lv1 = run(px_targets([(1, 0, 0, 0, 16, 16)]), scores, boxes, shapes=((4, 4), (2, 2)), strides=(8.0, 16.0))
    assert set(lv0.image.tolist()) == {1} and len(lv0) == 4


def test_cells_of_all_levels_compete_in_one_top_k():
    # level 0 (stride 8, 4x4) then level 1 (stride 16, 2x2: cells 16..19, centres 8 and 24 px).
    # Object (0, 0, 32, 32) contains all 20 cells; level 1's cell (0, 0) predicts it exactly, every
    # other cell far away: with topk 10 the only t > 0 is on level 1, gi = gj = 0
    scores, boxes = predictions(n=20)
    boxes[0, 16] = torch.tensor([0.0, 0.0, 32.0, 32.0])
    lv0, lv1 = run(px_targets([(0, 0, 0, 0, 32, 32)]), scores, boxes, shapes=((4, 4), (2, 2)), strides=(8.0, 16.0))
    assert len(lv0) == 0 and (lv1.gj.tolist(), lv1.gi.tolist()) == ([0], [0])
    assert lv1.box_xywh_cell.tolist() == [[1.0, 1.0, 2.0, 2.0]] and lv1.weight.tolist() == pytest.approx([1.0])


def reference_yolov8(targets, scores, boxes, points, topk=10, alpha=0.5, beta=6.0, img=64, eps=1e-9):
    """YOLOv8's TaskAlignedAssigner steps, one image at a time on dense (objects x cells) tensors, written
    from its documented behaviour: {(image, cell): (object row, soft target)} of the targets > 0."""
    out = {}
    for b in range(scores.shape[0]):
        rows = (targets[:, 0] == b).nonzero().squeeze(1)
        if not len(rows):
            continue
        xywh = targets[rows, 2:6] * img
        gt = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1)  # (n, 4)
        ltrb = torch.cat((points[None] - gt[:, None, :2], gt[:, None, 2:] - points[None]), -1)
        inside = (ltrb.amin(-1) > eps).float()  # (n, N)
        overlaps = bbox_iou(gt[:, None], boxes[b][None], xywh=False, CIoU=True).squeeze(-1).clamp(0) * inside
        cls_scores = scores[b][:, targets[rows, 1].long()].T * inside  # (n, N)
        align = cls_scores.pow(alpha) * overlaps.pow(beta)
        mask_pos = torch.zeros_like(align).scatter_(1, align.topk(topk, dim=1).indices, 1.0) * inside
        contested = mask_pos.sum(0) > 1
        best = torch.nn.functional.one_hot(overlaps.argmax(0), len(rows)).T.float()  # (n, N)
        mask_pos = torch.where(contested[None], best, mask_pos)
        align = align * mask_pos
        norm = align * (overlaps * mask_pos).amax(1, keepdim=True) / (align.amax(1, keepdim=True) + eps)
        for j in (mask_pos.sum(0) > 0).nonzero().squeeze(1).tolist():
            i = int(mask_pos[:, j].argmax())
            if norm[i, j] > 0:
                out[(b, j)] = (int(rows[i]), float(norm[i, j]))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_equals_a_dense_transcription_of_yolov8_on_random_predictions(seed):
    # 2 images of 64x64, levels of stride 8 and 16 (8x8 + 4x4 cells), 3 + 2 large overlapping objects
    # (every object keeps >= 10 candidates with t > 0, where dropping t = 0 pairs changes nothing);
    # every cell predicts a jittered copy of a random object of its image
    from models.geometry import cell_centres

    g = torch.Generator().manual_seed(seed)
    objs = [(0, 3), (1, 2)]
    rows = []
    for b, n in objs:
        for _ in range(n):
            wh = torch.rand(2, generator=g) * 20 + 36
            xy = torch.rand(2, generator=g) * (64 - wh) + wh / 2
            rows.append([b, int(torch.randint(3, (1,), generator=g)), *(xy / 64).tolist(), *(wh / 64).tolist()])
    targets = torch.tensor(rows)
    points = torch.cat((cell_centres(8, 8, 8.0, "cpu"), cell_centres(4, 4, 16.0, "cpu")))
    boxes = torch.zeros(2, 80, 4)
    for b, _ in objs:
        mine = (targets[:, 0] == b).nonzero().squeeze(1)
        pick = mine[torch.randint(len(mine), (80,), generator=g)]
        xywh = targets[pick, 2:6] * 64 * (1 + 0.3 * (torch.rand(80, 4, generator=g) - 0.5))
        boxes[b] = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1)
    scores = torch.rand(2, 80, 3, generator=g)
    want = reference_yolov8(targets, scores, boxes, points)
    got = {}
    for lv, (nx, offset) in zip(run(targets, scores, boxes, shapes=((8, 8), (4, 4)), strides=(8.0, 16.0), img=64),
                                ((8, 0), (4, 64))):
        for b, gj, gi, t, w in zip(lv.image.tolist(), lv.gj.tolist(), lv.gi.tolist(), lv.target.tolist(),
                                   lv.weight.tolist()):
            got[(b, offset + gj * nx + gi)] = (t, w)
    assert len(want) >= 20 and got.keys() == want.keys()
    for k in want:
        assert got[k][0] == want[k][0] and got[k][1] == pytest.approx(want[k][1], rel=1e-5), k
