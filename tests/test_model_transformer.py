"""Transformer properties: causality, padding invariance, KV-cache decoding, shapes, configs."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from trait_rl.model import layers, prefix, transformer
from trait_rl.model.config import ModelConfig

TINY = ModelConfig(
    vocab_size=61,
    num_layers=2,
    embed_dim=32,
    num_heads=4,
    num_kv_heads=2,
    head_dim=0,
    mlp_dim=64,
    max_len=64,
)
GPT2_STYLE = dataclasses.replace(
    TINY,
    num_kv_heads=4,
    tie_embeddings=False,
    position_embedding="learned",
    norm="layernorm",
    mlp_activation="gelu",
    use_bias=True,
)
ATOL = 1e-5


@pytest.fixture(scope="module", params=[TINY, GPT2_STYLE], ids=["llama_gqa", "gpt2"])
def model(request):
    cfg = request.param
    params = transformer.init_params(jax.random.key(0), cfg)
    forward = jax.jit(transformer.forward, static_argnums=1)
    return cfg, params, forward


def _tokens(batch: int, length: int, seed: int = 1) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (batch, length), 1, TINY.vocab_size)


def _left_pad(tokens_BxT: jax.Array, pads: int) -> tuple[jax.Array, jax.Array]:
    b = tokens_BxT.shape[0]
    padded = jnp.concatenate([jnp.zeros((b, pads), tokens_BxT.dtype), tokens_BxT], axis=1)
    mask = jnp.concatenate([jnp.zeros((b, pads), jnp.int32), jnp.ones_like(tokens_BxT)], axis=1)
    return padded, mask


def test_forward_shapes_and_dtype(model):
    cfg, params, forward = model
    tokens = _tokens(2, 12)
    logits, cache = forward(params, cfg, tokens, jnp.ones_like(tokens))
    assert logits.shape == (2, 12, cfg.vocab_size)
    assert logits.dtype == jnp.float32
    assert cache is None
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_causality(model):
    cfg, params, forward = model
    tokens = _tokens(2, 12)
    mask = jnp.ones_like(tokens)
    changed = tokens.at[:, 7].set((tokens[:, 7] + 1) % cfg.vocab_size)
    logits, _ = forward(params, cfg, tokens, mask)
    logits_changed, _ = forward(params, cfg, changed, mask)
    np.testing.assert_allclose(logits[:, :7], logits_changed[:, :7], atol=ATOL)
    assert float(jnp.max(jnp.abs(logits[:, 7:] - logits_changed[:, 7:]))) > 1e-3


def test_left_padding_invariance(model):
    cfg, params, forward = model
    tokens = _tokens(2, 12)
    padded, mask = _left_pad(tokens, 5)
    logits, _ = forward(params, cfg, tokens, jnp.ones_like(tokens))
    logits_padded, _ = forward(params, cfg, padded, mask)
    np.testing.assert_allclose(logits_padded[:, 5:], logits, atol=ATOL)


def test_positions_skip_left_padding():
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    positions = transformer.positions_from_mask(mask)
    np.testing.assert_array_equal(positions, [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])


def test_kv_cache_decode_matches_forward(model):
    """Prefill a batch with mixed left padding, then decode one token at a time."""
    cfg, params, forward = model
    tokens = _tokens(2, 14)
    mask = jnp.ones_like(tokens).at[1, :4].set(0)
    tokens = tokens * mask
    full_logits, _ = forward(params, cfg, tokens, mask)

    prefill = 8
    cache = transformer.init_cache(cfg, 2, 14)
    logits, cache = forward(params, cfg, tokens[:, :prefill], mask[:, :prefill], cache=cache)
    steps = [logits]
    for t in range(prefill, 14):
        logits, cache = forward(params, cfg, tokens[:, t : t + 1], mask[:, t : t + 1], cache=cache)
        steps.append(logits)
    cached_logits = jnp.concatenate(steps, axis=1)

    real = mask > 0
    np.testing.assert_allclose(cached_logits[real], full_logits[real], atol=ATOL)
    assert int(cache["index"]) == 14
    np.testing.assert_array_equal(cache["next_position"], [14, 10])


def test_unstacked_layers_decode_like_stacked(model):
    """The sampler's per-layer, fused-qkv weights give the stacked weights' cached logits.

    Not bit for bit: the fused projection is one matmul, which XLA may sum in another order.
    """
    cfg, params, forward = model
    tokens = _tokens(2, 9)
    mask = jnp.ones_like(tokens).at[0, :3].set(0)
    per_layer = transformer.unstack_layers(params)
    assert len(per_layer["layers"]) == cfg.num_layers
    assert sorted(per_layer["layers"][0]["attn"]) == ["o", "qkv"]
    outputs = []
    for weights in (params, per_layer):
        cache = transformer.init_cache(cfg, 2, 12)
        prefill_logits, cache = forward(weights, cfg, tokens[:, :8], mask[:, :8], cache=cache)
        step_logits, cache = forward(weights, cfg, tokens[:, 8:], mask[:, 8:], cache=cache)
        outputs.append((prefill_logits, step_logits, cache["k"][-1]))
    for stacked, unstacked in zip(*outputs, strict=True):
        np.testing.assert_allclose(np.asarray(unstacked), np.asarray(stacked), atol=ATOL)
    with pytest.raises(ValueError, match="only the KV-cache forward accepts"):
        transformer.forward(per_layer, cfg, tokens, mask)


@pytest.mark.parametrize("per_layer", [False, True], ids=["stacked", "unstacked"])
def test_prefill_matches_backbone_over_fresh_cache(model, per_layer):
    """The prompt-only prefill fills the cache as a cached forward does; decoding continues."""
    cfg, params, forward = model
    tokens = _tokens(2, 11)
    mask = jnp.ones_like(tokens).at[1, :3].set(0)
    tokens = tokens * mask
    weights = transformer.unstack_layers(params) if per_layer else params
    prefill = jax.jit(transformer.prefill, static_argnums=(1, 4))
    backbone = jax.jit(transformer.backbone, static_argnums=1)

    hidden, cache = prefill(weights, cfg, tokens[:, :8], mask[:, :8], 12)
    expected_hidden, expected_cache = backbone(
        weights, cfg, tokens[:, :8], mask[:, :8], cache=transformer.init_cache(cfg, 2, 12)
    )
    # Padding columns differ, as in every forward, and no query ever reads their slots.
    real = mask[:, :8] > 0
    np.testing.assert_allclose(hidden[real], expected_hidden[real], atol=ATOL)
    np.testing.assert_array_equal(cache["mask"], expected_cache["mask"])
    filled = np.asarray(cache["mask"]) > 0
    for name in ("k", "v"):
        assert len(cache[name]) == cfg.num_layers
        for got, expected in zip(cache[name], expected_cache[name], strict=True):
            assert got.shape == (2, cfg.num_kv_heads, 12, cfg.head_dim)
            got_BxSxGxK, expected_BxSxGxK = np.swapaxes(got, 1, 2), np.swapaxes(expected, 1, 2)
            np.testing.assert_allclose(got_BxSxGxK[filled], expected_BxSxGxK[filled], atol=ATOL)
    assert int(cache["index"]) == 8
    np.testing.assert_array_equal(cache["next_position"], [8, 5])

    step_logits, _ = forward(weights, cfg, tokens[:, 8:], mask[:, 8:], cache=cache)
    full_logits, _ = forward(params, cfg, tokens, mask)
    np.testing.assert_allclose(step_logits, full_logits[:, 8:], atol=ATOL)


def test_prefill_fills_every_slot_then_overflows():
    params = transformer.init_params(jax.random.key(0), TINY)
    tokens = _tokens(1, 5)
    mask = jnp.ones_like(tokens)
    _, cache = transformer.prefill(params, TINY, tokens, mask, 5)
    assert int(cache["index"]) == 5
    np.testing.assert_array_equal(cache["mask"], mask)
    with pytest.raises(ValueError, match="KV cache overflow"):
        transformer.prefill(params, TINY, tokens, mask, 4)


@pytest.mark.parametrize(
    "cfg",
    [TINY, GPT2_STYLE, dataclasses.replace(TINY, qkv_bias=True)],
    ids=["gqa", "all_biases", "qkv_bias"],
)
def test_fused_qkv_projects_like_separate_kernels(cfg):
    layer = transformer._layer_params(transformer.init_params(jax.random.key(3), cfg), 1)
    layer = jax.tree.map(lambda w: w + jax.random.normal(jax.random.key(4), w.shape), layer)
    fused = {**layer, "attn": layers.fuse_qkv(layer["attn"])}
    x_BxTxD = jax.random.normal(jax.random.key(5), (2, 3, cfg.embed_dim))
    angles = layers.rotary(cfg, jnp.array([[0, 1, 2], [4, 5, 6]]))
    separate = layers.queries_keys_values(layer, cfg, x_BxTxD, angles)
    together = layers.queries_keys_values(fused, cfg, x_BxTxD, angles)
    expected_shapes = [
        (2, 3, cfg.num_heads, cfg.head_dim),
        (2, cfg.num_kv_heads, 3, cfg.head_dim),
        (2, cfg.num_kv_heads, 3, cfg.head_dim),
    ]
    for from_fused, from_separate, shape in zip(together, separate, expected_shapes, strict=True):
        assert from_fused.shape == shape
        assert from_separate.shape == shape
        np.testing.assert_allclose(from_fused, from_separate, rtol=1e-5, atol=1e-5)


def test_rotary_table_matches_direct_angles():
    positions_BxT = jnp.array([[0, 1, 5, 62], [3, 3, 7, 0]])
    direct = layers.rotary(TINY, positions_BxT)
    looked_up = layers.rotary_from_table(TINY, positions_BxT, TINY.max_len)
    assert looked_up.sin.shape == direct.sin.shape == (2, 4, 1, TINY.head_dim // 2)
    np.testing.assert_allclose(looked_up.sin, direct.sin, atol=1e-6)
    np.testing.assert_allclose(looked_up.cos, direct.cos, atol=1e-6)
    assert layers.rotary_from_table(GPT2_STYLE, positions_BxT, 64) is None


def test_cache_overflow_raises():
    params = transformer.init_params(jax.random.key(0), TINY)
    cache = transformer.init_cache(TINY, 1, 4)
    tokens = _tokens(1, 5)
    with pytest.raises(ValueError, match="KV cache overflow"):
        transformer.forward(params, TINY, tokens, jnp.ones_like(tokens), cache=cache)


def test_jit_matches_no_jit(model):
    cfg, params, forward = model
    tokens, mask = _left_pad(_tokens(2, 9), 3)
    jitted, _ = forward(params, cfg, tokens, mask)
    eager, _ = transformer.forward(params, cfg, tokens, mask)
    np.testing.assert_allclose(jitted, eager, atol=ATOL)


def test_param_count_and_axes(model):
    cfg, params, _ = model
    count = sum(leaf.size for leaf in jax.tree.leaves(params))
    assert count == cfg.num_params
    axes = transformer.param_logical_axes(cfg)
    is_axes = lambda node: isinstance(node, tuple)
    assert jax.tree.structure(axes, is_leaf=is_axes) == jax.tree.structure(params)
    ranks = jax.tree.leaves(jax.tree.map(len, axes, is_leaf=is_axes))
    assert ranks == [leaf.ndim for leaf in jax.tree.leaves(params)]


def test_bfloat16_activations_give_float32_logits():
    cfg = dataclasses.replace(TINY, dtype="bfloat16", param_dtype="bfloat16")
    params = transformer.init_params(jax.random.key(0), cfg)
    assert params["layers"]["attn"]["q"]["kernel"].dtype == jnp.bfloat16
    tokens = _tokens(1, 6)
    hidden, _ = transformer.backbone(params, cfg, tokens, jnp.ones_like(tokens))
    assert hidden.dtype == jnp.bfloat16
    logits, _ = transformer.forward(params, cfg, tokens, jnp.ones_like(tokens))
    assert logits.dtype == jnp.float32


def test_one_billion_config_shapes_only():
    cfg = ModelConfig(
        vocab_size=32_000,
        num_layers=18,
        embed_dim=2048,
        num_heads=16,
        num_kv_heads=8,
        head_dim=0,
        mlp_dim=5632,
        max_len=2048,
        tie_embeddings=False,
        param_dtype="bfloat16",
        dtype="bfloat16",
    )
    init = functools.partial(transformer.init_params, cfg=cfg)
    shapes = jax.eval_shape(init, jax.random.key(0))
    count = sum(leaf.size for leaf in jax.tree.leaves(shapes))
    per_layer = 2048 * 2048 * 2 + 2048 * 1024 * 2 + 3 * 2048 * 5632 + 2 * 2048
    expected = 18 * per_layer + 2 * 32_000 * 2048 + 2048
    assert count == expected
    assert count == cfg.num_params
    assert 0.9e9 < count < 1.1e9
    assert shapes["layers"]["mlp"]["gate"]["kernel"].shape == (18, 2048, 5632)
    assert shapes["embed"]["embedding"].dtype == jnp.bfloat16


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"num_heads": 5}, "model.num_heads", "5"),
        ({"num_kv_heads": 3}, "model.num_kv_heads", "3"),
        ({"position_embedding": "alibi"}, "model.position_embedding", "'alibi'"),
        ({"norm": "batchnorm"}, "model.norm", "'batchnorm'"),
        ({"mlp_activation": "relu"}, "model.mlp_activation", "'relu'"),
        ({"dtype": "float64"}, "model.dtype", "'float64'"),
        ({"param_dtype": "fp32"}, "model.param_dtype", "'fp32'"),
        ({"num_layers": 0}, "model.num_layers", "0"),
        ({"head_dim": 7, "num_heads": 4}, "model.head_dim", "7"),
        ({"remat": "some"}, "model.remat", "'some'"),
        ({"matmul_dtype": "fp8"}, "model.matmul_dtype", "'fp8'"),
    ],
)
def test_bad_config_names_field_and_value(changes, field, value):
    with pytest.raises(ValueError, match=f"{field}={value}"):
        dataclasses.replace(TINY, **changes)


def test_from_config_reads_default_section():
    config = default.get_config("tiny")
    cfg = ModelConfig.from_config(config.model, vocab_size=512)
    assert cfg.vocab_size == 512
    assert cfg.embed_dim == config.model.embed_dim
    assert cfg.head_dim == config.model.embed_dim // config.model.num_heads
    hash(cfg)


def test_from_config_rejects_small_vocab():
    section = ml_collections.ConfigDict(default.get_config().model.to_dict())
    section.vocab_size = 100
    with pytest.raises(ValueError, match="model.vocab_size=100"):
        ModelConfig.from_config(section, vocab_size=512)


@pytest.mark.parametrize("remat", ["dots", "full"])
def test_remat_keeps_gradients(model, remat):
    """Rematerialisation changes what the backward pass stores, never the gradient."""
    cfg, params, _ = model
    tokens, mask = _left_pad(_tokens(2, 10), 3)

    def loss(p, model_cfg):
        logits, _ = transformer.forward(p, model_cfg, tokens, mask)
        return jnp.sum(jax.nn.log_softmax(logits)[..., 1] * mask)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    without_remat = grad(params, dataclasses.replace(cfg, remat="none"))
    with_remat = grad(params, dataclasses.replace(cfg, remat=remat))
    for a, b in zip(jax.tree.leaves(without_remat), jax.tree.leaves(with_remat), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_extend_after_prefix_matches_full_forward(model):
    """prefix_forward + extend (repeated rows) equal a full forward at every real token."""
    cfg, params, _ = model
    prompts, prompt_mask = _left_pad(_tokens(2, 5, seed=2), 2)
    prefix_hidden, prompt_prefix = prefix.prefix_forward(params, cfg, prompts, prompt_mask)
    prompts, prompt_mask = jnp.repeat(prompts, 3, axis=0), jnp.repeat(prompt_mask, 3, axis=0)
    tokens = _tokens(6, 4, seed=3)
    token_mask = jnp.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]] * 2, jnp.int32)
    extended = prefix.extend(params, cfg, tokens, token_mask, prompt_prefix.repeat(3))

    full_tokens = jnp.concatenate([prompts, tokens * token_mask], axis=1)
    full_mask = jnp.concatenate([prompt_mask, token_mask], axis=1)
    full, _ = transformer.backbone(params, cfg, full_tokens, full_mask)
    real = np.asarray(token_mask, bool)
    np.testing.assert_allclose(np.asarray(extended)[real], np.asarray(full[:, 7:])[real], atol=ATOL)
    np.testing.assert_allclose(
        np.asarray(jnp.repeat(prefix_hidden, 3, axis=0))[np.asarray(prompt_mask, bool)],
        np.asarray(full[:, :7])[np.asarray(prompt_mask, bool)],
        atol=ATOL,
    )


def test_from_config_defaults_fields_missing_from_old_configs():
    """A model section saved before `remat` existed still loads, with the default policy."""
    model = default.get_config("tiny").model.to_dict()
    del model["remat"]
    cfg = ModelConfig.from_config(ml_collections.ConfigDict(model), 300)
    assert cfg.remat == "dots"
    del model["num_layers"]
    with pytest.raises(ValueError, match="missing model.num_layers"):
        ModelConfig.from_config(ml_collections.ConfigDict(model), 300)
