"""EarlyStopping: improvement, patience, min_delta, reset and an exact state round trip."""

from __future__ import annotations

import math

import pytest

from resnet_cli.engine.early_stopping import EarlyStopping


def test_stops_after_patience_epochs_without_improvement():
    stopper = EarlyStopping(patience=2)
    assert [stopper.step(v) for v in (1.0, 0.8, 0.9, 0.85)] == [True, True, False, False]
    assert stopper.stopped and stopper.best == 0.8 and stopper.bad_epochs == 2


def test_an_improvement_resets_the_count():
    stopper = EarlyStopping(patience=2)
    for value in (1.0, 1.1, 0.9, 1.2):
        stopper.step(value)
    assert not stopper.stopped and stopper.bad_epochs == 1


def test_min_delta_ignores_tiny_gains():
    stopper = EarlyStopping(patience=1, min_delta=0.1)
    assert stopper.step(1.0)
    assert not stopper.step(0.95)  # better, but by less than min_delta
    assert stopper.stopped and stopper.best == 1.0


def test_reset_extends_a_stopped_run_keeping_the_best():
    stopper = EarlyStopping(patience=1)
    stopper.step(1.0)
    stopper.step(2.0)
    stopper.reset()
    assert not stopper.stopped and stopper.bad_epochs == 0 and stopper.best == 1.0
    assert not stopper.step(1.5) and stopper.stopped


def test_state_dict_round_trip_continues_identically():
    values = [1.0, 0.7, 0.9, 0.8, 0.75, 0.74]
    whole = EarlyStopping(patience=3, min_delta=0.01)
    split = EarlyStopping(patience=3, min_delta=0.01)
    for v in values[:3]:
        whole.step(v)
        split.step(v)
    restored = EarlyStopping(patience=3, min_delta=0.01)
    restored.load_state_dict(split.state_dict())
    assert [whole.step(v) for v in values[3:]] == [restored.step(v) for v in values[3:]]
    assert whole.state_dict() == restored.state_dict()
    fresh = EarlyStopping(patience=3).state_dict()
    assert fresh["best"] == math.inf and fresh["bad_epochs"] == 0 and not fresh["stopped"]


@pytest.mark.parametrize(("patience", "min_delta"), [(0, 0.0), (1, -0.1), (1, float("nan"))])
def test_impossible_settings_are_refused(patience, min_delta):
    with pytest.raises(ValueError):
        EarlyStopping(patience, min_delta)
