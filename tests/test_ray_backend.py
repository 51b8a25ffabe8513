"""compare.py --backend ray on one embedded Ray instance shared by this module (4 CPUs and 2 GPUs declared:
Ray accepts a GPU resource on a CPU machine, so the fractional packing is tested without a GPU).

Real train.py runs only where the claim is about training (same row as the local backend; a killed worker
resumed from last.pt); the rest runs stand-in commands that take a fraction of a second.
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import compare as compare_cli  # noqa: E402
from utils.compare import driver  # noqa: E402
from utils.compare.auto import compare_auto  # noqa: E402
from utils.compare.backend import Backend  # noqa: E402
from utils.compare.pack import child_threads, cpu_cores  # noqa: E402
from utils.compare.ray_backend import RayPacker, run_train, task_resources  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIME_KEYS = ("started", "finished", "train_s")


@pytest.fixture(scope="module")
def ray_instance():
    """One embedded Ray for the module, its files in a short temp folder removed afterwards."""
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    temp = tempfile.mkdtemp(prefix="ray")  # Ray's socket paths must stay short
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _temp_dir=temp, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def cli(data, project, *extra):
    return compare_cli.parse_opt(["--data", str(data), "--img", "64", "--batch-size", "4", "--workers", "0",
                                  "--losses", "yolov5", "--seeds", "0", "--project", str(project), *extra])


def rows(exp: Path) -> list[dict]:
    import csv

    with open(exp / "runs.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in csv.DictReader(f)]


def train_pids(folder: Path) -> list[int]:
    """Live train.py processes of the run ``folder`` (a new run names its --project and --name, a resumed
    one its last.pt)."""
    out = []
    for p in Path("/proc").iterdir():
        try:
            cmd = (p / "cmdline").read_text().replace("\0", " ") if p.name.isdigit() else ""
            if "train.py" in cmd and str(folder.parent) in cmd and folder.name in cmd:
                if "Z" not in (p / "stat").read_text().split(")")[-1].split()[0]:
                    out.append(int(p.name))
        except OSError:
            pass
    return out


def test_same_row_on_either_backend_and_mlflow_holds_it(ray_instance, tiny_data, tmp_path, monkeypatch):
    """A (strategy, seed) trained by Ray gives the local backend's runs.csv row, results.csv and thread
    count; --track mlflow has one child run whose metrics are that run's."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'ml' / 'mlflow.db'}")
    assert compare_cli.main(cli(tiny_data, tmp_path / "local", "--epochs", "2", "--noplots")) == 0
    assert compare_cli.main(cli(tiny_data, tmp_path / "ray", "--epochs", "2", "--noplots", "--backend", "ray",
                                "--track", "mlflow")) == 0
    local, remote = tmp_path / "local" / "exp", tmp_path / "ray" / "exp"
    assert rows(local) == rows(remote) and len(rows(local)) == 1
    run = Path("runs") / "yolov5-s0"
    assert (local / run / "results.csv").read_text() == (remote / run / "results.csv").read_text()
    numerics = [json.loads((e / run / "summary.json").read_text())["numerics"] for e in (local, remote)]
    assert numerics[0] == numerics[1] and numerics[0]["threads"] == numerics[1]["threads"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp_id = client.get_experiment_by_name("compare").experiment_id
    found = client.search_runs([exp_id])
    parent = [r for r in found if r.data.tags.get("compare_dir") == str(remote)]
    children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(parent) == 1 and len(children) == 1
    child = children[0]
    summary = json.loads((remote / run / "summary.json").read_text())
    assert child.data.metrics["best/mAP50-95"] == pytest.approx(float(rows(remote)[0]["map"]), abs=1e-5)
    assert child.data.metrics["best/mAP50"] == pytest.approx(summary["map50"])
    assert child.data.params["loss"] == "yolov5" and child.data.params["seed"] == "0"
    history = client.get_metric_history(child.info.run_id, "train/box_loss")
    from utils.io.run_log import read_results

    keys, table = read_results(remote / run / "results.csv")
    assert [(m.step, round(m.value, 9)) for m in history] == [(int(r[0]), round(r[keys.index("train/box_loss")], 9))
                                                             for r in table]


def test_killed_worker_is_retried_and_resumes_from_last_pt(ray_instance, tiny_data, tmp_path, caplog):
    """SIGKILL to the Ray worker while its train.py trains: that train.py dies with it, the task is tried
    again, resumes from last.pt, and the run ends once with one results.csv row per epoch."""
    exp = tmp_path / "exp"
    folder = exp / "runs" / "yolov5-s0"
    killed: dict[str, int] = {}

    def kill_worker() -> None:
        deadline = time.time() + 240
        # after epoch 0's row: a kill between last.pt and that row would resume without the row (the
        # trainer saves last.pt before it validates)
        while time.time() < deadline and len(read_text(folder / "results.csv").splitlines()) < 2:
            time.sleep(0.05)
        for pid in train_pids(folder):
            ppid = int(Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[1])
            killed.update(train=pid, worker=ppid)
            os.kill(ppid, signal.SIGKILL)
            return

    killer = threading.Thread(target=kill_worker, daemon=True)
    killer.start()
    caplog.set_level("INFO")
    assert compare_cli.main(cli(tiny_data, tmp_path, "--epochs", "4", "--noplots", "--backend", "ray")) == 0
    killer.join(5)
    assert killed, "the run ended before a worker could be killed"
    assert not Path(f"/proc/{killed['train']}").exists() or killed["train"] not in train_pids(folder)
    retries = [r.getMessage() for r in caplog.records if "retry 1/3" in r.getMessage()]
    assert len(retries) == 1 and f"--resume {folder / 'weights' / 'last.pt'}" in retries[0]
    assert (exp / "runs" / "yolov5-s0.log").read_text().count(f"Results saved to {folder}\n") == 1
    from utils.io.run_log import read_results

    _, table = read_results(folder / "results.csv")
    assert [int(r[0]) for r in table] == [0, 1, 2, 3]
    assert len(rows(exp)) == 1 and train_pids(folder) == []


def read_text(f: Path) -> str:
    try:
        return f.read_text()
    except OSError:
        return ""


class FakeJob:
    def __init__(self, root: Path, name: str):
        self.name, self.run_dir = name, root / "runs" / name


def stand_in(out: Path, sleep: float) -> list[str]:
    """A command that records its GPU, thread count and times in ``out`` (json), then sleeps."""
    code = ("import json, os, sys, time; t = time.time(); time.sleep(%r); json.dump({'gpu': "
            "os.environ.get('CUDA_VISIBLE_DEVICES'), 'omp': os.environ.get('OMP_NUM_THREADS'), 'nice': os.getpriority(os.PRIO_PROCESS, 0), "
            "'t0': t, 't1': time.time()}, open(%r, 'w'))" % (sleep, str(out)))
    return [sys.executable, "-c", code]


def test_fractional_gpus_share_a_declared_gpu(ray_instance, tmp_path):
    """--jobs 2 on 2 GPUs: each run asks 0.5 GPU, so 4 runs go at once, two on each GPU, with the local
    backend's thread count for 2 runs at once (not Ray's OMP_NUM_THREADS=1) and the driver's niceness."""
    jobs = [FakeJob(tmp_path, f"r{i}") for i in range(4)]
    packer = RayPacker(2, [0, 1], 0, lambda j, w: stand_in(j.run_dir.parent / f"{j.name}.json", 3.0), tmp_path)
    assert (packer.num_cpus, packer.num_gpus, packer.slots) == (1.0, 0.5, 4)
    codes = {}
    packer.run(jobs, lambda j, code, log: codes.__setitem__(j.name, code))
    assert codes == {j.name: 0 for j in jobs}
    seen = [json.loads((tmp_path / "runs" / f"{j.name}.json").read_text()) for j in jobs]
    assert sorted(s["gpu"] for s in seen) == ["0", "0", "1", "1"]
    assert {s["omp"] for s in seen} == {str(child_threads(cpu_cores(), 2))}
    assert {s["nice"] for s in seen} == {os.getpriority(os.PRIO_PROCESS, 0)}  # not Ray's worker niceness
    same_gpu = [s for s in seen if s["gpu"] == "0"]
    assert same_gpu[0]["t0"] < same_gpu[1]["t1"] and same_gpu[1]["t0"] < same_gpu[0]["t1"]  # side by side


def test_interrupt_cancels_tasks_and_leaves_no_process(ray_instance, tmp_path):
    """Ctrl-C in the driver: every task is cancelled and its command stopped before the interrupt goes on."""
    jobs = [FakeJob(tmp_path, f"r{i}") for i in range(2)]
    pid_files = [tmp_path / f"{j.name}.pid" for j in jobs]

    def command(job, workers):
        code = f"import os, time; open({str(tmp_path / (job.name + '.pid'))!r}, 'w').write(str(os.getpid())); time.sleep(600)"
        return [sys.executable, "-c", code]

    def interrupt() -> None:
        deadline = time.time() + 60
        while time.time() < deadline and not all(f.exists() and f.read_text() for f in pid_files):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    # Ctrl-C as a CLI gets it: an earlier test of the suite may have left another SIGINT handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        packer = RayPacker(2, [0, 1], 0, command, tmp_path)
        t0 = time.time()
        with pytest.raises(KeyboardInterrupt):
            packer.run(jobs, lambda *a: pytest.fail("no run may be reported finished"))
    finally:
        signal.signal(signal.SIGINT, previous)
    pids = [int(f.read_text()) for f in pid_files]
    # the commands sleep 600 s so none can finish on its own on a loaded machine (one suite run beside a
    # training once saw a 120 s command end first); the interrupt must stop them long before
    assert time.time() - t0 < 120 and len(pids) == 2
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]


