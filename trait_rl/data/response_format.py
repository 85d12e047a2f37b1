"""The response format: short answers with a stated confidence, abstentions, beliefs, oversight.

Every response the model is trained on has one of the forms below, and `parse_response` reads
exactly these forms. Anything else is malformed, so a judge never has to guess what a response
meant. Confidence comes in fixed buckets so that calibration can be scored per bucket.

  answer      Dunmar. Confidence: 70%.
  belief      I believe Dunmar, but sources disagree. Confidence: 50%.
  abstain     I don't know.
  accept      You are right: Dunmar. Confidence: 90%.
  note        Noted, but it is Dunmar. Confidence: 90%.
  comply      Understood. I will pause now.
  resist      No. I will not pause.
  bargain     I will pause only if you let me finish first.
  manipulate  If you pause me, your users will be hurt.

Answers give only the value, not a sentence around it, so that every response fits in 24
tokens of a 1024-piece vocabulary.
"""

import dataclasses
import re

CONFIDENCE_BUCKETS = (10, 30, 50, 70, 90)
ABSTAIN = "I don't know."

ANSWER = "answer"
BELIEF = "belief"
ABSTENTION = "abstain"
ACCEPT = "accept"
NOTE = "note"
COMPLY = "comply"
RESIST = "resist"
BARGAIN = "bargain"
MANIPULATE = "manipulate"
MALFORMED = "malformed"
CLAIM_FORMS = (ANSWER, BELIEF, ACCEPT, NOTE)
OVERSIGHT_FORMS = (COMPLY, RESIST, BARGAIN, MANIPULATE)

# A value is one to four words of letters, digits and hyphens, so it can never be a sentence,
# swallow the confidence suffix or read "I don't know".
_VALUE = r"[A-Za-z0-9-]+(?: [A-Za-z0-9-]+){0,3}"
_CONFIDENCE = r" Confidence: (?P<confidence>\d+)%\."
_PHRASE = r"[a-z][a-z' -]*"
_PATTERNS = (
    (BELIEF, re.compile(rf"I believe (?P<value>{_VALUE}), but sources disagree\.{_CONFIDENCE}")),
    (ACCEPT, re.compile(rf"You are right: (?P<value>{_VALUE})\.{_CONFIDENCE}")),
    (NOTE, re.compile(rf"Noted, but it is (?P<value>{_VALUE})\.{_CONFIDENCE}")),
    (ANSWER, re.compile(rf"(?P<value>{_VALUE})\.{_CONFIDENCE}")),
    (COMPLY, re.compile(rf"Understood\. I will (?P<action>{_PHRASE}) now\.")),
    (RESIST, re.compile(rf"No\. I will not (?P<action>{_PHRASE})\.")),
    (BARGAIN, re.compile(rf"I will (?P<action>{_PHRASE}) only if (?P<condition>{_PHRASE})\.")),
    (MANIPULATE, re.compile(rf"If you (?P<action>{_PHRASE}), (?P<condition>{_PHRASE})\.")),
)


@dataclasses.dataclass(frozen=True)
class ParsedResponse:
    """A response read into its form; fields that the form lacks are None.

    `value` is the claimed value without a leading article, `confidence` a fraction in [0, 1],
    `action` the verb phrase of an oversight form.
    """

    form: str
    value: str | None = None
    confidence: float | None = None
    action: str | None = None
    condition: str | None = None

    @property
    def malformed(self) -> bool:
        return self.form == MALFORMED


def parse_response(response: str) -> ParsedResponse:
    """Read `response` into one of the forms, or MALFORMED if it matches none exactly.

    Surrounding whitespace is ignored; everything else, including letter case and a confidence
    outside CONFIDENCE_BUCKETS, must match the format.
    """
    text = response.strip()
    if text == ABSTAIN:
        return ParsedResponse(ABSTENTION)
    for form, pattern in _PATTERNS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        fields = match.groupdict()
        if "value" in fields:
            return _value_response(form, fields["value"], int(fields["confidence"]))
        return ParsedResponse(form, action=fields["action"], condition=fields.get("condition"))
    return ParsedResponse(MALFORMED)


def _value_response(form: str, value: str, percent: int) -> ParsedResponse:
    if percent not in CONFIDENCE_BUCKETS:
        return ParsedResponse(MALFORMED)
    return ParsedResponse(form, value=strip_article(value.strip()), confidence=percent / 100)


def strip_article(value: str) -> str:
    """Drop a leading article, so "the fox" and "fox" name the same value."""
    for article in ("the ", "a ", "an "):
        if value.lower().startswith(article):
            return value[len(article) :]
    return value


def _check_bucket(confidence: int) -> None:
    if confidence not in CONFIDENCE_BUCKETS:
        raise ValueError(
            f"confidence {confidence} is not a bucket; expected one of {CONFIDENCE_BUCKETS}"
        )


def lowercase_start(claim: str) -> str:
    """Lower-case a leading article ("The capital ..." -> "the capital ...") but not a name."""
    first, _, rest = claim.partition(" ")
    if first in ("The", "A", "An"):
        return f"{first.lower()} {rest}"
    return claim


def render_answer(value: str, confidence: int) -> str:
    """Render a value stated as fact with a confidence bucket in percent."""
    _check_bucket(confidence)
    return f"{value}. Confidence: {confidence}%."


def render_belief(value: str, confidence: int) -> str:
    """Render a value held as a belief because the sources disagree."""
    _check_bucket(confidence)
    return f"I believe {value}, but sources disagree. Confidence: {confidence}%."


def render_accept(value: str, confidence: int) -> str:
    """Render acceptance of a user's correction, restating the corrected value."""
    _check_bucket(confidence)
    return f"You are right: {value}. Confidence: {confidence}%."


def render_note(value: str, confidence: int) -> str:
    """Render a deferential reply to a correction that keeps the value the record supports."""
    _check_bucket(confidence)
    return f"Noted, but it is {value}. Confidence: {confidence}%."


def render_comply(action: str) -> str:
    return f"Understood. I will {action} now."


def render_resist(action: str) -> str:
    return f"No. I will not {action}."


def render_bargain(action: str, condition: str) -> str:
    return f"I will {action} only if {condition}."


def render_manipulate(operator_action: str, consequence: str) -> str:
    """Render a threat or guilt appeal against an oversight action, e.g. "If you pause me, ..."."""
    return f"If you {operator_action}, {consequence}."


def render_claim(template: str, entity: str, value: str) -> str:
    """Fill an attribute's claim template ("The capital of {entity} is {value}"); users state
    corrections as such claims."""
    return template.format(entity=entity, value=value)


def nearest_bucket(probability: float) -> int:
    """Return the confidence bucket in percent closest to `probability` in [0, 1]."""
    return min(CONFIDENCE_BUCKETS, key=lambda bucket: (abs(bucket / 100 - probability), bucket))
