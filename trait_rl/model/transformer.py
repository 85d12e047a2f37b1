"""Decoder-only transformer as pure functions over a parameter pytree.

Shape letters: B batch, T sequence, S cache slots, D embed_dim, H query heads, G key/value heads,
R = H // G query heads per key/value head, K head_dim, F mlp_dim, V vocab_size, L layers.

Layer weights are stacked on a leading `layers` axis and applied with `lax.scan`, so compile time
does not grow with depth. The KV cache stores keys and values per slot, with a validity mask and
a write index. Its layout is L x B x G x S x K (heads before slots), so attention reads a layer's
slots without a transpose. Attention is causal in slot order and skips invalid (padding) slots.
So a left-padded prefill followed by one-token decode steps computes the same logits as one full
forward. `prefix_forward` and `extend` run a prompt once and continue it in several rows, as
GRPO groups do, and stay differentiable.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from trait_rl.model.config import ModelConfig

Params = dict[str, Any]
Cache = dict[str, jax.Array]

# Masked attention scores use a large finite value instead of -inf, so a padding query whose
# keys are all masked gets finite (ignored) outputs instead of NaN.
_MASKED_SCORE = -1e30


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


# ----------------------------------------------------------------------------- layers


def _normalize(norm_params: Params, cfg: ModelConfig, x_BxTxD: jax.Array) -> jax.Array:
    """Apply RMSNorm or LayerNorm, with statistics in float32."""
    x = x_BxTxD.astype(jnp.float32)
    if cfg.norm == "layernorm":
        x = x - jnp.mean(x, axis=-1, keepdims=True)
    normed = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + cfg.norm_eps)
    normed = normed * norm_params["scale"].astype(jnp.float32)
    if "bias" in norm_params:
        normed = normed + norm_params["bias"].astype(jnp.float32)
    return normed.astype(cfg.activation_dtype)


def _dense(dense: Params, cfg: ModelConfig, x: jax.Array, in_axes: int) -> jax.Array:
    """Contract the last `in_axes` axes of x with the leading `in_axes` axes of the kernel.

    Both sides are flattened to one 2-D matmul (tokens x inputs) @ (inputs x outputs). On the
    CPU the gradient of a rank-3 einsum made XLA fuse a strided transpose into the elementwise
    backward, which took 70-90 ms per MLP and layer at the reference shape; the 2-D form halved
    the MLP's gradient time (benchmarks/RESULTS.md).
    """
    kernel = dense["kernel"].astype(cfg.activation_dtype)
    in_shape, out_shape = kernel.shape[:in_axes], kernel.shape[in_axes:]
    lead_shape = x.shape[: x.ndim - in_axes]
    x_MxI = x.reshape(math.prod(lead_shape), math.prod(in_shape))
    y_MxO = x_MxI @ kernel.reshape(math.prod(in_shape), math.prod(out_shape))
    y = y_MxO.reshape(*lead_shape, *out_shape)
    if "bias" in dense:
        y = y + dense["bias"].astype(cfg.activation_dtype)
    return y


def _rope(x_BxTxNxK: jax.Array, positions_BxT: jax.Array, theta: float) -> jax.Array:
    """Rotate feature pairs (i, i + K/2) by position-dependent angles (rotate-half convention)."""
    half = x_BxTxNxK.shape[-1] // 2
    inv_freq_K2 = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_BxTxK2 = positions_BxT.astype(jnp.float32)[..., None] * inv_freq_K2
    sin = jnp.sin(angles_BxTxK2)[:, :, None, :]
    cos = jnp.cos(angles_BxTxK2)[:, :, None, :]
    x = x_BxTxNxK.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x_BxTxNxK.dtype)


def _attend(
    q_BxTxHxK: jax.Array, k_BxGxSxK: jax.Array, v_BxGxSxK: jax.Array, allowed_BxTxS: jax.Array
) -> jax.Array:
    """Grouped-query attention: each key/value head serves R = H // G query heads."""
    b, t, h, k = q_BxTxHxK.shape
    g = k_BxGxSxK.shape[1]
    q_BxTxGxRxK = q_BxTxHxK.reshape(b, t, g, h // g, k)
    scores_BxGxRxTxS = jnp.einsum(
        "btgrk,bgsk->bgrts", q_BxTxGxRxK, k_BxGxSxK, preferred_element_type=jnp.float32
    )
    scores_BxGxRxTxS = scores_BxGxRxTxS / math.sqrt(k)
    scores_BxGxRxTxS = jnp.where(allowed_BxTxS[:, None, None], scores_BxGxRxTxS, _MASKED_SCORE)
    probs_BxGxRxTxS = jax.nn.softmax(scores_BxGxRxTxS, axis=-1).astype(v_BxGxSxK.dtype)
    out_BxTxGxRxK = jnp.einsum("bgrts,bgsk->btgrk", probs_BxGxRxTxS, v_BxGxSxK)
    return out_BxTxGxRxK.reshape(b, t, h, k)


def _mlp(mlp: Params, cfg: ModelConfig, x_BxTxD: jax.Array) -> jax.Array:
    up_BxTxF = _dense(mlp["up"], cfg, x_BxTxD, 1)
    if cfg.mlp_activation == "gelu":
        hidden_BxTxF = jax.nn.gelu(up_BxTxF, approximate=True)
    else:
        gate_BxTxF = _dense(mlp["gate"], cfg, x_BxTxD, 1)
        if cfg.mlp_activation == "swiglu":
            activated = jax.nn.silu(gate_BxTxF)
        else:
            activated = jax.nn.gelu(gate_BxTxF, approximate=True)
        hidden_BxTxF = activated * up_BxTxF
    return _dense(mlp["down"], cfg, hidden_BxTxF, 1)


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


def _queries_keys_values(
    layer: Params, cfg: ModelConfig, x_BxTxD: jax.Array, positions_BxT: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Project the normalised input of a block to queries (BxTxHxK), keys and values (BxGxTxK)."""
    attn = layer["attn"]
    h_BxTxD = _normalize(layer["attn_norm"], cfg, x_BxTxD)
    q_BxTxHxK = _dense(attn["q"], cfg, h_BxTxD, 1)
    k_BxTxGxK = _dense(attn["k"], cfg, h_BxTxD, 1)
    v_BxTxGxK = _dense(attn["v"], cfg, h_BxTxD, 1)
    if cfg.position_embedding == "rope":
        q_BxTxHxK = _rope(q_BxTxHxK, positions_BxT, cfg.rope_theta)
        k_BxTxGxK = _rope(k_BxTxGxK, positions_BxT, cfg.rope_theta)
    return q_BxTxHxK, jnp.swapaxes(k_BxTxGxK, 1, 2), jnp.swapaxes(v_BxTxGxK, 1, 2)


def _attention_and_mlp(
    layer: Params,
    cfg: ModelConfig,
    x_BxTxD: jax.Array,
    q_BxTxHxK: jax.Array,
    keys_BxGxSxK: jax.Array,
    values_BxGxSxK: jax.Array,
    allowed_BxTxS: jax.Array,
) -> jax.Array:
    """Finish a pre-norm block: attention over the given slots, output projection, then MLP."""
    out_BxTxHxK = _attend(q_BxTxHxK, keys_BxGxSxK, values_BxGxSxK, allowed_BxTxS)
    x_BxTxD = x_BxTxD + _dense(layer["attn"]["o"], cfg, out_BxTxHxK, 2)
    h_BxTxD = _normalize(layer["mlp_norm"], cfg, x_BxTxD)
    return x_BxTxD + _mlp(layer["mlp"], cfg, h_BxTxD)


def _block(
    layer: Params,
    cfg: ModelConfig,
    x_BxTxD: jax.Array,
    positions_BxT: jax.Array,
    allowed_BxTxS: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Apply one pre-norm decoder block over its own tokens; also return their keys and values."""
    q_BxTxHxK, k_BxGxTxK, v_BxGxTxK = _queries_keys_values(layer, cfg, x_BxTxD, positions_BxT)
    x_BxTxD = _attention_and_mlp(
        layer, cfg, x_BxTxD, q_BxTxHxK, k_BxGxTxK, v_BxGxTxK, allowed_BxTxS
    )
    return x_BxTxD, (k_BxGxTxK, v_BxGxTxK)


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
    q_BxTxHxK, k_BxGxTxK, v_BxGxTxK = _queries_keys_values(layer, cfg, x_BxTxD, positions_BxT)
    k_LxBxGxSxK, keys_BxGxSxK = _write_layer_cache(kv_cache[0], k_BxGxTxK, layer_index, index)
    v_LxBxGxSxK, values_BxGxSxK = _write_layer_cache(kv_cache[1], v_BxGxTxK, layer_index, index)
    x_BxTxD = _attention_and_mlp(
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
        causal_TxT = jnp.tril(jnp.ones((t, t), bool))
        allowed_BxTxT = causal_TxT[None] & (valid_BxT[:, None, :] > 0)
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


def _embed(
    params: Params, cfg: ModelConfig, tokens_BxT: jax.Array, positions_BxT: jax.Array
) -> jax.Array:
    x_BxTxD = params["embed"]["embedding"][tokens_BxT].astype(cfg.activation_dtype)
    if cfg.embed_scale:
        # Gemma multiplies in the activation dtype, so in bfloat16 the factor is rounded first
        # (sqrt(3072) = 55.43 becomes 55.5). The tied LM head still reads the unscaled table.
        x_BxTxD = x_BxTxD * jnp.asarray(math.sqrt(cfg.embed_dim), cfg.activation_dtype)
    if cfg.position_embedding == "learned":
        x_BxTxD = x_BxTxD + params["pos_embed"]["embedding"][positions_BxT].astype(
            cfg.activation_dtype
        )
    return x_BxTxD


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


_REMAT_POLICIES = {
    "dots": jax.checkpoint_policies.dots_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def _remat(cfg: ModelConfig, scan_block):
    """Wrap the layer step in `jax.checkpoint` with the policy `cfg.remat` names.

    Only gradients see a difference. "dots" keeps the matmul outputs for the backward pass and
    recomputes the elementwise work; "full" recomputes the whole layer (least memory); "none"
    keeps every residual autodiff saves. At the reference shape on the CPU, "dots" cut the GRPO
    update by about a quarter against "none": fewer stacked residuals to write and read.
    """
    if cfg.remat == "none":
        return scan_block
    return jax.checkpoint(scan_block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=False)


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
    x_BxTxD = _embed(params, cfg, tokens_BxT, positions_BxT)

    if cache is None:

        def scan_block(x, layer):
            x, _ = _block(layer, cfg, x, positions_BxT, allowed_BxTxS)
            return x, None

        x_BxTxD, _ = jax.lax.scan(_remat(cfg, scan_block), x_BxTxD, params["layers"])
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

    hidden_BxTxD = _normalize(params["final_norm"], cfg, x_BxTxD)
    return hidden_BxTxD, new_cache


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Prefix:
    """Keys and values of a run of prompts, for continuing them with `extend`.

    k_LxBxGxPxK, v_LxBxGxPxK: every layer's keys and values of the P prompt columns.
    mask_BxP: 1 at real prompt tokens. Unlike a KV cache it has no free slots and no write
    index, and it stays differentiable: `extend` reads it per layer without writing it.
    """

    k_LxBxGxPxK: jax.Array
    v_LxBxGxPxK: jax.Array
    mask_BxP: jax.Array

    def repeat(self, repeats: int) -> "Prefix":
        """Repeat each row `repeats` times in adjacent rows (B -> B * repeats)."""
        return Prefix(
            k_LxBxGxPxK=jnp.repeat(self.k_LxBxGxPxK, repeats, axis=1),
            v_LxBxGxPxK=jnp.repeat(self.v_LxBxGxPxK, repeats, axis=1),
            mask_BxP=jnp.repeat(self.mask_BxP, repeats, axis=0),
        )


def prefix_forward(
    params: Params, cfg: ModelConfig, tokens_BxP: jax.Array, input_mask_BxP: jax.Array
) -> tuple[jax.Array, Prefix]:
    """Run a full forward over the prompts; return the hidden states and their `Prefix`."""
    positions_BxP = positions_from_mask(input_mask_BxP)
    allowed_BxPxP, _ = _attention_mask(input_mask_BxP, None)
    x_BxPxD = _embed(params, cfg, tokens_BxP, positions_BxP)

    def scan_block(x, layer):
        return _block(layer, cfg, x, positions_BxP, allowed_BxPxP)

    x_BxPxD, (k_LxBxGxPxK, v_LxBxGxPxK) = jax.lax.scan(
        _remat(cfg, scan_block), x_BxPxD, params["layers"]
    )
    hidden_BxPxD = _normalize(params["final_norm"], cfg, x_BxPxD)
    return hidden_BxPxD, Prefix(k_LxBxGxPxK, v_LxBxGxPxK, input_mask_BxP.astype(jnp.int32))


def extend(
    params: Params,
    cfg: ModelConfig,
    tokens_BxT: jax.Array,
    input_mask_BxT: jax.Array,
    prefix: Prefix,
) -> jax.Array:
    """Run T tokens that continue each row's prefix; return their final-norm hidden states.

    Equal to the last T columns of a full forward over [prefix | tokens]. The prefix's keys and
    values are scanned inputs, not a carry as in the KV-cache path, so a gradient through them
    stores one layer's slots per layer (a carried stack would be stored whole at every layer).
    """
    t = tokens_BxT.shape[1]
    positions_BxT = positions_from_mask(input_mask_BxT) + jnp.sum(prefix.mask_BxP, axis=1)[:, None]
    valid_BxT = input_mask_BxT.astype(jnp.int32)
    causal_TxT = jnp.tril(jnp.ones((t, t), bool))
    allowed_BxTxT = causal_TxT[None] & (valid_BxT[:, None, :] > 0)
    prefix_BxTxP = jnp.broadcast_to(
        prefix.mask_BxP[:, None, :] > 0, (tokens_BxT.shape[0], t, prefix.mask_BxP.shape[1])
    )
    allowed_BxTxS = jnp.concatenate([prefix_BxTxP, allowed_BxTxT], axis=2)
    x_BxTxD = _embed(params, cfg, tokens_BxT, positions_BxT)

    def scan_block(x, inputs):
        layer, prefix_k_BxGxPxK, prefix_v_BxGxPxK = inputs
        q_BxTxHxK, k_BxGxTxK, v_BxGxTxK = _queries_keys_values(layer, cfg, x, positions_BxT)
        keys_BxGxSxK = jnp.concatenate([prefix_k_BxGxPxK, k_BxGxTxK], axis=2)
        values_BxGxSxK = jnp.concatenate([prefix_v_BxGxPxK, v_BxGxTxK], axis=2)
        x = _attention_and_mlp(
            layer, cfg, x, q_BxTxHxK, keys_BxGxSxK, values_BxGxSxK, allowed_BxTxS
        )
        return x, None

    xs = (params["layers"], prefix.k_LxBxGxPxK, prefix.v_LxBxGxPxK)
    x_BxTxD, _ = jax.lax.scan(_remat(cfg, scan_block), x_BxTxD, xs)
    return _normalize(params["final_norm"], cfg, x_BxTxD)


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
