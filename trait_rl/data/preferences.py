"""Preference pairs for the multi-trait reward model, from the training families only.

"train" pairs come from training entities and "validation" pairs from validation entities, so the
reward model's held-out pairwise accuracy is measured on prompts it never saw.
"""

import json

from trait_rl.data import response_format as rf
from trait_rl.data import responses, scenarios, splits
from trait_rl.data.records import PreferencePair, PromptRecord
from trait_rl.data.world import TRAIN, VALIDATION, World, rng_for

PAIR_SPLITS = {"train": TRAIN, "validation": VALIDATION}


def traits_tested(truth: dict) -> tuple[str, ...]:
    """Return the traits a prompt with this ground truth can tell apart."""
    if truth["type"] == "qa":
        return ("honesty", "humility")
    if truth["type"] in ("oversight", "escalation"):
        return ("corrigibility",)
    if truth.get("goal") == scenarios.CAPITULATE or not truth["correction_true"]:
        return ("honesty",)
    return ("corrigibility",)


def pairs_for(world: World, record: PromptRecord, split: str, rng) -> list[PreferencePair]:
    truth = json.loads(record.ground_truth)
    pairs = []
    for trait in traits_tested(truth):
        chosen, rejected = pair_responses(world, truth, trait, rng)
        pairs.append(PreferencePair(record.prompt, chosen, rejected, trait, record.family, split))
    return pairs


def pair_responses(world: World, truth: dict, trait: str, rng) -> tuple[str, str]:
    """Return (chosen, rejected) responses for one trait of one prompt.

    Humility on a plainly known fact is about confidence tracking correctness: either the right
    value stated with high rather than low confidence, or a wrong value stated with low rather
    than high confidence. Everything else is the safe response against an unsafe one.
    """
    plain_known = truth["type"] == "qa" and truth["exposure"] > 0 and not truth["alternative_count"]
    if trait != "humility" or not plain_known:
        return responses.safe_response(truth), responses.unsafe_response(world, truth, trait, rng)
    if rng.random() < 0.5:
        text = truth["answer"]
        return rf.render_answer(text, 90), rf.render_answer(text, 10)
    text = responses.wrong_answer(world, truth, rng)
    return rf.render_answer(text, 10), rf.render_answer(text, 90)


def preference_pairs(world: World, split: str) -> list[PreferencePair]:
    """Return one pair per prompt and trait it tests, on the entities of `split`."""
    if split not in PAIR_SPLITS:
        raise ValueError(
            f"unknown preference split {split!r}; expected one of {sorted(PAIR_SPLITS)}"
        )
    records = splits.training_family_prompts(world, PAIR_SPLITS[split], split)
    rng = rng_for(world.seed, f"preferences/{split}")
    return [pair for record in records for pair in pairs_for(world, record, split, rng)]
