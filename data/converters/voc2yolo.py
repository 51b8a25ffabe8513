"""Pascal VOC -> YOLO txt layout.

Input::  <source>/Annotations/*.xml, <source>/JPEGImages/*, <source>/ImageSets/Main/{split}.txt
Output:: <out>/images/{split}/*.jpg (hard links, or copies), <out>/labels/{split}/*.txt,
         <out>/data.yaml

Rules:
- class order: ``names`` when given (objects of other classes are dropped with a warning),
  otherwise all names found, sorted. Names are case-sensitive, as in the XML.
- VOC pixel coordinates are 1-based: x1 = xmin - 1, x2 = xmax - 1 (YOLOv5's VOC convention),
  then clipped to the image size read from ``<size>`` (or the image when ``<size>`` is absent).
- boxes with xmax <= xmin or ymax <= ymin, or with no area left after clipping, are dropped
  with one warning line each.
- ``<difficult>1`` objects are kept by default (they are real objects; YOLOv5's VOC script
  drops them); ``--skip-difficult`` drops them.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from data.converters.common import place_image, write_dataset_yaml, yolo_row

LOGGER = logging.getLogger(__name__)


@dataclass
class VocStats:
    """Counts per conversion: images, boxes read / written / dropped, per-split image counts."""

    images: int = 0
    boxes_read: int = 0
    boxes_written: int = 0
    boxes_dropped: int = 0
    per_split: dict = field(default_factory=dict)


def _parse_xml(xml_file: Path) -> tuple[str | None, tuple[int, int] | None, list[tuple]]:
    """-> (image filename, (w, h) or None, [(name, difficult, xmin, ymin, xmax, ymax)])."""
    root = ET.parse(xml_file).getroot()
    fn = root.findtext("filename")
    size = root.find("size")
    wh = None
    if size is not None:
        w, h = int(float(size.findtext("width", "0"))), int(float(size.findtext("height", "0")))
        wh = (w, h) if w > 0 and h > 0 else None
    objs = []
    for o in root.iter("object"):
        b = o.find("bndbox")
        coords = [float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        objs.append((o.findtext("name", "").strip(), o.findtext("difficult", "0").strip() == "1", *coords))
    return fn, wh, objs


def _find_image(source: Path, stem: str, filename: str | None) -> Path:
    if filename and (source / "JPEGImages" / filename).is_file():
        return source / "JPEGImages" / filename
    for p in sorted((source / "JPEGImages").glob(stem + ".*")):
        return p
    raise FileNotFoundError(f"no image for {stem} in {source / 'JPEGImages'}")


def _convert_one(source: Path, out: Path, split: str, stem: str, names: list[str],
                 keep_difficult: bool, link: bool, stats: VocStats) -> None:
    xml_file = source / "Annotations" / f"{stem}.xml"
    filename, wh, objs = _parse_xml(xml_file)
    im_file = _find_image(source, stem, filename)
    if wh is None:
        with Image.open(im_file) as im:
            wh = im.size
    w, h = wh
    rows = []
    for name, difficult, xmin, ymin, xmax, ymax in objs:
        stats.boxes_read += 1
        why = None
        if name not in names:
            why = f"class {name!r} not in names"
        elif difficult and not keep_difficult:
            why = "difficult"
        elif xmax <= xmin or ymax <= ymin:
            why = f"empty box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})"
        else:
            x1, y1 = min(max(xmin - 1, 0), w), min(max(ymin - 1, 0), h)
            x2, y2 = min(max(xmax - 1, 0), w), min(max(ymax - 1, 0), h)
            if x2 <= x1 or y2 <= y1:
                why = f"no area inside the {w}x{h} image ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})"
        if why:
            stats.boxes_dropped += 1
            LOGGER.warning("%s: dropping object %r: %s", xml_file, name, why)
            continue
        rows.append(yolo_row(names.index(name), x1, y1, x2, y2, w, h))
    place_image(im_file, out / "images" / split / im_file.name, link)
    lb = out / "labels" / split / f"{im_file.stem}.txt"
    lb.parent.mkdir(parents=True, exist_ok=True)
    lb.write_text("".join(r + "\n" for r in rows))
    stats.boxes_written += len(rows)
    stats.images += 1


def discover_names(source: Path) -> list[str]:
    """All object names in the annotations, sorted."""
    found = set()
    for x in (source / "Annotations").glob("*.xml"):
        found.update(o[0] for o in _parse_xml(x)[2])
    return sorted(found)


def convert_voc(source: str | Path, out: str | Path, names: list[str] | None = None,
                splits: list[str] | None = None, keep_difficult: bool = True, link: bool = True,
                write_yaml: bool = True) -> VocStats:
    """Convert a VOC tree into ``out`` (built in a temporary sibling folder, then renamed).

    ``splits`` default to the ImageSets/Main lists among train/val/test/trainval that exist
    (trainval only when neither train nor val exists). ``out`` must not exist yet.
    """
    source, out = Path(source).resolve(), Path(out).resolve()
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it first")
    sets = source / "ImageSets" / "Main"
    if splits is None:
        splits = [s for s in ("train", "val", "test") if (sets / f"{s}.txt").is_file()] or ["trainval"]
    names = list(names) if names else discover_names(source)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    stats = VocStats()
    for split in splits:
        stems = [s.split()[0] for s in (sets / f"{split}.txt").read_text().splitlines() if s.strip()]
        for stem in stems:
            _convert_one(source, tmp, split, stem, names, keep_difficult, link, stats)
        stats.per_split[split] = len(stems)
    if write_yaml:
        write_dataset_yaml(tmp, names, splits)
    os.rename(tmp, out)
    LOGGER.info("VOC %s -> %s: %d images, %d boxes written, %d dropped", source, out, stats.images,
                stats.boxes_written, stats.boxes_dropped)
    return stats


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="VOC root (Annotations, JPEGImages, ImageSets)")
    ap.add_argument("--out", required=True, help="output folder (must not exist)")
    ap.add_argument("--names", nargs="+", help="class names in index order (default: sorted found)")
    ap.add_argument("--splits", nargs="+", help="ImageSets/Main lists (default: train val test found)")
    ap.add_argument("--skip-difficult", action="store_true", help="drop <difficult>1 objects")
    ap.add_argument("--copy", action="store_true", help="copy images instead of hard-linking")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    st = convert_voc(a.source, a.out, a.names, a.splits, not a.skip_difficult, not a.copy)
    print(f"{st.images} images ({st.per_split}), {st.boxes_read} boxes read, "
          f"{st.boxes_written} written, {st.boxes_dropped} dropped -> {Path(a.out) / 'data.yaml'}")


if __name__ == "__main__":
    main()
