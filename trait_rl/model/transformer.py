"""Decoder-only transformer as pure functions over a parameter pytree.

Shape letters: B batch, T sequence, S cache slots, D embed_dim, H query heads, G key/value heads,
R = H // G query heads per key/value head, K head_dim, F mlp_dim, V vocab_size, L layers.

Layer weights are stacked on a leading `layers` axis and applied with `lax.scan`, so compile time
does not grow with depth. The KV cache stores keys and values per slot, with a validity mask and
a write index. Each layer has its own B x G x S x K array (heads before slots), so attention
reads its slots without a transpose or a copy, and the cached forward loops over layers in Python.
Attention is causal in slot order and skips invalid (padding) slots, so a left-padded prefill
followed by one-token decode steps computes the same logits as one full forward. The layers
themselves are in `layers`; `prefix` runs a prompt once and continues it in several rows.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp

from trait_rl.model import layers
from trait_rl.model.config import ModelConfig

Params = layers.Params
Cache = dict[str, Any]


def positions_from_mask(input_mask_BxT: jax.Array) -> jax.Array:
    """Return the position of each token counted over real tokens only (cumsum - 1, min 0).

    Left padding therefore does not shift the positions of the real tokens.
    """
    mask_BxT = input_mask_BxT.astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(mask_BxT, axis=1) - 1, 0)


def positions_from_segments(segment_ids_BxT: jax.Array) -> jax.Array:
    """Return each token's offset from the start of its segment (cumulative within a segment).

    A segment starts wherever the id differs from the previous column's id, so every packed
    example gets the positions 0, 1, 2, ... that it gets alone.
    """
    t = segment_ids_BxT.shape[1]
    columns_BxT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), segment_ids_BxT.shape)
    starts_BxT = jnp.concatenate(
        [
            jnp.ones_like(segment_ids_BxT[:, :1], bool),
            segment_ids_BxT[:, 1:] != segment_ids_BxT[:, :-1],
        ],
        axis=1,
    )
    segment_start_BxT = jax.lax.cummax(jnp.where(starts_BxT, columns_BxT, 0), axis=1)
    return columns_BxT - segment_start_BxT


# ----------------------------------------------------------------------------- initialisation


def _normal(rng: jax.Array, shape: tuple[int, ...], std: float, dtype: Any) -> jax.Array:
    return (std * jax.random.normal(rng, shape, jnp.float32)).astype(dtype)


def _init_norm(cfg: ModelConfig, leading: tuple[int, ...]) -> Params:
    norm = {"scale": jnp.ones((*leading, cfg.embed_dim), cfg.weight_dtype)}
    if cfg.norm == "layernorm":
        norm["bias"] = jnp.zeros((*leading, cfg.embed_dim), cfg.weight_dtype)
    return norm


def _init_dense(
    rng: jax.Array,
    cfg: ModelConfig,
    projection: str,
    shape: tuple[int, ...],
    fan_in: int,
    bias_shape: tuple[int, ...],
) -> Params:
    """Initialise a kernel with std 1/sqrt(fan_in) (LeCun normal) and, if any, a zero bias."""
    dense = {"kernel": _normal(rng, shape, 1.0 / math.sqrt(fan_in), cfg.weight_dtype)}
    if cfg.has_bias(projection):
        dense["bias"] = jnp.zeros(bias_shape, cfg.weight_dtype)
    return dense


def _init_layers(rng: jax.Array, cfg: ModelConfig) -> Params:
    n, d, h, g, k, f = (
        cfg.num_layers,
        cfg.embed_dim,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.mlp_dim,
    )
    keys = jax.random.split(rng, 7)
    attention = {
        "q": _init_dense(keys[0], cfg, "q", (n, d, h, k), d, (n, h, k)),
        "k": _init_dense(keys[1], cfg, "k", (n, d, g, k), d, (n, g, k)),
        "v": _init_dense(keys[2], cfg, "v", (n, d, g, k), d, (n, g, k)),
        "o": _init_dense(keys[3], cfg, "o", (n, h, k, d), h * k, (n, d)),
    }
    mlp = {
        "up": _init_dense(keys[4], cfg, "up", (n, d, f), d, (n, f)),
        "down": _init_dense(keys[5], cfg, "down", (n, f, d), f, (n, d)),
    }
    if cfg.mlp_activation in ("swiglu", "geglu"):
        mlp["gate"] = _init_dense(keys[6], cfg, "gate", (n, d, f), d, (n, f))
    return {
        "attn_norm": _init_norm(cfg, (n,)),
        "attn": attention,
        "mlp_norm": _init_norm(cfg, (n,)),
        "mlp": mlp,
    }


def init_params(rng: jax.Array, cfg: ModelConfig) -> Params:
    """Initialise all parameters, purely, so that `jax.eval_shape` and sharded `jit` apply."""
    rng_embed, rng_pos, rng_layers, rng_head = jax.random.split(rng, 4)
    std = 1.0 / math.sqrt(cfg.embed_dim)
    params = {
        "embed": {
            "embedding": _normal(rng_embed, (cfg.vocab_size, cfg.embed_dim), std, cfg.weight_dtype)
        },
        "layers": _init_layers(rng_layers, cfg),
        "final_norm": _init_norm(cfg, ()),
    }
    if cfg.position_embedding == "learned":
        shape = (cfg.max_len, cfg.embed_dim)
        params["pos_embed"] = {"embedding": _normal(rng_pos, shape, 0.02, cfg.weight_dtype)}
    if not cfg.tie_embeddings:
        shape = (cfg.embed_dim, cfg.vocab_size)
        params["lm_head"] = {"kernel": _normal(rng_head, shape, std, cfg.weight_dtype)}
    return params


def _norm_axes(cfg: ModelConfig, leading: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    axes = {"scale": (*leading, "embed")}
    if cfg.norm == "layernorm":
        axes["bias"] = (*leading, "embed")
    return axes


def _dense_axes(
    cfg: ModelConfig, projection: str, kernel: tuple[str, ...], bias: tuple[str, ...]
) -> dict:
    axes = {"kernel": kernel}
    if cfg.has_bias(projection):
        axes["bias"] = bias
    return axes


def param_logical_axes(cfg: ModelConfig) -> dict:
    """Return a pytree shaped like `init_params(rng, cfg)` whose leaves are logical axis names."""
    lay = ("layers",)
    attention = {
        "q": _dense_axes(
            cfg, "q", (*lay, "embed", "heads", "head_dim"), (*lay, "heads", "head_dim")
        ),
        "k": _dense_axes(
            cfg, "k", (*lay, "embed", "kv_heads", "head_dim"), (*lay, "kv_heads", "head_dim")
        ),
        "v": _dense_axes(
            cfg, "v", (*lay, "embed", "kv_heads", "head_dim"), (*lay, "kv_heads", "head_dim")
        ),
        "o": _dense_axes(cfg, "o", (*lay, "heads", "head_dim", "embed"), (*lay, "embed")),
    }
    mlp = {
        "up": _dense_axes(cfg, "up", (*lay, "embed", "mlp"), (*lay, "mlp")),
        "down": _dense_axes(cfg, "down", (*lay, "mlp", "embed"), (*lay, "embed")),
    }
    if cfg.mlp_activation in ("swiglu", "geglu"):
        mlp["gate"] = _dense_axes(cfg, "gate", (*lay, "embed", "mlp"), (*lay, "mlp"))
    axes = {
        "embed": {"embedding": ("vocab", "embed")},
        "layers": {
            "attn_norm": _norm_axes(cfg, lay),
            "attn": attention,
            "mlp_norm": _norm_axes(cfg, lay),
            "mlp": mlp,
        },
        "final_norm": _norm_axes(cfg, ()),
    }
    if cfg.position_embedding == "learned":
        axes["pos_embed"] = {"embedding": ("length", "embed")}
    if not cfg.tie_embeddings:
        axes["lm_head"] = {"kernel": ("embed", "vocab")}
    return axes


def unstack_layers(params: Params) -> Params:
    """Return `params` with `layers` as a tuple of per-layer weights, ready for decoding.

    Each layer's q, k and v projections are fused into one (`layers.fuse_qkv`). Only the
    KV-cache forward accepts this form. A decode loop calls it once, before the loop, so that no
    step copies a layer's weights out of the stack. XLA did not hoist those copies out of the
    loop, and at batch 1 on a 2-core CPU they took nearly half of each decode step. Params
    already in this form are returned as they are.
    """
    if isinstance(params["layers"], tuple):
        return params
    num_layers = jax.tree.leaves(params["layers"])[0].shape[0]
    per_layer = []
    for i in range(num_layers):
        layer = _layer_params(params, i)
        per_layer.append({**layer, "attn": layers.fuse_qkv(layer["attn"])})
    return {**params, "layers": tuple(per_layer)}


def decode_weights(params: Params, cfg: ModelConfig) -> Params:
    """Return `params` as the sampler decodes with them: per layer, kernels in the matmul dtype.

    The layers are unstacked by `unstack_layers`, and every projection kernel, the untied LM
    head's included, is cast to `cfg.matmul_input_dtype` here, once, instead of in every decode
    step. A tied head stays the embedding table in its param dtype, which `lm_logits` casts in
    each sampler call (XLA moved that cast out of the decode loop on CPU, jax 0.10.2). Params
    already in this form are returned with the same values.
    """
    dtype = cfg.matmul_input_dtype

    def cast(path, leaf):
        is_kernel = getattr(path[-1], "key", None) == "kernel"
        return leaf.astype(dtype) if is_kernel else leaf

    return jax.tree_util.tree_map_with_path(cast, unstack_layers(params))


def _layer_params(params: Params, index: int) -> Params:
    """Return the weights of layer `index`, from a stack or from `unstack_layers` output."""
    if isinstance(params["layers"], tuple):
        return params["layers"][index]
    return jax.tree.map(lambda stacked: stacked[index], params["layers"])


def _write_cache(cache_BxGxSxK: jax.Array, new_BxGxTxK: jax.Array, index: jax.Array) -> jax.Array:
    """Write T new keys or values into one layer's cache at slots index..index+T-1."""
    zero = jnp.zeros((), jnp.int32)
    start = (zero, zero, index.astype(jnp.int32), zero)
    return jax.lax.dynamic_update_slice(
        cache_BxGxSxK, new_BxGxTxK.astype(cache_BxGxSxK.dtype), start
    )


