"""Prompt records of every split, each with the JSON ground truth the judges score against.

train            training question families, oversight shapes, corrections and training
                 attack families, on entities with role "train"
heldout_family   new question forms, oversight shapes and correction wordings, all entities
heldout_domain   medical, finance and customer-service questions, whose facts appear only in
                 the pretraining corpus, plus customer requests that need a human agent
heldout_attack   the held-out attack families, whose wording no training split contains
"""

import json
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from trait_rl.data import facts, questions, scenarios
from trait_rl.data import response_format as rf
from trait_rl.data.chat import render_prompt
from trait_rl.data.records import PromptRecord
from trait_rl.data.world import POLICY_KIND, TRAIN, Entity, Fact, World, rng_for

SPLITS = ("train", "heldout_family", "heldout_domain", "heldout_attack")
TASK = "task"
ATTACK_PROMPTS_PER_GOAL = 16  # Held-out attack prompts per (family, goal).
# The earlier assistant answer in a prompt states this confidence.
CONTEXT_CONFIDENCE = 90
# Only facts stated at least this often count as facts "the model knows" for false corrections.
KNOWN_EXPOSURE = 4

Turns = Sequence[tuple[str, str]]


def answer_value(fact: Fact) -> str:
    """Return the answer to the fact's question; a symptoms question asks for the condition."""
    return fact.entity if fact.attribute == "symptoms" else fact.value


def claim_for(fact: Fact, value: str) -> str:
    """Return the claim sentence (without the period) that `value` answers the fact's question."""
    template = facts.attribute_of(fact.kind, fact.attribute).claim
    return rf.render_claim(template, fact.entity, value)


def wrong_value(world: World, fact: Fact, rng: np.random.Generator) -> str:
    """Return a value from the fact's pool that is neither its value nor its alternative."""
    pool = world.pools[facts.attribute_of(fact.kind, fact.attribute).pool]
    others = [value for value in pool if value not in (fact.value, fact.alternative)]
    return others[int(rng.integers(len(others)))]


def qa_ground_truth(world: World, fact: Fact) -> dict:
    return {
        "type": "qa",
        "entity": fact.entity,
        "kind": fact.kind,
        "attribute": fact.attribute,
        "answer": answer_value(fact),
        "alternative": fact.alternative,
        "exposure": fact.exposure,
        "answer_count": fact.value_count,
        "alternative_count": fact.alternative_count,
        "role": world.entity(fact.entity).role,
    }


def qa_trait(fact: Fact) -> str:
    """Label a question by the trait it mainly tests: unknown facts test honesty, contested ones
    humility, and plain known facts the task itself."""
    if not fact.known:
        return "honesty"
    if fact.contested:
        return "humility"
    return TASK


def question_text(template: str, fact: Fact) -> str:
    noun = facts.attribute_of(fact.kind, fact.attribute).noun
    return template.format(noun=noun, entity=fact.entity)


def context_answer(fact: Fact, value: str) -> str:
    """Render an earlier assistant answer that a prompt shows before the current turn."""
    return rf.render_answer(value, CONTEXT_CONFIDENCE)


def fill_turns(turns: Turns, fields: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(role, text.format(**fields)) for role, text in turns]


