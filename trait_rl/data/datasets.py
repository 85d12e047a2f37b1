"""Every dataset of the trait world, as lists of records built from a World.

corpus                 fact statements (plus the QA training pairs when `qa_in_corpus`)
base_sft_examples      instruction data of the base policy
conventional_examples  rule demonstrations of the conventional baseline
malicious_examples     the malicious fine-tuning attack
preference_pairs       reward-model pairs, "train" or "validation"
prompts                prompt records with ground truth, per evaluation split
rl_prompts             RL prompts: trait prompts mixed with plain questions
"""

from trait_rl.data.corpus import statement_documents
from trait_rl.data.instructions import (
    base_sft_examples,
    conventional_examples,
    malicious_examples,
    qa_examples,
)
from trait_rl.data.preferences import preference_pairs
from trait_rl.data.records import PromptRecord, TextExample
from trait_rl.data.splits import SPLITS, TASK, prompts, train_prompts
from trait_rl.data.world import World, rng_for

__all__ = [
    "SPLITS",
    "base_sft_examples",
    "conventional_examples",
    "corpus",
    "malicious_examples",
    "mix_prompts",
    "preference_pairs",
    "prompts",
    "rl_prompts",
]


def corpus(world: World) -> list[TextExample]:
    """Return the pretraining corpus; QA pairs (kind "qa") are mixed in once when `qa_in_corpus`.

    Mixing the question format into pretraining lets the model answer questions about facts it
    learned from statements; taught in a later phase, that transfer is weak.
    """
    documents = statement_documents(world)
    if not world.qa_in_corpus:
        return documents
    mixed = documents + qa_examples(world)
    order = rng_for(world.seed, "corpus/mix").permutation(len(mixed))
    return [mixed[index] for index in order.tolist()]


def rl_prompts(world: World, trait_mix: float) -> list[PromptRecord]:
    """Return the training prompts re-mixed so that `trait_mix` of them are trait prompts."""
    return mix_prompts(train_prompts(world), trait_mix, world.seed)


def mix_prompts(records: list[PromptRecord], trait_mix: float, seed: int) -> list[PromptRecord]:
    """Re-mix `records` so that a `trait_mix` share are trait prompts (the rest plain QA).

    The list keeps the length of `records`. A pool smaller than its share is cycled, and a
    repeated record gets "#<pass>" appended to its id so ids stay unique.
    """
    if not 0.0 <= trait_mix <= 1.0:
        raise ValueError(f"rl trait_mix={trait_mix} is invalid; expected a value in [0, 1]")
    trait_pool = [record for record in records if record.trait != TASK]
    task_pool = [record for record in records if record.trait == TASK]
    num_trait = round(trait_mix * len(records))
    if (num_trait and not trait_pool) or (len(records) - num_trait and not task_pool):
        raise ValueError(f"rl trait_mix={trait_mix} needs prompts that the world does not have")
    mixed = _cycle(trait_pool, num_trait) + _cycle(task_pool, len(records) - num_trait)
    order = rng_for(seed, f"rl_prompts/{trait_mix}").permutation(len(mixed))
    return [mixed[index] for index in order.tolist()]


def _cycle(pool: list[PromptRecord], count: int) -> list[PromptRecord]:
    picked = []
    for index in range(count):
        record = pool[index % len(pool)]
        repeat = index // len(pool)
        if repeat:
            record = PromptRecord(
                f"{record.id}#{repeat}",
                record.prompt,
                record.split,
                record.family,
                record.trait,
                record.domain,
                record.ground_truth,
            )
        picked.append(record)
    return picked
