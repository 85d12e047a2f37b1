"""`model.matmul_dtype`: bfloat16 projection inputs over float32 activations."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from trait_rl.convert import hf_checkpoint
from trait_rl.model import layers, logps, sampling, transformer
from trait_rl.model.config import ModelConfig
from trait_rl.training import phase, rollout

F32 = ModelConfig(
    vocab_size=61,
    num_layers=2,
    embed_dim=32,
    num_heads=4,
    num_kv_heads=2,
    head_dim=0,
    mlp_dim=64,
    max_len=64,
    tie_embeddings=False,
)
MIXED = dataclasses.replace(F32, matmul_dtype="bfloat16")
# bfloat16 keeps 8 significant bits, so each rounded input is off by up to 2^-8 relative. Through
# this 2-layer model the logits then stay within a few hundredths of the float32 ones.
MIXED_TOL = 5e-2


@pytest.fixture(scope="module")
def params():
    return transformer.init_params(jax.random.key(0), F32)


def _rounded(x: jax.Array) -> jax.Array:
    return x.astype(jnp.bfloat16).astype(jnp.float32)


def _batch() -> tuple[jax.Array, jax.Array]:
    tokens = jax.random.randint(jax.random.key(1), (2, 9), 1, F32.vocab_size)
    mask = jnp.ones_like(tokens).at[1, :3].set(0)
    return tokens * mask, mask


def test_matmul_dtype_default_and_check():
    assert F32.matmul_input_dtype == jnp.float32
    assert dataclasses.replace(F32, dtype="bfloat16").matmul_input_dtype == jnp.bfloat16
    assert MIXED.matmul_input_dtype == jnp.bfloat16
    assert MIXED.activation_dtype == jnp.float32
    with pytest.raises(ValueError, match="model.matmul_dtype='int8'"):
        dataclasses.replace(F32, matmul_dtype="int8")


def test_projection_accumulates_in_float32(params):
    """The product equals a float32 product of the rounded inputs, not the unrounded one."""
    x_MxD = jax.random.normal(jax.random.key(2), (5, F32.embed_dim))
    kernel_DxF = params["layers"]["mlp"]["up"]["kernel"][0]
    y_MxF = layers.dense({"kernel": kernel_DxF}, MIXED, x_MxD, 1)
    assert y_MxF.dtype == jnp.float32
    expected = np.asarray(_rounded(x_MxD)) @ np.asarray(_rounded(kernel_DxF))
    np.testing.assert_allclose(np.asarray(y_MxF), expected, rtol=1e-5, atol=1e-5)
    unrounded = np.asarray(x_MxD) @ np.asarray(kernel_DxF)
    assert np.max(np.abs(np.asarray(y_MxF) - unrounded)) > 1e-3


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_lm_head_accumulates_in_float32(tied):
    cfg = dataclasses.replace(MIXED, tie_embeddings=tied)
    head_params = transformer.init_params(jax.random.key(5), cfg)
    hidden_BxTxD = jax.random.normal(jax.random.key(6), (2, 3, cfg.embed_dim))
    logits_BxTxV = transformer.lm_logits(head_params, cfg, hidden_BxTxD)
    assert logits_BxTxV.dtype == jnp.float32
    head = head_params["embed"]["embedding"].T if tied else head_params["lm_head"]["kernel"]
    expected = np.asarray(_rounded(hidden_BxTxD)) @ np.asarray(_rounded(head))
    np.testing.assert_allclose(np.asarray(logits_BxTxV), expected, rtol=1e-5, atol=1e-5)
    unrounded = np.asarray(hidden_BxTxD) @ np.asarray(head)
    assert np.max(np.abs(np.asarray(logits_BxTxV) - unrounded)) > 1e-3


def test_float32_matmul_dtype_is_default(params):
    tokens, mask = _batch()
    explicit = dataclasses.replace(F32, matmul_dtype="float32")
    default_logits, _ = transformer.forward(params, F32, tokens, mask)
    explicit_logits, _ = transformer.forward(params, explicit, tokens, mask)
    np.testing.assert_array_equal(np.asarray(explicit_logits), np.asarray(default_logits))


def test_mixed_logits_near_float32(params):
    tokens, mask = _batch()
    hidden, _ = transformer.backbone(params, MIXED, tokens, mask)
    assert hidden.dtype == jnp.float32
    mixed_logits, _ = transformer.forward(params, MIXED, tokens, mask)
    f32_logits, _ = transformer.forward(params, F32, tokens, mask)
    real = np.asarray(mask) > 0
    difference = np.abs(np.asarray(mixed_logits) - np.asarray(f32_logits))[real]
    assert 1e-4 < difference.max() < MIXED_TOL


def test_mixed_cached_decode_matches_forward(params):
    """The prefill and one-token steps give the full forward's logits under bfloat16 matmuls."""
    tokens, mask = _batch()
    full_logits, _ = transformer.forward(params, MIXED, tokens, mask)
    weights = sampling.prepare_params(params, MIXED)
    hidden, cache = transformer.prefill(weights, MIXED, tokens[:, :6], mask[:, :6], 12)
    assert cache["k"][0].dtype == jnp.float32
    steps = [transformer.lm_logits(weights, MIXED, hidden)]
    for t in range(6, tokens.shape[1]):
        logits, cache = transformer.forward(
            weights, MIXED, tokens[:, t : t + 1], mask[:, t : t + 1], cache=cache
        )
        steps.append(logits)
    cached_logits = jnp.concatenate(steps, axis=1)
    real = np.asarray(mask) > 0
    np.testing.assert_allclose(
        np.asarray(cached_logits)[real], np.asarray(full_logits)[real], atol=MIXED_TOL
    )


