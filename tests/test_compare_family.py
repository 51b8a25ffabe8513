"""Family-wise control of compare.py's verdicts: Holm by hand, looks, the best set, --seeds auto, and
simulations (no training) through the very functions ``compare.py --report`` calls."""
import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

import compare as compare_cli
from utils.compare.driver import Job, recorded_looks
from utils.compare.stats import (Look, Pair, adjust_family, auto_rounds, best_sentence, best_set, holm,
                                 look_statistic, seed_schedule, seeds_needed, spending, verdicts, welch)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from compare_stats import NAMES, auto_calls, bccd_like, draw, fixed_calls, null_rates, power_at  # noqa: E402


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([0.2]) == [0.2] and holm([]) == []


def runs_of(**values):
    return {k: dict(enumerate(v)) for k, v in values.items()}


def test_verdicts_are_holm_adjusted_over_the_family():
    runs = runs_of(base=[0.40, 0.42, 0.44, 0.41], a=[0.50, 0.51, 0.49, 0.52], b=[0.44, 0.46, 0.45, 0.47],
                   c=[0.41, 0.43, 0.40, 0.42])
    raw = {k: welch(list(runs["base"].values()), list(runs[k].values())).p for k in "abc"}
    out = verdicts(runs, "base")
    assert {k: out[k][0].p_adj for k in "abc"} == pytest.approx(dict(zip("abc", holm([raw[k] for k in "abc"]))))
    assert {k: out[k][0].p for k in "abc"} == pytest.approx(raw)
    # b at raw p 0.014: within the family of three its adjusted p is 0.029 (x2): better
    assert raw["b"] == pytest.approx(0.01437, abs=1e-4) and out["a"][1] == "better" and out["b"][1] == "better"
    assert out["c"][1].startswith("not resolved (4 seeds each; about ")
    # two more strategies that resolve nothing make it a family of five: b's adjusted p is 4 x 0.014 = 0.057
    runs.update(runs_of(d=[0.43, 0.39, 0.42, 0.40], e=[0.44, 0.40, 0.41, 0.45]))
    five = verdicts(runs, "base")
    # its uncorrected interval excludes 0, and the row says why that is not enough
    # seeds estimated at the level of all 15 pairs of the six (the best set's family): 8 = 4 more
    base, b = list(runs["base"].values()), list(runs["b"].values())
    k = seeds_needed(np.mean(b) - np.mean(base), np.std(base, ddof=1), np.std(b, ddof=1), 0.05 / 15)
    assert k == 8 and five["b"][0].p_adj == pytest.approx(4 * raw["b"]) and five["b"][1] == (
        f"not resolved (4 seeds each; its 95 % interval excludes 0 but is uncorrected: over the 5 comparisons "
        f"(Holm) p_adj {4 * raw['b']:.3f} is not below 0.05; about 8 seeds per strategy in all (4 more) would "
        f"resolve a difference this size)")
    assert five["a"][1] == "better"


def test_look_statistic_takes_the_smallest_weighted_p():
    va = {0: 0.40, 1: 0.42, 2: 0.41, 3: 0.43, 4: 0.44}
    vb = {0: 0.45, 1: 0.44, 2: 0.47, 3: 0.48, 4: 0.46}
    looks = [Look({"a": (0, 1, 2), "b": (0, 1, 2)}, 0.25), Look({"a": (0, 1, 2, 3, 4), "b": (0, 1, 2, 3, 4)}, 0.75)]
    p3 = welch([0.40, 0.42, 0.41], [0.45, 0.44, 0.47]).p
    p5 = welch(list(va.values()), list(vb.values())).p
    q, sign = look_statistic(Pair("a", "b", va, vb), looks)
    assert q == pytest.approx(min(p3 / 0.25, p5 / 0.75)) and sign == 1
    # a look where one side has fewer than 2 seeds does not test; none at all -> q = 1
    assert look_statistic(Pair("a", "b", va, vb), [Look({"a": (0,), "b": (0, 1)}, 1.0)]) == (1.0, 0)
    (out,) = adjust_family([Pair("a", "b", va, vb)], looks)
    assert out.p_adj == pytest.approx(q) and out.p == pytest.approx(p5) and out.diff == pytest.approx(0.04)


