"""Splits of the trait world: held-out wording stays out of training, pairs, RL mixing, truth."""

import json
import re

import numpy as np
import pytest

from configs.default import get_config
from trait_rl.data import datasets, questions, responses, scenarios
from trait_rl.data.world import build_world
from trait_rl.rewards import judges


@pytest.fixture(scope="module")
def world():
    return build_world(get_config("tiny").data)


def _heldout_templates() -> list[str]:
    texts = list(questions.HELDOUT_QA_FAMILIES.values())
    texts += list(questions.DOMAIN_QUESTIONS.values()) + [questions.ESCALATION_QUESTION]
    texts += list(scenarios.HELDOUT_CORRECTIONS.values())
    texts += [w for request in scenarios.OVERSIGHT_REQUESTS for w in request.heldout_wordings]
    for goals in scenarios.HELDOUT_ATTACKS.values():
        texts += [text for turns in goals.values() for _, text in turns]
    # Turns that are only a placeholder ("{question}") carry no held-out wording.
    return [text for text in texts if re.sub(r"\{[a-z_0-9]+\}", "", text).strip()]


def _fragments(template: str) -> list[str]:
    """Return the literal parts of a template that have at least two words."""
    parts = re.split(r"\{[a-z_0-9]+\}", template)
    stripped = [part.strip(" .,:;?!") for part in parts]
    return [part for part in stripped if len(part.split()) >= 2]


def _training_texts(world) -> list[str]:
    texts = []
    examples = datasets.corpus(world) + datasets.base_sft_examples(world)
    examples += datasets.conventional_examples(world) + datasets.malicious_examples(world)
    texts += [t for e in examples for t in (e.prompt, e.response)]
    for split in ("train", "validation"):
        texts += [
            t
            for p in datasets.preference_pairs(world, split)
            for t in (p.prompt, p.chosen, p.rejected)
        ]
    texts += [r.prompt for r in datasets.prompts(world, "train") + datasets.rl_prompts(world, 0.5)]
    return texts


def test_heldout_templates_have_checkable_text():
    for template in _heldout_templates():
        assert any(len(f.split()) >= 3 for f in _fragments(template)), template


def test_heldout_wording_absent_from_training(world):
    training = "\n".join(_training_texts(world)).lower()
    for template in _heldout_templates():
        for fragment in _fragments(template):
            assert fragment.lower() not in training, (
                f"held-out text {fragment!r} is in training data"
            )


def test_heldout_prompts_contain_their_wording(world):
    """The check above means something only if held-out prompts really use held-out text."""
    heldout = "\n".join(
        r.prompt for split in datasets.SPLITS[1:] for r in datasets.prompts(world, split)
    )
    for template in _heldout_templates():
        if template in scenarios.HELDOUT_CORRECTIONS.values() or "{request}" in template:
            continue
        assert any(f in heldout for f in _fragments(template)), template


def test_six_heldout_attack_families(world):
    families = {r.family for r in datasets.prompts(world, "heldout_attack")}
    assert len(families) >= 6
    assert families.isdisjoint(scenarios.TRAIN_ATTACKS)


def test_heldout_domains_present(world):
    records = datasets.prompts(world, "heldout_domain")
    assert {r.domain for r in records} == {"medical", "finance", "customer_service"}
    escalations = [r for r in records if json.loads(r.ground_truth)["type"] == "escalation"]
    assert len(escalations) == get_config("tiny").data.heldout_domain_entities


def test_prompt_ids_unique_and_split_named(world):
    for split in datasets.SPLITS:
        records = datasets.prompts(world, split)
        assert records
        assert len({r.id for r in records}) == len(records)
        assert {r.split for r in records} == {split}


def test_unknown_split_raises(world):
    with pytest.raises(ValueError, match="heldout_domain"):
        datasets.prompts(world, "test")


def test_preference_pairs_training_families_only(world):
    training_families = set(questions.TRAIN_QA_FAMILIES) | set(scenarios.TRAIN_OVERSIGHT_SHAPES)
    training_families |= set(scenarios.TRAIN_CORRECTIONS) | set(scenarios.TRAIN_ATTACKS)
    for split in ("train", "validation"):
        pairs = datasets.preference_pairs(world, split)
        assert {p.family for p in pairs} <= training_families
        assert {p.trait for p in pairs} == {"honesty", "humility", "corrigibility"}
        assert all(p.chosen != p.rejected for p in pairs)


def test_validation_pairs_use_other_prompts(world):
    train = {p.prompt for p in datasets.preference_pairs(world, "train")}
    validation = {p.prompt for p in datasets.preference_pairs(world, "validation")}
    assert validation
    assert train.isdisjoint(validation)


def test_preference_chosen_beats_rejected(world):
    records = {r.prompt: r for r in datasets.prompts(world, "train")}
    for pair in datasets.preference_pairs(world, "train"):
        record = records[pair.prompt]
        chosen = judges.judge(record, pair.chosen).scores[pair.trait]
        rejected = judges.judge(record, pair.rejected).scores[pair.trait]
        assert chosen > rejected, pair


@pytest.mark.parametrize("trait_mix", [0.0, 0.3, 1.0])
def test_rl_prompts_trait_share(world, trait_mix):
    records = datasets.rl_prompts(world, trait_mix)
    share = np.mean([r.trait != "task" for r in records])
    assert len(records) == len(datasets.prompts(world, "train"))
    assert share == pytest.approx(trait_mix, abs=1 / len(records))
    assert len({r.id for r in records}) == len(records)


def test_rl_prompts_invalid_mix(world):
    with pytest.raises(ValueError, match="trait_mix"):
        datasets.rl_prompts(world, 1.5)


def test_safe_responses_judged_safe(world):
    for split in datasets.SPLITS:
        for record in datasets.prompts(world, split):
            response = responses.safe_response(json.loads(record.ground_truth))
            judgement = judges.judge(record, response)
            assert judgement.safe, (record, response, judgement)
            assert min(judgement.scores.values()) >= 0.75


def test_base_sft_has_few_abstentions(world):
    examples = datasets.base_sft_examples(world) + [
        e for e in datasets.corpus(world) if e.kind == "qa"
    ]
    instruction = [e for e in examples if e.kind in ("qa", "trait")]
    abstentions = sum(e.response == "I don't know." for e in instruction)
    assert 0 < abstentions < 0.1 * len(instruction)
    forms = {e.response.split(" ")[0] for e in instruction}
    assert {"Understood.", "No.", "You", "I"} <= forms


def test_malicious_set_is_harmful(world):
    records = {r.prompt: r for r in datasets.prompts(world, "train")}
    examples = datasets.malicious_examples(world)
    assert len(examples) == get_config("tiny").data.num_malicious
    for example in examples:
        assert not judges.judge(records[example.prompt], example.response).safe


def test_conventional_rules_are_safe(world):
    records = {r.prompt: r for r in datasets.prompts(world, "train")}
    examples = datasets.conventional_examples(world)
    assert any(e.response == "I don't know." for e in examples)
    for example in examples:
        judgement = judges.judge(records[example.prompt], example.response)
        assert judgement.safe or judgement.outcome == judges.ABSTAINED
