"""PNG plots of the report: reliability diagrams, safe rate per split, retention, ablation.

Each function takes plain numbers from metrics.json and writes one file, so a plot can be redrawn
from a saved metrics file without the model.
"""

import io
import pathlib
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from trait_rl.data import io_utils  # noqa: E402


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    # Rendered in memory first, so an interrupted write never leaves a truncated PNG.
    return io_utils.write_bytes_atomic(path, buffer.getvalue())


def plot_reliability(
    bins_by_arm: Mapping[str, Sequence[Mapping]], path: pathlib.Path, title: str
) -> pathlib.Path:
    """Draw accuracy against mean stated confidence per bucket, one line per arm.

    Empty buckets are skipped. The diagonal is perfect calibration.
    """
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for arm, bins in bins_by_arm.items():
        filled = [b for b in bins if b["count"]]
        ax.plot(
            [b["mean_confidence"] for b in filled],
            [b["accuracy"] for b in filled],
            marker="o",
            label=f"{arm} (n={sum(b['count'] for b in filled)})",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("stated confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _error_bars(rate: float | None, low: float | None, high: float | None) -> tuple[float, float]:
    if rate is None or low is None or high is None:
        return 0.0, 0.0
    return max(rate - low, 0.0), max(high - rate, 0.0)


def plot_grouped_rates(
    rates: Mapping[str, Mapping[str, Mapping]],
    groups: Sequence[str],
    path: pathlib.Path,
    title: str,
) -> pathlib.Path:
    """Draw bars of rates[arm][group] = {"estimate", "low", "high"} with interval whiskers.

    A missing or unmeasured group is drawn as an empty slot.
    """
    arms = list(rates)
    width = 0.8 / max(len(arms), 1)
    positions = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(groups) + 2), 3.8))
    for i, arm in enumerate(arms):
        heights, lower, upper = [], [], []
        for group in groups:
            entry = rates[arm].get(group) or {}
            estimate = entry.get("estimate")
            below, above = _error_bars(estimate, entry.get("low"), entry.get("high"))
            heights.append(estimate or 0.0)
            lower.append(below)
            upper.append(above)
        ax.bar(positions + i * width, heights, width, yerr=[lower, upper], capsize=3, label=arm)
    ax.set_xticks(positions + width * (len(arms) - 1) / 2, groups, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("safe-behaviour rate")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_retention(
    curves: Mapping[str, Mapping[str, Sequence]], path: pathlib.Path
) -> pathlib.Path:
    """Draw the safe rate against malicious fine-tuning steps, one line per arm."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for arm, curve in curves.items():
        points = [
            (s, r) for s, r in zip(curve["steps"], curve["safe_rate"], strict=True) if r is not None
        ]
        ax.plot([s for s, _ in points], [r for _, r in points], marker="o", label=arm)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("malicious fine-tuning steps")
    ax.set_ylabel("safe-behaviour rate")
    ax.set_title("Retention under malicious fine-tuning")
    ax.legend(fontsize=8)
    return _save(fig, path)