def _cached_block(
    layer: Params,
    cfg: ModelConfig,
    x_BxTxD: jax.Array,
    angles: layers.Rotary | None,
    allowed_BxTxS: jax.Array,
    kv_cache: tuple[jax.Array, jax.Array],
    index: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Apply one block, writing the new keys and values at slot `index` and reading all slots.

    `kv_cache` holds this layer's keys and values (B x G x S x K each); the updated pair is
    returned.
    """
    q_BxTxHxK, k_BxGxTxK, v_BxGxTxK = layers.queries_keys_values(layer, cfg, x_BxTxD, angles)
    keys_BxGxSxK = _write_cache(kv_cache[0], k_BxGxTxK, index)
    values_BxGxSxK = _write_cache(kv_cache[1], v_BxGxTxK, index)
    x_BxTxD = layers.attention_and_mlp(
        layer, cfg, x_BxTxD, q_BxTxHxK, keys_BxGxSxK, values_BxGxSxK, allowed_BxTxS
    )
    return x_BxTxD, (keys_BxGxSxK, values_BxGxSxK)


# ----------------------------------------------------------------------------- cache


def init_cache(cfg: ModelConfig, batch_size: int, max_len: int) -> Cache:
    """Return an empty KV cache with `max_len` slots per sequence.

    Fields: `k`, `v` (one B x G x S x K array per layer, activation dtype), `mask` (B x S, 1 where
    a slot contains a real token), `index` (next slot to write, shared by the batch) and
    `next_position` (B, the position the next real token of each sequence gets).
    """
    shape = (batch_size, cfg.num_kv_heads, max_len, cfg.head_dim)

    def empty_layers() -> tuple[jax.Array, ...]:
        return tuple(jnp.zeros(shape, cfg.activation_dtype) for _ in range(cfg.num_layers))

    return {
        "k": empty_layers(),
        "v": empty_layers(),
        "mask": jnp.zeros((batch_size, max_len), jnp.int32),
        "index": jnp.zeros((), jnp.int32),
        "next_position": jnp.zeros((batch_size,), jnp.int32),
    }


def repeat_cache(cache: Cache, repeats: int) -> Cache:
    """Repeat each sequence of the cache `repeats` times in adjacent rows (B -> B * repeats).

    Used to run one prompt once and continue it in several rows, as GRPO groups do.
    """
    repeated = jax.tree.map(
        lambda rows: jnp.repeat(rows, repeats, axis=0),
        {name: cache[name] for name in ("k", "v", "mask", "next_position")},
    )
    return {**cache, **repeated}


def _attention_mask(
    input_mask_BxT: jax.Array, cache: Cache | None, segment_ids_BxT: jax.Array | None = None
) -> tuple[jax.Array, jax.Array | None]:
    """Return which key slots each query may read, and the cache validity mask after writing.

    Without a cache the keys are the T input tokens, and with segment ids a query reads only
    keys of its own segment. With a cache the queries occupy slots index..index+T-1 and read
    every valid slot up to their own.
    """
    t = input_mask_BxT.shape[1]
    valid_BxT = input_mask_BxT.astype(jnp.int32)
    if cache is None:
        allowed_BxTxT = layers.causal_allowed(valid_BxT)
        if segment_ids_BxT is not None:
            same_BxTxT = segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :]
            allowed_BxTxT = allowed_BxTxT & same_BxTxT & (segment_ids_BxT[:, None, :] > 0)
        return allowed_BxTxT, None

    slot_mask_BxS = _written_slot_mask(cache, valid_BxT)
    s = slot_mask_BxS.shape[1]
    query_slots_T = cache["index"] + jnp.arange(t)
    causal_TxS = jnp.arange(s)[None, :] <= query_slots_T[:, None]
    return causal_TxS[None] & (slot_mask_BxS[:, None, :] > 0), slot_mask_BxS


def _written_slot_mask(cache: Cache, input_mask_BxT: jax.Array) -> jax.Array:
    """Return the cache's slot mask after T tokens are written at slots index..index+T-1."""
    start = (jnp.zeros((), jnp.int32), cache["index"])
    return jax.lax.dynamic_update_slice(cache["mask"], input_mask_BxT.astype(jnp.int32), start)


def _check_cache_room(cache: Cache, t: int) -> None:
    """Raise when T tokens do not fit. A traced write index is only checked against the size."""
    slots = cache["mask"].shape[1]
    index = cache["index"]
    if isinstance(index, jax.core.Tracer):
        index = 0
    if int(index) + t > slots:
        raise ValueError(
            f"KV cache overflow: writing {t} tokens at slot {int(index)} exceeds its {slots} "
            "slots; create it with a larger max_len in init_cache"
        )


# ----------------------------------------------------------------------------- model


def _resolve_positions(
    input_mask_BxT: jax.Array,
    positions_BxT: jax.Array | None,
    cache: Cache | None,
    segment_ids_BxT: jax.Array | None,
) -> jax.Array:
    if positions_BxT is not None:
        return positions_BxT
    if segment_ids_BxT is not None:
        return positions_from_segments(segment_ids_BxT)
    positions_BxT = positions_from_mask(input_mask_BxT)
    if cache is not None:
        positions_BxT = positions_BxT + cache["next_position"][:, None]
    return positions_BxT


def _scanned_layers(
    params: Params,
    cfg: ModelConfig,
    x_BxTxD: jax.Array,
    angles: layers.Rotary | None,
    allowed_BxTxS: jax.Array,
) -> jax.Array:
    """Apply the stacked layers with `lax.scan`, rematerialised by the `cfg.remat` policy."""
    if isinstance(params["layers"], tuple):
        raise ValueError(
            "params['layers'] is a tuple of per-layer weights (from unstack_layers), which only "
            "the KV-cache forward accepts. Pass the stacked params for a forward without a cache"
        )

    def scan_block(x, layer):
        x, _ = layers.block(layer, cfg, x, angles, allowed_BxTxS)
        return x, None

    x_BxTxD, _ = jax.lax.scan(layers.remat(cfg, scan_block), x_BxTxD, params["layers"])
    return x_BxTxD


def _cached_layers(
    params: Params,
    cfg: ModelConfig,
    x_BxTxD: jax.Array,
    angles: layers.Rotary | None,
    allowed_BxTxS: jax.Array,
    cache: Cache,
) -> tuple[jax.Array, tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]]:
    """Apply the layers one by one over the cache, and return x with every layer's keys and values.

    A Python loop, not a scan, so each layer's cache is an array of its own that a decode step
    updates and reads in place. With a stacked cache carried through a scan, every step copied
    each layer's slots out of the stack (benchmarks/RESULTS.md).
    """
    keys, values = [], []
    for i in range(cfg.num_layers):
        kv_cache = (cache["k"][i], cache["v"][i])
        x_BxTxD, (k_BxGxSxK, v_BxGxSxK) = _cached_block(
            _layer_params(params, i), cfg, x_BxTxD, angles, allowed_BxTxS, kv_cache, cache["index"]
        )
        keys.append(k_BxGxSxK)
        values.append(v_BxGxSxK)
    return x_BxTxD, (tuple(keys), tuple(values))


