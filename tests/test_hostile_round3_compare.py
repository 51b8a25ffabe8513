"""Issue 36, compare's cases: strategies named twice, a dataset that sets the strategy or changes its
train_defaults between commands, linked run folders, two compares on one folder, --seeds auto --plan
rounds, a SIGKILLed compare, and compare.json / summary.json of the wrong shape. Runs are
tests/fake_train.py (no torch), so every case costs seconds."""
import csv
import hashlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import compare as compare_cli
from tests.fakes import FAKE_TRAIN, use_fake_trainer
from utils.compare.driver import ROOT

MAPS = {f"{loss}-s{s}": v for loss, vs in {"yolov5": [0.50, 0.52, 0.47, 0.49, 0.51],
                                           "gfl": [0.44, 0.46, 0.43, 0.42, 0.43]}.items() for s, v in enumerate(vs)}


def write_data(tmp_path: Path, defaults: str = "") -> Path:
    folder = tmp_path / "ds"
    folder.mkdir(exist_ok=True)
    (folder / "data.yaml").write_text(f"path: {folder}\ntrain: images\nval: images\nnames: [a]\n{defaults}")
    return folder / "data.yaml"


def argv(tmp_path: Path, losses: str = "yolov5,gfl", seeds: str = "0,1", *extra: str) -> list[str]:
    data = tmp_path / "ds/data.yaml"
    return ["--data", str(data if data.exists() else write_data(tmp_path)), "--img", "64", "--workers", "0",
            "--losses", losses, "--seeds", seeds, "--noplots", "--project", str(tmp_path / "runs"), *extra]


def main(args: list[str]) -> int:
    return compare_cli.main(compare_cli.parse_opt(args))


def run_name(line: str) -> str:
    """The --name of a --plan line."""
    cmd = shlex.split(line)
    return cmd[cmd.index("--name") + 1]


def one_error(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in caplog.text, caplog.text
    return errors[0]


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- one strategy named twice ---------------------------------------------------------------------

@pytest.mark.parametrize("losses, kept", [("gfl,gfl+atss", "gfl"), ("yolov5,yolov5", "yolov5"), ("tal,tal+tal", "tal")])
def test_a_strategy_named_twice_is_one_strategy(losses, kept, tmp_path, capsys, caplog):
    assert main(argv(tmp_path, losses, "0,1,2", "--plan")) == 0
    names = [run_name(line) for line in capsys.readouterr().out.splitlines()]
    assert names == [f"{kept}-s{s}" for s in range(3)]
    warned = [m for m in caplog.messages if "already listed" in m]
    twice = losses.split(",")[1]
    assert warned == [f"--losses: '{twice}' is the strategy '{kept}' already listed; it is compared once"]


# ---- the dataset YAML and compare's settings --------------------------------------------------------

@pytest.mark.parametrize("key, value", [("loss", "ota"), ("assigner", "simota")])
def test_a_dataset_that_sets_the_strategy_is_refused(key, value, tmp_path, caplog):
    data = write_data(tmp_path, f"train_defaults:\n  hyp:\n    {key}: {value}\n")
    assert main(argv(tmp_path, "yolov5", "0")) == 1
    assert one_error(caplog) == (f"error: {data}: train_defaults.hyp.{key} ({value}) would make every compared run "
                                 f"train that {key}; compare sets the strategy per run (--losses): remove the key")
    assert not (tmp_path / "runs").exists()


def test_edited_train_defaults_between_reruns_never_mix_in_one_folder(tmp_path, monkeypatch, caplog):
    use_fake_trainer(monkeypatch, tmp_path, MAPS)
    data = write_data(tmp_path, "train_defaults:\n  epochs: 1\n")
    assert main(argv(tmp_path)) == 0
    exp = tmp_path / "runs/exp"
    before = digest(exp)
    data.write_text(data.read_text().replace("epochs: 1", "epochs: 2"))
    assert main(argv(tmp_path, "yolov5,gfl", "0,1,2")) == 1
    assert one_error(caplog) == (f"error: {data}: train_defaults changed: epochs 1 -> 2 since the runs in {exp}; one "
                                 "comparison's runs share them: undo the edit, or pass --new")
    assert digest(exp) == before
    # a folder from before train_defaults were recorded: the runs themselves are compared, as --report does
    state = json.loads((exp / "compare.json").read_text())
    del state["train_defaults"]
    (exp / "compare.json").write_text(json.dumps(state))
    opt = exp / "runs/gfl-s1/opt.yaml"
    opt.write_text(opt.read_text().replace("epochs: 1", "epochs: 2"))
    caplog.clear()
    assert main(argv(tmp_path, "yolov5,gfl", "0,1,2")) == 1
    assert one_error(caplog).startswith(f"error: {exp}: runs differ in epochs: 1 in ")
    assert not (exp / "runs/yolov5-s2").exists()


# ---- --report over linked folders -------------------------------------------------------------------

def fake_run(folder: Path, loss: str, seed: int, value: float) -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"loss": loss, "seed": seed, "epochs": 1, "map50": value,
                                                     "map": value, "per_class": {"a": {"ap": value, "r": 0.5}}}))
    (folder / "opt.yaml").write_text("data: /x/d.yaml\ncfg: /x/m.yaml\nimgsz: 64\nepochs: 1\n")


