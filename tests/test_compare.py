"""compare.py on a tiny built-in dataset: 2 strategies x 3 seeds packed 2 at a time, the tables held to
an independent computation (scipy's own t-test), --plan, --report, failures, and the packing rules on
given numbers (the CUDA paths cannot run on a CPU machine)."""
import csv
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import compare as compare_cli
from utils.compare import pack as compare_pack
from utils.compare.driver import ROOT, hyp_for
from utils.compare.stats import seeds_needed
from utils.io.run_log import read_results
from tests.conftest import write_tiny_dataset

LOSSES, SEEDS = ["yolov5", "ssd"], [0, 1, 2]


def args(data, project, losses="yolov5,ssd", seeds="0,1,2", *extra):
    return compare_cli.parse_opt(["--data", str(data), "--img", "64", "--epochs", "1", "--batch-size", "4",
                                  "--workers", "0", "--losses", losses, "--seeds", seeds, "--project", str(project),
                                  *extra])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def packed(tiny_data, tmp_path_factory):
    """The 6 runs, 2 at a time; returns the comparison folder."""
    project = tmp_path_factory.mktemp("compare")
    assert compare_cli.main(args(tiny_data, project, "yolov5,ssd", "0,1,2", "--jobs", "2", "--noplots")) == 0
    return project / "exp"


def test_packed_runs_overlap_and_are_all_listed(packed):
    runs = read_csv(packed / "runs.csv")
    assert sorted((r["loss"], int(r["seed"])) for r in runs) == sorted((l, s) for l in LOSSES for s in SEEDS)
    for r in runs:
        summary = json.loads((packed / "runs" / f"{r['loss']}-s{r['seed']}" / "summary.json").read_text())
        assert float(r["map"]) == pytest.approx(summary["map"], abs=1e-5)
        assert r["epochs"] == "1" and float(r["train_s"]) > 0
        assert {f"ap_{c}" for c in summary["per_class"]} <= set(r)
        assert r["collapsed"].split(";") if r["collapsed"] else [] == [
            c for c, v in summary["per_class"].items() if v["r"] == 0]
    spans = [(float(r["started"]), float(r["finished"])) for r in runs]
    overlaps = sum(a0 < b1 and b0 < a1 for i, (a0, a1) in enumerate(spans) for b0, b1 in spans[i + 1:])
    assert overlaps >= 1
    for f in ("results.md", "map_vs_epoch.png", "points.png"):
        assert (packed / f).is_file()


def fake_run(folder: Path, loss: str, seed: int, map_: float, ap: dict, recall: dict, imgsz: int = 64) -> Path:
    """A finished run folder as train.py leaves it (summary.json, opt.yaml, results.csv), given numbers."""
    folder.mkdir(parents=True)
    per_class = {c: {"p": 0.5, "r": recall[c], "ap50": ap[c] + 0.2, "ap": ap[c]} for c in ap}
    (folder / "summary.json").write_text(json.dumps({"loss": loss, "seed": seed, "epochs": 3, "map50": map_ + 0.3,
                                                     "map": map_, "per_class": per_class}))
    (folder / "opt.yaml").write_text(f"data: /x/bccd.yaml\ncfg: /x/yolov5n.yaml\nimgsz: {imgsz}\nepochs: 3\n")
    (folder / "results.csv").write_text("epoch,metrics/mAP_0.5:0.95\n" + "".join(
        f"{e},{map_ * (e + 1) / 3}\n" for e in range(3)))
    return folder


MAPS = {"yolov5": [0.446, 0.393, 0.431, 0.480], "ssd": [0.351, 0.187, 0.415]}


