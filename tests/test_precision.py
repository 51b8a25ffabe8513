"""--precision (issue 29): CPU bf16 detected from the CPU's flags, what auto picks for training and
inference, the warning when bf16 is forced where it is not native, the start-of-training line, the
decode in float32 under autocast, val.py / detect.py / compare.py with the flag, and --report refusing
runs of different precision."""
import json
import logging
import shlex

import pytest
import torch

import compare as compare_cli
import detect
import val
from models.geometry import head_conv
from models.yolo import Model
from tests.test_compare import args, fake_run
from utils.core import precision as prec
from utils.core.precision import cpu_bf16_feature, resolve_precision
from utils.io.checkpoint import make_checkpoint, save_checkpoint

CPU = torch.device("cpu")


@pytest.mark.parametrize("flags, found", [("fpu sse avx512f avx512_bf16 amx_tile", "avx512_bf16"),
                                          ("fpu amx_bf16 amx_tile avx512_bf16", "amx_bf16"),
                                          ("fpu sse avx2 avx512f", None)])
def test_cpu_feature_from_the_flags_line(flags, found, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu_bf16_feature(info) == found


def test_without_proc_cpuinfo_torch_answers(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert cpu_bf16_feature(tmp_path / "missing") == "avx512_bf16"


@pytest.mark.parametrize("requested, inference, feature, name, reason", [
    ("auto", False, "avx512_bf16", "bf16", "avx512_bf16"),  # CPU_BF16_BY_DEFAULT: measured equal
    ("auto", False, None, "fp32", "no bf16 on this CPU"),
    ("auto", True, "amx_bf16", "bf16", "amx_bf16"),
    ("auto", True, None, "fp32", "no bf16 on this CPU"),
    ("bf16", False, "avx512_bf16", "bf16", "--precision bf16, avx512_bf16"),
    ("fp32", True, "avx512_bf16", "fp32", "--precision fp32"),
])
def test_what_auto_and_the_flags_pick(requested, inference, feature, name, reason):
    p = resolve_precision(requested, CPU, inference=inference, cpu_feature=feature)
    assert p.name == name and p.reason.startswith(reason) and not p.grad_scaler
    assert p.channels_last == prec.CPU_CHANNELS_LAST  # the layout is the CPU's, whatever the precision


def test_fp32_on_the_cpu_is_channels_last_and_says_so_but_the_bare_stepper_is_not(monkeypatch):
    from tests.test_amp import tiny_cfg
    from utils.hyp import TRAINER_DEFAULTS, load_hyp
    from utils.engine.step import make_stepper
    from utils.loss import build_loss

    monkeypatch.setattr(prec, "CPU_CHANNELS_LAST", True)
    p = resolve_precision("fp32", CPU, cpu_feature=None)
    assert p.describe() == "AMP: off, fp32, channels_last on CPU (--precision fp32)"
    assert p.batch(torch.rand(2, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)
    # the step the official-trace parity test builds (no precision) stays the official plain layout
    model = Model(tiny_cfg(), nc=3)
    hyp = {**TRAINER_DEFAULTS, **load_hyp("hyp/hyp.scratch.yaml")}
    stepper = make_stepper(model, build_loss(model, hyp), hyp, optimizer="SGD", batch_size=2, epochs=1,
                           batches_per_epoch=1)
    assert stepper.precision.name == "fp32" and not stepper.precision.channels_last


def test_the_default_follows_the_one_constant(monkeypatch):
    monkeypatch.setattr(prec, "CPU_CHANNELS_LAST", True)
    monkeypatch.setattr(prec, "CPU_BF16_BY_DEFAULT", True)
    p = resolve_precision("auto", CPU, cpu_feature="avx512_bf16")
    assert p.describe() == "AMP: bf16 autocast, channels_last on CPU (avx512_bf16)"
    assert resolve_precision("auto", CPU, cpu_feature=None).name == "fp32"
    monkeypatch.setattr(prec, "CPU_BF16_BY_DEFAULT", False)  # the study's gate failed: fp32, saying why
    p = resolve_precision("auto", CPU, cpu_feature="avx512_bf16")
    assert p.name == "fp32" and p.reason.startswith("avx512_bf16 present; bf16 training stays off")
    assert resolve_precision("auto", CPU, inference=True, cpu_feature="avx512_bf16").name == "bf16"


def test_forced_bf16_without_the_feature_warns_and_runs(caplog):
    with caplog.at_level(logging.WARNING):
        p = resolve_precision("bf16", CPU, cpu_feature=None)
    assert "--precision bf16 on a CPU without amx_bf16 or avx512_bf16" in caplog.text and "slower" in caplog.text
    with p.autocast():
        y = torch.nn.Conv2d(3, 4, 3)(torch.rand(1, 3, 8, 8))
    assert y.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown precision 'fp8'; choose from auto, fp32, bf16"):
        resolve_precision("fp8", CPU)


def test_head_convs_run_in_float32_under_bf16_autocast_only():
    torch.manual_seed(0)
    conv, x = torch.nn.Conv2d(16, 24, 1), torch.randn(2, 16, 5, 7)
    assert torch.equal(head_conv(conv, x), conv(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = torch.nn.Conv2d(3, 16, 1)(torch.randn(2, 3, 5, 7))  # a bf16 feature map, as the neck gives
        out = head_conv(conv, low)
        plain = conv(low)
    assert low.dtype == plain.dtype == torch.bfloat16
    assert out.dtype == torch.float32 and torch.equal(out, conv(low.float()))


@pytest.mark.parametrize("head", ["anchor", "dfl"])
def test_training_outputs_are_float32_under_bf16_autocast(head):
    model = Model("models/yolov5n.yaml", nc=3, head=head).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        raw = model(torch.rand(2, 3, 64, 64))
    assert all(r.dtype == torch.float32 for r in raw)


@pytest.mark.parametrize("head", ["anchor", "dfl"])
def test_eval_decode_runs_in_float32_under_autocast(head):
    torch.manual_seed(0)
    model = Model("models/yolov5n.yaml", nc=3, head=head).eval()
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        ref, _ = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, raw = model(x)
    assert low.dtype == torch.float32 and all(r.dtype == torch.float32 for r in raw)
    # the boxes move with the bf16 features only, not by the 2-4 px of a bf16 decode at 160 px
    assert (low[..., :4] - ref[..., :4]).abs().median() < 0.5


def test_training_logs_its_precision_and_records_it(tiny_data, tmp_path, caplog):
    from tests.test_hostile_train import opts
    from utils.engine import trainer

    with caplog.at_level(logging.INFO):
        trainer.train(opts(tiny_data, tmp_path, "--precision", "bf16", epochs=1))
    assert "AMP: bf16 autocast" in caplog.text
    summary = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert summary["precision"] == "bf16"
    # the finished best.pt is stripped as YOLOv5 does (fp16 EMA weights as the model, no EMA copy):
    # what bf16 training must never leave in it is a bf16 or channels_last tensor
    ckpt = torch.load(tmp_path / "exp" / "weights" / "best.pt", weights_only=True)
    assert ckpt["model"] and ckpt.get("ema") is None
    assert all(v.dtype in (torch.float16, torch.int64) and v.is_contiguous() for v in ckpt["model"].values())


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """An untrained 5-class yolov5n checkpoint (the tiny dataset's classes)."""
    torch.manual_seed(0)
    model = Model("models/yolov5n.yaml", nc=5)
    model.names = [str(i) for i in range(5)]
    path = tmp_path_factory.mktemp("w") / "w.pt"
    save_checkpoint(make_checkpoint(model), path)
    return path


@pytest.mark.parametrize("flag", ["bf16", "fp32"])
def test_val_and_detect_take_the_flag(flag, random_weights, tiny_data, tmp_path, caplog, capsys):
    with caplog.at_level(logging.INFO):
        val.run(val.parse_opt(["--weights", str(random_weights), "--data", str(tiny_data), "--img", "64",
                               "--workers", "0", "--precision", flag, "--project", str(tmp_path), "--quiet"]))
    assert f"AMP: {'bf16 autocast' if flag == 'bf16' else 'off, fp32'}" in caplog.text
    images = tiny_data.parent / "images" / "val"
    detect.main(detect.parse_opt(["--weights", str(random_weights), "--source", str(images), "--img", "64",
                                  "--precision", flag, "--project", str(tmp_path / "d"), "--nosave"]))
    assert "AMP: " in capsys.readouterr().out


def test_compare_passes_the_precision_to_every_run(tiny_data, tmp_path, capsys):
    assert compare_cli.main(args(tiny_data, tmp_path, "yolov5,ssd", "0,1", "--plan", "--precision", "bf16")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert all(dict(zip(c[2::2], c[3::2]))["--precision"] == "bf16" for c in map(shlex.split, lines))


def test_report_refuses_to_mix_precisions(tmp_path, caplog):
    ap, recall = {"RBC": 0.4}, {"RBC": 0.8}
    for seed, where, precision in ((0, "a", "fp32"), (1, "a", "fp32"), (2, "b", "bf16")):
        folder = fake_run(tmp_path / where / f"yolov5-s{seed}", "yolov5", seed, 0.4, ap, recall)
        summary = json.loads((folder / "summary.json").read_text())
        (folder / "summary.json").write_text(json.dumps({**summary, "precision": precision}))

    def report(*dirs):
        return compare_cli.main(compare_cli.parse_opt(["--report", *map(str, dirs), "--losses", "yolov5",
                                                       "--project", str(tmp_path / "out")]))

    assert report(tmp_path / "a", tmp_path / "b") == 1
    assert "runs differ in precision: fp32 in" in caplog.text and "bf16 in" in caplog.text
    assert report(tmp_path / "a") == 0
    header, *rows = next((tmp_path / "out").rglob("runs.csv")).read_text().splitlines()
    col = header.split(",").index("precision")
    assert [r.split(",")[col] for r in rows] == ["fp32", "fp32"]


def test_equivalence_script_reads_two_folders(tmp_path, capsys, monkeypatch):
    from benchmarks import bf16_equivalence

    maps = {"fp32": [0.43, 0.44, 0.42, 0.45, 0.44], "bf16": [0.44, 0.43, 0.43, 0.44, 0.45]}
    for precision, values in maps.items():
        for seed, m in enumerate(values):
            folder = fake_run(tmp_path / precision / f"yolov5-s{seed}", "yolov5", seed, m, {"RBC": m}, {"RBC": 0.8})
            summary = json.loads((folder / "summary.json").read_text())
            (folder / "summary.json").write_text(json.dumps({**summary, "precision": precision}))
    monkeypatch.setattr("sys.argv", ["bf16_equivalence.py", str(tmp_path / "fp32"), str(tmp_path / "bf16")])
    bf16_equivalence.main()
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| yolov5"))
    assert "| 5 / 5 |" in row and "+0.002 [" in row and row.endswith("| equivalent |")
    monkeypatch.setattr("sys.argv", ["bf16_equivalence.py", str(tmp_path / "bf16"), str(tmp_path / "fp32")])
    with pytest.raises(SystemExit, match="holds runs of precision"):
        bf16_equivalence.main()
