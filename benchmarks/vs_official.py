"""Wall time of our train.py against the official YOLOv5 train.py on the same arguments (issue 29).

    python benchmarks/vs_official.py --official "/path/to/venv/bin/python -m yolov5.train" \\
        --official-data /path/to/bccd_official.yaml [--data data/bccd.yaml] [--precisions auto,fp32,bf16] \\
        [--repeats 3] [--epochs 3]

Runs, ``--repeats`` times and alternating (so drifting load hits every command alike), the official
command and ours once per ``--precisions`` entry, each with

    --cfg models/yolov5n.yaml --img 320 --batch-size 16 --epochs 3 --noval --noplots --workers 2

(the official one also with ``--weights ''``: its default is a pretrained yolov5s.pt it would download),
each in a fresh temporary project folder, and prints the wall time of every run, the mean per command
and the mean's ratio to the official mean. A run that fails is reported with the end of its output.
Whole commands are timed: interpreter start, imports, dataset scan, training, the final validation
and the checkpoint writes, as a user waits for them.

The official YOLOv5 is not a dependency of this project; docs/cpu_bf16.md says how the measured one
was installed (PyPI's ``yolov5`` package, 7.0.14, in a side virtual environment) and what its command
needed to run offline. ``--official-data`` is the same dataset as ``--data`` in the official format
(absolute ``path``: the official code resolves a relative one against its own package folder).
Absolute times on a shared machine are noise; read the ratios, taken on a quiet machine.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--img", "320", "--batch-size", "16", "--noval", "--noplots", "--workers", "2"]


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=True, help="the official train command, e.g. 'python -m yolov5.train'")
    p.add_argument("--official-data", required=True, help="the dataset YAML in the official format")
    p.add_argument("--data", default="data/bccd.yaml", help="our dataset YAML")
    p.add_argument("--cfg", default="models/yolov5n.yaml")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--precisions", default="auto,fp32,bf16", help="ours, once per entry (--precision)")
    p.add_argument("--repeats", type=int, default=3)
    return p.parse_args(argv)


def commands(opt: argparse.Namespace, project: Path) -> dict[str, list[str]]:
    """Label -> argv, the official first."""
    cfg = str((ROOT / opt.cfg).resolve())
    common = ["--cfg", cfg, "--epochs", str(opt.epochs), *COMMON]
    out = {"official": [*shlex.split(opt.official), "--weights", "", "--data", opt.official_data, *common,
                        "--project", str(project / "official")]}
    for p in opt.precisions.split(","):
        out[f"ours {p}"] = [sys.executable, str(ROOT / "train.py"), "--data", opt.data, *common,
                            "--precision", p, "--project", str(project / p)]
    return out


def timed(argv: list[str]) -> float | None:
    """Wall seconds of ``argv`` run from the repository root, or None (its output's end printed) if it fails."""
    t0 = time.perf_counter()
    res = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())
    seconds = time.perf_counter() - t0
    if res.returncode:
        print(f"FAILED (rc {res.returncode}): {shlex.join(argv)}\n{(res.stdout + res.stderr)[-1500:]}")
        return None
    return seconds


def main(argv: list[str] | None = None) -> int:
    opt = parse_opt(argv)
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(opt, Path(tmp))
        for r in range(opt.repeats):
            for label, argv_ in cmds.items():
                s = timed(argv_)
                load = os.getloadavg()[0]
                print(f"repeat {r + 1}  {label:<12} {'failed' if s is None else f'{s:6.1f} s'}  (load {load:.2f})",
                      flush=True)
                if s is not None:
                    times.setdefault(label, []).append(s)
    if "official" not in times:
        print("the official command never finished: no ratios")
        return 1
    ref = statistics.mean(times["official"])
    print(f"\n{'command':<12} {'n':>2} {'mean s':>7} {'min s':>6} {'ratio':>6}")
    for label, ts in times.items():
        print(f"{label:<12} {len(ts):>2} {statistics.mean(ts):7.1f} {min(ts):6.1f} {statistics.mean(ts) / ref:5.2f}x")
    print(f"arguments: --cfg {opt.cfg} --epochs {opt.epochs} {' '.join(COMMON)}; {os.cpu_count()} CPUs")
    print("command: python benchmarks/vs_official.py " + shlex.join(sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
