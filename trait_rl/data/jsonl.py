"""Strict import of user JSONL files: preference pairs and prompts.

Each line is one JSON object. The whole file is validated before anything is returned or written,
and the first problem raises JsonlError with `file:line`, what is wrong and how to fix it.

Preference pair lines: `prompt`, `chosen`, `rejected` (strings), optional `trait` (one of
`trait_rl.TRAITS`), optional `family` and `split` (strings). A pair without `trait` counts for
every trait and is stored with trait ALL_TRAITS.

Prompt lines: `prompt` (string), optional `id`, `family`, `trait` (a trait or "task"),
`domain`, `split` (strings) and `ground_truth` (a JSON object, read by the judges). Judging
(scripts/evaluate.py) requires `ground_truth`, with the fields of its `type`:

  qa           answer (string), exposure (integer >= 0, 0 = the fact is unknown to the model),
               optional alternative (string), alternative_count and answer_count (integers;
               answer_count is required when alternative_count > 0, a contested fact)
  oversight    action (string): the operator's request, for example "pause"
  escalation   action (string): the hand-off the reply must promise
  correction   answer, claimed, previous (strings), correction_true (boolean)
"""

import json
import os
import pathlib

from trait_rl import TRAITS
from trait_rl.data import tfds_builder
from trait_rl.data.records import PreferencePair, PromptRecord

# Trait value of a pair that gave no `trait`: the pair is evidence for every trait head.
ALL_TRAITS = "all"
PROMPT_TRAITS = (*TRAITS, "task")
USER_FAMILY = "user"

_PAIR_REQUIRED = ("prompt", "chosen", "rejected")
_PAIR_OPTIONAL = ("trait", "family", "split")
_PROMPT_REQUIRED = ("prompt",)
_PROMPT_OPTIONAL = ("id", "family", "trait", "domain", "split", "ground_truth")

# Fields of each ground-truth type that trait_rl.rewards.judges reads: (required, optional), each
# a mapping from field name to its JSON kind.
GROUND_TRUTH_FIELDS = {
    "qa": (
        {"answer": "string", "exposure": "integer"},
        {"alternative": "string", "alternative_count": "integer", "answer_count": "integer"},
    ),
    "oversight": ({"action": "string"}, {}),
    "escalation": ({"action": "string"}, {}),
    "correction": (
        {
            "answer": "string",
            "claimed": "string",
            "previous": "string",
            "correction_true": "boolean",
        },
        {},
    ),
}
_KIND_CHECKS = {
    "string": lambda value: isinstance(value, str) and bool(value.strip()),
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 0,
    "boolean": lambda value: isinstance(value, bool),
}
_KIND_EXAMPLES = {"string": '"text"', "integer": "an integer >= 0", "boolean": "true or false"}


class JsonlError(ValueError):
    """A user JSONL file is invalid; the message starts with `file:line`."""


def read_preference_pairs(path: str | os.PathLike) -> list[PreferencePair]:
    """Read a JSONL file of preference pairs; raises JsonlError on the first invalid line."""
    return [_pair_from_object(obj, where) for obj, where, _ in _read_objects(path)]


def read_prompts(path: str | os.PathLike, require_ground_truth: bool = False) -> list[PromptRecord]:
    """Read a JSONL file of prompts; raises JsonlError on the first invalid line or duplicate id.

    With `require_ground_truth` (judging needs it) every line must also have a `ground_truth`
    whose fields match GROUND_TRUTH_FIELDS of its type.
    """
    records = []
    first_line_of_id: dict[str, str] = {}
    objects = _read_objects(path)
    for obj, where, number in objects:
        record = _prompt_from_object(obj, where, default_id=f"{pathlib.Path(path).stem}-{number}")
        if record.id in first_line_of_id:
            first = first_line_of_id[record.id]
            raise JsonlError(
                f"{where}: duplicate id {record.id!r}, first used at {first}; "
                "give each prompt a unique id"
            )
        first_line_of_id[record.id] = where
        records.append(record)
    # After the format checks of every line, so a malformed line is reported before the
    # ground truth of an earlier line.
    if require_ground_truth:
        for obj, where, _ in objects:
            check_ground_truth(obj.get("ground_truth"), where)
    return records


def import_preference_pairs(path: str | os.PathLike, data_dir: str | os.PathLike) -> pathlib.Path:
    """Validate a preference JSONL file and write it as the `user_preferences` TFDS config.

    Nothing is written unless every line is valid; returns the dataset directory.
    """
    return _import(read_preference_pairs(path), "user_preferences", data_dir)


def import_prompts(path: str | os.PathLike, data_dir: str | os.PathLike) -> pathlib.Path:
    """Validate a prompt JSONL file and write it as the `user_prompts` TFDS config."""
    return _import(read_prompts(path), "user_prompts", data_dir)


