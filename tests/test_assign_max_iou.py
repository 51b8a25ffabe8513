"""SSD max-IoU matching: hand-built cases with exact indices, and an independent loop-by-loop
transcription of ssd.pytorch's ``match`` (best_prior / best_truth, forced overlap 2, the later
object winning a shared best anchor) compared on random boxes."""
import pytest
import torch

from utils.assign.max_iou import match_max_iou


def boxes(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_object_below_threshold_still_gets_its_best_anchor():
    anchors = boxes([0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10])
    gt = boxes([0, 0, 3, 10])  # IoU 0.3 with anchor 0, 0 with the others
    idx, iou = match_max_iou(gt, anchors, 0.5)
    assert idx.tolist() == [0, -1, -1]
    assert iou.tolist() == pytest.approx([0.3, 0.0, 0.0], abs=1e-6)


def test_anchor_above_threshold_for_two_objects_takes_the_better():
    gt = boxes([0, 0, 10, 10], [4, 0, 14, 10])
    anchors = boxes([0, 0, 10, 10],  # g0 1.0, g1 0.43: forced to g0
                    [4, 0, 14, 10],  # g1 1.0: forced to g1
                    [1, 0, 11, 10],  # g0 90/110 = 0.82, g1 70/130 = 0.54 -> g0
                    [3, 0, 13, 10],  # g0 0.54, g1 0.82 -> g1
                    [30, 0, 40, 10])  # nothing
    idx, iou = match_max_iou(gt, anchors, 0.5)
    assert idx.tolist() == [0, 1, 0, 1, -1]
    assert iou.tolist() == pytest.approx([1.0, 1.0, 90 / 110, 90 / 110, 0.0], abs=1e-6)


def test_rule_one_wins_over_rule_two_and_reports_the_matched_pair_iou():
    gt = boxes([0, -5, 10, 4],  # g0: best anchor is anchor 1 with IoU 40/140 = 0.286
               [0, 0, 10, 10])  # g1: best anchor is anchor 0 (1.0); IoU 0.9 with anchor 1
    anchors = boxes([0, 0, 10, 10], [0, 0, 10, 9])
    idx, iou = match_max_iou(gt, anchors, 0.5)
    assert idx.tolist() == [1, 0]  # anchor 1 stays g0's although g1 overlaps it 0.9 >= 0.5
    assert iou.tolist() == pytest.approx([1.0, 40 / 140], abs=1e-6)


def test_shared_best_anchor_goes_to_the_later_object_as_in_ssd_pytorch():
    anchors = boxes([0, 0, 10, 10], [100, 100, 110, 110])
    gt = boxes([0, 0, 10, 9], [0, 0, 10, 8])  # both best at anchor 0 (0.9 and 0.8)
    idx, iou = match_max_iou(gt, anchors, 0.5)
    # ssd.pytorch's loop writes object 1 last; object 0 keeps no anchor even with the higher IoU
    assert idx.tolist() == [1, -1]
    assert iou[0].item() == pytest.approx(0.8, abs=1e-6)


def test_ties_lower_object_for_rule_two_lower_anchor_for_rule_one():
    gt = boxes([0, 0, 10, 10], [0, 0, 10, 10], [50, 0, 60, 10])
    anchors = boxes([0, 0, 10, 8],  # 0.8 with both g0 and g1
                    [0, 2, 10, 10],  # 0.8 with both as well
                    [50, 0, 60, 8], [50, 2, 60, 10])  # g2 ties at 0.8 between anchors 2 and 3
    idx, _ = match_max_iou(gt, anchors, 0.5)
    # rule 1: g0 and g1 both pick anchor 0 (first maximum), g1 (later) keeps it; g2 picks anchor 2.
    # rule 2: anchor 1 ties between g0 and g1 -> g0; anchor 3 -> g2.
    assert idx.tolist() == [1, 0, 2, 2]


def test_empty_ground_truth_and_no_anchor():
    anchors = boxes([0, 0, 10, 10], [5, 5, 15, 15])
    idx, iou = match_max_iou(torch.zeros(0, 4), anchors, 0.5)
    assert idx.tolist() == [-1, -1] and iou.tolist() == [0.0, 0.0] and idx.dtype == torch.long
    idx, iou = match_max_iou(boxes([0, 0, 1, 1]), torch.zeros(0, 4), 0.5)
    assert idx.shape == (0,) and iou.shape == (0,)


def plain_iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def reference_match(gt, anchors, thr):
    """ssd.pytorch ``box_utils.match`` written out with Python loops (labels only, no encoding)."""
    n, m = len(gt), len(anchors)
    overlaps = [[plain_iou(g, a) for a in anchors] for g in gt]
    best_prior = [max(range(m), key=lambda i, j=j: (overlaps[j][i], -i)) for j in range(n)]
    best_truth = [max(range(n), key=lambda j, i=i: (overlaps[j][i], -j)) for i in range(m)]
    best_truth_overlap = [overlaps[best_truth[i]][i] for i in range(m)]
    for j in range(n):
        best_truth_overlap[best_prior[j]] = 2.0  # ensure every object keeps its best prior
    for j in range(n):
        best_truth[best_prior[j]] = j
    labels = [best_truth[i] if best_truth_overlap[i] >= thr else -1 for i in range(m)]
    ious = [overlaps[labels[i]][i] if labels[i] >= 0 else max(overlaps[j][i] for j in range(n))
            for i in range(m)]
    return labels, ious


def random_boxes(n, size, g):
    xy = torch.rand(n, 2, generator=g) * size
    wh = torch.rand(n, 2, generator=g) * size * 0.4 + 2
    return torch.cat((xy, xy + wh), 1)


@pytest.mark.parametrize("seed", range(6))
def test_equals_ssd_pytorch_match_on_random_boxes(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 9, (1,), generator=g))
    gt, anchors = random_boxes(n, 100.0, g), random_boxes(300, 100.0, g)
    idx, iou = match_max_iou(gt, anchors, 0.5)
    ref_idx, ref_iou = reference_match(gt.double().tolist(), anchors.double().tolist(), 0.5)
    assert idx.tolist() == ref_idx
    assert iou.tolist() == pytest.approx(ref_iou, abs=1e-5)
    assert (idx >= 0).any()
