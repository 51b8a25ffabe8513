"""``LoadImagesAndLabels``: the YOLOv5 training/validation dataset (mosaic, affine, HSV, flips).

One item is ``(img, labels, path, shapes)``:

- ``img``: ``torch.uint8 (3, H, W)`` RGB;
- ``labels``: ``torch.float32 (n, 6)`` rows ``[0, cls, x, y, w, h]``, xywh normalised to ``img``
  (column 0 is filled with the image index by ``collate_fn``);
- ``path``: the image file;
- ``shapes``: ``((h0, w0), ((h / h0, w / w0), (pad_w, pad_h)))`` for letterboxed items, so
  ``scale_boxes(img.shape[1:], boxes, *shapes)`` maps boxes back to the original image; ``None``
  for mosaic items (as YOLOv5).

An image that passed the scan but fails to decode at load time (valid CRCs, corrupt pixel data) makes
its item ``None``, which ``collate_fn`` leaves out: it is skipped with one warning naming it, once
per run whichever worker meets it first, and counted (:attr:`LoadImagesAndLabels.unreadable`). In a
mosaic such an image costs only its tile: another image takes its place.
"""
from __future__ import annotations

import logging
import math
import os
import random
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from utils.data.augmentations import (HYP_DEFAULTS, augment_hsv, labels_to_pixels, letterbox, mixup,
                                 mosaic4, random_perspective)
from utils.boxes import xyxy2xywhn
from utils.data.label_cache import load_labels
from utils.data.verify import img2label_paths, list_images

LOGGER = logging.getLogger(__name__)
MOSAIC_TILE_TRIES = 10  # images drawn for a mosaic tile whose image cannot be decoded, before the item is skipped


def _reduced_flag(r: float) -> tuple[int, int]:
    """(cv2.imread flag, k) decoding at the smallest 1/k scale (k = 8, 4, 2) still >= target scale r."""
    for k, flag in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                    (2, cv2.IMREAD_REDUCED_COLOR_2)):
        if r * k <= 1:
            return flag, k
    return cv2.IMREAD_COLOR, 1


class UndecodableImage(OSError):
    """An image file that passed the scan but cannot be decoded; ``index`` is its item."""

    def __init__(self, index: int, im_file: str) -> None:
        super().__init__(f"cannot decode {im_file}")
        self.index = index


