"""PPO: a value head on the policy backbone, GAE, clipped policy and value losses.

PPO parameters are {"policy": transformer params, "value_head": scalar head with 1 output}; the
value head reads the same final hidden states as the LM head. All epochs and minibatches of one
rollout batch run inside one jitted function, as a `lax.scan` over epochs of `lax.scan`s over
minibatches.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from trait_rl.model import heads
from trait_rl.model.config import ModelConfig
from trait_rl.training import advantages as advantages_lib
from trait_rl.training import grpo, kl, rl_rewards, rollout
from trait_rl.training.masked import masked_mean, masked_whiten
from trait_rl.training.train_state import TrainState


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PPOBatch:
    """A rollout batch with the value targets; `policy.advantages_BxN` are GAE, whitened."""

    policy: rollout.PolicyBatch
    old_values_BxN: jax.Array
    returns_BxN: jax.Array


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """Static PPO settings (a hashable jit argument)."""

    policy: grpo.PolicyLossConfig
    gamma: float
    gae_lambda: float
    vf_coef: float
    value_clip: float
    epochs: int
    minibatches: int


def ppo_config_from(rl_config) -> PPOConfig:
    return PPOConfig(
        policy=grpo.policy_loss_config_from(rl_config),
        gamma=float(rl_config.gamma),
        gae_lambda=float(rl_config.gae_lambda),
        vf_coef=float(rl_config.vf_coef),
        value_clip=float(rl_config.value_clip),
        epochs=int(rl_config.ppo_epochs),
        minibatches=int(rl_config.ppo_minibatches),
    )


def init_ppo_params(policy_params, model_cfg: ModelConfig, rng: jax.Array) -> dict:
    """Attach a fresh 1-output value head to the policy parameters."""
    return {"policy": policy_params, "value_head": heads.init_scalar_head(rng, model_cfg, 1)}


@grpo.register_loss("clipped_value")
def clipped_value_loss(
    values_BxN: jax.Array,
    old_values_BxN: jax.Array,
    returns_BxN: jax.Array,
    completion_mask_BxN: jax.Array,
    value_clip: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """0.5 * mean_t max((V_t - R_t)^2, (V_old_t + clip(V_t - V_old_t, -c, c) - R_t)^2).

    The clipped value loss of PPO as implemented in OpenAI baselines ppo2 (Dhariwal et al. 2017),
    which keeps the value from moving more than `value_clip` away from the rollout's value.
    """
    clipped_BxN = old_values_BxN + jnp.clip(values_BxN - old_values_BxN, -value_clip, value_clip)
    squared_BxN = jnp.maximum(
        jnp.square(values_BxN - returns_BxN), jnp.square(clipped_BxN - returns_BxN)
    )
    loss = 0.5 * masked_mean(squared_BxN, completion_mask_BxN)
    return loss, {"value_loss": loss, "value_mean": masked_mean(values_BxN, completion_mask_BxN)}


def logps_and_values(params, model_cfg: ModelConfig, batch: rollout.PolicyBatch, temperature):
    """One backbone pass; returns (logps_BxN, values_BxN) of the completion tokens."""
    hidden_BxNxD = rollout.completion_hidden_BxNxD(
        params["policy"],
        model_cfg,
        batch.prompt_tokens_BxP,
        batch.prompt_mask_BxP,
        batch.completion_tokens_BxN,
        batch.completion_mask_BxN,
    )
    logps_BxN = rollout.completion_logps_from_hidden(
        params["policy"], model_cfg, hidden_BxNxD, batch.completion_tokens_BxN, temperature
    )
    values_BxN = heads.scalar_head(params["value_head"], hidden_BxNxD)[..., 0]
    return logps_BxN, values_BxN


def ppo_loss(
    params, model_cfg: ModelConfig, batch: PPOBatch, kl_coef: jax.Array, config: PPOConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped policy loss (+ KL term in `loss` mode) + vf_coef * clipped value loss."""
    logps_BxN, values_BxN = logps_and_values(
        params, model_cfg, batch.policy, config.policy.temperature
    )
    policy_loss, metrics = grpo.policy_terms(logps_BxN, batch.policy, kl_coef, config.policy)
    value_loss, value_metrics = clipped_value_loss(
        values_BxN,
        batch.old_values_BxN,
        batch.returns_BxN,
        batch.policy.completion_mask_BxN,
        config.value_clip,
    )
    loss = policy_loss + config.vf_coef * value_loss
    return loss, {**metrics, **value_metrics, "loss": loss}