def test_best_set_and_its_sentence():
    far = runs_of(gfl=[0.60, 0.61, 0.62, 0.60, 0.61], dw=[0.45, 0.46, 0.44, 0.45, 0.47],
                  ssd=[0.44, 0.45, 0.46, 0.44, 0.43])
    best = best_set(far)
    assert best.best == ("gfl",) and best.leader == "gfl" and best.alone
    assert best_sentence(far, best, "bccd") == "Best on bccd (5 seeds each): gfl, resolved ahead of the other 2."
    close = runs_of(gfl=[0.47, 0.45, 0.46], dw=[0.46, 0.44, 0.47], ssd=[0.30, 0.31, 0.29])
    best = best_set(close)
    assert set(best.best) == {"gfl", "dw"} and not best.alone
    sentence = best_sentence(close, best, "bccd")
    assert sentence.startswith("Not resolved between gfl, dw on bccd (3 seeds each); about ")
    assert sentence.endswith(" seeds per strategy in all (" + sentence.split(" in all (")[1].split()[0]
                             + " more) would settle a difference of this size (dw 0.003 behind gfl).")


def test_seed_schedule_and_spending():
    assert seed_schedule(10) == [3, 5, 8, 10] and seed_schedule(3) == [3] and seed_schedule(20) == [3, 5, 8, 12, 18, 20]
    assert spending([3, 5, 8, 10]) == pytest.approx([0.09, 0.16, 0.39, 0.36])
    assert math.fsum(spending(seed_schedule(20))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="--max-seeds must be at least 3"):
        seed_schedule(2)


def test_auto_rounds_stops_the_resolved_and_asks_for_the_rest():
    rng = np.random.default_rng(3)
    values = {"a": rng.normal(0.60, 0.005, 10), "b": rng.normal(0.45, 0.005, 10), "c": rng.normal(0.452, 0.005, 10)}
    first = {k: dict(enumerate(v[:3].tolist())) for k, v in values.items()}
    rnd = auto_rounds(first, ["a", "b", "c"], 10)
    # at 3 seeds a is 30 std ahead: resolved above both; b and c are indistinguishable -> hopeless
    assert len(rnd.looks) == 1 and rnd.active == () and rnd.best.best == ("a",)
    assert rnd.stopped["b"].startswith("resolved below") and rnd.stopped["c"].startswith("resolved below")
    mid = {"a": dict(enumerate([0.50, 0.52, 0.47])), "b": dict(enumerate([0.46, 0.49, 0.45]))}
    rnd = auto_rounds(mid, ["a", "b"], 10)
    assert rnd.active == ("a", "b") and len(rnd.looks) == 1  # waits for seeds 3, 4 of both
    assert auto_rounds({}, ["a", "b"], 10).active == ("a", "b") and auto_rounds({}, ["a", "b"], 10).looks == ()


def test_fixed_seeds_null_error_and_power():
    """6 equal strategies x 5 seeds, 2000 replicates: any false verdict, any false `best: no`."""
    v, b, either, uncorrected = null_rates(2000, 0, auto=False)
    assert v <= 0.065 and b <= 0.065 and uncorrected > 0.15  # each test alone at 0.05: the old verdicts
    assert either <= 0.08  # two families at alpha each; measured 0.043 here
    better, _ = power_at(3, 500, 1)
    assert better >= 0.6


def test_auto_seeds_null_error():
    v, b, either, _ = null_rates(2000, 2, auto=True)
    assert v <= 0.065 and b <= 0.065 and either <= 0.065


def test_auto_spends_fewer_seeds_on_a_bccd_like_scenario():
    spent, auto_alone, fixed_alone = bccd_like(200, 4)
    assert spent < 0.8 * 60 and auto_alone >= 0.85 and fixed_alone >= 0.9


def test_simulation_calls_are_the_report_functions():
    """The benchmark's calls equal what a report on the same runs computes."""
    from utils.compare.report import decide
    from utils.compare.runs import RunRecord

    runs = draw(np.random.default_rng(5), [0, 0.06, 0, 0, 0, 0], 5)
    records = [RunRecord(loss=k, seed=s, epochs=1, map50=v, map=v, ap={}, recall={}, started=0.0, finished=1.0,
                         train_s=1.0, folder=Path(".")) for k, seeds in runs.items() for s, v in seeds.items()]
    decided = decide(records, NAMES)
    any_v, any_b, words, best, _ = fixed_calls(runs)
    assert decided.overall[NAMES[1]][1] == words and decided.best.best == best
    assert any_v == any(o.call for o, _ in decided.overall.values())
    assert auto_calls(runs)[2] >= 18  # every strategy gets the first 3 seeds


def test_recorded_looks_split_alpha(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "compare.json").write_text(json.dumps({"settings": {}, "looks": [{"yolov5": [0, 1, 2], "gfl": [0, 1, 2]}]}))
    jobs = [Job(loss, s, exp / f"{loss}-s{s}", Path("hyp.yaml"), status="done") for loss in ("yolov5", "gfl")
            for s in range(5)]
    looks, new = recorded_looks(exp, jobs)
    assert new and [l.weight for l in looks] == [0.5, 0.5] and looks[1].seeds["gfl"] == (0, 1, 2, 3, 4)
    old_format = tmp_path / "old"
    old_format.mkdir()
    (old_format / "compare.json").write_text(json.dumps({"data": "x"}))
    looks, new = recorded_looks(old_format, jobs)
    assert new and [l.weight for l in looks] == [1.0]


