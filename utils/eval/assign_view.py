"""What each loss strategy makes positive: per-image pictures and per-dataset statistics.

Everything here draws the assignment the strategy's loss trained on in the same call
(``loss.last_assignment``, see :class:`utils.loss.base.LossStrategy`), never a copy of its rule.
Positives are the (level, anchor, cell) rows it holds; soft strategies (``dw``, ``freeanchor``)
also give a weight per row, drawn as dot size.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.geometry import CELL_CENTRE
from models.yolo import Model
from utils.assign.result import POSITIVE_ROW, AssignResult, LevelCandidates
from utils.hyp import load_hyp
from utils.loss import loss_class, split_strategy, with_assigner

LOGGER = logging.getLogger(__name__)
LEVEL_COLOURS = ("tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple")
SIZE_BINS = (("small", 0, 32 ** 2), ("medium", 32 ** 2, 96 ** 2), ("large", 96 ** 2, float("inf")))


@dataclass
class Strategy:
    """A strategy ready to assign: its loss object and the model (with the head it trains)."""

    name: str
    model: nn.Module
    loss: object

    @property
    def title(self) -> str:
        """The name with the matching rule where the loss lets the hyp choose one: ``gfl (assigner atss)``."""
        assigner = getattr(self.loss.hyp, "assigner", None)
        return self.name if assigner is None else f"{self.name} (assigner {assigner})"

    @property
    def rows(self) -> str:
        """What its rows are, plural, for titles and tables: positives, bag members, weighted candidates."""
        return f"{self.loss.row_kind}s"

    @property
    def label(self) -> str:
        """The title, plus what is counted where the rows are not positives (``dw ... [weighted candidates]``)."""
        return self.title if self.loss.row_kind == POSITIVE_ROW else f"{self.title} [{self.rows}]"


def strategy_for(name: str, hyp_file: str | Path, base: Model | None, nc: int, cfg: str | dict,
                 imgsz: int) -> Strategy:
    """The model to predict with (``base`` when its head fits the strategy, else a fresh model of
    ``cfg`` with the strategy's head) and the strategy's loss built as train.py builds it; ``name`` may
    be ``loss+assigner`` (the assigner replaces the hyp file's)."""
    loss, assigner = split_strategy(name)
    hyp = load_hyp(hyp_file if assigner is None else with_assigner(load_hyp(hyp_file), assigner))
    strategy = loss_class(loss)
    head = strategy.head
    if base is not None and base.head_kind == head:
        model = base
    else:
        if base is not None:
            LOGGER.info("%s trains a '%s' head; the checkpoint has '%s': using a fresh model", name, head, base.head_kind)
        model = Model(cfg, nc=nc, head=head)
    model.eval()
    return Strategy(name, model, strategy(model, strategy.train_hyp(hyp, nl=model.model[-1].nl, nc=nc, imgsz=imgsz)))


@torch.no_grad()
def positives(strategy: Strategy, imgs: torch.Tensor, targets: torch.Tensor) -> AssignResult:
    """The assignment the strategy's loss trains on for a batch: the loss is called on the model's
    outputs and the assignment of that very call is returned. ``imgs`` float 0..1 (bs, 3, H, W),
    ``targets`` (n, 6)."""
    _, raw = strategy.model(imgs)
    strategy.loss(raw, targets, imgs)
    return strategy.loss.last_assignment


def cell_centres(matches: list[LevelCandidates], strides: list[float], image: int = 0):
    """Per level: (x, y) pixel centres (k, 2), target rows (k,), weights (k,) or None, for one image."""
    out = []
    for m, s in zip(matches, strides):
        keep = m.image == image
        xy = torch.stack(((m.gi[keep] + CELL_CENTRE) * s, (m.gj[keep] + CELL_CENTRE) * s), 1)
        out.append((xy.cpu().numpy(), m.target[keep].cpu().numpy(),
                    None if m.weight is None else m.weight[keep].cpu().numpy()))
    return out


def draw_panels(img: np.ndarray, boxes_xyxy: np.ndarray, panels: dict[str, list], file: Path,
                row_kinds: dict[str, str] | None = None) -> Path:
    """One panel per strategy: the image, its ground truth boxes, and dots on its assigned cells
    (colour = level, size = weight where the strategy has one); ``row_kinds`` names what a panel's
    rows are, plural (default positives)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 5 * rows), squeeze=False)
    for ax, (name, levels) in zip(axes.ravel(), panels.items()):
        ax.imshow(img)
        for x1, y1, x2, y2 in boxes_xyxy:
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="white", linewidth=1.5))
        total = 0
        for lv, (xy, _, w) in enumerate(levels):
            if len(xy):
                size = 12.0 if w is None else 3 + 90 * w / max(float(np.max(w)), 1e-9)
                ax.scatter(xy[:, 0], xy[:, 1], s=size, c=LEVEL_COLOURS[lv % len(LEVEL_COLOURS)],
                           alpha=0.7, edgecolors="black", linewidths=0.3, label=f"P{lv + 3}")
                total += len(xy)
        ax.set_title(f"{name}: {total} {(row_kinds or {}).get(name, 'positives')} for {len(boxes_xyxy)} objects")
        ax.axis("off")
        ax.legend(loc="lower right", fontsize=7)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(file, dpi=130)
    plt.close(fig)
    return file


def positives_per_object(matches: list[LevelCandidates], targets: torch.Tensor, img_hw: tuple[int, int]) -> dict:
    """Count distinct (level, anchor, cell) positives of every target, grouped by COCO size bin of
    the target's area in pixels of the letterboxed image. Returns {bin: list of counts}."""
    nt = targets.shape[0]
    counts = torch.zeros(nt, dtype=torch.long)
    for lv, m in enumerate(matches):
        if len(m):
            key = torch.stack((m.target, m.anchor, m.gj, m.gi), 1).cpu()
            counts += torch.bincount(torch.unique(key, dim=0)[:, 0], minlength=nt)
    area = (targets[:, 4] * img_hw[1] * targets[:, 5] * img_hw[0]).cpu()
    return {name: counts[(area >= lo) & (area < hi)].tolist() for name, lo, hi in SIZE_BINS}


def stats_table(stats: dict[str, dict[str, list[int]]]) -> str:
    """Markdown table: mean positives per object per strategy and size bin (object counts in header)."""
    first = next(iter(stats.values()))
    header = "| strategy | " + " | ".join(f"{b} (n={len(first[b])})" for b, _, _ in SIZE_BINS) + " | all |"
    lines = [header, "|---" * (len(SIZE_BINS) + 2) + "|"]
    for name, bins in stats.items():
        allc = sum((bins[b] for b, _, _ in SIZE_BINS), [])
        cells = [f"{np.mean(bins[b]):.2f}" if bins[b] else "-" for b, _, _ in SIZE_BINS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {np.mean(allc):.2f} |" if allc else f"| {name} | - |")
    return "\n".join(lines)


def stats_chart(stats: dict[str, dict[str, list[int]]], file: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(stats)
    x = np.arange(len(SIZE_BINS))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(8, 4.5), tight_layout=True)
    for i, name in enumerate(names):
        ax.bar(x + i * width, [np.mean(stats[name][b]) if stats[name][b] else 0 for b, _, _ in SIZE_BINS],
               width, label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2, [b for b, _, _ in SIZE_BINS])
    ax.set(ylabel="positives per object", title="positives per object by object size")
    ax.legend()
    fig.savefig(file, dpi=130)
    plt.close(fig)
    return file
