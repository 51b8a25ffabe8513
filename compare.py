"""Compare loss strategies: train each with the same data, model, schedule and seeds, then tabulate.

    python compare.py --data data/bccd.yaml --cfg models/yolov5n.yaml --img 320 --epochs 60 \\
                      --losses yolov5,ota,freeanchor,gfl,ssd,dw --seeds 0,1

Writes runs/compare/exp*/ with results.md / results.csv (mAP50, mAP50-95, per-class AP as mean ± std
over seeds, train images/s, loss ms/step, peak memory), map_vs_epoch.png and pr_curves.png. Each run
is a train.py process; runs go seed by seed (every strategy's first seed before any second one) and the
tables are rewritten after each run. A run that fails is reported as failed and the others go on.
Rerunning the same command continues in the same folder: finished runs are read back, interrupted ones
resume.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# the settings that make two compare commands "the same comparison"
SAME_IF = ("data", "cfg", "img", "epochs", "batch_size", "losses", "seeds", "workers")


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data/shapes.yaml"), help="dataset YAML")
    p.add_argument("--cfg", default=str(ROOT / "models/yolov5n.yaml"), help="model YAML")
    p.add_argument("--img", "--imgsz", type=int, default=None, help="image size (default: train.py's)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default: train.py's)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: train.py's)")
    p.add_argument("--losses", default="yolov5,ota,freeanchor,gfl,ssd,dw", help="comma-separated strategies")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers per run")
    p.add_argument("--project", default=str(ROOT / "runs/compare"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--new", action="store_true", help="start a new folder even if an unfinished identical comparison exists")
    p.add_argument("--report", action="store_true",
                   help="only rewrite the tables and plots from the finished runs; train nothing "
                        "(unfinished runs show as pending)")
    opt = p.parse_args(argv)
    opt.losses = [x.strip() for x in opt.losses.split(",") if x.strip()]
    opt.seeds = [int(x) for x in str(opt.seeds).split(",") if x.strip()]
    return opt


def experiment_dir(opt: argparse.Namespace) -> Path:
    """The newest project/name* folder made by the same comparison, else a new one."""
    from utils.io.paths import increment_path

    key = {k: getattr(opt, k) for k in SAME_IF}
    if not opt.new:
        for d in sorted(Path(opt.project).glob(f"{opt.name}*"), key=lambda p: p.stat().st_mtime, reverse=True):
            f = d / "compare.json"
            if f.exists() and json.loads(f.read_text()) == json.loads(json.dumps(key)):
                return d
    exp = increment_path(Path(opt.project) / opt.name, mkdir=True)
    (exp / "compare.json").write_text(json.dumps(key, indent=1))
    return exp


def main(opt: argparse.Namespace) -> int:
    from utils.engine.compare import compare

    train_args = ["--data", opt.data, "--cfg", opt.cfg, "--workers", str(opt.workers)]
    for flag, value in (("--img", opt.img), ("--epochs", opt.epochs), ("--batch-size", opt.batch_size)):
        if value is not None:
            train_args += [flag, str(value)]
    command = "python " + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    try:
        exp = experiment_dir(opt)
        jobs = compare(exp, opt.losses, opt.seeds, train_args, command, train=not opt.report)
    except (ValueError, FileNotFoundError) as e:
        logging.getLogger("compare").error("error: %s", e)
        return 1
    return 0 if all(j.status == "done" or (opt.report and j.status == "pending") for j in jobs) else 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(parse_opt()))
