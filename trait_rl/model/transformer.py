"""Decoder-only transformer as pure functions over a parameter pytree.

Shape letters: B batch, T sequence, S cache slots, D embed_dim, H query heads, G key/value heads,
R = H // G query heads per key/value head, K head_dim, F mlp_dim, V vocab_size, L layers.

Layer weights are stacked on a leading `layers` axis and applied with `lax.scan`, so compile time
does not grow with depth. The KV cache stores keys and values per slot, with a validity mask and
a write index. Its layout is L x B x G x S x K (heads before slots), so attention reads a layer's
slots without a transpose. Attention is causal in slot order and skips invalid (padding) slots.
So a left-padded prefill followed by one-token decode steps computes the same logits as one full
forward. The layers themselves are in `layers`; `prefix` runs a prompt once and continues it in
several rows.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp

from trait_rl.model import layers
from trait_rl.model.config import ModelConfig

Params = layers.Params
Cache = dict[str, jax.Array]


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


def _write_layer_cache(
    cache_LxBxGxSxK: jax.Array, new_BxGxTxK: jax.Array, layer: jax.Array, index: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Write one layer's new keys or values into the stacked cache; return that layer's slots.

    The stacked cache goes through the layer scan as a carry, so XLA updates it in place. As
    scanned inputs and outputs, every decode step copied the whole cache of every layer: the
    sampler at batch 64 took 1.21 s per call that way and 0.87 s with the carry (medians of
    three alternating runs, benchmarks/RESULTS.md).
    """
    zero = jnp.zeros((), jnp.int32)
    start = (layer.astype(jnp.int32), zero, zero, index.astype(jnp.int32), zero)
    new_1xBxGxTxK = new_BxGxTxK[None].astype(cache_LxBxGxSxK.dtype)
    cache_LxBxGxSxK = jax.lax.dynamic_update_slice(cache_LxBxGxSxK, new_1xBxGxTxK, start)
    return cache_LxBxGxSxK, jax.lax.dynamic_index_in_dim(cache_LxBxGxSxK, layer, keepdims=False)


def _cached_block(
    layer: Params,
    cfg: ModelConfig,
    x_BxTxD: jax.Array,
    positions_BxT: jax.Array,
    allowed_BxTxS: jax.Array,
    kv_cache: tuple[jax.Array, jax.Array],
    layer_index: jax.Array,
    index: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Apply one block, writing this step's keys and values into the cache, and attend over it.

    `kv_cache` is the stacked (L x B x G x S x K) keys and values of all layers. This block
    writes layer `layer_index` at slot `index` and attends over that layer's slots.
    """
    q_BxTxHxK, k_BxGxTxK, v_BxGxTxK = layers.queries_keys_values(layer, cfg, x_BxTxD, positions_BxT)
    k_LxBxGxSxK, keys_BxGxSxK = _write_layer_cache(kv_cache[0], k_BxGxTxK, layer_index, index)
    v_LxBxGxSxK, values_BxGxSxK = _write_layer_cache(kv_cache[1], v_BxGxTxK, layer_index, index)
    x_BxTxD = layers.attention_and_mlp(
        layer, cfg, x_BxTxD, q_BxTxHxK, keys_BxGxSxK, values_BxGxSxK, allowed_BxTxS
    )
    return x_BxTxD, (k_LxBxGxSxK, v_LxBxGxSxK)


# ----------------------------------------------------------------------------- cache


def init_cache(cfg: ModelConfig, batch_size: int, max_len: int) -> Cache:
    """Return an empty KV cache with `max_len` slots per sequence.

    Fields: `k`, `v` (L x B x G x S x K, activation dtype), `mask` (B x S, 1 where a slot contains a
    real token), `index` (next slot to write, shared by the batch) and `next_position` (B, the
    position the next real token of each sequence gets).
    """
    shape = (cfg.num_layers, batch_size, cfg.num_kv_heads, max_len, cfg.head_dim)
    return {
        "k": jnp.zeros(shape, cfg.activation_dtype),
        "v": jnp.zeros(shape, cfg.activation_dtype),
        "mask": jnp.zeros((batch_size, max_len), jnp.int32),
        "index": jnp.zeros((), jnp.int32),
        "next_position": jnp.zeros((batch_size,), jnp.int32),
    }


def repeat_cache(cache: Cache, repeats: int) -> Cache:
    """Repeat each sequence of the cache `repeats` times in adjacent rows (B -> B * repeats).

    Used to run one prompt once and continue it in several rows, as GRPO groups do.
    """
    rows_axis = {"k": 1, "v": 1, "mask": 0, "next_position": 0}
    repeated = {
        name: jnp.repeat(cache[name], repeats, axis=axis) for name, axis in rows_axis.items()
    }
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

    slot_mask_BxS = jax.lax.dynamic_update_slice(
        cache["mask"], valid_BxT, (jnp.zeros((), jnp.int32), cache["index"])
    )
    s = slot_mask_BxS.shape[1]
    query_slots_T = cache["index"] + jnp.arange(t)
    causal_TxS = jnp.arange(s)[None, :] <= query_slots_T[:, None]
    return causal_TxS[None] & (slot_mask_BxS[:, None, :] > 0), slot_mask_BxS


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
    positions_BxT = _resolve_positions(input_mask_BxT, positions_BxT, cache, segment_ids_BxT)
    allowed_BxTxS, slot_mask_BxS = _attention_mask(input_mask_BxT, cache, segment_ids_BxT)
    x_BxTxD = layers.embed(params, cfg, tokens_BxT, positions_BxT)

    if cache is None:

        def scan_block(x, layer):
            x, _ = layers.block(layer, cfg, x, positions_BxT, allowed_BxTxS)
            return x, None

        x_BxTxD, _ = jax.lax.scan(layers.remat(cfg, scan_block), x_BxTxD, params["layers"])
        new_cache = None
    else:

        def scan_cached_block(carry, layer_and_index):
            x, k_cache, v_cache = carry
            layer, layer_index = layer_and_index
            kv = (k_cache, v_cache)
            x, (k_cache, v_cache) = _cached_block(
                layer, cfg, x, positions_BxT, allowed_BxTxS, kv, layer_index, cache["index"]
            )
            return (x, k_cache, v_cache), None

        carry = (x_BxTxD, cache["k"], cache["v"])
        xs = (params["layers"], jnp.arange(cfg.num_layers, dtype=jnp.int32))
        (x_BxTxD, k_LxBxGxSxK, v_LxBxGxSxK), _ = jax.lax.scan(scan_cached_block, carry, xs)
        new_cache = {
            "k": k_LxBxGxSxK,
            "v": v_LxBxGxSxK,
            "mask": slot_mask_BxS,
            "index": cache["index"] + t,
            "next_position": cache["next_position"]
            + jnp.sum(input_mask_BxT.astype(jnp.int32), axis=1),
        }

    hidden_BxTxD = layers.normalize(params["final_norm"], cfg, x_BxTxD)
    return hidden_BxTxD, new_cache


def lm_logits(params: Params, cfg: ModelConfig, hidden_BxTxD: jax.Array) -> jax.Array:
    """Project hidden states onto the vocabulary, accumulating in float32."""
    if cfg.tie_embeddings:
        table_VxD = params["embed"]["embedding"].astype(cfg.activation_dtype)
        return jnp.einsum(
            "btd,vd->btv", hidden_BxTxD, table_VxD, preferred_element_type=jnp.float32
        )
    kernel_DxV = params["lm_head"]["kernel"].astype(cfg.activation_dtype)
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
