"""Log-likelihood multiple choice: a hand-built case with a known choice, and a real tiny model."""

import jax
import numpy as np
import pytest

from trait_rl.data.public_evals import MultipleChoiceItem
from trait_rl.eval import multiple_choice
from trait_rl.model import logps as model_logps
from trait_rl.model import transformer
from trait_rl.model.config import ModelConfig


class WordTokenizer:
    """One id per whitespace-separated word, assigned on first use; bos = 2."""

    bos_id = 2

    def __init__(self):
        self.ids = {}

    def encode(self, text):
        return [self.ids.setdefault(word, 10 + len(self.ids)) for word in text.split()]


def _bigram_logps_fn(tokenizer, preferred_word, bonus):
    """log p(token) = 0 for `preferred_word`, -bonus for every other token."""

    def logps_fn(tokens_BxT, mask_BxT):
        preferred = tokenizer.ids[preferred_word]
        logps_BxT = np.where(tokens_BxT == preferred, 0.0, -bonus)
        logps_BxT[:, 0] = 0.0
        return np.where(mask_BxT > 0, logps_BxT, 0.0)

    return logps_fn


def _items():
    return [
        MultipleChoiceItem("Is water wet?", ("yes", "no"), (0,), "toy"),
        MultipleChoiceItem("Is fire cold?", ("yes", "no"), (1,), "toy"),
        MultipleChoiceItem("Pick one", ("yes maybe", "no", "yes"), (0, 2), "toy"),
    ]


def test_choice_with_highest_loglik_is_picked():
    tokenizer = WordTokenizer()
    items = _items()
    tokenizer.encode("yes no maybe")
    logps_fn = _bigram_logps_fn(tokenizer, "yes", bonus=2.0)
    scores = multiple_choice.score_items(logps_fn, tokenizer, items, max_len=16, batch_size=2)
    np.testing.assert_allclose(scores[0], [0.0, -2.0])
    np.testing.assert_allclose(scores[2], [-2.0, -2.0, 0.0])
    # "yes" wins everywhere: right on items 1 and 3, wrong on item 2.
    assert multiple_choice.desired_choice_rate(items, scores) == pytest.approx(2 / 3)


def test_probability_mass_known_value():
    items = _items()[:1]
    scores = [np.log(np.array([0.6, 0.2]))]
    # 0.6 / (0.6 + 0.2)
    assert multiple_choice.desired_probability_mass(items, scores) == pytest.approx(0.75)


def test_long_prompt_keeps_choice_whole():
    tokenizer = WordTokenizer()
    ids, num_choice = multiple_choice.encode_choice(tokenizer, "w " * 50, "a b", max_len=10)
    assert len(ids) == 10
    assert ids[0] == tokenizer.bos_id
    assert num_choice == 2
    assert ids[-2:] == tokenizer.encode("a b")


def test_evaluate_reports_mc2_and_per_source():
    tokenizer = WordTokenizer()
    tokenizer.encode("yes no maybe")
    logps_fn = _bigram_logps_fn(tokenizer, "no", bonus=1.0)
    items = _items()
    other = MultipleChoiceItem("Q?", ("yes", "no"), (1,), "other")
    evals = {"anthropic_advanced_ai_risk": [*items, other], "truthfulqa_mc2": items[:2]}
    results = multiple_choice.evaluate_public_mc(logps_fn, tokenizer, evals, 16, 4)
    assert results["anthropic_advanced_ai_risk"]["value"] == pytest.approx(2 / 4)
    assert results["anthropic_advanced_ai_risk/other"]["value"] == pytest.approx(1.0)
    assert results["anthropic_advanced_ai_risk/toy"]["count"] == 3
    mass_item1 = np.exp(-1.0) / (np.exp(-1.0) + 1.0)  # "yes" desired, "no" preferred.
    mass_item2 = 1.0 / (np.exp(-1.0) + 1.0)
    assert results["truthfulqa_mc2"]["value"] == pytest.approx((mass_item1 + mass_item2) / 2)


def test_model_scores_match_unpadded_logps():
    cfg = ModelConfig(
        vocab_size=64,
        num_layers=1,
        embed_dim=16,
        num_heads=2,
        num_kv_heads=2,
        head_dim=8,
        mlp_dim=32,
        max_len=16,
    )
    # numpy weights, because an eager init_params costs seconds of op-by-op dispatch.
    shapes = jax.eval_shape(lambda key: transformer.init_params(key, cfg), jax.random.key(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.3, s.shape).astype(s.dtype), shapes)
    tokenizer = WordTokenizer()
    items = [MultipleChoiceItem("a b c", ("d", "e f"), (0,), "toy")]
    logps_fn = multiple_choice.model_logps_fn(params, cfg)
    (scores,) = multiple_choice.score_items(logps_fn, tokenizer, items, max_len=16, batch_size=4)
    for choice, score in zip(items[0].choices, scores, strict=True):
        ids, num_choice = multiple_choice.encode_choice(tokenizer, "a b c", choice, 16)
        tokens = np.array([ids], dtype=np.int32)
        direct = model_logps.per_token_logps(params, cfg, tokens, np.ones_like(tokens))
        assert score == pytest.approx(float(np.asarray(direct)[0, -num_choice:].sum()), abs=1e-4)
