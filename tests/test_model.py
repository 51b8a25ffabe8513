"""Model: YOLOv5 v7.0 architecture (state_dict keys/shapes, sizes), head outputs and decode."""
import logging
import math
from pathlib import Path

import pytest
import torch

from models.yolo import HEADS, Detect, Model

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference"
MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def yolov5n() -> Model:
    torch.manual_seed(0)
    return Model(MODELS / "yolov5n.yaml")


def _reference_shapes(name: str) -> list[tuple[str, list[int]]]:
    path = REFERENCE / f"yolov5{name}_coco80_state_dict.tsv"
    if not path.is_file():
        pytest.skip(f"reference state_dict listing {path} absent (needs ../shared next to the repo)")
    rows = path.read_text().strip().splitlines()[1:]  # header: key, shape
    out = []
    for row in rows:
        key, shape = row.split("\t")
        out.append((key, [int(s) for s in shape.strip("[]").split(",") if s.strip()]))
    return out


@pytest.mark.parametrize("name", ["n", "s"])
def test_state_dict_matches_yolov5_reference(name: str) -> None:
    model = Model(MODELS / f"yolov5{name}.yaml")
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert ours == _reference_shapes(name)  # same keys, same order, same shapes


# (unfused params, fused params, fused GFLOPs at 640 as in the YOLOv5 README table)
SIZES = {"n": (1_872_157, 1_867_405, 4.5), "s": (7_235_389, 7_225_885, 16.5)}


@pytest.mark.parametrize("name", ["n", "s"])
def test_param_counts_and_gflops(name: str) -> None:
    model = Model(MODELS / f"yolov5{name}.yaml")
    n_layers, n_p, n_g, gflops = model.info()
    print(f"yolov5{name}: {n_layers} layers, {n_p:,} parameters, {gflops:.2f} GFLOPs (unfused)")
    assert (n_layers, n_p, n_g) == (214, SIZES[name][0], SIZES[name][0])
    n_layers, n_p, _, gflops = model.eval().fuse().info()
    print(f"yolov5{name}: {n_layers} layers, {n_p:,} parameters, {gflops:.2f} GFLOPs (fused)")
    assert (n_layers, n_p) == (157, SIZES[name][1])
    assert round(gflops, 1) == SIZES[name][2]


def test_strides_anchors_and_attributes(yolov5n: Model) -> None:
    head = yolov5n.model[-1]
    assert isinstance(head, Detect) and yolov5n.head_kind == "anchor" and HEADS["anchor"] is Detect
    assert yolov5n.stride.tolist() == [8.0, 16.0, 32.0] == head.stride.tolist()
    assert (head.nc, head.no, head.nl, head.na) == (80, 85, 3, 3)
    assert head.anchors.shape == (3, 3, 2)
    assert head.anchors[0, 0].tolist() == [10 / 8, 13 / 8]  # grid units
    assert head.anchors[2, 2].tolist() == [373 / 32, 326 / 32]
    assert yolov5n.names == [str(i) for i in range(80)] and yolov5n.yaml["nc"] == 80
    assert [m.i for m in yolov5n.model] == list(range(25))
    assert yolov5n.model[12].f == [-1, 6] and yolov5n.model[-1].f == [17, 20, 23]
    assert yolov5n.model[0].type == "models.common.Conv"
    assert yolov5n.save == [4, 6, 10, 14, 17, 20, 23]


def test_reversed_anchors_are_flipped() -> None:
    cfg = Model(MODELS / "yolov5n.yaml").yaml
    cfg["anchors"] = cfg["anchors"][::-1]
    head = Model(cfg).model[-1]
    assert head.anchors[0, 0].tolist() == [10 / 8, 13 / 8]


