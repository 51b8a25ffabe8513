"""compare.py's "Rule or loss?" section: leads over the baseline split into one-factor steps, the steps
one Holm family over the looks (utils/compare/factors.py)."""
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from utils.compare.factors import Step, decide_steps, factor_section, factors, splits
from utils.compare.report import write_report
from utils.compare.runs import RunRecord
from utils.compare.stats import Look, holm

GRID = ["yolov5", "yolov5+simota", "yolov5+atss", "yolov5+tal", "gfl", "tal"]


def runs_of(**values):
    return {k.replace("__", "+"): dict(enumerate(v)) for k, v in values.items()}


def test_factors_name_the_loss_and_its_rule():
    assert factors("gfl") == ("gfl", "atss") and factors("tal") == ("tal", "tal")
    assert factors("yolov5") == ("yolov5", "yolov5") and factors("yolov5+simota") == ("yolov5", "simota")
    assert factors("ota") == ("ota", "simota") and factors("gfl+tal") == ("gfl", "tal")


def test_splits_of_the_assigner_grid():
    got = {sp.strategy: ([(st.a, st.b, st.factor) for st in sp.steps], sp.via, sp.missing)
           for sp in splits(GRID + ["freeanchor", "ssd", "gfl+tal"], "yolov5")}
    assert got["yolov5+simota"] == ([("yolov5", "yolov5+simota", "rule")], "", ())
    assert got["gfl"] == ([("yolov5", "yolov5+atss", "rule"), ("yolov5+atss", "gfl", "loss")], "yolov5+atss", ())
    assert got["tal"] == ([("yolov5", "yolov5+tal", "rule"), ("yolov5+tal", "tal", "loss")], "yolov5+tal", ())
    assert got["gfl+tal"] == ([("yolov5", "yolov5+tal", "rule"), ("yolov5+tal", "gfl+tal", "loss")],
                              "yolov5+tal", ())
    # ssd (max_iou) could be split by yolov5+max_iou or by ssd on YOLOv5's rule; neither ran
    assert got["ssd"] == ([], "", ("yolov5+max_iou", "ssd+yolov5"))
    # freeanchor's bags feed no other loss, and its loss takes no other rule: nothing can split it
    assert got["freeanchor"] == ([], "", ())


def test_both_paths_when_both_middles_ran():
    """From gfl to tal+atss: through gfl's loss on TAL (gfl+tal) and through TAL's loss on ATSS (tal+atss)."""
    found = splits(["gfl", "gfl+tal", "tal+atss", "tal"], "gfl")
    two = [sp for sp in found if sp.strategy == "tal"]
    assert [sp.via for sp in two] == ["gfl+tal", "tal+atss"]
    assert [[st.factor for st in sp.steps] for sp in two] == [["rule", "loss"], ["loss", "rule"]]


def test_steps_are_one_holm_family_of_distinct_steps():
    runs = runs_of(yolov5=[0.40, 0.41, 0.39], yolov5__simota=[0.41, 0.40, 0.42], yolov5__atss=[0.43, 0.44, 0.42],
                   yolov5__tal=[0.42, 0.43, 0.44], gfl=[0.46, 0.45, 0.47], tal=[0.44, 0.46, 0.43])
    found, results = decide_steps(runs, "yolov5")
    steps = [("yolov5", "yolov5+simota"), ("yolov5", "yolov5+atss"), ("yolov5", "yolov5+tal"),
             ("yolov5+atss", "gfl"), ("yolov5+tal", "tal")]
    assert [(st.a, st.b) for st in results] == steps  # yolov5 -> yolov5+atss once, though two splits use it
    raw = [scipy_stats.ttest_ind(list(runs[b].values()), list(runs[a].values()), equal_var=False).pvalue
           for a, b in steps]
    assert [r.outcome.p for r in results.values()] == pytest.approx(raw)
    assert [r.outcome.p_adj for r in results.values()] == pytest.approx(holm(raw))
    gfl = next(sp for sp in found if sp.strategy == "gfl")
    rule, loss = (results[st] for st in gfl.steps)
    mean = {k: sum(v.values()) / 3 for k, v in runs.items()}
    assert rule.outcome.diff == pytest.approx(mean["yolov5+atss"] - mean["yolov5"])
    assert loss.outcome.diff == pytest.approx(mean["gfl"] - mean["yolov5+atss"])
    assert rule.outcome.diff + loss.outcome.diff == pytest.approx(mean["gfl"] - mean["yolov5"])  # same seeds: they add up
    # Welch's interval of the rule step: diff -/+ t(0.975, df) * se, by hand
    a, b = list(runs["yolov5"].values()), list(runs["yolov5+atss"].values())
    va, vb = (scipy_stats.tvar(x) / 3 for x in (a, b))
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    half = scipy_stats.t.ppf(0.975, df) * (va + vb) ** 0.5
    assert (rule.low, rule.high) == pytest.approx((rule.outcome.diff - half, rule.outcome.diff + half))
    assert [r.outcome.call for r in results.values()] == [0 if p >= 0.05 else (1 if d > 0 else -1) for p, d in
                                                           zip(holm(raw), [r.outcome.diff for r in results.values()])]


