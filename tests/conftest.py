"""Shared test fixtures: a tiny built-in (shapes) dataset, 64 px, for end-to-end runs."""
from pathlib import Path

import pytest

from utils.data.shapes_dataset import CLASSES, make_shapes_dataset


def write_tiny_dataset(root: Path, n_train: int = 8, n_val: int = 4, seed: int = 3) -> Path:
    """Generate a tiny shapes dataset under ``root`` and return its dataset YAML."""
    make_shapes_dataset(root, n_train=n_train, n_val=n_val, imgsz=64, seed=seed)
    yaml_file = root / "tiny.yaml"
    yaml_file.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {list(CLASSES)}\n")
    return yaml_file


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """8 train / 4 val images of 64 px, 5 classes; shared read-only by the tests of a session."""
    return write_tiny_dataset(tmp_path_factory.mktemp("shapes"))
