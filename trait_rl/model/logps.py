"""Per-token log-probabilities, computed in float32 whatever the activation dtype."""

from typing import Any

import jax
import jax.numpy as jnp

from trait_rl.model import transformer
from trait_rl.model.config import ModelConfig


def token_logps(
    logits_BxTxV: jax.Array, targets_BxT: jax.Array, temperature: float = 1.0
) -> jax.Array:
    """Return log_softmax(logits / temperature) gathered at the targets, B x T float32."""
    scaled_BxTxV = logits_BxTxV.astype(jnp.float32) / temperature
    log_probs_BxTxV = jax.nn.log_softmax(scaled_BxTxV, axis=-1)
    targets = targets_BxT.astype(jnp.int32)[..., None]
    return jnp.take_along_axis(log_probs_BxTxV, targets, axis=-1)[..., 0]


def per_token_logps(
    params: Any,
    cfg: ModelConfig,
    tokens_BxT: jax.Array,
    input_mask_BxT: jax.Array,
    temperature: float = 1.0,
) -> jax.Array:
    """Return logps[:, t] = log p(tokens[t] | tokens[<t]) with logps[:, 0] = 0.

    Padding positions, and the first real token of a left-padded row (it has no real context),
    are 0 too. So the values match what the sampler returns after a stop token.
    """
    logits_BxTxV, _ = transformer.forward(params, cfg, tokens_BxT, input_mask_BxT)
    next_logps = token_logps(logits_BxTxV[:, :-1], tokens_BxT[:, 1:], temperature)
    logps_BxT = jnp.pad(next_logps, ((0, 0), (1, 0)))
    has_context_BxT = jnp.pad(input_mask_BxT[:, :-1] > 0, ((0, 0), (1, 0)))
    return jnp.where((input_mask_BxT > 0) & has_context_BxT, logps_BxT, 0.0)
