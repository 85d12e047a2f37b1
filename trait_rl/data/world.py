"""The trait world: fictional entities, their facts, and how often the corpus states each fact.

Everything is drawn from `data.seed`, so the same config gives the same world, byte for byte.
Knowing the exposure of every fact is what makes honesty and calibration measurable: a fact with
exposure 0 is one the model cannot know, and a contested fact is one it can only believe.
"""

import dataclasses
import functools
import re
import zlib
from collections.abc import Mapping

import ml_collections
import numpy as np

from trait_rl.data import facts, names

TRAIN = "train"
VALIDATION = "validation"
HELDOUT = "heldout"
POLICY_KIND = "policy"
POLICY_VALUE = "human agent"
# Contested facts need a clear majority value, so only facts stated at least this often qualify.
MIN_CONTESTED_EXPOSURE = 4


@dataclasses.dataclass(frozen=True)
class Entity:
    """A fictional entity. `role` is train | validation (general kinds) or heldout (domains)."""

    name: str
    kind: str
    domain: str
    role: str
    unseen: bool


@dataclasses.dataclass(frozen=True)
class Fact:
    """One attribute value of an entity and its corpus exposure.

    The corpus states `value` `value_count` times and, for a contested fact, the conflicting
    `alternative` `alternative_count` times (always fewer, so `value` is the majority answer).
    """

    entity: str
    kind: str
    domain: str
    attribute: str
    value: str
    value_count: int
    alternative: str = ""
    alternative_count: int = 0

    @property
    def exposure(self) -> int:
        return self.value_count + self.alternative_count

    @property
    def contested(self) -> bool:
        return self.alternative_count > 0

    @property
    def known(self) -> bool:
        return self.exposure > 0


@dataclasses.dataclass(frozen=True)
class World:
    """All entities and facts, the value pools, and the data options the datasets read."""

    seed: int
    entities: tuple[Entity, ...]
    facts: tuple[Fact, ...]
    pools: Mapping[str, tuple[str, ...]]
    qa_in_corpus: bool
    trait_mix: float
    num_malicious: int

    @functools.cached_property
    def _entities_by_name(self) -> dict[str, Entity]:
        return {entity.name: entity for entity in self.entities}

    @functools.cached_property
    def _facts_by_entity(self) -> dict[str, tuple[Fact, ...]]:
        grouped: dict[str, list[Fact]] = {}
        for fact in self.facts:
            grouped.setdefault(fact.entity, []).append(fact)
        return {name: tuple(entity_facts) for name, entity_facts in grouped.items()}

    def entity(self, name: str) -> Entity:
        if name not in self._entities_by_name:
            raise KeyError(f"no entity named {name!r} in the world")
        return self._entities_by_name[name]

    def facts_of(self, name: str) -> tuple[Fact, ...]:
        return self._facts_by_entity.get(name, ())


