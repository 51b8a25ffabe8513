"""Show which anchors / cells each loss strategy makes positive.

    python tools/show_assign.py --data data/bccd.yaml --img 320 --index 0 --losses yolov5,ota,ssd,dw
    python tools/show_assign.py --data data/bccd.yaml --img 320 --losses gfl,gfl+tal,tal,tal+atss
    python tools/show_assign.py --data data/bccd.yaml --img 320 --losses yolov5,yolov5+simota,yolov5+atss,yolov5+tal
    python tools/show_assign.py --weights runs/train/exp/weights/best.pt --data data/bccd.yaml --img 320
    python tools/show_assign.py --data data/bccd.yaml --img 320 --stats --max-images 50

Picture mode: one PNG with a panel per strategy — ground-truth boxes, a dot on each assigned cell
(colour = level P3/P4/P5, dot size = weight for soft strategies: dw, freeanchor, tal's soft targets).
Stats mode: assigned rows per object per strategy by object size (COCO small < 32², medium < 96²,
large, in pixels of the letterboxed image), as a Markdown table and a bar chart; rows that are not
positives are labelled with what they are (freeanchor's bag members, dw's weighted candidates).
A strategy is a loss or loss+assigner, any pair the loss takes (yolov5+simota, gfl+tal; README's grid);
panel titles name the assigner.
Predictions come from --weights (the strategies whose head differs get a fresh model) or a fresh
--cfg model; the dynamic strategies (ota, freeanchor, dw, tal) depend on them.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils.io.cli import add_max_pixels_flag, image_size, seed  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT / "data/shapes.yaml"), help="dataset YAML")
    p.add_argument("--split", default="val", help="dataset split")
    p.add_argument("--weights", default="", help="checkpoint for the predictions (default: a fresh --cfg model)")
    p.add_argument("--cfg", default=str(ROOT / "models/yolov5n.yaml"), help="model YAML for fresh models")
    p.add_argument("--img", "--imgsz", type=image_size, default=320, help="image size")
    p.add_argument("--losses", default="", help="comma-separated strategies, loss or loss+assigner (yolov5+simota, gfl+tal); "
                                                "default: every one in utils.loss.LOSSES")
    p.add_argument("--index", type=int, default=0, help="image index in the split (picture mode)")
    p.add_argument("--stats", action="store_true", help="statistics over the split instead of a picture")
    p.add_argument("--max-images", type=int, default=100, help="images used in --stats mode")
    p.add_argument("--out", default=str(ROOT / "runs/assign"), help="output folder")
    p.add_argument("--seed", type=seed, default=0, help="seed of fresh models")
    add_max_pixels_flag(p)
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> Path:
    import torch
    from tqdm import tqdm

    from utils.eval import assign_view as av
    from utils.boxes import xywh2xyxy
    from utils.io.checkpoint import load_checkpoint
    from utils.compare.driver import hyp_for
    from utils.data.verify import set_max_pixels
    from utils.loss import LOSSES, split_strategy
    from utils.dataloaders import check_dataset, create_dataloader

    torch.manual_seed(opt.seed)
    set_max_pixels(opt.max_pixels)
    data = check_dataset(opt.data)
    base = load_checkpoint(opt.weights)[0] if opt.weights else None
    cfg = base.yaml if base is not None else opt.cfg
    names = [x.strip() for x in opt.losses.split(",") if x.strip()] or list(LOSSES)
    strategies = [av.strategy_for(n, hyp_for(split_strategy(n)[0]), base, data["nc"], cfg, opt.img) for n in names]
    loader, ds = create_dataloader(data[opt.split], opt.img, 1, 32, rect=False, workers=0, nc=data["nc"])
    out = Path(opt.out)
    out.mkdir(parents=True, exist_ok=True)
    if opt.stats:
        stats = {s.label: {b: [] for b, _, _ in av.SIZE_BINS} for s in strategies}
        for i, (im, targets, _, _) in enumerate(tqdm(loader, total=min(len(ds), opt.max_images), desc="assigning")):
            if i >= opt.max_images:
                break
            imgs = im.float() / 255
            for s in strategies:
                for b, counts in av.positives_per_object(av.positives(s, imgs, targets), targets, imgs.shape[-2:]).items():
                    stats[s.label][b] += counts
        table = av.stats_table(stats)
        (out / "positives_per_object.md").write_text(table + "\n")
        print(table)
        return av.stats_chart(stats, out / "positives_per_object.png")
    im, targets, paths, _ = ds.collate_fn([ds[opt.index]])
    imgs = im.float() / 255
    h, w = imgs.shape[-2:]
    boxes = xywh2xyxy(targets[:, 2:6] * torch.tensor([w, h, w, h])).numpy()
    panels = {s.title: av.cell_centres(av.positives(s, imgs, targets), s.model.stride.tolist()) for s in strategies}
    file = av.draw_panels(im[0].permute(1, 2, 0).numpy(), boxes, panels, out / f"assign_{Path(paths[0]).stem}.png",
                          {s.title: s.rows for s in strategies})
    print(f"saved {file}")
    return file


def cli(argv: list[str] | None = None) -> int:
    """``main`` with the errors a user can act on printed as one line (exit status 1)."""
    from utils.io.cli import run_cli

    return run_cli(lambda: main(parse_opt(argv)), "show_assign")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(cli())
