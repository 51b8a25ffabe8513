"""Hostile input, second round (issue 27, items 7-12, 14-16): alias bombs, oversized checkpoints,
models and images, ota on crowded images, user errors that ended in a traceback, NaN rows in the
converters, BOMs and tampered label caches, ONNX files with foreign metadata. Each case ends with one
line naming the flag, key or file, or with a bounded, correct result."""
import logging
import time
from pathlib import Path

import pytest

import train as train_cli
from utils.data.config import DatasetError, check_dataset
from utils.engine.hyp import HypError, load_hyp
from utils.io.yaml_file import MAX_ALIAS_VALUES, YamlFileError, load_yaml

ROOT = Path(__file__).resolve().parents[1]

# nine aliases of nine aliases ... : 9**9 strings once expanded, 1 KB as text
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))


def run_cli(fn, argv, capsys, caplog):
    """Exit status and everything a CLI entry point printed or logged; never a traceback."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        try:
            code = fn(argv)
        except SystemExit as e:  # argparse
            code = e.code
    out = capsys.readouterr()
    text = out.out + out.err + caplog.text
    assert "Traceback" not in text
    return code, text


def train_main(argv):
    return train_cli.main(train_cli.parse_opt(argv))


def train_args(data, project, *extra):
    return ["--data", str(data), "--epochs", "1", "--img", "64", "--batch-size", "4", "--workers", "0",
            "--project", str(project), "--quiet", "--noplots", *extra]


# ---- 9: YAML alias bombs -----------------------------------------------------------------------------

def test_alias_bomb_in_dataset_names_is_refused_quickly(tmp_path):
    data = tmp_path / "d.yaml"
    data.write_text(LAUGHS + "path: .\ntrain: .\nval: .\nnames: *i\n")
    t = time.perf_counter()
    with pytest.raises(DatasetError, match=f"{data}: aliases repeat more than {MAX_ALIAS_VALUES} values"):
        check_dataset(data)
    assert time.perf_counter() - t < 2


def test_alias_bomb_in_a_hyp_value_is_one_line(tiny_data, tmp_path, capsys, caplog):
    hyp = tmp_path / "hyp.bomb.yaml"
    hyp.write_text("bomb: " + LAUGHS.replace("\n", "\n  ").replace("a: &a", "\n  a: &a", 1) + "lr0: 0.01\n")
    with pytest.raises(HypError, match="aliases repeat more than"):
        load_hyp(hyp)
    code, text = run_cli(train_main, train_args(tiny_data, tmp_path / "runs", "--hyp", str(hyp)), capsys, caplog)
    assert code == 1 and f"error: {hyp}: aliases repeat more than {MAX_ALIAS_VALUES} values" in text


def test_every_yaml_reader_uses_the_bounded_loader(tmp_path):
    bomb = tmp_path / "m.yaml"
    bomb.write_text(LAUGHS)
    from models.yolo import Model
    with pytest.raises(ValueError, match="aliases repeat more than"):
        Model(str(bomb))
    from utils.compare.runs import read_run
    run = tmp_path / "run"
    run.mkdir()
    (run / "opt.yaml").write_text(LAUGHS)
    (run / "summary.json").write_text("{}")
    with pytest.raises(ValueError, match="aliases repeat more than"):
        read_run(run)
    # a few anchors, a merge key and a self-reference
    ok = tmp_path / "ok.yaml"
    ok.write_text("base: &b {lr0: 0.01, momentum: 0.9}\nrun: {<<: *b, lr0: 0.02}\nlist: [*b, *b]\n")
    assert load_yaml(ok)["run"] == {"lr0": 0.02, "momentum": 0.9}
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [1, *a]\n")
    with pytest.raises(YamlFileError, match="refers to the value that contains it"):
        load_yaml(loop)