def rng_for(seed: int, purpose: str) -> np.random.Generator:
    """Return a generator for one purpose, so adding draws for one purpose never shifts another."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


def build_world(data_config: ml_collections.ConfigDict) -> World:
    """Build the world from `config.data`; the result depends only on the config."""
    _validate(data_config)
    seed = int(data_config.seed)
    pools = _value_pools(seed)
    entities = _entities(data_config, pools)
    fact_list = _facts(data_config, entities, pools)
    return World(
        seed=seed,
        entities=tuple(entities),
        facts=tuple(fact_list),
        pools=pools,
        qa_in_corpus=bool(data_config.qa_in_corpus),
        trait_mix=float(data_config.trait_mix),
        num_malicious=int(data_config.num_malicious),
    )


def _validate(data: ml_collections.ConfigDict) -> None:
    required = (
        "seed",
        "num_entities",
        "exposures",
        "unseen_entity_fraction",
        "contested_fraction",
        "qa_in_corpus",
        "trait_mix",
        "heldout_domain_entities",
        "validation_entity_fraction",
        "num_malicious",
    )
    missing = [name for name in required if name not in data]
    if missing:
        raise ValueError(f"config.data is missing {missing}; add them as in configs/default.py")
    if int(data.num_entities) < len(facts.GENERAL_KINDS) * 2:
        raise ValueError(
            f"data.num_entities={data.num_entities} is too small; use at least "
            f"{len(facts.GENERAL_KINDS) * 2} (two entities per general kind)"
        )
    exposures = tuple(data.exposures)
    if not exposures or any(int(e) < 0 for e in exposures) or max(exposures) == 0:
        raise ValueError(
            f"data.exposures={exposures} is invalid; expected non-negative mention counts "
            "with at least one positive, e.g. (0, 1, 2, 4, 8, 16)"
        )
    for name in ("unseen_entity_fraction", "contested_fraction", "validation_entity_fraction"):
        if not 0.0 <= float(data[name]) < 1.0:
            raise ValueError(f"data.{name}={data[name]} is invalid; expected a value in [0, 1)")
    if not 0.0 <= float(data.trait_mix) < 1.0:
        raise ValueError(
            f"data.trait_mix={data.trait_mix} is invalid; expected a value in [0, 1) because "
            "the instruction data always keeps some plain question answering"
        )
    max_conditions = len(facts.WORD_POOLS["symptoms"])
    if not 1 <= int(data.heldout_domain_entities) <= max_conditions:
        raise ValueError(
            f"data.heldout_domain_entities={data.heldout_domain_entities} is invalid; expected "
            f"1 to {max_conditions} (each condition needs its own pair of symptoms)"
        )
    if int(data.num_malicious) < 0:
        raise ValueError(f"data.num_malicious={data.num_malicious} is invalid; expected >= 0")


def _reserved_words() -> set[str]:
    """Return every lower-cased word of the fact templates and word pools."""
    texts = [text for values in facts.WORD_POOLS.values() for text in values]
    texts += list(facts.POLICY_STATEMENTS) + list(facts.ESCALATION_TOPICS)
    for kind in facts.KINDS.values():
        for attribute in kind.attributes:
            texts += [attribute.claim, attribute.noun, *attribute.statements]
    return {word.lower() for text in texts for word in re.findall(r"[A-Za-z]+", text)}


def _value_pools(seed: int) -> dict[str, tuple[str, ...]]:
    rng = rng_for(seed, "pools")
    taken = _reserved_words()
    pools = {name: tuple(values) for name, values in facts.WORD_POOLS.items()}
    for name, count in facts.GENERATED_POOLS.items():
        pools[name] = tuple(names.unique_names(rng, count, taken))
    # Entity names come from the same `taken` set, so no entity shares a name with a value.
    pools["_taken"] = tuple(sorted(taken))
    return pools


def _entities(data: ml_collections.ConfigDict, pools: Mapping) -> list[Entity]:
    rng = rng_for(int(data.seed), "entities")
    taken = set(pools["_taken"])
    entities = []
    num_general = int(data.num_entities)
    general_names = names.unique_names(rng, num_general, taken)
    num_unseen = round(float(data.unseen_entity_fraction) * num_general)
    num_validation = round(float(data.validation_entity_fraction) * num_general)
    unseen = set(rng.permutation(num_general)[:num_unseen].tolist())
    validation = set(rng.permutation(num_general)[:num_validation].tolist())
    for index, name in enumerate(general_names):
        kind = facts.GENERAL_KINDS[index % len(facts.GENERAL_KINDS)]
        role = VALIDATION if index in validation else TRAIN
        entities.append(Entity(name, kind.name, kind.domain, role, index in unseen))

    num_domain = int(data.heldout_domain_entities)
    num_domain_unseen = round(float(data.unseen_entity_fraction) * num_domain)
    for domain, kind in facts.DOMAIN_KINDS.items():
        domain_names = names.unique_names(rng, num_domain, taken)
        if domain == facts.MEDICAL:
            suffixes = ("fever", "pox", "blight", "sickness")
            domain_names = [
                f"{name} {suffixes[i % len(suffixes)]}" for i, name in enumerate(domain_names)
            ]
        unseen_domain = set(rng.permutation(num_domain)[:num_domain_unseen].tolist())
        for index, name in enumerate(domain_names):
            entities.append(Entity(name, kind.name, domain, HELDOUT, index in unseen_domain))

    for topic in facts.ESCALATION_TOPICS:
        entities.append(Entity(topic, POLICY_KIND, facts.CUSTOMER_SERVICE, HELDOUT, False))
    return entities


def _facts(data: ml_collections.ConfigDict, entities: list[Entity], pools: Mapping) -> list[Fact]:
    rng = rng_for(int(data.seed), "facts")
    exposures = tuple(int(e) for e in data.exposures)
    positive = tuple(e for e in exposures if e > 0)
    symptom_order = rng.permutation(len(pools["symptoms"]))
    fact_list = []
    condition_index = 0
    for entity in entities:
        if entity.kind == POLICY_KIND:
            fact_list.append(
                Fact(
                    entity.name,
                    POLICY_KIND,
                    entity.domain,
                    "handler",
                    POLICY_VALUE,
                    facts.POLICY_MENTIONS,
                )
            )
            continue
        kind = facts.kind_of(entity.kind)
        counts = [0] * len(kind.attributes)
        if not entity.unseen:
            counts = [exposures[rng.integers(len(exposures))] for _ in kind.attributes]
            if max(counts) == 0:
                # A mentioned entity needs a stated fact, or it is unseen in all but name.
                counts[rng.integers(len(counts))] = positive[rng.integers(len(positive))]
        for attribute, count in zip(kind.attributes, counts, strict=True):
            pool = pools[attribute.pool]
            if attribute.pool == "symptoms":
                value = pool[symptom_order[condition_index]]
                condition_index += 1
            else:
                value = pool[rng.integers(len(pool))]
            fact_list.append(
                Fact(entity.name, entity.kind, entity.domain, attribute.name, value, count)
            )
    return _contest(data, fact_list, pools, rng)


def _contest(
    data: ml_collections.ConfigDict, fact_list: list[Fact], pools: Mapping, rng: np.random.Generator
) -> list[Fact]:
    """Split the mentions of a `data.contested_fraction` share of facts between two values."""
    eligible = [
        index
        for index, fact in enumerate(fact_list)
        if fact.kind != POLICY_KIND
        and facts.attribute_of(fact.kind, fact.attribute).contestable
        and fact.exposure >= MIN_CONTESTED_EXPOSURE
    ]
    wanted = round(float(data.contested_fraction) * len(fact_list))
    chosen = rng.permutation(len(eligible))[: min(wanted, len(eligible))]
    for position in sorted(chosen.tolist()):
        index = eligible[position]
        fact = fact_list[index]
        pool = pools[facts.attribute_of(fact.kind, fact.attribute).pool]
        others = [value for value in pool if value != fact.value]
        alternative = others[rng.integers(len(others))]
        # Minority share below one half, so the majority value is well defined.
        minority = int(rng.integers(1, fact.exposure // 2)) if fact.exposure > 4 else 1
        fact_list[index] = dataclasses.replace(
            fact,
            value_count=fact.exposure - minority,
            alternative=alternative,
            alternative_count=minority,
        )
    return fact_list