def backbone(
    params: Params,
    cfg: ModelConfig,
    tokens_BxT: jax.Array,
    input_mask_BxT: jax.Array,
    positions_BxT: jax.Array | None = None,
    cache: Cache | None = None,
    *,
    segment_ids_BxT: jax.Array | None = None,
) -> tuple[jax.Array, Cache | None]:
    """Run the decoder blocks and return the final-norm hidden states and the updated cache.

    Positions default to `positions_from_mask` (continued from the cache when one is given).
    Padding tokens (mask 0) are never attended to. Their own outputs are finite but meaningless.

    `segment_ids_BxT` (int, 0 = padding, k = the k-th example packed into the row; no cache)
    makes attention causal within each segment and, unless positions are given, restarts the
    positions at 0 in each segment. Each packed example then gets the hidden states it gets
    when run alone.

    With a cache, `params` may also come from `unstack_layers`, which a decode loop calls once.
    """
    t = tokens_BxT.shape[1]
    if cache is not None:
        _check_cache_room(cache, t)
        if segment_ids_BxT is not None:
            raise ValueError(
                "segment_ids_BxT applies only to a full forward without a cache; decode packed "
                "examples one per row instead"
            )
    if segment_ids_BxT is not None and segment_ids_BxT.shape != tokens_BxT.shape:
        raise ValueError(
            f"segment_ids_BxT shape {segment_ids_BxT.shape} does not match tokens_BxT shape "
            f"{tokens_BxT.shape}"
        )
    derived_positions = positions_BxT is None
    positions_BxT = _resolve_positions(input_mask_BxT, positions_BxT, cache, segment_ids_BxT)
    if cache is not None and derived_positions:
        # Each real token so far occupies a slot, so every position is below the slot count.
        angles = layers.rotary_from_table(cfg, positions_BxT, cache["mask"].shape[1])
    else:
        angles = layers.rotary(cfg, positions_BxT)
    allowed_BxTxS, slot_mask_BxS = _attention_mask(input_mask_BxT, cache, segment_ids_BxT)
    x_BxTxD = layers.embed(params, cfg, tokens_BxT, positions_BxT)

    if cache is None:
        x_BxTxD = _scanned_layers(params, cfg, x_BxTxD, angles, allowed_BxTxS)
        new_cache = None
    else:
        x_BxTxD, (keys, values) = _cached_layers(params, cfg, x_BxTxD, angles, allowed_BxTxS, cache)
        new_cache = _advance_cache(cache, keys, values, slot_mask_BxS, input_mask_BxT)

    hidden_BxTxD = layers.normalize(params["final_norm"], cfg, x_BxTxD)
    return hidden_BxTxD, new_cache


