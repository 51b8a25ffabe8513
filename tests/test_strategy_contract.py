"""The contract a strategy keeps so that adding it to ``LOSSES`` is the only edit: its own hyp file, key
ranges beside its Hyp, a row kind, and every CLI default that means "all strategies" read from LOSSES
(test lists elsewhere are ``list(LOSSES)`` / ``sorted(LOSSES)`` or derived from it at import)."""
import numpy as np
import pytest

from utils.assign.result import ROW_KINDS
from utils.compare.driver import hyp_for
from utils.hyp import load_hyp
from utils.loss import LOSSES


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_strategy_declares_what_the_tools_need(name):
    cls = LOSSES[name]
    assert cls.hyp_file and load_hyp(hyp_for(name))["loss"] == name  # compare / show_assign train with it
    assert set(cls.Hyp.ranges()) <= cls.Hyp.keys()  # ranges sit beside the keys they bound
    assert cls.row_kind in ROW_KINDS and cls.names and cls.head in ("anchor", "dfl")


def test_cli_defaults_mean_every_registered_strategy():
    import compare as compare_cli
    from tools import show_assign

    assert compare_cli.parse_opt([]).losses == list(LOSSES)
    assert show_assign.parse_opt([]).losses == ""  # empty = every strategy of LOSSES (read in main)


def test_loss_record_has_every_strategy():
    from loss_record import VARIANTS

    assert {name: {"loss": name} for name in LOSSES}.items() <= VARIANTS.items()


def test_panels_name_what_their_rows_are(tmp_path):
    from utils.eval.assign_view import draw_panels

    levels = [(np.array([[8.0, 8.0]]), np.array([0]), np.array([0.5]))]
    file = draw_panels(np.zeros((32, 32, 3)), np.array([[0.0, 0.0, 16.0, 16.0]]), {"dw": levels, "tal": levels},
                       tmp_path / "p.png", {"dw": "weighted candidates"})
    assert file.is_file()


@pytest.mark.parametrize("name", list(__import__("utils.assign", fromlist=["ASSIGNERS"]).ASSIGNERS))
def test_each_rule_declares_its_heads_keys_and_rows(name):
    import dataclasses

    from utils.assign import ASSIGNERS
    from utils.assign.rule import HEADS

    rule = ASSIGNERS[name]
    assert rule.name == name and set(rule.heads) <= set(HEADS) and rule.row_kind in ROW_KINDS
    assert set(rule.Hyp.ranges()) <= rule.Hyp.keys() and rule.Hyp.__dataclass_params__.frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(rule.Hyp(), next(iter(rule.Hyp.keys())), 0)
    assert any(name in cls.assigners() for cls in LOSSES.values())  # some loss trains on it


def test_each_loss_default_rule_is_one_it_takes():
    for name, cls in LOSSES.items():
        assert cls.default_assigner() in cls.assigners(), name
