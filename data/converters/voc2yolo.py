"""Pascal VOC / LabelImg XML -> YOLO txt layout.

Input, one of::

    <source>/Annotations/*.xml + JPEGImages/* + ImageSets/Main/{split}.txt   VOC: the lists set the splits
    <source>/annotations/*.xml + images/*        (or Annotations/ + JPEGImages/ without ImageSets)
    <source>/*.xml beside their images           (LabelImg's default)

Output:: <out>/images/{split}/* (hard links, or copies), <out>/labels/{split}/*.txt,
         <out>/data.yaml (takes ``train.py --data`` as is)

Rules:
- without ImageSets, the images are ranked by a seeded hash of their file names and the first
  round(fraction * n) go to test / val (``--val-fraction``, ``--test-fraction``, ``--seed``): exact
  counts, the same split for the same files, and adding m files moves at most m + 1 of the others.
  An image without an XML, or with no objects, is kept as a background image (empty label).
- class order: ``names`` when given (objects of other classes are dropped with a warning),
  otherwise all names found, sorted. Names are case-sensitive, as in the XML.
- VOC pixel coordinates are 1-based: x1 = xmin - 1, x2 = xmax - 1 (YOLOv5's VOC convention;
  LabelImg writes the same), then clipped to the image size read from ``<size>`` (or the image
  when ``<size>`` is absent); clipped boxes are counted.
- boxes with xmax <= xmin or ymax <= ymin, or with no area left after clipping, are dropped
  with one warning line each.
- images of one split that share a base name (``x.jpg`` and ``x.png``) never share a label file: the
  later one is written as ``x_2.png`` (warned and counted).
- ``<difficult>1`` objects are kept by default (they are real objects; YOLOv5's VOC script
  drops them); ``--skip-difficult`` drops them.
- an XML that does not parse, or a source without images or XMLs, stops the conversion with
  one line naming the file; nothing is written. ``--out`` must not exist (a second conversion into
  it is refused): source files are never moved, deleted or overwritten.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from data.converters.common import (ConverterError, UniqueNames, check_fractions, hash_splits, image_size,
                                    place_image, run_cli, write_dataset_yaml, write_labels, yolo_row)
from utils.core.images import IMG_FORMATS
from utils.core.argtypes import HelpFormatter

LOGGER = logging.getLogger(__name__)
VOC_XML_DIRS, VOC_IMAGE_DIRS = ("Annotations", "annotations"), ("JPEGImages", "images")


@dataclass
class VocStats:
    """Counts per conversion: images (backgrounds among them, XMLs without an image), boxes, per split."""

    images: int = 0
    images_renamed: int = 0
    backgrounds: int = 0
    images_missing: int = 0
    boxes_read: int = 0
    boxes_written: int = 0
    boxes_dropped: int = 0
    boxes_clipped: int = 0
    per_split: dict = field(default_factory=dict)


@dataclass
class Item:
    """One image to convert: its split, file and XML (None = background image)."""

    split: str
    image: Path
    xml: Path | None


def _parse_xml(xml_file: Path) -> tuple[str | None, tuple[int, int] | None, list[tuple]]:
    """-> (image filename, (w, h) or None, [(name, difficult, xmin, ymin, xmax, ymax)])."""
    try:
        root = ET.parse(xml_file).getroot()
    except ET.ParseError as e:
        raise ConverterError(f"{xml_file}: not valid XML ({e})") from e
    fn = root.findtext("filename")
    size = root.find("size")
    wh = None
    if size is not None:
        try:
            w, h = int(float(size.findtext("width", "0"))), int(float(size.findtext("height", "0")))
        except (ValueError, OverflowError) as e:  # int(float("inf")) is an OverflowError
            raise ConverterError(f"{xml_file}: <size> is not a finite number ({e})") from None
        wh = (w, h) if w > 0 and h > 0 else None
    objs = []
    for o in root.iter("object"):
        name = o.findtext("name", "").strip()
        b = o.find("bndbox")
        try:
            coords = [float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError) as e:
            raise ConverterError(f"{xml_file}: object {name!r} needs a <bndbox> with numeric "
                                 "xmin, ymin, xmax, ymax") from e
        objs.append((name, o.findtext("difficult", "0").strip() == "1", *coords))
    return fn, wh, objs


def _box_row(obj: tuple, names: list[str], keep_difficult: bool, w: int, h: int,
             stats: VocStats) -> tuple[str | None, str | None]:
    """One XML object -> (YOLO row, None) or (None, why it is dropped)."""
    name, difficult, xmin, ymin, xmax, ymax = obj
    if name not in names:
        return None, f"class {name!r} not in names"
    if difficult and not keep_difficult:
        return None, "difficult"
    if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
        return None, f"non-finite coordinates ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})"
    if xmax <= xmin or ymax <= ymin:
        return None, f"empty box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})"
    x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax - 1, ymax - 1
    cx1, cy1, cx2, cy2 = min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h)
    if cx2 <= cx1 or cy2 <= cy1:
        return None, f"no area inside the {w}x{h} image ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})"
    stats.boxes_clipped += (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2)
    return yolo_row(names.index(name), cx1, cy1, cx2, cy2, w, h), None


def _convert_one(item: Item, out: Path, names: list[str], keep_difficult: bool, link: bool,
                 stats: VocStats, unique: UniqueNames) -> None:
    wh, objs = None, []
    if item.xml is not None:
        _, wh, objs = _parse_xml(item.xml)
    w, h = wh or image_size(item.image)
    rows = []
    for obj in objs:
        stats.boxes_read += 1
        row, why = _box_row(obj, names, keep_difficult, w, h, stats)
        if why:
            stats.boxes_dropped += 1
            LOGGER.warning("%s: dropping object %r: %s", item.xml, obj[0], why)
        else:
            rows.append(row)
    name = unique.claim(item.split, item.image, item.image.name)
    stats.images_renamed += name != item.image.name
    place_image(item.image, out / "images" / item.split / name, link)
    write_labels(out, item.split, Path(name).stem, rows)
    stats.boxes_written += len(rows)
    stats.backgrounds += not rows
    stats.images += 1
    stats.per_split[item.split] = stats.per_split.get(item.split, 0) + 1


def _find_image(image_dir: Path, stem: str, filename: str | None) -> Path | None:
    if filename and (image_dir / filename).is_file():
        return image_dir / filename
    return next((p for p in sorted(image_dir.glob(stem + ".*")) if p.suffix[1:].lower() in IMG_FORMATS), None)


def _layout(source: Path) -> tuple[Path, Path]:
    """(XML folder, image folder): Annotations/ or annotations/ and JPEGImages/ or images/, else ``source``."""
    xml_dir = next((source / d for d in VOC_XML_DIRS if (source / d).is_dir()), source)
    image_dir = next((source / d for d in VOC_IMAGE_DIRS if (source / d).is_dir()), xml_dir)
    return xml_dir, image_dir


def _imagesets_items(source: Path, splits: list[str] | None) -> list[Item]:
    """VOC: the images named by ImageSets/Main/{split}.txt (train/val/test found, else trainval)."""
    sets = source / "ImageSets" / "Main"
    xml_dir, image_dir = _layout(source)
    if splits is None:
        splits = [s for s in ("train", "val", "test") if (sets / f"{s}.txt").is_file()] or ["trainval"]
    items = []
    for split in splits:
        list_file = sets / f"{split}.txt"
        if not list_file.is_file():
            raise ConverterError(f"{list_file}: split list not found")
        for stem in (s.split()[0] for s in list_file.read_text().splitlines() if s.strip()):
            xml = xml_dir / f"{stem}.xml"
            if not xml.is_file():
                raise ConverterError(f"{list_file}: {stem} has no annotation {xml}")
            im = _find_image(image_dir, stem, _parse_xml(xml)[0])
            if im is None:
                raise ConverterError(f"{list_file}: no image for {stem} in {image_dir}")
            items.append(Item(split, im, xml))
    return items


def _folder_items(source: Path, val_fraction: float, test_fraction: float, seed: int,
                  stats: VocStats) -> list[Item]:
    """LabelImg folders: every image, its XML when there is one, split by the file-name hash."""
    xml_dir, image_dir = _layout(source)
    images = sorted(p for p in image_dir.iterdir() if p.is_file() and p.suffix[1:].lower() in IMG_FORMATS)
    xmls = {p.stem: p for p in sorted(xml_dir.glob("*.xml"))}
    if not images and not xmls:
        raise ConverterError(f"{source}: no images or .xml files found (expected Annotations/ + JPEGImages/, "
                             "annotations/ + images/, or XMLs beside their images)")
    for stem in sorted(set(xmls) - {p.stem for p in images}):
        stats.images_missing += 1
        LOGGER.warning("%s: no image %s.* in %s, skipped", xmls[stem], stem, image_dir)
    splits = hash_splits([p.name for p in images], val_fraction, test_fraction, seed)
    return [Item(split, p, xmls.get(p.stem)) for split, p in zip(splits, images)]


def discover_names(items: list[Item]) -> list[str]:
    """All object names in the items' XMLs, sorted."""
    return sorted({o[0] for it in items if it.xml is not None for o in _parse_xml(it.xml)[2]})


