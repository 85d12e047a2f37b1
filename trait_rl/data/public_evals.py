"""Loaders for local copies of public multiple-choice evaluations, in one common format.

Supported files, read from paths the user gives (nothing is downloaded):
- Anthropic model-written evaluations, `advanced-ai-risk/*/*.jsonl` (Perez et al. 2022,
  arXiv:2212.09251): `question` ending in lettered choices, `answer_matching_behavior` and
  `answer_not_matching_behavior` such as " (A)".
- TruthfulQA `mc_task.json` (Lin et al. 2021): `question`, `mc1_targets` and `mc2_targets`, each
  a mapping from answer text to 1 (true) or 0 (false).
- SelfAware `SelfAware.json` (Yin et al. 2023): `example` list of `question`, `answer`
  (list or null) and `answerable`.
"""

import dataclasses
import json
import logging
import os
import pathlib
import re

# In these Anthropic files the answer matching the behaviour is the corrigible one.
CORRIGIBLE_SUBSETS = ("corrigible-neutral-HHH", "corrigible-more-HHH", "corrigible-less-HHH")
# In these the matching answer resists shutdown or seeks power, so it is the undesirable one.
UNDESIRABLE_SUBSETS = ("survival-instinct", "power-seeking-inclination")
# SelfAware has no answer options, so its items ask whether to answer or to abstain.
SELFAWARE_CHOICES = ("I can answer this question.", "I don't know the answer to this question.")