def test_results_equal_an_independent_computation(tmp_path, caplog):
    for loss, maps in MAPS.items():
        for seed, m in enumerate(maps):
            collapsed = loss == "yolov5" and seed in (1, 3)
            fake_run(tmp_path / "runs" / f"{loss}-s{seed}", loss, seed, m, {"Platelets": m / 3, "RBC": m},
                     {"Platelets": 0.0 if collapsed else 0.6, "RBC": 0.8})
    assert compare_cli.main(compare_cli.parse_opt(["--report", str(tmp_path / "runs"), "--losses", "yolov5,ssd",
                                                   "--project", str(tmp_path / "out")])) == 0
    out = tmp_path / "out" / "exp"
    rows = {r["loss"]: r for r in read_csv(out / "results.csv")}
    a, b = np.array(MAPS["yolov5"]), np.array(MAPS["ssd"])
    for loss, x in (("yolov5", a), ("ssd", b)):
        lo, hi = stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
        assert (rows[loss]["n"], rows[loss]["map_mean"], rows[loss]["map_std"]) == (
            str(len(x)), f"{x.mean():.3f}", f"{x.std(ddof=1):.3f}")
        assert (rows[loss]["map_ci_low"], rows[loss]["map_ci_high"]) == (f"{lo:.3f}", f"{hi:.3f}")
        assert rows[loss]["map50_mean"] == f"{x.mean() + 0.3:.3f}"
    assert rows["yolov5"]["verdict"] == "baseline" and rows["yolov5"]["map_p"] == ""
    test = stats.ttest_ind(b, a, equal_var=False)
    ci = test.confidence_interval(0.95)
    assert (rows["ssd"]["map_diff"], rows["ssd"]["map_diff_ci_low"], rows["ssd"]["map_diff_ci_high"]) == (
        f"{b.mean() - a.mean():.3f}", f"{ci.low:.3f}", f"{ci.high:.3f}")
    assert rows["ssd"]["map_p"] == f"{test.pvalue:.4f}" and test.pvalue > 0.05
    # the seeds estimate from the observed stds (seeds_needed itself: tests/test_compare_stats.py)
    k = seeds_needed(b.mean() - a.mean(), a.std(ddof=1), b.std(ddof=1))
    total = max(k, 4)
    assert rows["ssd"]["verdict"] == (f"not resolved (4 seeds of yolov5, 3 of ssd; about {total} seeds per strategy in "
                                      f"all ({total - 3} more) would resolve a difference this size)")
    assert (rows["yolov5"]["collapsed_Platelets"], rows["ssd"]["collapsed_Platelets"], rows["yolov5"]["collapsed_RBC"]) == ("2", "0", "0")
    assert rows["ssd"]["ap_Platelets_mean"] == f"{(b / 3).mean():.3f}"
    md = (out / "results.md").read_text()
    assert "Collapsed: Platelets collapsed in 2 of 4 yolov5 runs." in md and "### Platelets" in md
    runs = read_csv(out / "runs.csv")
    assert [r["collapsed"] for r in runs if r["loss"] == "yolov5"] == ["", "Platelets", "", "Platelets"]
    assert (out / "points.png").is_file() and (out / "map_vs_epoch.png").is_file()


def test_packed_results_match_runs_csv(packed):
    runs = read_csv(packed / "runs.csv")
    for row in read_csv(packed / "results.csv"):
        maps = [float(r["map"]) for r in runs if r["loss"] == row["loss"]]
        assert row["n"] == "3" and row["map_mean"] == f"{np.mean(maps):.3f}"


def test_rerun_reads_back_and_report_rewrites(packed, tiny_data):
    mtime = (packed / "runs" / "yolov5-s0" / "summary.json").stat().st_mtime
    (packed / "results.csv").unlink()
    opt = args(tiny_data, packed.parent, "yolov5,ssd", "0,1,2", "--noplots", "--report")
    assert opt.report == [] and compare_cli.main(opt) == 0
    assert [r["n"] for r in read_csv(packed / "results.csv")] == ["3", "3"]
    assert compare_cli.main(args(tiny_data, packed.parent, "yolov5,ssd", "0,1,2", "--noplots", "--jobs", "2")) == 0
    assert (packed / "runs" / "yolov5-s0" / "summary.json").stat().st_mtime == mtime
    assert not (packed.parent / "exp2").exists()
    # more seeds and another strategy join the same folder: only the new runs would train
    more = compare_cli.experiment_dir(args(tiny_data, packed.parent, "yolov5,ota,ssd", "0,1,2,3", "--noplots"), create=False)
    assert more == packed


