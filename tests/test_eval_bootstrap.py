"""Bootstrap intervals: coverage on synthetic data, pairing, determinism."""

import numpy as np
import pytest

from trait_rl.eval import bootstrap


def test_mean_interval_covers_true_rate():
    true_rate = 0.3
    covered = 0
    for trial in range(100):
        values = np.random.default_rng(1000 + trial).random(200) < true_rate
        interval = bootstrap.bootstrap_mean(values, num_resamples=300, seed=trial)
        covered += interval.low <= true_rate <= interval.high
    assert covered >= 90


def test_relative_improvement_interval_covers_truth():
    treatment_rate, control_rate = 0.6, 0.4
    truth = treatment_rate / control_rate - 1.0
    covered = 0
    for trial in range(100):
        rng = np.random.default_rng(5000 + trial)
        treatment = rng.random(300) < treatment_rate
        control = rng.random(300) < control_rate
        interval = bootstrap.bootstrap_relative_improvement(
            treatment, control, num_resamples=300, seed=trial, paired=False
        )
        covered += interval.low <= truth <= interval.high
    assert covered >= 90


def test_paired_interval_narrower_on_correlated_arms():
    rng = np.random.default_rng(0)
    difficulty = rng.random(400)
    control = (difficulty < 0.4).astype(float)
    treatment = (difficulty < 0.5).astype(float)  # Safe on every prompt the control got right.
    paired = bootstrap.bootstrap_relative_improvement(treatment, control, 500, 0, paired=True)
    unpaired = bootstrap.bootstrap_relative_improvement(treatment, control, 500, 0, paired=False)
    assert paired.estimate == pytest.approx(unpaired.estimate)
    assert paired.high - paired.low < unpaired.high - unpaired.low


def test_same_seed_same_interval():
    values = [0, 1, 1, 0, 1]
    first = bootstrap.bootstrap_mean(values, 200, seed=3)
    second = bootstrap.bootstrap_mean(values, 200, seed=3)
    assert first == second


def test_zero_control_rate_is_undefined():
    interval = bootstrap.bootstrap_relative_improvement([1, 1], [0, 0], 50, 0, paired=True)
    assert interval.estimate is None
    assert interval.low is None
    assert interval.undefined_resamples == 50


def test_compare_arms_pairs_only_matching_ids():
    treatment = {"a": 1.0, "b": 1.0, "c": 0.0}
    assert bootstrap.align_by_prompt(treatment, {"a": 0.0, "b": 1.0, "c": 0.0}) is not None
    assert bootstrap.align_by_prompt(treatment, {"a": 0.0, "d": 1.0, "c": 0.0}) is None
    interval = bootstrap.compare_arms(treatment, {"a": 0.0, "b": 1.0, "c": 1.0}, 100, 0)
    assert interval.estimate == pytest.approx(0.0)


def test_paired_length_mismatch_rejected():
    with pytest.raises(ValueError, match="paired"):
        bootstrap.bootstrap_relative_improvement([1, 0], [1], 10, 0, paired=True)


def test_excludes_reports_zero_outside_interval():
    interval = bootstrap.Interval(0.5, 0.2, 0.8, 0.95, 100)
    assert interval.excludes(0.0)
    assert not interval.excludes(0.5)
