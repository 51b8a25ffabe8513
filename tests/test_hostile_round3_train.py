"""Hostile input, third round (issue 36), the training side: train_defaults of the wrong shape, a key
given twice, an unknown optimizer; --resume with a changed setting (flag, opt.yaml, train_defaults)
honoured or refused, never ignored; a kill between last.pt and the epoch's results row; --img too large
for memory; a full disk while saving a checkpoint; warnings said once under torchrun."""
import hashlib
import logging
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import train as train_cli
from models.yolo import Model
from utils.engine import distributed, memory, resume, step, train_setup, trainer
from utils.engine.config import DEFAULTS, FIELDS
from utils.hyp import HypError, validate_hyp
from utils.io import checkpoint as ckpt_io
from utils.io.checkpoint import CheckpointError, save_checkpoint


def opts(data, project, *extra, epochs=2):
    return train_cli.parse_opt(["--data", str(data), "--epochs", str(epochs), "--img", "64", "--batch-size", "4",
                                "--workers", "0", "--project", str(project), "--quiet", "--noplots", *extra])


def data_with(tiny_data: Path, folder: Path, extra: str) -> Path:
    """A copy of the tiny dataset YAML (same images) with ``extra`` appended."""
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "data.yaml"
    file.write_text(tiny_data.read_text().replace("path: ", f"path: {tiny_data.parent}\n# was: ", 1) + extra)
    return file


def error_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# ---- train_defaults of the wrong shape, a key twice, an unknown optimizer -----------------------------

@pytest.mark.parametrize("block, expected", [
    ("train_defaults: 5\n", "'train_defaults' must be a mapping of ['batch_size', 'epochs', 'imgsz', 'optimizer', "
                            "'hyp'], got 5"),
    ("train_defaults: {hyp: abc}\n", "train_defaults key 'hyp' must be a mapping of hyp keys (lr0: 0.01, ...), "
                                     "got 'abc'"),
    ("train_defaults: {hyp: [1, 2]}\n", "train_defaults key 'hyp' must be a mapping of hyp keys (lr0: 0.01, ...), "
                                        "got [1, 2]"),
    ("train_defaults:\n  hyp:\n    lr0: 0.01\n    lr0: 0.02\n", "key 'lr0' is given twice (lines 8 and 9); keep one"),
    ("train_defaults: {optimizer: Lion}\n", "train_defaults key 'optimizer': unknown optimizer 'Lion'; choose from "
                                            "auto, SGD, Adam, AdamW"),
])
def test_bad_train_defaults_is_one_line_naming_the_file(tiny_data, tmp_path, caplog, block, expected):
    data = data_with(tiny_data, tmp_path / "d", block)
    with caplog.at_level(logging.INFO):
        code = train_cli.main(opts(data, tmp_path / "runs"))
    assert code == 1
    assert error_lines(caplog) == [f"error: {data}: {expected}"]
    assert not (tmp_path / "runs" / "exp").exists()  # the failed start left no folder


# ---- --resume with a changed setting ---------------------------------------------------------------

@pytest.fixture(scope="module")
def stopped_run(tiny_data, tmp_path_factory) -> Path:
    """A 2-epoch run (fp32, train_defaults with a hyp override) stopped after epoch 0: its folder."""
    root = tmp_path_factory.mktemp("stopped")
    data = data_with(tiny_data, root / "d", "train_defaults: {hyp: {lr0: 0.02}}\n")
    real = trainer.end_epoch

    def end_then_stop(run, epoch, mloss):
        real(run, epoch, mloss)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "end_epoch", end_then_stop)
        with pytest.raises(KeyboardInterrupt):
            trainer.train(opts(data, root / "runs", "--precision", "fp32"))
    return root


