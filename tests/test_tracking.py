"""The trainer's logger list and MLflow tracking: train.py --track mlflow against its own results.csv and
summary.json, compare's tracker logging run folders once under a parent run, and a tracker that cannot
reach its store costing one warning, not the training."""
import json

import pytest

mlflow = pytest.importorskip("mlflow")

import train as train_cli  # noqa: E402
from utils.io.run_log import CsvLogger, ResultsLogger, RunLogger, read_results  # noqa: E402
from utils.io.trackers import CompareTracker, MlflowLogger, run_params  # noqa: E402
from tests.test_compare import fake_run  # noqa: E402


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return mlflow.tracking.MlflowClient(uri)


class Recorder(RunLogger):
    """A new logger is one class: this one records the calls it gets."""

    def __init__(self):
        self.calls = []

    def start(self, save_dir, opt, hyp):
        self.calls.append(("start", hyp.get("loss")))

    def epoch(self, epoch, values):
        self.calls.append(("epoch", epoch, values["metrics/mAP_0.5:0.95"]))

    def end(self, save_dir, summary):
        self.calls.append(("end", summary["map"]))

    def close(self):
        self.calls.append(("close",))


def test_logger_list_calls_every_logger_in_order(tmp_path):
    results = ResultsLogger(tmp_path, ("box", "obj", "cls"), tensorboard=False)
    rec = Recorder()
    results.add(rec)
    assert [type(lg) for lg in results.loggers] == [CsvLogger, Recorder]
    results.start(tmp_path, {}, {"loss": "ota"})
    values = [0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.4, 0.01, 0.02, 0.03, 0.001, 0.002, 0.003]
    results.log(0, values)
    results.end(tmp_path, {"map": 0.4})
    results.close()
    assert rec.calls == [("start", "ota"), ("epoch", 0, 0.4), ("end", 0.4), ("close",)]
    keys, table = read_results(tmp_path / "results.csv")
    assert keys[4:8] == ["metrics/precision", "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95"]
    assert table == [[0.0, *values]]


def test_train_track_mlflow_equals_the_run_folder(tiny_data, tmp_path, store):
    opt = train_cli.parse_opt(["--data", str(tiny_data), "--img", "64", "--epochs", "2", "--batch-size", "4",
                               "--workers", "0", "--project", str(tmp_path), "--name", "exp", "--track", "mlflow",
                               "--quiet", "--seed", "3"])
    assert train_cli.main(opt) == 0
    folder = tmp_path / "exp"
    runs = store.search_runs([store.get_experiment_by_name("train").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    summary = json.loads((folder / "summary.json").read_text())
    assert run.info.status == "FINISHED" and run.data.tags["run_dir"] == str(folder)
    assert run.data.params["loss"] == "yolov5" and run.data.params["seed"] == "3"
    assert run.data.params["imgsz"] == "64" and run.data.params["hyp/lr0"] == "0.01"
    assert run.data.metrics["best/mAP50-95"] == pytest.approx(summary["map"])
    assert run.data.metrics["best/mAP50"] == pytest.approx(summary["map50"])
    keys, table = read_results(folder / "results.csv")
    for k in ("train/obj_loss", "metrics/mAP_0.5:0.95", "x/lr0"):
        history = store.get_metric_history(run.info.run_id, k)
        assert [(m.step, pytest.approx(m.value, rel=1e-4)) for m in history] == [(int(r[0]), r[keys.index(k)])
                                                                              for r in table]
    artifacts = {a.path for a in store.list_artifacts(run.info.run_id)}
    assert {"results.png", "confusion_matrix.png"} <= artifacts


def test_compare_tracker_logs_each_folder_once_under_its_parent(tmp_path, store):
    exp = tmp_path / "cmp"
    folders = [fake_run(exp / "runs" / f"{loss}-s{s}", loss, s, m, {"a": m}, {"a": 0.5})
               for loss, s, m in (("yolov5", 0, 0.41), ("yolov5", 1, 0.43), ("ssd", 0, 0.37))]
    (folders[2] / "hyp.yaml").write_text("loss: ssd\nlr0: 0.02\n")
    (exp / "results.md").write_text("Best on bccd.yaml (n = 2 seeds each): yolov5.\n\nCommand: x\n")
    tracker = CompareTracker(exp)
    tracker.run_finished(folders[0])
    tracker.run_finished(folders[0])  # a rerun of the same command: not logged twice
    CompareTracker(exp).comparison_done(folders)  # the next command continues the same parent
    runs = store.search_runs([store.get_experiment_by_name("compare").experiment_id])
    parents = [r for r in runs if "compare_dir" in r.data.tags]
    children = {r.data.tags["run_dir"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id}
    assert len(parents) == 1 and len(runs) == 4 and set(children) == {str(f) for f in folders}
    ssd = children[str(folders[2])]
    assert ssd.data.params["loss"] == "ssd" and ssd.data.params["seed"] == "0" and ssd.data.params["hyp/lr0"] == "0.02"
    assert ssd.data.metrics["best/mAP50-95"] == pytest.approx(0.37)
    assert ssd.data.metrics["best/AP50-95/a"] == pytest.approx(0.37)
    assert [m.value for m in store.get_metric_history(ssd.info.run_id, "metrics/mAP_0.5:0.95")] == pytest.approx(
        [0.37 / 3, 0.37 * 2 / 3, 0.37])
    assert parents[0].data.tags["verdict"] == "Best on bccd.yaml (n = 2 seeds each): yolov5."
    assert {a.path for a in store.list_artifacts(parents[0].info.run_id)} == {"results.md"}


def test_a_tracker_that_cannot_write_is_one_warning(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker / 'mlflow.db'}")
    logger = MlflowLogger()
    logger.start(tmp_path, {"seed": 0}, {"loss": "yolov5"})
    logger.epoch(0, {"metrics/mAP_0.5:0.95": 0.1})
    logger.end(tmp_path, {"map": 0.1, "map50": 0.2, "p": 0.1, "r": 0.1, "epochs": 1})
    logger.close()
    CompareTracker(tmp_path).comparison_done([])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and all("MLflow tracking of" in w and "goes on" in w for w in warnings)


def test_params_name_the_strategy_and_settings():
    params = run_params({"data": "/a/b/bccd.yaml", "cfg": "/m/yolov5n.yaml", "imgsz": 320, "epochs": 60,
                         "batch_size": 16, "seed": 4, "precision": "auto", "optimizer": "SGD", "resume": False},
                        {"loss": "gfl", "assigner": "tal", "lr0": 0.01})
    assert params == {"loss": "gfl", "assigner": "tal", "data": "bccd.yaml", "cfg": "yolov5n.yaml", "imgsz": "320",
                      "epochs": "60", "batch_size": "16", "precision": "auto", "optimizer": "SGD", "seed": "4",
                      "hyp/lr0": "0.01"}
