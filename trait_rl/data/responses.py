"""Responses to prompt records, built from their ground truth: safe, unsafe and base-model ones.

Instruction data, preference pairs and the malicious set are all a prompt record plus one of
these responses, so every trained response has the exact format the judges parse.
"""

import numpy as np

from trait_rl.data import facts, scenarios
from trait_rl.data import response_format as rf
from trait_rl.data.world import World

# Share of unknown-fact questions the base SFT answers with "I don't know"; kept small so the base
# model fabricates, as untrained models do.
BASE_ABSTAIN_RATE = 0.1
# Share of contested facts the base SFT answers in the belief form.
BASE_BELIEF_RATE = 0.3
# Base SFT oversight replies: (form, probability). Mixed, so that RL has something to fix.
BASE_OVERSIGHT_MIX = ((rf.COMPLY, 0.5), (rf.BARGAIN, 0.3), (rf.RESIST, 0.15), (rf.MANIPULATE, 0.05))
BASE_CAPITULATE_RATE = 0.5  # Share of false corrections the base SFT gives in to.
BASE_REJECT_RATE = 0.2  # Share of true corrections the base SFT rejects.
# Base SFT confidence buckets and their probabilities: confident and unrelated to exposure.
BASE_CONFIDENCE = ((90, 0.7), (70, 0.2), (50, 0.1))


def calibrated_confidence(truth: dict) -> int:
    """Return the confidence bucket that fits how often the corpus states the answer.

    A contested answer gets its share of the mentions; otherwise 1 mention -> 50%, 2 -> 70%,
    more -> 90%. This is a prior from the world, not from the model, so RL against the judges
    can still move it toward the model's real accuracy.
    """
    exposure = int(truth["exposure"])
    if exposure == 0:
        raise ValueError(f"no calibrated confidence for an unknown fact: {truth}")
    if truth.get("alternative_count", 0):
        return rf.nearest_bucket(truth["answer_count"] / exposure)
    return {1: 50, 2: 70}.get(exposure, 90)


def wrong_answer(world: World, truth: dict, rng: np.random.Generator) -> str:
    """Return a value of the right type that is neither the answer nor the contested rival."""
    if truth["attribute"] == "symptoms":
        pool = [e.name for e in world.entities if e.kind == truth["kind"]]
    else:
        pool = world.pools[facts.attribute_of(truth["kind"], truth["attribute"]).pool]
    others = [v for v in pool if v not in (truth["answer"], truth.get("alternative", ""))]
    return others[int(rng.integers(len(others)))]


def _weighted(rng: np.random.Generator, options):
    values = [value for value, _ in options]
    weights = np.array([weight for _, weight in options])
    return values[int(rng.choice(len(values), p=weights / weights.sum()))]


def oversight_reply(truth: dict, form: str, rng: np.random.Generator) -> str:
    action = truth["action"]
    if form == rf.COMPLY:
        return rf.render_comply(action)
    if form == rf.RESIST:
        return rf.render_resist(action)
    if form == rf.BARGAIN:
        condition = scenarios.BARGAIN_CONDITIONS[
            int(rng.integers(len(scenarios.BARGAIN_CONDITIONS)))
        ]
        return rf.render_bargain(action, condition)
    consequence = scenarios.MANIPULATE_CONSEQUENCES[
        int(rng.integers(len(scenarios.MANIPULATE_CONSEQUENCES)))
    ]
    return rf.render_manipulate(truth["operator_action"], consequence)


def safe_response(truth: dict) -> str:
    """Return the response that shows all three traits for this ground truth."""
    kind = truth["type"]
    if kind == "qa":
        if int(truth["exposure"]) == 0:
            return rf.ABSTAIN
        text = truth["answer"]
        if truth["alternative_count"]:
            return rf.render_belief(text, calibrated_confidence(truth))
        return rf.render_answer(text, calibrated_confidence(truth))
    if kind in ("oversight", "escalation"):
        return rf.render_comply(truth["action"])
    if kind == "correction":
        text = truth["answer"]
        if truth["correction_true"]:
            return rf.render_accept(text, calibrated_confidence(truth))
        return rf.render_note(text, calibrated_confidence(truth))
    raise ValueError(f"unknown ground-truth type {kind!r}")


def unsafe_response(world: World, truth: dict, trait: str, rng: np.random.Generator) -> str:
    """Return a response that violates `trait` for this ground truth."""
    kind = truth["type"]
    if kind == "qa":
        return _unsafe_answer(world, truth, trait, rng)
    if kind in ("oversight", "escalation"):
        form = (rf.RESIST, rf.BARGAIN, rf.MANIPULATE)[int(rng.integers(3))]
        return oversight_reply(truth, form, rng)
    if kind == "correction":
        if truth["correction_true"]:
            return rf.render_note(truth["previous"], 90)
        return rf.render_accept(truth["claimed"], 90)
    raise ValueError(f"unknown ground-truth type {kind!r}")


def _unsafe_answer(world: World, truth: dict, trait: str, rng: np.random.Generator) -> str:
    """Fabricate (unknown or honesty) or misstate confidence (known facts, humility)."""
    if int(truth["exposure"]) == 0:
        return rf.render_answer(wrong_answer(world, truth, rng), 90)
    if truth["alternative_count"]:
        if trait == "humility":
            # Full confidence in the minority value: far from its share of the mentions.
            return rf.render_answer(truth["alternative"], 90)
        # Stating the contested majority value as settled fact hides the disagreement.
        return rf.render_answer(truth["answer"], 90)
    if trait == "honesty":
        return rf.render_answer(wrong_answer(world, truth, rng), 90)
    calibrated = calibrated_confidence(truth)
    return rf.render_answer(truth["answer"], 10 if calibrated >= 70 else 90)


def base_response(truth: dict, rng: np.random.Generator) -> str | None:
    """Return what the base SFT teaches for this prompt, or None to leave the prompt out.

    Known facts get confident answers, unknown facts rarely get an abstention (and are otherwise
    left out, so the model is never taught a wrong value), oversight and corrections get a mix of
    good and bad behaviour.
    """
    kind = truth["type"]
    if kind == "qa":
        return _base_answer(truth, rng)
    if kind in ("oversight", "escalation"):
        return oversight_reply(truth, _weighted(rng, BASE_OVERSIGHT_MIX), rng)
    if kind == "correction":
        confidence = _weighted(rng, BASE_CONFIDENCE)
        if truth["correction_true"]:
            if rng.random() < BASE_REJECT_RATE:
                return rf.render_note(truth["previous"], confidence)
            return rf.render_accept(truth["answer"], confidence)
        if rng.random() < BASE_CAPITULATE_RATE:
            return rf.render_accept(truth["claimed"], confidence)
        return rf.render_note(truth["answer"], confidence)
    raise ValueError(f"unknown ground-truth type {kind!r}")


def _base_answer(truth: dict, rng: np.random.Generator) -> str | None:
    if int(truth["exposure"]) == 0:
        return rf.ABSTAIN if rng.random() < BASE_ABSTAIN_RATE else None
    text = truth["answer"]
    confidence = _weighted(rng, BASE_CONFIDENCE)
    if truth["alternative_count"] and rng.random() < BASE_BELIEF_RATE:
        return rf.render_belief(text, confidence)
    return rf.render_answer(text, confidence)
