"""One metric writer for every phase: TensorBoard event files plus a JSONL file of the same values.

Names use slashes (`sft/loss`, `reward/accuracy/honesty`) so that TensorBoard groups them and the
JSONL lines can be filtered by prefix. Each JSONL line is one call:
`{"step": 5, "sft/loss": 1.25, ...}` for scalars, `{"step": 0, "hparams": {...}}` for
hyperparameters and `{"step": 5, "texts": {...}}` for text samples.
"""

import json
import math
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorboardX
from tensorboardX import summary as tb_summary

METRICS_FILE = "metrics.jsonl"
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(
            f"invalid metric name {name!r}: use letters, digits, '_', '.', '-' and '/' "
            "between parts, for example 'sft/loss'"
        )


def _to_float(name: str, value: Any) -> float:
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"metric {name!r} has shape {array.shape}; expected a scalar")
    return float(array.reshape(()))


def _json_number(value: float) -> float | None:
    # JSON has no NaN or Inf, so non-finite values are written as null.
    return value if math.isfinite(value) else None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings (a ConfigDict's `to_dict()` too) into slash-separated keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def _hparam_value(value: Any) -> bool | int | float | str:
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


class MetricWriter:
    """Writes scalars, hyperparameters and text samples to TensorBoard and `metrics.jsonl`.

    On a multi-host run only process 0 should write: pass `enabled=False` elsewhere, and every
    call becomes a no-op so callers need no branches.
    """

    def __init__(self, logdir: str | pathlib.Path, *, enabled: bool = True):
        self.logdir = pathlib.Path(logdir)
        self.enabled = enabled
        self._summary = None
        self._jsonl = None
        if enabled:
            self.logdir.mkdir(parents=True, exist_ok=True)
            self._summary = tensorboardX.SummaryWriter(logdir=str(self.logdir))
            self._jsonl = open(self.logdir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115

    def _append(self, record: dict[str, Any]) -> None:
        self._jsonl.write(json.dumps(record, allow_nan=False) + "\n")
        self._jsonl.flush()

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Write scalar metrics (Python numbers or size-1 arrays) at `step`."""
        if not self.enabled:
            return
        values = {}
        for name, value in scalars.items():
            _check_name(name)
            values[name] = _to_float(name, value)
        for name, value in values.items():
            self._summary.add_scalar(name, value, global_step=int(step))
        self._append({"step": int(step), **{k: _json_number(v) for k, v in values.items()}})

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        """Write the hyperparameters once, at step 0, to the TensorBoard HParams tab and JSONL.

        Nested mappings are flattened to slash names; values other than bool, int, float and str
        (tuples, None) are written as their `str()`.
        """
        if not self.enabled:
            return
        flat = {name: _hparam_value(value) for name, value in flatten(hparams).items()}
        experiment, session_start, session_end = tb_summary.hparams(flat, {})
        # SummaryWriter.add_hparams would open a sub-directory per call, so the three summaries
        # go straight into this run's event file instead.
        for proto in (experiment, session_start, session_end):
            self._summary.file_writer.add_summary(proto, global_step=0)
        self._summary.add_text("hparams", json.dumps(flat, indent=1, sort_keys=True), 0)
        self._append({"step": 0, "hparams": flat})

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        """Write text samples (for example prompts with their greedy responses) at `step`."""
        if not self.enabled:
            return
        for name, text in texts.items():
            _check_name(name)
            self._summary.add_text(name, str(text), global_step=int(step))
        self._append({"step": int(step), "texts": {k: str(v) for k, v in texts.items()}})

    def flush(self) -> None:
        if self.enabled:
            self._summary.flush()
            self._jsonl.flush()

    def close(self) -> None:
        """Flush and close both files; later calls do nothing."""
        if self.enabled and self._summary is not None:
            self._summary.close()
            self._jsonl.close()
            self._summary = None
            self._jsonl = None
            self.enabled = False

    def __enter__(self) -> "MetricWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
