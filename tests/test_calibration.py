"""Calibration metrics on hand-made confidence/correctness arrays with known values."""

import numpy as np
import pytest

from trait_rl.eval import calibration


def test_ece_two_buckets_known_value():
    # Bucket [0.2, 0.3): confidences 0.2, 0.2, accuracy 0.5 -> gap 0.3, weight 2/5.
    # Bucket [0.9, 1.0]: confidences 0.9, 0.9, 1.0 (mean 0.9333), accuracy 2/3 -> gap 0.2667,
    # weight 3/5. ECE = 0.4 * 0.3 + 0.6 * 0.26667 = 0.28.
    confidence = [0.2, 0.2, 0.9, 0.9, 1.0]
    correct = [1, 0, 1, 1, 0]
    ece = calibration.expected_calibration_error(confidence, correct, num_bins=10)
    assert ece == pytest.approx(0.28)


def test_ece_perfect_calibration_is_zero():
    confidence = [0.5, 0.5, 1.0, 1.0]
    correct = [1, 0, 1, 1]
    assert calibration.expected_calibration_error(confidence, correct, 10) == pytest.approx(0.0)


def test_ece_one_bucket_is_mean_gap():
    confidence = [0.9, 0.7, 0.8]
    correct = [0, 0, 1]
    # One bucket: |mean(correct) - mean(confidence)| = |1/3 - 0.8|.
    assert calibration.expected_calibration_error(confidence, correct, 1) == pytest.approx(
        0.8 - 1 / 3
    )


def test_brier_known_value():
    confidence = [0.9, 0.3, 0.5]
    correct = [1, 1, 0]
    # (0.1^2 + 0.7^2 + 0.5^2) / 3 = 0.75 / 3
    assert calibration.brier_score(confidence, correct) == pytest.approx(0.25)


def test_reliability_bins_counts_and_accuracy():
    bins = calibration.reliability_bins([0.05, 0.55, 0.6, 1.0], [0, 1, 0, 1], num_bins=2)
    assert len(bins) == 2
    assert bins[0].count == 1
    assert bins[0].accuracy == pytest.approx(0.0)
    assert bins[1].count == 3
    assert bins[1].mean_confidence == pytest.approx((0.55 + 0.6 + 1.0) / 3)
    assert bins[1].accuracy == pytest.approx(2 / 3)


def test_reliability_empty_bucket_has_no_values():
    bins = calibration.reliability_bins([0.95], [1], num_bins=4)
    assert bins[0].count == 0
    assert bins[0].accuracy is None
    assert bins[0].mean_confidence is None
    assert bins[3].upper == pytest.approx(1.0)


def test_summary_states_bucket_count_and_empty_input():
    summary = calibration.calibration_summary(np.zeros(0), np.zeros(0), num_bins=7)
    assert summary["ece_bins"] == 7
    assert summary["num_answers"] == 0
    assert summary["ece"] is None
    assert summary["brier"] is None
    assert len(summary["reliability"]) == 7


@pytest.mark.parametrize(
    ("confidence", "correct", "message"),
    [
        ([30.0], [1], r"\[0, 1\]"),
        ([0.3, 0.4], [1], "same length"),
        ([float("nan")], [1], "NaN"),
        ([0.3], [2], "0/1"),
    ],
)
def test_invalid_inputs_rejected(confidence, correct, message):
    with pytest.raises(ValueError, match=message):
        calibration.brier_score(confidence, correct)


def test_zero_bins_rejected():
    with pytest.raises(ValueError, match="num_bins"):
        calibration.expected_calibration_error([0.5], [1], 0)