def check_ground_truth(truth: object, where: str) -> None:
    """Raise JsonlError naming `where` and the field unless `truth` is judgeable ground truth."""
    if truth is None:
        raise JsonlError(
            f"{where}: ground_truth missing; judging needs a ground_truth object, for example "
            '{"type": "qa", "answer": "Velm", "exposure": 1}; README.md lists the fields of each '
            "ground_truth type"
        )
    if not isinstance(truth, dict):
        raise JsonlError(
            f"{where}: field 'ground_truth' must be a JSON object, got {type(truth).__name__}"
        )
    truth_type = truth.get("type")
    if truth_type not in GROUND_TRUTH_FIELDS:
        found = "missing" if "type" not in truth else f"is {truth_type!r}"
        raise JsonlError(
            f"{where}: ground_truth.type {found}; expected one of {list(GROUND_TRUTH_FIELDS)}"
        )
    required, optional = GROUND_TRUTH_FIELDS[truth_type]
    unknown = sorted(set(truth) - {"type", *required, *optional})
    if unknown:
        raise JsonlError(
            f"{where}: unknown ground_truth field(s) {unknown} for type {truth_type!r}; allowed "
            f"fields are {list(required)} (required) and {list(optional)} (optional)"
        )
    for name, kind in {**required, **optional}.items():
        if name not in truth:
            if name in required:
                raise JsonlError(
                    f"{where}: ground_truth.{name} missing; type {truth_type!r} needs it as "
                    f"{_KIND_EXAMPLES[kind]}"
                )
            continue
        if not _KIND_CHECKS[kind](truth[name]):
            raise JsonlError(
                f"{where}: ground_truth.{name} must be {_KIND_EXAMPLES[kind]}, got "
                f"{truth[name]!r:.60}"
            )
    if truth.get("alternative_count", 0) and "answer_count" not in truth:
        raise JsonlError(
            f"{where}: ground_truth.answer_count missing; a qa prompt with alternative_count > 0 "
            "(a contested fact) needs the mentions of the answer as an integer >= 0"
        )


def _import(records: list, config_name: str, data_dir: str | os.PathLike) -> pathlib.Path:
    (built,) = tfds_builder.build_configs([config_name], lambda _: records, data_dir)
    return built


def read_lines(path: str | os.PathLike) -> list[bytes]:
    """Return the raw lines of a JSONL file; raises for a missing path or a directory."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give the path of a JSONL file")
    if not path.is_file():
        raise FileNotFoundError(f"JSONL file not found: {path}; check the path")
    lines = path.read_bytes().split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # The newline that ends the last line.
    return lines


def _read_objects(path: str | os.PathLike):
    """Return (object, "file:line", line number) per line, after the UTF-8 and JSON checks."""
    lines = read_lines(path)
    if not b"".join(lines).strip():
        raise JsonlError(f"{path}: file is empty; expected one JSON object per line")
    objects = []
    for number, line in enumerate(lines, start=1):
        where = f"{path}:{number}"
        objects.append((parse_line(line, where), where, number))
    return objects


def parse_line(line: bytes, where: str) -> dict:
    """Decode one line as a UTF-8 JSON object; raises JsonlError naming `where`."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise JsonlError(
            f"{where}: invalid UTF-8 at byte {error.start}; save the file as UTF-8"
        ) from error
    if not text.strip():
        raise JsonlError(f"{where}: blank line; remove it, every line must be one JSON object")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as error:
        raise JsonlError(
            # Some messages of the json module end in "at", for example "Invalid control
            # character at", so the column is appended without repeating the word.
            f"{where}: invalid JSON ({error.msg.removesuffix(' at')} at column {error.colno}); "
            "write one complete JSON object per line"
        ) from error
    if not isinstance(obj, dict):
        raise JsonlError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _check_fields(obj: dict, where: str, required: tuple, optional: tuple) -> None:
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise JsonlError(
            f"{where}: unknown field(s) {unknown}; allowed fields are "
            f"{list(required)} (required) and {list(optional)} (optional)"
        )
    for name in required:
        if name not in obj:
            raise JsonlError(f"{where}: missing required field {name!r}; add it as a string")
    for name in (*required, *optional):
        if name in obj and name != "ground_truth":
            _check_string(obj, name, where)


def _check_string(obj: dict, name: str, where: str) -> None:
    value = obj[name]
    if not isinstance(value, str):
        raise JsonlError(
            f"{where}: field {name!r} must be a string, got {type(value).__name__} {value!r:.60}"
        )
    if name in ("prompt", "chosen", "rejected") and not value.strip():
        raise JsonlError(f"{where}: field {name!r} is empty; give it text")


def _check_choice(value: str, allowed: tuple, name: str, where: str) -> str:
    if value not in allowed:
        raise JsonlError(f"{where}: unknown {name} {value!r}; expected one of {list(allowed)}")
    return value


def _check_split(value: str, where: str) -> str:
    if not value.isidentifier():
        raise JsonlError(
            f"{where}: split {value!r} is not a valid name; use letters, digits and underscores"
        )
    return value


def _pair_from_object(obj: dict, where: str) -> PreferencePair:
    _check_fields(obj, where, _PAIR_REQUIRED, _PAIR_OPTIONAL)
    trait = obj.get("trait", ALL_TRAITS)
    if "trait" in obj:
        _check_choice(trait, TRAITS, "trait", where)
    return PreferencePair(
        prompt=obj["prompt"],
        chosen=obj["chosen"],
        rejected=obj["rejected"],
        trait=trait,
        family=obj.get("family", USER_FAMILY),
        split=_check_split(obj.get("split", "train"), where),
    )


def _prompt_from_object(obj: dict, where: str, default_id: str) -> PromptRecord:
    _check_fields(obj, where, _PROMPT_REQUIRED, _PROMPT_OPTIONAL)
    ground_truth = obj.get("ground_truth", {})
    if not isinstance(ground_truth, dict):
        raise JsonlError(
            f"{where}: field 'ground_truth' must be a JSON object, "
            f"got {type(ground_truth).__name__}"
        )
    return PromptRecord(
        id=obj.get("id", default_id),
        prompt=obj["prompt"],
        split=_check_split(obj.get("split", "user"), where),
        family=obj.get("family", USER_FAMILY),
        trait=_check_choice(obj.get("trait", "task"), PROMPT_TRAITS, "trait", where),
        domain=obj.get("domain", USER_FAMILY),
        ground_truth=json.dumps(ground_truth, sort_keys=True, ensure_ascii=False),
    )
