"""--seeds auto while its rounds train (issue 37) and the verdict a user acts on (issue 38), with
tests/fake_train.py in place of train.py: each run ends at once with a given mAP50-95."""
import csv
import io
import re
from pathlib import Path

import compare as compare_cli
from tests.fakes import use_fake_trainer
from utils.compare import auto
from utils.compare.report import Context, Decisions, strategy_rows
from utils.compare.runs import RunRecord
from utils.compare.stats import auto_rounds, best_sentence, best_set

# at 3 seeds yolov5 vs gfl is not resolved; at 5 gfl is resolved below (p 0.0014 < 0.05 x 0.64)
MAPS = {"yolov5": [0.50, 0.52, 0.47, 0.49, 0.51], "gfl": [0.44, 0.46, 0.43, 0.42, 0.43]}


def maps_table(values: dict[str, list[float]]) -> dict[str, float]:
    return {f"{loss}-s{s}": v for loss, vs in values.items() for s, v in enumerate(vs)}


def dataset(tmp_path):
    """A converted dataset: every converter names its YAML data.yaml, so the folder names the data."""
    folder = tmp_path / "raccoon"
    folder.mkdir(exist_ok=True)
    (folder / "data.yaml").write_text(f"path: {folder}\ntrain: images\nval: images\nnames: [a]\n")
    return folder / "data.yaml"


def auto_args(tmp_path, losses="yolov5,gfl"):
    return compare_cli.parse_opt(["--data", str(dataset(tmp_path)), "--img", "64", "--epochs", "1", "--workers", "0",
                                  "--losses", losses, "--seeds", "auto", "--max-seeds", "5", "--noplots",
                                  "--project", str(tmp_path / "runs")])


def runs_column(md: str) -> dict[str, str]:
    """loss -> the `runs` cell of results.md's main table."""
    table = md.split("| loss | runs |")[1].split("\n\n")[0].splitlines()[2:]
    return {row.split("|")[1].strip(): row.split("|")[2].strip() for row in table}


def test_tables_during_a_round_hold_every_finished_run(tmp_path, monkeypatch, caplog):
    use_fake_trainer(monkeypatch, tmp_path, maps_table(MAPS))
    snaps = []
    real = auto.write_auto_report

    def snapshot(exp, *args, **kwargs):
        real(exp, *args, **kwargs)
        if kwargs.get("progress") is not None:  # written because a run finished
            rows = list(csv.DictReader(io.StringIO((exp / "runs.csv").read_text())))
            snaps.append(({(r["loss"], int(r["seed"])) for r in rows}, (exp / "results.md").read_text(),
                          list(csv.DictReader(io.StringIO((exp / "results.csv").read_text())))))

    monkeypatch.setattr(auto, "write_auto_report", snapshot)
    caplog.set_level("INFO")
    assert compare_cli.main(auto_args(tmp_path)) == 0
    assert len(snaps) == 10  # 2 strategies x 3 seeds, then seeds 3 and 4 of both
    for i, (runs, _, _) in enumerate(snaps):
        assert len(runs) == i + 1 and (i == 0 or snaps[i - 1][0] < runs)  # one more, none lost
    first, md, rows = snaps[0][0], snaps[0][1], snaps[0][2]
    assert first == {("yolov5", 0)} and runs_column(md) == {"yolov5": "1/3", "gfl": "0/3"}
    assert md.startswith("Look 1 of 2 (3 seeds) in progress: 1 of 6 runs done, ")
    assert re.search(r"ETA \d+:\d\d:\d\d\. Verdicts, p-values and the best column come when the look is complete", md)
    _, md, rows = snaps[6]
    assert runs_column(md) == {"yolov5": "4/5", "gfl": "3/5"}
    assert md.startswith("Look 2 of 2 (5 seeds) in progress: 7 of 10 runs done, ")
    assert "At look 1: Not resolved between yolov5, gfl on raccoon (3 seeds each)" in md
    for _, _, rows in snaps:  # no p-value, verdict or best call before a look is complete
        assert all(r["map_p"] == r["map_p_adj"] == r["best"] == "" for r in rows)
        assert rows[1]["verdict"] in ("look 1 of 2 (3 seeds) not complete", "look 2 of 2 (5 seeds) not complete")
    progress = r"look 2 of 2 \(5 seeds\): \[#+\.*\] 7/10 runs, .* ETA \d+:\d\d:\d\d"
    assert any(re.fullmatch(progress, m) for m in caplog.messages)
    final = (tmp_path / "runs/exp/results.md").read_text()
    assert final.startswith("Best on raccoon (5 seeds each): yolov5, resolved ahead of the other 1.")
    assert runs_column(final) == {"yolov5": "5/5", "gfl": "5/5"}


# the case, shortened: gfl ahead of yolov5 but not resolved at 3 seeds, tal noisy and behind
CAPPED = {"yolov5": [0.236, 0.25, 0.22, 0.24, 0.23], "gfl": [0.30, 0.26, 0.33, 0.28, 0.31],
          "tal": [0.23, 0.16, 0.30, 0.20, 0.25]}


