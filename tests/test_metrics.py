"""Metrics pinned against hand computations of YOLOv5 v7.0 behaviour.

compute_ap: COCO 101-point interpolation of the precision envelope, integrated with the trapezoid
rule (YOLOv5 ``method = 'interp'``). match_predictions: YOLOv5 v7.0 ``process_batch``, whose
second IoU sort is commented out, so a label goes to the most confident detection whose best label
it is, not to the highest-IoU one.
"""
import numpy as np
import pytest
import torch

from utils.eval.metrics import ConfusionMatrix, DetMetrics, ap_per_class, compute_ap, fitness, match_predictions


def _reference_ap(recall, precision):
    """Independent 101-point AP with plain loops (np.interp rule: a repeated x takes its last y)."""
    r = [0.0] + list(recall) + [1.0]
    p = [1.0] + list(precision) + [0.0]
    for i in range(len(p) - 2, -1, -1):
        p[i] = max(p[i], p[i + 1])

    def at(x):
        j = max(k for k in range(len(r)) if r[k] <= x)
        if r[j] == x or j == len(r) - 1:
            return p[j]
        return p[j] + (p[j + 1] - p[j]) * (x - r[j]) / (r[j + 1] - r[j])

    ys = [at(k / 100) for k in range(101)]
    return sum((ys[k] + ys[k + 1]) / 2 * 0.01 for k in range(100))


def test_compute_ap_hand_value():
    # envelope 1 up to recall 0.5, then 2/3 up to recall 1, then the 0 sentinel at recall 1
    ap, mpre, mrec = compute_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))
    expected = 0.49 + (1 + 2 / 3) / 2 * 0.01 + 49 * (2 / 3) * 0.01 + (2 / 3) / 2 * 0.01
    assert ap == pytest.approx(expected, abs=1e-12)
    assert mrec.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert mpre.tolist() == pytest.approx([1.0, 1.0, 2 / 3, 2 / 3, 0.0])


def test_compute_ap_matches_loop_reference():
    rng = np.random.default_rng(0)
    tp = rng.random(40) < 0.6
    recall = np.cumsum(tp) / 30
    precision = np.cumsum(tp) / np.arange(1, 41)
    assert compute_ap(recall, precision)[0] == pytest.approx(_reference_ap(recall, precision), abs=1e-12)


def test_ap_per_class_two_classes():
    # class 0: 2 labels, TP FP TP; class 1: 1 label, FP TP; only the first 5 IoU thresholds are hits
    hits = np.array([1, 0, 1, 0, 1], bool)
    tp = np.zeros((5, 10), bool)
    tp[:, :5] = hits[:, None]
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    pred_cls = np.array([0, 0, 0, 1, 1])
    target_cls = np.array([0, 0, 1])
    _, _, p, r, f1, ap, classes = ap_per_class(tp, conf, pred_cls, target_cls)
    ap_class0 = 0.49 + (1 + 2 / 3) / 2 * 0.01 + 49 * (2 / 3) * 0.01 + (2 / 3) / 2 * 0.01
    ap_class1 = 99 * 0.5 * 0.01 + 0.5 / 2 * 0.01  # envelope 0.5 from recall 0 to 1
    assert classes.tolist() == [0, 1]
    assert ap[:, 0] == pytest.approx([ap_class0, ap_class1], abs=1e-9)
    assert (ap[:, :5] == ap[:, :1]).all() and (ap[:, 5:] == 0).all()
    assert f1 == pytest.approx(2 * p * r / (p + r), abs=1e-9)


def test_ap_per_class_pr_at_best_f1():
    tp = np.ones((1, 10), bool)
    out = ap_per_class(tp, np.array([0.5]), np.array([3]), np.array([3, 4]))
    tp_c, fp_c, p, r, f1, ap, classes = out
    assert classes.tolist() == [3, 4]  # class 4 has a label but no detection: AP 0, P 0, R 0
    assert p.tolist() == [1.0, 0.0] and r.tolist() == [1.0, 0.0]
    assert tp_c.tolist() == [1.0, 0.0] and fp_c.tolist() == [0.0, 0.0]
    assert ap[1].sum() == 0


