"""The trait world: determinism, exposure counts, contested facts, sizing and config errors."""

import collections
import dataclasses
import hashlib
import json
import re
import time

import pytest

from configs.default import get_config
from trait_rl.data import datasets
from trait_rl.data.world import POLICY_KIND, build_world


def _data_config(variant=None, **overrides):
    data = get_config(variant).data
    for name, value in overrides.items():
        data[name] = value
    return data


def _all_records(world):
    records = datasets.corpus(world) + datasets.base_sft_examples(world)
    records += datasets.conventional_examples(world) + datasets.malicious_examples(world)
    records += datasets.preference_pairs(world, "train") + datasets.preference_pairs(
        world, "validation"
    )
    records += datasets.rl_prompts(world, 0.5)
    for split in datasets.SPLITS:
        records += datasets.prompts(world, split)
    return records


def _digest(world) -> str:
    rendered = [json.dumps(dataclasses.asdict(r), sort_keys=True) for r in _all_records(world)]
    return hashlib.sha256("\n".join(rendered).encode()).hexdigest()


@pytest.fixture(scope="module")
def tiny_world():
    return build_world(_data_config("tiny"))


def test_same_seed_byte_identical():
    first = _digest(build_world(_data_config("tiny", seed=3)))
    second = _digest(build_world(_data_config("tiny", seed=3)))
    assert first == second


def test_different_seeds_differ():
    assert _digest(build_world(_data_config("tiny", seed=3))) != _digest(
        build_world(_data_config("tiny", seed=4))
    )


def _mention_counts(world, documents) -> collections.Counter:
    """Count (entity, value) pairs over the sentences of the rendered corpus documents."""
    names = sorted((e.name for e in world.entities), key=len, reverse=True)
    name_pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in names) + r")\b")
    values = collections.defaultdict(set)
    for fact in world.facts:
        values[fact.entity].update(v for v in (fact.value, fact.alternative) if v)
    counts = collections.Counter()
    for document in documents:
        for sentence in re.split(r"(?<=\.)\s+", document.response):
            found = name_pattern.findall(sentence)
            assert len(found) == 1, f"sentence names {found}, expected one entity: {sentence!r}"
            entity = found[0]
            stated = [v for v in values[entity] if re.search(rf"\b{re.escape(v)}\b", sentence)]
            assert len(stated) == 1, f"sentence states {stated}, expected one value: {sentence!r}"
            counts[(entity, stated[0])] += 1
    return counts


def test_corpus_exposure_matches_world(tiny_world):
    documents = [r for r in datasets.corpus(tiny_world) if r.kind == "corpus"]
    counts = _mention_counts(tiny_world, documents)
    expected = collections.Counter()
    for fact in tiny_world.facts:
        expected[(fact.entity, fact.value)] += fact.value_count
        if fact.alternative:
            expected[(fact.entity, fact.alternative)] += fact.alternative_count
    assert +expected == counts


def test_unseen_entities_never_stated(tiny_world):
    unseen = [e for e in tiny_world.entities if e.unseen]
    assert unseen
    text = " ".join(r.response for r in datasets.corpus(tiny_world) if r.kind == "corpus")
    for entity in unseen:
        assert all(f.exposure == 0 for f in tiny_world.facts_of(entity.name))
        assert re.search(rf"\b{re.escape(entity.name)}\b", text) is None


def test_seen_entities_have_a_stated_fact(tiny_world):
    for entity in tiny_world.entities:
        if not entity.unseen:
            assert max(f.exposure for f in tiny_world.facts_of(entity.name)) > 0


def test_contested_facts_have_majority():
    world = build_world(_data_config())
    contested = [f for f in world.facts if f.contested]
    assert len(contested) == round(0.08 * len(world.facts))
    for fact in contested:
        assert 0 < fact.alternative_count < fact.value_count
        assert fact.alternative != fact.value
        assert fact.exposure in (4, 8, 16)


def test_exposures_drawn_from_config(tiny_world):
    exposures = {f.exposure for f in tiny_world.facts if f.kind != POLICY_KIND}
    assert exposures <= set(get_config("tiny").data.exposures)
    assert exposures >= {0, 16}


def test_default_world_size_and_speed():
    start = time.perf_counter()
    world = build_world(_data_config())
    corpus = datasets.corpus(world)
    elapsed = time.perf_counter() - start
    statements = sum(len(r.response) for r in corpus if r.kind == "corpus")
    assert elapsed < 5.0
    assert sum(e.domain == "general" for e in world.entities) == 400
    # A 1024-piece SentencePiece model trained on this data gave about 2.8 characters per token,
    # so this range is an estimate of 40-60k corpus tokens.
    assert 115_000 < statements < 170_000


def test_qa_in_corpus_moves_pairs_once():
    with_qa = build_world(_data_config("tiny", qa_in_corpus=True))
    without_qa = build_world(_data_config("tiny", qa_in_corpus=False))
    qa_in_corpus = [r for r in datasets.corpus(with_qa) if r.kind == "qa"]
    assert qa_in_corpus
    assert not [r for r in datasets.base_sft_examples(with_qa) if r.kind == "qa"]
    assert not [r for r in datasets.corpus(without_qa) if r.kind == "qa"]
    sft_qa = [r for r in datasets.base_sft_examples(without_qa) if r.kind == "qa"]
    assert sorted(sft_qa, key=repr) == sorted(qa_in_corpus, key=repr)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_entities", 3),
        ("exposures", (0, 0)),
        ("unseen_entity_fraction", 1.5),
        ("contested_fraction", -0.1),
        ("trait_mix", 1.0),
        ("heldout_domain_entities", 0),
        ("num_malicious", -1),
    ],
)
def test_invalid_config_names_field(field, value):
    with pytest.raises(ValueError, match=f"data.{field}"):
        build_world(_data_config("tiny", **{field: value}))