def make_ppo_batch_fn(model_cfg: ModelConfig, config: PPOConfig):
    """Jit `(params, batch, reward_B, kl_coef) -> PPOBatch`: values, token rewards and GAE.

    The sequence reward sits on the last completion token. In `reward` KL mode every completion
    token also gets -kl_coef * KL_t. Advantages are whitened over the batch's completion tokens.
    """

    def build(params, batch: rollout.PolicyBatch, reward_B: jax.Array, kl_coef: jax.Array):
        mask_BxN = batch.completion_mask_BxN
        _, values_BxN = logps_and_values(params, model_cfg, batch, config.policy.temperature)
        values_BxN = values_BxN * mask_BxN
        rewards_BxN = rl_rewards.place_on_last_token_BxN(reward_B, mask_BxN)
        if config.policy.kl_mode == "reward":
            kl_BxN = kl.get_kl_estimator(config.policy.kl_estimator)(
                batch.old_logps_BxN, batch.ref_logps_BxN
            )
            rewards_BxN = rewards_BxN + kl.kl_reward_penalty_BxN(kl_BxN, mask_BxN, kl_coef)
        advantages_BxN, returns_BxN = advantages_lib.gae(
            rewards_BxN, values_BxN, mask_BxN, config.gamma, config.gae_lambda
        )
        policy = dataclasses.replace(batch, advantages_BxN=masked_whiten(advantages_BxN, mask_BxN))
        return PPOBatch(policy=policy, old_values_BxN=values_BxN, returns_BxN=returns_BxN)

    return jax.jit(build)


def _split_minibatches(batch: PPOBatch, permutation_B: jax.Array, minibatches: int) -> PPOBatch:
    def split(x):
        shuffled = x[permutation_B]
        return shuffled.reshape(minibatches, x.shape[0] // minibatches, *x.shape[1:])

    return jax.tree_util.tree_map(split, batch)


def make_ppo_update(
    model_cfg: ModelConfig, optimizer: optax.GradientTransformation, config: PPOConfig
):
    """Jit `update(state, batch, kl_coef) -> (state, metrics)` over all epochs and minibatches.

    Each epoch shuffles the rollout batch with a key split from `state.rng`. Metrics are means
    over the `epochs * minibatches` optimizer updates; `state.step` counts rollout batches.
    """

    def minibatch_step(state: TrainState, minibatch: PPOBatch, kl_coef):
        grad_fn = jax.value_and_grad(ppo_loss, has_aux=True)
        (_, metrics), grads = grad_fn(state.params, model_cfg, minibatch, kl_coef, config)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "grad_norm": optax.global_norm(grads)}
        return dataclasses.replace(state, params=params, opt_state=opt_state), metrics

    def update(state: TrainState, batch: PPOBatch, kl_coef: jax.Array):
        batch_size = batch.returns_BxN.shape[0]
        if batch_size % config.minibatches:
            raise ValueError(
                f"rollout batch of {batch_size} does not split into "
                f"rl.ppo_minibatches={config.minibatches}; choose a divisor"
            )
        rng, epoch_rng = jax.random.split(jax.random.wrap_key_data(state.rng))

        def epoch(state, key):
            minibatches = _split_minibatches(
                batch, jax.random.permutation(key, batch_size), config.minibatches
            )
            return jax.lax.scan(lambda s, mb: minibatch_step(s, mb, kl_coef), state, minibatches)

        keys = jax.random.split(epoch_rng, config.epochs)
        state, metrics = jax.lax.scan(epoch, state, keys)
        metrics = jax.tree_util.tree_map(jnp.mean, metrics)
        new_state = dataclasses.replace(state, step=state.step + 1, rng=jax.random.key_data(rng))
        return new_state, metrics

    return jax.jit(update, donate_argnums=(0,))