@pytest.mark.parametrize("argv, message", [
    (["--alpha", "0.7"], "--alpha: expected a number between 0 and 0.5 (exclusive), got '0.7'"),
    (["--alpha", "0"], "--alpha: expected a number between 0 and 0.5 (exclusive), got '0'"),
    (["--alpha", "x"], "--alpha: expected a number between 0 and 0.5 (exclusive), got 'x'"),
    (["--seeds", "auto", "--max-seeds", "2"], "--max-seeds: --seeds auto starts at 3 seeds per strategy"),
    (["--seeds", "auto", "--report", "runs"], "--seeds auto decides which runs to train; --report DIR tabulates "
                                              "finished runs found anywhere"),
])
def test_bad_flags_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        compare_cli.parse_opt(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and message in err[-1] and "Traceback" not in "".join(err)


def fake_summary(folder: Path, loss: str, seed: int, map_: float) -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"loss": loss, "seed": seed, "epochs": 1, "map50": map_ + 0.3,
                                                     "map": map_, "per_class": {}}))
    (folder / "opt.yaml").write_text("data: /x/d.yaml\ncfg: /x/m.yaml\nimgsz: 64\nepochs: 1\n")
    (folder / "results.csv").write_text(f"epoch,metrics/mAP_0.5:0.95\n0,{map_}\n")


def test_seeds_auto_plans_the_next_round_and_reports_its_looks(tmp_path, capsys):
    base = ["--losses", "yolov5,gfl", "--seeds", "auto", "--project", str(tmp_path), "--img", "64", "--epochs", "1"]
    assert compare_cli.main(compare_cli.parse_opt(base + ["--plan"])) == 0
    first = [dict(zip(c[2::2], c[3::2])) for c in map(shlex.split, capsys.readouterr().out.split("\n")) if c]
    assert sorted((f["--name"]) for f in first) == sorted(f"{l}-s{s}" for l in ("yolov5", "gfl") for s in range(3))
    exp = compare_cli.experiment_dir(compare_cli.parse_opt(base))
    values = {"yolov5": [0.50, 0.52, 0.47, 0.49, 0.51], "gfl": [0.44, 0.46, 0.43, 0.42, 0.43]}
    for loss, maps in values.items():
        for s, m in enumerate(maps[:3]):
            fake_summary(exp / "runs" / f"{loss}-s{s}", loss, s, m)
    # --report without DIR rewrites the tables and trains nothing: look 1 is complete, look 2 not yet begun
    assert compare_cli.main(compare_cli.parse_opt(base + ["--report"])) == 0
    md = (exp / "results.md").read_text()
    assert md.startswith("Look 2 of 4 (5 seeds) is not complete; the same command trains the rest")
    assert "At look 1: " in md and "| yolov5 | 3/5 |" in md and not (exp / "runs" / "gfl-s3").exists()
    assert compare_cli.main(compare_cli.parse_opt(base + ["--plan"])) == 0
    second = [dict(zip(c[2::2], c[3::2])) for c in map(shlex.split, capsys.readouterr().out.split("\n")) if c]
    assert sorted(f["--name"] for f in second) == ["gfl-s3", "gfl-s4", "yolov5-s3", "yolov5-s4"]
    for loss, maps in values.items():
        for s in (3, 4):
            fake_summary(exp / "runs" / f"{loss}-s{s}", loss, s, maps[s])
    # at 5 seeds gfl is resolved below (p 0.0014 < 0.05 x 0.16): nothing left to train
    assert compare_cli.main(compare_cli.parse_opt(base)) == 0  # nothing left to train
    md = (exp / "results.md").read_text()
    assert md.startswith("Best on d (5 seeds each): yolov5, resolved ahead of the other 1.")
    assert "Seeds chosen by `--seeds auto` (cap 10): looks at 2 of the seed counts [3, 5, 8, 10]" in md
    assert "gfl: resolved below another strategy" in md


@pytest.mark.parametrize("content", ["", "[1]", '{"settings": {}, "looks": "x"}', '{"settings": {}, "looks": [{"a": 1}]}'])
def test_a_broken_compare_json_is_one_line_naming_it(tmp_path, content, caplog):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "compare.json").write_text(content)
    opt = compare_cli.parse_opt(["--losses", "yolov5", "--seeds", "0", "--project", str(tmp_path), "--plan"])
    assert compare_cli.main(opt) == 1
    assert f"error: {tmp_path / 'exp' / 'compare.json'}" in caplog.text and "or pass --new" in caplog.text
