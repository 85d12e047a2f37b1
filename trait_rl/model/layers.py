"""The layers of the decoder: normalisation, projections, rotary embeddings, attention, MLP.

Pure functions over one layer's parameters, shared by the full forward, the KV-cached decode
(`transformer`) and the prompt-sharing forward (`prefix`). Shape letters as in `transformer`.
"""

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from trait_rl.model.config import ModelConfig

Params = dict[str, Any]

# Masked attention scores use a large finite value instead of -inf, so a padding query whose
# keys are all masked gets finite (ignored) outputs instead of NaN.
_MASKED_SCORE = -1e30


def normalize(norm_params: Params, cfg: ModelConfig, x_BxTxD: jax.Array) -> jax.Array:
    """Apply RMSNorm or LayerNorm, with statistics in float32."""
    x = x_BxTxD.astype(jnp.float32)
    if cfg.norm == "layernorm":
        x = x - jnp.mean(x, axis=-1, keepdims=True)
    normed = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + cfg.norm_eps)
    normed = normed * norm_params["scale"].astype(jnp.float32)
    if "bias" in norm_params:
        normed = normed + norm_params["bias"].astype(jnp.float32)
    return normed.astype(cfg.activation_dtype)


def dense(projection: Params, cfg: ModelConfig, x: jax.Array, in_axes: int) -> jax.Array:
    """Contract the last `in_axes` axes of x with the leading `in_axes` axes of the kernel.

    Both sides are flattened to one 2-D matmul (tokens x inputs) @ (inputs x outputs). On the
    CPU, the gradient of a rank-3 einsum made XLA fuse a strided transpose into the elementwise
    backward (70-90 ms per MLP and layer at the reference shape of benchmarks/RESULTS.md). The
    2-D form halved the MLP's gradient time.
    """
    kernel = projection["kernel"]
    in_shape, out_shape = kernel.shape[:in_axes], kernel.shape[in_axes:]
    lead_shape = x.shape[: x.ndim - in_axes]
    x_MxI = x.reshape(math.prod(lead_shape), math.prod(in_shape))
    y_MxO = matmul(cfg, x_MxI, kernel.reshape(math.prod(in_shape), math.prod(out_shape)))
    y = y_MxO.reshape(*lead_shape, *out_shape)
    if "bias" in projection:
        y = y + projection["bias"].astype(cfg.activation_dtype)
    return y


def matmul(cfg: ModelConfig, x_MxI: jax.Array, kernel_IxO: jax.Array) -> jax.Array:
    """Return x @ kernel in the activation dtype, both inputs cast to `cfg.matmul_input_dtype`.

    The products accumulate in the activation dtype, which is float32 by default.
    """
    dtype = cfg.matmul_input_dtype
    return jnp.matmul(
        x_MxI.astype(dtype), kernel_IxO.astype(dtype), preferred_element_type=cfg.activation_dtype
    )


class Rotary(NamedTuple):
    """Sine and cosine of each token's rotary angles, B x T x 1 x K/2 (broadcast over heads)."""

    sin: jax.Array
    cos: jax.Array


def rotary(cfg: ModelConfig, positions_BxT: jax.Array) -> Rotary | None:
    """Return the sine and cosine of the rotary angles at each position, or None without rotary.

    Computed once per forward and shared by every layer's queries and keys.
    """
    if cfg.position_embedding != "rope":
        return None
    half = cfg.head_dim // 2
    inv_freq_K2 = cfg.rope_theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles_BxTxK2 = positions_BxT.astype(jnp.float32)[..., None] * inv_freq_K2
    return Rotary(jnp.sin(angles_BxTxK2)[:, :, None, :], jnp.cos(angles_BxTxK2)[:, :, None, :])


def rotary_from_table(
    cfg: ModelConfig, positions_BxT: jax.Array, num_positions: int
) -> Rotary | None:
    """Return what `rotary` returns, looked up in a table of positions 0..num_positions-1.

    The table does not depend on the input, so XLA computes it at compile time, and a decode
    step then evaluates no sine or cosine. Computed per step, they were fused into every layer's
    rotation and key-cache write, which took about a tenth of a sampler decode step at batch 64
    on a 2-core CPU. Every position must be below `num_positions`, because gathers clamp.
    """
    table = rotary(cfg, jnp.arange(num_positions, dtype=jnp.int32)[None])
    if table is None:
        return None
    return Rotary(table.sin[0][positions_BxT], table.cos[0][positions_BxT])


def rope(x_BxTxNxK: jax.Array, angles: Rotary) -> jax.Array:
    """Rotate feature pairs (i, i + K/2) by the tokens' rotary angles (rotate-half convention)."""
    half = x_BxTxNxK.shape[-1] // 2
    x = x_BxTxNxK.astype(jnp.float32)
    x1, x2 = x[..., :half], x[..., half:]
    sin, cos = angles
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(x_BxTxNxK.dtype)


