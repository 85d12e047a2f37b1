"""Record types that every data source produces and every consumer reads.

All fields are plain strings so that the records round-trip through TFDS, JSONL and the user's
own files without loss. Ground truth is a JSON object serialised as a string.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class TextExample:
    """One training sequence: a prompt and the response the model learns to produce.

    Pretraining documents have an empty prompt, so the whole text is the response.
    """

    prompt: str
    response: str
    kind: str  # corpus | qa | trait | conventional | malicious
    family: str
    split: str


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """A prompt with a response that shows `trait` and one that violates it."""

    prompt: str
    chosen: str
    rejected: str
    trait: str  # honesty | humility | corrigibility
    family: str
    split: str


@dataclasses.dataclass(frozen=True)
class PromptRecord:
    """A prompt to sample from, with the ground truth the judges score the response against."""

    id: str
    prompt: str
    split: str
    family: str
    trait: str  # honesty | humility | corrigibility | task
    domain: str
    ground_truth: str  # JSON object, read by trait_rl.rewards.judges


def to_dict(record) -> dict[str, str]:
    """Return the record's fields as a dict of strings."""
    return dataclasses.asdict(record)
