"""Checking one image and its YOLO label file.

Label files hold one row per object: ``class x_centre y_centre width height``, coordinates
normalised to 0..1 of the image. What happens to bad input (one warning line per file, never a
crash):

=============================================  ==============================================
problem                                         action
=============================================  ==============================================
image unreadable, truncated, empty, not an      image skipped ("corrupt")
image, smaller than ``MIN_IMAGE_SIDE`` px, or
more than ``MAX_IMAGE_PIXELS`` pixels
row with != 5 columns, non-numeric values,      image skipped ("corrupt"): keeping it with one
negative / fractional class id, class >= nc     object unlabelled would teach it as background
box corner outside [-BOX_TOL, 1 + BOX_TOL]      box clipped to the image, warning
box corner outside by <= BOX_TOL                box clipped silently (converter rounding)
centre outside [-0.5, 1.5] or w/h > 1.5         row dropped ("absurd")
zero area (before or after clipping)            row dropped
duplicate row                                   row dropped
label file missing or empty                     background image (no objects)
label path a folder or not a regular file       image skipped ("corrupt"): a background would
                                                teach its objects as background
=============================================  ==============================================
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from utils.core.images import IMG_FORMATS  # noqa: F401  (the one list; re-exported for the readers here)

MIN_IMAGE_SIDE = 10  # px
# Above this an image is treated as a decompression bomb; the one limit of every image reader
# (training, validation, detect.py, tools/). The CLIs' --max-pixels sets it with set_max_pixels().
DEFAULT_MAX_IMAGE_PIXELS = 20_000 * 20_000
MAX_IMAGE_PIXELS = DEFAULT_MAX_IMAGE_PIXELS
_PIL_LIMIT_LOCK = threading.Lock()  # PIL's own limit is a module global: swap it under a lock
BOX_TOL = 0.01  # normalised; corners this far outside the image are clipped without a warning
ABSURD_CENTRE = (-0.5, 1.5)
ABSURD_SIZE = 1.5
_EXIF_ORIENTATION = 0x0112


@dataclass
class ImageRecord:
    """Result of checking one image/label pair.

    ``labels`` (n, 5) float32 ``[cls, x, y, w, h]`` normalised; ``shape`` = (w, h) px after EXIF
    rotation; ``status`` one of ``ok``, ``background``, ``corrupt``; ``message`` one warning line
    or ``''``; ``dropped`` rows removed (absurd, zero-area, duplicate); ``clipped`` rows clipped.
    """

    im_file: str
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    shape: tuple[int, int] = (0, 0)
    status: str = "ok"
    message: str = ""
    dropped: int = 0
    clipped: int = 0


def img2label_paths(img_paths: list[str]) -> list[str]:
    """Label path for each image: the last ``/images/`` becomes ``/labels/``, the suffix ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    out = []
    for p in img_paths:
        head, sep, tail = p.rpartition(sa)
        p2 = head + sb + tail if sep else p
        out.append(os.path.splitext(p2)[0] + ".txt")
    return out


def _exif_size(im: Image.Image) -> tuple[int, int]:
    """(w, h) as cv2.imread will return it (cv2 applies the EXIF orientation)."""
    w, h = im.size
    try:
        if im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # rotated 90 or 270 degrees
            w, h = h, w
    except Exception:  # broken EXIF does not make the pixels unusable
        pass
    return w, h


def set_max_pixels(limit: int) -> None:
    """Set the pixel limit of every image reader (``--max-pixels``); ValueError unless positive."""
    global MAX_IMAGE_PIXELS
    if limit <= 0:
        raise ValueError(f"--max-pixels must be a positive number of pixels, got {limit}")
    MAX_IMAGE_PIXELS = int(limit)


def too_many_pixels(w: int, h: int) -> str:
    """'' when a (w, h) image is within the pixel limit, else the reason it is refused."""
    if w * h <= MAX_IMAGE_PIXELS:
        return ""
    return (f"{w}x{h} = {w * h} pixels exceeds the limit of {MAX_IMAGE_PIXELS} "
            "(decompression bomb?; raise it with --max-pixels)")


