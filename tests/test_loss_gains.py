"""Each strategy's own gain-scaling rule (``train_hyp``), which the trainer calls before build_loss."""
import pytest

from utils.loss import LOSSES
from utils.loss.yolov5 import YOLOv5GainScaling

# derived from the registry, so a new strategy is covered by whichever rule it inherits
YOLOV5_RULE = [n for n, c in LOSSES.items() if issubclass(c, YOLOv5GainScaling)]
OWN_NORMALISERS = [n for n in LOSSES if n not in YOLOV5_RULE]


def test_yolov5_rule_is_unity_at_3_levels_80_classes_640px():
    hyp = {"loss": "yolov5", "box": 0.05, "obj": 1.0, "cls": 0.5, "anchor_t": 4.0}
    assert LOSSES["yolov5"].train_hyp(hyp, nl=3, nc=80, imgsz=640) == {**hyp, "label_smoothing": 0.0}


@pytest.mark.parametrize("name", YOLOV5_RULE)
def test_yolov5_rule_scales_by_levels_classes_and_image_size(name):
    hyp = {"loss": name, "box": 0.05, "obj": 1.0, "cls": 0.5}
    out = LOSSES[name].train_hyp(hyp, nl=3, nc=3, imgsz=320, label_smoothing=0.1)
    assert out["box"] == pytest.approx(0.05) and out["cls"] == pytest.approx(0.5 * 3 / 80)
    assert out["obj"] == pytest.approx(0.25)
    assert out.get("label_smoothing") == (0.1 if "label_smoothing" in LOSSES[name].Hyp.keys() else None)
    out = LOSSES[name].train_hyp(hyp, nl=4, nc=80, imgsz=640)
    assert (out["box"], out["obj"], out["cls"]) == pytest.approx((0.0375, 0.75, 0.375))
    assert hyp == {"loss": name, "box": 0.05, "obj": 1.0, "cls": 0.5}  # the input is not mutated


def test_ssd_scales_from_its_own_defaults():
    out = LOSSES["ssd"].train_hyp({"loss": "ssd"}, nl=3, nc=3, imgsz=320)
    assert out["box"] == pytest.approx(0.15) and out["cls"] == pytest.approx(1.5 * 3 / 80)
    assert out["obj"] == pytest.approx(0.25)


@pytest.mark.parametrize("name", OWN_NORMALISERS)
def test_strategies_with_own_normalisers_keep_their_values(name):
    hyp = {"loss": name, "lr0": 0.01}
    assert LOSSES[name].train_hyp(hyp, nl=3, nc=3, imgsz=320, label_smoothing=0.1) == hyp