@pytest.fixture
def run_copy(stopped_run, tmp_path) -> tuple[Path, Path]:
    """(last.pt, dataset YAML) of a fresh copy of the stopped run (tests edit its files)."""
    shutil.copytree(stopped_run, tmp_path / "c")
    last = tmp_path / "c" / "runs" / "exp" / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    data = tmp_path / "c" / "d" / "data.yaml"
    ckpt["opt"]["data"] = str(data)  # the copy's own dataset YAML
    ckpt["opt"]["save_dir"] = str(last.parent.parent)
    save_checkpoint(ckpt, last)
    opt_yaml = last.parent.parent / "opt.yaml"
    opt_yaml.write_text(yaml.safe_dump({**yaml.safe_load(opt_yaml.read_text()), "data": str(data),
                                        "save_dir": str(last.parent.parent)}))
    return last, data


def set_up(last: Path, data: Path, *flags: str) -> train_setup.Run:
    run = train_setup.setup(train_cli.parse_opt(["--resume", str(last), "--data", str(data), *flags]))
    run.lock.release()
    return run


@pytest.mark.parametrize("before, flag, after", [("fp32", "bf16", "bf16"), ("bf16", "fp32", "fp32")])
def test_resume_honours_a_new_precision(run_copy, before, flag, after, caplog):
    last, data = run_copy
    ckpt = torch.load(last, weights_only=True)
    ckpt["opt"]["precision"] = before
    save_checkpoint(ckpt, last)
    opt_yaml = last.parent.parent / "opt.yaml"
    opt_yaml.write_text(yaml.safe_dump({**yaml.safe_load(opt_yaml.read_text()), "precision": before}))
    with caplog.at_level(logging.INFO):
        run = set_up(last, data, "--precision", flag)
    assert (run.opt.precision, run.precision.name, run.start_epoch) == (after, after, 1)
    assert f"--resume: --precision {flag} sets precision={flag} (the run had {before})" in caplog.text
    assert yaml.safe_load(opt_yaml.read_text())["precision"] == after


@pytest.mark.parametrize("flags, refused", [(["--batch-size", "8"], "--batch-size 8 asks for batch_size=8 but the "
                                             "run trained with 4"),
                                            (["--img", "128"], "--img 128 asks for imgsz=128 but the run trained "
                                             "with 64"),
                                            (["--cos-lr"], "--cos-lr asks for cos_lr=True but the run trained with "
                                             "False")])
def test_resume_refuses_a_flag_that_changes_what_is_trained(run_copy, flags, refused, caplog):
    last, data = run_copy
    with pytest.raises(CheckpointError) as e:
        set_up(last, data, *flags)
    assert str(e.value) == (f"--resume: {refused}; a run cannot change it mid-way: drop the change, or start a new "
                            f"run with --weights {last}")


def test_resume_takes_a_safe_opt_yaml_edit_and_refuses_an_unsafe_one(run_copy):
    last, data = run_copy
    opt_yaml = last.parent.parent / "opt.yaml"
    original = yaml.safe_load(opt_yaml.read_text())
    opt_yaml.write_text(yaml.safe_dump({**original, "patience": 7, "noval": True}))
    run = set_up(last, data)
    assert (run.opt.patience, run.opt.noval, run.opt.epochs) == (7, True, 2)
    opt_yaml.write_text(yaml.safe_dump({**original, "epochs": 5}))
    with pytest.raises(CheckpointError, match=r"^--resume: .*opt\.yaml \(key 'epochs'\) asks for epochs=5 but the "
                                              r"run trained with 2; a run cannot change it mid-way"):
        set_up(last, data)


def test_resume_refuses_an_edited_train_defaults_hyp(run_copy):
    last, data = run_copy
    run = set_up(last, data)
    assert run.hyp["lr0"] == 0.02  # the run's own override
    data.write_text(data.read_text().replace("lr0: 0.02", "lr0: 0.05"))
    with pytest.raises(CheckpointError) as e:
        set_up(last, data)
    assert str(e.value) == (f"--resume: {data} train_defaults key 'hyp.lr0' is now 0.05, the run trained with 0.02; "
                            f"a run cannot change its hyp mid-way: undo the edit, or start a new run with --weights "
                            f"{last}")