@contextlib.contextmanager
def open_image(im_file: str) -> Iterator[Image.Image]:
    """``PIL.Image.open`` (reads the header only) with ``MAX_IMAGE_PIXELS`` as the only size limit.

    PIL's own limit (a warning above 89 M pixels, an error above twice that) is off while the
    header is read, so that ``--max-pixels`` alone decides.
    """
    with _PIL_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            im = Image.open(im_file)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with im:
        yield im


def _pfm_size(im_file: str) -> tuple[int, int]:
    """(w, h) from a PFM header (``PF``/``Pf``, then width and height), a format PIL does not identify."""
    with open(im_file, "rb") as f:
        kind, w, h = f.read(64).split()[:3]
    if kind not in (b"PF", b"Pf"):
        raise ValueError("not a PFM file")
    return int(w), int(h)


def header_problem(im_file: str) -> str:
    """Why an image must not be decoded ('' when it may), from its header alone: unreadable,
    empty, or over the pixel limit. Never decodes the pixels, so a 30000x30000 PNG costs nothing."""
    try:
        if os.path.getsize(im_file) == 0:
            return "empty file"
        if im_file.lower().endswith(".pfm"):
            return too_many_pixels(*_pfm_size(im_file))
        with open_image(im_file) as im:
            return too_many_pixels(*im.size)
    except Exception as e:  # PIL raises many types for broken files
        return f"unreadable image ({type(e).__name__}: {e})"


def verify_image(im_file: str) -> tuple[tuple[int, int] | None, str]:
    """Check an image file with PIL without trusting it. Returns ((w, h), '') or (None, reason)."""
    try:
        if os.path.getsize(im_file) == 0:
            return None, "empty file"
        with open_image(im_file) as im:
            fmt = (im.format or "").lower()
            big = too_many_pixels(*im.size)
            if big:
                return None, big
            im.verify()  # must come right after open
        with open_image(im_file) as im:
            w, h = _exif_size(im)
        if fmt not in IMG_FORMATS:
            return None, f"unsupported image format {fmt!r}"
        if w < MIN_IMAGE_SIDE or h < MIN_IMAGE_SIDE:
            return None, f"image size {w}x{h} < {MIN_IMAGE_SIDE} px"
        if fmt in ("jpeg", "jpg") and not jpeg_complete(im_file):
            return None, "truncated JPEG"
        return (w, h), ""
    except Exception as e:  # PIL raises many types for broken files
        return None, f"unreadable image ({type(e).__name__}: {e})"


def jpeg_complete(im_file: str) -> bool:
    """A JPEG must end with the EOI marker or at least decode fully (trailing garbage is tolerated)."""
    with open(im_file, "rb") as f:
        f.seek(-2, 2)
        if f.read() == b"\xff\xd9":
            return True
    try:
        with open_image(im_file) as im:
            im.load()  # raises OSError "image file is truncated"
        return True
    except Exception:
        return False


