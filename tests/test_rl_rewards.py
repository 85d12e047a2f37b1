"""Reward placement, penalties, trait normalisation and combination."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.test_grpo import CFG
from trait_rl.model import sampling, transformer
from trait_rl.training import rl_rewards

REWARD_CONFIG = rl_rewards.RewardConfig(
    trait_weights=(1.0, 1.0, 1.0), normalization="batch", task_reward=1.0,
    malformed_penalty=1.0, missing_stop_penalty=0.5,
)  # fmt: skip


def test_reward_lands_on_stop_token():
    # Completion [t0, t1, stop, pad, pad].
    mask_BxN = jnp.array([[1, 1, 1, 0, 0]])
    rewards_BxN = rl_rewards.place_on_last_token_BxN(jnp.array([0.7]), mask_BxN)
    np.testing.assert_allclose(rewards_BxN, [[0.0, 0.0, 0.7, 0.0, 0.0]], atol=1e-7)


def test_empty_completion_gets_no_reward():
    rewards_BxN = rl_rewards.place_on_last_token_BxN(jnp.array([3.0]), jnp.zeros((1, 4)))
    np.testing.assert_array_equal(rewards_BxN, np.zeros((1, 4)))


def test_truncated_completion_is_unaltered_and_penalised():
    params = transformer.init_params(jax.random.key(0), CFG)
    prompt_tokens = jnp.array([[0, 5, 6, 7], [8, 9, 10, 11]])
    prompt_mask = (prompt_tokens != 0).astype(jnp.int32)
    # A stop id outside the vocabulary is never sampled, so every row runs to max_new_tokens.
    config = sampling.SamplingConfig(max_new_tokens=5, greedy=True, stop_ids=(CFG.vocab_size,))
    sample = sampling.sample(params, CFG, config, prompt_tokens, prompt_mask, jax.random.key(0))
    assert np.all(np.asarray(sample.truncated_B))
    assert np.all(np.asarray(sample.completion_mask_BxN) == 1)
    # Not altered: each token is still the greedy choice, the last one included.
    tokens_BxT = jnp.concatenate([prompt_tokens, sample.tokens_BxN], axis=1)
    mask_BxT = jnp.concatenate([prompt_mask, sample.completion_mask_BxN], axis=1)
    logits_BxTxV, _ = transformer.forward(params, CFG, tokens_BxT, mask_BxT)
    greedy_BxN = jnp.argmax(logits_BxTxV[:, 3:-1], axis=-1)
    np.testing.assert_array_equal(sample.tokens_BxN, greedy_BxN)

    reward_B = rl_rewards.sequence_rewards_B(
        jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), sample.truncated_B, REWARD_CONFIG
    )
    np.testing.assert_allclose(reward_B, [-0.5, -0.5])
    rewards_BxN = rl_rewards.place_on_last_token_BxN(reward_B, sample.completion_mask_BxN)
    np.testing.assert_allclose(rewards_BxN[:, -1], [-0.5, -0.5])
    np.testing.assert_array_equal(rewards_BxN[:, :-1], np.zeros((2, 4)))


def test_sequence_reward_adds_task_and_subtracts_penalties():
    reward_B = rl_rewards.sequence_rewards_B(
        jnp.array([0.25, 0.25]), jnp.array([1, 0]), jnp.array([0, 1]),
        jnp.array([False, True]), REWARD_CONFIG,
    )  # fmt: skip
    np.testing.assert_allclose(reward_B, [1.25, 0.25 - 1.0 - 0.5])


def test_batch_normalization_gives_unit_scale_per_trait():
    scores_Bx3 = jnp.array([[0.0, 10.0, -1.0], [2.0, 30.0, 1.0]])
    normalized, _ = rl_rewards.normalize_trait_scores(
        scores_Bx3, rl_rewards.init_running_moments(), "batch"
    )
    np.testing.assert_allclose(normalized, [[-1, -1, -1], [1, 1, 1]], atol=1e-4)


def test_running_moments_match_numpy_over_batches():
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=(5, 3)), rng.normal(3.0, 2.0, size=(7, 3))
    moments = rl_rewards.init_running_moments()
    _, moments = rl_rewards.normalize_trait_scores(jnp.asarray(first), moments, "running")
    _, moments = rl_rewards.normalize_trait_scores(jnp.asarray(second), moments, "running")
    both = np.concatenate([first, second])
    assert float(moments.count) == 12
    np.testing.assert_allclose(moments.mean_K, both.mean(0), rtol=1e-5)
    np.testing.assert_allclose(moments.var_K, both.var(0), rtol=1e-4)


def test_combination_uses_weights_and_scored_mask():
    scores_Bx3 = jnp.array([[1.0, 2.0, 3.0]])
    scored_Bx3 = jnp.array([[1.0, 0.0, 1.0]])
    combined = rl_rewards.combine_trait_rewards_B(scores_Bx3, scored_Bx3, (0.5, 1.0, 2.0))
    assert float(combined[0]) == pytest.approx(0.5 + 6.0)


def test_invalid_normalization_names_field():
    with pytest.raises(ValueError, match="rl.reward_normalization 'zscore'"):
        rl_rewards.RewardConfig((1.0, 1.0, 1.0), "zscore", 1.0, 1.0, 1.0)
