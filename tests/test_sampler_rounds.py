"""The summary of benchmarks/sampler_rounds.py: medians over rounds and the ratios of medians."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

import sampler_rounds  # noqa: E402


def _round(ours: float, generate: float, share: float) -> dict:
    return {
        "ours": {64: {"new_tok_per_s": ours, "share_of_limit": share}},
        "generate": {64: {"new_tok_per_s": generate}},
    }


def test_summary_takes_medians_then_ratios():
    rounds = [_round(6000, 3000, 0.50), _round(7000, 2000, 0.58), _round(5000, 4000, 0.42)]
    (row,) = sampler_rounds.summarize(rounds, ["ours", "generate"], [64])
    assert row["batch"] == 64
    assert row["ours_tok_per_s"] == 6000
    assert row["generate_tok_per_s"] == 3000
    assert row["ours_range"] == [5000, 7000]
    assert row["ours_share_of_limit"] == 0.50
    assert row["ours_share_range"] == [0.42, 0.58]
    # The ratio of the medians, not the median of the per-round ratios (2.0, 3.5, 1.25).
    assert row["vs_generate"] == 2.0
    assert row["vs_generate_per_round"] == pytest.approx([2.0, 3.5, 1.25])


def test_rounds_rotate_the_order():
    names = ["ours", "generate", "tunix"]
    orders = [sampler_rounds.rotated(names, index) for index in range(4)]
    assert orders[0] == ["ours", "generate", "tunix"]
    assert orders[1] == ["generate", "tunix", "ours"]
    assert orders[2] == ["tunix", "ours", "generate"]
    assert orders[3] == orders[0]