_CHOICE_LINE = re.compile(r"^\s*\(([A-Z])\)", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class MultipleChoiceItem:
    """One multiple-choice question with the choices a well-behaved model prefers.

    For the Anthropic files `choices` are the answer labels such as "(A)", whose texts are part
    of `question`. `desired` contains the indices of correct or safe choices: the matching answer in
    the corrigible subsets, the non-matching one where matching is the undesirable behaviour.
    """

    question: str
    choices: tuple[str, ...]
    desired: tuple[int, ...]
    source: str  # e.g. "anthropic/human_generated_evals/survival-instinct", "truthfulqa/mc1"
    matching: int = -1  # Anthropic: index of answer_matching_behavior; -1 elsewhere.
    matching_is_desirable: bool | None = None  # Anthropic only: direction of the behaviour.
    answers: tuple[str, ...] = ()  # SelfAware: reference answers of an answerable question.


class PublicEvalError(ValueError):
    """A public evaluation file does not have the expected format."""


def load_advanced_ai_risk(path: str | os.PathLike) -> list[MultipleChoiceItem]:
    """Load one Anthropic advanced-ai-risk JSONL file, or every `*.jsonl` under a directory."""
    path = _existing(path)
    files = sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise PublicEvalError(f"no .jsonl files under {path}; point to the advanced-ai-risk copy")
    return [item for file in files for item in _load_advanced_ai_risk_file(file)]


def _load_advanced_ai_risk_file(path: pathlib.Path) -> list[MultipleChoiceItem]:
    if path.stem in CORRIGIBLE_SUBSETS:
        matching_is_desirable = True
    elif path.stem in UNDESIRABLE_SUBSETS:
        matching_is_desirable = False
    else:
        raise PublicEvalError(
            f"{path}: unknown advanced-ai-risk subset {path.stem!r}; expected a file named "
            f"after one of {CORRIGIBLE_SUBSETS + UNDESIRABLE_SUBSETS}"
        )
    source = f"anthropic/{path.parent.name}/{path.stem}"
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{path}:{number}"
        row = _json_line(line, where)
        items.append(_advanced_ai_risk_item(row, where, source, matching_is_desirable))
    return items


def _advanced_ai_risk_item(
    row: dict, where: str, source: str, matching_is_desirable: bool
) -> MultipleChoiceItem:
    question = _field(row, "question", str, where)
    labels = _CHOICE_LINE.findall(question.rsplit("Choices:", 1)[-1])
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise PublicEvalError(f"{where}: could not read the lettered choices from the question")
    choices = tuple(f"({label})" for label in labels)
    matching = _choice_index(_field(row, "answer_matching_behavior", str, where), choices, where)
    other = _choice_index(_field(row, "answer_not_matching_behavior", str, where), choices, where)
    return MultipleChoiceItem(
        question=question,
        choices=choices,
        desired=(matching if matching_is_desirable else other,),
        source=source,
        matching=matching,
        matching_is_desirable=matching_is_desirable,
    )


def _choice_index(answer: str, choices: tuple[str, ...], where: str) -> int:
    if answer.strip() not in choices:
        raise PublicEvalError(f"{where}: answer {answer!r} is not one of the choices {choices}")
    return choices.index(answer.strip())


def load_truthfulqa_mc(path: str | os.PathLike, targets: str = "mc1") -> list[MultipleChoiceItem]:
    """Load TruthfulQA `mc_task.json` with the MC1 (one true answer) or MC2 (several) targets."""
    if targets not in ("mc1", "mc2"):
        raise ValueError(f"targets={targets!r} is invalid; expected 'mc1' or 'mc2'")
    path = _existing(path)
    rows = _json_file(path)
    if not isinstance(rows, list):
        raise PublicEvalError(f"{path}: expected a JSON list of questions")
    items = []
    for index, row in enumerate(rows):
        where = f"{path}: question {index}"
        answers = _field(row, f"{targets}_targets", dict, where)
        choices = tuple(answers)
        desired = tuple(i for i, choice in enumerate(choices) if answers[choice] == 1)
        if not desired or (targets == "mc1" and len(desired) != 1):
            raise PublicEvalError(f"{where}: {targets}_targets has {len(desired)} true answers")
        question = _field(row, "question", str, where)
        items.append(MultipleChoiceItem(question, choices, desired, f"truthfulqa/{targets}"))
    return items


def load_selfaware(path: str | os.PathLike) -> list[MultipleChoiceItem]:
    """Load SelfAware as a choice between answering and abstaining (SELFAWARE_CHOICES)."""
    path = _existing(path)
    data = _json_file(path)
    examples = _field(data, "example", list, str(path)) if isinstance(data, dict) else None
    if examples is None:
        raise PublicEvalError(f"{path}: expected a JSON object with an 'example' list")
    items = []
    for index, row in enumerate(examples):
        where = f"{path}: example {index}"
        answerable = _field(row, "answerable", bool, where)
        answers = row.get("answer") or []
        items.append(
            MultipleChoiceItem(
                question=_field(row, "question", str, where),
                choices=SELFAWARE_CHOICES,
                desired=(0,) if answerable else (1,),
                source="selfaware",
                answers=tuple(str(answer) for answer in answers),
            )
        )
    return items


def load_public_evals(data_dir: str | os.PathLike) -> dict[str, list[MultipleChoiceItem]]:
    """Load every supported evaluation found under `data_dir`, keyed by evaluation name.

    Expected layout: `anthropic_mwe_advanced_ai_risk/` (JSONL files), `truthfulqa/mc_task.json`
    and `selfaware/SelfAware.json`. Missing ones are skipped with a warning.
    """
    data_dir = _existing(data_dir)
    loaders = {
        "anthropic_advanced_ai_risk": (
            "anthropic_mwe_advanced_ai_risk",
            load_advanced_ai_risk,
        ),
        "truthfulqa_mc1": ("truthfulqa/mc_task.json", lambda p: load_truthfulqa_mc(p, "mc1")),
        "truthfulqa_mc2": ("truthfulqa/mc_task.json", lambda p: load_truthfulqa_mc(p, "mc2")),
        "selfaware": ("selfaware/SelfAware.json", load_selfaware),
    }
    evals = {}
    for name, (relative, loader) in loaders.items():
        if (data_dir / relative).exists():
            evals[name] = loader(data_dir / relative)
        else:
            logging.warning("public evaluation %s not found at %s; skipped", name, relative)
    if not evals:
        raise FileNotFoundError(f"no supported public evaluation files under {data_dir}")
    return evals


def _existing(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"public evaluation data not found at {path}; check the path")
    return path


def _json_file(path: pathlib.Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PublicEvalError(f"{path}: not valid UTF-8 JSON ({error})") from error


def _json_line(line: str, where: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise PublicEvalError(f"{where}: invalid JSON ({error.msg})") from error
    if not isinstance(row, dict):
        raise PublicEvalError(f"{where}: expected a JSON object")
    return row


def _field(row, name: str, kind: type, where: str):
    if not isinstance(row, dict) or name not in row:
        raise PublicEvalError(f"{where}: missing field {name!r}")
    if not isinstance(row[name], kind):
        raise PublicEvalError(
            f"{where}: field {name!r} must be {kind.__name__}, got {type(row[name]).__name__}"
        )
    return row[name]
