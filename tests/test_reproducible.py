"""CPU training is reproducible: the same command gives the same results.csv and weights whatever --workers is
and whatever else loads the machine (docs/reproducibility.md says what it does depend on)."""
import subprocess
import sys

import torch

import train as train_cli
from utils.engine import trainer


def run(data, project, workers: int):
    trainer.train(train_cli.parse_opt(["--data", str(data), "--epochs", "2", "--img", "64", "--batch-size", "4",
                                       "--workers", str(workers), "--project", str(project), "--noplots",
                                       "--quiet", "--device", "cpu"]))
    weights = torch.load(project / "exp/weights/last.pt", weights_only=True)["model"]
    return (project / "exp/results.csv").read_text(), weights


def test_same_results_with_other_workers_and_a_cpu_burning_neighbour(tiny_data, tmp_path):
    csv_quiet, w_quiet = run(tiny_data, tmp_path / "quiet", workers=0)
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        csv_loaded, w_loaded = run(tiny_data, tmp_path / "loaded", workers=2)
        assert burner.poll() is None  # the neighbour burned a core the whole time
    finally:
        burner.kill()
        burner.wait()
    assert csv_loaded == csv_quiet and len(csv_quiet.splitlines()) == 3  # header + 2 epochs, every digit equal
    assert w_loaded.keys() == w_quiet.keys()
    assert all(torch.equal(w_loaded[k], w_quiet[k]) for k in w_quiet)  # bit for bit
