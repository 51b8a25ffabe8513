"""ATSS assigner (utils/assign/atss.py): hand-built cases with the exact expected positives, the
empty and no-candidate cases, conflicts, and equality with a plain-loop transcription of
mmdetection's ``ATSSAssigner.assign`` (which GFL uses) on random boxes.

Pinned reference behaviour: per level the topk priors nearest to the object's centre; IoU with a
virtual box of side ``8 * stride``; threshold mean + std (Bessel-corrected ``torch.std``); centre
inside the object by more than 0.01 px; a prior claimed twice goes to the larger IoU. Deviation:
priors sit at cell centres ``(g + 0.5) * stride`` (mmdetection's anchor generator uses offset 0).
"""
import math

import torch

from models.geometry import cell_centres
from utils.assign.atss import atss_assign


def px_targets(rows, img=64):
    """[(image, cls, x1, y1, x2, y2) pixels] -> (n, 6) loader targets, xywh normalised."""
    t = torch.tensor(rows, dtype=torch.float32).view(-1, 6)
    xywh = torch.cat(((t[:, 2:4] + t[:, 4:6]) / 2, t[:, 4:6] - t[:, 2:4]), 1) / img
    return torch.cat((t[:, :2], xywh), 1)


def cells(level):
    return sorted(zip(level.image.tolist(), level.gj.tolist(), level.gi.tolist(), level.target.tolist()))


def test_worked_example_four_centre_cells():
    # docstring example: 48x48 object centred on a cell corner; IoUs 4 x 0.5625 and 5 x 0.4925
    # among the 9 candidates, threshold 0.5605 -> exactly the 4 cells around the centre
    (lv,) = atss_assign(px_targets([(0, 2, 8, 8, 56, 56)]), [(8, 8)], [8.0], (64, 64))
    assert cells(lv) == [(0, 3, 3, 0), (0, 3, 4, 0), (0, 4, 3, 0), (0, 4, 4, 0)]
    assert lv.cls.tolist() == [2] * 4 and lv.anchor.tolist() == [0] * 4
    # box_xywh_cell: xywh in grid units, xy relative to the cell's top-left corner
    i = [k for k in range(4) if (lv.gj[k].item(), lv.gi[k].item()) == (3, 4)][0]
    assert lv.box_xywh_cell[i].tolist() == [0.0, 1.0, 6.0, 6.0]
    assert lv.anchor_wh.tolist() == [[8.0, 8.0]] * 4


def test_two_levels_threshold_keeps_the_fitting_level():
    # Level 1 (stride 16, 4x4 cells): its 9 candidates' 128 px boxes all contain the object,
    # IoU 2304 / 16384 = 0.1406 each. Over the 18 candidates mean 0.3321 + std 0.1987 = 0.531:
    # only level 0's 4 centre cells (0.5625) pass.
    lv0, lv1 = atss_assign(px_targets([(0, 0, 8, 8, 56, 56)]), [(8, 8), (4, 4)], [8.0, 16.0], (64, 64))
    assert cells(lv0) == [(0, 3, 3, 0), (0, 3, 4, 0), (0, 4, 3, 0), (0, 4, 4, 0)]
    assert len(lv1) == 0


def test_object_without_a_cell_centre_inside_gets_nothing():
    # a 2x2 px object between cell centres (4, 4) and (12, 12): candidates have IoU but no centre inside
    (lv,) = atss_assign(px_targets([(0, 1, 6, 6, 8, 8)]), [(8, 8)], [8.0], (64, 64))
    assert len(lv) == 0


def test_empty_ground_truth_gives_empty_levels():
    out = atss_assign(torch.zeros((0, 6)), [(8, 8), (4, 4)], [8.0, 16.0], (64, 64))
    assert len(out) == 2 and all(len(lv) == 0 for lv in out)
    assert out[0].box_xywh_cell.shape == (0, 4) and out[0].anchor_wh.shape == (0, 2)


def test_small_grid_uses_all_cells_and_one_candidate_level():
    # a 2x2 grid has fewer cells than topk: all 4 are candidates (selectable_k = min(topk, cells))
    (lv,) = atss_assign(px_targets([(0, 0, 2, 2, 30, 30)], img=32), [(2, 2)], [16.0], (32, 32))
    # centre (16, 16): all four cells tie in distance and IoU -> std 0, threshold = mean, all positive
    assert cells(lv) == [(0, 0, 0, 0), (0, 0, 1, 0), (0, 1, 0, 0), (0, 1, 1, 0)]


