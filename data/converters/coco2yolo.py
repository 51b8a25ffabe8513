"""COCO instances JSON + its image folder -> YOLO txt layout.

Output:: <out>/images/{split}/<file_name> (hard links, or copies), <out>/labels/{split}/*.txt,
         <out>/data.yaml (names; splits converted so far; takes ``train.py --data`` as is).

Rules:
- ``--split NAME`` puts every image of the JSON into that split (one JSON per split, as COCO ships);
  without it the images are ranked by a seeded hash of their file names and the first
  round(fraction * n) go to test / val (``--val-fraction``, ``--test-fraction``, ``--seed``): exact
  counts, the same split for the same files, and adding m images moves at most m + 1 of the others.
- source files are never moved, deleted or overwritten. ``--images`` inside ``--out``'s images/ works
  only where each image already sits in its split's folder (``--images OUT/images/train --split train``:
  labels are written beside them); anything else is refused before a file is written.
- a second JSON converted into the same ``--out`` adds its split to the existing data.yaml and leaves
  the rest as it is (comments, extra keys, edits); a data.yaml with other class names is refused.
- category ids are mapped to contiguous 0..nc-1 in sorted id order (COCO's 1..90 -> 0..79);
  names come from the JSON ``categories``; an annotation of another id is dropped and counted.
- ``iscrowd: 1`` annotations are skipped and counted: they mark a region of many instances, not
  one object (YOLOv5's COCO labels skip them too).
- ``bbox`` is ``[x_left, y_top, w, h]`` pixels; an object without a usable bbox takes the box
  around its segmentation polygons. Boxes are clipped to the image (counted) and dropped with a
  warning when no area is left.
- two images that share a base name in different folders (``a/001.png``, ``b/001.png``) never
  overwrite each other: the later one is written as ``001_2.png`` (warned and counted); so does an
  image of a second JSON whose name an earlier conversion's (other) image already has in that split.
- every image in the JSON gets a label file (empty = background); an image file that is missing
  is skipped with a warning. A JSON that does not parse or has no ``images`` list stops the
  conversion with one line naming the file.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.converters.common import (SPLITS, ConverterError, UniqueNames, check_fractions, check_in_place,
                                    count_train_images, hash_splits, image_size, place_image, plan_dataset_yaml,
                                    run_cli, write_dataset_yaml, write_labels, yolo_row)
from utils.core.argtypes import HelpFormatter

LOGGER = logging.getLogger(__name__)


@dataclass
class CocoStats:
    """Counts: images written / renamed / missing / background, boxes written, crowd skipped, clipped, dropped."""

    images: int = 0
    images_renamed: int = 0
    images_missing: int = 0
    backgrounds: int = 0
    boxes_written: int = 0
    boxes_from_polygon: int = 0
    crowd_skipped: int = 0
    boxes_clipped: int = 0
    boxes_dropped: int = 0
    per_split: dict = field(default_factory=dict)


# fields that key other entries: a list or an object there is a malformed file, not a missing match
_ID_FIELDS = {"images": ("id",), "annotations": ("id", "image_id", "category_id"), "categories": ("id",)}


def load_coco_json(json_file: Path) -> dict[str, Any]:
    """The parsed JSON, checked to hold an ``images`` list; ConverterError naming the file otherwise."""
    try:
        data = json.loads(json_file.read_text(encoding="utf-8-sig"))  # a BOM is not JSON
    except OSError as e:
        raise ConverterError(f"--json {json_file}: cannot read it ({e.strerror})") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConverterError(f"{json_file}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ConverterError(f"{json_file}: no 'images' list; expected a COCO instances JSON "
                             "(images, annotations, categories)")
    for key in ("images", "annotations", "categories"):
        entries = data.get(key, [])
        if not isinstance(entries, list):
            raise ConverterError(f"{json_file}: '{key}' must be a list")
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ConverterError(f"{json_file}: {key}[{i}] must be an object, got {entry!r:.60}")
            for field_ in _ID_FIELDS[key]:
                if isinstance(entry.get(field_), (list, dict, float)):
                    raise ConverterError(f"{json_file}: {key}[{i}] has '{field_}' {entry[field_]!r:.60}; "
                                         "ids are integers")
    return data


def _pixel_box(ann: dict[str, Any]) -> tuple[tuple[float, float, float, float] | None, bool]:
    """(x1, y1, x2, y2) pixels from ``bbox``, else from the segmentation polygons; and whether polygons gave it."""
    bbox = ann.get("bbox")
    if isinstance(bbox, (list, tuple)) and len(bbox) == 4 and bbox[2] > 0 and bbox[3] > 0:
        x, y, w, h = map(float, bbox)
        if not all(map(math.isfinite, (x, y, w, h))):  # JSON has NaN and Infinity
            return None, False
        return (x, y, x + w, y + h), False
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg and all(isinstance(p, list) and len(p) >= 6 for p in seg):
        xs = [float(v) for p in seg for v in p[0::2]]
        ys = [float(v) for p in seg for v in p[1::2]]
        if all(map(math.isfinite, xs + ys)):
            return (min(xs), min(ys), max(xs), max(ys)), True
    return None, False  # RLE masks without a bbox, or an empty / malformed bbox


def _image_rows(img: dict[str, Any], size: tuple[float, float], anns: list[dict[str, Any]],
                id_map: dict[int, int], where: Path, stats: CocoStats) -> list[str]:
    """YOLO rows of one image (``size`` = w, h pixels): crowd skipped, boxes clipped, unusable ones dropped."""
    w, h = size
    rows = []
    for a in anns:
        crowd = a.get("iscrowd", 0)
        if crowd not in (0, 1):  # True/False compare equal to 1/0; "no" must not read as crowd
            raise ConverterError(f"{where}: annotation {a.get('id')} of {img['file_name']}: 'iscrowd' must be "
                                 f"0 or 1, got {crowd!r:.40}")
        if crowd:
            stats.crowd_skipped += 1
            continue
        try:
            box, from_polygon = _pixel_box(a)
        except (TypeError, ValueError):
            box, from_polygon = None, False
        clipped = None if box is None else (max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h))
        if clipped is None or clipped[2] <= clipped[0] or clipped[3] <= clipped[1] or a.get("category_id") not in id_map:
            stats.boxes_dropped += 1
            LOGGER.warning("%s: annotation %s of %s dropped (bbox %s, category %s)", where, a.get("id"),
                           img["file_name"], a.get("bbox"), a.get("category_id"))
            continue
        stats.boxes_clipped += clipped != box
        stats.boxes_from_polygon += from_polygon
        rows.append(yolo_row(id_map[a["category_id"]], *clipped, w, h))
    return rows


@dataclass
class _Planned:
    """One image of the JSON: where it is, where it goes, its YOLO rows."""

    src: Path
    split: str
    name: str
    rows: list[str]


def _plan(data: dict[str, Any], json_file: Path, images_dir: Path, id_map: dict[int, int], split: str | None,
          fractions: tuple[float, float], seed: int, stats: CocoStats, out: Path) -> list[_Planned]:
    """Every image of the JSON that exists, with its split, output name and rows; reads, writes nothing."""
    anns = defaultdict(list)
    for a in data.get("annotations", []):
        anns[a.get("image_id")].append(a)
    found = []
    for img in data["images"]:
        src = images_dir / str(img.get("file_name", ""))
        if not img.get("file_name") or not src.is_file():
            stats.images_missing += 1
            LOGGER.warning("%s: image %s not found, skipped", json_file, src)
            continue
        size = (img.get("width"), img.get("height"))
        if not all(isinstance(v, (int, float)) and v > 0 for v in size):
            size = image_size(src)  # COCO requires width/height; hand-made JSONs often omit them
        found.append((src, _image_rows(img, tuple(map(float, size)), anns[img.get("id")], id_map, json_file, stats)))
    splits = [split] * len(found) if split else hash_splits([src.name for src, _ in found], *fractions, seed)
    unique = UniqueNames(out)  # an earlier JSON's images in out count as taken
    return [_Planned(src, to, unique.claim(to, src, src.name), rows) for (src, rows), to in zip(found, splits)]


def convert_coco(json_file: str | Path, images_dir: str | Path, out: str | Path, split: str | None = None,
                 link: bool = True, val_fraction: float = 0.2, test_fraction: float = 0.0,
                 seed: int = 0) -> tuple[CocoStats, list[str]]:
    """Convert one COCO JSON into ``out`` (``split`` for all its images, or the hash split). -> (stats, names).

    Everything that can refuse the conversion (the JSON, the images, converting in place, an existing
    data.yaml) is checked before the first file is written; source files are never modified.
    """
    json_file, images_dir, out = Path(json_file), Path(images_dir), Path(out)
    check_fractions(val_fraction, test_fraction)
    if split is not None and (val_fraction, test_fraction) != (0.2, 0.0):
        raise ConverterError("--split puts every image into one split; drop --val-fraction / --test-fraction")
    if not images_dir.is_dir():
        raise ConverterError(f"--images {images_dir} is not a folder")
    data = load_coco_json(json_file)
    if not all(isinstance(c, dict) and "id" in c and "name" in c for c in data.get("categories", [])):
        raise ConverterError(f"{json_file}: every entry of 'categories' needs an 'id' and a 'name'")
    cats = sorted(data.get("categories", []), key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(cats)}
    names = [str(c["name"]) for c in cats]
    stats = CocoStats()
    plan = _plan(data, json_file, images_dir, id_map, split, (val_fraction, test_fraction), seed, stats, out)
    check_in_place(out, [(p.src, out / "images" / p.split / p.name) for p in plan])
    splits = sorted({p.split for p in plan}, key=SPLITS.index)
    n_train = count_train_images(out, [p.name for p in plan if p.split == "train"])
    yaml_text = plan_dataset_yaml(out, names, splits, n_train)
    for p in plan:
        stats.images_renamed += p.name != p.src.name
        place_image(p.src, out / "images" / p.split / p.name, link)
        write_labels(out, p.split, Path(p.name).stem, p.rows)
        stats.images += 1
        stats.backgrounds += not p.rows
        stats.boxes_written += len(p.rows)
        stats.per_split[p.split] = stats.per_split.get(p.split, 0) + 1
    write_dataset_yaml(out, names, splits, yaml_text)
    LOGGER.info("COCO %s -> %s: %d images %s, %d boxes, %d crowd skipped, %d dropped", json_file, out,
                stats.images, stats.per_split, stats.boxes_written, stats.crowd_skipped, stats.boxes_dropped)
    return stats, names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--json", required=True, help="COCO instances JSON")
    ap.add_argument("--images", required=True, help="folder holding the JSON's images")
    ap.add_argument("--out", required=True, help="output dataset root")
    ap.add_argument("--split", choices=("train", "val", "test"), help="put every image into this split "
                    "(default: split by file-name hash)")
    ap.add_argument("--val-fraction", type=float, default=0.2, help="share of images for val (hash split)")
    ap.add_argument("--test-fraction", type=float, default=0.0, help="share of images for test (hash split)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the file-name hash split")
    ap.add_argument("--copy", action="store_true", help="copy images instead of hard-linking")
    a = ap.parse_args(argv)

    def convert() -> str:
        st, names = convert_coco(a.json, a.images, a.out, a.split, not a.copy, a.val_fraction, a.test_fraction,
                                 a.seed)
        return (f"{st.images} images ({st.per_split}, {st.backgrounds} background, {st.images_missing} missing, "
                f"{st.images_renamed} renamed), "
                f"{st.boxes_written} boxes ({st.boxes_from_polygon} from polygons, {st.boxes_clipped} clipped), "
                f"{st.crowd_skipped} crowd skipped, {st.boxes_dropped} dropped, {len(names)} classes "
                f"-> {Path(a.out) / 'data.yaml'}")

    return run_cli(convert, a.out)


if __name__ == "__main__":
    raise SystemExit(main())
