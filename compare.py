"""Compare loss strategies: train each with the same data, model, schedule and seeds, then tabulate.

    python compare.py --data data/bccd.yaml --cfg models/yolov5n.yaml --img 320 --epochs 60 \\
                      --losses yolov5,ota,freeanchor,gfl,ssd,dw,tal --seeds 0,1,2,3,4

Writes runs/compare/exp*/: runs.csv (one row per finished run: mAP, per-class AP, collapsed classes,
start and end times), results.csv / results.md (per strategy: mean ± std over seeds, the 95 % interval
of the mean, and against the first of --losses the difference with Welch's 95 % interval, p and a
verdict: better / worse when the p adjusted by Holm over all strategies (and over the looks, see
below) is below --alpha, else "not resolved" with about how many seeds would resolve it; best: yes for
the strategies no other is resolved above; the same per class, and how often a class collapsed),
map_vs_epoch.png, points.png, pr_curves.png. results.md opens with one sentence on which is best.

    python compare.py ... --losses yolov5,yolov5+atss,gfl   # rule or loss? gfl = the GFL loss on ATSS positives

A strategy that changes both the loss and the matching rule against the baseline, beside the strategy
between them (the baseline's loss on the strategy's rule), gets its lead split in results.md's "Rule or loss?": the
rule step (yolov5 -> yolov5+atss) and the loss step (yolov5+atss -> gfl), each with Welch's interval and a
verdict, Holm over all the steps.

    python compare.py ... --seeds auto --max-seeds 10   # 3 seeds each, then more only where unresolved

--seeds auto adds seeds in rounds (3, 5, 8, 10 for a cap of 10) only to strategies that are neither
resolved nor hopeless, with alpha spent over the rounds so the error of the whole procedure stays at
--alpha. While a round trains, the tables hold every finished run asked for so far (runs as
finished / asked) and no verdict until its look is complete; a cap that ends it unresolved is followed by
the command with a higher --max-seeds. Adding fixed --seeds by hand and rerunning is another look: compare.json records it and the
report splits alpha over the looks (see utils/compare/stats.py).

Each run is a train.py process; runs go seed by seed (every strategy's first seed before any second
one), --jobs of them at once per device, and the tables are rewritten after each run. A run that
fails is reported as failed and the others go on. Rerunning with the same training settings
continues in the same folder (more --seeds or --losses included): finished runs are read back,
interrupted ones resume. One compare at a time per folder; its train.py processes die with it.

--precision (auto / fp32 / bf16) goes to every train.py run and is a compared setting: runs.csv records
what each run resolved it to, a different --precision starts another folder, and --report refuses to
mix runs of different precision.

    python compare.py ... --plan > jobs.txt          # the train.py commands, one per line; trains nothing
    python compare.py --report DIR [DIR ...]         # tables from finished run folders, wherever they ran
    python compare.py ... --report                   # this comparison's tables rewritten (--seeds auto too)

    python compare.py ... --backend ray                  # the runs as Ray tasks: an embedded Ray on this machine,
    python compare.py ... --backend ray --address auto   # or a cluster's (also RAY_ADDRESS): docs/cluster.md
    python compare.py ... --track mlflow                 # every run and the comparison in MLflow (runs/mlflow.db)

--backend ray launches the same train.py command per (strategy, seed) as the local backend, on the node
Ray picks; a run whose worker or node died is tried again (--retries) from its last.pt. The comparison
folder must be on a filesystem every node sees.
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
from utils.io.cli import (HelpFormatter, add_precision_flag, image_size, interrupt_on_signals,  # noqa: E402
                          non_negative_int, positive_int, seed)

# the training settings that make two compare commands one comparison (one folder); strategies and
# seeds may differ, so more seeds or another strategy join the runs already there
SAME_IF = ("data", "cfg", "img", "epochs", "batch_size", "workers", "noplots", "precision", "seeds_mode")


# --seeds auto makes a job per (strategy, seed) up to the cap; past this many seeds per strategy no
# comparison is practical (the verdicts call a need of more than 1000 "no practical number")
MAX_SEEDS = 1000


def max_seeds_arg(text: str) -> int:
    value = positive_int(text)
    if value > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"at most {MAX_SEEDS} seeds per strategy, got {text}")
    return value


def seeds_arg(text: str) -> list[int] | str:
    return "auto" if text.strip() == "auto" else int_list(text)


def alpha_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 0.5 (exclusive), got '{text}'")
    return value


def int_list(text: str) -> list[int]:
    try:
        values = [seed(x) for x in text.split(",") if x.strip()]
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
    p.add_argument("--img", "--imgsz", type=image_size, default=None, help="image size (default: train.py's)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs per run (default: train.py's)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default: train.py's)")
    p.add_argument("--losses", type=name_list, default=None,
                   help="comma-separated strategies, loss or loss+assigner (gfl+tal, tal+atss); the first is "
                        "the baseline of the verdicts "
                        "(default: every strategy of utils.loss.LOSSES, yolov5 first)")
    p.add_argument("--seeds", type=seeds_arg, default="0,1,2",
                   help="comma-separated seeds (the seed alone moves mAP50-95 by a few points: see README), or "
                        "auto: 3 each, then more in rounds only where the verdict is unresolved")
    p.add_argument("--max-seeds", type=max_seeds_arg, default=10,
                   help=f"with --seeds auto: the most seeds per strategy (3 to {MAX_SEEDS})")
    p.add_argument("--alpha", type=alpha_arg, default=0.05,
                   help="family-wise error of the verdicts and of the best column (over all strategies and looks)")
    p.add_argument("--jobs", type=parse_jobs, default="auto",
                   help="runs at once per device; auto: from the free GPU memory after a first run and the "
                        "CPU cores on CUDA, 1 on CPU")
    p.add_argument("--workers", type=non_negative_int, default=8, help="max dataloader workers per run (shared out when packed)")
    p.add_argument("--noplots", action="store_true",
                   help="pass --noplots to train.py (no per-run pictures; the comparison's own plots are made)")
    add_precision_flag(p)  # passed to every run; runs.csv records what each resolved to
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: pack the runs on this machine; ray: one Ray task per run (pip install -r "
                        "requirements-ray.txt), see docs/cluster.md")
    p.add_argument("--address", default=None,
                   help="with --backend ray: the cluster to join (auto, host:6379, ray://host:10001; default "
                        "RAY_ADDRESS, else an embedded Ray instance on this machine)")
    p.add_argument("--retries", type=non_negative_int, default=3,
                   help="with --backend ray: new tries, each resuming from last.pt, of a run whose worker or node died")
    p.add_argument("--track", choices=("mlflow",), default=None,
                   help="log the comparison (a parent run) and each finished run (a child) to MLflow (pip install "
                        "-r requirements-track.txt): runs/mlflow.db, or the store MLFLOW_TRACKING_URI names")
    p.add_argument("--project", default=str(ROOT / "runs/compare"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--new", action="store_true", help="start a new folder even if an unfinished identical comparison exists")
    p.add_argument("--plan", action="store_true",
                   help="print the train.py command of every (strategy, seed), one per line, and train nothing")
    p.add_argument("--report", nargs="*", metavar="DIR", default=None,
                   help="train nothing; without DIR rewrite this comparison's tables from its finished runs, "
                        "with DIRs build them in a new project/name folder from the finished runs under them")
    opt = p.parse_args(argv)
    opt.seeds_mode = "auto" if opt.seeds == "auto" else "fixed"
    if opt.seeds_mode == "auto" and opt.report:
        p.error("--seeds auto decides which runs to train; --report DIR tabulates finished runs found anywhere: "
                "give one of them (--seeds auto --report, without DIR, rewrites an adaptive comparison's tables)")
    if opt.seeds_mode == "auto" and opt.max_seeds < 3:
        p.error(f"--max-seeds: --seeds auto starts at 3 seeds per strategy, so the cap must be at least 3, got {opt.max_seeds}")
    if opt.address is not None and opt.backend != "ray":
        p.error("--address names a Ray cluster: add --backend ray")
    if opt.losses is None:  # looked up only when needed: importing the strategies imports torch
        from utils.loss import LOSSES
        opt.losses = list(LOSSES)
    return opt


def experiment_dir(opt: argparse.Namespace, create: bool = True) -> Path:
    """The newest project/name* folder made with the same training settings, else a new one (only
    named, not made, when ``create`` is False). The dataset YAML's ``train_defaults`` (epochs, image
    size ... where the command leaves them out) must be those the folder's runs had: ValueError if not."""
    from utils.compare.driver import dataset_train_defaults
    from utils.compare.state import read_state, write_state
    from utils.io.paths import increment_path

    key = {k: getattr(opt, k) for k in SAME_IF}
    defaults = json.loads(json.dumps(dataset_train_defaults(opt.data)))
    if isinstance(defaults, dict):  # what the command sets itself, the dataset's value cannot change
        given = {"epochs": opt.epochs, "imgsz": opt.img, "batch_size": opt.batch_size}
        defaults = {k: v for k, v in defaults.items() if given.get(k) is None}
    if not opt.new:
        for d in sorted(Path(opt.project).glob(f"{opt.name}*"), key=lambda p: p.stat().st_mtime, reverse=True):
            if (d / "compare.json").exists() and same_settings(state := read_state(d), key):
                if "train_defaults" in state and state["train_defaults"] != defaults:
                    raise ValueError(f"{opt.data}: train_defaults {changed(state['train_defaults'], defaults)} since "
                                     f"the runs in {d}; one comparison's runs share them: undo the edit, or pass --new")
                if create and "train_defaults" not in state:
                    write_state(d, {**state, "train_defaults": defaults})
                return d
    exp = increment_path(Path(opt.project) / opt.name, mkdir=create)
    if create:
        write_state(exp, {"settings": key, "looks": [], "train_defaults": defaults})
    return exp


