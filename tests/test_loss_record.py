"""Every strategy reproduces its recorded loss, items and head-output gradient norms (tests/loss_record.py)."""
import json
import math

import pytest

from loss_record import CASES, RECORD, VARIANTS, measure

REL = 1e-5
RECORDED = json.loads(RECORD.read_text())


def close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=REL, abs_tol=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_strategy_reproduces_its_record(case, variant):
    want = RECORDED[case][variant]
    got = measure(CASES[case], VARIANTS[variant])
    assert close(got["loss"], want["loss"]), (got["loss"], want["loss"])
    assert len(got["items"]) == len(want["items"])
    assert all(close(a, b) for a, b in zip(got["items"], want["items"])), (got["items"], want["items"])
    assert all(close(a, b) for a, b in zip(got["grad_norm"], want["grad_norm"])), (got["grad_norm"], want["grad_norm"])


def test_record_covers_every_strategy_and_has_signal():
    """Every registered strategy has an entry, and the cases with objects give a nonzero loss."""
    from utils.loss import LOSSES

    assert {v["loss"] for v in VARIANTS.values()} == set(LOSSES)
    for variant in VARIANTS:
        assert RECORDED["nc80"][variant]["loss"] > 0 and RECORDED["nc3"][variant]["loss"] > 0
        assert all(g > 0 for g in RECORDED["nc80"][variant]["grad_norm"])