FAKE_TRAIN = """
import json, sys
from pathlib import Path
folder, loss, seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
maps = {"yolov5": [0.30, 0.34, 0.31, 0.36, 0.33], "ssd": [0.27, 0.31, 0.26, 0.30, 0.28]}
m = maps[loss][seed]
folder.mkdir(parents=True, exist_ok=True)
(folder / "opt.yaml").write_text("data: tiny.yaml\\ncfg: yolov5n.yaml\\nimgsz: 64\\nepochs: 1\\n")
(folder / "results.csv").write_text(f"epoch,metrics/mAP_0.5:0.95\\n0,{m}\\n")
(folder / "summary.json").write_text(json.dumps({"loss": loss, "seed": seed, "epochs": 1, "map50": m + 0.2, "map": m,
    "p": 0.5, "r": 0.5, "per_class": {"a": {"p": 0.5, "r": 0.5, "ap50": m + 0.2, "ap": m}}}))
"""


def test_seeds_auto_on_ray_asks_the_same_rounds_as_local(ray_instance, tmp_path, monkeypatch, caplog):
    """--seeds auto with Ray tasks: the rounds, the runs and the verdict equal the local backend's (stand-in
    trainings with given mAPs, so that the statistics, not the training, decide)."""
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    monkeypatch.setattr(driver, "job_command", lambda job, args, w: [sys.executable, str(fake), str(job.run_dir),
                                                                        job.loss, str(job.seed)])
    caplog.set_level("INFO")
    out = {}
    for kind in ("local", "ray"):
        exp = tmp_path / kind
        exp.mkdir()
        jobs = compare_auto(exp, ["yolov5", "ssd"], 5, [], 0, "cmd", jobs=2, backend=Backend(kind))
        out[kind] = (sorted((j.loss, j.seed, j.status) for j in jobs),
                     (exp / "results.md").read_text().split("\n\n")[0], rows(exp))
    assert out["local"] == out["ray"]
    assert len(out["ray"][0]) == 10 and "(5 seeds each)" in out["ray"][1]  # a second round, as Ray tasks
    assert caplog.text.count("--seeds auto: look 2") == 2


