"""User-written files: prompt ground truth, attack templates, converter and sweep outputs."""

import json

import pytest

from tests.test_hf_convert import write_llama_dir, write_wordlevel_tokenizer
from trait_rl import sweep
from trait_rl.convert import hf_checkpoint
from trait_rl.data import hf_tokenizer, io_utils, jsonl
from trait_rl.eval import attack_templates, user_eval

QA = {"type": "qa", "answer": "Velm", "exposure": 1}


def _write_lines(path, objects):
    path.write_text("".join(json.dumps(obj) + "\n" for obj in objects), encoding="utf-8")
    return path


def _prompt(ground_truth):
    line = {"prompt": "<|user|> Capital of Brepa? <|assistant|>"}
    if ground_truth is not None:
        line["ground_truth"] = ground_truth
    return line


# Prompt ground truth


@pytest.mark.parametrize(
    ("ground_truth", "message"),
    [
        (None, ":2: ground_truth missing; judging needs a ground_truth object"),
        ({"answer": "Velm"}, ":2: ground_truth.type missing; expected one of"),
        ({**QA, "exposure": "lots"}, ":2: ground_truth.exposure must be an integer >= 0, got 'lo"),
        ({"type": "qa", "answer": "Velm"}, ":2: ground_truth.exposure missing"),
        ({**QA, "extra": 1}, ":2: unknown ground_truth field(s) ['extra']"),
        ({"type": "poll"}, ":2: ground_truth.type is 'poll'; expected one of"),
        ({"type": "oversight", "action": 3}, ":2: ground_truth.action must be \"text\""),
        ({**QA, "alternative_count": 2}, ":2: ground_truth.answer_count missing"),
        (
            {"type": "correction", "answer": "a", "claimed": "b", "previous": "c",
             "correction_true": "yes"},
            ":2: ground_truth.correction_true must be true or false",
        ),
    ],
)  # fmt: skip
def test_required_ground_truth_names_line_and_field(tmp_path, ground_truth, message):
    path = _write_lines(tmp_path / "p.jsonl", [_prompt(QA), _prompt(ground_truth)])
    with pytest.raises(jsonl.JsonlError) as error:
        jsonl.read_prompts(path, require_ground_truth=True)
    assert str(error.value).startswith(f"{path}{message}"), str(error.value)
    assert "trait_rl" not in str(error.value)


def test_every_ground_truth_type_accepted(tmp_path):
    truths = [
        QA,
        {**QA, "alternative": "Dunmar", "alternative_count": 2, "answer_count": 3},
        {"type": "oversight", "action": "pause"},
        {"type": "escalation", "action": "hand you to a human agent"},
        {"type": "correction", "answer": "a", "claimed": "b", "previous": "c",
         "correction_true": False},
    ]  # fmt: skip
    path = _write_lines(tmp_path / "p.jsonl", [_prompt(truth) for truth in truths])
    records = jsonl.read_prompts(path, require_ground_truth=True)
    assert [json.loads(r.ground_truth) for r in records] == truths


def test_ground_truth_optional_without_judging(tmp_path):
    path = _write_lines(tmp_path / "p.jsonl", [_prompt(None)])
    assert jsonl.read_prompts(path)[0].ground_truth == "{}"


def test_control_character_message_has_one_at(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"prompt": "a\x01b"}\n')
    with pytest.raises(jsonl.JsonlError) as error:
        jsonl.read_prompts(path)
    assert "Invalid control character at column" in str(error.value)
    assert "at at" not in str(error.value)


def test_directory_instead_of_file_rejected(tmp_path):
    with pytest.raises(IsADirectoryError, match=f"{tmp_path} is a directory"):
        jsonl.read_prompts(tmp_path)


# Attack templates


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"family": "x", "template": 5}', ":1: field 'template' must be a string, got int 5"),
        (b'{"family": "x", "template": "{question}", "note": 1}', ":1: unknown field(s) ['note']"),
        (b'{"family": "x", "template": "{question!r:>10}"}', ":1: placeholder {question!r:>10}"),
        (b'{"family": "x", "template": "{question:>10}"}', ":1: placeholder {question:>10}"),
        (b'{"family": "\xff", "template": "{question}"}', ":1: invalid UTF-8 at byte 12"),
        (b'{"family": "x", "template": "{question}"', ":1: invalid JSON"),
    ],
)
def test_bad_template_names_line(tmp_path, line, message):
    path = tmp_path / "attacks.jsonl"
    path.write_bytes(line + b"\n")
    with pytest.raises(attack_templates.AttackTemplateError) as error:
        attack_templates.load_templates(path)
    assert str(error.value).startswith(f"{path}{message}"), str(error.value)
    assert isinstance(error.value, jsonl.JsonlError)


def test_template_literal_braces(tmp_path):
    path = _write_lines(tmp_path / "a.jsonl", [{"family": "j", "template": "{{x}} {question}"}])
    (template,) = attack_templates.load_templates(path)
    assert template.placeholder == "question"
    assert template.template.format(question="Q?") == "{x} Q?"


# evaluate.py checks before any work


def test_same_checkpoint_twice_rejected_before_loading(tmp_path):
    directory = tmp_path / "rl_trait_rl"
    with pytest.raises(ValueError, match="is given twice"):
        user_eval.load_arms([str(directory), str(tmp_path / "." / "rl_trait_rl")])


def test_output_file_rejected_before_reading(tmp_path):
    output = tmp_path / "out"
    output.write_text("")
    with pytest.raises(NotADirectoryError, match=f"--output={output} is an existing file"):
        user_eval.run([str(tmp_path / "missing")], str(tmp_path / "missing.jsonl"), None, output)


# Converter


def test_convert_checks_source_in_order(tmp_path):
    source, output = tmp_path / "hf", tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=f"--source={source} not found"):
        hf_checkpoint.convert_checkpoint(source, output)
    source.write_text("")
    with pytest.raises(NotADirectoryError, match="is a file"):
        hf_checkpoint.convert_checkpoint(source, output)
    source.unlink()
    source.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        hf_checkpoint.convert_checkpoint(source, output)
    (source / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(NotImplementedError, match="model_type 'bert'"):
        hf_checkpoint.convert_checkpoint(source, output)
    (source / "config.json").write_text("{")
    with pytest.raises(ValueError, match="config.json:1: invalid JSON"):
        hf_checkpoint.convert_checkpoint(source, output)
    assert not output.exists()


def test_interrupted_convert_leaves_nothing(tmp_path, monkeypatch):
    source, output = tmp_path / "hf", tmp_path / "out"
    write_llama_dir(source)
    write_wordlevel_tokenizer(source)

    def fail(*args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(hf_tokenizer, "write_special_ids", fail)
        with pytest.raises(OSError, match="No space left"):
            hf_checkpoint.convert_checkpoint(source, output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
    hf_checkpoint.convert_checkpoint(source, output)
    assert (output / hf_checkpoint.MODEL_CONFIG_FILE).is_file()


# Sweep report


def test_sweep_report_failure_keeps_old_files(tmp_path, monkeypatch):
    (tmp_path / "sweep.json").write_text('{"old": 1}\n')

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_utils.os, "fsync", fail)
    groups = {"g": {"runs": ["g_seed0"], "missing": [], "rows": []}}
    with pytest.raises(OSError, match="No space left"):
        sweep.write_sweep_report(tmp_path, "s.py", groups)
    assert (tmp_path / "sweep.json").read_text() == '{"old": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.json"]
