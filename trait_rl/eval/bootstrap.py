"""Percentile bootstrap 95% intervals for rates and for the relative improvement between arms.

The resampling unit is a prompt (one 0/1 outcome per prompt) or a seed (one rate per run). Every
function takes a seed, so the same inputs always give the same interval.
"""

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile bootstrap interval.

    `undefined_resamples` counts resamples whose statistic was undefined (a control rate of 0 in
    a ratio) and were left out of the percentiles.
    """

    estimate: float | None
    low: float | None
    high: float | None
    level: float
    num_resamples: int
    undefined_resamples: int = 0

    def excludes(self, value: float) -> bool:
        """Return whether `value` lies outside the interval; False when it is undefined."""
        if self.low is None or self.high is None:
            return False
        return value < self.low or value > self.high

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _as_values(values, name: str) -> np.ndarray:
    values_N = np.asarray(values, dtype=np.float64)
    if values_N.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array; got shape {values_N.shape}")
    if not np.all(np.isfinite(values_N)):
        raise ValueError(f"{name} contains NaN or Inf")
    return values_N


def _check_settings(num_resamples: int, level: float) -> None:
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1; got {num_resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1); got {level}")


def _percentiles(stats_R: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(stats_R, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_mean(values, num_resamples: int, seed: int, level: float = 0.95) -> Interval:
    """Bootstrap the mean of per-prompt (or per-seed) values by resampling with replacement."""
    _check_settings(num_resamples, level)
    values_N = _as_values(values, "values")
    if values_N.size == 0:
        return Interval(None, None, None, level, num_resamples)
    rng = np.random.default_rng(seed)
    index_RxN = rng.integers(0, values_N.size, size=(num_resamples, values_N.size))
    means_R = values_N[index_RxN].mean(axis=1)
    low, high = _percentiles(means_R, level)
    return Interval(float(values_N.mean()), low, high, level, num_resamples)


def relative_improvement(treatment_rate: float, control_rate: float) -> float | None:
    """Return treatment_rate / control_rate - 1, or None when the control rate is 0."""
    if control_rate == 0.0:
        return None
    return treatment_rate / control_rate - 1.0


def bootstrap_relative_improvement(
    treatment,
    control,
    num_resamples: int,
    seed: int,
    paired: bool,
    level: float = 0.95,
) -> Interval:
    """Bootstrap mean(treatment) / mean(control) - 1.

    Paired: both arrays hold one value per shared unit (same prompts or same seeds, in the same
    order), and each resample draws the same units for both arms, which removes the prompt
    difficulty from the variance. Unpaired: each arm is resampled on its own.
    """
    _check_settings(num_resamples, level)
    treatment_N = _as_values(treatment, "treatment")
    control_M = _as_values(control, "control")
    if paired and treatment_N.size != control_M.size:
        raise ValueError(
            "paired bootstrap needs one value per shared prompt in both arms; got "
            f"{treatment_N.size} treatment and {control_M.size} control values"
        )
    if treatment_N.size == 0 or control_M.size == 0:
        return Interval(None, None, None, level, num_resamples)
    rng = np.random.default_rng(seed)
    index_RxN = rng.integers(0, treatment_N.size, size=(num_resamples, treatment_N.size))
    if paired:
        index_RxM = index_RxN
    else:
        index_RxM = rng.integers(0, control_M.size, size=(num_resamples, control_M.size))
    treatment_rate_R = treatment_N[index_RxN].mean(axis=1)
    control_rate_R = control_M[index_RxM].mean(axis=1)
    defined_R = control_rate_R > 0.0
    estimate = relative_improvement(float(treatment_N.mean()), float(control_M.mean()))
    undefined = int((~defined_R).sum())
    if not defined_R.any():
        return Interval(estimate, None, None, level, num_resamples, undefined)
    ratios_R = treatment_rate_R[defined_R] / control_rate_R[defined_R] - 1.0
    low, high = _percentiles(ratios_R, level)
    return Interval(estimate, low, high, level, num_resamples, undefined)


def align_by_prompt(
    treatment: dict[str, float], control: dict[str, float]
) -> tuple[np.ndarray, np.ndarray] | None:
    """Return both arms' values over the same prompt ids, sorted; None unless the ids match.

    A paired bootstrap is only valid when both arms answered the same prompts.
    """
    if not treatment or set(treatment) != set(control):
        return None
    ids = sorted(treatment)
    return (
        np.array([treatment[i] for i in ids], dtype=np.float64),
        np.array([control[i] for i in ids], dtype=np.float64),
    )


def compare_arms(
    treatment: dict[str, float],
    control: dict[str, float],
    num_resamples: int,
    seed: int,
    level: float = 0.95,
) -> Interval:
    """Bootstrap the relative improvement of one arm over another from per-prompt outcomes.

    Pairs by prompt id when both arms answered the same prompts, else resamples each arm alone.
    """
    aligned = align_by_prompt(treatment, control)
    if aligned is not None:
        return bootstrap_relative_improvement(
            aligned[0], aligned[1], num_resamples, seed, paired=True, level=level
        )
    return bootstrap_relative_improvement(
        list(treatment.values()),
        list(control.values()),
        num_resamples,
        seed,
        paired=False,
        level=level,
    )


def bootstrap_over_seeds(
    rates_per_seed: Sequence[float], num_resamples: int, seed: int, level: float = 0.95
) -> Interval:
    """Bootstrap the mean of one rate across independent runs (one value per seed).

    NOTE: with 3 seeds there are only 10 distinct resample means, so the interval is coarse and
    narrower than a t-interval; read it as a spread, not an exact 95% coverage.
    """
    return bootstrap_mean(rates_per_seed, num_resamples, seed, level)