def test_report_counts_a_linked_run_folder_once(tmp_path):
    runs, elsewhere = tmp_path / "runs", tmp_path / "elsewhere"
    for s in range(3):
        fake_run(runs / f"yolov5-s{s}", "yolov5", s, 0.4 + s / 100)
        fake_run((elsewhere if s == 2 else runs) / f"gfl-s{s}", "gfl", s, 0.3 + s / 100)
    (runs / "gfl-s2").symlink_to(elsewhere / "gfl-s2", target_is_directory=True)
    (runs / "loop").symlink_to(runs, target_is_directory=True)  # a link back up the tree is walked once
    assert main(["--report", str(runs), "--losses", "yolov5,gfl", "--project", str(tmp_path / "out")]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out/exp/results.csv").read_text())))
    assert [(r["loss"], r["n"]) for r in rows] == [("yolov5", "3"), ("gfl", "3")]


# ---- two compares on one folder; a compare killed --------------------------------------------------------

def test_a_second_compare_on_a_folder_in_use_refuses_and_touches_nothing(tmp_path, monkeypatch, caplog):
    use_fake_trainer(monkeypatch, tmp_path, MAPS)
    assert main(argv(tmp_path)) == 0
    exp = tmp_path / "runs/exp"
    before = digest(exp)
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (exp / ".lock").write_text(f"{owner.pid}\n")
        before[".lock"] = hashlib.sha256((exp / ".lock").read_bytes()).hexdigest()
        assert main(argv(tmp_path, "yolov5,gfl", "0,1,2")) == 1
        assert one_error(caplog) == (f"error: {exp} is in use by the running process {owner.pid} (lock file "
                                     f"{exp / '.lock'}); wait for it to end, or choose another --name")
        assert digest(exp) == before  # results.md still the first's: no run of it called failed
    finally:
        owner.kill()
        owner.wait()
    assert main(argv(tmp_path, "yolov5,gfl", "0,1,2")) == 0  # a dead owner's lock is taken over
    assert not (exp / ".lock").exists()


def test_a_run_that_wrote_its_summary_is_finished_whatever_its_exit_code(tmp_path, monkeypatch, caplog):
    use_fake_trainer(monkeypatch, tmp_path, MAPS, fail_after="gfl-s1")
    assert main(argv(tmp_path)) == 0
    rows = {r["loss"]: r for r in csv.DictReader(io.StringIO((tmp_path / "runs/exp/results.csv").read_text()))}
    assert (rows["gfl"]["n"], rows["gfl"]["planned"], rows["gfl"]["failed"]) == ("2", "2", "")
    assert any("[gfl-s1] train.py exited with code 2 after its summary.json; counted as finished" in m
               for m in caplog.messages)


PACKER = """
import sys, pathlib
from utils.compare.pack import Packer
class Job:
    name, run_dir = "j", pathlib.Path(sys.argv[1])
child = [sys.executable, "-c",
         "import os, pathlib, sys, time; pathlib.Path(sys.argv[1]).write_text(str(os.getpid())); time.sleep(120)"]
Packer(1, [], 0, lambda job, w: child + [sys.argv[2]], pathlib.Path(".")).run([Job()], lambda *a: None)
"""


def test_sigkill_to_compare_ends_its_training_child(tmp_path):
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", PACKER, str(tmp_path / "run"), str(pid_file)], cwd=ROOT)
    child = None
    try:
        deadline = time.time() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.time() + 10
        while time.time() < deadline and Path(f"/proc/{child}").exists() and "Z" not in status_of(child):
            time.sleep(0.05)
        assert not Path(f"/proc/{child}").exists() or "Z" in status_of(child), "train.py outlived its compare"
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None and "Z" not in status_of(child):  # only when the test failed
            os.kill(child, signal.SIGKILL)


def status_of(pid: int) -> str:
    try:
        return next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State"))
    except (OSError, StopIteration):
        return "Z"


# ---- --seeds auto --plan rounds ---------------------------------------------------------------------------

def run_plan_lines(lines: list[str], env: dict[str, str]) -> None:
    for line in lines:
        cmd = shlex.split(line)
        subprocess.run([cmd[0], str(FAKE_TRAIN), *cmd[2:]], check=True, env=env, timeout=60)


def test_seeds_auto_plan_then_run_then_plan_advances(tmp_path, capsys):
    table = tmp_path / "maps.json"
    table.write_text(json.dumps(MAPS))
    env = {**os.environ, "FAKE_MAPS": str(table), "FAKE_SLEEP": "0"}
    plan = argv(tmp_path, "yolov5,gfl", "auto", "--max-seeds", "5", "--plan")
    rounds = []
    for _ in range(3):
        assert main(plan) == 0
        lines = capsys.readouterr().out.splitlines()
        rounds.append(sorted(run_name(line) for line in lines if line))
        run_plan_lines(lines, env)
    assert rounds == [sorted(f"{l}-s{s}" for l in ("yolov5", "gfl") for s in range(3)),
                      ["gfl-s3", "gfl-s4", "yolov5-s3", "yolov5-s4"], []]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["exp"]


# ---- state files of the wrong shape ------------------------------------------------------------------------

@pytest.mark.parametrize("content, problem", [
    ('{"settings": {}, "looks": [{"yolov5": [[0, 1]]}]}', "look 1 must map each strategy to a list of seeds"),
    ('{"settings": {}, "looks": [{"yolov5": null}]}', "look 1 must map each strategy to a list of seeds"),
    ('{"settings": {}, "looks": [{"yolov5": [null]}]}', "look 1 must map each strategy to a list of seeds"),
    ('{"settings": {}, "looks": [], "auto": {"max_seeds": "x", "stopped": {}}}', "'auto' must be"),
    ("DIR", "cannot be read as a file"),
])
def test_compare_json_of_the_wrong_shape_is_one_line(content, problem, tmp_path, caplog):
    f = tmp_path / "runs/exp/compare.json"
    f.parent.mkdir(parents=True)
    f.mkdir() if content == "DIR" else f.write_text(content)
    assert main(argv(tmp_path, "yolov5", "0", "--plan")) == 1
    line = one_error(caplog)
    assert line.startswith(f"error: {f}") and problem in line
    assert line.endswith("delete it (its runs are kept) or pass --new")


@pytest.mark.parametrize("change, problem", [
    ({"per_class": [0.1, 0.2]}, "'per_class' must map class names to {\"ap\": ..., \"r\": ...}, got list"),
    ({"seed": None}, "'seed' must be an integer >= 0, got None"),
    ({"per_class": {"a": {"ap": 0.3}}}, "per_class 'a' lacks 'r'"),
    ({"map": "abc"}, "'map' must be a finite number, got 'abc'"),
    ({"per_class": {"a": {"ap": "x", "r": 0.5}}}, "per_class 'a' 'ap' must be a finite number, got 'x'"),
    ({"epochs": True}, "'epochs' must be an integer >= 1, got True"),
])
def test_report_on_a_summary_of_the_wrong_shape_is_one_line_naming_it(change, problem, tmp_path, caplog):
    for s in range(2):
        fake_run(tmp_path / "runs" / f"yolov5-s{s}", "yolov5", s, 0.4 + s / 100)
    bad = tmp_path / "runs/yolov5-s1/summary.json"
    bad.write_text(json.dumps({**json.loads(bad.read_text()), **change}))
    assert main(["--report", str(tmp_path / "runs"), "--losses", "yolov5", "--project", str(tmp_path / "out")]) == 1
    assert one_error(caplog) == f"error: {bad}: {problem}; delete the file to train that run again"


def test_a_huge_max_seeds_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        compare_cli.parse_opt(["--seeds", "auto", "--max-seeds", "1000000000"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].endswith("--max-seeds: at most 1000 seeds per strategy, got 1000000000")
