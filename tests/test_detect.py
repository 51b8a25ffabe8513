"""detect.py end to end on a tiny untrained model, plus the pieces it is built from (sources, run folders)."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from utils.io.paths import increment_path
from utils.io.sources import LoadImages
from utils.core.torch_utils import select_device


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(src / "a.jpg"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(src / "b.png"), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    (src / "list.txt").write_text("a.jpg\nb.png\n")  # relative to the list's folder
    return src


def test_load_images_sources(image_dir: Path):
    for source in (image_dir, str(image_dir / "*.*"), image_dir / "list.txt", [image_dir / "b.png", image_dir / "a.jpg"]):
        items = list(LoadImages(source, img_size=64, stride=32))
        assert sorted(Path(p).name for p, *_ in items) == ["a.jpg", "b.png"]
    path, im, im0, cap, s = next(iter(LoadImages(image_dir / "a.jpg", img_size=64, stride=32)))
    assert im.shape == (3, 64, 64) and im.dtype == np.uint8 and im.flags.c_contiguous  # auto: 48 -> 64 already
    assert im0.shape == (48, 64, 3) and cap is None and s.startswith("image 1/1 ")
    assert (im[:, 8:56, :] == im0[:, :, ::-1].transpose(2, 0, 1)).all()  # RGB, no resize, 8 px pad top/bottom


def test_load_images_video(tmp_path: Path):
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write mp4v")
    for i in range(3):
        writer.write(np.full((48, 64, 3), 60 * i, np.uint8))
    writer.release()
    items = list(LoadImages(tmp_path / "clip.mp4", img_size=64, stride=32))
    assert len(items) == 3 and all(cap is not None for _, _, _, cap, _ in items)
    assert items[-1][4].startswith("video 1/1 (3/3) ") and items[0][1].shape == (3, 64, 64)


def test_load_images_errors(image_dir: Path, caplog):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        LoadImages(image_dir / "missing.jpg")
    with pytest.raises(FileNotFoundError, match="matches no files"):
        LoadImages(image_dir / "z*.jpg")
    assert len(LoadImages(image_dir / "[ab].*")) == 2
    (image_dir / "broken.jpg").write_bytes(b"not an image")
    items = list(LoadImages(image_dir, img_size=64))
    assert len(items) == 2 and "broken.jpg" in caplog.text


def test_truncated_jpeg_is_named_in_a_warning(tmp_path: Path, caplog):
    ok, buf = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "cut.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    items = list(LoadImages(tmp_path / "cut.jpg", img_size=64))
    assert len(items) == 1  # OpenCV decodes the part that is there; detect goes on with it
    assert f"{tmp_path / 'cut.jpg'} is a truncated JPEG" in caplog.text


def test_increment_path_and_device(tmp_path: Path):
    assert increment_path(tmp_path / "exp", mkdir=True) == tmp_path / "exp"
    assert increment_path(tmp_path / "exp", mkdir=True) == tmp_path / "exp2"
    assert increment_path(tmp_path / "exp") == tmp_path / "exp3"
    assert increment_path(tmp_path / "exp", exist_ok=True) == tmp_path / "exp"
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="invalid --device"):
        select_device("gpu")


def test_detect_end_to_end(tmp_path: Path, image_dir: Path):
    yolo = pytest.importorskip("models.yolo", reason="models.yolo not written yet")
    checkpoint = pytest.importorskip("utils.io.checkpoint", reason="utils.io.checkpoint not written yet")
    import detect

    torch.manual_seed(0)
    model = yolo.Model("models/yolov5n.yaml", nc=2)
    model.names = ["cat", "dog"]
    weights = checkpoint.save_checkpoint(checkpoint.make_checkpoint(model), tmp_path / "w.pt")

    save_dir = detect.run(weights=weights, source=image_dir / "list.txt", imgsz=[64], conf_thres=0.0, max_det=5,
                          device="cpu", save_txt=True, save_conf=True, save_crop=True, project=tmp_path / "runs")
    assert save_dir == tmp_path / "runs" / "exp"
    assert (save_dir / "a.jpg").is_file() and (save_dir / "b.png").is_file()
    for stem, (h, w) in (("a", (48, 64)), ("b", (40, 40))):
        rows = np.loadtxt(save_dir / "labels" / f"{stem}.txt", ndmin=2)
        assert rows.shape[1] == 6 and 0 < len(rows) <= 5  # cls x y w h conf
        assert set(rows[:, 0]) <= {0, 1} and ((rows[:, 1:5] >= 0) & (rows[:, 1:5] <= 1)).all()
        assert (rows[:, 3:5] > 0).all()  # never a zero-size box
    assert any((save_dir / "crops").rglob("a*.jpg"))
    opt = detect.parse_opt(["--weights", str(weights), "--source", str(image_dir), "--img", "64", "--nosave",
                            "--device", "cpu", "--project", str(tmp_path / "runs")])
    assert opt.imgsz == [64, 64]
    assert detect.main(opt) == tmp_path / "runs" / "exp2"


def test_boxes_wholly_in_the_padding_are_dropped():
    import detect

    det = torch.tensor([[0.0, 0.0, 0.0, 40.0, 0.2, 0.0],    # clipped to the left border: '0 0 0.5 0 1' before
                        [2.0, 5.0, 6.0, 9.0, 0.5, 1.0],
                        [3.0, 30.0, 9.0, 30.0, 0.5, 0.0]])  # zero height
    assert detect.visible_boxes(det).tolist() == [[2.0, 5.0, 6.0, 9.0, 0.5, 1.0]]


def test_detect_defaults_and_labels_only_for_detections(tmp_path: Path, monkeypatch, capsys):
    import detect
    from models.yolo import Model
    from utils.io.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = Model("models/yolov5n.yaml", nc=2)
    monkeypatch.setattr(detect, "ROOT", tmp_path)  # samples are generated under tmp_path/datasets/samples
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="no --weights given and no runs/train/\\*/weights/best.pt"):
        detect.run()
    old = save_checkpoint(make_checkpoint(model), tmp_path / "runs/train/exp/weights/best.pt")
    new = save_checkpoint(make_checkpoint(model), tmp_path / "runs/train/exp2/weights/best.pt")
    import os
    os.utime(old, (1, 1))  # exp is older than exp2
    save_dir = detect.run(imgsz=[64], conf_thres=0.0, max_det=3, save_txt=True, nosave=True)
    out = capsys.readouterr().out
    assert f"weights {Path('runs/train/exp2/weights/best.pt')}, the newest run's best.pt" in out
    samples = tmp_path / "datasets/samples/images/val"
    assert sorted(p.name for p in samples.iterdir()) == [f"00000{i}.png" for i in range(4)]
    assert len(list((save_dir / "labels").glob("*.txt"))) == 4 and "4 labels saved" in out
    save_dir = detect.run(weights=new, imgsz=[64], conf_thres=1.0, save_txt=True, nosave=True)
    assert not list((save_dir / "labels").glob("*.txt")) and "0 labels saved" in capsys.readouterr().out
