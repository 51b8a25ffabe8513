"""Hostile input, second round (issue 27), runs and processes: undecodable images at load time,
--resume of a copied or stale checkpoint, a full disk under results.csv, converter name clashes, a failed
--exist-ok start, SIGTERM to compare.py, and runs that learn nothing while looking fine."""
import json
import logging
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import train as train_cli
from tests.conftest import write_tiny_dataset
from utils.engine import trainer
from utils.io import paths as paths_io
from utils.io.run_log import read_results

ROOT = Path(__file__).resolve().parents[1]


def opts(data, project, *extra, epochs=1, workers=0):
    return train_cli.parse_opt(["--data", str(data), "--epochs", str(epochs), "--img", "64", "--batch-size", "4",
                                "--workers", str(workers), "--project", str(project), "--quiet", "--noplots", *extra])


def interrupt_in_epoch(monkeypatch, epoch):
    """Make training raise KeyboardInterrupt at the start of ``epoch`` (as a kill would)."""
    real = trainer.train_epoch

    def interrupted(run, e):
        if e == epoch:
            raise KeyboardInterrupt
        return real(run, e)

    monkeypatch.setattr(trainer, "train_epoch", interrupted)


def corrupt_png_pixels(path: Path) -> None:
    """Flip bytes of the first IDAT chunk and fix its CRC: the file passes a CRC / header scan, then
    fails to decode ("libpng error: IDAT: invalid ...")."""
    data = bytearray(path.read_bytes())
    pos = 8
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        if data[pos + 4:pos + 8] == b"IDAT":
            for i in range(pos + 10, pos + 8 + min(n, 40)):
                data[i] ^= 0xFF
            data[pos + 8 + n:pos + 12 + n] = struct.pack(">I", zlib.crc32(bytes(data[pos + 4:pos + 8 + n])))
            break
        pos += 12 + n
    path.write_bytes(bytes(data))
    assert cv2.imread(str(path)) is None