def test_resume_says_an_edit_the_run_never_took(run_copy, caplog):
    last, data = run_copy
    data.write_text(data.read_text().replace("train_defaults: {hyp: {lr0: 0.02}}",
                                             "train_defaults: {epochs: 9, hyp: {lr0: 0.02}}"))
    with caplog.at_level(logging.INFO):
        run = set_up(last, data)  # --epochs 2 came from the command line: the edit changes nothing
    assert run.opt.epochs == 2
    assert f"train_defaults key 'epochs' changed; this run took 2 from the command line" in caplog.text


def test_setup_leaves_the_namespace_alone_and_the_config_frozen(run_copy):
    last, data = run_copy
    opt = train_cli.parse_opt(["--resume", str(last), "--data", str(data)])
    before = dict(vars(opt))
    run = train_setup.setup(opt)
    run.lock.release()
    assert vars(opt) == before
    with pytest.raises(AttributeError):
        run.opt.epochs = 9


def test_config_defaults_are_train_py_defaults():
    parsed = vars(train_cli.parse_opt([]))
    assert {k: parsed[k] for k in FIELDS if k in parsed and k != "cfg"} == \
           {k: getattr(DEFAULTS, k) if k != "freeze" else list(DEFAULTS.freeze) for k in FIELDS if k in parsed and k != "cfg"}
    assert set(parsed) - set(FIELDS) == set()


# ---- a kill between last.pt and the epoch's results row -------------------------------------------

def test_kill_between_last_pt_and_row_resumes_with_every_row_and_the_best_over_all(tiny_data, tmp_path,
                                                                                 monkeypatch):
    fitness = {0: 0.2, 1: 0.6, 2: 0.4}  # mAP50-95 of each epoch's validation: epoch 1 is the best
    killed = []

    def validate(run, final):
        if run.saved_epoch == 1 and not killed:  # last.pt of epoch 1 is written, its row is not
            killed.append(1)
            raise KeyboardInterrupt
        value = fitness[run.saved_epoch]
        return [0.5, 0.5, value, value], [0.0] * len(run.compute_loss.names)

    monkeypatch.setattr(trainer, "validate_epoch", validate)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(opts(tiny_data, tmp_path, epochs=3))
    last = tmp_path / "exp" / "weights" / "last.pt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    trainer.train(opts(tiny_data, tmp_path, "--resume", str(last), epochs=3))
    rows = [[c.strip() for c in ln.split(",")] for ln in (tmp_path / "exp/results.csv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [0, 1, 2]
    header = [c.strip() for c in (tmp_path / "exp/results.csv").read_text().splitlines()[0].split(",")]
    assert [float(r[header.index("metrics/mAP_0.5:0.95")]) for r in rows] == [0.2, 0.6, 0.4]
    best = torch.load(tmp_path / "exp/weights/best.pt", weights_only=True)
    assert (best["epoch"], best["best_fitness"]) == (1, pytest.approx(0.6))


# ---- --img too large for memory ----------------------------------------------------------------------

def test_activation_estimate_scales_exactly_with_the_area():
    model = Model("models/yolov5n.yaml", nc=5)
    counted = [0]

    def count(m, i, o):
        counted[0] += o.numel() if isinstance(o, torch.Tensor) else 0

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (torch.nn.Conv2d,
                                                                                        torch.nn.BatchNorm2d))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 256, 256))
    for h in hooks:
        h.remove()
    assert memory.activation_elements(model, 256) == counted[0]
    assert memory.activation_elements(model, 8192) == counted[0] * 32 ** 2


