"""Where SSD matching and hard-negative mining put their weight, per class, on a dataset split.

    python tools/ssd_stats.py --data data/bccd.yaml --img 320 --split train --max-images 40 \
        --weights ../shared/checkpoints/yolov5n-bccd-official.pt

Per class: positives per object under SSD matching, the share of objects matched only by the
forced best-anchor rule (no anchor box at IoU >= ssd_iou_thr), the mean IoU objectness target at
their positives (ssd_obj_iou), and the hard negatives mined next to them (IoU >= 0.3 with the object).
The hard negatives depend on the predictions: those of --weights (an anchor-head checkpoint) or of a
fresh --cfg model. Last, the mean objectness at positives, mined negatives and all other anchors, beside
target / (1 + ratio): the value a model settles at when its mined negatives look like its positives.
The loss settings are --hyp, else the checkpoint's own when it trained `ssd`, else hyp/hyp.ssd.yaml.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.io.cli import HelpFormatter, add_max_pixels_flag, image_size  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data/shapes.yaml"), help="dataset YAML")
    p.add_argument("--split", default="train", help="dataset split")
    p.add_argument("--weights", default="", help="anchor-head checkpoint for the predictions (default: a fresh --cfg model)")
    p.add_argument("--cfg", default=str(ROOT / "models/yolov5n.yaml"), help="model YAML for a fresh model")
    p.add_argument("--hyp", default="", help="ssd hyp file (default: the checkpoint's when it trained ssd, "
                   "else hyp/hyp.ssd.yaml)")
    p.add_argument("--img", "--imgsz", type=image_size, default=320, help="image size")
    p.add_argument("--max-images", type=int, default=40, help="images used")
    add_max_pixels_flag(p)
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> str:
    from collections import Counter, defaultdict

    from utils.data.verify import set_max_pixels
    from utils.dataloaders import check_dataset, create_dataloader
    from utils.compare.driver import hyp_for, hyp_trains
    from utils.eval import assign_view as av
    from utils.eval.ssd_stats import ssd_batch_stats, stats_table
    from utils.io.checkpoint import load_checkpoint

    set_max_pixels(opt.max_pixels)
    given = hyp_trains(opt.hyp, "ssd") if opt.hyp else None  # before the dataset: a wrong file fails fast
    data = check_dataset(opt.data)
    base, meta = load_checkpoint(opt.weights) if opt.weights else (None, {})
    hyp = given or (meta["hyp"] if meta.get("hyp", {}).get("loss") == "ssd" else hyp_for("ssd"))
    s = av.strategy_for("ssd", hyp, base, data["nc"], base.yaml if base is not None else opt.cfg, opt.img)
    loader, _ = create_dataloader(data[opt.split], opt.img, 1, 32, rect=False, workers=0, nc=data["nc"])
    total: dict[str, Counter] = defaultdict(Counter)
    for i, (im, targets, _, _) in enumerate(loader):
        if i >= opt.max_images:
            break
        imgs = im.float() / 255
        for k, v in ssd_batch_stats(s.loss, s.model(imgs)[1], targets, imgs, data["names"]).items():
            total[k].update(v)
    table = stats_table(total, data["names"], ratio=s.loss.hyp.ssd_neg_pos_ratio, obj_iou=s.loss.hyp.ssd_obj_iou)
    print(table)
    return table


def cli(argv: list[str] | None = None) -> int:
    """``main`` with the errors a user can act on printed as one line (exit status 1)."""
    from utils.io.cli import run_cli

    return run_cli(lambda: main(parse_opt(argv)), "ssd_stats")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(cli())
