"""Run a prompt once and continue it in several rows, differentiably (GRPO groups).

A GRPO group contains G completions of one prompt. `prefix_forward` runs each distinct prompt once
and returns its keys and values. `Prefix.repeat` copies them to the group's rows, and `extend`
runs the completions over them. At every real token the result equals a full forward over
[prompt | completion] for each row, with the prompt's cost divided by G.
"""

import dataclasses
import numbers

import jax
import jax.numpy as jnp

from trait_rl.model import layers, transformer
from trait_rl.model.config import ModelConfig
from trait_rl.model.layers import Params


def check_prompt_repeats(batch_size: int, prompt_repeats) -> int:
    """Return `prompt_repeats` as an int; raise unless it is a positive divisor of the batch.

    Only the shapes are checked, so this works under jit. Whether the rows really repeat in
    groups is the caller's contract (`sampling.sample` also compares concrete rows).
    """
    valid_type = isinstance(prompt_repeats, numbers.Integral) and not isinstance(
        prompt_repeats, bool
    )
    if not valid_type or prompt_repeats <= 0:
        raise ValueError(
            f"invalid prompt_repeats={prompt_repeats!r}: expected a positive integer, the number "
            "of adjacent rows that repeat each prompt"
        )
    if batch_size % prompt_repeats:
        raise ValueError(
            f"invalid prompt_repeats={prompt_repeats}: it does not divide the batch size "
            f"{batch_size}; the batch must hold whole groups of repeated prompts"
        )
    return int(prompt_repeats)


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
    positions_BxP = transformer.positions_from_mask(input_mask_BxP)
    allowed_BxPxP = layers.causal_allowed(input_mask_BxP)
    x_BxPxD = layers.embed(params, cfg, tokens_BxP, positions_BxP)
    angles = layers.rotary(cfg, positions_BxP)

    def scan_block(x, layer):
        return layers.block(layer, cfg, x, angles, allowed_BxPxP)

    x_BxPxD, (k_LxBxGxPxK, v_LxBxGxPxK) = jax.lax.scan(
        layers.remat(cfg, scan_block), x_BxPxD, params["layers"]
    )
    hidden_BxPxD = layers.normalize(params["final_norm"], cfg, x_BxPxD)
    return hidden_BxPxD, Prefix(k_LxBxGxPxK, v_LxBxGxPxK, input_mask_BxP.astype(jnp.int32))


def extend(
    params: Params,
    cfg: ModelConfig,
    tokens_BxT: jax.Array,
    input_mask_BxT: jax.Array,
    prefix: Prefix,
) -> jax.Array:
    """Run T tokens that continue each row's prefix; return their final-norm hidden states.

    At every real token (mask 1) this equals the matching column of a full forward over
    [prefix | tokens]. Masked columns get other values, which callers must ignore as they
    ignore padding outputs. The prefix's keys and values are scanned inputs, not a carry as in
    the KV-cache path. So a gradient through them stores one layer's slots per layer, where a
    carried stack would be stored whole at every layer.
    """
    t = tokens_BxT.shape[1]
    positions_BxT = (
        transformer.positions_from_mask(input_mask_BxT) + jnp.sum(prefix.mask_BxP, axis=1)[:, None]
    )
    allowed_BxTxT = layers.causal_allowed(input_mask_BxT)
    prefix_BxTxP = jnp.broadcast_to(
        prefix.mask_BxP[:, None, :] > 0, (tokens_BxT.shape[0], t, prefix.mask_BxP.shape[1])
    )
    allowed_BxTxS = jnp.concatenate([prefix_BxTxP, allowed_BxTxT], axis=2)
    x_BxTxD = layers.embed(params, cfg, tokens_BxT, positions_BxT)
    angles = layers.rotary(cfg, positions_BxT)

    def scan_block(x, inputs):
        layer, prefix_k_BxGxPxK, prefix_v_BxGxPxK = inputs
        q_BxTxHxK, k_BxGxTxK, v_BxGxTxK = layers.queries_keys_values(layer, cfg, x, angles)
        keys_BxGxSxK = jnp.concatenate([prefix_k_BxGxPxK, k_BxGxTxK], axis=2)
        values_BxGxSxK = jnp.concatenate([prefix_v_BxGxPxK, v_BxGxTxK], axis=2)
        x = layers.attention_and_mlp(
            layer, cfg, x, q_BxTxHxK, keys_BxGxSxK, values_BxGxSxK, allowed_BxTxS
        )
        return x, None

    xs = (params["layers"], prefix.k_LxBxGxPxK, prefix.v_LxBxGxPxK)
    x_BxTxD, _ = jax.lax.scan(layers.remat(cfg, scan_block), x_BxTxD, xs)
    return layers.normalize(params["final_norm"], cfg, x_BxTxD)
