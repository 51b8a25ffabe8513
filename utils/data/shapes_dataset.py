"""The built-in dataset: seeded images of shapes on textured, cluttered backgrounds.

Layout written (YOLO txt)::

    <root>/images/{train,val}/000000.png   BGR PNG, imgsz x imgsz
    <root>/labels/{train,val}/000000.txt   "cls xc yc w h" normalised, one object per row
    <root>/config.json                     the ShapesConfig that produced it

Classes (index: name): 0 circle, 1 square, 2 triangle, 3 star, 4 cross. Objects are drawn in
sequence, later ones may hide part of earlier ones (at most ``max_occlusion`` of an object's area);
each box is the extent of the object's *visible* pixels. Clutter under the objects: line segments,
arcs, thin ellipses and dots that are not objects. Everything is drawn from
``np.random.default_rng([seed, split, index])`` and written with fixed PNG parameters, so the
same arguments give the same bytes (with the same OpenCV build).

Difficulty knobs are the ``ShapesConfig`` fields (sizes are fractions of ``imgsz``).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from utils.core.argtypes import MAX_IMGSZ

LOGGER = logging.getLogger(__name__)
CLASSES = ("circle", "square", "triangle", "star", "cross")
_SPLIT_IDS = {"train": 0, "val": 1}
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 3]


@dataclass(frozen=True)
class ShapesConfig:
    """Generator parameters; sizes are fractions of ``imgsz`` (object size = circumscribed diameter)."""

    n_train: int = 400
    n_val: int = 100
    imgsz: int = 256
    seed: int = 0
    objects: tuple[int, int] = (1, 8)          # objects per image, inclusive range
    background_prob: float = 0.05              # images with no objects at all
    size: tuple[float, float] = (0.06, 0.38)   # regular objects: 15..97 px at 256
    small_prob: float = 0.2                    # share of small objects ...
    small_size: tuple[float, float] = (0.032, 0.06)  # ... 8..15 px at 256
    max_occlusion: float = 0.4                 # max hidden share of an object's area
    clutter: tuple[int, int] = (3, 10)         # distractors per image
    min_contrast: float = 50.0                 # min |luminance difference| object vs background
    noise_sigma: tuple[float, float] = (2.0, 10.0)
    blur_prob: float = 0.3

    def __post_init__(self) -> None:
        if isinstance(self.imgsz, bool) or not isinstance(self.imgsz, int) or not 32 <= self.imgsz <= MAX_IMGSZ:
            raise ValueError(f"imgsz must be an integer in 32..{MAX_IMGSZ}, got {self.imgsz!r}")


def _polygon(cls: int, centre: np.ndarray, radius: float, angle: float) -> np.ndarray | None:
    """Vertices (k, 2) of a polygonal class, or None for the circle."""
    if cls == 0:
        return None
    if cls == 1:
        t = np.deg2rad(angle + np.arange(4) * 90 + 45)
        r = np.full(4, radius)
    elif cls == 2:
        t = np.deg2rad(angle + np.arange(3) * 120)
        r = np.full(3, radius)
    elif cls == 3:
        t = np.deg2rad(angle + np.arange(10) * 36)
        r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.42)
    else:  # cross: a plus sign with arms one third of its span wide
        a = radius / np.sqrt(1 + (1 / 3) ** 2)
        b = a / 3
        pts = np.array([[b, a], [b, b], [a, b], [a, -b], [b, -b], [b, -a],
                        [-b, -a], [-b, -b], [-a, -b], [-a, b], [-b, b], [-b, a]])
        c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
        return centre + pts @ np.array([[c, s], [-s, c]])
    return centre + np.stack((r * np.cos(t), r * np.sin(t)), 1)


def _object_mask(shape: tuple[int, int], cls: int, centre: np.ndarray, radius: float,
                 angle: float) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    poly = _polygon(cls, centre, radius, angle)
    if poly is None:
        cv2.circle(mask, tuple(np.round(centre * 16).astype(int)), int(round(radius * 16)), 255, -1,
                   cv2.LINE_8, shift=4)
    else:
        cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
    return mask


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    """Float (s, s, 3): base colour + low-frequency field + oriented stripes."""
    base = rng.uniform(0, 255, 3)
    field = cv2.resize(rng.uniform(-70, 70, (4, 4, 3)), (s, s), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    theta, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.5)
    stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * freq) * rng.uniform(0, 25)
    return base + field + stripes[..., None]


def _draw_clutter(rng: np.random.Generator, img: np.ndarray, n: int) -> None:
    """Non-object distractors, drawn in place on the float image."""
    s = img.shape[0]
    for _ in range(n):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        kind = rng.integers(4)
        p = rng.uniform(0, s, 2).astype(int)
        if kind == 0:  # line segment
            q = (p + rng.uniform(-0.4 * s, 0.4 * s, 2)).astype(int)
            cv2.line(img, tuple(p), tuple(q), colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 1:  # open arc
            axes = tuple(rng.uniform(0.05 * s, 0.2 * s, 2).astype(int))
            a0 = rng.uniform(0, 360)
            cv2.ellipse(img, tuple(p), axes, rng.uniform(0, 180), a0, a0 + rng.uniform(60, 200),
                        colour, int(rng.integers(1, 4)), cv2.LINE_AA)
        elif kind == 2:  # thin filled ellipse (aspect >= 4, unlike any class)
            long = rng.uniform(0.04 * s, 0.2 * s)
            axes = (int(long), max(1, int(long / rng.uniform(4, 8))))
            cv2.ellipse(img, tuple(p), axes, rng.uniform(0, 180), 0, 360, colour, -1, cv2.LINE_AA)
        else:  # speckle of dots
            for q in p + rng.normal(0, 0.05 * s, (int(rng.integers(3, 12)), 2)):
                cv2.circle(img, tuple(q.astype(int)), int(rng.integers(1, 3)), colour, -1, cv2.LINE_AA)


def _luminance(bgr: np.ndarray) -> np.ndarray:
    return bgr[..., 0] * 0.114 + bgr[..., 1] * 0.587 + bgr[..., 2] * 0.299


def _place_objects(rng: np.random.Generator, cfg: ShapesConfig, img: np.ndarray) -> list:
    """Draw objects in place; returns [(cls, visible mask)] with visible masks updated for occlusion."""
    s = cfg.imgsz
    n = 0 if rng.random() < cfg.background_prob else int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
    placed: list[list] = []  # [cls, visible mask, full area]
    for _ in range(n):
        for _try in range(20):
            cls = int(rng.integers(len(CLASSES)))
            lo, hi = cfg.small_size if rng.random() < cfg.small_prob else cfg.size
            radius = rng.uniform(lo, hi) * s / 2
            centre = rng.uniform(radius * 0.3, s - radius * 0.3, 2)  # may be cut by the border
            mask = _object_mask((s, s), cls, centre, radius, rng.uniform(0, 360)) > 0
            area = int(mask.sum())
            if area < 16:
                continue
            if all((p[1] & ~mask).sum() >= (1 - cfg.max_occlusion) * p[2] for p in placed):
                break
        else:
            continue
        bg_lum = float(_luminance(img[mask]).mean())
        for _c in range(20):
            colour = rng.uniform(0, 255, 3)
            if abs(float(_luminance(colour)) - bg_lum) >= cfg.min_contrast:
                break
        img[mask] = colour + rng.normal(0, 6, (area, 3))  # slightly textured fill
        for p in placed:
            p[1] &= ~mask
        placed.append([cls, mask, area])
    return [(p[0], p[1]) for p in placed]


def render_image(cfg: ShapesConfig, split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """One image -> (BGR uint8 (s, s, 3), labels (n, 5) float ``[cls, x, y, w, h]`` normalised)."""
    rng = np.random.default_rng([cfg.seed, _SPLIT_IDS[split], index])
    s = cfg.imgsz
    img = _background(rng, s)
    _draw_clutter(rng, img, int(rng.integers(cfg.clutter[0], cfg.clutter[1] + 1)))
    objects = _place_objects(rng, cfg, img)
    if rng.random() < cfg.blur_prob:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    img = img + rng.normal(0, rng.uniform(*cfg.noise_sigma), img.shape)
    labels = []
    for cls, vis in objects:
        ys, xs = np.nonzero(vis)
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        labels.append([cls, (x1 + x2) / 2 / s, (y1 + y2) / 2 / s, (x2 - x1) / s, (y2 - y1) / s])
    return np.clip(np.round(img), 0, 255).astype(np.uint8), np.array(labels, np.float64).reshape(-1, 5)


def make_shapes_dataset(root: str | Path, n_train: int = 400, n_val: int = 100, imgsz: int = 256,
                        seed: int = 0, **overrides) -> Path:
    """Write the dataset into ``root`` (created; existing files overwritten). Returns ``root``.

    ``overrides`` are other ``ShapesConfig`` fields.
    """
    cfg = replace(ShapesConfig(), n_train=n_train, n_val=n_val, imgsz=imgsz, seed=seed, **overrides)
    root = Path(root)
    for split, n in (("train", cfg.n_train), ("val", cfg.n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, labels = render_image(cfg, split, i)
            if not cv2.imwrite(str(root / "images" / split / f"{i:06d}.png"), img, _PNG_PARAMS):
                raise OSError(f"cannot write {root / 'images' / split}")
            rows = [f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in labels]
            (root / "labels" / split / f"{i:06d}.txt").write_text("".join(r + "\n" for r in rows))
    (root / "config.json").write_text(json.dumps(asdict(cfg), indent=1, sort_keys=True) + "\n")
    return root


SAMPLE_SEED = 1  # not the built-in dataset's seed 0: images no default run has trained on


def ensure_sample_images(root: str | Path, n: int = 4) -> Path:
    """``n`` generated shapes images (256 px, seed 1) under ``root``; returns their folder.

    detect.py's default source, so that ``python detect.py`` alone works after the quick start.
    """
    return ensure_shapes_dataset(root, n_train=0, n_val=n, seed=SAMPLE_SEED) / "images" / "val"


def _matches(root: Path, want: dict) -> bool:
    cfg_file = root / "config.json"
    return cfg_file.is_file() and json.loads(cfg_file.read_text()) == json.loads(json.dumps(want))


def ensure_shapes_dataset(root: str | Path, **kwargs) -> Path:
    """Generate the dataset at ``root`` unless a complete one with the same config is there.

    Generation writes to a temporary sibling folder and renames it into place, so an interrupted
    run never leaves a folder that looks complete (``config.json`` is written last). Concurrent
    callers are safe: whoever finishes second keeps the first one's folder. A folder made with
    other parameters is replaced (do not do that while another run reads it).
    """
    root = Path(root)
    want = asdict(replace(ShapesConfig(), **kwargs))
    if _matches(root, want):
        return root
    if root.exists() and not (root / "config.json").is_file():
        raise FileExistsError(f"{root} exists but has no config.json: not a generated shapes dataset")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    LOGGER.info("Generating the built-in shapes dataset in %s ...", root)
    make_shapes_dataset(tmp, **kwargs)
    if _matches(root, want):  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        return root
    if root.exists():
        LOGGER.warning("%s was made with other parameters; replacing it", root)
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        os.rename(root, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not _matches(root, want):
            raise
    return root
