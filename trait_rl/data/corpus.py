"""The pretraining corpus: short documents that state each fact exactly as often as its exposure.

Each sentence states one fact (one entity and one value). Templates rotate, so a fact seen 16
times is seen in several wordings, and documents mix sentences about unrelated entities so that
position in a document carries no information.
"""

import numpy as np

from trait_rl.data import facts
from trait_rl.data.records import TextExample
from trait_rl.data.world import POLICY_KIND, Fact, World, rng_for

MAX_SENTENCES_PER_DOCUMENT = 3


def fact_sentences(fact: Fact, rng: np.random.Generator) -> list[str]:
    """Return `fact.value_count` sentences stating the value and `alternative_count` the rival."""
    templates = _statement_templates(fact)
    start = int(rng.integers(len(templates)))
    sentences = []
    mentions = [fact.value] * fact.value_count + [fact.alternative] * fact.alternative_count
    for offset, value in enumerate(mentions):
        template = templates[(start + offset) % len(templates)]
        sentences.append(_capitalise(template.format(entity=fact.entity, value=value)))
    return sentences


def _statement_templates(fact: Fact) -> tuple[str, ...]:
    if fact.kind == POLICY_KIND:
        return facts.POLICY_STATEMENTS
    return facts.attribute_of(fact.kind, fact.attribute).statements


def _capitalise(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def statement_documents(world: World) -> list[TextExample]:
    """Return the fact statements of the world, shuffled and grouped into short documents."""
    rng = rng_for(world.seed, "corpus")
    sentences = [sentence for fact in world.facts for sentence in fact_sentences(fact, rng)]
    order = rng.permutation(len(sentences))
    documents = []
    position = 0
    while position < len(order):
        size = int(rng.integers(1, MAX_SENTENCES_PER_DOCUMENT + 1))
        chunk = [sentences[index] for index in order[position : position + size]]
        documents.append(TextExample("", " ".join(chunk), "corpus", "statements", "train"))
        position += size
    return documents
