"""DDP through torchrun: 2 CPU processes with Gloo train a tiny set and end with identical weights."""
import csv
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch


ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port no one listens on now: a fixed one collides when several suites run on one machine."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_torchrun_two_cpu_processes(tiny_data, tmp_path):
    data = tiny_data
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "train.py"), "--data", str(data), "--epochs", "2", "--img", "64", "--batch-size", "4",
           "--workers", "0", "--project", str(tmp_path / "runs"), "--quiet", "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "DDP: weights identical on 2 ranks" in log
    assert log.count("Validating ") == 1  # rank 0 only
    assert log.count("warm-up takes") == 1  # the schedule's warnings: said once, not once per rank
    run = tmp_path / "runs" / "exp"
    assert not (tmp_path / "runs" / "exp2").exists()  # both ranks share rank 0's folder
    with open(run / "results.csv", newline="") as f:
        assert [r[0].strip() for r in csv.reader(f)][1:] == ["0", "1"]
    assert torch.load(run / "weights" / "last.pt", weights_only=True)["epoch"] == 1