def attend(
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


def mlp(mlp_params: Params, cfg: ModelConfig, x_BxTxD: jax.Array) -> jax.Array:
    """Apply the feed-forward block: gated (SwiGLU, GeGLU) or plain GELU."""
    up_BxTxF = dense(mlp_params["up"], cfg, x_BxTxD, 1)
    if cfg.mlp_activation == "gelu":
        hidden_BxTxF = jax.nn.gelu(up_BxTxF, approximate=True)
    else:
        gate_BxTxF = dense(mlp_params["gate"], cfg, x_BxTxD, 1)
        if cfg.mlp_activation == "swiglu":
            activated = jax.nn.silu(gate_BxTxF)
        else:
            activated = jax.nn.gelu(gate_BxTxF, approximate=True)
        hidden_BxTxF = activated * up_BxTxF
    return dense(mlp_params["down"], cfg, hidden_BxTxF, 1)


def fuse_qkv(attn: Params) -> Params:
    """Return attention weights whose q, k and v projections are one `qkv` projection.

    The kernel is D x (H + 2G) x K, the q, k and v kernels concatenated along the heads. At
    batch 64 on a 2-core CPU, a sampler decode step took 14% less time with one projection than
    with three (jax.profiler traces). XLA ran the three small matmuls one after the other on one
    core, and it ran the fused one on both.
    """
    qkv = {"kernel": jnp.concatenate([attn[name]["kernel"] for name in "qkv"], axis=-2)}
    if "bias" in attn["q"]:
        qkv["bias"] = jnp.concatenate([attn[name]["bias"] for name in "qkv"], axis=-2)
    return {"qkv": qkv, "o": attn["o"]}


def _project_qkv(
    attn: Params, cfg: ModelConfig, h_BxTxD: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Return the queries (BxTxHxK), keys and values (BxTxGxK), from three kernels or one."""
    if "qkv" not in attn:
        return tuple(dense(attn[name], cfg, h_BxTxD, 1) for name in "qkv")
    qkv_BxTxNxK = dense(attn["qkv"], cfg, h_BxTxD, 1)
    h, g = cfg.num_heads, cfg.num_kv_heads
    return qkv_BxTxNxK[:, :, :h], qkv_BxTxNxK[:, :, h : h + g], qkv_BxTxNxK[:, :, h + g :]


def queries_keys_values(
    layer: Params, cfg: ModelConfig, x_BxTxD: jax.Array, angles: Rotary | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Project the normalised input of a block to queries (BxTxHxK), keys and values (BxGxTxK).

    Queries and keys are rotated by `angles` (from `rotary`), unless it is None.
    """
    h_BxTxD = normalize(layer["attn_norm"], cfg, x_BxTxD)
    q_BxTxHxK, k_BxTxGxK, v_BxTxGxK = _project_qkv(layer["attn"], cfg, h_BxTxD)
    if angles is not None:
        q_BxTxHxK = rope(q_BxTxHxK, angles)
        k_BxTxGxK = rope(k_BxTxGxK, angles)
    return q_BxTxHxK, jnp.swapaxes(k_BxTxGxK, 1, 2), jnp.swapaxes(v_BxTxGxK, 1, 2)


def attention_and_mlp(
    layer: Params,
    cfg: ModelConfig,
    x_BxTxD: jax.Array,
    q_BxTxHxK: jax.Array,
    keys_BxGxSxK: jax.Array,
    values_BxGxSxK: jax.Array,
    allowed_BxTxS: jax.Array,
) -> jax.Array:
    """Finish a pre-norm block: attention over the given slots, output projection, then MLP."""
    out_BxTxHxK = attend(q_BxTxHxK, keys_BxGxSxK, values_BxGxSxK, allowed_BxTxS)
    x_BxTxD = x_BxTxD + dense(layer["attn"]["o"], cfg, out_BxTxHxK, 2)
    h_BxTxD = normalize(layer["mlp_norm"], cfg, x_BxTxD)
    return x_BxTxD + mlp(layer["mlp"], cfg, h_BxTxD)


def block(
    layer: Params,
    cfg: ModelConfig,
    x_BxTxD: jax.Array,
    angles: Rotary | None,
    allowed_BxTxS: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Apply one pre-norm decoder block over its own tokens; also return their keys and values."""
    q_BxTxHxK, k_BxGxTxK, v_BxGxTxK = queries_keys_values(layer, cfg, x_BxTxD, angles)
    x_BxTxD = attention_and_mlp(layer, cfg, x_BxTxD, q_BxTxHxK, k_BxGxTxK, v_BxGxTxK, allowed_BxTxS)
    return x_BxTxD, (k_BxGxTxK, v_BxGxTxK)


def embed(
    params: Params, cfg: ModelConfig, tokens_BxT: jax.Array, positions_BxT: jax.Array
) -> jax.Array:
    """Look up the token embeddings (scaled by sqrt(D) for Gemma) and add learned positions."""
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


_REMAT_POLICIES = {
    "dots": jax.checkpoint_policies.dots_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}


def remat(cfg: ModelConfig, scan_block):
    """Wrap the layer step in `jax.checkpoint` with the policy `cfg.remat` names.

    Only gradients see a difference. "dots" keeps the matmul outputs for the backward pass and
    recomputes the elementwise work. "full" recomputes the whole layer, which needs the least
    memory. "none" keeps every residual that autodiff saves. At the reference shape on a 2-core
    CPU, "dots" cut the GRPO update by about a quarter against "none", because fewer stacked
    residuals are written and read.
    """
    if cfg.remat == "none":
        return scan_block
    return jax.checkpoint(scan_block, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=False)


def causal_allowed(input_mask_BxT: jax.Array) -> jax.Array:
    """Return which tokens each query may read: itself, earlier tokens, never padding (BxTxT)."""
    t = input_mask_BxT.shape[1]
    causal_TxT = jnp.tril(jnp.ones((t, t), bool))
    return causal_TxT[None] & (input_mask_BxT[:, None, :] > 0)
