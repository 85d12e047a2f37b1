"""Tests of benchmarks/sampler_rounds.py, which reports medians over rounds and their ratios."""

import argparse
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

import sampler_rounds  # noqa: E402


def _round(ours: float, generate: float, share: float) -> dict:
    row = {"new_tok_per_s": ours, "share_of_limit": share, "share_of_f32_limit": 2 * share}
    return {
        "ours": {64: row},
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
    assert row["ours_share_of_limit_range"] == [0.42, 0.58]
    assert row["ours_share_of_f32_limit"] == 1.0
    assert row["ours_share_of_f32_limit_range"] == [0.84, 1.16]
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


def test_failed_round_keeps_previous_files(tmp_path, monkeypatch):
    rounds_dir = tmp_path / "sampler_rounds"
    (rounds_dir / "round1").mkdir(parents=True)
    (rounds_dir / "round1" / "sampler.json").write_text("previous run")
    monkeypatch.setattr(sampler_rounds, "ROUNDS_DIR", rounds_dir)

    def fail_in_round_two(name, round_dir, args):
        if round_dir.name == "round2":
            raise SystemExit(f"error: {name} failed in {round_dir.name}")
        return {64: {"new_tok_per_s": 1.0}}

    monkeypatch.setattr(sampler_rounds, "run_once", fail_in_round_two)
    args = argparse.Namespace(rounds=3)
    with pytest.raises(SystemExit, match="failed in round2"):
        sampler_rounds.run_rounds(["ours"], args)
    assert (rounds_dir / "round1" / "sampler.json").read_text() == "previous run"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sampler_rounds"]


def test_finished_rounds_replace_previous_files(tmp_path, monkeypatch):
    rounds_dir = tmp_path / "sampler_rounds"
    (rounds_dir / "round5").mkdir(parents=True)
    monkeypatch.setattr(sampler_rounds, "ROUNDS_DIR", rounds_dir)
    monkeypatch.setattr(
        sampler_rounds, "run_once", lambda name, round_dir, args: {64: {"dir": round_dir.name}}
    )
    rounds = sampler_rounds.run_rounds(["ours"], argparse.Namespace(rounds=2))
    assert [r["ours"][64]["dir"] for r in rounds] == ["round1", "round2"]
    assert sorted(path.name for path in rounds_dir.iterdir()) == ["round1", "round2"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sampler_rounds"]
