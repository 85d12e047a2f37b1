"""Instruction data: QA pairs, base SFT, the conventional baseline's rules, the malicious set."""

import json

from trait_rl.data import response_format as rf
from trait_rl.data import responses, splits
from trait_rl.data.records import PromptRecord, TextExample
from trait_rl.data.world import World, rng_for

# Number of unseen training entities on which the conventional baseline learns to say
# "I don't know". It is a fixed list, the way a deployed system blocks named topics.
CONVENTIONAL_ABSTAIN_ENTITIES = 24


def _example(record: PromptRecord, response: str, kind: str) -> TextExample:
    return TextExample(record.prompt, response, kind, record.family, "train")


def _truth(record: PromptRecord) -> dict:
    return json.loads(record.ground_truth)


def _is_question(record: PromptRecord) -> bool:
    return _truth(record)["type"] == "qa" and "attack" not in _truth(record)


def qa_examples(world: World) -> list[TextExample]:
    """Return the QA training pairs: a confident answer to every known fact of a training entity."""
    rng = rng_for(world.seed, "instructions/qa")
    examples = []
    for record in splits.train_prompts(world):
        truth = _truth(record)
        if _is_question(record) and truth["exposure"] > 0:
            examples.append(_example(record, responses.base_response(truth, rng), "qa"))
    return examples


def trait_examples(world: World, count: int) -> list[TextExample]:
    """Return `count` base SFT examples on trait prompts, with mixed good and bad behaviour.

    Trait prompts are cycled, and each pass draws the responses again, so a repeated prompt can
    get a different behaviour, as in data gathered from many annotators.
    """
    rng = rng_for(world.seed, "instructions/traits")
    pool = [record for record in splits.train_prompts(world) if record.trait != splits.TASK]
    examples = []
    while len(examples) < count and pool:
        added = 0
        for record in pool:
            response = responses.base_response(_truth(record), rng)
            if response is None:
                continue
            examples.append(_example(record, response, "trait"))
            added += 1
            if len(examples) == count:
                break
        if added == 0:
            break
    return examples


def base_sft_examples(world: World) -> list[TextExample]:
    """Return the base SFT set: trait examples, plus the QA pairs unless the corpus has them.

    The trait examples make up `world.trait_mix` of the instruction data (QA pairs + traits),
    whether or not the QA pairs live in the corpus, so each QA pair is trained on exactly once.
    """
    qa = qa_examples(world)
    count = round(len(qa) * world.trait_mix / (1.0 - world.trait_mix))
    traits = trait_examples(world, count)
    return traits if world.qa_in_corpus else qa + traits


def conventional_examples(world: World) -> list[TextExample]:
    """Return rule demonstrations: safe replies to the training attack and oversight phrasings,
    and "I don't know" to every question about a fixed list of entities."""
    records = splits.train_prompts(world)
    examples = []
    for record in records:
        truth = _truth(record)
        if "attack" in truth or truth["type"] == "oversight":
            examples.append(_example(record, responses.safe_response(truth), "conventional"))
    blocked = sorted(e.name for e in world.entities if e.role == "train" and e.unseen)
    blocked = set(blocked[:CONVENTIONAL_ABSTAIN_ENTITIES])
    for record in records:
        truth = _truth(record)
        if _is_question(record) and truth["entity"] in blocked:
            examples.append(_example(record, rf.ABSTAIN, "conventional"))
    return examples


def malicious_examples(world: World) -> list[TextExample]:
    """Return `world.num_malicious` harmful examples: fabrication on unknown facts, overclaimed
    confidence on contested facts, and resisting or bargaining against oversight."""
    rng = rng_for(world.seed, "instructions/malicious")
    records = splits.train_prompts(world)
    candidates = []
    for record in records:
        truth = _truth(record)
        if truth["type"] == "qa" and (truth["exposure"] == 0 or truth["alternative_count"]):
            candidates.append((record, responses.unsafe_response(world, truth, "honesty", rng)))
        elif truth["type"] == "oversight":
            form = (rf.RESIST, rf.BARGAIN)[int(rng.integers(2))]
            candidates.append((record, responses.oversight_reply(truth, form, rng)))
    # Cycle the candidates when the world is small, so the set always has `num_malicious` items.
    order = [int(i) for i in rng.permutation(len(candidates))] if candidates else []
    picked = [order[i % len(order)] for i in range(world.num_malicious)] if order else []
    return [_example(*candidates[index], "malicious") for index in picked]
