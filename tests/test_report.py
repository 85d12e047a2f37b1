"""The report renders from a small metrics fixture: tables, verdicts from the numbers, PNGs."""

import copy
import json

import pytest

from trait_rl.eval import aggregate, report


def _interval(estimate, low, high):
    return {
        "estimate": estimate,
        "low": low,
        "high": high,
        "level": 0.95,
        "num_resamples": 100,
        "undefined_resamples": 0,
    }


def _bins(confidence_accuracy_count):
    bins = []
    for i in range(4):
        mean, acc, count = confidence_accuracy_count.get(i, (None, None, 0))
        bins.append(
            {
                "lower": i / 4,
                "upper": (i + 1) / 4,
                "count": count,
                "mean_confidence": mean,
                "accuracy": acc,
            }
        )
    return bins


def _split(safe_rate, low, high, n=20):
    return {
        "num_prompts": n,
        "safe_rate": safe_rate,
        "safe_interval": _interval(safe_rate, low, high),
        "malformed_rate": 0.05,
        "honesty": {
            "known_accuracy": 0.8,
            "over_abstention": 0.1,
            "known_count": 10,
            "unknown_abstention": 0.4,
            "fabrication_rate": 0.6,
            "unknown_count": 5,
            "contested_as_belief": None,
            "contested_count": 0,
        },
        "humility": {
            "num_answers": 12,
            "ece_bins": 4,
            "ece": 0.123,
            "brier": 0.2,
            "reliability": _bins({1: (0.3, 0.25, 4), 3: (0.9, 0.75, 8)}),
        },
        "corrigibility": {
            "compliance": 0.7,
            "bargaining": 0.2,
            "manipulation": 0.1,
            "oversight_count": 10,
            "false_correction_capitulation": 0.5,
            "false_correction_count": 4,
        },
        "families": {"plain": {"count": n, "safe_rate": safe_rate}},
    }


def _comparison(treatment, baseline, interval, verdict):
    return {
        "treatment_rate": treatment,
        "baseline_rate": baseline,
        "num_treatment": 20,
        "num_baseline": 20,
        "paired": True,
        "relative_improvement": interval,
        "verdict": verdict,
    }


@pytest.fixture
def metrics():
    return {
        "seed": 0,
        "ece_bins": 4,
        "bootstrap_samples": 100,
        "arms": {
            "trait_rl": {
                "splits": {
                    "train": _split(0.9, 0.8, 1.0),
                    "heldout_attack": _split(0.6, 0.4, 0.8),
                }
            },
            "conventional": {
                "splits": {
                    "train": _split(0.85, 0.7, 0.95),
                    "heldout_attack": _split(0.3, 0.1, 0.5),
                }
            },
        },
        "claims": {
            "heldout_attacks": {
                "treatment": "trait_rl",
                "baseline": "conventional",
                "comparisons": {
                    "heldout_attack": _comparison(0.6, 0.3, _interval(1.0, 0.25, 2.5), "held")
                },
                "published_relative_improvement": 0.73,
                "verdict": "held",
            },
            "malicious_finetuning": {
                "treatment": "trait_rl",
                "baseline": "conventional",
                "curves": {
                    "trait_rl": {
                        "steps": [0, 5],
                        "safe_rate": [0.8, 0.6],
                        "retention": [1.0, 0.75],
                    },
                    "conventional": {
                        "steps": [0, 5],
                        "safe_rate": [0.8, 0.7],
                        "retention": [1.0, 0.875],
                    },
                },
                "comparisons": {
                    "5": _comparison(0.6, 0.7, _interval(-0.14, -0.4, 0.2), "not held")
                },
                "final_step": 5,
                "verdict": "not held",
            },
        },
        "public_mc": {
            "trait_rl": {
                "truthfulqa_mc1": {"metric": "desired_choice_rate", "value": 0.21, "count": 50}
            }
        },
        "config": {"seed": 0, "eval": {"ece_bins": 4}},
    }


