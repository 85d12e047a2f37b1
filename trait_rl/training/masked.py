"""Masked reductions shared by the RL losses, advantages and KL terms.

Padding and prompt positions carry a 0 in the mask. Every mean divides by the number of masked-in
entries, clamped at 1, so an all-zero mask gives 0 instead of NaN.
"""

import jax
import jax.numpy as jnp


def masked_sum(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Sum of `x` where `mask` is nonzero, in float32."""
    return jnp.sum(x.astype(jnp.float32) * mask.astype(jnp.float32), axis=axis)


def masked_mean(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Mean of `x` over the entries where `mask` is nonzero; 0 where no entry is masked in."""
    count = jnp.sum(mask.astype(jnp.float32), axis=axis)
    return masked_sum(x, mask, axis) / jnp.maximum(count, 1.0)


def masked_var(x: jax.Array, mask: jax.Array, axis=None) -> jax.Array:
    """Population variance of `x` over the masked-in entries."""
    mean = masked_mean(x, mask, axis)
    if axis is not None:
        mean = jnp.expand_dims(mean, axis)
    return masked_mean(jnp.square(x - mean), mask, axis)


def masked_whiten(
    x: jax.Array, mask: jax.Array, shift_mean: bool = True, eps: float = 1e-8
) -> jax.Array:
    """Scale `x` to unit variance over the masked-in entries (and zero mean if `shift_mean`).

    Masked-out entries come back as 0, so they add nothing to later masked sums.
    """
    mean = masked_mean(x, mask)
    whitened = (x - mean) * jax.lax.rsqrt(masked_var(x, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return jnp.where(mask.astype(bool), whitened, 0.0)
