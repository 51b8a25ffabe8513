"""Per-class false-positive analysis of one or more checkpoints: duplicates, stray boxes, their sources.

    python tools/det_stats.py --data data/bccd.yaml --img 320 \\
        --weights runs/compare/exp/runs/yolov5-s0/weights/best.pt runs/compare/exp/runs/freeanchor-s0/weights/best.pt

For each checkpoint and class (see :mod:`utils.eval.det_stats`): labels, detections at --conf after NMS
(--nms-conf / --iou-thres as val.py), detections per label, the fraction of them that are stray
(IoU < --stray-iou with every label of their class), recall at IoU >= --match-iou, the median best
score of the right box per label and the median score of the stray boxes. A second table counts,
before NMS, the stray (output, class) pairs at score >= --conf per image by head level and anchor:
where a strategy fails to push background down. Any strategy's checkpoint (every ``loss+rule`` pair;
its loss and rule are read from the checkpoint and named in the first line) on either head. Writes
det_stats.md into --out and prints it.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.io.cli import add_max_pixels_flag, image_size  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", required=True, help="checkpoint(s)")
    p.add_argument("--data", default=str(ROOT / "data/shapes.yaml"), help="dataset YAML")
    p.add_argument("--split", default="val", help="dataset split")
    p.add_argument("--img", "--imgsz", type=image_size, default=640, help="inference size (pixels)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size")
    p.add_argument("--conf", type=float, default=0.25, help="score at which a detection counts (detect.py's default)")
    p.add_argument("--nms-conf", type=float, default=0.001, help="NMS confidence threshold (val.py's)")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold (val.py's)")
    p.add_argument("--match-iou", type=float, default=0.5, help="IoU at which a detection finds a label")
    p.add_argument("--stray-iou", type=float, default=0.3, help="below this IoU with every label a detection is stray")
    p.add_argument("--max-images", type=int, default=0, help="use at most this many images (0: all)")
    p.add_argument("--out", default=str(ROOT / "runs/det_stats"), help="output folder")
    add_max_pixels_flag(p)
    return p.parse_args(argv)


def run_name(weights: str) -> str:
    """``runs/x/NAME/weights/best.pt`` -> ``NAME`` (the file stem otherwise)."""
    w = Path(weights)
    return w.parent.parent.name if w.parent.name == "weights" else w.stem


def strategy_of(meta: dict) -> str:
    """The strategy a checkpoint was trained with, as compare.py names it (``yolov5+simota``; an official
    YOLOv5 checkpoint without a hyp is ``yolov5``)."""
    from utils.loss import strategy_label

    hyp = meta.get("hyp") or {}
    return strategy_label(hyp.get("loss", "yolov5"), hyp.get("assigner"))


def analyse(weights: str, opt: argparse.Namespace, data: dict):
    """(DetectionStats, stray sources summed over images, images, strategy) of one checkpoint."""
    import torch
    from tqdm import tqdm

    from utils.boxes import xywh2xyxy
    from utils.io.checkpoint import load_checkpoint
    from utils.dataloaders import create_dataloader
    from utils.eval.det_stats import DetectionStats, stray_sources
    from utils.eval.nms import non_max_suppression

    model, meta = load_checkpoint(weights)
    if model.nc != data["nc"]:
        raise ValueError(f"{weights} was trained for {model.nc} classes but {opt.data} has {data['nc']}")
    model.float().eval()
    gs = max(int(model.stride.max()), 32)
    loader, _ = create_dataloader(data[opt.split], math.ceil(opt.img / gs) * gs, opt.batch_size, gs, pad=0.5,
                                  rect=True, workers=0, nc=data["nc"])
    stats, sources, seen = DetectionStats(data["nc"], opt.conf, opt.match_iou, opt.stray_iou), None, 0
    for im, targets, _, _ in tqdm(loader, desc=run_name(weights)):
        im = im.float() / 255
        h, w = im.shape[-2:]
        with torch.no_grad():
            pred, raw = model(im)
        dets = non_max_suppression(pred, opt.nms_conf, opt.iou_thres, multi_label=True)
        for i, d in enumerate(dets):
            t = targets[targets[:, 0] == i]
            labels = torch.cat((t[:, 1:2], xywh2xyxy(t[:, 2:6] * torch.tensor([w, h, w, h]))), 1)
            stats.update(d, labels)
            s = stray_sources(pred[i], raw, labels, opt.conf, opt.stray_iou)
            sources = s if sources is None else sources + s
            seen += 1
            if opt.max_images and seen >= opt.max_images:
                return stats, sources, seen, strategy_of(meta)
    return stats, sources, seen, strategy_of(meta)


def _fmt(v: float, spec: str) -> str:
    """``format(v, spec)``, or ``-`` for ``nan`` (a ratio without a denominator)."""
    return "-" if math.isnan(v) else format(v, spec)


def markdown(results: dict, names: list[str], opt: argparse.Namespace) -> str:
    trained = ", ".join(f"{run} = {r[3]}" for run, r in results.items())
    lines = [f"conf {opt.conf}, NMS {opt.nms_conf}/{opt.iou_thres}, match IoU {opt.match_iou}, "
             f"stray IoU < {opt.stray_iou}; strategies (loss+rule): {trained}", "",
             "| run | class | labels | dets | dets/label | stray | recall | best score | stray score |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run, (stats, *_) in results.items():
        for name, r in zip(names, stats.table()):
            lines.append(f"| {run} | {name} | {r['labels']} | {r['dets']} | {_fmt(r['dets_per_label'], '.2f')} | "
                         f"{_fmt(r['stray'], '.0%')} | {_fmt(r['recall'], '.2f')} | {_fmt(r['best_score'], '.2f')} | "
                         f"{_fmt(r['stray_score'], '.2f')} |")
    lines += ["", f"Stray (output, class) pairs with score >= {opt.conf} per image, before NMS, by level / anchor:", ""]
    width = max(r[1].shape[1] for r in results.values())
    lines += ["| run | level | " + " | ".join(f"a{a}" for a in range(width)) + " |", "|---|---|" + "---|" * width]
    for run, (_, sources, seen, _) in results.items():
        for lv, row in enumerate(sources.tolist()):
            lines.append(f"| {run} | P{lv + 3} | " + " | ".join(f"{v / max(seen, 1):.1f}" for v in row)
                         + " |" * (width - len(row) + 1))
    return "\n".join(lines)


def main(opt: argparse.Namespace) -> Path:
    from utils.data.verify import set_max_pixels
    from utils.dataloaders import check_dataset

    set_max_pixels(opt.max_pixels)
    data = check_dataset(opt.data)
    names = data["names"]  # check_dataset gives a list in class order
    results = {}
    for w in opt.weights:
        name = run_name(w)
        while name in results:
            name += "'"
        results[name] = analyse(w, opt, data)
    text = markdown(results, names, opt)
    out = Path(opt.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "det_stats.md").write_text(text + "\n")
    print(text)
    return out / "det_stats.md"


def cli(argv: list[str] | None = None) -> int:
    """``main`` with the errors a user can act on printed as one line (exit status 1)."""
    from utils.io.cli import run_cli

    return run_cli(lambda: main(parse_opt(argv)), "det_stats")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(cli())
