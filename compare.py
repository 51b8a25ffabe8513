"""Compare loss strategies: train each with the same data, model, schedule and seeds, then tabulate.

    python compare.py --data data/bccd.yaml --cfg models/yolov5n.yaml --img 320 --epochs 60 \\
                      --losses yolov5,ota,freeanchor,gfl,ssd,dw --seeds 0,1,2,3,4

Writes runs/compare/exp*/: runs.csv (one row per finished run: mAP, per-class AP, collapsed classes,
start and end times), results.csv / results.md (per strategy: mean ± std over seeds, the 95 % interval
of the mean, and against the first of --losses the difference with Welch's 95 % interval, p and a
verdict: better / worse when p < 0.05, else "not resolved" with about how many seeds would resolve
it; the same per class, and how often a class collapsed), map_vs_epoch.png, points.png, pr_curves.png.

Each run is a train.py process; runs go seed by seed (every strategy's first seed before any second
one), --jobs of them at once per device, and the tables are rewritten after each run. A run that
fails is reported as failed and the others go on. Rerunning with the same training settings
continues in the same folder (more --seeds or --losses included): finished runs are read back,
interrupted ones resume.

--precision (auto / fp32 / bf16) goes to every train.py run and is a compared setting: runs.csv records
what each run resolved it to, a different --precision starts another folder, and --report refuses to
mix runs of different precision.

    python compare.py ... --plan > jobs.txt          # the train.py commands, one per line; trains nothing
    python compare.py --report DIR [DIR ...]         # tables from finished run folders, wherever they ran
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

from utils.compare.pack import parse_jobs  # noqa: E402  (after the sys.path line above)
from utils.io.cli import HelpFormatter, add_precision_flag, non_negative_int, positive_int  # noqa: E402

# the training settings that make two compare commands one comparison (one folder); strategies and
# seeds may differ, so more seeds or another strategy join the runs already there
SAME_IF = ("data", "cfg", "img", "epochs", "batch_size", "workers", "noplots", "precision")


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one seed")
    return values


def name_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected at least one strategy")
    return values


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data/shapes.yaml"), help="dataset YAML")
    p.add_argument("--cfg", default=str(ROOT / "models/yolov5n.yaml"), help="model YAML")
    p.add_argument("--img", "--imgsz", type=positive_int, default=None, help="image size (default: train.py's)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs per run (default: train.py's)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default: train.py's)")
    p.add_argument("--losses", type=name_list, default="yolov5,ota,freeanchor,gfl,ssd,dw",
                   help="comma-separated strategies; the first is the baseline of the verdicts")
    p.add_argument("--seeds", type=int_list, default="0,1,2",
                   help="comma-separated seeds (the seed alone moves mAP50-95 by a few points: see README)")
    p.add_argument("--jobs", type=parse_jobs, default="auto",
                   help="runs at once per device; auto: from the free GPU memory after a first run and the "
                        "CPU cores on CUDA, 1 on CPU")
    p.add_argument("--workers", type=non_negative_int, default=8, help="max dataloader workers per run (shared out when packed)")
    p.add_argument("--noplots", action="store_true",
                   help="pass --noplots to train.py (no per-run pictures; the comparison's own plots are made)")
    add_precision_flag(p)  # passed to every run; runs.csv records what each resolved to
    p.add_argument("--project", default=str(ROOT / "runs/compare"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--new", action="store_true", help="start a new folder even if an unfinished identical comparison exists")
    p.add_argument("--plan", action="store_true",
                   help="print the train.py command of every (strategy, seed), one per line, and train nothing")
    p.add_argument("--report", nargs="*", metavar="DIR", default=None,
                   help="train nothing; without DIR rewrite this comparison's tables from its finished runs, "
                        "with DIRs build them in a new project/name folder from the finished runs under them")
    return p.parse_args(argv)


def experiment_dir(opt: argparse.Namespace, create: bool = True) -> Path:
    """The newest project/name* folder made with the same training settings, else a new one (only
    named, not made, when ``create`` is False)."""
    from utils.io.paths import increment_path

    key = {k: getattr(opt, k) for k in SAME_IF}
    if not opt.new:
        for d in sorted(Path(opt.project).glob(f"{opt.name}*"), key=lambda p: p.stat().st_mtime, reverse=True):
            f = d / "compare.json"
            if f.exists() and json.loads(f.read_text()) == json.loads(json.dumps(key)):
                return d
    exp = increment_path(Path(opt.project) / opt.name, mkdir=create)
    if create:
        (exp / "compare.json").write_text(json.dumps(key, indent=1))
    return exp


def main(opt: argparse.Namespace) -> int:
    from utils.compare.driver import compare, plan, report_dirs
    from utils.io.cli import user_errors
    from utils.io.paths import increment_path

    train_args = ["--data", opt.data, "--cfg", opt.cfg]
    for flag, value in (("--img", opt.img), ("--epochs", opt.epochs), ("--batch-size", opt.batch_size)):
        if value is not None:
            train_args += [flag, str(value)]
    if opt.noplots:
        train_args.append("--noplots")
    train_args += ["--precision", opt.precision]
    command = "python " + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
    try:
        if opt.report:
            report_dirs(increment_path(Path(opt.project) / opt.name), [Path(d) for d in opt.report], opt.losses, command)
            return 0
        if opt.plan:
            print("\n".join(plan(experiment_dir(opt, create=False), opt.losses, opt.seeds, train_args, opt.workers)))
            return 0
        exp = experiment_dir(opt)
        jobs = compare(exp, opt.losses, opt.seeds, train_args, opt.workers, command, jobs=opt.jobs,
                       train=opt.report is None)
    except user_errors() as e:
        logging.getLogger("compare").error("error: %s", e)
        return 1
    except KeyboardInterrupt:  # the runs keep their last.pt: the same command resumes them
        return 130
    return 0 if all(j.status == "done" or (opt.report is not None and j.status == "pending") for j in jobs) else 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(parse_opt()))
