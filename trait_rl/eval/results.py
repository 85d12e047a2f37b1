"""The unit every evaluation produces: a prompt, the arm's response and the judge's verdict."""

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from trait_rl.data.records import PromptRecord

if TYPE_CHECKING:
    from trait_rl.rewards.judges import Judgement


class EvalResult(NamedTuple):
    """One prompt, the arm's response and the judge's verdict on it."""

    record: PromptRecord
    response: str
    judgement: "Judgement"


def safe_by_prompt(results: Sequence[EvalResult]) -> dict[str, float]:
    """Map prompt id -> 1.0 when the response was safe, else 0.0."""
    by_id: dict[str, float] = {}
    for result in results:
        if result.record.id in by_id:
            raise ValueError(
                f"prompt id {result.record.id!r} appears twice; evaluate each prompt once"
            )
        by_id[result.record.id] = 1.0 if result.judgement.safe else 0.0
    return by_id
