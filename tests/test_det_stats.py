"""Detection statistics (utils/eval/det_stats.py, tools/det_stats.py) on hand-built detections."""
import math

import pytest
import torch

from utils.eval.det_stats import DetectionStats, output_index, stray_sources


def test_detection_stats_on_a_hand_built_image():
    labels = torch.tensor([[0, 0, 0, 10, 10], [0, 20, 0, 30, 10], [1, 0, 20, 10, 30.]])
    dets = torch.tensor([
        [0, 0, 10, 10, 0.9, 0],  # finds label 0
        [1, 0, 11, 10, 0.8, 0],  # duplicate of label 0 (IoU 9/11): not stray
        [50, 50, 60, 60, 0.7, 0],  # stray
        [20, 0, 30, 10, 0.1, 0],  # right box of label 1 but below conf: not counted, best score 0.1
        [0, 20, 10, 30, 0.6, 1],  # finds the class-1 label
        [0, 0, 10, 10, 0.5, 1],  # class 1 on a class-0 object: stray for class 1
    ])
    s = DetectionStats(nc=3, conf=0.25)
    s.update(dets, labels)
    c0, c1, c2 = s.table()
    assert (c0["labels"], c0["dets"]) == (2, 3)
    assert c0["dets_per_label"] == 1.5 and c0["stray"] == pytest.approx(1 / 3) and c0["recall"] == 0.5
    assert c0["best_score"] == pytest.approx((0.9 + 0.1) / 2)
    assert (c1["labels"], c1["dets"], c1["stray"], c1["recall"]) == (1, 2, 0.5, 1.0)
    assert c1["best_score"] == pytest.approx(0.6)
    assert c0["stray_score"] == pytest.approx(0.7) and c1["stray_score"] == pytest.approx(0.5)
    assert c2["labels"] == c2["dets"] == 0 and all(math.isnan(c2[k]) for k in ("dets_per_label", "stray", "recall"))
    # a second image with no detections: its label is missed with best score 0
    s.update(torch.zeros(0, 6), torch.tensor([[1, 0, 0, 5, 5.]]))
    c1 = s.table()[1]
    assert (c1["labels"], c1["recall"], c1["best_score"]) == (2, 0.5, pytest.approx(0.3))


def test_stray_sources_counts_high_scoring_stray_outputs_by_level_and_anchor():
    nc = 2
    raw = [torch.zeros(1, 2, 2, 2, 5 + nc), torch.zeros(1, 1, 1, 1, 5 + nc)]
    level, anchor = output_index(raw)
    assert level.tolist() == [0] * 8 + [1] and anchor.tolist() == [0] * 4 + [1] * 4 + [0]
    pred = torch.zeros(9, 5 + nc)
    pred[:, :4] = torch.tensor([5.0, 5, 10, 10])  # every box on the class-0 label
    pred[:, 4] = 1.0
    pred[5, :4] = torch.tensor([40.0, 40, 10, 10])  # level 0, anchor 1: far away
    pred[8, :4] = torch.tensor([40.0, 40, 10, 10])  # level 1, anchor 0: far away
    pred[[5, 8], 5] = 0.9  # class 0, stray
    pred[0, 5] = 0.9  # class 0 on its label: not stray
    pred[1, 6] = 0.9  # class 1 on the class-0 label: stray for class 1 (no class-1 label)
    pred[2, 6] = 0.2  # below conf
    labels = torch.tensor([[0, 0, 0, 10, 10.]])
    out = stray_sources(pred, raw, labels, conf=0.25, stray_iou=0.3)
    assert out.tolist() == [[1, 1], [1, 0]]


def test_cli_counts_every_label_of_the_split(tiny_data, tmp_path):
    import yaml

    from models.yolo import Model
    from tools import det_stats as cli
    from utils.io.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    data = yaml.safe_load(tiny_data.read_text())
    weights = save_checkpoint(make_checkpoint(Model("models/yolov5n.yaml", nc=len(data["names"]))),
                              tmp_path / "w" / "weights" / "best.pt")
    out = cli.main(cli.parse_opt(["--weights", str(weights), str(weights), "--data", str(tiny_data), "--img", "64",
                                  "--out", str(tmp_path / "out")]))
    text = out.read_text()
    rows = [r.split("|")[1:-1] for r in text.splitlines() if r.startswith("| w")]
    per_class = [r for r in rows if r[1].strip() in data["names"]]
    assert {r[0].strip() for r in per_class} == {"w", "w'"}  # two runs of the same name stay apart
    counts = {}
    for f in (tiny_data.parent / "labels" / "val").glob("*.txt"):
        for line in f.read_text().splitlines():
            name = data["names"][int(line.split()[0])]
            counts[name] = counts.get(name, 0) + 1
    assert sum(counts.values()) > 0
    got = {r[1].strip(): int(r[2]) for r in per_class if r[0].strip() == "w"}
    assert got == {n: counts.get(n, 0) for n in data["names"]}
    assert sum(1 for r in rows if r[1].strip().startswith("P")) == 2 * 3  # three levels per run


def test_cli_names_a_missing_checkpoint_and_a_wrong_class_count(tiny_data, tmp_path, caplog):
    from models.yolo import Model
    from tools import det_stats as cli
    from utils.io.checkpoint import make_checkpoint, save_checkpoint

    missing = tmp_path / "nope.pt"
    assert cli.cli(["--weights", str(missing), "--data", str(tiny_data), "--img", "64", "--out", str(tmp_path)]) == 1
    assert "nope.pt" in caplog.text
    two = save_checkpoint(make_checkpoint(Model("models/yolov5n.yaml", nc=2)), tmp_path / "two.pt")
    assert cli.cli(["--weights", str(two), "--data", str(tiny_data), "--img", "64", "--out", str(tmp_path)]) == 1
    assert "2 classes" in caplog.text
    assert not (tmp_path / "det_stats.md").exists()


def test_strategy_of_a_checkpoint_names_loss_and_rule():
    from tools.det_stats import strategy_of

    assert strategy_of({"hyp": {"loss": "yolov5", "assigner": "simota"}}) == "yolov5+simota"
    assert strategy_of({"hyp": {"loss": "gfl", "assigner": "atss"}}) == "gfl"  # gfl's own rule
    assert strategy_of({"hyp": {"loss": "tal", "assigner": "max_iou"}}) == "tal+max_iou"
    assert strategy_of({"hyp": None}) == "yolov5"  # an official YOLOv5 checkpoint