def test_steps_are_corrected_over_the_looks():
    runs = runs_of(yolov5=[0.40, 0.41, 0.39], yolov5__atss=[0.43, 0.44, 0.42], gfl=[0.46, 0.45, 0.47])
    looks = [Look({k: (0, 1, 2) for k in runs}, 0.36)]
    _, results = decide_steps(runs, "yolov5", looks)
    raw = [scipy_stats.ttest_ind(list(runs[b].values()), list(runs[a].values()), equal_var=False).pvalue
           for a, b in (("yolov5", "yolov5+atss"), ("yolov5+atss", "gfl"))]
    assert [r.outcome.q for r in results.values()] == pytest.approx([min(1.0, p / 0.36) for p in raw])
    assert [r.outcome.p_adj for r in results.values()] == pytest.approx(holm([min(1.0, p / 0.36) for p in raw]))


def test_no_section_without_a_strategy_between():
    runs = runs_of(yolov5=[0.40, 0.41, 0.39], ota=[0.41, 0.40, 0.42], gfl=[0.46, 0.45, 0.47])
    assert factor_section(runs, "yolov5") == []
    runs = runs_of(yolov5=[0.40, 0.41, 0.39], yolov5__tal=[0.41, 0.40, 0.42])  # one factor only: the verdicts say it
    assert factor_section(runs, "yolov5") == []


def record(loss, seed, value):
    return RunRecord(loss=loss, seed=seed, epochs=1, map50=value, map=value, ap={}, recall={}, started=0.0,
                     finished=1.0, train_s=1.0, folder=Path("."))


def test_results_md_has_the_section(tmp_path):
    values = {"yolov5": [0.40, 0.41, 0.39], "yolov5+atss": [0.43, 0.44, 0.42], "gfl": [0.46, 0.45, 0.47],
              "ssd": [0.30, 0.31, 0.29]}
    records = [record(k, s, v) for k, vs in values.items() for s, v in enumerate(vs)]
    write_report(tmp_path, records, list(values), {}, "python compare.py ...", plots=False)
    md = (tmp_path / "results.md").read_text()
    section = md[md.index("## Rule or loss?"):]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    _, results = decide_steps({k: dict(enumerate(v)) for k, v in values.items()}, "yolov5")
    rule = results[Step("yolov5", "yolov5+atss", "rule")]
    loss = results[Step("yolov5+atss", "gfl", "loss")]
    assert rows[1] == (f"| `gfl` | +0.060 | `yolov5+atss` | `yolov5` → `yolov5+atss`: +0.030 [{rule.low:+.3f}, "
                       f"{rule.high:+.3f}], {rule.words} | `yolov5+atss` → `gfl`: +0.030 [{loss.low:+.3f}, "
                       f"{loss.high:+.3f}], {loss.words} |")
    assert rows[2] == "| `ssd` | -0.100 | not split: add `yolov5+max_iou` or `ssd+yolov5` | - | - |"
    assert "Holm-adjusted over the 2 distinct steps" in section  # ssd's direct step is not in the family
