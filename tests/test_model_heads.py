"""Scalar heads, last-token gathering and per-token logps against hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trait_rl.model import heads, logps, transformer
from trait_rl.model.config import ModelConfig

CFG = ModelConfig(
    vocab_size=29, num_layers=1, embed_dim=16, num_heads=2, num_kv_heads=1,
    head_dim=0, mlp_dim=32, max_len=16,
)  # fmt: skip


def test_gather_last_reads_last_masked_position():
    values = jnp.arange(12.0).reshape(2, 6)
    mask = jnp.array([[0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(heads.gather_last(values, mask), [3.0, 11.0])


def test_gather_last_keeps_trailing_dims():
    values = jnp.arange(24.0).reshape(2, 4, 3)
    mask = jnp.array([[1, 1, 0, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(heads.gather_last(values, mask), [[3, 4, 5], [21, 22, 23]])


def test_scalar_head_shapes_and_values():
    head = heads.init_scalar_head(jax.random.key(0), CFG, 3)
    assert head["kernel"].shape == (16, 3)
    assert head["bias"].shape == (3,)
    hidden = jax.random.normal(jax.random.key(1), (2, 5, 16), jnp.bfloat16)
    out = heads.scalar_head(head, hidden)
    assert out.shape == (2, 5, 3)
    assert out.dtype == jnp.float32
    expected = np.asarray(hidden, np.float32) @ np.asarray(head["kernel"])
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_scalar_head_rejects_zero_outputs():
    with pytest.raises(ValueError, match="num_outputs=0"):
        heads.init_scalar_head(jax.random.key(0), CFG, 0)


def test_token_logps_match_log_softmax():
    logits = jnp.array([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    targets = jnp.array([[2, 1]])
    got = logps.token_logps(logits, targets, temperature=2.0)
    first = 1.5 - np.log(np.exp(0.5) + np.exp(1.0) + np.exp(1.5))
    np.testing.assert_allclose(got, [[first, -np.log(3.0)]], atol=1e-6)


def test_per_token_logps_shift_and_padding():
    params = transformer.init_params(jax.random.key(0), CFG)
    tokens = jnp.array([[0, 0, 5, 7, 9], [3, 4, 5, 7, 9]])
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    got = logps.per_token_logps(params, CFG, tokens, mask)
    logits, _ = transformer.forward(params, CFG, tokens, mask)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    assert float(got[1, 0]) == 0.0
    np.testing.assert_array_equal(got[0, :3], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(got[1, 3], log_probs[1, 2, 7], atol=1e-6)
    np.testing.assert_allclose(got[0, 4], log_probs[0, 3, 9], atol=1e-6)
