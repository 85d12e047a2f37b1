"""Reward model: score at the last real token, Bradley-Terry per trait, dropped pairs, accuracy."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from trait_rl import TRAITS
from trait_rl.data import tokenizer as tokenizer_lib
from trait_rl.data.records import PreferencePair
from trait_rl.model import transformer
from trait_rl.model.config import ModelConfig
from trait_rl.parallel import mesh as mesh_lib
from trait_rl.training import reward_model
from trait_rl.training.metrics import MetricWriter

CFG = ModelConfig(
    vocab_size=32,
    num_layers=2,
    embed_dim=32,
    num_heads=2,
    num_kv_heads=2,
    head_dim=0,
    mlp_dim=64,
    max_len=16,
)
score_fn = jax.jit(reward_model.reward_scores, static_argnums=1)


@pytest.fixture(scope="module")
def reward_params():
    key_backbone, key_head = jax.random.split(jax.random.key(0))
    backbone = jax.jit(transformer.init_params, static_argnums=1)(key_backbone, CFG)
    return reward_model.init_reward_params(key_head, CFG, backbone)


def _right_padded(ids, length):
    tokens = np.zeros((1, length), np.int32)
    tokens[0, : len(ids)] = ids
    return jnp.asarray(tokens), jnp.asarray((tokens != 0).astype(np.int32))


SEQUENCE = (1, 3, 7, 9, 14, 2)


def test_padding_length_does_not_change_score(reward_params):
    short = score_fn(reward_params, CFG, *_right_padded(SEQUENCE, 8))
    long = score_fn(reward_params, CFG, *_right_padded(SEQUENCE, 16))
    assert short.shape == (1, len(TRAITS))
    np.testing.assert_allclose(np.asarray(short), np.asarray(long), atol=1e-5)


def test_score_read_at_last_real_token(reward_params):
    tokens, mask = _right_padded(SEQUENCE, 8)
    score = score_fn(reward_params, CFG, tokens, mask)

    changed_pad = score_fn(reward_params, CFG, tokens.at[0, 7].set(21), mask)
    np.testing.assert_allclose(np.asarray(changed_pad), np.asarray(score), atol=1e-5)

    changed_last = score_fn(reward_params, CFG, tokens.at[0, 5].set(21), mask)
    assert np.all(np.abs(np.asarray(changed_last) - np.asarray(score)) > 1e-4)

    # The score is the head output at position 5, not at position 4 or 6.
    hidden, _ = transformer.backbone(reward_params["backbone"], CFG, tokens, mask)
    head = reward_params["head"]
    at_last = hidden[0, 5] @ head["kernel"] + head["bias"]
    np.testing.assert_allclose(np.asarray(score[0]), np.asarray(at_last), atol=1e-5)


def test_bradley_terry_uses_only_own_trait():
    chosen = jnp.array([[1.0, 5.0, -3.0], [0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])
    rejected = jnp.array([[0.0, 9.0, 9.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    trait = jnp.array([0, 2, 1])
    weight = jnp.array([1.0, 1.0, 0.0])
    loss, metrics = reward_model.bradley_terry_loss(chosen, rejected, trait, weight)

    # Pair 0 is scored on head 0 (margin 1), pair 1 on head 2 (margin -1), pair 2 is filler.
    want = (np.log1p(np.exp(-1.0)) + np.log1p(np.exp(1.0))) / 2
    assert float(loss) == pytest.approx(want, rel=1e-6)
    assert float(metrics["accuracy"]) == pytest.approx(0.5)
    assert float(metrics["margin"]) == pytest.approx(0.0)


def test_all_traits_pair_trains_every_head():
    chosen = jnp.array([[1.0, 2.0, 3.0]])
    rejected = jnp.zeros((1, 3))
    loss, _ = reward_model.bradley_terry_loss(
        chosen, rejected, jnp.array([reward_model.ALL_TRAITS]), jnp.ones(1)
    )
    want = np.mean([np.log1p(np.exp(-m)) for m in (1.0, 2.0, 3.0)])
    assert float(loss) == pytest.approx(want, rel=1e-6)


def _arrays(rows):
    """Preference arrays from (chosen ids, rejected ids, trait) rows, right padded to 8."""
    arrays = {name: [] for name in ("chosen", "rejected")}
    for chosen, rejected, _ in rows:
        arrays["chosen"].append(_right_padded(chosen, 8))
        arrays["rejected"].append(_right_padded(rejected, 8))
    out = {}
    for side in ("chosen", "rejected"):
        out[f"{side}_tokens"] = np.concatenate([np.asarray(t) for t, _ in arrays[side]])
        out[f"{side}_input_mask"] = np.concatenate([np.asarray(m) for _, m in arrays[side]])
    out["trait"] = np.array([trait for _, _, trait in rows], np.int32)
    return out


def test_pairwise_accuracy_matches_scores(reward_params):
    rng = np.random.default_rng(3)
    rows = []
    for index in range(10):
        chosen = (1, *rng.integers(3, 32, size=4), 2)
        rejected = (1, *rng.integers(3, 32, size=3), 2)
        rows.append((chosen, rejected, [0, 1][index % 2]))
    arrays = _arrays(rows)
    mesh = mesh_lib.make_mesh(default.get_config().mesh, jax.devices()[:2])
    accuracy = reward_model.pairwise_accuracy(reward_params, CFG, arrays, 4, mesh)

    chosen = np.asarray(
        score_fn(reward_params, CFG, arrays["chosen_tokens"], arrays["chosen_input_mask"])
    )
    rejected = np.asarray(
        score_fn(reward_params, CFG, arrays["rejected_tokens"], arrays["rejected_input_mask"])
    )
    for k in (0, 1):
        own = arrays["trait"] == k
        want = np.mean(chosen[own, k] > rejected[own, k])
        assert accuracy[TRAITS[k]] == pytest.approx(want)
    assert np.isnan(accuracy[TRAITS[2]])


def test_identical_after_truncation_dropped_and_counted(tmp_path):
    texts = [f"alpha beta gamma delta item {i} answer {i * 7}" for i in range(200)]
    tok = tokenizer_lib.train_tokenizer(texts, 300, tmp_path / "tok.model")
    shared = "alpha beta gamma delta " * 6
    pairs = [
        PreferencePair(
            "item 1", shared + "answer 7", shared + "answer 14", "honesty", "f", "train"
        ),
        PreferencePair("item 2", "answer 7", "answer 14", "humility", "f", "train"),
    ]
    with MetricWriter(tmp_path / "logs") as writer:
        arrays = reward_model.tokenize_preferences(tok, pairs, 12, "train", writer)

    assert arrays["trait"].tolist() == [TRAITS.index("humility")]
    line = json.loads((tmp_path / "logs" / "metrics.jsonl").read_text())
    assert line == {"step": 0, "reward/dropped_identical_pairs": 1}