def _labels(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_match_predictions_yolov5_order():
    labels = _labels([[0, 0, 0, 10, 10], [0, 5, 0, 15, 10]])
    dets = _labels([
        [1, 0, 11, 10, 0.9, 0],  # IoU 0.818 with label 0
        [0, 0, 10, 10, 0.8, 0],  # IoU 1.0 with label 0, but less confident than the first
        [5, 0, 15, 10, 0.7, 1],  # IoU 1.0 with label 1, wrong class
        [4, 0, 14, 10, 0.6, 0],  # IoU 0.818 with label 1
    ])
    correct = match_predictions(dets, labels, torch.linspace(0.5, 0.95, 10))
    assert correct.dtype == torch.bool and correct.shape == (4, 10)
    low = [True, False, False, True]  # thresholds 0.50 .. 0.80
    high = [False, True, False, False]  # 0.85 .. 0.95: only the exact box survives
    assert correct[:, :7].T.tolist() == [low] * 7
    assert correct[:, 7:].T.tolist() == [high] * 3


def test_match_predictions_detection_between_two_labels():
    labels = _labels([[0, 0, 0, 10, 10], [0, 2, 0, 12, 10]])
    one = _labels([[0.5, 0, 10.5, 10, 0.9, 0]])  # IoU 0.905 / 0.739: counts once, at its best label
    correct = match_predictions(one, labels, torch.linspace(0.5, 0.95, 10))
    assert correct[0].tolist() == [True] * 9 + [False]
    two = torch.cat((one, _labels([[2, 0, 12, 10, 0.5, 0]])))  # the second takes the other label
    correct = match_predictions(two, labels, torch.linspace(0.5, 0.95, 10))
    assert correct[1].all() and correct[0, :9].all()
    assert match_predictions(two, torch.zeros((0, 5)), torch.linspace(0.5, 0.95, 10)).sum() == 0


def test_confusion_matrix_counts():
    cm = ConfusionMatrix(nc=2, conf=0.25, iou_thres=0.45)
    labels = _labels([[0, 0, 0, 10, 10], [1, 20, 0, 30, 10], [1, 40, 0, 50, 10]])
    dets = _labels([
        [0, 0, 10, 10, 0.9, 0],  # correct
        [20, 0, 30, 10, 0.8, 0],  # found, wrong class: predicted 0 for true 1
        [60, 0, 70, 10, 0.7, 1],  # nothing there: background false positive
        [0, 0, 10, 10, 0.1, 1],  # below conf: ignored
    ])
    cm.process_batch(dets, labels)  # the third label is missed: background false negative
    assert cm.matrix.tolist() == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]
    cm.process_batch(_labels([[0, 0, 5, 5, 0.5, 0]]), torch.zeros((0, 5)))  # image without labels
    cm.process_batch(None, _labels([[0, 0, 0, 5, 5]]))
    assert cm.matrix.tolist() == [[1, 1, 1], [0, 0, 1], [1, 1, 0]]
    tp, fp = cm.tp_fp()
    assert tp.tolist() == [1, 0] and fp.tolist() == [2, 1]


def test_fitness():
    assert fitness([0.5, 0.6, 0.7, 0.4]) == pytest.approx(0.1 * 0.7 + 0.9 * 0.4)
    assert fitness(np.array([[1, 1, 1, 0], [0, 0, 0, 1]])) == pytest.approx([0.1, 0.9])


def test_det_metrics_perfect_and_plots(tmp_path):
    metrics = DetMetrics(nc=2)
    labels = [_labels([[0, 0, 0, 10, 10], [1, 20, 20, 40, 40]]), _labels([[1, 5, 5, 25, 25]])]
    preds = [_labels([[0, 0, 10, 10, 0.9, 0], [20, 20, 40, 40, 0.8, 1]]), _labels([[5, 5, 25, 25, 0.7, 1]])]
    metrics.update(preds, labels)
    res = metrics.compute(plot=True, save_dir=tmp_path, names=["a", "b"])
    # YOLOv5's ceiling: the precision-0 sentinel at recall 1 costs half of the last 0.01 interval
    assert res["map50"] == pytest.approx(0.995) and res["map"] == pytest.approx(0.995)
    assert res["p"] == pytest.approx(1.0) and res["r"] == pytest.approx(1.0)
    assert res["ap_class"].tolist() == [0, 1] and res["nt"].tolist() == [1, 2] and res["seen"] == 2
    for name in ("PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert DetMetrics(nc=2).compute()["map"] == 0.0