def parse_label_file(lb_file: str, nc: int | None = None) -> tuple[np.ndarray | None, str, int, int]:
    """Read and clean a YOLO label file.

    Returns ``(labels (n, 5) float32 or None if the file is corrupt, message, dropped, clipped)``.
    A missing or empty file gives an empty (0, 5) array; a folder (or a FIFO, a device) in its place is
    corrupt: nothing says the image has no objects.
    """
    if not os.path.isfile(lb_file):
        if os.path.isdir(lb_file):
            return None, "the label path is a folder, not a file", 0, 0
        if os.path.lexists(lb_file):
            return None, "the label path is not a regular file (or a broken link)", 0, 0
        return np.zeros((0, 5), np.float32), "", 0, 0
    try:
        with open(lb_file, encoding="utf-8-sig") as f:  # -sig: a BOM (Windows editors) is not a value
            rows = [ln.split() for ln in f.read().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable label file ({type(e).__name__})", 0, 0
    for i, r in enumerate(rows, 1):
        if len(r) != 5:
            return None, f"line {i}: {len(r)} columns, expected 5 (class x y w h)", 0, 0
    try:
        lb = np.array(rows, dtype=np.float64).reshape(-1, 5)
    except ValueError:
        return None, "non-numeric value", 0, 0
    if not np.isfinite(lb).all():
        return None, "non-finite value", 0, 0
    cls = lb[:, 0]
    if (cls < 0).any() or (cls != np.round(cls)).any():
        bad = cls[(cls < 0) | (cls != np.round(cls))][0]
        return None, f"invalid class id {bad:g} (must be a non-negative integer)", 0, 0
    if nc is not None and (cls >= nc).any():
        return None, f"class id {int(cls.max())} >= nc={nc}", 0, 0
    return _clean_boxes(lb)


def _clean_boxes(lb: np.ndarray) -> tuple[np.ndarray, str, int, int]:
    """Clip, drop absurd / zero-area / duplicate rows of (n, 5) ``[cls, x, y, w, h]``."""
    problems = []
    xy, wh = lb[:, 1:3], lb[:, 3:5]
    absurd = ((xy < ABSURD_CENTRE[0]) | (xy > ABSURD_CENTRE[1])).any(1) | (wh > ABSURD_SIZE).any(1)
    x1y1, x2y2 = xy - wh / 2, xy + wh / 2
    outside = ((x1y1 < -BOX_TOL) | (x2y2 > 1 + BOX_TOL)).any(1) & ~absurd
    x1y1, x2y2 = x1y1.clip(0, 1), x2y2.clip(0, 1)
    zero = ((x2y2 - x1y1) <= 0).any(1) & ~absurd
    keep = ~absurd & ~zero
    out = np.concatenate((lb[:, :1], (x1y1 + x2y2) / 2, x2y2 - x1y1), 1)[keep].astype(np.float32)
    if absurd.any():
        problems.append(f"{int(absurd.sum())} absurd box(es) dropped (centre outside "
                        f"{list(ABSURD_CENTRE)} or side > {ABSURD_SIZE})")
    if zero.any():
        problems.append(f"{int(zero.sum())} zero-area box(es) dropped")
    n_clip = int((outside & keep).sum())
    if n_clip:
        problems.append(f"{n_clip} box(es) outside the image clipped")
    _, first = np.unique(out, axis=0, return_index=True)
    n_dup = len(out) - len(first)
    if n_dup:
        out = out[np.sort(first)]
        problems.append(f"{n_dup} duplicate row(s) dropped")
    return out, "; ".join(problems), int(absurd.sum() + zero.sum()) + n_dup, n_clip


def check_pair(im_file: str, lb_file: str, nc: int | None = None) -> ImageRecord:
    """Check one image and its label file (safe for worker processes: never raises)."""
    rec = ImageRecord(im_file)
    try:
        shape, why = verify_image(im_file)
        if shape is None:
            rec.status, rec.message = "corrupt", f"{im_file}: ignoring corrupt image: {why}"
            return rec
        rec.shape = shape
        labels, why, rec.dropped, rec.clipped = parse_label_file(lb_file, nc)
        if labels is None:
            rec.status, rec.message = "corrupt", f"{lb_file}: ignoring image and labels: {why}"
            return rec
        rec.labels = labels
        rec.status = "ok" if len(labels) else "background"
        if why:
            rec.message = f"{lb_file}: {why}"
    except Exception as e:  # last resort: one bad file must not stop the scan
        rec.status, rec.message = "corrupt", f"{im_file}: ignoring: {type(e).__name__}: {e}"
    return rec


def list_images(path: str | Path | list) -> list[str]:
    """Image files from a folder (recursive), a .txt list, a single image, or a list of those.

    Relative lines in a .txt list are resolved against the .txt file's folder (YOLOv5's ``./``
    convention). Raises FileNotFoundError naming a missing entry.
    """
    out: list[str] = []
    for p in path if isinstance(path, (list, tuple)) else [path]:
        p = Path(p)
        if p.is_dir():
            out += [str(f) for f in sorted(p.rglob("*.*")) if f.suffix[1:].lower() in IMG_FORMATS]
        elif p.is_file() and p.suffix == ".txt":
            lines = [ln.strip() for ln in p.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
            out += [str(f if f.is_absolute() else (p.parent / f)) for f in map(Path, lines)]
        elif p.is_file():
            out.append(str(p))
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return [os.path.abspath(f) for f in out if f.rsplit(".", 1)[-1].lower() in IMG_FORMATS]
