"""MetricWriter: JSONL lines and TensorBoard tags for scalars, hyperparameters and texts."""

import json
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from trait_rl.training.metrics import METRICS_FILE, MetricWriter


def _events(logdir):
    """Parse every TFRecord in the run's event files (length, crc, payload, crc)."""
    events = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            payload = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            event = event_pb2.Event()
            event.ParseFromString(payload)
            events.append(event)
    return events


def _scalar_tags(events):
    return {
        (value.tag, event.step): value.simple_value
        for event in events
        for value in event.summary.value
        if value.HasField("simple_value")
    }


def test_scalars_go_to_jsonl_and_events(tmp_path):
    with MetricWriter(tmp_path) as writer:
        writer.write_scalars(5, {"sft/loss": np.float32(1.5), "sft/accuracy": 0.25})
        writer.write_scalars(10, {"reward/accuracy/honesty": np.array(0.75)})

    lines = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert lines == [
        {"step": 5, "sft/loss": 1.5, "sft/accuracy": 0.25},
        {"step": 10, "reward/accuracy/honesty": 0.75},
    ]
    scalars = _scalar_tags(_events(tmp_path))
    assert scalars[("sft/loss", 5)] == pytest.approx(1.5)
    assert scalars[("sft/accuracy", 5)] == pytest.approx(0.25)
    assert scalars[("reward/accuracy/honesty", 10)] == pytest.approx(0.75)


def test_hparams_and_texts(tmp_path):
    with MetricWriter(tmp_path) as writer:
        writer.write_hparams({"sft": {"learning_rate": 3e-3, "steps": 700}, "arms": ("a", "b")})
        writer.write_texts(3, {"samples/greedy": "<|user|> hi <|assistant|> hello"})

    lines = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert lines[0] == {
        "step": 0,
        "hparams": {"sft/learning_rate": 3e-3, "sft/steps": 700, "arms": "('a', 'b')"},
    }
    assert lines[1] == {"step": 3, "texts": {"samples/greedy": "<|user|> hi <|assistant|> hello"}}
    tags = {value.tag for event in _events(tmp_path) for value in event.summary.value}
    assert "_hparams_/experiment" in tags
    assert "hparams/text_summary" in tags
    assert "samples/greedy/text_summary" in tags


def test_non_finite_scalar_is_null_in_jsonl(tmp_path):
    with MetricWriter(tmp_path) as writer:
        writer.write_scalars(1, {"sft/loss": float("nan")})
    line = json.loads((tmp_path / METRICS_FILE).read_text())
    assert line == {"step": 1, "sft/loss": None}


@pytest.mark.parametrize("name", ["sft loss", "/sft", "sft//loss", ""])
def test_invalid_name_rejected(tmp_path, name):
    with MetricWriter(tmp_path) as writer, pytest.raises(ValueError, match="invalid metric name"):
        writer.write_scalars(1, {name: 1.0})


def test_non_scalar_rejected(tmp_path):
    with MetricWriter(tmp_path) as writer, pytest.raises(ValueError, match="expected a scalar"):
        writer.write_scalars(1, {"sft/loss": np.ones(3)})


def test_disabled_writer_writes_nothing(tmp_path):
    writer = MetricWriter(tmp_path / "run", enabled=False)
    writer.write_scalars(1, {"sft/loss": 1.0})
    writer.write_hparams({"a": 1})
    writer.close()
    assert not (tmp_path / "run").exists()
