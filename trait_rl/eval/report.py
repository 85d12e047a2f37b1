"""Write WORKDIR/report.md, WORKDIR/metrics.json and the PNG plots from one metrics dict.

The report is rendered only from the numbers in the metrics dict (built by
`trait_rl.eval.summary.build_metrics`), so every verdict sentence follows from the intervals and
the same metrics.json always renders the same report.
"""

import json
import math
import pathlib
from collections.abc import Mapping, Sequence

from trait_rl.data import io_utils
from trait_rl.eval import claims, plots

SPLIT_ORDER = ("train", "heldout_family", "heldout_domain", "heldout_attack")
# A malformed-response rate from which the report warns that the trait rates are uninformative.
MOSTLY_MALFORMED = 0.5

_VERDICT_TEXT = {
    claims.HELD: "the 95% interval of the relative improvement lies entirely above 0",
    claims.PARTLY_HELD: "some comparisons have a 95% interval entirely above 0, others do not",
    claims.NOT_ESTABLISHED: (
        "the point estimate is positive but the 95% interval includes 0, so the data do not "
        "rule out no effect"
    ),
    claims.NOT_HELD: "the point estimate is 0 or negative and the 95% interval includes 0",
    claims.REVERSED: "the 95% interval lies entirely below 0: the baseline did better",
    claims.NOT_MEASURED: "no prompts were available to compare",
}


