"""non_max_suppression on hand-built boxes: YOLOv5 v7.0 thresholds, class offsets, filters, caps."""
import pytest
import torch
import torchvision

from utils.eval.nms import _greedy_nms_first, non_max_suppression


def _pred() -> torch.Tensor:
    """(1, 5, 7): xywh px, obj, 2 class probabilities."""
    rows = [
        [50, 50, 20, 20, 0.9, 1.0, 0.0],  # A: conf 0.9 class 0
        [52, 50, 20, 20, 0.8, 1.0, 0.0],  # B: IoU 0.818 with A, same class -> suppressed
        [52, 50, 20, 20, 0.7, 0.0, 1.0],  # C: same place as B, class 1 -> kept unless agnostic
        [200, 200, 10, 10, 0.2, 0.4, 0.0],  # D: obj 0.2 below 0.25
        [300, 300, 10, 10, 0.9, 0.2, 0.1],  # E: obj passes, conf 0.9 * 0.2 = 0.18 does not
    ]
    return torch.tensor([rows], dtype=torch.float32)


def _confs_classes(out: torch.Tensor) -> list[tuple[float, int]]:
    return [(round(c, 4), int(k)) for c, k in out[:, 4:6].tolist()]


def test_default_suppresses_same_class_only():
    out = non_max_suppression(_pred())
    assert len(out) == 1 and out[0].shape == (2, 6)
    assert _confs_classes(out[0]) == [(0.9, 0), (0.7, 1)]
    assert out[0][0, :4].tolist() == [40.0, 40.0, 60.0, 60.0]  # xywh -> xyxy


def test_agnostic_suppresses_across_classes():
    out = non_max_suppression(_pred(), agnostic=True)[0]
    assert _confs_classes(out) == [(0.9, 0)]


def test_conf_threshold_uses_obj_times_cls():
    out = non_max_suppression(_pred(), conf_thres=0.1)[0]
    assert _confs_classes(out) == [(0.9, 0), (0.7, 1), (0.18, 0)]  # D: 0.2 * 0.4 = 0.08 still out


def test_classes_filter_and_max_det():
    assert _confs_classes(non_max_suppression(_pred(), classes=[1])[0]) == [(0.7, 1)]
    assert _confs_classes(non_max_suppression(_pred(), max_det=1)[0]) == [(0.9, 0)]


def test_multi_label_gives_one_row_per_class():
    pred = torch.tensor([[[100, 100, 10, 10, 1.0, 0.6, 0.5]]])
    assert non_max_suppression(pred)[0].shape[0] == 1
    out = non_max_suppression(pred, multi_label=True)[0]
    assert _confs_classes(out) == [(0.6, 0), (0.5, 1)]


def test_tuple_input_and_empty_image():
    pred = torch.cat((_pred(), torch.zeros(1, 5, 7)))  # second image: nothing above threshold
    out = non_max_suppression((pred, [torch.zeros(1)]))
    assert len(out) == 2 and out[0].shape == (2, 6) and out[1].shape == (0, 6)


@pytest.mark.parametrize("max_det,iou_thres", [(1, 0.45), (300, 0.45), (300, 0.05), (5000, 0.45), (40, 0.7)])
def test_early_stopping_nms_equals_full_greedy_nms(max_det, iou_thres):
    # 6000 boxes in 30 clusters with distinct scores: the prefix search must give exactly the first
    # max_det boxes a full torchvision NMS keeps, whether the first prefix suffices or it must grow
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(30, 2, generator=g) * 600
    xy = centres[torch.randint(0, 30, (6000,), generator=g)] + torch.randn(6000, 2, generator=g) * 8
    wh = torch.rand(6000, 2, generator=g) * 40 + 10
    boxes = torch.cat((xy - wh / 2, xy + wh / 2), 1)
    scores = torch.randperm(6000, generator=g).float() / 6000
    order = scores.argsort(descending=True)
    boxes, scores = boxes[order], scores[order]
    expected = torchvision.ops.nms(boxes, scores, iou_thres)[:max_det]
    got = _greedy_nms_first(boxes, scores, iou_thres, max_det)
    assert torch.equal(got, expected)
    assert len(expected) == min(max_det, len(torchvision.ops.nms(boxes, scores, iou_thres)))
