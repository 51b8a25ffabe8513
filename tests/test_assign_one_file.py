"""Adding a matching rule is one file, and adding a loss is one file: a copy of the project gets
``utils/assign/centre_cell.py`` and ``utils/loss/centre_bce.py`` and nothing else, and both train a step
(the new rule on the YOLOv5 loss and on the dfl head's gfl, the new loss with its own rule and with
SimOTA), are listed in the registries, and a pair the new loss does not take is refused."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RULE = '''
"""``assigner: centre_cell``: the cell holding an object's centre, every anchor of it."""
import dataclasses
from typing import ClassVar

import torch

from utils.assign.params import POSITIVE, HypParams
from utils.assign.result import AssignResult
from utils.assign.rule import AssignRule, level_rows


@dataclasses.dataclass(frozen=True)
class CentreCellHyp(HypParams):
    RANGES: ClassVar[dict[str, str]] = {"centre_cell_level": POSITIVE}

    centre_cell_level: int = 1  # the level (1-based) whose cell takes the object


class CentreCellRule(AssignRule):
    name = "centre_cell"
    Hyp = CentreCellHyp

    @torch.no_grad()
    def __call__(self, priors, view, targets):
        lv = priors.levels[self.hyp.centre_cell_level - 1]
        xy = (targets.xywh_px[:, :2] / lv.stride).long()
        cell = xy[:, 1].clamp(0, lv.ny - 1) * lv.nx + xy[:, 0].clamp(0, lv.nx - 1)
        a = torch.arange(lv.na, device=cell.device)
        prior = (lv.start + a[None] * lv.ny * lv.nx + cell[:, None]).reshape(-1)
        obj = torch.arange(len(targets), device=cell.device).repeat_interleave(lv.na)
        return AssignResult(level_rows(obj, prior, targets, priors), len(targets))
'''

LOSS = '''
"""``loss: centre_bce``: objectness and class BCE only, at the rule's positives."""
import dataclasses

import torch
import torch.nn.functional as F

from utils.loss.base import AnchorLossStrategy, StrategyHyp


@dataclasses.dataclass(frozen=True)
class CentreBCEHyp(StrategyHyp):
    assigner: str = "centre_cell"


class ComputeLossCentreBCE(AnchorLossStrategy):
    name = "centre_bce"
    names = ("obj", "cls")
    Hyp = CentreBCEHyp
    hyp_file = "hyp.scratch.yaml"

    def losses(self, preds, matches):
        lobj = lcls = torch.zeros((), device=preds[0].device)
        for p, m in zip(preds, matches):
            tobj = torch.zeros(p.shape[:4], device=p.device)
            tobj[m.image, m.anchor, m.gj, m.gi] = 1.0
            lobj = lobj + F.binary_cross_entropy_with_logits(p[..., 4], tobj)
            if len(m):
                cls = p[m.image, m.anchor, m.gj, m.gi, 5:]
                lcls = lcls + F.binary_cross_entropy_with_logits(cls, F.one_hot(m.cls, self.nc).float())
        return (lobj + lcls) * preds[0].shape[0], torch.stack((lobj, lcls)).detach()
'''

SCRIPT = '''
import torch
from models.yolo import Model
from utils.assign import ASSIGNERS
from utils.hyp import HypError, load_hyp
from utils.loss import LOSSES, build_loss

assert "centre_cell" in ASSIGNERS and "centre_bce" in LOSSES
targets = torch.tensor([[0, 0, 0.5, 0.5, 0.4, 0.3], [1, 2, 0.3, 0.6, 0.2, 0.2]])
imgs = torch.rand(2, 3, 64, 64)
for loss, rule in (("yolov5", "centre_cell"), ("gfl", "centre_cell"), ("centre_bce", None), ("centre_bce", "simota")):
    hyp = {"loss": loss, **({"assigner": rule} if rule else {})}
    cls = LOSSES[loss]
    torch.manual_seed(0)
    model = Model("models/yolov5n.yaml", nc=3, head=cls.head).train()
    fn = build_loss(model, load_hyp(hyp))
    total, items = fn(model(imgs), targets, imgs)
    total.backward()
    rows = fn.last_assignment.num_rows
    grad = model.model[-1].m[0].weight.grad.abs().sum()
    assert torch.isfinite(total) and rows > 0 and grad > 0, (loss, rule)
    print(loss, rule or cls.default_assigner(), rows, round(float(total), 4))
try:
    load_hyp({"loss": "centre_bce", "assigner": "dw"})
except HypError as e:
    print("refused:", e)
'''


def test_a_rule_file_and_a_loss_file_train_with_no_other_edit(tmp_path):
    tree = tmp_path / "project"
    # the code only: a virtual environment inside the checkout (the README's .venv, ~6 GB) stays behind
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", ".venv", "venv", "datasets", "runs", "tests",
                                                              "docs", "benchmarks", "__pycache__", "*.pyc",
                                                              ".pytest_cache"))
    (tree / "utils" / "assign" / "centre_cell.py").write_text(textwrap.dedent(RULE))
    (tree / "utils" / "loss" / "centre_bce.py").write_text(textwrap.dedent(LOSS))
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tree, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert [ln.split()[:2] for ln in lines[:4]] == [["yolov5", "centre_cell"], ["gfl", "centre_cell"],
                                                    ["centre_bce", "centre_cell"], ["centre_bce", "simota"]]
    # one row per anchor of the centre cell: 3 anchors x 2 objects on the anchor head, 1 x 2 on the dfl head
    assert [int(ln.split()[2]) for ln in lines[:3]] == [6, 2, 6]
    # the new loss takes every rule of positives for its head, the new one included; not dw's candidates
    assert lines[4] == ("refused: hyp: hyp key 'assigner': loss 'centre_bce' cannot consume rule 'dw' "
                        "(docs/strategy_api.md); it takes yolov5, simota, atss, tal, max_iou, centre_cell")