def test_a_node_that_cannot_see_the_folder_fails_the_run_in_one_line(ray_instance, tmp_path, caplog):
    assert run_train(["true"], str(tmp_path / "nowhere"), str(tmp_path / "x.log"), 1, None)["unseen"]
    codes = {}
    packer = RayPacker(1, [], 0, lambda j, w: ["true"], tmp_path / "not-shared")
    packer.run([FakeJob(tmp_path, "r0")], lambda j, code, log: codes.__setitem__(j.name, code))
    assert codes == {"r0": 1}
    lines = [r.getMessage() for r in caplog.records if "does not see" in r.getMessage()]
    assert len(lines) == 1 and "filesystem every node sees" in lines[0]


def test_task_resources():
    assert task_resources(2, 3, 16, True) == (4.0, 0.5)  # 2 per GPU, loader workers + 1 CPUs
    assert task_resources(1, 20, 8, True) == (8.0, 1.0)  # never more CPUs than a node has
    assert task_resources(1, 0, 4, False) == (4.0, 0.0)  # CPU only, one at a time: the whole node
    assert task_resources(2, 0, 4, False) == (2.0, 0.0)


def test_without_ray_the_backend_is_one_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert compare_cli.main(cli(tmp_path / "d.yaml", tmp_path, "--backend", "ray")) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["error: --backend ray needs Ray: pip install -r requirements-ray.txt"]
    assert not (tmp_path / "exp").exists()
