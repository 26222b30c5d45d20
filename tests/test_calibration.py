"""Calibration metrics against hand computations; temperature scaling recovers a known temperature."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from resnet_cli.engine.calibration import (
    brier_score,
    calibration_summary,
    ece_from_bins,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
)

# 4 images, 3 classes. Top-1 confidences 0.7, 0.7, 0.5, 0.9 (none on a bin edge of 15 bins of width 1/15).
PROBS = torch.tensor(
    [
        [0.7, 0.2, 0.1],  # true 0: correct, confidence 0.7 -> bin 10, (10/15, 11/15]
        [0.2, 0.7, 0.1],  # true 2: wrong, confidence 0.7 -> bin 10
        [0.1, 0.4, 0.5],  # true 2: correct, confidence 0.5 -> bin 7, (7/15, 8/15]
        [0.9, 0.05, 0.05],  # true 1: wrong, confidence 0.9 -> bin 13, (13/15, 14/15]
    ],
    dtype=torch.float64,
)
TARGETS = torch.tensor([0, 2, 2, 1])


def test_ece_by_hand():
    # bin 10: 2 images, accuracy 0.5, confidence 0.7 -> |0.5 - 0.7| * 2/4 = 0.100
    # bin 7:  1 image,  accuracy 1.0, confidence 0.5 -> |1.0 - 0.5| * 1/4 = 0.125
    # bin 13: 1 image,  accuracy 0.0, confidence 0.9 -> |0.0 - 0.9| * 1/4 = 0.225
    assert expected_calibration_error(PROBS, TARGETS) == pytest.approx(0.45, abs=1e-12)
    bins = reliability_bins(PROBS, TARGETS)
    assert len(bins) == 15
    full = {i: b for i, b in enumerate(bins) if b["count"]}
    assert sorted(full) == [7, 10, 13]
    assert full[10] == pytest.approx(
        {"lower": 10 / 15, "upper": 11 / 15, "count": 2, "confidence": 0.7, "accuracy": 0.5}
    )
    assert full[7]["accuracy"] == 1.0 and full[13]["accuracy"] == 0.0
    assert all(b["confidence"] is None and b["accuracy"] is None for b in bins if not b["count"])
    assert ece_from_bins(bins) == expected_calibration_error(PROBS, TARGETS)  # one binning for both


def test_nll_by_hand():
    # -(ln 0.7 + ln 0.1 + ln 0.5 + ln 0.05) / 4 = -(-0.356675 - 2.302585 - 0.693147 - 2.995732) / 4 = 1.587035
    logits = PROBS.log() + 3.0  # any shift per image gives the same softmax
    assert negative_log_likelihood(logits, TARGETS) == pytest.approx(1.5870348727616785, abs=1e-12)
    assert negative_log_likelihood(logits.float(), TARGETS) == pytest.approx(1.5870348727616785, abs=1e-6)


def test_brier_by_hand():
    # image 1: (0.7-1)^2 + 0.2^2 + 0.1^2         = 0.09 + 0.04 + 0.01     = 0.140
    # image 2: 0.2^2 + 0.7^2 + (0.1-1)^2         = 0.04 + 0.49 + 0.81     = 1.340
    # image 3: 0.1^2 + 0.4^2 + (0.5-1)^2         = 0.01 + 0.16 + 0.25     = 0.420
    # image 4: 0.9^2 + (0.05-1)^2 + 0.05^2       = 0.81 + 0.9025 + 0.0025 = 1.715
    # mean: 3.615 / 4 = 0.90375
    assert brier_score(PROBS, TARGETS) == pytest.approx(0.90375, abs=1e-12)
    perfect = torch.eye(3, dtype=torch.float64)
    assert brier_score(perfect, torch.tensor([0, 1, 2])) == 0.0
    assert brier_score(perfect, torch.tensor([1, 2, 0])) == pytest.approx(2.0)  # the worst possible


def test_a_perfectly_calibrated_toy_case_has_zero_ece():
    # 10 images at confidence 0.8 of which 8 are right; 20 at confidence 0.55 of which 11 are right.
    probs = torch.tensor([[0.8, 0.2]] * 10 + [[0.55, 0.45]] * 20, dtype=torch.float64)
    targets = torch.tensor([0] * 8 + [1] * 2 + [0] * 11 + [1] * 9)
    assert expected_calibration_error(probs, targets) == pytest.approx(0.0, abs=1e-12)
    # Miscalibrated the same way, the ECE is what the bins say: all right at 0.8 -> 0.2 * 10/30 + 0.
    wrong = torch.tensor([0] * 10 + [0] * 11 + [1] * 9)
    assert expected_calibration_error(probs, wrong) == pytest.approx(0.2 / 3, abs=1e-12)


def test_bins_cover_zero_to_one_and_count_every_image():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(257, 7, generator=generator) * 3
    targets = torch.randint(0, 7, (257,), generator=generator)
    probs = logits.softmax(dim=1)
    bins = reliability_bins(probs, targets)
    assert sum(b["count"] for b in bins) == 257
    assert bins[0]["lower"] == 0.0 and bins[-1]["upper"] == 1.0
    assert all(a["upper"] == b["lower"] for a, b in itertools.pairwise(bins))
    assert all(b["lower"] < b["confidence"] <= b["upper"] for b in bins if b["count"])
    certain = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # confidence exactly 1 belongs to the last bin, (14/15, 1]
    assert [b["count"] for b in reliability_bins(certain, torch.tensor([0, 0]))][-1] == 2
    assert len(reliability_bins(probs, targets, bins=10)) == 10


def test_fit_temperature_recovers_a_known_temperature():
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 5, generator=generator) * 2
    # Labels drawn from the true probabilities: the true logits are calibrated, three times them are overconfident.
    targets = torch.multinomial(true_logits.softmax(dim=1), 1, generator=generator).squeeze(1)
    logits = true_logits * 3
    t = fit_temperature(logits, targets)
    assert t == pytest.approx(3.0, abs=0.15)
    assert fit_temperature(logits, targets) == t  # deterministic
    before, after = negative_log_likelihood(logits, targets), negative_log_likelihood(logits / t, targets)
    assert after < before - 0.3
    assert after <= negative_log_likelihood(logits / 3.0, targets) + 1e-9  # the fitted T is the NLL minimum
    assert expected_calibration_error((logits / t).softmax(dim=1), targets) < 0.3 * expected_calibration_error(
        logits.softmax(dim=1), targets
    )
    with torch.inference_mode():  # works on tensors made the way predict_batches makes them
        assert fit_temperature(logits.clone(), targets) == pytest.approx(t, rel=1e-9)
    underconfident = fit_temperature(true_logits / 2, targets)
    assert underconfident == pytest.approx(0.5, abs=0.05)


def test_summary_and_degenerate_inputs():
    summary = calibration_summary(PROBS.log(), TARGETS)
    assert set(summary) == {"nll", "ece", "brier", "top1", "reliability"}
    assert summary["top1"] == 0.5
    assert summary["ece"] == pytest.approx(0.45) and summary["brier"] == pytest.approx(0.90375)
    # Perfectly separated: the NLL keeps falling as T shrinks; the fit stays finite and positive.
    t = fit_temperature(torch.tensor([[5.0, 0.0], [0.0, 5.0]]), torch.tensor([0, 1]))
    assert 0 < t < 1 and math.isfinite(t)


@pytest.mark.parametrize(
    "call",
    [
        lambda: expected_calibration_error(torch.empty(0, 3), torch.empty(0, dtype=torch.long)),
        lambda: reliability_bins(torch.empty(0, 3), torch.empty(0, dtype=torch.long)),
        lambda: negative_log_likelihood(torch.empty(0, 3), torch.empty(0, dtype=torch.long)),
        lambda: brier_score(torch.empty(0, 3), torch.empty(0, dtype=torch.long)),
        lambda: fit_temperature(torch.empty(0, 3), torch.empty(0, dtype=torch.long)),
        lambda: brier_score(PROBS, TARGETS[:3]),
        lambda: reliability_bins(PROBS, TARGETS, bins=0),
    ],
)
def test_empty_or_mismatched_input_is_a_value_error(call):
    with pytest.raises(ValueError):
        call()