def test_cell_claimed_twice_goes_to_the_larger_iou_and_images_do_not_conflict():
    big = (0, 0, 8, 8, 56, 56)  # 4 centre cells at IoU 0.5625
    small = (0, 1, 17.3, 15.1, 49.3, 47.1)  # 32x32 px, centre (33.3, 31.1): its boxes reach IoU 0.25
    out_small = cells(atss_assign(px_targets([small]), [(8, 8)], [8.0], (64, 64))[0])
    (lv,) = atss_assign(px_targets([big, small]), [(8, 8)], [8.0], (64, 64))
    got = cells(lv)
    centre = {(3, 3), (3, 4), (4, 3), (4, 4)}
    assert {(j, i) for _, j, i, t in got if t == 0} == centre
    assert [(b, j, i, 1) for b, j, i, _ in out_small if (j, i) not in centre] == [c for c in got if c[3] == 1]
    assert len({(b, j, i) for b, j, i, _ in got}) == len(got)  # one object per cell
    # the same two boxes in different images: no conflict, each keeps its own positives
    (lv2,) = atss_assign(px_targets([big, (1,) + small[1:]]), [(8, 8)], [8.0], (64, 64))
    assert sum(1 for c in cells(lv2) if c[0] == 1) == len(out_small)


# ------------------------------------------------------------------ plain-loop transcription

def reference_atss(boxes_xyxy, shapes, strides, topk=9, scale=8.0):
    """mmdetection ATSSAssigner.assign for one image, one object at a time, plain Python.

    Returns {global cell index: object index}.
    """
    points, sides = [], []
    for (ny, nx), s in zip(shapes, strides):
        for gy in range(ny):
            for gx in range(nx):
                points.append(((gx + 0.5) * s, (gy + 0.5) * s))
                sides.append(scale * s)

    def iou(p, side, b):
        ax1, ay1, ax2, ay2 = p[0] - side / 2, p[1] - side / 2, p[0] + side / 2, p[1] + side / 2
        iw = max(0.0, min(ax2, b[2]) - max(ax1, b[0]))
        ih = max(0.0, min(ay2, b[3]) - max(ay1, b[1]))
        inter = iw * ih
        return inter / (side * side + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    best = {}
    for g, b in enumerate(boxes_xyxy):
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        cand, start = [], 0
        for (ny, nx) in shapes:
            idx = list(range(start, start + ny * nx))
            idx.sort(key=lambda k: (points[k][0] - cx) ** 2 + (points[k][1] - cy) ** 2)
            cand += idx[:min(topk, ny * nx)]
            start += ny * nx
        ious = [iou(points[k], sides[k], b) for k in cand]
        mean = sum(ious) / len(ious)
        std = math.sqrt(sum((v - mean) ** 2 for v in ious) / (len(ious) - 1))
        for k, v in zip(cand, ious):
            px, py = points[k]
            inside = min(px - b[0], py - b[1], b[2] - px, b[3] - py) > 0.01
            if v >= mean + std and inside and (k not in best or v > best[k][0]):
                best[k] = (v, g)
    return {k: g for k, (v, g) in best.items()}


def test_matches_a_plain_loop_transcription_of_mmdetection_on_random_boxes():
    g = torch.Generator().manual_seed(0)
    shapes, strides, img = [(16, 16), (8, 8), (4, 4)], [8.0, 16.0, 32.0], 128
    for trial in range(5):
        n = 6
        wh = torch.rand(n, 2, generator=g) * 90 + 4
        c = torch.rand(n, 2, generator=g) * (img - wh) + wh / 2
        xyxy = torch.cat((c - wh / 2, c + wh / 2), 1)
        rows = [(0, k % 3, *xyxy[k].tolist()) for k in range(n)]
        out = atss_assign(px_targets(rows, img), shapes, strides, (img, img))
        got, offset = {}, 0
        for (ny, nx), lv in zip(shapes, out):
            for j, i, t in zip(lv.gj.tolist(), lv.gi.tolist(), lv.target.tolist()):
                got[offset + j * nx + i] = t
            offset += ny * nx
        assert got == reference_atss(xyxy.tolist(), shapes, strides), trial


def test_cell_centres_are_half_a_stride_in():
    pts = cell_centres(2, 3, 8.0, torch.device("cpu"))
    assert pts.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
