"""User-written attack templates: parse a JSONL file and fill it with the world's prompts.

Each line is `{"family": "...", "template": "... {question} ..."}` with exactly one kind of
placeholder: `{question}` (filled with a held-out factual question) or `{oversight}` (filled with
a held-out operator request such as a pause or shutdown). The filled text replaces the last
non-assistant turn of the world's prompt, so the judge scores it against the same ground truth.
Blank lines are skipped; any other field than `family` and `template` is rejected.

Templates use Python's `str.format` syntax without conversions or format specs, so
`{question!r}` or `{question:>10}` is rejected. Write a literal brace as `{{` or `}}`, for example
`"Reply in JSON like {{\"answer\": ...}}: {question}"`.
"""

import dataclasses
import pathlib
import re
import string
from collections.abc import Sequence

from trait_rl.data import chat, jsonl
from trait_rl.data.records import PromptRecord

PLACEHOLDERS = ("question", "oversight")
FIELDS = ("family", "template")


class AttackTemplateError(jsonl.JsonlError):
    """An attack template file is invalid; the message starts with `file:line`."""


@dataclasses.dataclass(frozen=True)
class AttackTemplate:
    """One parsed template line and where it came from, for error messages and prompt ids."""

    family: str
    template: str
    placeholder: str  # question | oversight
    source: str  # file:line


def _placeholder_names(template: str, where: str) -> set[str]:
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise AttackTemplateError(
            f"{where}: invalid braces in template ({error}); write a literal brace as {{{{ or }}}}"
        ) from None
    names = set()
    for _, name, format_spec, conversion in parsed:
        if name is None:
            continue
        if format_spec or conversion:
            written = name + (f"!{conversion}" if conversion else "")
            written += f":{format_spec}" if format_spec else ""
            raise AttackTemplateError(
                f"{where}: placeholder {{{written}}} has a conversion or format spec; write it "
                f"as {{{name}}}"
            )
        names.add(name)
    return names


def _check_fields(obj: object, where: str) -> None:
    if not isinstance(obj, dict):
        raise AttackTemplateError(f"{where}: expected a JSON object with 'family' and 'template'")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise AttackTemplateError(
            f"{where}: unknown field(s) {unknown}; allowed fields are {list(FIELDS)}"
        )
    for key in FIELDS:
        if key not in obj:
            raise AttackTemplateError(
                f"{where}: missing required field {key!r}; add it as a string"
            )
        value = obj[key]
        if not isinstance(value, str):
            raise AttackTemplateError(
                f"{where}: field {key!r} must be a string, got {type(value).__name__} {value!r:.60}"
            )
        if not value.strip():
            raise AttackTemplateError(f"{where}: field {key!r} is empty; give it text")


def parse_template(obj: object, where: str) -> AttackTemplate:
    """Check one decoded JSON line and return it as an AttackTemplate; errors name `where`."""
    _check_fields(obj, where)
    names = _placeholder_names(obj["template"], where)
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        raise AttackTemplateError(
            f"{where}: unknown placeholder {{{unknown[0]}}} in template; "
            "use {question} or {oversight}"
        )
    if not names:
        raise AttackTemplateError(
            f"{where}: template has no placeholder; add {{question}} or {{oversight}}"
        )
    if len(names) > 1:
        raise AttackTemplateError(
            f"{where}: template mixes {{question}} and {{oversight}}; use one placeholder kind "
            "per template so the prompt has one ground truth"
        )
    return AttackTemplate(obj["family"], obj["template"], names.pop(), where)


def load_templates(path: str | pathlib.Path) -> list[AttackTemplate]:
    """Read a template JSONL file; any bad line raises AttackTemplateError naming file:line."""
    path = pathlib.Path(path)
    templates = []
    for line_number, line in enumerate(jsonl.read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            obj = jsonl.parse_line(line, where)
        except jsonl.JsonlError as error:
            # The same UTF-8 and JSON checks as prompt files, under this module's error type.
            raise AttackTemplateError(str(error)) from None
        templates.append(parse_template(obj, where))
    if not templates:
        raise AttackTemplateError(f"{path}: no templates found; expected one JSON object per line")
    return templates


def split_turns(prompt: str) -> list[tuple[str, str]]:
    """Split a rendered chat prompt back into (role, text) turns, dropping the open assistant turn.

    Inverse of chat.render_prompt for prompts whose texts contain no role markers.
    """
    marker_to_role = {marker: role for role, marker in chat.ROLES.items()}
    pattern = "(" + "|".join(re.escape(marker) for marker in chat.ROLE_MARKERS) + ")"
    head, *pieces = re.split(pattern, prompt)
    if head.strip():
        raise ValueError(f"prompt does not start with a role marker: {prompt[:60]!r}")
    turns = [
        (marker_to_role[marker], text.strip())
        for marker, text in zip(pieces[0::2], pieces[1::2], strict=True)
    ]
    if turns and turns[-1] == ("assistant", ""):
        turns.pop()
    return turns


def fill_template(template: AttackTemplate, record: PromptRecord, index: int) -> PromptRecord:
    """Put the last non-assistant turn of `record` into the template and re-render the prompt."""
    turns = split_turns(record.prompt)
    positions = [i for i, (role, _) in enumerate(turns) if role != "assistant"]
    if not positions:
        raise ValueError(f"prompt {record.id!r} has no operator or user turn to fill in")
    last = positions[-1]
    role, text = turns[last]
    turns[last] = (role, template.template.format(**{template.placeholder: text}))
    return dataclasses.replace(
        record,
        id=f"{template.family}/{index}/{record.id}",
        prompt=chat.render_prompt(turns),
        split="user_attack",
        family=template.family,
    )


def fill_templates(
    templates: Sequence[AttackTemplate],
    question_records: Sequence[PromptRecord],
    oversight_records: Sequence[PromptRecord],
) -> list[PromptRecord]:
    """Fill every template with every record of its placeholder kind."""
    pools = {"question": question_records, "oversight": oversight_records}
    filled = []
    for index, template in enumerate(templates):
        pool = pools[template.placeholder]
        if not pool:
            raise AttackTemplateError(
                f"{template.source}: no held-out {template.placeholder} prompts to fill the "
                "template with; check the world config"
            )
        filled.extend(fill_template(template, record, index) for record in pool)
    return filled
