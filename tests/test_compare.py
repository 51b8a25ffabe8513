"""compare.py on a tiny built-in dataset: 2 strategies x 1 epoch, table read back, failures reported,
rerun reads finished runs back instead of training again."""
import csv
import json

import pytest

import compare as compare_cli
from utils.engine.compare import hyp_for


def args(data, project, losses):
    return compare_cli.parse_opt(["--data", str(data), "--img", "64", "--epochs", "1", "--batch-size", "4",
                                  "--workers", "0", "--losses", losses, "--seeds", "0", "--project", str(project)])


def test_compare_two_strategies_and_rerun(tiny_data, tmp_path):
    assert compare_cli.main(args(tiny_data, tmp_path, "yolov5,ssd")) == 0
    exp = tmp_path / "exp"
    with open(exp / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["loss"] for r in rows] == ["yolov5", "ssd"]
    for r in rows:
        assert r["runs"] == "1/1" and r["failed"] == ""
        summary = json.loads((exp / "runs" / f"{r['loss']}-s0" / "summary.json").read_text())
        assert r["mAP50-95"] == f"{summary['map']:.3f} ± 0.000"
        assert float(r["loss ms/step"]) > 0 and float(r["train img/s"]) > 0
    assert (exp / "results.md").read_text().count("\n| ") == 3
    assert (exp / "map_vs_epoch.png").is_file()
    mtime = (exp / "runs" / "yolov5-s0" / "summary.json").stat().st_mtime
    assert compare_cli.main(args(tiny_data, tmp_path, "yolov5,ssd")) == 0  # same command: same folder, read back
    assert not (tmp_path / "exp2").exists()
    assert (exp / "runs" / "yolov5-s0" / "summary.json").stat().st_mtime == mtime
    # --report: the same folder's tables rewritten from the finished runs, nothing trained
    (exp / "results.csv").unlink()
    rep = args(tiny_data, tmp_path, "yolov5,ssd")
    rep.report = True
    assert compare_cli.main(rep) == 0
    with open(exp / "results.csv", newline="") as f:
        assert [r["runs"] for r in csv.DictReader(f)] == ["1/1", "1/1"]
    assert (exp / "runs" / "yolov5-s0" / "summary.json").stat().st_mtime == mtime
    # ... and with runs that never trained: pending, not failed, and still nothing trained
    rep.seeds, rep.new = [0, 1], True
    assert compare_cli.main(rep) == 0
    with open(tmp_path / "exp2" / "results.csv", newline="") as f:
        assert [(r["runs"], r["failed"]) for r in csv.DictReader(f)] == [("0/2", ""), ("0/2", "")]
    assert not (tmp_path / "exp2" / "runs").exists()


def test_a_failing_run_is_reported_and_others_go_on(tiny_data, tmp_path):
    bad = args(tiny_data, tmp_path, "yolov5")
    bad.cfg = str(tmp_path / "missing.yaml")
    assert compare_cli.main(bad) == 2
    with open(next(tmp_path.glob("exp*/results.csv")), newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["runs"] == "0/1" and row["failed"] == "yolov5-s0" and row["mAP50-95"] == "-"


def test_unknown_strategy_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="unknown loss 'otaa'"):
        hyp_for("otaa")