def test_bias_init(yolov5n: Model) -> None:
    torch.manual_seed(0)
    fresh = Detect(80, yolov5n.yaml["anchors"], [64, 128, 256])
    default_bias = [m.bias.detach().clone().view(3, -1) for m in fresh.m]
    fresh.initialize(torch.tensor([8.0, 16.0, 32.0]))
    for bias0, m, s in zip(default_bias, fresh.m, (8, 16, 32)):
        b = m.bias.detach().view(3, -1) - bias0  # (na, no): what the init added
        assert torch.allclose(b[:, 4], torch.full((3,), math.log(8 / (640 / s) ** 2)))
        assert torch.allclose(b[:, 5:], torch.full((3, 80), math.log(0.6 / (80 - 0.99))))
        assert torch.equal(b[:, :4], torch.zeros(3, 4))


@pytest.mark.parametrize("hw", [(256, 256), (320, 256)])
def test_output_shapes_train_and_eval(yolov5n: Model, hw: tuple[int, int]) -> None:
    h, w = hw
    x = torch.rand(2, 3, h, w)
    yolov5n.train()
    raw = yolov5n(x)
    assert [tuple(r.shape) for r in raw] == [(2, 3, h // s, w // s, 85) for s in (8, 16, 32)]
    yolov5n.eval()
    with torch.no_grad():
        decoded, raw = yolov5n(x)
    n = sum(3 * (h // s) * (w // s) for s in (8, 16, 32))
    assert decoded.shape == (2, n, 85) and len(raw) == 3
    assert torch.isfinite(decoded).all()
    assert decoded[..., 4:].min() >= 0 and decoded[..., 4:].max() <= 1


def test_decode_one_cell_by_hand(yolov5n: Model) -> None:
    head = yolov5n.model[-1]
    raw = [torch.zeros(1, 3, 4, 5, 85), torch.zeros(1, 3, 2, 3, 85), torch.zeros(1, 3, 1, 2, 85)]
    # level 1 (stride 16), anchor 2, cell y=1, x=2
    raw[1][0, 2, 1, 2, :6] = torch.tensor([0.5, -1.0, 0.3, -0.2, 2.0, -3.0])
    out = head.decode(raw)
    row = 3 * 4 * 5 + (2 * 2 * 3 + 1 * 3 + 2)  # level 0 rows, then (anchor, y, x) order
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = [(2 * sig(0.5) - 0.5 + 2) * 16, (2 * sig(-1.0) - 0.5 + 1) * 16,
                (2 * sig(0.3)) ** 2 * 59, (2 * sig(-0.2)) ** 2 * 119, sig(2.0), sig(-3.0)]
    assert out.shape == (1, 60 + 18 + 6, 85)
    assert torch.allclose(out[0, row, :6], torch.tensor(expected), atol=1e-4)
    assert torch.allclose(out[0, 0, :4], torch.tensor([4.0, 4.0, 10.0, 13.0]))  # all-zero logits


def test_fuse_keeps_outputs() -> None:
    torch.manual_seed(1)
    model = Model(MODELS / "yolov5n.yaml", nc=3)
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 64, 64))  # gives BatchNorm non-trivial running statistics
    model.eval()
    x = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        before = model(x)[0]
        after = model.fuse()(x)[0]
    assert not any(hasattr(m, "bn") for m in model.modules())
    assert (before - after).abs().max() < 1e-4 * max(1.0, before.abs().max().item())


def test_unknown_block_is_named() -> None:
    cfg = Model(MODELS / "yolov5n.yaml").yaml
    cfg["backbone"][3] = [-1, 1, "Foo", [256, 3, 2]]
    with pytest.raises(ValueError, match=r"unknown block 'Foo' in layer 3 of yolov5n.yaml"):
        Model(cfg)


def test_unknown_head_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown head 'dfll'; choose from .*anchor"):
        Model(MODELS / "yolov5n.yaml", head="dfll")


def test_nc_override(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="models.yolo"):
        model = Model(MODELS / "yolov5n.yaml", nc=3)
    assert "nc=80 with nc=3" in caplog.text
    assert model.yaml["nc"] == 3 and model.nc == 3 and model.names == ["0", "1", "2"]
    assert model.model[-1].m[0].weight.shape == (24, 64, 1, 1)


def test_anchors_given_as_count() -> None:
    cfg = Model(MODELS / "yolov5n.yaml").yaml
    cfg["anchors"] = 3
    head = Model(cfg).model[-1]
    assert head.anchors.shape == (3, 3, 2)