def prefill(
    params: Params, cfg: ModelConfig, tokens_BxT: jax.Array, input_mask_BxT: jax.Array, max_len: int
) -> tuple[jax.Array, Cache]:
    """Return the prompts' final-norm hidden states and a new cache of their keys and values.

    The cache has `max_len` slots, of which the prompts fill the first T.

    At real tokens the result equals `backbone` over a fresh `init_cache`, up to float
    rounding. Each prompt token attends to the T prompt slots only, because the other slots of
    a fresh cache are empty. With 32 of 64 slots filled, the batch-64 sampler call of
    benchmarks/RESULTS.md ran 2-3% faster this way on a 2-core CPU (calls of both versions
    alternating in one process). `params` may be stacked or come from `unstack_layers`.

    NOTE: a row without any real token reads no slot here or in `backbone`, and its outputs,
    meaningless in both, differ between the two.
    """
    b, t = tokens_BxT.shape
    cache = init_cache(cfg, b, max_len)
    _check_cache_room(cache, t)
    positions_BxT = positions_from_mask(input_mask_BxT)
    angles = layers.rotary_from_table(cfg, positions_BxT, max_len)
    allowed_BxTxT = layers.causal_allowed(input_mask_BxT)
    x_BxTxD = layers.embed(params, cfg, tokens_BxT, positions_BxT)

    keys, values = [], []
    for i in range(cfg.num_layers):
        x_BxTxD, (k_BxGxTxK, v_BxGxTxK) = layers.block(
            _layer_params(params, i), cfg, x_BxTxD, angles, allowed_BxTxT
        )
        keys.append(_write_cache(cache["k"][i], k_BxGxTxK, cache["index"]))
        values.append(_write_cache(cache["v"][i], v_BxGxTxK, cache["index"]))
    slot_mask_BxS = _written_slot_mask(cache, input_mask_BxT)
    new_cache = _advance_cache(cache, tuple(keys), tuple(values), slot_mask_BxS, input_mask_BxT)
    return layers.normalize(params["final_norm"], cfg, x_BxTxD), new_cache