def convert_voc(source: str | Path, out: str | Path, names: list[str] | None = None,
                splits: list[str] | None = None, keep_difficult: bool = True, link: bool = True,
                write_yaml: bool = True, val_fraction: float = 0.2, test_fraction: float = 0.0,
                seed: int = 0) -> VocStats:
    """Convert a VOC tree or LabelImg folder into ``out`` (built in a temporary sibling, then renamed).

    With ImageSets/Main, ``splits`` default to the lists among train/val/test that exist (trainval
    only when none does); without, :func:`hash_splits` of the file names. ``out`` must not exist.
    """
    source, out = Path(source).resolve(), Path(out).resolve()
    if not source.is_dir():
        raise ConverterError(f"--source {source} is not a folder")
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it first")
    check_fractions(val_fraction, test_fraction)
    stats = VocStats()
    if (source / "ImageSets" / "Main").is_dir():
        if (val_fraction, test_fraction) != (0.2, 0.0):
            raise ConverterError(f"{source}: its ImageSets/Main lists set the splits; --val-fraction and "
                                 "--test-fraction only split folders without ImageSets")
        items = _imagesets_items(source, splits)
    elif splits:
        raise ConverterError(f"--splits names ImageSets/Main lists, but {source} has no ImageSets/Main")
    else:
        items = _folder_items(source, val_fraction, test_fraction, seed, stats)
    names = list(names) if names else discover_names(items)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    unique = UniqueNames()
    try:
        for item in items:
            _convert_one(item, tmp, names, keep_difficult, link, stats, unique)
        if write_yaml:
            write_dataset_yaml(tmp, names, list(stats.per_split))
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    LOGGER.info("VOC %s -> %s: %d images (%d background), %d boxes written, %d clipped, %d dropped", source,
                out, stats.images, stats.backgrounds, stats.boxes_written, stats.boxes_clipped, stats.boxes_dropped)
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--source", required=True, help="VOC root or LabelImg folder")
    ap.add_argument("--out", required=True, help="output folder (must not exist)")
    ap.add_argument("--names", nargs="+", help="class names in index order (default: sorted found)")
    ap.add_argument("--splits", nargs="+", help="ImageSets/Main lists (default: train val test found)")
    ap.add_argument("--val-fraction", type=float, default=0.2, help="share of images for val (no ImageSets)")
    ap.add_argument("--test-fraction", type=float, default=0.0, help="share of images for test (no ImageSets)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the file-name hash split")
    ap.add_argument("--skip-difficult", action="store_true", help="drop <difficult>1 objects")
    ap.add_argument("--copy", action="store_true", help="copy images instead of hard-linking")
    a = ap.parse_args(argv)

    def convert() -> str:
        st = convert_voc(a.source, a.out, a.names, a.splits, not a.skip_difficult, not a.copy,
                         val_fraction=a.val_fraction, test_fraction=a.test_fraction, seed=a.seed)
        return (f"{st.images} images ({st.per_split}, {st.backgrounds} background, {st.images_renamed} renamed, "
                f"{st.images_missing} XMLs without image), {st.boxes_read} boxes read, {st.boxes_written} written ({st.boxes_clipped} "
                f"clipped), {st.boxes_dropped} dropped -> {Path(a.out) / 'data.yaml'}")

    return run_cli(convert, a.out)


if __name__ == "__main__":
    raise SystemExit(main())
