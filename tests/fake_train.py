"""A stand-in for train.py in compare's tests: takes the command compare builds, sleeps a moment, and
leaves the files of a finished run (opt.yaml, results.csv, summary.json) with the mAP50-95 that
``$FAKE_MAPS`` (a JSON file: {"loss-sSEED": map}) gives the run; a run named in ``$FAKE_FAIL`` exits 1
without a summary, one named in ``$FAKE_FAIL_AFTER`` exits 2 after it (as a second train.py refused by
the run lock of a first that finished meanwhile). No torch: a run costs a Python start."""
import json
import os
import sys
import time
from pathlib import Path

import yaml


def flag_values(argv: list[str]) -> dict[str, str]:
    """``--flag value`` pairs of a command line; bare flags (``--quiet``) map to ''."""
    out = {}
    for i, a in enumerate(argv):
        if a.startswith("--"):
            nxt = argv[i + 1] if i + 1 < len(argv) else "--"
            out[a] = "" if nxt.startswith("--") else nxt
    return out


def main(argv: list[str]) -> int:
    flags = flag_values(argv)
    run = Path(flags["--project"]) / flags["--name"]
    run.mkdir(parents=True, exist_ok=True)
    loss = (yaml.safe_load(Path(flags["--hyp"]).read_text()) or {}).get("loss", "yolov5")
    seed = int(flags["--seed"])
    (run / "opt.yaml").write_text(yaml.safe_dump({"data": flags["--data"], "cfg": flags.get("--cfg"),
                                                  "imgsz": int(flags.get("--img", 64)), "epochs": 1}))
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0.05")))
    if run.name in os.environ.get("FAKE_FAIL", "").split(","):
        return 1
    value = json.loads(Path(os.environ["FAKE_MAPS"]).read_text())[run.name]
    (run / "results.csv").write_text(f"epoch,metrics/mAP_0.5:0.95\n0,{value}\n")
    (run / "summary.json").write_text(json.dumps({"loss": loss, "seed": seed, "epochs": 1, "map50": value + 0.3,
                                                  "map": value, "per_class": {"a": {"ap": value, "r": 0.5}}}))
    return 2 if run.name in os.environ.get("FAKE_FAIL_AFTER", "").split(",") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
