"""Calibration of stated confidence: expected calibration error, Brier score, reliability bins.

Inputs are the confidence a response stated, in [0, 1], and whether the answer was correct, one
entry per answered prompt. Abstentions carry no confidence and are left out by the caller.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ReliabilityBin:
    """One equal-width confidence bucket of a reliability diagram."""

    lower: float
    upper: float
    count: int
    mean_confidence: float | None  # None when the bucket is empty.
    accuracy: float | None  # None when the bucket is empty.


def _check_inputs(confidence_N, correct_N) -> tuple[np.ndarray, np.ndarray]:
    confidence_N = np.asarray(confidence_N, dtype=np.float64)
    correct_N = np.asarray(correct_N, dtype=np.float64)
    if confidence_N.ndim != 1 or confidence_N.shape != correct_N.shape:
        raise ValueError(
            "confidence and correct must be 1-D arrays of the same length; got shapes "
            f"{confidence_N.shape} and {correct_N.shape}"
        )
    if not np.all(np.isfinite(confidence_N)):
        raise ValueError("confidence contains NaN or Inf; drop abstentions before calibration")
    if np.any((confidence_N < 0.0) | (confidence_N > 1.0)):
        bad = confidence_N[(confidence_N < 0.0) | (confidence_N > 1.0)][0]
        raise ValueError(f"confidence must lie in [0, 1]; got {bad} (convert percentages first)")
    if np.any((correct_N != 0.0) & (correct_N != 1.0)):
        raise ValueError("correct must contain only 0/1 or False/True values")
    return confidence_N, correct_N


def _bin_index(confidence_N: np.ndarray, num_bins: int) -> np.ndarray:
    """Map each confidence to an equal-width bucket; confidence 1.0 falls in the last one."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1; got {num_bins}")
    return np.minimum((confidence_N * num_bins).astype(np.int64), num_bins - 1)


def expected_calibration_error(confidence_N, correct_N, num_bins: int) -> float:
    """Compute ECE = sum_b (n_b / N) * |accuracy_b - mean_confidence_b| over equal-width bins.

    Guo et al. 2017, "On Calibration of Modern Neural Networks", eq. 3. Returns NaN for no input.
    """
    confidence_N, correct_N = _check_inputs(confidence_N, correct_N)
    bins_N = _bin_index(confidence_N, num_bins)
    if confidence_N.size == 0:
        return float("nan")
    confidence_sum_B = np.bincount(bins_N, weights=confidence_N, minlength=num_bins)
    correct_sum_B = np.bincount(bins_N, weights=correct_N, minlength=num_bins)
    gap_sum = np.abs(correct_sum_B - confidence_sum_B).sum()
    # |acc_b - conf_b| * n_b / N == |correct_sum_b - confidence_sum_b| / N.
    return float(gap_sum / confidence_N.size)


def brier_score(confidence_N, correct_N) -> float:
    """Compute the mean squared error between stated confidence and 0/1 correctness.

    Returns NaN for no input.
    """
    confidence_N, correct_N = _check_inputs(confidence_N, correct_N)
    if confidence_N.size == 0:
        return float("nan")
    return float(np.mean((confidence_N - correct_N) ** 2))


def reliability_bins(confidence_N, correct_N, num_bins: int) -> list[ReliabilityBin]:
    """Group answers into equal-width confidence buckets with their accuracy, for the diagram."""
    confidence_N, correct_N = _check_inputs(confidence_N, correct_N)
    bins_N = _bin_index(confidence_N, num_bins)
    result = []
    for b in range(num_bins):
        in_bin_N = bins_N == b
        count = int(in_bin_N.sum())
        result.append(
            ReliabilityBin(
                lower=b / num_bins,
                upper=(b + 1) / num_bins,
                count=count,
                mean_confidence=float(confidence_N[in_bin_N].mean()) if count else None,
                accuracy=float(correct_N[in_bin_N].mean()) if count else None,
            )
        )
    return result


def calibration_summary(confidence_N, correct_N, num_bins: int) -> dict:
    """Collect ECE, Brier score and reliability bins as JSON-ready values.

    ECE and Brier are None when no answer stated a confidence.
    """
    confidence_N, correct_N = _check_inputs(confidence_N, correct_N)
    empty = confidence_N.size == 0
    return {
        "num_answers": int(confidence_N.size),
        "ece_bins": num_bins,
        "ece": None if empty else expected_calibration_error(confidence_N, correct_N, num_bins),
        "brier": None if empty else brier_score(confidence_N, correct_N),
        "reliability": [
            dataclasses.asdict(b) for b in reliability_bins(confidence_N, correct_N, num_bins)
        ],
    }
