"""Sweeps: many pipeline runs that differ by a few config overrides, and their joint report.

A sweep file (configs/sweeps/*.py) defines `get_sweep() -> list[dict]`. Each dict describes one
run: the key `name` (required) is the run's directory under the sweep workdir, the key `group`
(optional, default: the name) marks the runs that are seeds of one setting, and every other
key is a dotted config field with its value, for example `{"name": "ppo_seed1", "group": "ppo",
"rl.algorithm": "ppo", "seed": 1, "data.seed": 1}`.

Runs of one group are aggregated into means and 95% intervals across seeds; different groups are
never pooled, because their numbers measure different settings.
"""

import collections
import dataclasses
import json
import logging
import os
import pathlib
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections

from trait_rl import config_files, configuration
from trait_rl.data import io_utils
from trait_rl.eval import aggregate, plots

RESERVED_KEYS = ("name", "group")
METRICS_FILE = "metrics.json"
PIPELINE_SCRIPT = "scripts/run_pipeline.py"


class SweepError(ValueError):
    """Error for an invalid sweep file or run. The message names the sweep file and the run."""


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """One pipeline run of a sweep: its directory name, its seed group and its overrides."""

    name: str
    group: str
    overrides: Mapping[str, Any]


def seed_overrides(seed: int) -> dict[str, int]:
    """Return the overrides of one seed: parameter init and data order, and the trait world."""
    return {"seed": seed, "data.seed": seed}


def grid(groups: Mapping[str, Mapping[str, Any]], seeds: Sequence[int]) -> list[dict]:
    """Cross every group of overrides with every seed; runs are named `<group>_seed<seed>`."""
    runs = []
    for group, overrides in groups.items():
        for seed in seeds:
            runs.append(
                {
                    "name": f"{group}_seed{seed}",
                    "group": group,
                    **overrides,
                    **seed_overrides(seed),
                }
            )
    return runs


def _load_module(path: pathlib.Path):
    if not path.is_file():
        raise SweepError(f"{path}: sweep file not found")
    module = config_files.load_module(path, f"trait_rl_sweep_{path.stem}")
    if not callable(getattr(module, "get_sweep", None)):
        raise SweepError(f"{path}: get_sweep() not found; define it to return a list of run dicts")
    return module


def _parse_run(path: pathlib.Path, index: int, entry: Any) -> SweepRun:
    where = f"{path}: run {index}"
    if not isinstance(entry, Mapping):
        raise SweepError(f"{where}: expected a dict of overrides, got {type(entry).__name__}")
    name = entry.get("name")
    if not isinstance(name, str) or not name or name in (".", "..") or os.sep in name:
        raise SweepError(
            f"{where}: invalid name {name!r}; every run needs a non-empty 'name' usable as a "
            "directory name"
        )
    group = entry.get("group", name)
    if not isinstance(group, str) or not group:
        raise SweepError(f"{where} ({name!r}): invalid group {group!r}; expected a string")
    overrides = {key: value for key, value in entry.items() if key not in RESERVED_KEYS}
    return SweepRun(name=name, group=group, overrides=overrides)


def load_sweep(path: str | os.PathLike) -> list[SweepRun]:
    """Import a sweep file and parse its `get_sweep()` runs; names must be unique."""
    path = pathlib.Path(path)
    entries = _load_module(path).get_sweep()
    if not isinstance(entries, Sequence) or not entries:
        raise SweepError(f"{path}: get_sweep() returned {entries!r}; expected a non-empty list")
    runs = [_parse_run(path, index, entry) for index, entry in enumerate(entries)]
    counts = collections.Counter(run.name for run in runs)
    duplicates = sorted(name for name, count in counts.items() if count > 1)
    if duplicates:
        raise SweepError(f"{path}: duplicate run names {duplicates}; every run needs its own name")
    return runs


def _field_line(sweep_path: pathlib.Path, field: str) -> str:
    """Return `path:line` of the first line quoting `field`, or the path when none does."""
    try:
        lines = sweep_path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return str(sweep_path)
    for number, line in enumerate(lines, start=1):
        if f'"{field}"' in line or f"'{field}'" in line:
            return f"{sweep_path}:{number}"
    return str(sweep_path)


