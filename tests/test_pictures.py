"""Pictures people look at: line width and label text follow the image size, label tags stay inside the
image (or the grid tile), and detect.py's per-image summary uses English plurals."""
import numpy as np
import pytest
import torch

from detect import plural, summarize
from utils.data.shapes_dataset import CLASSES
from utils.io.annotate import class_color, draw_detections, label_box, line_width_for
from utils.io.plots import plot_images


def test_label_box_placement():
    bounds = (0, 0, 100, 100)
    assert label_box((10, 30), (40, 12), bounds) == (10, 18, 50, 30)  # above the box
    assert label_box((80, 30), (40, 12), bounds) == (60, 18, 100, 30)  # shifted left at the right edge
    assert label_box((10, 5), (40, 12), bounds) == (10, 5, 50, 17)  # no room above: inside the box top
    assert label_box((10, 95), (40, 12), (0, 0, 100, 100)) == (10, 83, 50, 95)
    assert label_box((-5, 30), (40, 12), bounds) == (0, 18, 40, 30)  # box starting left of the image
    assert label_box((95, 99), (40, 12), (0, 0, 100, 105)) == (60, 87, 100, 99)
    assert label_box((10, 100), (40, 12), (0, 0, 100, 105))[3] == 100
    assert label_box((10, 100), (40, 12), (0, 90, 100, 110)) == (10, 98, 50, 110)  # clamped to the bottom
    assert label_box((10, 104), (40, 12), (0, 100, 100, 110))[:2] == (10, 100)  # taller than the bounds: top
    assert label_box((10, 30), (150, 12), bounds)[0] == 0  # wider than the image: starts at its left edge
    assert label_box((210, 130), (40, 12), (200, 100, 300, 200)) == (210, 118, 250, 130)  # a grid tile
    assert label_box((290, 105), (40, 12), (200, 100, 300, 200)) == (260, 105, 300, 117)


def test_line_width_follows_image_size():
    assert [line_width_for((s, s)) for s in (64, 256, 640, 1280, 2560)] == [1, 1, 2, 4, 8]
    assert line_width_for((480, 640)) == 2


def tag_extent(im: np.ndarray, color: tuple[int, int, int], above_row: int) -> tuple[int, int, int]:
    """(height, first column, last column) of the pixels of ``color`` above ``above_row`` (the label tag)."""
    ys, xs = np.nonzero((im[:above_row] == color).all(-1))
    return int(ys.max() - ys.min() + 1), int(xs.min()), int(xs.max())


@pytest.mark.parametrize("side", [256, 640, 1024, 2048])
def test_label_text_is_proportional_to_the_image(side):
    k = side / 256
    det = torch.tensor([[100 * k, 100 * k, 150 * k, 150 * k, 0.91, 0]])
    im = draw_detections(np.zeros((side, side, 3), np.uint8), det, CLASSES)
    lw = line_width_for((side, side))
    height, first, _ = tag_extent(im, class_color(0), int(100 * k) - lw)
    # ~2.5 % of the side (YOLOv5's look at 640 px), never below 9 px of text plus the tag's padding
    assert 0.022 * side <= height <= 0.034 * side or (side == 256 and 10 <= height <= 14), height
    assert first == int(100 * k)


def test_label_at_the_right_edge_is_whole():
    side = 256
    middle = draw_detections(np.zeros((side, side, 3), np.uint8), torch.tensor([[100, 100, 150, 150, 0.91, 4]]),
                             CLASSES)
    edge = draw_detections(np.zeros((side, side, 3), np.uint8), torch.tensor([[230, 100, 256, 150, 0.91, 4]]),
                           CLASSES)
    color = class_color(4)
    _, m0, m1 = tag_extent(middle, color, 99)
    h, e0, e1 = tag_extent(edge, color, 99)
    assert e1 == side - 1 and e1 - e0 == m1 - m0  # same width as in the middle: shifted, not cut off
    assert e1 - e0 > 26  # wider than the box: it really was shifted left


