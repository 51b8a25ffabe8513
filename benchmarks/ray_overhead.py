"""The cost of compare.py --backend ray against the local backend: a 2-strategy x 3-seed comparison on a tiny
generated dataset, once with each backend (each in a fresh folder, one after the other, on this machine).

    python benchmarks/ray_overhead.py [--epochs 1] [--img 64] [--losses yolov5,ssd] [--seeds 0,1,2]

Prints the embedded Ray start-up (compare.py's own log line), the wall time of each command, and the
per-run time (runs.csv train_s: from a run's launch to compare.py seeing its end) with Ray's extra per
run as a share of the local run's time.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import write_tiny_dataset  # noqa: E402


def run(backend: str, data: Path, project: Path, opt: argparse.Namespace) -> tuple[float, list[float], str]:
    cmd = [sys.executable, str(ROOT / "compare.py"), "--data", str(data), "--img", str(opt.img), "--epochs",
           str(opt.epochs), "--batch-size", "4", "--workers", "0", "--losses", opt.losses, "--seeds", opt.seeds,
           "--noplots", "--project", str(project), "--backend", backend]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    t0 = time.time()
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=True).stdout
    wall = time.time() - t0
    with open(project / "exp" / "runs.csv", newline="") as f:
        per_run = [float(r["train_s"]) for r in csv.DictReader(f)]
    return wall, per_run, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--img", type=int, default=64)
    p.add_argument("--losses", default="yolov5,ssd")
    p.add_argument("--seeds", default="0,1,2")
    opt = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = write_tiny_dataset(Path(tmp) / "shapes")
        results = {b: run(b, data, Path(tmp) / b, opt) for b in ("local", "ray")}
    start = re.search(r"embedded instance started in ([\d.]+) s", results["ray"][2])
    local_mean, ray_mean = (statistics.mean(results[b][1]) for b in ("local", "ray"))
    print(f"| backend | wall s | runs | mean s per run | Ray start-up s |\n|---|---|---|---|---|")
    for b in ("local", "ray"):
        wall, per_run, _ = results[b]
        print(f"| {b} | {wall:.1f} | {len(per_run)} | {statistics.mean(per_run):.2f} | "
              f"{start.group(1) if b == 'ray' and start else '-'} |")
    print(f"\nper run: ray {ray_mean - local_mean:+.2f} s ({(ray_mean / local_mean - 1) * 100:+.1f} %) against local")
    print("command: python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]))


if __name__ == "__main__":
    main()
