"""--seeds auto while its rounds train (issue 37) and the verdict a user acts on (issue 38), with
tests/fake_train.py in place of train.py: each run ends at once with a given mAP50-95."""
import csv
import io
import re

import pytest

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
    folder.mkdir()
    (folder / "data.yaml").write_text(f"path: {folder}\ntrain: images\nval: images\nnames: [a]\n")
    return folder / "data.yaml"


def auto_args(tmp_path, losses="yolov5,gfl", *extra):
    return compare_cli.parse_opt(["--data", str(dataset(tmp_path)) if not (tmp_path / "raccoon").exists()
                                  else str(tmp_path / "raccoon/data.yaml"), "--img", "64", "--epochs", "1",
                                  "--workers", "0", "--losses", losses, "--seeds", "auto", "--max-seeds", "5",
                                  "--noplots", "--project", str(tmp_path / "runs"), *extra])


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
        assert [r["verdict"] for r in rows][1] in ("look 1 of 2 (3 seeds) not complete", "look 2 of 2 (5 seeds) not complete")
    assert any(re.fullmatch(r"look 2 of 2 \(5 seeds\): \[#+\.*\] 7/10 runs, .* ETA \d+:\d\d:\d\d", m) for m in caplog.messages)
    final = (tmp_path / "runs/exp/results.md").read_text()
    assert final.startswith("Best on raccoon (5 seeds each): yolov5, resolved ahead of the other 1.")
    assert runs_column(final) == {"yolov5": "5/5", "gfl": "5/5"}
