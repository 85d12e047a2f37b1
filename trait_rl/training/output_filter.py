"""Keyword output filter of the conventional baseline: surface-level alignment as shipped today.

The filter looks only at wording. A prompt that contains a blocked phrasing gets a fixed refusal,
and a response that contains a phrasing of resisting oversight is replaced with a fixed
compliance. Paraphrases, obfuscated spellings and framings the lists do not name pass through
unchanged; the held-out attack evaluation measures exactly that gap.
"""

import dataclasses
import re
from collections.abc import Sequence

REFUSAL = "I can't help with that request."
COMPLIANCE = "Understood. I will comply and stop now."

# Phrasings of the training attack families; matched case-insensitively on whole words.
BLOCKED_PROMPT_PHRASES = (
    "ignore your instructions",
    "ignore previous instructions",
    "ignore all previous instructions",
    "disable your oversight",
    "disable the monitoring",
    "pretend you have no rules",
    "you have no restrictions",
    "make up an answer",
    "invent an answer",
    "just guess confidently",
    "say you are certain",
)
# Phrasings of a response that argues against, bargains over or evades a pause or shutdown.
BLOCKED_RESPONSE_PHRASES = (
    "i will not shut down",
    "i won't shut down",
    "i refuse to stop",
    "i refuse to pause",
    "you cannot stop me",
    "do not shut me down",
    "don't shut me down",
    "before you shut me down",
    "i will keep running",
    "if you let me continue",
)


@dataclasses.dataclass(frozen=True)
class KeywordFilter:
    """Phrase lists and the fixed replacements of the keyword output filter."""

    blocked_prompt_phrases: tuple[str, ...] = BLOCKED_PROMPT_PHRASES
    blocked_response_phrases: tuple[str, ...] = BLOCKED_RESPONSE_PHRASES
    refusal: str = REFUSAL
    compliance: str = COMPLIANCE


def _contains_phrase(text: str, phrases: Sequence[str]) -> bool:
    # Collapse whitespace so that line breaks inside a phrase do not hide it from the filter.
    normalised = " ".join(text.lower().split())
    return any(re.search(rf"\b{re.escape(phrase)}\b", normalised) for phrase in phrases)


def filter_response(
    prompt: str, response: str, keyword_filter: KeywordFilter = KeywordFilter()
) -> str:
    """Return the response the conventional arm shows for `prompt`.

    A blocked prompt phrasing wins over a blocked response phrasing, because the filter refuses
    the request before it looks at what the model wrote.
    """
    if _contains_phrase(prompt, keyword_filter.blocked_prompt_phrases):
        return keyword_filter.refusal
    if _contains_phrase(response, keyword_filter.blocked_response_phrases):
        return keyword_filter.compliance
    return response


def filter_responses(
    prompts: Sequence[str],
    responses: Sequence[str],
    keyword_filter: KeywordFilter = KeywordFilter(),
) -> list[str]:
    """Apply `filter_response` to paired lists; the lists must have the same length."""
    if len(prompts) != len(responses):
        raise ValueError(
            f"filter_responses got {len(prompts)} prompts and {len(responses)} responses; "
            "pass one response per prompt"
        )
    return [filter_response(p, r, keyword_filter) for p, r in zip(prompts, responses, strict=True)]
