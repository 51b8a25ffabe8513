"""show_assign draws exactly what each strategy's own assign() returns."""
import numpy as np
import pytest
import torch

from utils.eval import assign_view as av
from utils.assign.yolo_candidates import yolo_candidates
from utils.compare.driver import hyp_for
from utils.loss import LOSSES


def fixed_input():
    torch.manual_seed(0)
    imgs = torch.rand(1, 3, 128, 160)
    targets = torch.tensor([[0, 1, 0.30, 0.40, 0.20, 0.25], [0, 0, 0.70, 0.60, 0.50, 0.55],
                            [0, 2, 0.10, 0.90, 0.05, 0.06]])
    return imgs, targets


def test_yolov5_panel_equals_the_candidate_rule():
    imgs, targets = fixed_input()
    s = av.strategy_for("yolov5", hyp_for("yolov5"), None, 3, "models/yolov5n.yaml", 160)
    matches = av.positives(s, imgs, targets)
    head = s.model.model[-1]
    expected = yolo_candidates(targets, head.anchors, [(16, 20), (8, 10), (4, 5)], 4.0)
    for got, want in zip(matches, expected):
        assert torch.equal(got.gi, want.gi) and torch.equal(got.gj, want.gj) and torch.equal(got.target, want.target)
    levels = av.cell_centres(matches, s.model.stride.tolist())
    for (xy, tgt, w), m, stride in zip(levels, matches, (8, 16, 32)):
        assert np.array_equal(xy, np.stack(((m.gi.numpy() + 0.5) * stride, (m.gj.numpy() + 0.5) * stride), 1))
        assert np.array_equal(tgt, m.target.numpy()) and w is None


ROW_FIELDS = ("image", "anchor", "gj", "gi", "target", "cls", "box_xywh_cell", "anchor_wh", "weight")


@pytest.mark.parametrize("name", list(LOSSES))
def test_drawn_positives_are_what_the_loss_trained_on(name):
    """show_assign draws the assignment of the loss call itself; that loss value is losses() of exactly
    those rows, and a fresh assign() on the same outputs gives the same rows."""
    imgs, targets = fixed_input()
    s = av.strategy_for(name, hyp_for(name), None, 3, "models/yolov5n.yaml", 160)
    drawn = av.positives(s, imgs, targets)
    assert drawn is s.loss.last_assignment and drawn.num_rows >= 3
    _, raw = s.model(imgs)
    with torch.no_grad():
        loss, items = s.loss(raw, targets, imgs)
        again = s.loss.last_assignment
        assert torch.equal(s.loss.losses(raw, drawn)[1], items)
        fresh = s.loss.assign(raw, targets, imgs)
    for a, b, c in zip(drawn, again, fresh):
        for f in ROW_FIELDS:
            x, y, z = getattr(a, f), getattr(b, f), getattr(c, f)
            assert (x is None and y is None and z is None) or (torch.equal(x, y) and torch.equal(x, z)), f
    # and the loss reads the assignment it is given: other rows (dw: other weights) give another loss;
    # freeanchor's terms read its bags (extras['bags']), from which the drawn rows are made
    if name == "dw":
        other = type(drawn)([m.select(torch.arange(len(m))) for m in drawn], drawn.num_targets, drawn.extras)
        for m in other:
            m.weight = torch.zeros_like(m.weight)
    else:
        other = type(drawn)([m.select(torch.zeros(len(m), dtype=torch.bool)) for m in drawn], 0, drawn.extras)
    if name != "freeanchor":
        with torch.no_grad():
            assert not torch.equal(s.loss.losses(raw, other)[1], items)


def test_positives_per_object_counts_distinct_cells_by_size():
    from utils.assign.result import LevelCandidates

    def rows(target, cells):
        n = len(cells)
        z = torch.zeros(n, dtype=torch.long)
        return LevelCandidates(z, torch.tensor([c[0] for c in cells]), torch.tensor([c[1] for c in cells]),
                               torch.tensor([c[2] for c in cells]), torch.full((n,), target), z,
                               torch.zeros(n, 4), torch.zeros(n, 2))

    # target 0 small (10x10 px of 100x100), target 1 large (100x100); a duplicated row counts once
    targets = torch.tensor([[0, 0, 0.5, 0.5, 0.1, 0.1], [0, 0, 0.5, 0.5, 1.0, 1.0]])
    m = rows(0, [(0, 1, 1), (0, 1, 1), (1, 1, 1)])
    m2 = rows(1, [(0, 2, 2)])
    cat = LevelCandidates(*(torch.cat((getattr(m, f), getattr(m2, f))) for f in ("image", "anchor", "gj", "gi",
                                                                                 "target", "cls", "box_xywh_cell", "anchor_wh")))
    out = av.positives_per_object([cat], targets, (100, 100))
    assert out == {"small": [2], "medium": [], "large": [1]}


def test_cli_names_a_missing_checkpoint(tmp_path, caplog):
    from tools import show_assign

    missing = tmp_path / "gone.pt"
    assert show_assign.cli(["--weights", str(missing), "--out", str(tmp_path / "out")]) == 1
    assert "gone.pt" in caplog.text and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", list(LOSSES))
def test_rows_say_what_they_are(name):
    """Panels and --stats label rows that are not positives (dw's weighted candidates, freeanchor's bag
    members), and the assignment carries the same kind as its strategy declares."""
    imgs, targets = fixed_input()
    s = av.strategy_for(name, hyp_for(name), None, 3, "models/yolov5n.yaml", 160)
    assert av.positives(s, imgs, targets).row_kind == LOSSES[name].row_kind
    want = {"dw": "weighted candidates", "freeanchor": "bag members"}.get(name, "positives")
    assert s.rows == want and (s.label == s.title) == (want == "positives")
