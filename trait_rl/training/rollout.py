"""Rollouts: sample G completions per prompt, then score them under the policy and the reference.

Prompts are LEFT padded to a fixed length P and completions are N = max_new_tokens long, so the
sequence [prompt | completion] puts completion token j at column P + j. The hidden state that
predicts completion token j is the one at column P - 1 + j; column P - 1 is always a real prompt
token because of the left padding.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from trait_rl.model import logps as model_logps
from trait_rl.model import prefix as prefix_lib
from trait_rl.model import transformer
from trait_rl.model.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PolicyBatch:
    """One rollout batch for a policy update; B = prompts x group size.

    old_logps_BxN: sampler log-probs of the completion tokens (the behaviour policy).
    ref_logps_BxN: the same tokens under the frozen reference.
    advantages_BxN: per-token advantages (GRPO broadcasts one value over the completion).
    """

    prompt_tokens_BxP: jax.Array
    prompt_mask_BxP: jax.Array
    completion_tokens_BxN: jax.Array
    completion_mask_BxN: jax.Array
    old_logps_BxN: jax.Array
    ref_logps_BxN: jax.Array
    advantages_BxN: jax.Array


def repeat_prompts(
    prompt_tokens_BxP: np.ndarray, prompt_mask_BxP: np.ndarray, group_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Repeat each prompt `group_size` times in a row, so a group is `group_size` adjacent rows."""
    return (
        np.repeat(prompt_tokens_BxP, group_size, axis=0),
        np.repeat(prompt_mask_BxP, group_size, axis=0),
    )


def rollout_model_config(model_cfg: ModelConfig, matmul_dtype: str) -> ModelConfig:
    """Return the model config that samples rollouts: `model_cfg` with its matmul dtype replaced.

    "" keeps `model_cfg`. With "bfloat16" over a float32 policy, the sampler multiplies in
    bfloat16 while the reference and the update stay in the model's dtype. The sampled logps
    are then the behaviour policy's, so GRPO's and PPO's importance ratio weights each token by
    how the learner's recomputed probability differs from the sampler's.
    """
    if not matmul_dtype:
        return model_cfg
    return dataclasses.replace(model_cfg, matmul_dtype=matmul_dtype)


def _sequence(prompt_tokens_BxP, prompt_mask_BxP, completion_tokens_BxN, completion_mask_BxN):
    tokens_BxT = jnp.concatenate([prompt_tokens_BxP, completion_tokens_BxN], axis=1)
    mask_BxT = jnp.concatenate(
        [prompt_mask_BxP.astype(jnp.int32), completion_mask_BxN.astype(jnp.int32)], axis=1
    )
    return tokens_BxT, mask_BxT


def completion_hidden_BxNxD(
    params,
    cfg: ModelConfig,
    prompt_tokens_BxP: jax.Array,
    prompt_mask_BxP: jax.Array,
    completion_tokens_BxN: jax.Array,
    completion_mask_BxN: jax.Array,
    prompt_repeats: int = 1,
) -> jax.Array:
    """Final hidden states that predict each completion token (columns P-1 .. P+N-2).

    `prompt_repeats` = r > 1 means the rows come in groups of r identical prompts (GRPO groups,
    `repeat_prompts`); each prompt then runs once (`_shared_prompt_hidden_BxNxD`).
    """
    prompt_repeats = prefix_lib.check_prompt_repeats(prompt_tokens_BxP.shape[0], prompt_repeats)
    if prompt_repeats > 1:
        return _shared_prompt_hidden_BxNxD(
            params,
            cfg,
            prompt_tokens_BxP,
            prompt_mask_BxP,
            completion_tokens_BxN,
            completion_mask_BxN,
            prompt_repeats,
        )
    tokens_BxT, mask_BxT = _sequence(
        prompt_tokens_BxP, prompt_mask_BxP, completion_tokens_BxN, completion_mask_BxN
    )
    hidden_BxTxD, _ = transformer.backbone(params, cfg, tokens_BxT, mask_BxT)
    prompt_len = prompt_tokens_BxP.shape[1]
    return hidden_BxTxD[:, prompt_len - 1 : -1]


def _shared_prompt_hidden_BxNxD(
    params,
    cfg: ModelConfig,
    prompt_tokens_BxP: jax.Array,
    prompt_mask_BxP: jax.Array,
    completion_tokens_BxN: jax.Array,
    completion_mask_BxN: jax.Array,
    prompt_repeats: int,
) -> jax.Array:
    """Return the hidden states of `completion_hidden_BxNxD`, running each group's prompt once.

    The keys and values of the U = B / r distinct prompts are repeated to all B rows and the
    completions continue them (`prefix.extend`), so the model runs U * P + B * N tokens
    instead of B * (P + N). Gradients reach each shared prompt from every completion of its
    group (the repeat sums them).
    """
    prompt_hidden_UxPxD, prefix = prefix_lib.prefix_forward(
        params, cfg, prompt_tokens_BxP[::prompt_repeats], prompt_mask_BxP[::prompt_repeats]
    )
    completion_hidden_BxNxD = prefix_lib.extend(
        params, cfg, completion_tokens_BxN, completion_mask_BxN, prefix.repeat(prompt_repeats)
    )
    last_prompt_Bx1xD = jnp.repeat(prompt_hidden_UxPxD[:, -1:], prompt_repeats, axis=0)
    return jnp.concatenate([last_prompt_Bx1xD, completion_hidden_BxNxD[:, :-1]], axis=1)


def completion_logps_from_hidden(
    params, cfg: ModelConfig, hidden_BxNxD: jax.Array, completion_tokens_BxN, temperature: float
) -> jax.Array:
    """log softmax(logits / temperature) at the completion tokens, in float32."""
    logits_BxNxV = transformer.lm_logits(params, cfg, hidden_BxNxD)
    return model_logps.token_logps(logits_BxNxV, completion_tokens_BxN, temperature)


def completion_logps_BxN(
    params,
    cfg: ModelConfig,
    prompt_tokens_BxP: jax.Array,
    prompt_mask_BxP: jax.Array,
    completion_tokens_BxN: jax.Array,
    completion_mask_BxN: jax.Array,
    temperature: float,
    prompt_repeats: int = 1,
) -> jax.Array:
    """Log-probs of the completion tokens given the prompt; masked-out tokens come back as 0.

    `prompt_repeats` is as in `completion_hidden_BxNxD`.
    """
    hidden_BxNxD = completion_hidden_BxNxD(
        params,
        cfg,
        prompt_tokens_BxP,
        prompt_mask_BxP,
        completion_tokens_BxN,
        completion_mask_BxN,
        prompt_repeats,
    )
    logps_BxN = completion_logps_from_hidden(
        params, cfg, hidden_BxNxD, completion_tokens_BxN, temperature
    )
    return logps_BxN * completion_mask_BxN


# One compiled reference scorer per (cfg, temperature, prompt_repeats) and shape; the reference
# stays frozen.
reference_logps_BxN = jax.jit(completion_logps_BxN, static_argnums=(1, 6, 7))


def decode_completions(tokenizer, tokens_BxN: np.ndarray, mask_BxN: np.ndarray) -> list[str]:
    """Decode each completion without its stop token and padding."""
    texts = []
    for tokens_N, mask_N in zip(np.asarray(tokens_BxN), np.asarray(mask_BxN), strict=True):
        ids = [int(t) for t, m in zip(tokens_N, mask_N, strict=True) if m and t != tokenizer.eos_id]
        texts.append(tokenizer.decode(ids))
    return texts