def set_field(config: ml_collections.ConfigDict, field: str, value: Any) -> None:
    """Set the dotted `field` of `config` to `value`; raise KeyError for an unknown field
    and TypeError for a section or a value of the wrong type.

    Only leaf fields can be set, because a scheduler command line (`--config.a.b=v`) can only
    override leaves.
    """
    parts = field.split(".")
    node = config
    for depth, part in enumerate(parts):
        parent = ".".join(parts[:depth]) or "the config"
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            raise KeyError(f"unknown config field {field!r}: {parent} has no field {part!r} "
                           f"(known: {', '.join(known)})")  # fmt: skip
        if depth < len(parts) - 1:
            node = node[part]
    current = node[parts[-1]]
    if isinstance(current, ml_collections.ConfigDict):
        example = next(iter(current.keys()), "<leaf>")
        raise TypeError(f"config field {field!r} is a section, so override its leaves, for "
                        f"example {field}.{example}")  # fmt: skip
    if isinstance(value, Mapping):
        raise TypeError(f"invalid value {value!r} for config field {field!r}: a dict can only "
                        "replace a section, and this field is a leaf")  # fmt: skip
    try:
        node[parts[-1]] = value
    except TypeError:
        expected = f"expected type {type(current).__name__}, like its default {current!r}"
        raise TypeError(f"invalid value {value!r} for config field {field!r}: {expected}") from None


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """Return a copy of `config` with every dotted override applied; `config` is unchanged."""
    copy = ml_collections.ConfigDict(config.to_dict())
    for field, value in overrides.items():
        set_field(copy, field, value)
    return copy


def run_configs(
    config: ml_collections.ConfigDict,
    runs: Sequence[SweepRun],
    sweep_path: str | os.PathLike,
    device_count: int | None = None,
) -> list[ml_collections.ConfigDict]:
    """Build and validate every run's config before any run starts.

    Errors name the sweep file (with the line that quotes the field, when one does), the run and
    the field, so a typo in run 20 fails before runs 1 to 19 spend hours.
    """
    sweep_path = pathlib.Path(sweep_path)
    configs = []
    for run in runs:
        copy = ml_collections.ConfigDict(config.to_dict())
        for field, value in run.overrides.items():
            try:
                set_field(copy, field, value)
            except (KeyError, TypeError, ValueError) as error:
                message = error.args[0] if error.args else str(error)
                where = _field_line(sweep_path, field)
                raise SweepError(f"{where}: run {run.name!r}: {message}") from None
        try:
            configuration.validate(copy, device_count)
        except configuration.ConfigError as error:
            raise SweepError(f"{sweep_path}: run {run.name!r}: {error}") from None
        configs.append(copy)
    return configs


def _literal(value: Any) -> str:
    """Write a tuple element as a Python literal, strings in double quotes (valid for
    `ast.literal_eval`, and readable inside the single quotes of a shell word)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return format_override_value(value)
    return repr(value)


def format_override_value(value: Any) -> str:
    """Format a value the way `ml_collections.config_flags` parses it back on a command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        items = [_literal(item) for item in value]
        return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def run_command(
    config_arg: str,
    run: SweepRun,
    workdir: str | os.PathLike,
    base_overrides: Mapping[str, Any] | None = None,
    python: str = "python",
) -> str:
    """Return the shell command that runs one sweep run alone, for a cluster scheduler.

    `base_overrides` (the sweep's own `--config.*` flags) apply to every run; the run's
    overrides win where both set a field.
    """
    overrides = {**(base_overrides or {}), **run.overrides}
    words = [
        python,
        PIPELINE_SCRIPT,
        f"--config={config_arg}",
        f"--workdir={pathlib.Path(workdir) / run.name}",
    ]
    words += [f"--config.{field}={format_override_value(v)}" for field, v in overrides.items()]
    return " ".join(shlex.quote(word) for word in words)


RunFn = Callable[[ml_collections.ConfigDict, pathlib.Path, str], Any]


def run_sweep(
    runs: Sequence[SweepRun],
    configs: Sequence[ml_collections.ConfigDict],
    workdir: str | os.PathLike,
    config_arg: str,
    run_fn: RunFn,
) -> list[pathlib.Path]:
    """Run each run into WORKDIR/<name>/ one after another; return their metrics.json paths.

    `run_fn(config, run_dir, config_arg)` is `pipeline.run_pipeline`. A run whose metrics.json
    already exists is skipped, so an interrupted sweep resumes at the first unfinished run.
    """
    workdir = pathlib.Path(workdir)
    paths = []
    for index, (run, config) in enumerate(zip(runs, configs, strict=True), start=1):
        run_dir = workdir / run.name
        metrics_path = run_dir / METRICS_FILE
        if metrics_path.exists():
            logging.info("run %d/%d %s: %s exists, skipped", index, len(runs), run.name,
                         metrics_path)  # fmt: skip
        else:
            logging.info("run %d/%d %s starts in %s", index, len(runs), run.name, run_dir)
            run_fn(config, run_dir, config_arg)
        paths.append(metrics_path)
    return paths