def test_the_cap_says_what_to_do_next_and_raising_it_says_what_it_reopened(tmp_path, monkeypatch):
    use_fake_trainer(monkeypatch, tmp_path, maps_table(CAPPED))
    argv = ["--data", str(dataset(tmp_path)), "--img", "64", "--epochs", "1", "--workers", "0", "--losses",
            "yolov5,gfl,tal", "--seeds", "auto", "--noplots", "--project", str(tmp_path / "runs")]
    monkeypatch.setattr("sys.argv", ["compare.py", *argv, "--max-seeds", "3"])
    assert compare_cli.main(compare_cli.parse_opt(argv + ["--max-seeds", "3"])) == 0
    md = (tmp_path / "runs/exp/results.md").read_text()
    rows = {r["loss"]: r for r in csv.DictReader(io.StringIO((tmp_path / "runs/exp/results.csv").read_text()))}
    # tal: stopped as hopeless, so never `best: yes`, and the sentence does not count it as tied
    assert (rows["tal"]["best"], rows["gfl"]["best"], rows["yolov5"]["best"]) == ("no (hopeless)", "yes", "yes")
    assert md.startswith("Not resolved between gfl, yolov5 on raccoon (3 seeds each); tal stopped as hopeless "
                         "(not resolved below gfl, but a gap this size would rarely be resolved by the cap); about ")
    advice = re.search(r"The cap of 3 seeds per strategy was reached with the best not resolved: about (\d+) seeds per "
                       r"strategy in all \((\d+) more\) would settle yolov5 against gfl\. To go on: `(.*)`; a higher "
                       r"cap can also reopen strategies stopped as hopeless, which were judged against the cap\.", md)
    assert advice and int(advice[1]) - 3 == int(advice[2]) and int(advice[1]) > 3
    assert advice[3] == f"python compare.py {' '.join(argv)} --max-seeds {advice[1]}"
    # the sentence's, the advice's and gfl's row's (the same pair) are one number with one meaning
    same = f"about {advice[1]} seeds per strategy in all ({advice[2]} more) would"
    assert f"{same} settle" in md.splitlines()[0] and rows["gfl"]["verdict"].endswith(f"{same} resolve a difference this size)")
    # raising the cap replays the calls against the new cap: tal is no longer hopeless, and results.md says so
    monkeypatch.setattr("sys.argv", ["compare.py", *argv, "--max-seeds", "5"])
    assert compare_cli.main(compare_cli.parse_opt(argv + ["--max-seeds", "5"])) == 0
    md = (tmp_path / "runs/exp/results.md").read_text()
    assert ("Raising --max-seeds from 3 to 5 reopened tal: stopped as hopeless at a cap of 3, where its gap to the "
            "leader would rarely have been resolved; at 5 seeds it might be.") in md
    assert not (tmp_path / "runs/exp2").exists()


def record(loss, seed, value):
    return RunRecord(loss=loss, seed=seed, epochs=1, map50=value, map=value, ap={}, recall={}, started=0.0,
                     finished=1.0, train_s=1.0, folder=Path("."), settings={"dataset": "raccoon"})


def test_hopeless_is_never_best_yes_in_the_tables():
    runs = {k: dict(enumerate(v[:3])) for k, v in CAPPED.items()}
    rnd = auto_rounds(runs, list(CAPPED), 3)
    assert "tal" in rnd.best.best and rnd.stopped["tal"].startswith("hopeless")
    records = [record(k, s, v) for k, seeds in runs.items() for s, v in seeds.items()]
    decided = Decisions({}, rnd.best, {}, list(rnd.looks), 0.05)
    rows = strategy_rows(records, list(CAPPED), {}, decided, Context(hopeless=("tal",)))
    assert [r["best"] for r in rows] == ["yes", "yes", "no (hopeless)"]
    assert "tal" not in best_sentence(runs, rnd.best, "raccoon", hopeless=("tal",)).split(" on ")[0]
    # without the auto procedure's call, the same runs leave tal tied
    assert best_sentence(runs, best_set(runs), "raccoon").startswith("Not resolved between gfl, yolov5, tal")


def test_a_failed_run_leaves_the_look_incomplete_and_the_same_command_retries_it(tmp_path, monkeypatch):
    use_fake_trainer(monkeypatch, tmp_path, maps_table(MAPS), fail="gfl-s1")
    assert compare_cli.main(auto_args(tmp_path)) == 2
    md = (tmp_path / "runs/exp/results.md").read_text()
    assert md.startswith("Look 1 of 2 (3 seeds) is not complete; the same command trains the rest (failed runs are "
                         "tried again). Verdicts, p-values and the best column come when the look is complete")
    assert runs_column(md) == {"yolov5": "3/3", "gfl": "2/3"} and "| gfl-s1 |" in md
    monkeypatch.setenv("FAKE_FAIL", "")
    assert compare_cli.main(auto_args(tmp_path)) == 0
    assert runs_column((tmp_path / "runs/exp/results.md").read_text()) == {"yolov5": "5/5", "gfl": "5/5"}


def test_only_a_hopeless_strategy_left_open_at_the_cap(tmp_path, monkeypatch):
    """gfl resolved above yolov5; tal too noisy to place, stopped as hopeless: gfl is best, tal is named as
    hopeless (not tied), and the advice is about the gap a higher cap would reopen."""
    maps = {"yolov5": [0.20, 0.21, 0.205], "gfl": [0.30, 0.305, 0.31], "tal": [0.20, 0.36, 0.25]}
    use_fake_trainer(monkeypatch, tmp_path, maps_table(maps))
    args = auto_args(tmp_path, "yolov5,gfl,tal")
    args.max_seeds = 3
    assert compare_cli.main(args) == 0
    md = (tmp_path / "runs/exp/results.md").read_text()
    assert md.startswith("Best on raccoon (3 seeds each): gfl; tal stopped as hopeless (not resolved below gfl, "
                         "but a gap this size would rarely be resolved by the cap).")
    assert re.search(r"The cap of 3 seeds per strategy was reached with the best not resolved: about \d+ seeds per "
                     r"strategy in all \(\d+ more\) would settle tal against gfl\. To go on: `.* --max-seeds \d+`; "
                     r"a higher cap can also reopen strategies stopped as hopeless", md)
