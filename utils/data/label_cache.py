"""Scanning a split's images and labels once, with an on-disk cache.

The cache is a JSON file next to the labels folder (``labels/train`` -> ``labels/train.cache``),
plain data only. It is keyed by a SHA-256 of every image and label path with its size and mtime,
plus the cache version, so any change to the files rebuilds it. The cache holds the labels
checked without ``nc``; class ids >= nc are rejected after loading, so runs with different
``nc`` (e.g. ``--single-cls``) share one cache. It is written to a
temporary file and renamed, so a killed run never leaves a half-written cache. When the dataset
folder is not writable (a read-only mount) the cache goes to the user's cache folder instead
(``$XDG_CACHE_HOME/yolo-lab/labels/``, named by a hash of the labels folder); when neither is
writable the run only logs a warning.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from multiprocessing.pool import ThreadPool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.data import verify
from utils.data.config import DatasetError

LOGGER = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: a label path that is a folder is corrupt, no longer a background
NUM_THREADS = min(8, max(1, os.cpu_count() or 1))


def files_hash(files: list[str]) -> str:
    """SHA-256 of paths + sizes + mtimes (missing files hash as missing)."""
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}\0missing\n".encode())
    return h.hexdigest()


def cache_path_for(label_files: list[str]) -> Path:
    """``.../labels/train/a.txt`` -> ``.../labels/train.cache``."""
    return Path(label_files[0]).parent.with_suffix(".cache")


def user_cache_path_for(label_files: list[str]) -> Path:
    """The fallback cache for a read-only dataset: one file per labels folder under the user's cache dir."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "yolo-lab" / "labels"
    folder = str(Path(label_files[0]).parent.resolve())
    return base / f"{hashlib.sha256(folder.encode()).hexdigest()[:16]}.cache"


def _record_to_json(r: verify.ImageRecord) -> list:
    return [r.im_file, r.status, list(r.shape), r.labels.tolist(), r.message, r.dropped, r.clipped]


def _record_from_json(x: list) -> verify.ImageRecord:
    im_file, status, shape, labels, message, dropped, clipped = x
    lb = np.array(labels, dtype=np.float32).reshape(-1, 5)
    return verify.ImageRecord(im_file, lb, tuple(shape), status, message, dropped, clipped)


def load_cache(path: Path, expected_hash: str) -> list[verify.ImageRecord] | None:
    """Records from a cache file if it exists, parses and matches ``expected_hash``; else None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != CACHE_VERSION or data.get("hash") != expected_hash:
            return None
        return [_record_from_json(x) for x in data["records"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_cache(path: Path, file_hash: str, records: list[verify.ImageRecord], prefix: str = "") -> bool:
    """Write the cache atomically; False (and a warning) when the folder is not writable."""
    data = {"version": CACHE_VERSION, "hash": file_hash, "records": [_record_to_json(r) for r in records]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        LOGGER.warning("%sWARNING: cache directory %s is not writeable: %s", prefix, path.parent, e)
        try:  # on a read-only file system the clean-up fails the same way; nothing was written then
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return False
    LOGGER.info("%sNew cache created: %s", prefix, path)
    return True


def scan_records(im_files: list[str], label_files: list[str], prefix: str) -> list[verify.ImageRecord]:
    """Check every pair in a thread pool, with a tqdm bar."""
    records: list[verify.ImageRecord] = []
    desc = f"{prefix}Scanning {Path(label_files[0]).parent}"
    with ThreadPool(NUM_THREADS) as pool:
        it = pool.imap(lambda p: verify.check_pair(p[0], p[1]), zip(im_files, label_files))
        for rec in tqdm(it, desc=desc, total=len(im_files), disable=len(im_files) < 64):
            records.append(rec)
    return records


def _recheck(rec: verify.ImageRecord, nc: int | None, label_file: str) -> verify.ImageRecord:
    """A copy marked corrupt when a class id is >= nc or the image exceeds the current pixel limit
    (the cache is built without nc, and maybe under another --max-pixels). The limit is checked on the
    image's header too: a cache edited to call a 25000x25000 PNG 256x256 must not get it decoded."""
    if rec.status == "corrupt":
        return rec
    big = verify.too_many_pixels(*rec.shape) or verify.header_problem(rec.im_file)
    if big:
        msg = f"{rec.im_file}: ignoring corrupt image: {big}"
    elif nc is not None and len(rec.labels) and rec.labels[:, 0].max() >= nc:
        msg = f"{label_file}: ignoring image and labels: class id {int(rec.labels[:, 0].max())} >= nc={nc}"
    else:
        return rec
    return verify.ImageRecord(rec.im_file, rec.labels, rec.shape, "corrupt", msg, rec.dropped, rec.clipped)


def summarize(records: list[verify.ImageRecord], prefix: str = "") -> str:
    """One line: ``train: 200 images, 3 backgrounds, 2 corrupt, 5 rows dropped, 1 clipped``."""
    n_ok = sum(r.status != "corrupt" for r in records)
    n_bg = sum(r.status == "background" for r in records)
    n_bad = sum(r.status == "corrupt" for r in records)
    dropped, clipped = sum(r.dropped for r in records), sum(r.clipped for r in records)
    return (f"{prefix}{n_ok} images, {n_bg} backgrounds, {n_bad} corrupt, "
            f"{dropped} rows dropped, {clipped} clipped")


def load_labels(im_files: list[str], label_files: list[str], nc: int | None = None,
                prefix: str = "", use_cache: bool = True) -> list[verify.ImageRecord]:
    """Records for all images (cached when possible); warnings and the summary are logged each time.

    Raises DatasetError (naming the folder) when no usable image is left.
    """
    h = files_hash(im_files + label_files)
    records, candidates = None, (cache_path_for(label_files), user_cache_path_for(label_files))
    for cache_file in candidates if use_cache else ():
        records = load_cache(cache_file, h)
        if records is not None:
            LOGGER.info("%sUsing label cache %s", prefix, cache_file)
            break
    if records is None:
        records = scan_records(im_files, label_files, prefix)
        if use_cache and not save_cache(candidates[0], h, records, prefix):
            save_cache(candidates[1], h, records, prefix)
    records = [_recheck(r, nc, lb) for r, lb in zip(records, label_files)]
    for r in records:
        if r.message:
            LOGGER.warning("%sWARNING: %s", prefix, r.message)
    LOGGER.info(summarize(records, prefix))
    if not any(r.status != "corrupt" for r in records):
        raise DatasetError(f"{prefix}no usable images among {len(records)} in "
                           f"{Path(im_files[0]).parent} (see warnings above)")
    return records