class LoadImagesAndLabels(Dataset):
    """Images + YOLO labels of one split.

    Attributes others use: ``im_files`` / ``label_files`` (list of str), ``labels`` (list of
    (n, 5) float32 ``[cls, x, y, w, h]`` normalised), ``shapes`` (np.ndarray (N, 2) original
    ``w, h``), ``batch_shapes`` (rect only: (nb, 2) ``h, w``), ``indices`` (order used by
    ``__getitem__``; assign to it for image-weighted sampling) and the ``mosaic`` switch (both are
    stored in shared memory so the change reaches persistent workers).
    """

    def __init__(self, path: str | Path | list, img_size: int = 640, batch_size: int = 16,
                 augment: bool = False, hyp: dict | None = None, rect: bool = False,
                 image_weights: bool = False, cache_images: str | bool | None = None,
                 single_cls: bool = False, stride: int = 32, pad: float = 0.0, prefix: str = "",
                 nc: int | None = None, use_label_cache: bool = True) -> None:
        self.img_size, self.augment, self.stride, self.prefix = img_size, augment, stride, prefix
        self.hyp = {**HYP_DEFAULTS, **(hyp or {})}
        self.image_weights = image_weights
        self.rect = False if image_weights else rect
        try:
            im_files = list_images(path)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{prefix}{e}") from None
        if not im_files:
            raise FileNotFoundError(f"{prefix}no images found in {path}")
        records = load_labels(im_files, img2label_paths(im_files), None if single_cls else nc, prefix,
                              use_cache=use_label_cache)
        records = [r for r in records if r.status != "corrupt"]
        self.im_files = [r.im_file for r in records]
        self.label_files = img2label_paths(self.im_files)
        self.labels = [r.labels.copy() for r in records]
        if single_cls:
            for lb in self.labels:
                lb[:, 0] = 0
        self.shapes = np.array([r.shape for r in records], dtype=np.float64).reshape(-1, 2)
        self.n = len(self.im_files)
        self.seed = 0  # with the epoch, seeds each item's augmentations (create_dataloader sets it)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._indices = torch.arange(self.n).share_memory_()
        self._mosaic = torch.tensor([augment and not self.rect], dtype=torch.bool).share_memory_()
        self._undecodable = torch.zeros(self.n, dtype=torch.bool).share_memory_()  # seen by every worker
        self.batch = np.floor(np.arange(self.n) / batch_size).astype(int)
        if self.rect:
            self._make_rect(batch_size, pad)
        self.ims: list[np.ndarray | None] = [None] * self.n
        self.npy_files = [str(Path(f).with_suffix(".npy")) for f in self.im_files]
        self.cache_mode = "ram" if cache_images is True else (cache_images or None)
        if cache_images:
            self._cache_images(self.cache_mode)

    @property
    def mosaic(self) -> bool:
        return bool(self._mosaic[0])

    @mosaic.setter
    def mosaic(self, value: bool) -> None:
        self._mosaic[0] = bool(value)

    @property
    def unreadable(self) -> int:
        """How many images failed to decode at load time so far (each is skipped)."""
        return int(self._undecodable.sum())

    def skipped(self, i: int) -> bool:
        """Whether image ``i`` failed to decode and is left out."""
        return bool(self._undecodable[i])

    def skip_undecodable(self, i: int) -> None:
        """Mark image ``i`` as undecodable; the first time, one warning naming it and the count."""
        if self._undecodable[i]:
            return
        self._undecodable[i] = True
        LOGGER.warning("%sWARNING: skipping %s: the image cannot be decoded (%d skipped in this split)",
                       self.prefix, self.im_files[i], self.unreadable)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentations ``__getitem__`` draws (shared memory: reaches persistent workers)."""
        self._epoch[0] = epoch

    def item_seed(self, index: int) -> int:
        """Seed of item ``index``'s augmentations in the current epoch: a function of (seed, epoch,
        index) only, so the worker that loads it, and a --resume in between, change nothing."""
        return int(np.random.SeedSequence((self.seed, int(self._epoch[0]), index)).generate_state(1)[0])

    @property
    def indices(self) -> torch.Tensor:
        return self._indices

    @indices.setter
    def indices(self, value) -> None:
        self._indices[:] = torch.as_tensor(np.asarray(value), dtype=torch.int64)

    def _make_rect(self, batch_size: int, pad: float) -> None:
        """Sort by aspect ratio and give each batch the smallest stride-multiple shape (h, w)."""
        ar = self.shapes[:, 1] / self.shapes[:, 0]  # h / w
        order = ar.argsort()
        self.im_files = [self.im_files[i] for i in order]
        self.label_files = [self.label_files[i] for i in order]
        self.labels = [self.labels[i] for i in order]
        self.shapes, ar = self.shapes[order], ar[order]
        nb = self.batch[-1] + 1
        shapes = np.ones((nb, 2))
        for i in range(nb):
            ari = ar[self.batch == i]
            mini, maxi = ari.min(), ari.max()
            if maxi < 1:
                shapes[i] = [maxi, 1]
            elif mini > 1:
                shapes[i] = [1, 1 / mini]
        self.batch_shapes = np.ceil(shapes * self.img_size / self.stride + pad).astype(int) * self.stride

    def _cache_images(self, mode: str) -> None:
        """'ram': keep resized images in memory; 'disk': save decoded originals as .npy next to images."""
        if mode not in ("ram", "disk"):
            raise ValueError(f"cache must be None, 'ram' or 'disk', got {mode!r}")
        nbytes = 0
        for i in tqdm(range(self.n), desc=f"{self.prefix}Caching images ({mode})", disable=self.n < 64):
            if mode == "disk":
                if not os.path.exists(self.npy_files[i]):
                    im = cv2.imread(self.im_files[i])
                    if im is None:
                        self.skip_undecodable(i)
                        continue
                    if not self._write_npy(i, im):
                        self.cache_mode = None
                        return
                nbytes += os.path.getsize(self.npy_files[i])
            else:
                try:
                    self.ims[i] = self.load_image(i)[0]
                except UndecodableImage:
                    self.skip_undecodable(i)
                    continue
                nbytes += self.ims[i].nbytes
        LOGGER.info("%sCached %d images (%.2f GB %s)", self.prefix, self.n, nbytes / 1e9, mode)

    def _write_npy(self, i: int, im: np.ndarray) -> bool:
        """Image i (decoded: ``im``) into its .npy beside the image; False (and a warning) where that folder
        is read-only, after which images are read from their files (as the label cache falls back)."""
        tmp = self.npy_files[i] + f".{os.getpid()}.tmp.npy"
        try:
            np.save(tmp, im, allow_pickle=False)
            os.replace(tmp, self.npy_files[i])
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            LOGGER.warning("%sWARNING: --cache disk: cannot write %s (%s); reading the images from their files "
                           "instead (try --cache ram)", self.prefix, self.npy_files[i], e.strerror or e)
            return False
        return True

    def __len__(self) -> int:
        return self.n

    def load_image(self, i: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """Image i as BGR uint8 with its long side = img_size -> (im, (h0, w0), (h, w)).

        When augmenting, a JPEG that shrinks by 2x or more is decoded at 1/2, 1/4 or 1/8 scale
        (libjpeg DCT scaling, several times faster than a full decode + resize); validation
        decodes fully and resizes with INTER_AREA, exactly as YOLOv5.
        """
        if self.ims[i] is not None:  # ram cache holds the resized image
            im = self.ims[i]
            return im, (int(self.shapes[i, 1]), int(self.shapes[i, 0])), im.shape[:2]
        w0, h0 = (int(v) for v in self.shapes[i])
        r = self.img_size / max(h0, w0)
        flag, k = _reduced_flag(r) if self.augment else (cv2.IMREAD_COLOR, 1)
        if self.cache_mode == "disk" and os.path.exists(self.npy_files[i]):
            im, k = np.load(self.npy_files[i], allow_pickle=False), 1
        else:
            im = cv2.imread(self.im_files[i], flag)
            if im is not None and k > 1 and im.shape[:2] != (math.ceil(h0 / k), math.ceil(w0 / k)):
                im, k = cv2.imread(self.im_files[i]), 1  # disagrees with the scanned size: decode fully
        if im is None or self._undecodable[i]:
            raise UndecodableImage(i, self.im_files[i])
        if k == 1:
            h0, w0 = im.shape[:2]
        size = (math.ceil(w0 * r), math.ceil(h0 * r))
        if (im.shape[1], im.shape[0]) != size:
            interp = cv2.INTER_LINEAR if (self.augment or r > 1) else cv2.INTER_AREA
            im = cv2.resize(im, size, interpolation=interp)
        return im, (h0, w0), im.shape[:2]

    def load_mosaic(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """4-image mosaic + random_perspective -> (img (s, s, 3), labels (n, 5) cls,xyxy px)."""
        idx = [index] + random.choices(range(self.n), k=3)
        random.shuffle(idx)
        ims = []
        for k, i in enumerate(idx):
            idx[k], im = self._mosaic_tile(i)
            ims.append(im)
        img, labels = mosaic4(ims, [self.labels[i] for i in idx], self.img_size)
        h = self.hyp
        border = -self.img_size // 2
        return random_perspective(img, labels, degrees=h["degrees"], translate=h["translate"],
                                  scale=h["scale"], shear=h["shear"], perspective=h["perspective"],
                                  border=(border, border))

    def _mosaic_tile(self, i: int) -> tuple[int, np.ndarray]:
        """(index, image) of one mosaic tile: image ``i``, or where it cannot be decoded (skipped with its
        warning) another image drawn at random, so that one bad file costs a tile, not the whole item.
        Which tiles fail is the same in every worker and epoch, so the draws stay reproducible."""
        for _ in range(MOSAIC_TILE_TRIES):
            try:
                return i, self.load_image(i)[0]
            except UndecodableImage:
                self.skip_undecodable(i)
                i = random.randrange(self.n)
        return i, self.load_image(i)[0]  # mostly undecodable images: the item is skipped

    def _load_letterboxed(self, index: int) -> tuple[np.ndarray, np.ndarray, Any]:
        """Single image letterboxed to img_size (or its rect batch shape), labels cls,xyxy px."""
        img, (h0, w0), (h, w) = self.load_image(index)
        shape = tuple(self.batch_shapes[self.batch[index]]) if self.rect else self.img_size
        img, ratio, pad = letterbox(img, shape, auto=False, scaleup=self.augment)
        shapes = (h0, w0), ((float(h / h0 * ratio[1]), float(w / w0 * ratio[0])), pad)
        labels = labels_to_pixels(self.labels[index], ratio[0] * w, ratio[1] * h, pad[0], pad[1])
        if self.augment:
            hp = self.hyp
            img, labels = random_perspective(img, labels, degrees=hp["degrees"], translate=hp["translate"],
                                             scale=hp["scale"], shear=hp["shear"],
                                             perspective=hp["perspective"])
        return img, labels, shapes

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str, Any] | None:
        """The item, or None when one of its images cannot be decoded (see the module docstring)."""
        try:
            return self._get_item(index)
        except UndecodableImage as e:
            self.skip_undecodable(e.index)
            return None

    def _get_item(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str, Any]:
        if self.augment:  # the augmentations draw from Python's and NumPy's global generators
            seed = self.item_seed(index)
            random.seed(seed)
            np.random.seed(seed)
        index = int(self.indices[index])
        hyp = self.hyp
        if self.mosaic and random.random() < hyp["mosaic"]:
            img, labels = self.load_mosaic(index)
            shapes = None
            if random.random() < hyp["mixup"]:
                img, labels = mixup(img, labels, *self.load_mosaic(random.randint(0, self.n - 1)))
        else:
            img, labels, shapes = self._load_letterboxed(index)
        nl = len(labels)
        if nl:
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=img.shape[1], h=img.shape[0], clip=True, eps=1e-3)
        if self.augment:
            augment_hsv(img, hgain=hyp["hsv_h"], sgain=hyp["hsv_s"], vgain=hyp["hsv_v"])
            if random.random() < hyp["flipud"]:
                img = np.flipud(img)
                if nl:
                    labels[:, 2] = 1 - labels[:, 2]
            if random.random() < hyp["fliplr"]:
                img = np.fliplr(img)
                if nl:
                    labels[:, 1] = 1 - labels[:, 1]
        labels_out = torch.zeros((nl, 6))
        if nl:
            labels_out[:, 1:] = torch.from_numpy(np.asarray(labels, dtype=np.float32))
        img = np.ascontiguousarray(img.transpose((2, 0, 1))[::-1])  # HWC BGR -> CHW RGB
        return torch.from_numpy(img), labels_out, self.im_files[index], shapes

    @staticmethod
    def collate_fn(batch: list) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple]:
        """-> (imgs uint8 (bs, 3, H, W), targets float32 (n, 6) [img_idx, cls, x, y, w, h], paths, shapes).

        Skipped items (None) are left out; a batch of skipped items only has bs = 0."""
        batch = [b for b in batch if b is not None]
        if not batch:
            return torch.zeros((0, 3, 0, 0), dtype=torch.uint8), torch.zeros((0, 6)), (), ()
        im, label, path, shapes = zip(*batch)
        for i, lb in enumerate(label):
            lb[:, 0] = i
        # np.stack: torch.stack's intra-op threads stall when the cores are oversubscribed
        return torch.from_numpy(np.stack([x.numpy() for x in im], 0)), torch.cat(label, 0), path, shapes