def changed(old: object, new: object) -> str:
    """Which train_defaults keys differ, in words: ``epochs 1 -> 2``."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return f"changed from {old} to {new}"
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "changed: " + ", ".join(f"{k} {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}" for k in keys)


def same_settings(state: dict, key: dict) -> bool:
    """Whether compare.json (as ``read_state`` gives it; files older than --seeds auto are fixed seeds)
    was written with the training settings ``key``."""
    settings = dict(state["settings"])
    settings.setdefault("seeds_mode", "fixed")
    return settings == json.loads(json.dumps(key))


def make_backend(opt: argparse.Namespace, exp: Path):
    """The Backend of this command (``utils.compare.backend``); ImportError names the missing extra."""
    from utils.compare.backend import Backend

    train_here = opt.report is None
    return Backend(opt.backend if train_here else "local", opt.address, opt.retries, opt.track, exp)


def main(opt: argparse.Namespace) -> int:
    from utils.compare.auto import compare_auto, plan_auto
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
    auto = opt.seeds_mode == "auto"
    try:
        if opt.report:
            report_dirs(increment_path(Path(opt.project) / opt.name), [Path(d) for d in opt.report], opt.losses,
                        command, opt.alpha)
            return 0
        if opt.plan:  # --seeds auto keeps its folder and compare.json: the next --plan finds the runs made
            exp = experiment_dir(opt, create=auto)
            lines = (plan_auto(exp, opt.losses, opt.max_seeds, train_args, opt.workers, opt.alpha) if auto
                     else plan(exp, opt.losses, opt.seeds, train_args, opt.workers))
            if lines:
                print("\n".join(lines))
            else:
                logging.getLogger("compare").info("--plan: nothing left to train in %s; the same command without "
                                                  "--plan writes the tables", exp)
            return 0
        if opt.backend == "ray" and opt.report is None:
            from utils.compare.ray_backend import import_ray

            try:
                import_ray()
            except ImportError as e:  # the optional extra: one line that says what to install
                logging.getLogger("compare").error("error: %s", e)
                return 1
        exp = experiment_dir(opt)
        backend = make_backend(opt, exp)
        try:
            if auto:
                jobs = compare_auto(exp, opt.losses, opt.max_seeds, train_args, opt.workers, command, jobs=opt.jobs,
                                    train=opt.report is None, alpha=opt.alpha, backend=backend)
            else:
                jobs = compare(exp, opt.losses, opt.seeds, train_args, opt.workers, command, jobs=opt.jobs,
                               train=opt.report is None, alpha=opt.alpha, backend=backend)
        finally:
            backend.close(sorted(p.parent for p in (exp / "runs").glob("*/summary.json")))
    except user_errors() as e:
        logging.getLogger("compare").error("error: %s", e)
        return 1
    except KeyboardInterrupt:  # the runs keep their last.pt: the same command resumes them
        return 130
    return 0 if all(j.status == "done" or (opt.report is not None and j.status == "pending") for j in jobs) else 2


if __name__ == "__main__":
    interrupt_on_signals()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main(parse_opt()))
