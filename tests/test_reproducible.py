"""CPU training is reproducible: the same command gives the same results.csv and weights whatever --workers is
and whatever else loads the machine (docs/reproducibility.md says what it does depend on).

The tiny run (64 px, batch 4) is where this held before issue 36; the dense run (128 px, batch 16, about 25
objects per image, 2 threads) is where it did not: many objects share a cell there, so the losses' indexed
writes hit one element from several rows, and torch's threads raced on them until training ran under
``repeatable_kernels``.
"""
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import train as train_cli
from utils.data.shapes_dataset import CLASSES, make_shapes_dataset
from utils.engine import trainer

DENSE_OBJECTS = (20, 30)  # objects per generated image: BCCD's crowding of red cells, or more


@pytest.fixture(scope="module")
def dense_data(tmp_path_factory) -> Path:
    """32 train images (two batches of 16) and 4 val images of 128 px, 20-30 objects each."""
    root = tmp_path_factory.mktemp("dense")
    make_shapes_dataset(root, n_train=32, n_val=4, imgsz=128, seed=5, objects=DENSE_OBJECTS)
    (root / "dense.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {list(CLASSES)}\n")
    return root / "dense.yaml"


@pytest.fixture
def two_threads():
    """torch's intra-op threads at 2 for the test (a 1-core CI box would otherwise never race)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@contextmanager
def cpu_burning_neighbour():
    """A process spinning on a core for the duration: the run beside it gets other thread timings."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield burner
    finally:
        burner.kill()
        burner.wait()


def run(data: Path, project: Path, workers: int, *extra: str) -> tuple[str, dict[str, torch.Tensor]]:
    """results.csv and last.pt's weights of a CPU run of ``data`` (``extra``: more train.py arguments)."""
    trainer.train(train_cli.parse_opt(["--data", str(data), "--workers", str(workers), "--project", str(project),
                                       "--noplots", "--quiet", "--device", "cpu", *extra]))
    weights = torch.load(project / "exp/weights/last.pt", weights_only=True)["model"]
    return (project / "exp/results.csv").read_text(), weights


def assert_same_run(a: tuple[str, dict], b: tuple[str, dict], epochs: int) -> None:
    (csv_a, w_a), (csv_b, w_b) = a, b
    assert csv_a == csv_b and len(csv_a.splitlines()) == 1 + epochs  # header + one row per epoch, every digit equal
    assert w_a.keys() == w_b.keys()
    different = [k for k in w_a if not torch.equal(w_a[k], w_b[k])]
    assert not different, f"{len(different)} weight tensors differ, first {different[0]}"  # bit for bit


def test_same_results_with_other_workers_and_a_cpu_burning_neighbour(tiny_data, tmp_path):
    tiny = ("--epochs", "2", "--img", "64", "--batch-size", "4")
    quiet = run(tiny_data, tmp_path / "quiet", 0, *tiny)
    with cpu_burning_neighbour() as burner:
        loaded = run(tiny_data, tmp_path / "loaded", 2, *tiny)
        assert burner.poll() is None  # the neighbour burned a core the whole time
    assert_same_run(quiet, loaded, epochs=2)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_crowded_batches_repeat_bit_for_bit_on_two_threads(dense_data, tmp_path, two_threads, precision):
    """Two steps of 16 crowded 128 px images (the optimiser steps after each: warm-up), then validation with
    its losses: results.csv and weights equal to the bit between --workers 0 alone and --workers 2 beside a
    CPU-burning process, in fp32 and in bf16 autocast (emulated where the CPU lacks bf16: slower, same kernels
    for the indexed writes)."""
    dense = ("--epochs", "1", "--img", "128", "--batch-size", "16", "--precision", precision, "--noautoanchor")
    quiet = run(dense_data, tmp_path / "quiet", 0, *dense)
    with cpu_burning_neighbour():
        loaded = run(dense_data, tmp_path / "loaded", 2, *dense)
    assert_same_run(quiet, loaded, epochs=1)