def test_img_8192_is_refused_before_training_when_it_cannot_fit(tiny_data, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(memory, "available_bytes", lambda device: (8 * 2 ** 30, "available RAM"))
    model = Model("models/yolov5n.yaml", nc=5)
    need = (memory.activation_elements(model, 8192) * 4 + 3 * 8192 ** 2 * 4) * 4
    opt = train_cli.parse_opt(["--data", str(tiny_data), "--epochs", "1", "--img", "8192", "--batch-size", "4",
                               "--workers", "0", "--project", str(tmp_path), "--quiet", "--noplots",
                               "--precision", "fp32"])
    with caplog.at_level(logging.INFO):
        assert train_cli.main(opt) == 1
    assert error_lines(caplog) == [f"error: --img 8192 with a batch of 4: a training step needs at least "
                                   f"{need / 2 ** 30:.1f} GiB for activations alone, but only 8.0 GiB of available "
                                   "RAM is there; lower --img or --batch-size"]
    assert not (tmp_path / "exp").exists()


# ---- a full disk while saving a checkpoint -------------------------------------------------------------

def test_full_disk_while_saving_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "weights" / "last.pt"
    save_checkpoint({"epoch": 0, "w": torch.ones(3)}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    def full(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 512 vs 448")

    monkeypatch.setattr(ckpt_io.torch, "save", full)
    monkeypatch.setattr(ckpt_io.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 ** 9, 10 ** 9, 2 ** 20))
    with pytest.raises(CheckpointError) as e:
        save_checkpoint({"epoch": 1, "w": torch.zeros(3)}, path)
    assert str(e.value) == (f"cannot write checkpoint {path} (the disk is full: 1.0 MiB free); the previous file, "
                            "if any, is unchanged")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left


# ---- torchrun: warnings said once --------------------------------------------------------------------

def test_schedule_warnings_only_where_asked(caplog):
    model = Model("models/yolov5n.yaml", nc=5)
    hyp = {"nbs": 64, "weight_decay": 5e-4, "lr0": 0.01, "lrf": 0.01, "momentum": 0.9, "warmup_epochs": 3.0,
           "warmup_momentum": 0.8, "warmup_bias_lr": 0.1}
    said = {}
    for warn in (True, False):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            step.make_stepper(model, None, hyp, optimizer="SGD", batch_size=4, epochs=2, batches_per_epoch=2,
                              warn=warn)
        said[warn] = [r.getMessage() for r in caplog.records if "warm-up takes" in r.getMessage()]
    assert len(said[True]) == 1 and said[False] == []


def test_bare_resume_warning_only_on_rank_0(run_copy, tmp_path, caplog):
    last, _ = run_copy
    project = last.parent.parent.parent
    newer = project / "exp2"
    newer.mkdir()
    (newer / "opt.yaml").write_text("epochs: 2\n")  # a newer run killed before its first last.pt
    for rank, expected in ((0, 1), (1, 0)):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            resume.resume_options(train_cli.parse_opt(["--resume", "--project", str(project)]),
                                  distributed.DistInfo(rank=rank, local_rank=rank, world=2))
        assert sum("newer runs without one" in r.getMessage() for r in caplog.records) == expected


def test_resume_of_a_run_that_recorded_another_rules_keys(run_copy, caplog):
    """A run made before a rule's keys were tied to that rule recorded them all (the YOLOv5 loss with ATSS's
    atss_topk, never read by its own rule): it resumes without them, saying so, as it trained."""
    last, data = run_copy
    ckpt = torch.load(last, weights_only=True)
    ckpt["hyp"] = {**ckpt["hyp"], "atss_topk": 9, "tal_topk": 13}
    save_checkpoint(ckpt, last)
    with pytest.raises(HypError, match="key 'atss_topk' belongs to loss 'gfl'"):
        validate_hyp(ckpt["hyp"])  # as a hyp file it is refused
    with caplog.at_level(logging.WARNING):
        run = set_up(last, data)
    assert run.start_epoch == 1 and "atss_topk" not in run.hyp and "tal_topk" not in run.hyp
    assert (f"{last} (its hyp): left out atss_topk, tal_topk, keys of another matching rule that this run "
            f"(assigner 'yolov5') never read") in caplog.text
    assert {k: v for k, v in run.hyp.items()} == validate_hyp({k: v for k, v in ckpt["hyp"].items()
                                                               if k not in ("atss_topk", "tal_topk")})