def test_plot_images_tags_stay_in_their_tile(tmp_path):
    imgs = torch.zeros(4, 3, 256, 256, dtype=torch.uint8)
    targets = torch.tensor([[0, 1, 0.98, 0.5, 0.04, 0.2],   # at tile 0's right edge, next to tile 1
                            [3, 1, 0.5, 0.02, 0.3, 0.04]])  # at tile 3's top edge, below tile 1
    grid = plot_images(imgs, targets, fname=tmp_path / "b.jpg", names=list(CLASSES))
    assert grid.shape == (512, 512, 3) and (tmp_path / "b.jpg").is_file()
    color = np.array(class_color(1))
    hit = (np.abs(grid.astype(int) - color).sum(-1) < 60)
    assert hit[:256, :256].any() and hit[256:, 256:].any()
    assert not hit[:256, 256:].any() and not hit[256:, :256].any()  # nothing spilled into tiles 1 and 2
    rows = np.nonzero(hit[:256, 240:256].any(1))[0]  # tile 0's tag: 9-14 px of text on a 256 px tile
    assert rows.max() - rows.min() + 1 <= 0.2 * 256 + 20


def test_plurals_and_summary():
    words = {"cross": "crosses", "circle": "circles", "box": "boxes", "bus": "buses", "couch": "couches",
             "butterfly": "butterflies", "toy": "toys", "Platelets": "Platelets", "skis": "skis", "RBC": "RBCs",
             "teddy bear": "teddy bears"}
    for one, many in words.items():
        assert plural(1, one) == f"1 {one}" and plural(3, one) == f"3 {many}"
    det = torch.tensor([[0, 0, 1, 1, 0.9, 4], [0, 0, 1, 1, 0.8, 0], [0, 0, 1, 1, 0.7, 0]])
    assert summarize(det, CLASSES) == "2 circles, 1 cross, "
    assert summarize(det[:0], CLASSES) == ""


def test_highest_confidence_label_is_drawn_on_top(tmp_path):
    def tag_pixels(im: np.ndarray, rows: slice) -> list[int]:
        """Pixels of class 0's and class 1's colour in the tag rows (the boxes share their tag corner)."""
        return [int((np.abs(im[rows].astype(int) - class_color(c)).sum(-1) < 30).sum()) for c in (0, 1)]

    for order in ([0, 1], [1, 0]):  # NMS order (0.9 first) or any other: the 0.9 tag ends on top
        det = torch.tensor([[100, 100, 150, 150, 0.9, 0], [100, 100, 150, 150, 0.3, 1]])[order]
        on_top, under = tag_pixels(draw_detections(np.zeros((256, 256, 3), np.uint8), det, CLASSES), slice(80, 99))
        assert on_top > 4 * under
        targets = torch.tensor([[0, 0, 0.5, 0.5, 0.2, 0.2, 0.9], [0, 1, 0.5, 0.5, 0.2, 0.2, 0.3]])[order]
        grid = plot_images(torch.zeros(1, 3, 256, 256, dtype=torch.uint8), targets, fname=tmp_path / "p.jpg",
                           names=list(CLASSES), conf_thres=0.0)
        on_top, under = tag_pixels(grid, slice(85, 101))
        assert on_top > 4 * under


def test_results_png_has_yolov5s_smoothed_curve(tmp_path):
    from utils.io.run_log import plot_results, smooth

    y = smooth([0.0] * 10 + [1.0] * 10)
    assert y[9] == pytest.approx(0.5 - 0.0665, abs=0.01) and y[10] == pytest.approx(0.5 + 0.0665, abs=0.01)
    assert np.all(np.diff(y) >= 0) and y[0] < 0.01 and y[-1] > 0.99
    (tmp_path / "results.csv").write_text("epoch,a,b\n" + "".join(f"{i},{i},{i * i}\n" for i in range(5)))
    assert plot_results(tmp_path / "results.csv").is_file()
