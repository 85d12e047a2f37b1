"""Sampler: logps match a full forward, stop tokens, greedy, top-k/top-p, padding invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trait_rl.model import logps, sampling, transformer
from trait_rl.model.config import ModelConfig

CFG = ModelConfig(
    vocab_size=53,
    num_layers=2,
    embed_dim=32,
    num_heads=4,
    num_kv_heads=2,
    head_dim=0,
    mlp_dim=64,
    max_len=64,
)
NEW_TOKENS = 10
ATOL = 1e-5


@pytest.fixture(scope="module")
def params():
    return transformer.init_params(jax.random.key(0), CFG)


@pytest.fixture(scope="module")
def prompts():
    """Three prompts of 7, 4 and 1 real tokens, LEFT padded to 7."""
    tokens = jax.random.randint(jax.random.key(1), (3, 7), 1, CFG.vocab_size)
    mask = jnp.array([[1] * 7, [0, 0, 0, 1, 1, 1, 1], [0] * 6 + [1]], jnp.int32)
    return tokens * mask, mask


@pytest.fixture(scope="module")
def recompute():
    return jax.jit(logps.per_token_logps, static_argnums=(1, 4))


@pytest.fixture(scope="module")
def greedy_output(params, prompts):
    config = sampling.SamplingConfig(max_new_tokens=NEW_TOKENS, greedy=True)
    return sampling.sample(params, CFG, config, *prompts, jax.random.key(5))


def _recomputed_logps(recompute, params, prompts, output, temperature):
    tokens = jnp.concatenate([prompts[0], output.tokens_BxN], axis=1)
    mask = jnp.concatenate([prompts[1], output.completion_mask_BxN], axis=1)
    return recompute(params, CFG, tokens, mask, temperature)[:, prompts[0].shape[1] :]


def test_logps_match_full_forward(params, prompts, recompute):
    config = sampling.SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=0.7, stop_ids=(3, 4))
    output = sampling.sample(params, CFG, config, *prompts, jax.random.key(2))
    assert output.tokens_BxN.shape == (3, NEW_TOKENS)
    assert output.logps_BxN.dtype == jnp.float32
    expected = _recomputed_logps(recompute, params, prompts, output, 0.7)
    np.testing.assert_allclose(output.logps_BxN, expected, atol=ATOL)
    assert bool(jnp.all(output.logps_BxN <= 0.0))


def test_greedy_is_argmax_of_full_forward(params, prompts, greedy_output):
    tokens = jnp.concatenate([prompts[0], greedy_output.tokens_BxN], axis=1)
    mask = jnp.concatenate([prompts[1], greedy_output.completion_mask_BxN], axis=1)
    logits, _ = transformer.forward(params, CFG, tokens, mask)
    p = prompts[0].shape[1]
    argmax = jnp.argmax(logits[:, p - 1 : -1], axis=-1)
    np.testing.assert_array_equal(greedy_output.tokens_BxN, argmax)
    assert bool(jnp.all(greedy_output.completion_mask_BxN == 1))
    assert not bool(jnp.any(greedy_output.stopped_B))
    assert bool(jnp.all(greedy_output.truncated_B))


def test_greedy_ignores_rng(params, prompts, greedy_output):
    config = sampling.SamplingConfig(max_new_tokens=NEW_TOKENS, greedy=True)
    again = sampling.sample(params, CFG, config, *prompts, jax.random.key(99))
    np.testing.assert_array_equal(again.tokens_BxN, greedy_output.tokens_BxN)
    np.testing.assert_allclose(again.logps_BxN, greedy_output.logps_BxN, atol=ATOL)


@pytest.mark.parametrize(
    "config",
    [
        sampling.SamplingConfig(max_new_tokens=NEW_TOKENS, top_k=1),
        sampling.SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=0.5, top_p=1e-3),
    ],
    ids=["top_k_1", "tiny_top_p"],
)
def test_narrow_filters_equal_greedy(params, prompts, greedy_output, config):
    output = sampling.sample(params, CFG, config, *prompts, jax.random.key(3))
    np.testing.assert_array_equal(output.tokens_BxN, greedy_output.tokens_BxN)


def test_stop_token_ends_sequence(params, prompts, greedy_output):
    """Use the greedy token at step 3 of row 0 as the stop id; greedy prefixes do not change."""
    stop_id = int(greedy_output.tokens_BxN[0, 3])
    config = sampling.SamplingConfig(max_new_tokens=NEW_TOKENS, greedy=True, stop_ids=(stop_id,))
    output = sampling.sample(params, CFG, config, *prompts, jax.random.key(5))

    reference = np.asarray(greedy_output.tokens_BxN)
    for row in range(3):
        hits = np.flatnonzero(reference[row] == stop_id)
        length = hits[0] + 1 if hits.size else NEW_TOKENS
        expected_mask = (np.arange(NEW_TOKENS) < length).astype(np.int32)
        np.testing.assert_array_equal(output.completion_mask_BxN[row], expected_mask)
        np.testing.assert_array_equal(output.tokens_BxN[row, :length], reference[row, :length])
        assert np.all(np.asarray(output.tokens_BxN[row, length:]) == 0)
        assert np.all(np.asarray(output.logps_BxN[row, length:]) == 0.0)
        assert bool(output.stopped_B[row]) == bool(hits.size)
        assert bool(output.truncated_B[row]) == (not hits.size)
    assert int(output.completion_mask_BxN[0].sum()) <= 4


def test_all_stopped_sequences_end_early(params, prompts, greedy_output):
    """When every row stops at step 0 the loop exits and the rest stays padding."""
    first = tuple(int(t) for t in greedy_output.tokens_BxN[:, 0])
    config = sampling.SamplingConfig(max_new_tokens=NEW_TOKENS, greedy=True, stop_ids=first)
    output = sampling.sample(params, CFG, config, *prompts, jax.random.key(5))
    np.testing.assert_array_equal(output.completion_mask_BxN.sum(axis=1), [1, 1, 1])
    assert bool(jnp.all(output.stopped_B))
    assert bool(jnp.all(output.tokens_BxN[:, 1:] == 0))


def test_left_padding_does_not_change_samples(params, prompts):
    """The same prompt alone and with 5 extra left pads gives the same tokens and logps."""
    tokens = prompts[0][:1]
    mask = prompts[1][:1]
    padded = jnp.pad(tokens, ((0, 0), (5, 0)))
    padded_mask = jnp.pad(mask, ((0, 0), (5, 0)))
    config = sampling.SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=1.0)
    plain = sampling.sample(params, CFG, config, tokens, mask, jax.random.key(4))
    shifted = sampling.sample(params, CFG, config, padded, padded_mask, jax.random.key(4))
    np.testing.assert_array_equal(plain.tokens_BxN, shifted.tokens_BxN)
    np.testing.assert_allclose(plain.logps_BxN, shifted.logps_BxN, atol=ATOL)


def test_top_p_keeps_smallest_covering_set():
    probs = jnp.array([[0.5, 0.3, 0.15, 0.05]])
    filtered = sampling._filter_top_p(jnp.log(probs), 0.75)
    np.testing.assert_array_equal(jnp.isfinite(filtered), [[True, True, False, False]])
    filtered = sampling._filter_top_p(jnp.log(probs), 0.8)
    np.testing.assert_array_equal(jnp.isfinite(filtered), [[True, True, False, False]])
    filtered = sampling._filter_top_p(jnp.log(probs), 0.81)
    np.testing.assert_array_equal(jnp.isfinite(filtered), [[True, True, True, False]])


def test_top_k_keeps_k_largest():
    logits = jnp.array([[0.1, 2.0, -1.0, 1.5]])
    filtered = sampling._filter_top_k(logits, 2)
    np.testing.assert_array_equal(jnp.isfinite(filtered), [[False, True, False, True]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_new_tokens": 0}, "sampling.max_new_tokens=0"),
        ({"max_new_tokens": 4, "temperature": 0.0}, "sampling.temperature=0.0"),
        ({"max_new_tokens": 4, "top_k": -1}, "sampling.top_k=-1"),
        ({"max_new_tokens": 4, "top_p": 1.5}, "sampling.top_p=1.5"),
        ({"max_new_tokens": 4, "top_p": 0.0}, "sampling.top_p=0.0"),
    ],
)
def test_bad_sampling_config_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sampling.SamplingConfig(**kwargs)


def test_sampling_config_is_hashable_with_list_stop_ids():
    config = sampling.SamplingConfig(max_new_tokens=3, stop_ids=[2, 7])
    assert config.stop_ids == (2, 7)
    assert hash(config) == hash(sampling.SamplingConfig(max_new_tokens=3, stop_ids=(2, 7)))


def test_argmax_matches_jnp_argmax_with_ties():
    logits_BxV = jax.random.normal(jax.random.key(3), (16, 50))
    logits_BxV = logits_BxV.at[0, 7].set(9.0).at[0, 3].set(9.0)  # a tie: the first index wins
    logits_BxV = logits_BxV.at[1].set(0.0)  # all equal: index 0
    chosen = sampling._argmax(logits_BxV)
    np.testing.assert_array_equal(np.asarray(chosen), np.asarray(jnp.argmax(logits_BxV, axis=-1)))
    assert int(chosen[0]) == 3
    assert int(chosen[1]) == 0


def test_categorical_frequencies_match_probabilities():
    """Inverse-CDF draws follow softmax(logits) and never pick an id of probability 0."""
    probs_V = np.array([0.5, 0.0, 0.3, 0.0, 0.15, 0.05], np.float32)
    logits_BxV = jnp.broadcast_to(jnp.log(jnp.asarray(probs_V)), (40_000, probs_V.size))
    logits_BxV = logits_BxV.at[:, 3].set(sampling._BANNED_LOGIT)  # a banned id: finite, tiny
    tokens_B = np.asarray(sampling._categorical(jax.random.key(0), logits_BxV))
    frequencies_V = np.bincount(tokens_B, minlength=probs_V.size) / tokens_B.size
    assert frequencies_V[1] == 0
    assert frequencies_V[3] == 0
    # 40,000 draws: the standard error of a frequency near 0.5 is 0.0025; allow 4 of them.
    np.testing.assert_allclose(frequencies_V, probs_V, atol=0.01)


@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "temperature"])
def test_shared_prefill_matches_per_row_prefill(params, prompts, greedy):
    """prompt_repeats runs each prompt once and repeats its cache: same samples and logps."""
    tokens_BxP, mask_BxP = (np.repeat(np.asarray(a), 4, axis=0) for a in prompts)
    config = sampling.SamplingConfig(max_new_tokens=NEW_TOKENS, greedy=greedy, temperature=0.8)
    key = jax.random.key(7)
    per_row = sampling.sample(params, CFG, config, tokens_BxP, mask_BxP, key)
    shared = sampling.sample(params, CFG, config, tokens_BxP, mask_BxP, key, prompt_repeats=4)
    np.testing.assert_array_equal(np.asarray(shared.tokens_BxN), np.asarray(per_row.tokens_BxN))
    np.testing.assert_array_equal(
        np.asarray(shared.completion_mask_BxN), np.asarray(per_row.completion_mask_BxN)
    )
    np.testing.assert_allclose(
        np.asarray(shared.logps_BxN), np.asarray(per_row.logps_BxN), atol=ATOL
    )


def test_unstacked_params_sample_like_stacked(params, prompts):
    """Weights converted once by prepare_params give the samples of the stacked weights."""
    config = sampling.SamplingConfig(max_new_tokens=NEW_TOKENS, temperature=0.8)
    key = jax.random.key(9)
    unstacked = sampling.prepare_params(params, CFG)
    assert isinstance(unstacked["layers"], tuple)
    assert transformer.unstack_layers(unstacked) is unstacked
    from_stacked = sampling.sample(params, CFG, config, *prompts, key)
    from_unstacked = sampling.sample(unstacked, CFG, config, *prompts, key)
    np.testing.assert_array_equal(
        np.asarray(from_unstacked.tokens_BxN), np.asarray(from_stacked.tokens_BxN)
    )
    np.testing.assert_allclose(
        np.asarray(from_unstacked.logps_BxN), np.asarray(from_stacked.logps_BxN), atol=ATOL
    )


def test_prompt_repeats_rejects_rows_that_differ(params, prompts):
    config = sampling.SamplingConfig(max_new_tokens=2)
    tokens_BxP, mask_BxP = (np.repeat(np.asarray(a), 2, axis=0) for a in prompts)
    with pytest.raises(ValueError, match="differ within a group of 3"):
        sampling.sample(
            params, CFG, config, tokens_BxP, mask_BxP, jax.random.key(0), prompt_repeats=3
        )
    with pytest.raises(ValueError, match="does not divide the batch size 6"):
        sampling.sample(
            params, CFG, config, tokens_BxP, mask_BxP, jax.random.key(0), prompt_repeats=4
        )


def test_first_reaching_skips_zero_weight_ids():
    """A cdf that rises by a rounding step at a banned id must not select that id."""
    weights_1xV = jnp.array([[0.5, 0.0, 0.5]])
    cdf_1xV = jnp.array([[0.5, 0.5000001, 1.0]])  # non-monotone rounding at id 1
    assert int(sampling._first_reaching(weights_1xV, cdf_1xV, jnp.array([[0.50000005]]))[0]) == 2
    assert int(sampling._first_reaching(weights_1xV, cdf_1xV, jnp.array([[1.0]]))[0]) == 2
    assert int(sampling._first_reaching(weights_1xV, cdf_1xV, jnp.array([[0.25]]))[0]) == 0
    # If no kept id reaches the target (a rounding case), the last kept id is returned.
    assert int(sampling._first_reaching(weights_1xV, cdf_1xV, jnp.array([[1.5]]))[0]) == 2


def test_categorical_across_blocks_matches_probabilities():
    """The two-level draw over a vocabulary of 2.3 blocks, one of them all zero, follows p."""
    rng = np.random.default_rng(0)
    probs_V = rng.random(150).astype(np.float32) ** 4
    probs_V[64:128] = 0.0  # Zero out the whole second block.
    probs_V[[3, 140]] = 0.0
    probs_V /= probs_V.sum()
    logits_V = np.where(probs_V > 0, np.log(np.maximum(probs_V, 1e-30)), sampling._BANNED_LOGIT)
    logits_BxV = jnp.broadcast_to(jnp.asarray(logits_V, jnp.float32), (40_000, probs_V.size))
    tokens_B = np.asarray(sampling._categorical(jax.random.key(1), logits_BxV))
    frequencies_V = np.bincount(tokens_B, minlength=probs_V.size) / tokens_B.size
    assert frequencies_V[probs_V == 0].sum() == 0
    # The largest probability is below 0.1, so each frequency's standard error is below 0.0015.
    np.testing.assert_allclose(frequencies_V, probs_V, atol=0.006)
    assert tokens_B.max() < probs_V.size


def test_argmax_of_nan_row_matches_jnp_argmax():
    logits_BxV = jnp.array([[0.0, jnp.nan, 3.0, jnp.nan], [1.0, 2.0, 0.0, 2.0]])
    np.testing.assert_array_equal(
        np.asarray(sampling._argmax(logits_BxV)), np.asarray(jnp.argmax(logits_BxV, axis=-1))
    )


@pytest.mark.parametrize("top_k", [2.5, True, -1])
def test_top_k_must_be_a_non_negative_int(top_k):
    with pytest.raises(ValueError, match="invalid sampling.top_k"):
        sampling.SamplingConfig(max_new_tokens=2, top_k=top_k)


@pytest.mark.parametrize(
    ("prompt_repeats", "message"),
    [(0, "expected a positive integer"), (True, "expected a positive integer"),
     (2.0, "expected a positive integer"), (4, "does not divide the batch size 6")],
)  # fmt: skip
def test_bad_prompt_repeats_raise(params, prompts, prompt_repeats, message):
    config = sampling.SamplingConfig(max_new_tokens=2)
    tokens_BxP, mask_BxP = (np.repeat(np.asarray(a), 2, axis=0) for a in prompts)
    with pytest.raises(ValueError, match=message):
        sampling.sample(
            params, CFG, config, tokens_BxP, mask_BxP, jax.random.key(0),
            prompt_repeats=prompt_repeats,
        )  # fmt: skip


def test_numpy_integer_prompt_repeats_accepted(params, prompts):
    config = sampling.SamplingConfig(max_new_tokens=2, greedy=True)
    tokens_BxP, mask_BxP = (np.repeat(np.asarray(a), 2, axis=0) for a in prompts)
    key = jax.random.key(0)
    shared = sampling.sample(params, CFG, config, tokens_BxP, mask_BxP, key,
                             prompt_repeats=np.int64(2))  # fmt: skip
    per_row = sampling.sample(params, CFG, config, tokens_BxP, mask_BxP, key)
    np.testing.assert_array_equal(np.asarray(shared.tokens_BxN), np.asarray(per_row.tokens_BxN))
