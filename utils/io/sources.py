"""Inference sources for detect.py: image files, folders, globs, .txt lists and videos."""
from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from utils.data.augmentations import letterbox
from utils.data.verify import header_problem, jpeg_complete, too_many_pixels

LOGGER = logging.getLogger(__name__)

IMG_FORMATS = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")
VID_FORMATS = ("asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv")


def _suffix(path: str) -> str:
    return Path(path).suffix[1:].lower()


def _expand(source: str | Path) -> list[str]:
    """One source entry -> the files it names (a .txt list is read line by line, relative to its folder)."""
    p = str(source).strip()
    if not os.path.exists(p) and glob.has_magic(p):
        matches = sorted(glob.glob(p, recursive=True))
        if not matches:
            raise FileNotFoundError(f"source '{p}' matches no files")
        return matches
    if os.path.isdir(p):
        return sorted(glob.glob(os.path.join(p, "*.*")))
    if os.path.isfile(p) and _suffix(p) == "txt":
        base = Path(p).parent
        lines = [ln.strip() for ln in Path(p).read_text().splitlines() if ln.strip()]
        return [f for ln in lines for f in _expand(ln if os.path.exists(ln) else base / ln)]
    if os.path.isfile(p):
        if _suffix(p) not in IMG_FORMATS + VID_FORMATS:
            LOGGER.warning("skipping %s: unsupported suffix", p)
        return [p]
    raise FileNotFoundError(f"source '{p}' does not exist")


class LoadImages:
    """Iterate over images and video frames, letterboxed for the model.

    Args:
        path: a file, a folder, a glob, a .txt file listing any of those, or a list of those.
        img_size: target size, an int or (h, w); stride: the model's max stride; auto: minimum-rectangle padding.

    Yields ``(path, im, im0, cap, s)``: ``im`` (3, h, w) RGB uint8 contiguous letterboxed array, ``im0`` the
    original BGR (H, W, 3) image, ``cap`` the ``cv2.VideoCapture`` for video frames else None, ``s`` a
    description like ``'image 1/2 /data/a.jpg: '``. Unreadable images, and images or videos over the
    shared pixel limit (``utils.data.verify.MAX_IMAGE_PIXELS``, read from the header before any
    decoding), are skipped with a warning; ``skipped`` lists ``(path, reason)`` pairs.
    """

    def __init__(self, path: str | Path | Sequence[str | Path], img_size: int | Sequence[int] = 640,
                 stride: int = 32, auto: bool = True):
        entries = [path] if isinstance(path, (str, Path)) else list(path)
        files = [f for e in entries for f in _expand(e)]
        images = [f for f in files if _suffix(f) in IMG_FORMATS]
        videos = [f for f in files if _suffix(f) in VID_FORMATS]
        if not images and not videos:
            raise FileNotFoundError(f"no images or videos found in {path}; supported images: {IMG_FORMATS}, "
                                    f"videos: {VID_FORMATS}")
        self.files = images + videos
        self.nf, self.video_flag = len(self.files), [False] * len(images) + [True] * len(videos)
        self.img_size = tuple(img_size) if isinstance(img_size, (list, tuple)) else img_size
        self.stride, self.auto = stride, auto
        self.skipped: list[tuple[str, str]] = []
        self.cap: cv2.VideoCapture | None = None
        self.frame = self.frames = 0

    def __len__(self) -> int:
        return self.nf

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray, cv2.VideoCapture | None, str]]:
        for index, path in enumerate(self.files):
            if self.video_flag[index]:
                yield from self._video(index, path)
                continue
            why = header_problem(path)
            im0 = None if why else cv2.imread(path)
            if im0 is None:
                self._skip(path, why or "image cannot be read")
                continue
            if _suffix(path) in ("jpg", "jpeg") and not jpeg_complete(path):
                LOGGER.warning("WARNING: %s is a truncated JPEG: detecting on the part that decodes", path)
            yield path, self._prepare(im0), im0, None, f"image {index + 1}/{self.nf} {path}: "

    def _video(self, index: int, path: str):
        self.cap = cv2.VideoCapture(path)
        self.frames, self.frame = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0
        size = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        why = "video cannot be opened" if not self.cap.isOpened() else too_many_pixels(*size)
        if why:
            self.cap.release()
            self._skip(path, why)
            return
        while True:
            ok, im0 = self.cap.read()
            if not ok:
                break
            self.frame += 1
            s = f"video {index + 1}/{self.nf} ({self.frame}/{self.frames}) {path}: "
            yield path, self._prepare(im0), im0, self.cap, s
        self.cap.release()

    def _skip(self, path: str, why: str) -> None:
        LOGGER.warning("skipping %s: %s", path, why)
        self.skipped.append((path, why))

    def _prepare(self, im0: np.ndarray) -> np.ndarray:
        """BGR (H, W, 3) -> letterboxed RGB (3, h, w) contiguous uint8."""
        im = letterbox(im0, self.img_size, stride=self.stride, auto=self.auto)[0]
        return np.ascontiguousarray(im.transpose((2, 0, 1))[::-1])
