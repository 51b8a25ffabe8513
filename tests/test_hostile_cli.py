"""Hostile settings on the command line (issue 20): each case ends with one line naming the flag,
key or file, exit status 1 (2 for argparse), no traceback, and no run folder left behind."""
import logging
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

import detect
import train as train_cli
import val as val_cli
from models.yolo import Model
from tools import det_stats, show_assign
from utils.data import verify
from utils.io.checkpoint import make_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def run_cli(fn, argv, capsys, caplog):
    """Exit status and everything a CLI entry point printed or logged; never a traceback."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        try:
            code = fn(argv)
        except SystemExit as e:  # argparse
            code = e.code
    out = capsys.readouterr()
    text = out.out + out.err + caplog.text
    assert "Traceback" not in text
    return code, text


def train_main(argv):
    return train_cli.main(train_cli.parse_opt(argv))


def val_main(argv):
    return val_cli.main(val_cli.parse_opt(argv))


def train_args(data, project, *extra):
    return ["--data", str(data), "--epochs", "1", "--img", "64", "--batch-size", "4", "--workers", "0",
            "--project", str(project), "--quiet", "--noplots", *extra]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = Model(str(ROOT / "models/yolov5n.yaml"), nc=5)
    model.names = list("abcde")
    return save_checkpoint(make_checkpoint(model), tmp_path_factory.mktemp("w") / "w.pt")


@pytest.mark.parametrize("argv, flag", [(["--epochs", "0"], "--epochs"), (["--epochs", "-1"], "--epochs"),
                                        (["--batch-size", "0"], "--batch-size"), (["--img", "0"], "--imgsz"),
                                        (["--workers", "-2"], "--workers")])
def test_train_refuses_nonsense_numbers(argv, flag, tmp_path, capsys, caplog):
    code, text = run_cli(train_main, ["--project", str(tmp_path), *argv], capsys, caplog)
    assert code == 2 and f"argument {flag}" in text and f"got {argv[1]}" in text
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("line, message", [
    ("lr0: .nan", "hyp key 'lr0' must be a finite number, got nan"),
    ("nbs: 0", "hyp key 'nbs' must be in (0, inf), got 0"),
    ("anchor_t: 0", "hyp key 'anchor_t' must be in (0, inf), got 0"),
    ("momentum: -0.9", "hyp key 'momentum' must be in [0, 1), got -0.9"),
    ("lr0: 0.01\nlr0: 0.02", "hyp key 'lr0' is given twice (lines 1 and 2)"),
])
def test_train_refuses_bad_hyp_values_and_leaves_no_run_folder(line, message, tiny_data, tmp_path, capsys, caplog):
    hyp = tmp_path / "hyp.bad.yaml"
    hyp.write_text(line + "\n")
    code, text = run_cli(train_main, train_args(tiny_data, tmp_path / "runs", "--hyp", str(hyp)), capsys, caplog)
    assert code == 1 and f"error: {hyp}: {message}" in text
    assert not (tmp_path / "runs" / "exp").exists()  # the failed start removed its folder


def test_train_mistyped_hyp_folder_is_an_error(tiny_data, tmp_path, capsys, caplog):
    typo = tmp_path / "mytypo_dir" / "hyp.gfl.yaml"
    code, text = run_cli(train_main, train_args(tiny_data, tmp_path / "runs", "--hyp", str(typo)), capsys, caplog)
    assert code == 1 and f"--hyp: file '{typo}' not found" in text


def test_train_dataset_yaml_syntax_error(tmp_path, capsys, caplog):
    data = tmp_path / "broken.yaml"
    data.write_text("path: x\ntrain: [a, b\nval: c\nnames: [a]\n")
    code, text = run_cli(train_main, train_args(data, tmp_path / "runs"), capsys, caplog)
    assert code == 1 and f"error: {data}: not valid YAML at line 3" in text
    assert len([ln for ln in text.splitlines() if "error" in ln]) == 1


def test_train_with_every_image_corrupt(tmp_path, capsys, caplog):
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "images" / split / f"{i}.jpg").write_bytes(b"not a jpeg")
    data = tmp_path / "d.yaml"
    data.write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\nnames: [a]\n")
    code, text = run_cli(train_main, train_args(data, tmp_path / "runs"), capsys, caplog)
    assert code == 1 and f"error: train: no usable images among 2 in {tmp_path / 'images' / 'train'}" in text


def test_unwritable_project_is_named_by_train_val_detect(tiny_data, weights, tmp_path, capsys, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")  # a folder cannot be made under a file, even by root
    project = blocker / "runs"
    code, text = run_cli(train_main, train_args(tiny_data, project), capsys, caplog)
    assert code == 1 and f"--project: cannot create the run folder {project / 'exp'}" in text
    code, text = run_cli(val_main, ["--weights", str(weights), "--data", str(tiny_data), "--img", "64",
                                    "--workers", "0", "--project", str(project)], capsys, caplog)
    assert code == 1 and f"--project: cannot create the run folder {project / 'exp'}" in text
    code, text = run_cli(detect.cli, ["--weights", str(weights), "--source", str(tiny_data.parent / "images" / "val"),
                                      "--img", "64", "--project", str(project)], capsys, caplog)
    assert code == 1 and f"--project: cannot create the run folder {project / 'exp'}" in text


def test_exist_ok_refuses_a_folder_held_by_a_live_run(tiny_data, tmp_path, capsys, caplog):
    run_dir = tmp_path / "runs" / "exp"
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run_dir / ".lock").write_text(f"{holder.pid}\n")
        code, text = run_cli(train_main, train_args(tiny_data, tmp_path / "runs", "--exist-ok"), capsys, caplog)
        assert code == 1 and f"{run_dir} is in use by the running process {holder.pid}" in text
        assert run_dir.is_dir() and not (run_dir / "results.csv").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: its lock is stale and the next run takes the folder over
    code, text = run_cli(train_main, train_args(tiny_data, tmp_path / "runs", "--exist-ok"), capsys, caplog)
    assert code == 0 and (run_dir / "weights" / "best.pt").is_file() and not (run_dir / ".lock").exists()


def write_png_1bit(path: Path, w: int, h: int) -> None:
    """A valid all-black 1-bit PNG of w x h pixels, written row by row (a 30000^2 one is 109 KB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z, row = zlib.compressobj(9), b"\x00" * (1 + (w + 7) // 8)
    body = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    header = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_detect_refuses_a_30000px_png_from_its_header(weights, tmp_path):
    bomb = tmp_path / "bomb.png"
    write_png_1bit(bomb, 30000, 30000)
    assert bomb.stat().st_size < 200_000
    # the child reports its own peak RSS: detect.py's, not this test process's
    probe = ("import resource, runpy, sys; sys.argv = ['detect.py'] + sys.argv[1:]\n"
             "try:\n    runpy.run_path('detect.py', run_name='__main__')\n"
             "finally:\n    print('peak_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", probe, "--weights", str(weights), "--source", str(bomb),
                          "--project", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 1 and "Traceback" not in text, text[-2000:]
    assert "30000x30000 = 900000000 pixels exceeds the limit of 400000000" in text and "--max-pixels" in text
    assert f"error: --source {bomb}: nothing could be read" in text and "Results saved" not in text
    peak_gib = int(text.split("peak_kib ")[1].split()[0]) / 2 ** 20
    assert peak_gib < 1.5, peak_gib
    assert not (tmp_path / "runs" / "exp").exists()


def test_detect_unreadable_only_source_exits_1(weights, tmp_path, capsys, caplog):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 garbage")
    code, text = run_cli(detect.cli, ["--weights", str(weights), "--source", str(bad), "--img", "64",
                                      "--project", str(tmp_path / "runs")], capsys, caplog)
    assert code == 1 and f"error: --source {bad}: nothing could be read ({bad}: unreadable image" in text
    assert "Results saved" not in text and not (tmp_path / "runs" / "exp").exists()


def test_max_pixels_flag_reaches_every_reader(tiny_data, weights, tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.setattr(verify, "MAX_IMAGE_PIXELS", verify.MAX_IMAGE_PIXELS)  # restored after the test
    small = ["--max-pixels", "1000"]  # the tiny images are 64x64 = 4096 px
    val_dir = tiny_data.parent / "images" / "val"
    for fn, argv in ((val_main, ["--weights", str(weights), "--data", str(tiny_data), "--img", "64", "--workers", "0",
                                 "--project", str(tmp_path / "v")]),
                     (det_stats.cli, ["--weights", str(weights), "--data", str(tiny_data), "--img", "64",
                                      "--out", str(tmp_path / "d")]),
                     (show_assign.cli, ["--data", str(tiny_data), "--img", "64", "--losses", "yolov5",
                                        "--out", str(tmp_path / "s")])):
        code, text = run_cli(fn, argv + small, capsys, caplog)
        assert code == 1 and "no usable images" in text and "exceeds the limit of 1000" in text, fn
    code, text = run_cli(detect.cli, ["--weights", str(weights), "--source", str(val_dir), "--img", "64",
                                      "--project", str(tmp_path / "det"), *small], capsys, caplog)
    assert code == 1 and "exceeds the limit of 1000" in text
    code, text = run_cli(detect.cli, ["--weights", str(weights), "--source", str(val_dir), "--img", "64",
                                      "--project", str(tmp_path / "det"), "--max-pixels", "4096"], capsys, caplog)
    assert code == 0 and len(list((tmp_path / "det" / "exp").glob("*.png"))) == len(list(val_dir.iterdir()))