def aggregate_sweep(
    runs: Sequence[SweepRun], workdir: str | os.PathLike, num_resamples: int, seed: int = 0
) -> dict:
    """Aggregate the finished runs of each group across seeds.

    Returns {group: {"runs": [finished names], "missing": [names without metrics.json],
    "rows": [AggregateRow as dict]}}. Raises when no run has finished.
    """
    workdir = pathlib.Path(workdir)
    by_group: dict[str, list[SweepRun]] = {}
    for run in runs:
        by_group.setdefault(run.group, []).append(run)
    groups = {}
    for group, group_runs in by_group.items():
        finished = [r for r in group_runs if (workdir / r.name / METRICS_FILE).exists()]
        paths = [workdir / r.name / METRICS_FILE for r in finished]
        rows = aggregate.aggregate_reports(paths, num_resamples, seed) if paths else []
        groups[group] = {
            "runs": [r.name for r in finished],
            "missing": [r.name for r in group_runs if r not in finished],
            "rows": [dataclasses.asdict(row) for row in rows],
        }
    if not any(group["runs"] for group in groups.values()):
        raise SweepError(
            f"{workdir}: no run has a {METRICS_FILE} yet. Run the sweep (scripts/sweep.py "
            "without --only_aggregate) or the printed commands first"
        )
    return groups


def _rows(group_summary: Mapping) -> list[aggregate.AggregateRow]:
    return [
        aggregate.AggregateRow(**{**row, "values": tuple(row["values"])})
        for row in group_summary["rows"]
    ]


def safe_rates_by_split(groups: Mapping[str, Mapping]) -> dict[str, dict[str, dict]]:
    """Pick the `<arm>/<split>/safe_rate` rows: {split: {arm: {group: {estimate, low, high}}}}."""
    by_split: dict[str, dict[str, dict]] = {}
    for group, group_summary in groups.items():
        for row in group_summary["rows"]:
            parts = row["name"].split("/")
            if len(parts) != 3 or parts[2] != "safe_rate" or parts[0] == "claims":
                continue
            arm, split, _ = parts
            interval = {"estimate": row["mean"], "low": row["low"], "high": row["high"]}
            by_split.setdefault(split, {}).setdefault(arm, {})[group] = interval
    return by_split


def render_sweep_markdown(sweep_path: str, groups: Mapping[str, Mapping], plot_names) -> str:
    """Render sweep.md: one table per group, with the runs it covers and those still missing."""
    lines = [
        "# Sweep",
        "",
        f"Sweep file: `{sweep_path}`. Each table aggregates the runs of one group (the same "
        "setting under different seeds): the mean across seeds and a 95% percentile-bootstrap "
        "interval over seeds.",
        "",
    ]
    for name in plot_names:
        lines += [f"![{name}](plots/{name}.png)", ""]
    for group, group_summary in groups.items():
        lines += [f"## {group}", "", f"Runs: {', '.join(group_summary['runs']) or 'none'}."]
        if group_summary["missing"]:
            lines.append(f"Missing (no {METRICS_FILE}): {', '.join(group_summary['missing'])}.")
        lines.append("")
        if group_summary["rows"]:
            lines.append(aggregate.render_aggregate_table(_rows(group_summary)))
    return "\n".join(lines)


def write_sweep_report(
    workdir: str | os.PathLike, sweep_path: str, groups: Mapping[str, Mapping]
) -> pathlib.Path:
    """Write WORKDIR/sweep.md, WORKDIR/sweep.json and one safe-rate plot per split; return the
    markdown path."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    plot_names = []
    for split, rates in sorted(safe_rates_by_split(groups).items()):
        name = f"sweep_{split}_safe_rate"
        title = f"safe-behaviour rate on {split}, mean over seeds (95% interval)"
        plots.plot_grouped_rates(rates, list(groups), workdir / "plots" / f"{name}.png", title)
        plot_names.append(name)
    summary = {"sweep": sweep_path, "groups": groups}
    json_text = json.dumps(summary, indent=2) + "\n"
    io_utils.write_bytes_atomic(workdir / "sweep.json", json_text.encode("utf-8"))
    markdown_path = workdir / "sweep.md"
    markdown = render_sweep_markdown(sweep_path, groups, plot_names)
    io_utils.write_bytes_atomic(markdown_path, markdown.encode("utf-8"))
    return markdown_path
