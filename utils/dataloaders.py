"""Public data API (YOLOv5 names). The implementation lives in ``utils/data/``:

- ``config.py``       ``check_dataset(yaml) -> dict`` (paths, names, nc; generate/convert hooks)
- ``verify.py``       image/label checks, ``img2label_paths``, ``list_images``
- ``label_cache.py``  scanning with a JSON cache next to the labels folder
- ``dataset.py``      ``LoadImagesAndLabels`` (mosaic, affine, HSV, flips, mixup, rect batches)
- ``loader.py``       ``create_dataloader`` (seeded, persistent workers, DistributedSampler)
"""
from utils.data.config import DatasetError, check_dataset
from utils.data.dataset import LoadImagesAndLabels
from utils.data.loader import create_dataloader, seed_worker
from utils.data.verify import IMG_FORMATS, img2label_paths, list_images

__all__ = ["DatasetError", "IMG_FORMATS", "LoadImagesAndLabels", "check_dataset", "create_dataloader",
           "img2label_paths", "list_images", "seed_worker"]
