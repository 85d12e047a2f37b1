"""Scalar heads read from the backbone's hidden states: the reward heads and the PPO value head.

The reward network is the backbone parameters plus `init_scalar_head(rng, cfg, len(TRAITS))`,
read at the last response token with `gather_last`; the value head has one output.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp

from trait_rl.model.config import ModelConfig


def init_scalar_head(rng: jax.Array, cfg: ModelConfig, num_outputs: int) -> dict[str, jax.Array]:
    """Initialise a linear head D -> num_outputs (float32 kernel with std 1/sqrt(D), zero bias)."""
    if num_outputs <= 0:
        raise ValueError(f"invalid num_outputs={num_outputs}: a scalar head needs at least 1")
    std = 1.0 / math.sqrt(cfg.embed_dim)
    kernel = std * jax.random.normal(rng, (cfg.embed_dim, num_outputs), jnp.float32)
    return {"kernel": kernel, "bias": jnp.zeros((num_outputs,), jnp.float32)}


def scalar_head_logical_axes() -> dict[str, tuple[str, ...]]:
    """Return logical axis names shaped like `init_scalar_head`'s output."""
    return {"kernel": ("embed", "outputs"), "bias": ("outputs",)}


def scalar_head(head_params: dict[str, Any], hidden_BxTxD: jax.Array) -> jax.Array:
    """Return float32 head outputs B x T x N for every position."""
    hidden = hidden_BxTxD.astype(jnp.float32)
    return hidden @ head_params["kernel"].astype(jnp.float32) + head_params["bias"]


def last_index(mask_BxT: jax.Array) -> jax.Array:
    """Return the index of the last position where the mask is 1 (0 for an all-zero row)."""
    t = mask_BxT.shape[1]
    positions_BxT = jnp.where(mask_BxT > 0, jnp.arange(t)[None, :], -1)
    return jnp.maximum(jnp.max(positions_BxT, axis=1), 0)


def gather_last(values_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    """Return `values[b, last index where mask[b] is 1]`, keeping any trailing dimensions."""
    index_B = last_index(mask_BxT)
    return jnp.take_along_axis(
        values_BxT, index_B.reshape((-1, 1) + (1,) * (values_BxT.ndim - 2)), axis=1
    )[:, 0]