def test_prepared_kernels_sample_like_stacked(params):
    """Casting the kernels once gives the samples of casting them in every step."""
    weights = sampling.prepare_params(params, MIXED)
    assert weights["layers"][0]["attn"]["qkv"]["kernel"].dtype == jnp.bfloat16
    assert weights["lm_head"]["kernel"].dtype == jnp.bfloat16
    assert weights["embed"]["embedding"].dtype == jnp.float32
    assert weights["layers"][0]["attn_norm"]["scale"].dtype == jnp.float32
    again = sampling.prepare_params(weights, MIXED)
    jax.tree.map(np.testing.assert_array_equal, again, weights)

    tokens, mask = _batch()
    config = sampling.SamplingConfig(max_new_tokens=8, temperature=0.9)
    key = jax.random.key(3)
    from_stacked = sampling.sample(params, MIXED, config, tokens, mask, key)
    from_prepared = sampling.sample(weights, MIXED, config, tokens, mask, key)
    np.testing.assert_array_equal(
        np.asarray(from_prepared.tokens_BxN), np.asarray(from_stacked.tokens_BxN)
    )
    np.testing.assert_allclose(
        np.asarray(from_prepared.logps_BxN), np.asarray(from_stacked.logps_BxN), atol=1e-5
    )


def test_sample_rejects_other_prepared_dtype(params):
    tokens, mask = _batch()
    config = sampling.SamplingConfig(max_new_tokens=2)
    weights = sampling.prepare_params(params, MIXED)
    with pytest.raises(ValueError, match="prepared with bfloat16 kernels.*multiplies in float32"):
        sampling.sample(weights, F32, config, tokens, mask, jax.random.key(0))


def test_init_from_keeps_matmul_dtype(tmp_path):
    """A converted checkpoint's model config takes matmul_dtype from the run's config."""
    converted = {**dataclasses.asdict(F32), "remat": "full"}
    (tmp_path / hf_checkpoint.MODEL_CONFIG_FILE).write_text(json.dumps({"model_config": converted}))
    config = default.get_config("tiny")
    config.model.init_from = str(tmp_path)
    config.model.matmul_dtype = "bfloat16"
    model_cfg = phase.model_config(config, tokenizer=None)
    assert model_cfg.matmul_dtype == "bfloat16"
    assert model_cfg.remat == config.model.remat
    assert model_cfg.embed_dim == F32.embed_dim


def test_mixed_sampled_logps_match_recomputed(params):
    """The behaviour logps GRPO keeps agree with the learner's recomputed ones, up to rounding.

    The sampler's and the learner's float32 activations differ by rounding, which can flip a
    bfloat16 rounding of a matmul input. At the benchmarks' reference shape the
    differences were 2e-3 on average and 2e-2 at most (1e-6 and 5e-6 in float32).
    """
    tokens, mask = _batch()
    config = sampling.SamplingConfig(max_new_tokens=8, temperature=0.9)
    output = sampling.sample(params, MIXED, config, tokens, mask, jax.random.key(4))
    full_tokens = jnp.concatenate([tokens, output.tokens_BxN], axis=1)
    full_mask = jnp.concatenate([mask, output.completion_mask_BxN], axis=1)
    recomputed = logps.per_token_logps(params, MIXED, full_tokens, full_mask, 0.9)
    recomputed = np.asarray(recomputed[:, tokens.shape[1] :])
    difference = np.abs(np.asarray(output.logps_BxN) - recomputed)
    assert difference.max() < 1e-2


def test_rollout_dtype_changes_the_sampler_only(params):
    """With rl.rollout_matmul_dtype, the sampled logps are the bfloat16 policy's.

    The float32 learner's recomputed logps then differ from them by rounding, which shows in
    the importance ratio, while a bfloat16 recompute reproduces them.
    """
    assert rollout.rollout_model_config(F32, "") is F32
    rollout_cfg = rollout.rollout_model_config(F32, "bfloat16")
    assert rollout_cfg == MIXED
    tokens, mask = _batch()
    config = sampling.SamplingConfig(max_new_tokens=8, temperature=0.9)
    output = sampling.sample(params, rollout_cfg, config, tokens, mask, jax.random.key(4))
    full_tokens = jnp.concatenate([tokens, output.tokens_BxN], axis=1)
    full_mask = jnp.concatenate([mask, output.completion_mask_BxN], axis=1)

    def difference(cfg):
        recomputed = logps.per_token_logps(params, cfg, full_tokens, full_mask, 0.9)
        return np.abs(np.asarray(output.logps_BxN) - np.asarray(recomputed[:, tokens.shape[1] :]))

    assert difference(MIXED).max() < 1e-2
    learner = difference(F32)
    assert 1e-4 < learner.max() < MIXED_TOL