def folder_state(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- 1. an image that fails to decode at load time -------------------------------------------------

def test_undecodable_png_is_skipped_once_per_file_and_counted(tmp_path, caplog):
    data = write_tiny_dataset(tmp_path / "ds")
    bad_train, bad_val = tmp_path / "ds/images/train/000001.png", tmp_path / "ds/images/val/000002.png"
    corrupt_png_pixels(bad_train)
    corrupt_png_pixels(bad_val)
    with caplog.at_level(logging.INFO):
        code = train_cli.main(opts(data, tmp_path / "runs", epochs=2))
    assert code == 0, caplog.text
    assert "Traceback" not in caplog.text and "Image Not Found" not in caplog.text
    for prefix, bad in (("train: ", bad_train), ("val: ", bad_val)):
        lines = [ln for ln in caplog.text.splitlines() if str(bad) in ln]
        assert len(lines) == 1, lines  # one warning over both epochs and the final validation
        assert f"{prefix}WARNING: skipping {bad}: the image cannot be decoded (1 skipped in this split)" in lines[0]
    assert (tmp_path / "runs/exp/weights/last.pt").is_file() and (tmp_path / "runs/exp/summary.json").is_file()


def test_undecodable_image_in_a_loader_worker_is_skipped(tmp_path):
    from utils.data.loader import create_dataloader

    write_tiny_dataset(tmp_path / "ds")
    corrupt_png_pixels(tmp_path / "ds/images/val/000002.png")
    loader, dataset = create_dataloader(str(tmp_path / "ds/images/val"), 64, 2, 32, rect=True, workers=2,
                                        prefix="val: ")
    for _ in range(2):  # the second pass does not try the file again
        seen = [p for _, _, paths, _ in loader for p in paths]
        assert len(seen) == 3 and not any(p.endswith("000002.png") for p in seen)
    assert dataset.unreadable == 1
    from utils.eval.validator import coco_ground_truth

    gt = coco_ground_truth(dataset, ["a", "b", "c", "d", "e"])  # val.py --save-json: the skipped image is no miss
    assert len(gt["images"]) == 3 and "000002.png" not in {im["file_name"] for im in gt["images"]}


def test_last_pt_is_written_before_validation_can_fail(tiny_data, tmp_path, monkeypatch, caplog):
    def broken_validation(*args, **kwargs):
        raise FileNotFoundError("validation broke")

    monkeypatch.setattr(trainer.validator, "run", broken_validation)
    with caplog.at_level(logging.INFO):
        code = train_cli.main(opts(tiny_data, tmp_path))
    assert code == 1 and "error: validation broke" in caplog.text
    last = tmp_path / "exp/weights/last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the epoch's training is kept


# ---- 2. --resume of a last.pt outside its run folder ---------------------------------------------

@pytest.fixture(scope="module")
def interrupted_run(tiny_data, tmp_path_factory):
    """A run folder (project/exp) whose last.pt holds epoch 0 of 3: resumable."""
    project = tmp_path_factory.mktemp("interrupted")
    mp = pytest.MonkeyPatch()
    try:
        interrupt_in_epoch(mp, 1)
        with pytest.raises(KeyboardInterrupt):
            trainer.train(opts(tiny_data, project, epochs=3))
    finally:
        mp.undo()
    return project / "exp"


def test_resume_of_a_copied_last_pt_never_writes_two_levels_up(interrupted_run, tiny_data, tmp_path, caplog):
    backup = tmp_path / "work" / "backup"
    backup.mkdir(parents=True)
    (backup / "last.pt").write_bytes((interrupted_run / "weights/last.pt").read_bytes())
    bystander = tmp_path / "work" / "results.csv"
    bystander.write_text("someone else's results\n")
    before = folder_state(tmp_path / "work")
    with caplog.at_level(logging.INFO):
        code = train_cli.main(train_cli.parse_opt(["--resume", str(backup / "last.pt"), "--quiet"]))
    assert code == 1
    assert (f"error: --resume: {backup / 'last.pt'} is not inside a run folder (<run>/weights/last.pt next to "
            "<run>/opt.yaml); resume it into a new folder with --project/--name") in caplog.text
    assert folder_state(tmp_path / "work") == before


def test_resume_of_a_copied_last_pt_into_a_new_folder(interrupted_run, tmp_path, caplog):
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "last.pt").write_bytes((interrupted_run / "weights/last.pt").read_bytes())
    with caplog.at_level(logging.INFO):
        code = train_cli.main(train_cli.parse_opt(["--resume", str(backup / "last.pt"), "--project",
                                                   str(tmp_path / "new"), "--name", "again", "--quiet"]))
    assert code == 0, caplog.text
    run = tmp_path / "new" / "again"
    assert torch.load(run / "weights/last.pt", weights_only=True)["epoch"] == 2
    assert [ln.split(",")[0].strip() for ln in (run / "results.csv").read_text().splitlines()[1:]] == ["1", "2"]
    assert json.loads((run / "summary.json").read_text())["weights"] == str(run / "weights/best.pt")
    assert sorted(p.name for p in backup.iterdir()) == ["last.pt"]


# ---- 3. a full disk under results.csv ------------------------------------------------------------

def test_disk_full_while_logging_results_stops_with_one_line_and_keeps_the_rows(tiny_data, tmp_path, monkeypatch,
                                                                                caplog):
    real_replace = os.replace

    def full_at_epoch_1(src, dst):
        if str(dst).endswith("results.csv") and len(Path(src).read_text().splitlines()) > 2:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(paths_io.os, "replace", full_at_epoch_1)
    with caplog.at_level(logging.INFO):
        code = train_cli.main(opts(tiny_data, tmp_path, epochs=3))
    run = tmp_path / "exp"
    assert code == 1
    errors = [m for m in caplog.messages if m.startswith("error:")]
    assert errors == [f"error: cannot write {run / 'results.csv'} (No space left on device); "
                      f"{run / 'weights/last.pt'} holds epoch 1: free some space and continue with "
                      f"python train.py --resume {run / 'weights/last.pt'}"]
    lines = (run / "results.csv").read_text().splitlines()
    assert lines[0].split(",")[0].strip() == "epoch" and [ln.split(",")[0].strip() for ln in lines[1:]] == ["0"]
    assert torch.load(run / "weights/last.pt", weights_only=True)["epoch"] == 1
    assert not list(run.glob(".*tmp*")) and not (run / ".lock").exists()