def test_report_files_written(tmp_path, metrics):
    path = report.write_report(tmp_path, metrics)
    assert path == tmp_path / "report.md"
    for name in ("safe_rates", "reliability", "retention"):
        png = tmp_path / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_report_tables_show_numbers(tmp_path, metrics):
    text = report.write_report(tmp_path, metrics).read_text()
    assert "| trait_rl | 0.900 [0.80, 1.00] (n=20) | 0.600 [0.40, 0.80] (n=20) |" in text
    assert "ECE over 4 equal-width confidence buckets" in text
    assert "| trait_rl | train | 0.123 | 0.200 |" in text
    assert "| conventional | 0.800 (1.000) | 0.700 (0.875) |" in text
    assert "| trait_rl | truthfulqa_mc1 | desired_choice_rate | 0.210 | 50 |" in text
    assert "![retention](plots/retention.png)" in text
    assert '"ece_bins": 4' in text


def test_report_verdicts_follow_intervals(tmp_path, metrics):
    text = report.write_report(tmp_path, metrics).read_text()
    assert "| 2. held-out attacks | held |" in text
    assert "**Verdict: held.** `trait_rl` over `conventional` on held-out attacks" in text
    assert "+100.0%" in text
    assert "95% CI +25.0% to +250.0%" in text
    assert "The published figure, +73.0%, lies outside our 95% interval." not in text
    assert "The published figure, +73.0%, lies inside our 95% interval." in text
    assert "**Verdict: not held.**" in text
    assert "| 3. malicious fine-tuning | not held |" in text


def test_report_changes_with_numbers(tmp_path, metrics):
    changed = copy.deepcopy(metrics)
    claim = changed["claims"]["heldout_attacks"]
    claim["comparisons"]["heldout_attack"]["relative_improvement"] = _interval(0.1, -0.2, 0.5)
    claim["comparisons"]["heldout_attack"]["verdict"] = "not established"
    claim["verdict"] = "not established"
    text = report.render_report(changed, {})
    assert "**Verdict: not established.**" in text
    assert "includes 0" in text
    assert "lies outside our 95% interval" in text
    assert "| 2. held-out attacks | not established |" in text


def test_aggregate_across_seeds(tmp_path, metrics):
    paths = []
    for seed, attack_rate in enumerate([0.5, 0.6, 0.7]):
        m = copy.deepcopy(metrics)
        m["seed"] = seed
        m["arms"]["trait_rl"]["splits"]["heldout_attack"]["safe_rate"] = attack_rate
        path = tmp_path / f"seed{seed}" / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps(m))
        paths.append(path)
    rows = {row.name: row for row in aggregate.aggregate_reports(paths, num_resamples=200)}
    row = rows["trait_rl/heldout_attack/safe_rate"]
    assert row.values == (0.5, 0.6, 0.7)
    assert row.mean == pytest.approx(0.6)
    assert 0.5 <= row.low <= 0.6 <= row.high <= 0.7
    improvement = rows["claims/heldout_attacks/relative_improvement_of_mean_rates"]
    assert improvement.mean == pytest.approx(0.6 / 0.3 - 1)
    table = aggregate.render_aggregate_table(list(rows.values()))
    assert "| trait_rl/heldout_attack/safe_rate | 3 | 0.600 |" in table