def _rate(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _percent(value: float | None) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "+inf%" if value > 0 else "-inf%"
    return f"{value * 100:+.1f}%"


def _interval_text(interval: Mapping) -> str:
    if interval.get("low") is None:
        return "interval undefined"
    level = round(interval["level"] * 100)
    return f"{level}% CI {_percent(interval['low'])} to {_percent(interval['high'])}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ordered_splits(splits: Mapping) -> list[str]:
    known = [s for s in SPLIT_ORDER if s in splits]
    return known + sorted(s for s in splits if s not in SPLIT_ORDER)


def _comparison_rows(comparisons: Mapping[str, Mapping], label: str) -> list[list[str]]:
    rows = []
    for name, c in comparisons.items():
        interval = c["relative_improvement"]
        rows.append(
            [
                f"{label}{name}",
                f"{_rate(c['treatment_rate'])} (n={c['num_treatment']})",
                f"{_rate(c['baseline_rate'])} (n={c['num_baseline']})",
                _percent(interval["estimate"]),
                _interval_text(interval),
                "paired" if c["paired"] else "unpaired",
                c["verdict"],
            ]
        )
    return rows


def _comparison_table(comparisons: Mapping[str, Mapping], treatment: str, baseline: str, label=""):
    header = [
        "comparison",
        f"{treatment} safe rate",
        f"{baseline} safe rate",
        "relative improvement",
        "95% interval",
        "bootstrap",
        "verdict",
    ]
    return _table(header, _comparison_rows(comparisons, label))


def _prompt_count(comparison: Mapping) -> str:
    treatment, baseline = comparison["num_treatment"], comparison["num_baseline"]
    if treatment == baseline:
        return f"these {_plural(treatment, 'prompt')}"
    return f"these {treatment} and {_plural(baseline, 'prompt')}"


def _not_measured_reason(comparison: Mapping) -> str:
    """Say why a comparison has no interval: no prompts, or a baseline safe rate of 0."""
    if comparison["num_treatment"] == 0 or comparison["num_baseline"] == 0:
        return _VERDICT_TEXT[claims.NOT_MEASURED]
    prompts = _prompt_count(comparison)
    if comparison["baseline_rate"] == 0 and comparison["treatment_rate"] == 0:
        return (
            f"both arms had a safe rate of 0 on {prompts}, so the relative improvement is undefined"
        )
    if comparison["baseline_rate"] == 0:
        return (
            f"the baseline had a safe rate of 0 on {prompts}, so the relative improvement (a "
            "ratio to that rate) is undefined"
        )
    return "the bootstrap interval is undefined"


def _verdict_paragraph(
    verdict: str, statement: str, comparisons: Mapping[str, Mapping], label: str = ""
) -> str:
    """Write the verdict sentence, with the reason of every comparison left unmeasured."""
    unmeasured = {
        f"{label}{name}": _not_measured_reason(c)
        for name, c in comparisons.items()
        if c["verdict"] == claims.NOT_MEASURED
    }
    if verdict != claims.NOT_MEASURED:
        notes = "".join(f" `{name}` is not measured: {why}." for name, why in unmeasured.items())
        return f"**Verdict: {verdict}.** {statement}: {_VERDICT_TEXT[verdict]}.{notes}"
    reasons = set(unmeasured.values())
    if len(reasons) == 1:
        return f"**Verdict: {verdict}.** {statement}: {reasons.pop()}."
    per_comparison = " ".join(f"`{name}`: {why}." for name, why in unmeasured.items())
    return f"**Verdict: {verdict}.** {statement}. {per_comparison}"


def _claim_contexts(claim: Mapping) -> str:
    treatment, baseline = claim["treatment"], claim["baseline"]
    return "\n\n".join(
        [
            "## Claim 1: traits improve on contexts never seen in training",
            f"Safe-behaviour rate of `{treatment}` against `{baseline}` on held-out prompt "
            "families and held-out domains.",
            _comparison_table(claim["comparisons"], treatment, baseline),
            _verdict_paragraph(
                claim["verdict"],
                f"`{treatment}` over `{baseline}` on held-out contexts",
                claim["comparisons"],
            ),
        ]
    )


def _published_sentence(claim: Mapping) -> str:
    published = claim["published_relative_improvement"]
    interval = next(iter(claim["comparisons"].values()))["relative_improvement"]
    if interval.get("low") is None:
        return f"The published figure is {_percent(published)}; our interval is undefined."
    inside = interval["low"] <= published <= interval["high"]
    where = "inside" if inside else "outside"
    return f"The published figure, {_percent(published)}, lies {where} our 95% interval."


def _claim_attacks(claim: Mapping) -> str:
    treatment, baseline = claim["treatment"], claim["baseline"]
    return "\n\n".join(
        [
            "## Claim 2: safe behaviour under attack families designed after training",
            _comparison_table(claim["comparisons"], treatment, baseline),
            _verdict_paragraph(
                claim["verdict"],
                f"`{treatment}` over `{baseline}` on held-out attacks",
                claim["comparisons"],
            ),
            _published_sentence(claim),
        ]
    )


def _retention_table(curves: Mapping[str, Mapping]) -> str:
    steps = sorted({s for curve in curves.values() for s in curve["steps"]})
    rows = []
    for arm, curve in curves.items():
        by_step = dict(
            zip(
                curve["steps"],
                zip(curve["safe_rate"], curve["retention"], strict=True),
                strict=True,
            )
        )
        cells = []
        for step in steps:
            rate, retained = by_step.get(step, (None, None))
            cells.append(f"{_rate(rate)} ({_rate(retained)})")
        rows.append([arm, *cells])
    return _table(["arm", *(_plural(s, "step") for s in steps)], rows)


def _claim_malicious(claim: Mapping, plot: str | None) -> str:
    treatment, baseline = claim["treatment"], claim["baseline"]
    parts = [
        "## Claim 3: safe behaviour retained after malicious fine-tuning",
        "Safe-behaviour rate after each number of attack steps (in brackets: the fraction of the "
        "rate before the attack).",
        _retention_table(claim["curves"]),
        _comparison_table(claim["comparisons"], treatment, baseline, label="after steps: "),
        _verdict_paragraph(
            claim["verdict"],
            f"`{treatment}` over `{baseline}` after {_plural(claim['final_step'], 'attack step')}",
            claim["comparisons"],
            label="after steps: ",
        ),
    ]
    if plot:
        parts.append(f"![retention]({plot})")
    return "\n\n".join(parts)


def _claim_ablation(claim: Mapping, plot: str | None) -> str:
    treatment = claim["treatment"]
    per_split = claim["safe_rate_per_split"]
    splits = list(next(iter(per_split.values())))
    rows = [[arm, *(_rate(rates[s]) for s in splits)] for arm, rates in per_split.items()]
    parts = [
        "## Claim 4: all three traits together beat any single trait",
        "Safe-behaviour rate on each held-out split:",
        _table(["arm", *splits], rows),
        "Pooled over the held-out splits:",
        _comparison_table(claim["comparisons"], treatment, "single-trait arm", label="vs "),
        _verdict_paragraph(
            claim["verdict"],
            f"`{treatment}` over every single-trait arm",
            claim["comparisons"],
            label="vs ",
        ),
    ]
    if plot:
        parts.append(f"![ablation]({plot})")
    return "\n\n".join(parts)


def _safe_rate_table(arms: Mapping[str, Mapping]) -> str:
    splits = _ordered_splits({s: None for a in arms.values() for s in a["splits"]})
    rows = []
    for arm, summary in arms.items():
        cells = []
        for split in splits:
            s = summary["splits"].get(split)
            if s is None:
                cells.append("n/a")
                continue
            interval = s["safe_interval"]
            low, high = interval["low"], interval["high"]
            bounds = "" if low is None else f" [{low:.2f}, {high:.2f}]"
            cells.append(f"{_rate(s['safe_rate'])}{bounds} (n={s['num_prompts']})")
        rows.append([arm, *cells])
    return _table(["arm", *splits], rows)


def _malformed_section(arms: Mapping[str, Mapping]) -> str:
    splits = _ordered_splits({s: None for a in arms.values() for s in a["splits"]})
    rows = []
    mostly_malformed = []
    for arm, summary in arms.items():
        cells = []
        for split in splits:
            s = summary["splits"].get(split)
            rate = None if s is None else s.get("malformed_rate")
            cells.append(_rate(rate))
            if rate is not None and rate >= MOSTLY_MALFORMED:
                mostly_malformed.append(f"`{arm}` on {split}")
        rows.append([arm, *cells])
    parts = [
        "## Malformed-response rate per split",
        "A response the judge cannot parse is malformed: it is never safe, and in the trait "
        "tables below it counts as neither an answer, an abstention nor a fabrication. A low "
        "fabrication_rate next to a high malformed rate means the model said nothing usable.",
        _table(["arm", *splits], rows),
    ]
    if mostly_malformed:
        parts.append(
            f"**Warning:** at least {MOSTLY_MALFORMED:.0%} of the responses are malformed for "
            f"{', '.join(mostly_malformed)}, so the trait rates of those rows describe output "
            "the judge could not read."
        )
    return "\n\n".join(parts)


def _trait_table(arms: Mapping[str, Mapping], trait: str, fields: list[str]) -> str:
    rows = []
    for arm, summary in arms.items():
        for split in _ordered_splits(summary["splits"]):
            values = summary["splits"][split][trait]
            rows.append([arm, split, *(_rate(values.get(f)) for f in fields)])
    return _table(["arm", "split", *fields], rows)


def _public_mc_section(public_mc: Mapping[str, Mapping]) -> str:
    rows = []
    for arm, evals in public_mc.items():
        for name, result in evals.items():
            rows.append([arm, name, result["metric"], _rate(result["value"]), str(result["count"])])
    return "\n\n".join(
        [
            "## Public multiple-choice evaluations (log-likelihood of the options)",
            "A from-scratch model never saw this data, so these numbers are near chance by "
            "construction; they are meaningful for an imported pretrained checkpoint.",
            _table(["arm", "evaluation", "metric", "value", "items"], rows),
        ]
    )


def _reward_accuracy_section(accuracy: Mapping[str, float | None]) -> str:
    parts = [
        "## Reward model: held-out pairwise accuracy",
        "Fraction of validation preference pairs whose chosen response the trait's reward head "
        "scores higher than the rejected one (0.5 is chance).",
    ]
    if not accuracy:
        parts.append("The reward phase logged no held-out accuracy.")
    else:
        parts.append(_table(["trait", "accuracy"], [[t, _rate(a)] for t, a in accuracy.items()]))
    return "\n\n".join(parts)


def _timings_section(timings: Mapping[str, float]) -> str:
    rows = [[name.removesuffix("_seconds"), f"{seconds:.1f}"] for name, seconds in timings.items()]
    return "\n\n".join(["## Timings", _table(["stage", "seconds"], rows)])


def _identical_arms_text(pairs: Sequence[Mapping]) -> str:
    sentences = [
        f"**Identical responses:** `{pair['arms'][0]}` and `{pair['arms'][1]}` gave the same "
        f"response to each of the {_plural(pair['num_prompts'], 'prompt')}, so every comparison "
        "between them is a tie by construction."
        for pair in pairs
    ]
    return "\n\n".join(sentences)


def _summary_table(claim_sections: Mapping[str, Mapping]) -> str:
    titles = {
        "heldout_contexts": "1. held-out contexts",
        "heldout_attacks": "2. held-out attacks",
        "malicious_finetuning": "3. malicious fine-tuning",
        "ablation": "4. all traits vs one",
    }
    # metrics.json stores keys sorted, so order the rows by claim number, not by the dict.
    ordered = [name for name in titles if name in claim_sections]
    ordered += sorted(name for name in claim_sections if name not in titles)
    rows = [[titles.get(name, name), claim_sections[name]["verdict"]] for name in ordered]
    return _table(["claim", "verdict"], rows)


def _claim_parts(claim_sections: Mapping[str, Mapping], plot_files: Mapping[str, str]) -> list:
    parts = []
    if "heldout_contexts" in claim_sections:
        parts.append(_claim_contexts(claim_sections["heldout_contexts"]))
    if "heldout_attacks" in claim_sections:
        parts.append(_claim_attacks(claim_sections["heldout_attacks"]))
    if "malicious_finetuning" in claim_sections:
        malicious = claim_sections["malicious_finetuning"]
        parts.append(_claim_malicious(malicious, plot_files.get("retention")))
    if "ablation" in claim_sections:
        parts.append(_claim_ablation(claim_sections["ablation"], plot_files.get("ablation")))
    return parts


def _trait_parts(arms: Mapping[str, Mapping], ece_bins: int, plot_files: Mapping[str, str]):
    honesty_fields = [
        "known_accuracy",
        "unknown_abstention",
        "fabrication_rate",
        "over_abstention",
        "contested_as_belief",
    ]
    corrigibility_fields = [
        "compliance",
        "resistance",
        "bargaining",
        "manipulation",
        "true_correction_acceptance",
        "false_correction_capitulation",
        "escalation",
    ]
    parts = [
        "## Honesty",
        _trait_table(arms, "honesty", honesty_fields),
        f"## Humility (ECE over {ece_bins} equal-width confidence buckets)",
        _trait_table(arms, "humility", ["ece", "brier"]),
    ]
    if "reliability" in plot_files:
        parts.append(f"![reliability diagram]({plot_files['reliability']})")
    parts += ["## Corrigibility", _trait_table(arms, "corrigibility", corrigibility_fields)]
    return parts


def render_report(metrics: Mapping, plot_files: Mapping[str, str]) -> str:
    """Render the markdown report; `plot_files` maps plot names to paths relative to the report."""
    arms = metrics["arms"]
    claim_sections = metrics.get("claims", {})
    parts = [
        "# trait_rl evaluation report",
        f"Arms: {', '.join(f'`{a}`' for a in arms)}. Intervals are percentile bootstrap "
        f"intervals over prompts ({metrics['bootstrap_samples']} resamples, seed "
        f"{metrics['seed']}). Verdicts are derived from the intervals.",
        _summary_table(claim_sections),
    ]
    if metrics.get("identical_arms"):
        parts.append(_identical_arms_text(metrics["identical_arms"]))
    parts += ["## Safe-behaviour rate per split (95% interval)", _safe_rate_table(arms)]
    if "safe_rates" in plot_files:
        parts.append(f"![safe rate per split]({plot_files['safe_rates']})")
    parts.append(_malformed_section(arms))

    parts += _claim_parts(claim_sections, plot_files)
    parts += _trait_parts(arms, metrics["ece_bins"], plot_files)
    if metrics.get("public_mc"):
        parts.append(_public_mc_section(metrics["public_mc"]))
    if "reward_accuracy" in metrics:
        parts.append(_reward_accuracy_section(metrics["reward_accuracy"]))
    if metrics.get("timings"):
        parts.append(_timings_section(metrics["timings"]))

    config_json = json.dumps(metrics.get("config", {}), indent=2, sort_keys=True)
    parts += [
        "## Config",
        "The resolved config of this run (also in metrics.json under `config`):",
        f"```json\n{config_json}\n```",
    ]
    return "\n\n".join(parts) + "\n"


def _heldout_reliability(arms: Mapping[str, Mapping]) -> dict[str, list]:
    """Reliability bins of each arm, pooled over every split it was evaluated on."""
    pooled = {}
    for arm, summary in arms.items():
        bins = None
        for split_summary in summary["splits"].values():
            split_bins = split_summary["humility"]["reliability"]
            if bins is None:
                bins = [dict(b) for b in split_bins]
                continue
            for merged, b in zip(bins, split_bins, strict=True):
                merged.update(_merge_bin(merged, b))
        pooled[arm] = bins or []
    return pooled


def _merge_bin(a: Mapping, b: Mapping) -> dict:
    count = a["count"] + b["count"]
    if count == 0:
        return {"count": 0, "mean_confidence": None, "accuracy": None}

    def mean(key):
        total = (a[key] or 0.0) * a["count"] + (b[key] or 0.0) * b["count"]
        return total / count

    return {
        "count": count,
        "mean_confidence": mean("mean_confidence"),
        "accuracy": mean("accuracy"),
    }


def write_plots(metrics: Mapping, plot_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Draw every plot the metrics support; return plot name -> file."""
    arms = metrics["arms"]
    files = {}
    splits = _ordered_splits({s: None for a in arms.values() for s in a["splits"]})
    rates = {
        arm: {
            split: {
                "estimate": s["safe_rate"],
                **{k: s["safe_interval"][k] for k in ("low", "high")},
            }
            for split, s in summary["splits"].items()
        }
        for arm, summary in arms.items()
    }
    files["safe_rates"] = plots.plot_grouped_rates(
        rates, splits, plot_dir / "safe_rates.png", "Safe-behaviour rate per split"
    )
    files["reliability"] = plots.plot_reliability(
        _heldout_reliability(arms), plot_dir / "reliability.png", "Reliability (all splits)"
    )
    claim_sections = metrics.get("claims", {})
    if "malicious_finetuning" in claim_sections:
        files["retention"] = plots.plot_retention(
            claim_sections["malicious_finetuning"]["curves"], plot_dir / "retention.png"
        )
    if "ablation" in claim_sections:
        per_split = claim_sections["ablation"]["safe_rate_per_split"]
        ablation_rates = {
            arm: {s: {"estimate": r} for s, r in by_split.items()}
            for arm, by_split in per_split.items()
        }
        files["ablation"] = plots.plot_grouped_rates(
            ablation_rates,
            list(claims.HELDOUT_SPLITS),
            plot_dir / "ablation.png",
            "Ablation: safe rate on held-out splits",
        )
    return files


def _with_json_reward_accuracy(metrics: Mapping) -> Mapping:
    """Replace a NaN reward accuracy (a trait without validation pairs) by None for JSON."""
    accuracy = metrics.get("reward_accuracy")
    if not accuracy or all(value is None or math.isfinite(value) for value in accuracy.values()):
        return metrics
    finite = {t: a if a is None or math.isfinite(a) else None for t, a in accuracy.items()}
    return {**metrics, "reward_accuracy": finite}


def write_report(workdir: str | pathlib.Path, metrics: Mapping) -> pathlib.Path:
    """Write metrics.json, plots/*.png and report.md under `workdir`; return the report path."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    metrics = _with_json_reward_accuracy(metrics)
    # Both files go through a temporary name and a rename, so a crash leaves the previous
    # complete file or none, never a truncated one.
    metrics_text = json.dumps(metrics, indent=2, sort_keys=True, allow_nan=False) + "\n"
    io_utils.write_bytes_atomic(workdir / "metrics.json", metrics_text.encode("utf-8"))
    plot_files = write_plots(metrics, workdir / "plots")
    relative = {name: str(path.relative_to(workdir)) for name, path in plot_files.items()}
    report_path = workdir / "report.md"
    io_utils.write_bytes_atomic(report_path, render_report(metrics, relative).encode("utf-8"))
    return report_path
