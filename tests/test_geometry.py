"""models/geometry.py: the priors and box coders the heads and every loss strategy share."""
import torch

from models.geometry import DFLBoxCoder, PriorGenerator, YOLOBoxCoder, cell_frame
from models.yolo import Model


def test_anchor_boxes_worked_example():
    """The module docstring's example: stride 8, 2x2 grid, one anchor of 2x1 cells."""
    pri = PriorGenerator(torch.tensor([8.0]), torch.tensor([[[2.0, 1.0]]])).anchor_boxes([(2, 2)])
    assert pri.xywh_px.tolist() == [[4, 4, 16, 8], [12, 4, 16, 8], [4, 12, 16, 8], [12, 12, 16, 8]]
    assert pri.xyxy_px[3].tolist() == [4, 8, 20, 16]
    assert pri.gi.tolist() == [0, 1, 0, 1] and pri.gj.tolist() == [0, 0, 1, 1]
    assert pri.cell_xy.tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]


def test_levels_number_priors_level_by_level():
    gen = PriorGenerator(torch.tensor([8.0, 16.0]), torch.ones(2, 3, 2))
    lv = gen.levels([(4, 6), (2, 3)])
    assert [(x.start, x.ny, x.nx, x.stride, x.na) for x in lv] == [(0, 4, 6, 8.0, 3), (72, 2, 3, 16.0, 3)]
    cx, cy = lv[1].centres_px("cpu")
    assert cx.tolist() == [8, 24, 40] and cy.tolist() == [8, 24]
    assert PriorGenerator(torch.tensor([8.0])).na == 1  # anchor-free: one point per cell


def test_yolo_decode_by_hand_and_in_the_head():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [20.0, -20.0, 20.0, -20.0]])
    anchor = torch.tensor([[2.0, 3.0]])
    # sigmoid 0.5 -> xy 0.5 (the cell centre), wh = anchor; saturated -> xy 1.5 / -0.5, wh 4x / 0x
    assert torch.allclose(YOLOBoxCoder.decode(logits, anchor), torch.tensor([[0.5, 0.5, 2, 3], [1.5, -0.5, 8, 0]]),
                          atol=1e-6)
    px = YOLOBoxCoder.decode(logits[:1], anchor * 8, torch.tensor([[3.0, 1.0]]), 8.0)
    assert px.tolist() == [[28.0, 12.0, 16.0, 24.0]]
    torch.manual_seed(0)
    model = Model("models/yolov5n.yaml", nc=2).eval()
    raw = [torch.randn(1, 3, n, n, 7) for n in (4, 2, 1)]
    out = model.model[-1].decode(raw)
    # row of level 1, anchor 2, cell (gj=1, gi=0), computed from the formula in the DESIGN
    r = raw[1][0, 2, 1, 0]
    s = float(model.stride[1])
    a = model.model[-1].anchors[1, 2] * s
    want = torch.cat((((r[:2].sigmoid() * 2 - 0.5) + torch.tensor([0.0, 1.0])) * s, (r[2:4].sigmoid() * 2) ** 2 * a,
                      r[4:].sigmoid()))
    assert torch.allclose(out[0, 48 + 2 * 4 + 1 * 2 + 0], want, rtol=1e-6)


def test_cell_frame_and_log_wh_gain():
    box = cell_frame(torch.tensor([[3.25, 1.75, 2.0, 1.0]]), torch.tensor([3]), torch.tensor([1]))
    assert box.tolist() == [[0.25, 0.75, 2.0, 1.0]]
    t = torch.tensor([-200.0, 0.0, 3.0])
    want = torch.tensor([2 * (-200.0 + 0.6931471805599453), 0.0, 2 * torch.log(2 * torch.sigmoid(t[2])).item()])
    assert torch.allclose(YOLOBoxCoder.log_wh_gain(t), want, rtol=1e-5)  # finite where sigmoid underflows


def test_dfl_coder_expectation_decode_and_encode():
    coder = DFLBoxCoder(reg_max=4)
    logits = torch.full((1, 20), -1e4)
    for side, bin_ in enumerate((1, 0, 3, 2)):  # one-hot distributions: l=1, t=0, r=3, b=2
        logits[0, side * 5 + bin_] = 0.0
    assert coder.expectation(logits).tolist() == [[1.0, 0.0, 3.0, 2.0]]
    assert coder.decode(logits).tolist() == [[-0.5, 0.5, 3.5, 2.5]]  # around the cell centre (0.5, 0.5)
    assert coder.encode(torch.tensor([[-0.5, 0.5, 3.5, 2.5]])).tolist() == [[1.0, 0.0, 3.0, 2.0]]
    assert torch.allclose(coder.encode(torch.tensor([[-9.0, 1.0, 9.0, 0.0]])), torch.tensor([[3.9, 0.0, 3.9, 0.0]]))
