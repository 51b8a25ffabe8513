"""COCO instances JSON -> YOLO txt layout.

Output:: <out>/images/{split}/<file_name> (hard links, or copies), <out>/labels/{split}/*.txt,
         <out>/data.yaml (names; splits converted so far).

Rules:
- category ids are mapped to contiguous 0..nc-1 in sorted id order (COCO's 1..90 -> 0..79);
  names come from the JSON ``categories``.
- ``iscrowd: 1`` annotations are skipped: they mark a region of many instances, not one object
  (YOLOv5's COCO labels skip them too).
- ``bbox`` is ``[x_left, y_top, w, h]`` pixels; boxes are clipped to the image and dropped with a
  warning when no area is left.
- every image in the JSON gets a label file (empty = background); an image file that is missing
  is skipped with a warning.
"""
from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from data.converters.common import place_image, write_dataset_yaml, yolo_row

LOGGER = logging.getLogger(__name__)


@dataclass
class CocoStats:
    """Counts: images written / missing, boxes written, crowd boxes skipped, degenerate dropped."""

    images: int = 0
    images_missing: int = 0
    boxes_written: int = 0
    crowd_skipped: int = 0
    boxes_dropped: int = 0


def convert_coco(json_file: str | Path, images_dir: str | Path, out: str | Path, split: str = "train",
                 link: bool = True) -> tuple[CocoStats, list[str]]:
    """Convert one COCO JSON (one split) into ``out``. Returns (stats, names)."""
    json_file, images_dir, out = Path(json_file), Path(images_dir), Path(out)
    data = json.loads(json_file.read_text(encoding="utf-8"))
    cats = sorted(data.get("categories", []), key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(cats)}
    names = [str(c["name"]) for c in cats]
    anns = defaultdict(list)
    for a in data.get("annotations", []):
        anns[a["image_id"]].append(a)
    stats = CocoStats()
    for img in data.get("images", []):
        src = images_dir / img["file_name"]
        if not src.is_file():
            stats.images_missing += 1
            LOGGER.warning("%s: image %s not found, skipped", json_file, src)
            continue
        w, h = float(img["width"]), float(img["height"])
        rows = []
        for a in anns[img["id"]]:
            if a.get("iscrowd", 0):
                stats.crowd_skipped += 1
                continue
            x, y, bw, bh = map(float, a["bbox"])
            x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)
            if x2 <= x1 or y2 <= y1 or a["category_id"] not in id_map:
                stats.boxes_dropped += 1
                LOGGER.warning("%s: annotation %s of %s dropped (bbox %s, category %s)", json_file,
                               a.get("id"), img["file_name"], a["bbox"], a["category_id"])
                continue
            rows.append(yolo_row(id_map[a["category_id"]], x1, y1, x2, y2, w, h))
        place_image(src, out / "images" / split / Path(img["file_name"]).name, link)
        lb = out / "labels" / split / f"{Path(img['file_name']).stem}.txt"
        lb.parent.mkdir(parents=True, exist_ok=True)
        lb.write_text("".join(r + "\n" for r in rows))
        stats.images += 1
        stats.boxes_written += len(rows)
    write_dataset_yaml(out, names, [split])
    LOGGER.info("COCO %s -> %s/%s: %d images, %d boxes, %d crowd skipped, %d dropped", json_file, out,
                split, stats.images, stats.boxes_written, stats.crowd_skipped, stats.boxes_dropped)
    return stats, names


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True, help="COCO instances JSON of one split")
    ap.add_argument("--images", required=True, help="folder holding that split's images")
    ap.add_argument("--out", required=True, help="output dataset root")
    ap.add_argument("--split", default="train", help="split name: train, val or test")
    ap.add_argument("--copy", action="store_true", help="copy images instead of hard-linking")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    st, names = convert_coco(a.json, a.images, a.out, a.split, not a.copy)
    print(f"{st.images} images, {st.boxes_written} boxes, {st.crowd_skipped} crowd skipped, "
          f"{st.boxes_dropped} dropped, {len(names)} classes -> {Path(a.out) / 'data.yaml'}")


if __name__ == "__main__":
    main()
