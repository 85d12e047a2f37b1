"""Aggregate the metrics.json of several seeds into one table: mean and 95% interval per number.

The interval is a percentile bootstrap over seeds. The relative improvement across seeds is
bootstrapped from the per-seed rates of both arms, paired by seed.
"""

import dataclasses
import json
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from trait_rl.eval import bootstrap, claims


@dataclasses.dataclass(frozen=True)
class AggregateRow:
    """One number across seeds: its per-seed values, mean and interval."""

    name: str
    values: tuple[float, ...]
    mean: float | None
    low: float | None
    high: float | None


def _load(path: str | pathlib.Path) -> dict:
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: metrics file not found; run the pipeline first") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None


def headline_numbers(metrics: Mapping) -> dict[str, float]:
    """Pick the numbers a sweep table compares: safe rate per arm and split, ECE, Brier,
    and every claim comparison's relative improvement."""
    numbers = {}
    for arm, arm_summary in metrics["arms"].items():
        for split, s in arm_summary["splits"].items():
            numbers[f"{arm}/{split}/safe_rate"] = s["safe_rate"]
            numbers[f"{arm}/{split}/ece"] = s["humility"]["ece"]
            numbers[f"{arm}/{split}/brier"] = s["humility"]["brier"]
    for claim_name, claim in metrics.get("claims", {}).items():
        for name, comparison in claim["comparisons"].items():
            numbers[f"claims/{claim_name}/{name}/relative_improvement"] = comparison[
                "relative_improvement"
            ]["estimate"]
    return {k: v for k, v in numbers.items() if v is not None}


def _row(name: str, values: Sequence[float], num_resamples: int, seed: int) -> AggregateRow:
    interval = bootstrap.bootstrap_over_seeds(values, num_resamples, seed)
    return AggregateRow(name, tuple(values), interval.estimate, interval.low, interval.high)


def _attack_rates(metrics: Mapping, arm: str) -> float | None:
    split = metrics["arms"].get(arm, {}).get("splits", {}).get(claims.ATTACK_SPLIT)
    return None if split is None else split["safe_rate"]


def attack_improvement_over_seeds(
    all_metrics: Sequence[Mapping], num_resamples: int, seed: int
) -> bootstrap.Interval:
    """Relative improvement of trait_rl over conventional on held-out attacks, paired by seed."""
    pairs = [
        (_attack_rates(m, claims.TRAIT_ARM), _attack_rates(m, claims.CONVENTIONAL_ARM))
        for m in all_metrics
    ]
    pairs = [(t, c) for t, c in pairs if t is not None and c is not None]
    return bootstrap.bootstrap_relative_improvement(
        np.array([t for t, _ in pairs]),
        np.array([c for _, c in pairs]),
        num_resamples,
        seed,
        paired=True,
    )


def aggregate_reports(
    metrics_json_paths: Sequence[str | pathlib.Path], num_resamples: int = 1000, seed: int = 0
) -> list[AggregateRow]:
    """Aggregate the headline numbers of several runs (one metrics.json per seed).

    A number missing from some runs is aggregated over the runs that have it. The last row is
    the attack-split relative improvement bootstrapped over seeds, when both arms are present.
    """
    if not metrics_json_paths:
        raise ValueError("aggregate_reports needs at least one metrics.json path")
    all_metrics = [_load(p) for p in metrics_json_paths]
    values: dict[str, list[float]] = {}
    for metrics in all_metrics:
        for name, value in headline_numbers(metrics).items():
            values.setdefault(name, []).append(float(value))
    rows = [_row(name, vs, num_resamples, seed) for name, vs in sorted(values.items())]
    improvement = attack_improvement_over_seeds(all_metrics, num_resamples, seed)
    if improvement.estimate is not None:
        rows.append(
            AggregateRow(
                "claims/heldout_attacks/relative_improvement_of_mean_rates",
                (),
                improvement.estimate,
                improvement.low,
                improvement.high,
            )
        )
    return rows


def render_aggregate_table(rows: Sequence[AggregateRow]) -> str:
    """Render the rows as a markdown table."""

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    lines = ["| number | seeds | mean | 95% interval |", "|---|---|---|---|"]
    for row in rows:
        seeds = str(len(row.values)) if row.values else "paired"
        lines.append(
            f"| {row.name} | {seeds} | {number(row.mean)} | "
            f"[{number(row.low)}, {number(row.high)}] |"
        )
    return "\n".join(lines) + "\n"
