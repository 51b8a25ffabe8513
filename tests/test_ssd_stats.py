"""utils/eval/ssd_stats.py on a hand-built 64 px image: exact positives, forced matches, IoU targets and
the hard negatives mined next to an object."""
import pytest
import torch

from models.yolo import Model
from utils.eval.ssd_stats import ssd_batch_stats, stats_table
from utils.loss import build_loss


def test_ssd_stats_hand_built_case():
    model = Model("models/yolov5n.yaml", nc=3)
    loss = build_loss(model, {"loss": "ssd", "ssd_neg_pos_ratio": 3.0})  # iou 0.5, at least 16 negatives per image
    # object a: 12x16 px centred on P3 cell (3, 3) -> its 10x13 anchor box has IoU 130/192 = 0.677 (the one
    # positive) and the 16x30 anchor box there IoU 192/480 = 0.40 (near, not positive).
    # object c: 4x4 px at (10, 10) -> best anchor box IoU 16/130 = 0.12: matched only by the forced rule.
    targets = torch.tensor([[0, 0, 28 / 64, 28 / 64, 12 / 64, 16 / 64], [0, 2, 10 / 64, 10 / 64, 4 / 64, 4 / 64]])
    imgs = torch.zeros(1, 3, 64, 64)
    raw = [torch.zeros(1, 3, n, n, 8) for n in (8, 4, 2)]  # zero box logits decode to the anchor box itself
    for p in raw:
        p[..., 4] = -10.0
    raw[0][0, 1, 3, 3, 4] = 5.0  # the near 16x30 anchor scores high: the hardest negative
    s = ssd_batch_stats(loss, raw, targets, imgs, ["a", "b", "c"])
    assert (s["a"]["objects"], s["a"]["positives"], s["a"]["forced_only"]) == (1, 1, 0)
    assert s["a"]["target_sum"] == pytest.approx(130 / 192, abs=1e-3)  # CIoU of the 10x13 box in the 12x16 one
    assert (s["c"]["objects"], s["c"]["positives"], s["c"]["forced_only"]) == (1, 1, 1)
    # 16 negatives (2 positives x 3 < 16): the high one, then 15 ties in prior order far from both objects
    assert (s["all"]["hard_negatives"], s["all"]["positives"]) == (16, 2)
    assert (s["a"]["near_hard_negatives"], s["c"]["near_hard_negatives"]) == (1, 0)
    # objectness: positives at sigmoid(-10); mined = the 5.0 one + 15 at -10; the other 234 anchors at -10
    lo, hi = torch.sigmoid(torch.tensor(-10.0)).item(), torch.sigmoid(torch.tensor(5.0)).item()
    assert s["a"]["obj_sum"] == pytest.approx(lo) and s["c"]["obj_sum"] == pytest.approx(lo)
    assert s["all"]["mined_obj_sum"] == pytest.approx(hi + 15 * lo)
    assert (s["all"]["others"], s["all"]["others_obj_sum"]) == (3 * (64 + 16 + 4) - 18, pytest.approx(234 * lo))
    table = stats_table(s, ["a", "b", "c"], ratio=3.0, obj_iou=True)
    assert "| a | 1 | 1.00 | 0% | 0.677 | 0.000 | 1.00 |" in table and "| c | 1 | 1.00 | 100% |" in table
    assert "of them near an object: 1 (6%)" in table
    mean_target = (s["a"]["target_sum"] + s["c"]["target_sum"]) / 2
    assert (f"mined negatives {(hi + 15 * lo) / 16:.3f}, other anchors 0.000; one value for positives and mined "
            f"negatives alike would be target / (1 + ratio) = {mean_target:.3f} / 4 = {mean_target / 4:.3f}") in table
    assert "= 1.000 / 31 = 0.032" in stats_table(s, ["a", "b", "c"], ratio=30, obj_iou=False)


def test_ssd_stats_refuses_a_hyp_file_of_another_loss(tmp_path, caplog):
    from tools.ssd_stats import cli

    hyp = tmp_path / "h.yaml"
    hyp.write_text("loss: yolov5\n")
    assert cli(["--hyp", str(hyp)]) == 1
    assert f"{hyp} trains loss 'yolov5', expected 'ssd'" in caplog.text