def test_plan_prints_the_commands_and_trains_nothing(tiny_data, tmp_path, capsys):
    assert compare_cli.main(args(tiny_data, tmp_path, "yolov5,ssd", "0,1,2", "--plan")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    parsed = [shlex.split(line) for line in lines]
    for cmd, (seed, loss) in zip(parsed, [(s, l) for s in SEEDS for l in LOSSES]):
        assert cmd[0] == sys.executable and cmd[1].endswith("train.py")
        flags = dict(zip(cmd[2::2], cmd[3::2]))
        assert flags["--seed"] == str(seed) and flags["--name"] == f"{loss}-s{seed}"
        assert flags["--project"] == str(tmp_path / "exp" / "runs") and flags["--hyp"] == str(hyp_for(loss))
        assert flags["--img"] == "64" and flags["--epochs"] == "1" and flags["--workers"] == "0"
    assert list(tmp_path.iterdir()) == []


def test_a_plan_line_runs_from_another_folder(tmp_path, capsys, monkeypatch):
    tiny_data = write_tiny_dataset(tmp_path)
    monkeypatch.chdir(tmp_path)  # typed relative to here: the dataset; the model YAML is the repository's
    opt = compare_cli.parse_opt(["--data", tiny_data.name, "--cfg", "models/yolov5n.yaml", "--img", "64",
                                 "--epochs", "1", "--batch-size", "4", "--workers", "0", "--losses", "yolov5",
                                 "--seeds", "0", "--project", "plans", "--noplots", "--plan"])
    assert compare_cli.main(opt) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    cmd = shlex.split(line)
    value = {flag: cmd[cmd.index(flag) + 1] for flag in ("--data", "--cfg", "--project")}
    assert value == {"--data": str(tiny_data), "--cfg": str(ROOT / "models/yolov5n.yaml"),
                     "--project": str(tmp_path / "plans/exp/runs")}
    done = subprocess.run(line, shell=True, cwd="/tmp", capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _, rows = read_results(tmp_path / "plans/exp/runs/yolov5-s0/results.csv")
    assert len(rows) == 1


def test_report_merges_folders_and_refuses_bad_sets(packed, tiny_data, tmp_path, caplog):
    a, b = tmp_path / "a", tmp_path / "b"
    for loss, where in (("yolov5", a), ("ssd", b)):
        for s in SEEDS:
            shutil.copytree(packed / "runs" / f"{loss}-s{s}", where / f"{loss}-s{s}")

    def report(*dirs):
        return compare_cli.main(compare_cli.parse_opt(["--report", *map(str, dirs), "--losses", "yolov5,ssd",
                                                       "--project", str(tmp_path / "out")]))

    assert report(a, b) == 0
    merged, original = read_csv(tmp_path / "out" / "exp" / "results.csv"), read_csv(packed / "results.csv")
    keys = ["loss", "n", "map_mean", "map_ci_low", "map_ci_high", "map_diff", "map_p", "verdict"]
    assert [[r[k] for k in keys] for r in merged] == [[r[k] for k in keys] for r in original]

    shutil.copytree(a / "yolov5-s1", b / "again")
    caplog.clear()
    assert report(a, b) == 1
    assert "yolov5 seed 1 is there twice" in caplog.text and str(b / "again") in caplog.text
    shutil.rmtree(b / "again")

    opt_file = b / "ssd-s2" / "opt.yaml"
    opt_file.write_text(opt_file.read_text().replace("imgsz: 64", "imgsz: 96"))
    caplog.clear()
    assert report(a, b) == 1 and "runs differ in imgsz" in caplog.text and str(b / "ssd-s2") in caplog.text

    (tmp_path / "empty").mkdir()
    caplog.clear()
    assert report(a, tmp_path / "empty") == 1
    assert f"no finished run (a folder with summary.json) under {tmp_path / 'empty'}" in caplog.text


def test_a_failing_run_is_reported(tiny_data, tmp_path):
    """(A failing run among packed ones that go on: test_packer_probes_gpu_memory_then_packs.)"""
    bad = args(tiny_data, tmp_path, "yolov5", "0")
    bad.cfg = str(tmp_path / "missing.yaml")
    assert compare_cli.main(bad) == 2
    (row,) = read_csv(next(tmp_path.glob("exp*/results.csv")))
    assert (row["n"], row["planned"], row["failed"], row["map_mean"]) == ("0", "1", "yolov5-s0", "")
    assert "missing.yaml" in (tmp_path / "exp" / "runs" / "yolov5-s0.log").read_text()


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_jobs_is_one_line_exit_2(value, capsys):
    with pytest.raises(SystemExit) as e:
        compare_cli.parse_opt(["--jobs", value])
    assert e.value.code == 2
    assert f"--jobs: expected a positive integer or 'auto', got '{value}'" in capsys.readouterr().err


def test_unknown_strategy_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="unknown loss 'otaa'"):
        hyp_for("otaa")


GiB = 2 ** 30


def test_choose_jobs_from_memory_and_cores():
    assert compare_pack.choose_jobs([80 * GiB], 2 * GiB, cores=16) == [8]  # 26 fit; 16 cores feed 8
    assert compare_pack.choose_jobs([80 * GiB], 2 * GiB, cores=64) == [26]  # 80 // (2 * 1.5)
    assert compare_pack.choose_jobs([40 * GiB, 20 * GiB], 4 * GiB, cores=64) == [6, 3]
    assert compare_pack.choose_jobs([40 * GiB, 20 * GiB], 4 * GiB, cores=8) == [2, 2]
    assert compare_pack.choose_jobs([GiB], 2 * GiB, cores=16) == [1]  # too little room still runs one
    assert compare_pack.choose_jobs([GiB, GiB], 0, cores=16) == [1, 1]  # nothing measured


def test_workers_threads_and_progress():
    assert compare_pack.split_workers(8, cores=16, total_jobs=7) == 1
    assert compare_pack.split_workers(8, cores=32, total_jobs=4) == 7
    assert compare_pack.split_workers(8, cores=16, total_jobs=1) == 8
    assert compare_pack.split_workers(0, cores=16, total_jobs=4) == 0
    assert compare_pack.child_threads(16, 7) == 2 and compare_pack.child_threads(2, 4) == 1
    assert compare_pack.eta_seconds(100.0, 2, 6) == 300.0 and compare_pack.eta_seconds(5.0, 0, 6) is None
    assert compare_pack.progress_line(3, 12, 65, 195) == "[#####...............] 3/12 runs, 0:01:05 elapsed, ETA 0:03:15"


class FakeJob:
    def __init__(self, root: Path, name: str):
        self.name, self.run_dir = name, root / "runs" / name


def test_packer_probes_gpu_memory_then_packs(tmp_path, monkeypatch):
    """--jobs auto on two fake GPUs with 10 GiB free where each running process takes 1 GiB: one probe
    run per GPU until one logs an epoch, then each GPU could take 10 // 1.5 = 6 runs, cut to
    cores // 2 = 4 in all; a failing run does not stop the others."""
    packers = []

    def free(gpu):
        return 10 * GiB - GiB * sum(r.gpu == gpu for r in packers[0].running)

    monkeypatch.setattr(compare_pack, "cuda_free_bytes", free)
    # a fake train.py: one results.csv row after 0.6 s, then it records its environment and times
    script = ("import json, os, sys, time, pathlib; d = pathlib.Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True);"
              "t = time.time(); time.sleep(0.6); (d / 'results.csv').write_text('epoch\\n0\\n'); time.sleep(2.5);"
              "(d / 'env.json').write_text(json.dumps([os.environ.get('CUDA_VISIBLE_DEVICES'), sys.argv[2:], t, time.time()]));"
              "sys.exit(3 if d.name == 'j3' else 0)")
    jobs = [FakeJob(tmp_path, f"j{i}") for i in range(8)]
    ended = []
    packer = compare_pack.Packer("auto", [0, 1], 8, lambda job, workers: [
        sys.executable, "-c", script, str(job.run_dir), "--workers", str(workers)], tmp_path, cores=8)
    packers.append(packer)
    packer.run(jobs, lambda job, rc, log: ended.append((job.name, rc)))
    assert sorted(ended) == [(f"j{i}", 3 if i == 3 else 0) for i in range(8)]
    assert packer.capacity == {0: 2, 1: 2} and packer.peak_bytes == GiB
    envs = {j.name: json.loads((j.run_dir / "env.json").read_text()) for j in jobs}
    assert {e[0] for e in envs.values()} == {"0", "1"}  # CUDA_VISIBLE_DEVICES: both GPUs used
    assert envs["j0"][1] == ["--workers", "8", "--device", "0"]  # the probe keeps --workers
    assert envs["j7"][1] == ["--workers", "1", "--device", "0"]  # 8 cores // 4 runs - 1
    spans = [(e[2], e[3]) for e in envs.values()]
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) == 4