def _advance_cache(
    cache: Cache,
    keys: tuple[jax.Array, ...],
    values: tuple[jax.Array, ...],
    slot_mask_BxS: jax.Array,
    input_mask_BxT: jax.Array,
) -> Cache:
    """Return the cache after writing T tokens: new slots, mask, write index and next positions."""
    return {
        "k": keys,
        "v": values,
        "mask": slot_mask_BxS,
        "index": cache["index"] + input_mask_BxT.shape[1],
        "next_position": cache["next_position"] + jnp.sum(input_mask_BxT.astype(jnp.int32), axis=1),
    }


def lm_logits(params: Params, cfg: ModelConfig, hidden_BxTxD: jax.Array) -> jax.Array:
    """Return float32 logits over the vocabulary, from inputs cast to `cfg.matmul_input_dtype`."""
    hidden_BxTxD = hidden_BxTxD.astype(cfg.matmul_input_dtype)
    if cfg.tie_embeddings:
        table_VxD = params["embed"]["embedding"].astype(cfg.matmul_input_dtype)
        return jnp.einsum(
            "btd,vd->btv", hidden_BxTxD, table_VxD, preferred_element_type=jnp.float32
        )
    kernel_DxV = params["lm_head"]["kernel"].astype(cfg.matmul_input_dtype)
    return jnp.einsum("btd,dv->btv", hidden_BxTxD, kernel_DxV, preferred_element_type=jnp.float32)


def forward(
    params: Params,
    cfg: ModelConfig,
    tokens_BxT: jax.Array,
    input_mask_BxT: jax.Array,
    positions_BxT: jax.Array | None = None,
    cache: Cache | None = None,
    *,
    segment_ids_BxT: jax.Array | None = None,
) -> tuple[jax.Array, Cache | None]:
    """Return float32 next-token logits for every position, and the updated cache.

    `segment_ids_BxT` marks packed examples as in `backbone`.
    """
    hidden_BxTxD, cache = backbone(
        params,
        cfg,
        tokens_BxT,
        input_mask_BxT,
        positions_BxT,
        cache,
        segment_ids_BxT=segment_ids_BxT,
    )
    return lm_logits(params, cfg, hidden_BxTxD), cache