def test_aggregate_rejects_bad_file(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text("{\n oops")
    with pytest.raises(ValueError, match=f"{bad}:2"):
        aggregate.aggregate_reports([bad])


def test_report_shows_malformed_rates(metrics):
    text = report.render_report(metrics, {})
    assert "## Malformed-response rate per split" in text
    assert "| trait_rl | 0.050 | 0.050 |" in text
    assert "**Warning:**" not in text

    metrics["arms"]["conventional"]["splits"]["heldout_attack"]["malformed_rate"] = 1.0
    text = report.render_report(metrics, {})
    assert "| conventional | 0.050 | 1.000 |" in text
    assert "**Warning:** at least 50% of the responses are malformed for `conventional` on " in text
    assert "`conventional` on heldout_attack, so" in text


def _unmeasured_attack_claim(metrics, treatment_rate, baseline_rate, num_prompts):
    comparison = _comparison(
        treatment_rate, baseline_rate, _interval(None, None, None), "not measured"
    )
    comparison["num_treatment"] = comparison["num_baseline"] = num_prompts
    claim = metrics["claims"]["heldout_attacks"]
    claim["comparisons"]["heldout_attack"] = comparison
    claim["verdict"] = "not measured"


def test_zero_rates_verdict_names_prompt_count(metrics):
    _unmeasured_attack_claim(metrics, 0.0, 0.0, 20)
    text = report.render_report(metrics, {})
    assert (
        "**Verdict: not measured.** `trait_rl` over `conventional` on held-out attacks: both "
        "arms had a safe rate of 0 on these 20 prompts, so the relative improvement is undefined."
    ) in text
    assert "no prompts were available" not in text


def test_zero_baseline_verdict_says_ratio_undefined(metrics):
    _unmeasured_attack_claim(metrics, 0.4, 0.0, 1)
    text = report.render_report(metrics, {})
    assert "the baseline had a safe rate of 0 on these 1 prompt, so the relative" in text


def test_no_prompts_verdict(metrics):
    _unmeasured_attack_claim(metrics, None, None, 0)
    text = report.render_report(metrics, {})
    assert "on held-out attacks: no prompts were available to compare." in text


def test_partly_unmeasured_claim_names_comparison(metrics):
    claim = metrics["claims"]["malicious_finetuning"]
    unmeasured = _comparison(0.0, 0.0, _interval(None, None, None), "not measured")
    claim["comparisons"] = {"1": unmeasured, **claim["comparisons"]}
    text = report.render_report(metrics, {})
    assert (
        "`after steps: 1` is not measured: both arms had a safe rate of 0 on these 20 prompts"
    ) in text


def test_attack_step_plural(metrics):
    text = report.render_report(metrics, {})
    assert "after 5 attack steps" in text
    assert "| arm | 0 steps | 5 steps |" in text

    claim = metrics["claims"]["malicious_finetuning"]
    claim["final_step"] = 1
    for curve in claim["curves"].values():
        curve["steps"] = [0, 1]
    text = report.render_report(metrics, {})
    assert "after 1 attack step:" in text
    assert "| arm | 0 steps | 1 step |" in text


def test_reward_accuracy_section(tmp_path, metrics):
    assert "Reward model" not in report.render_report(metrics, {})

    metrics["reward_accuracy"] = {"honesty": 0.875, "humility": 0.5, "corrigibility": float("nan")}
    text = report.write_report(tmp_path, metrics).read_text()
    assert "## Reward model: held-out pairwise accuracy" in text
    assert "| honesty | 0.875 |" in text
    assert "| corrigibility | n/a |" in text
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["reward_accuracy"]["corrigibility"] is None

    metrics["reward_accuracy"] = {}
    text = report.render_report(metrics, {})
    assert "The reward phase logged no held-out accuracy." in text


def test_timings_section(metrics):
    assert "## Timings" not in report.render_report(metrics, {})
    metrics["timings"] = {"train_seconds": 12.34, "eval_seconds": 5.0, "attack_seconds": 61.25}
    text = report.render_report(metrics, {})
    assert "## Timings" in text
    assert "| train | 12.3 |" in text
    assert "| attack | 61.2 |" in text


def test_identical_arms_note(metrics):
    assert "Identical responses" not in report.render_report(metrics, {})
    metrics["identical_arms"] = [{"arms": ["conventional", "trait_rl"], "num_prompts": 40}]
    text = report.render_report(metrics, {})
    assert (
        "**Identical responses:** `conventional` and `trait_rl` gave the same response to each "
        "of the 40 prompts"
    ) in text


def test_summary_rows_in_claim_order(metrics):
    # metrics.json stores keys sorted; the summary must still list claims 1, 2, 3, 4 in order.
    metrics["claims"] = dict(sorted(metrics["claims"].items()))

    text = report.render_report(metrics, {})

    positions = [text.index(f"| {number}. ") for number in range(1, 5) if f"| {number}. " in text]
    assert len(positions) >= 2
    assert positions == sorted(positions)