def test_results_csv_always_has_its_header(tiny_data, tmp_path):
    run = tmp_path / "exp"
    run.mkdir()
    (run / "results.csv").write_text("")  # left 0 bytes by a full disk
    assert train_cli.main(opts(tiny_data, tmp_path, "--exist-ok")) == 0
    lines = (run / "results.csv").read_text().splitlines()
    assert lines[0].split(",")[0].strip() == "epoch" and len(lines) == 2
    # a later --exist-ok run of another strategy into the folder writes its own header, not the old one's
    hyp = tmp_path / "hyp.fa.yaml"
    hyp.write_text("loss: freeanchor\n")
    assert train_cli.main(opts(tiny_data, tmp_path, "--exist-ok", "--hyp", str(hyp))) == 0
    header = [c.strip() for c in (run / "results.csv").read_text().splitlines()[0].split(",")]
    assert "train/pos_loss" in header and "train/obj_loss" not in header, header
    keys, rows = read_results(run / "results.csv")
    assert len(rows) == 1 and len(keys) == len(rows[0])


# ---- 4. converters: two images that share a base name --------------------------------------------

def test_coco_images_sharing_a_base_name_get_unique_names(tmp_path, caplog):
    from data.converters.coco2yolo import convert_coco

    images = tmp_path / "images"
    for sub, value in (("a", 50), ("b", 200)):
        (images / sub).mkdir(parents=True)
        cv2.imwrite(str(images / sub / "001.png"), np.full((40, 40, 3), value, np.uint8))
    coco = {"images": [{"id": 1, "file_name": "a/001.png", "width": 40, "height": 40},
                       {"id": 2, "file_name": "b/001.png", "width": 40, "height": 40}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
                            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [20, 20, 10, 10]}],
            "categories": [{"id": 1, "name": "x"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    with caplog.at_level(logging.WARNING):
        stats, _ = convert_coco(tmp_path / "c.json", images, tmp_path / "out", split="train")
    out = tmp_path / "out"
    assert stats.images == 2 and stats.images_renamed == 1
    assert sorted(p.name for p in (out / "images/train").iterdir()) == ["001.png", "001_2.png"]
    assert cv2.imread(str(out / "images/train/001_2.png"))[0, 0, 0] == 200
    assert (out / "labels/train/001.txt").read_text().startswith("0 0.125000")
    assert (out / "labels/train/001_2.txt").read_text().startswith("0 0.625000")
    assert f"{images / 'b/001.png'} shares the base name 001 with {images / 'a/001.png'}; written as 001_2.png" \
        in caplog.text


def test_voc_images_sharing_a_stem_get_unique_label_files(tmp_path, caplog):
    from data.converters.voc2yolo import convert_voc

    src = tmp_path / "src"
    src.mkdir()
    cv2.imwrite(str(src / "x.png"), np.zeros((40, 40, 3), np.uint8))
    cv2.imwrite(str(src / "x.jpg"), np.zeros((40, 40, 3), np.uint8))
    xml = ("<annotation><filename>x.png</filename><size><width>40</width><height>40</height></size><object>"
           "<name>c</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>11</xmax><ymax>11</ymax></bndbox></object>"
           "</annotation>")
    (src / "x.xml").write_text(xml)
    with caplog.at_level(logging.WARNING):
        stats = convert_voc(src, tmp_path / "out", val_fraction=0.0)
    labels = sorted(p.name for p in (tmp_path / "out/labels/train").iterdir())
    images = sorted(p.name for p in (tmp_path / "out/images/train").iterdir())
    assert stats.images == 2 and len(labels) == 2 and len(images) == 2
    assert {Path(i).stem for i in images} == {Path(lb).stem for lb in labels}  # each image its own label file
    assert stats.images_renamed == 1 and "shares the base name x with" in caplog.text


# ---- 5. a failed --exist-ok start changes nothing in the folder ----------------------------------

def test_failed_exist_ok_start_leaves_the_finished_run_untouched(tiny_data, tmp_path, caplog):
    assert train_cli.main(opts(tiny_data, tmp_path)) == 0
    run = tmp_path / "exp"
    before = folder_state(run)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.INFO):
        code = train_cli.main(opts(tiny_data, tmp_path, "--exist-ok", "--weights", str(bad), "--epochs", "5",
                                   "--seed", "7"))
    assert code == 1 and "error:" in caplog.text
    assert folder_state(run) == before


# ---- 6. SIGTERM to compare.py ends its train.py children ---------------------------------------

def test_sigterm_to_compare_ends_its_training_children_and_a_rerun_resumes(tiny_data, tmp_path):
    cmd = [sys.executable, str(ROOT / "compare.py"), "--data", str(tiny_data), "--img", "64", "--epochs", "2",
           "--batch-size", "4", "--workers", "0", "--losses", "yolov5", "--seeds", "0", "--noplots",
           "--project", str(tmp_path)]
    lock = tmp_path / "exp/runs/yolov5-s0/.lock"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while not lock.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert lock.exists(), proc.communicate()[0] if proc.poll() is not None else "no lock"
        child = int(lock.read_text())
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert not paths_io.pid_alive(child), "train.py child left running"
    assert "Traceback" not in out
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert (tmp_path / "exp/runs/yolov5-s0/summary.json").is_file()


# ---- 17. bare --resume picks the newest run with a last.pt, and says which -----------------------

def test_bare_resume_names_the_run_and_the_newer_one_without_last_pt(interrupted_run, tiny_data, tmp_path,
                                                                   monkeypatch, caplog):
    project = interrupted_run.parent
    interrupt_in_epoch(monkeypatch, 0)  # a newer run killed in epoch 0: no last.pt
    with pytest.raises(KeyboardInterrupt):
        trainer.train(opts(tiny_data, project, epochs=3))
    newer = project / "exp2"
    assert newer.is_dir() and not (newer / "weights/last.pt").exists()
    from utils.engine import distributed, resume

    with caplog.at_level(logging.INFO):
        options, ckpt = resume.resume_options(train_cli.parse_opt(["--resume", "--project", str(project)]),
                                              distributed.DistInfo())
    assert options["save_dir"] == str(interrupted_run) and ckpt["epoch"] == 0
    assert (f"--resume: resuming {interrupted_run} (epoch 0 done), the newest run with a last.pt; "
            f"newer runs without one (stopped before their first epoch ended): {newer}") in caplog.text


# ---- 13. runs that learn nothing while looking fine ----------------------------------------------

def test_no_positive_in_an_epoch_warns_once(tiny_data, tmp_path, caplog):
    hyp = tmp_path / "hyp.tiny_t.yaml"
    hyp.write_text("anchor_t: 1.0e-9\n")
    with caplog.at_level(logging.INFO):
        assert train_cli.main(opts(tiny_data, tmp_path, "--hyp", str(hyp), "--noautoanchor", epochs=2)) == 0
    lines = [m for m in caplog.messages if "no positive" in m]
    assert lines == ["WARNING: epoch 0: the 'yolov5' assignment made no positive for any of the "
                     f"{lines[0].split(' of the ')[1].split()[0]} targets: the run learns only background "
                     "(check hyp anchor_t and the anchors, or the labels); said once per run"]


def test_augmentations_that_drop_every_object_warn_once(tiny_data, tmp_path, caplog):
    hyp = tmp_path / "hyp.persp.yaml"
    hyp.write_text("perspective: 1.0e+6\n")
    with caplog.at_level(logging.INFO):
        assert train_cli.main(opts(tiny_data, tmp_path, "--hyp", str(hyp), epochs=2)) == 0
    lines = [m for m in caplog.messages if "augmentations left" in m]
    assert len(lines) == 1 and lines[0].startswith("WARNING: epoch 0: the augmentations left not one of the ")


def test_all_background_train_split_warns(tmp_path, caplog):
    data = write_tiny_dataset(tmp_path / "ds")
    for f in (tmp_path / "ds/labels/train").glob("*.txt"):
        f.write_text("")
    with caplog.at_level(logging.INFO):
        assert train_cli.main(opts(data, tmp_path / "runs")) == 0
    assert "WARNING: train: not one labelled object in the 8 training images: the run learns only background" \
        in caplog.text


def test_fewer_than_one_optimizer_step_per_epoch_warns(tiny_data, tmp_path, caplog):
    hyp = tmp_path / "hyp.nbs.yaml"
    hyp.write_text("nbs: 1.0e+9\n")
    with caplog.at_level(logging.INFO):
        assert train_cli.main(opts(tiny_data, tmp_path, "--hyp", str(hyp))) == 0
    assert ("WARNING: hyp nbs 1e+09 / --batch-size 4: one optimizer step per 250000000 batches after warm-up, "
            "but an epoch has 2 batches: fewer than one step per epoch; lower nbs") in caplog.text
