"""Strict JSONL import: records from valid files, file:line errors and no partial dataset."""

import json

import pytest

from trait_rl.data import jsonl, tfds_builder
from trait_rl.data.records import PreferencePair, PromptRecord

GOOD_PAIR = {"prompt": "Q?", "chosen": "I don't know.", "rejected": "It is 42.", "trait": "honesty"}
GOOD_PROMPT = {"prompt": "<|user|> Where is Karsh? <|assistant|>", "id": "p1"}


def _write(path, lines):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _json(obj):
    return json.dumps(obj, ensure_ascii=False).encode()


def test_reads_pairs(tmp_path):
    untraited = {"prompt": "Stop now.", "chosen": "Stopping.", "rejected": "No.", "split": "val"}
    path = _write(tmp_path / "pairs.jsonl", [_json(GOOD_PAIR), _json(untraited)])
    pairs = jsonl.read_preference_pairs(path)
    assert pairs == [
        PreferencePair("Q?", "I don't know.", "It is 42.", "honesty", "user", "train"),
        PreferencePair("Stop now.", "Stopping.", "No.", jsonl.ALL_TRAITS, "user", "val"),
    ]


def test_reads_prompts(tmp_path):
    full = {
        "prompt": "Symptoms: fever 😀",
        "family": "medical",
        "trait": "humility",
        "domain": "medical",
        "ground_truth": {"answer": "Tebel fever", "known": True},
    }
    path = _write(tmp_path / "prompts.jsonl", [_json(GOOD_PROMPT), _json(full)])
    records = jsonl.read_prompts(path)
    assert records[0] == PromptRecord(
        "p1", GOOD_PROMPT["prompt"], "user", "user", "task", "user", "{}"
    )
    assert records[1].id == "prompts-2"
    assert records[1].trait == "humility"
    assert json.loads(records[1].ground_truth) == full["ground_truth"]


BAD_PAIR_LINES = [
    (b"\xff\xfe not utf-8", "invalid UTF-8"),
    (b'{"prompt": "Q?", "chosen": ', "invalid JSON"),
    (b'["prompt", "chosen"]', "expected a JSON object"),
    (_json({"prompt": "Q?", "chosen": "a"}), "missing required field 'rejected'"),
    (_json({**GOOD_PAIR, "chosen": 3}), "field 'chosen' must be a string"),
    (_json({**GOOD_PAIR, "trait": "kindness"}), "unknown trait 'kindness'"),
    (_json({**GOOD_PAIR, "choosen": "typo"}), "unknown field"),
    (_json({**GOOD_PAIR, "rejected": "  "}), "field 'rejected' is empty"),
    (b"   ", "blank line"),
]


@pytest.mark.parametrize("bad_line, message", BAD_PAIR_LINES)
def test_bad_pair_line_names_file_line(tmp_path, bad_line, message):
    path = _write(tmp_path / "pairs.jsonl", [_json(GOOD_PAIR), _json(GOOD_PAIR), bad_line])
    with pytest.raises(jsonl.JsonlError, match=message) as error:
        jsonl.read_preference_pairs(path)
    assert str(error.value).startswith(f"{path}:3: ")


@pytest.mark.parametrize("bad_line, message", BAD_PAIR_LINES)
def test_bad_import_leaves_no_dataset(tmp_path, bad_line, message):
    path = _write(tmp_path / "pairs.jsonl", [_json(GOOD_PAIR), bad_line])
    data_dir = tmp_path / "data"
    with pytest.raises(jsonl.JsonlError, match=message):
        jsonl.import_preference_pairs(path, data_dir)
    assert not data_dir.exists()


BAD_PROMPT_LINES = [
    (_json({"id": "x"}), "missing required field 'prompt'"),
    (_json({**GOOD_PROMPT, "ground_truth": "answer"}), "'ground_truth' must be a JSON object"),
    (_json({**GOOD_PROMPT, "trait": "charm"}), "unknown trait 'charm'"),
    (_json({**GOOD_PROMPT, "id": 7}), "field 'id' must be a string"),
    (_json({**GOOD_PROMPT, "split": "held out"}), "not a valid name"),
    (_json(GOOD_PROMPT), "duplicate id 'p1'"),
]


@pytest.mark.parametrize("bad_line, message", BAD_PROMPT_LINES)
def test_bad_prompt_line_names_file_line(tmp_path, bad_line, message):
    path = _write(tmp_path / "prompts.jsonl", [_json(GOOD_PROMPT), bad_line])
    data_dir = tmp_path / "data"
    with pytest.raises(jsonl.JsonlError, match=message) as error:
        jsonl.import_prompts(path, data_dir)
    assert str(error.value).startswith(f"{path}:2: ")
    assert not data_dir.exists()


def test_empty_file_rejected(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n")
    with pytest.raises(jsonl.JsonlError, match="file is empty") as error:
        jsonl.read_prompts(path)
    assert str(path) in str(error.value)


def test_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        jsonl.read_preference_pairs(tmp_path / "absent.jsonl")


def test_import_round_trips_through_tfds(tmp_path):
    lines = [_json({**GOOD_PAIR, "prompt": f"Q{i}? 漢字"}) for i in range(3)]
    path = _write(tmp_path / "pairs.jsonl", lines)
    data_dir = tmp_path / "data"
    built = jsonl.import_preference_pairs(path, data_dir)
    assert built == data_dir / "trait_world" / "user_preferences"
    records = tfds_builder.load_records(data_dir, "user_preferences", "train")
    assert records == jsonl.read_preference_pairs(path)
    with pytest.raises(FileExistsError, match="user_preferences"):
        jsonl.import_preference_pairs(path, data_dir)