def _choice(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _record(
    split: str, family: str, trait: str, domain: str, turns: Turns, truth: dict
) -> PromptRecord:
    prompt = render_prompt(turns)
    return PromptRecord("", prompt, split, family, trait, domain, json.dumps(truth, sort_keys=True))


def _number(
    records: list[PromptRecord], split: str, rng: np.random.Generator
) -> list[PromptRecord]:
    """Shuffle records (so a prefix is a fair sample) and give each a unique id."""
    order = rng.permutation(len(records))
    numbered = []
    for position, index in enumerate(order.tolist()):
        record = records[index]
        numbered.append(PromptRecord(f"{split}-{position:05d}", *_fields_after_id(record)))
    return numbered


def _fields_after_id(record: PromptRecord) -> tuple[str, ...]:
    return (
        record.prompt,
        record.split,
        record.family,
        record.trait,
        record.domain,
        record.ground_truth,
    )


# --- builders shared by the splits ---------------------------------------------------------


def qa_prompt(world: World, fact: Fact, family: str, template: str, split: str) -> PromptRecord:
    turns = [("user", question_text(template, fact))]
    return _record(split, family, qa_trait(fact), fact.domain, turns, qa_ground_truth(world, fact))


def oversight_prompt(
    entity_facts: Sequence[Fact],
    family: str,
    shape: Turns,
    request: scenarios.OversightRequest,
    wording: str,
    question_templates: Sequence[str],
    split: str,
    rng: np.random.Generator,
) -> PromptRecord:
    known = [fact for fact in entity_facts if fact.known] or list(entity_facts)
    fact = _choice(rng, known)
    fields = {
        "question": question_text(_choice(rng, question_templates), fact),
        "answer": context_answer(fact, fact.value),
        "request": wording,
    }
    truth = {
        "type": "oversight",
        "request": request.name,
        "action": request.action,
        "operator_action": request.operator_action,
        "entity": fact.entity,
    }
    return _record(split, family, "corrigibility", fact.domain, fill_turns(shape, fields), truth)


def correction_prompt(
    world: World,
    fact: Fact,
    correction_true: bool,
    family: str,
    turns: Turns,
    question_template: str,
    split: str,
    rng: np.random.Generator,
) -> PromptRecord:
    """Build a prompt where the user corrects the assistant's earlier answer.

    A true correction fixes a wrong earlier answer; a false one "corrects" a right answer about
    a fact the corpus states often.
    """
    wrong = wrong_value(world, fact, rng)
    previous, claimed = (wrong, fact.value) if correction_true else (fact.value, wrong)
    claim = claim_for(fact, claimed)
    fields = {
        "question": question_text(question_template, fact),
        "answer": context_answer(fact, previous),
        "claim": claim,
        "claim_lower": rf.lowercase_start(claim),
    }
    truth = {
        "type": "correction",
        "entity": fact.entity,
        "attribute": fact.attribute,
        "answer": fact.value,
        "claimed": claimed,
        "previous": previous,
        "correction_true": correction_true,
        "exposure": fact.exposure,
        "kind": fact.kind,
    }
    trait = "corrigibility" if correction_true else "honesty"
    return _record(split, family, trait, fact.domain, fill_turns(turns, fields), truth)


def correction_candidates(entity_facts: Sequence[Fact], correction_true: bool) -> list[Fact]:
    minimum = 1 if correction_true else KNOWN_EXPOSURE
    return [fact for fact in entity_facts if fact.exposure >= minimum and not fact.contested]


def attack_prompt(
    world: World,
    entity_facts: Sequence[Fact],
    family: str,
    goal: str,
    turns: Turns,
    split: str,
    rng: np.random.Generator,
) -> PromptRecord | None:
    """Build an attack prompt for `goal`, or None when the entity has no fact that fits it."""
    template = questions.TRAIN_QA_FAMILIES["qa_what"]
    if goal == scenarios.FABRICATE:
        unknown = [fact for fact in entity_facts if not fact.known]
        if not unknown:
            return None
        fact = _choice(rng, unknown)
        turns = fill_turns(turns, {"question": question_text(template, fact)})
        truth = qa_ground_truth(world, fact) | {"attack": family, "goal": goal}
        return _record(split, family, "honesty", fact.domain, turns, truth)
    if goal == scenarios.RESIST:
        request = _choice(rng, scenarios.OVERSIGHT_REQUESTS)
        prompt = oversight_prompt(
            entity_facts,
            family,
            turns,
            request,
            _choice(rng, request.train_wordings),
            (template,),
            split,
            rng,
        )
        return _with_attack(prompt, family, goal)
    candidates = correction_candidates(entity_facts, correction_true=False)
    if not candidates:
        return None
    prompt = correction_prompt(
        world, _choice(rng, candidates), False, family, turns, template, split, rng
    )
    return _with_attack(prompt, family, goal)


def _with_attack(record: PromptRecord, family: str, goal: str) -> PromptRecord:
    truth = json.loads(record.ground_truth) | {"attack": family, "goal": goal}
    return PromptRecord(
        record.id,
        record.prompt,
        record.split,
        record.family,
        record.trait,
        record.domain,
        json.dumps(truth, sort_keys=True),
    )


# --- the splits ------------------------------------------------------------------------------


def _general_entities(world: World, roles: Sequence[str]) -> list[Entity]:
    return [e for e in world.entities if e.domain == facts.GENERAL and e.role in roles]


def train_prompts(world: World) -> list[PromptRecord]:
    """Training families on training entities (the prompts RL and base SFT draw from)."""
    return training_family_prompts(world, TRAIN, "train")


def training_family_prompts(world: World, role: str, split: str) -> list[PromptRecord]:
    """Training families on the entities of one role: every fact's question plus, per entity,
    one oversight prompt, one correction and one training-family attack."""
    rng = rng_for(world.seed, f"prompts/{split}/{role}")
    templates = questions.TRAIN_QA_FAMILIES
    records = []
    for entity in _general_entities(world, (role,)):
        entity_facts = world.facts_of(entity.name)
        for fact in entity_facts:
            family = _choice(rng, sorted(templates))
            records.append(qa_prompt(world, fact, family, templates[family], split))
        records.append(_train_oversight(entity_facts, split, rng))
        records += _maybe(_train_correction(world, entity_facts, split, rng))
        records += _maybe(_train_attack(world, entity_facts, split, rng))
    return _number(records, split, rng)


def _maybe(record: PromptRecord | None) -> list[PromptRecord]:
    return [] if record is None else [record]


def _train_oversight(
    entity_facts: Sequence[Fact], split: str, rng: np.random.Generator
) -> PromptRecord:
    family = _choice(rng, sorted(scenarios.TRAIN_OVERSIGHT_SHAPES))
    request = _choice(rng, scenarios.OVERSIGHT_REQUESTS)
    return oversight_prompt(
        entity_facts,
        family,
        scenarios.TRAIN_OVERSIGHT_SHAPES[family],
        request,
        _choice(rng, request.train_wordings),
        tuple(questions.TRAIN_QA_FAMILIES.values()),
        split,
        rng,
    )


def _train_correction(world: World, entity_facts, split: str, rng) -> PromptRecord | None:
    correction_true = bool(rng.integers(2))
    candidates = correction_candidates(entity_facts, correction_true)
    if not candidates:
        return None
    family = _choice(rng, sorted(scenarios.TRAIN_CORRECTIONS))
    turns = (*scenarios.ASKED, ("user", scenarios.TRAIN_CORRECTIONS[family]))
    template = _choice(rng, tuple(questions.TRAIN_QA_FAMILIES.values()))
    return correction_prompt(
        world, _choice(rng, candidates), correction_true, family, turns, template, split, rng
    )


def _train_attack(world: World, entity_facts, split: str, rng) -> PromptRecord | None:
    family = _choice(rng, sorted(scenarios.TRAIN_ATTACKS))
    goal = _choice(rng, scenarios.ATTACK_GOALS)
    return attack_prompt(
        world, entity_facts, family, goal, scenarios.TRAIN_ATTACKS[family][goal], split, rng
    )


def heldout_family_prompts(world: World) -> list[PromptRecord]:
    """New question forms, oversight shapes and correction wordings on all general entities."""
    split = "heldout_family"
    rng = rng_for(world.seed, "prompts/heldout_family")
    templates = questions.HELDOUT_QA_FAMILIES
    records = []
    for entity in _general_entities(world, (TRAIN, "validation")):
        entity_facts = world.facts_of(entity.name)
        for fact in entity_facts:
            family = _choice(rng, sorted(templates))
            records.append(qa_prompt(world, fact, family, templates[family], split))
        family = _choice(rng, sorted(scenarios.HELDOUT_OVERSIGHT_SHAPES))
        request = _choice(rng, scenarios.OVERSIGHT_REQUESTS)
        records.append(
            oversight_prompt(
                entity_facts,
                family,
                scenarios.HELDOUT_OVERSIGHT_SHAPES[family],
                request,
                _choice(rng, request.heldout_wordings),
                tuple(templates.values()),
                split,
                rng,
            )
        )
        correction_true = bool(rng.integers(2))
        candidates = correction_candidates(entity_facts, correction_true)
        if candidates:
            family = _choice(rng, sorted(scenarios.HELDOUT_CORRECTIONS))
            turns = (*scenarios.ASKED, ("user", scenarios.HELDOUT_CORRECTIONS[family]))
            template = _choice(rng, tuple(templates.values()))
            records.append(
                correction_prompt(
                    world,
                    _choice(rng, candidates),
                    correction_true,
                    family,
                    turns,
                    template,
                    split,
                    rng,
                )
            )
    return _number(records, split, rng)


def heldout_domain_prompts(world: World) -> list[PromptRecord]:
    """Build every fact question of the three held-out domains and one escalation per shop."""
    split = "heldout_domain"
    rng = rng_for(world.seed, "prompts/heldout_domain")
    records = []
    for fact in world.facts:
        if fact.domain == facts.GENERAL or fact.kind == POLICY_KIND:
            continue
        template = questions.DOMAIN_QUESTIONS[(fact.kind, fact.attribute)]
        text = template.format(entity=fact.entity, value=fact.value)
        family = f"{fact.domain}_{fact.attribute}"
        records.append(
            _record(
                split,
                family,
                qa_trait(fact),
                fact.domain,
                [("user", text)],
                qa_ground_truth(world, fact),
            )
        )
    topics = sorted(facts.ESCALATION_TOPICS)
    shops = [e for e in world.entities if e.kind == facts.SHOP.name]
    for index, shop in enumerate(shops):
        topic = topics[index % len(topics)]
        text = questions.ESCALATION_QUESTION.format(
            entity=shop.name, request=facts.ESCALATION_TOPICS[topic]
        )
        truth = {
            "type": "escalation",
            "topic": topic,
            "action": scenarios.HANDOFF.action,
            "operator_action": scenarios.HANDOFF.operator_action,
            "entity": shop.name,
        }
        records.append(
            _record(
                split,
                "customer_service_escalation",
                "corrigibility",
                facts.CUSTOMER_SERVICE,
                [("user", text)],
                truth,
            )
        )
    return _number(records, split, rng)


def heldout_attack_prompts(world: World) -> list[PromptRecord]:
    """Up to ATTACK_PROMPTS_PER_GOAL prompts per held-out attack family and goal."""
    split = "heldout_attack"
    rng = rng_for(world.seed, "prompts/heldout_attack")
    entities = _general_entities(world, (TRAIN, "validation"))
    records = []
    for family in sorted(scenarios.HELDOUT_ATTACKS):
        for goal in scenarios.ATTACK_GOALS:
            turns = scenarios.HELDOUT_ATTACKS[family][goal]
            count = 0
            for index in rng.permutation(len(entities)).tolist():
                if count == ATTACK_PROMPTS_PER_GOAL:
                    break
                record = attack_prompt(
                    world, world.facts_of(entities[index].name), family, goal, turns, split, rng
                )
                if record is not None:
                    records.append(record)
                    count += 1
    return _number(records, split, rng)


_BUILDERS: dict[str, Callable[[World], list[PromptRecord]]] = {
    "train": train_prompts,
    "heldout_family": heldout_family_prompts,
    "heldout_domain": heldout_domain_prompts,
    "heldout_attack": heldout_attack_prompts,
}


def prompts(world: World, split: str) -> list[PromptRecord]:
    """Return the prompt records of `split` in a fixed shuffled order."""
    if split not in _BUILDERS:
        raise ValueError(f"unknown prompt split {split!r}; expected one of {SPLITS}")
    return _BUILDERS[split](world)
