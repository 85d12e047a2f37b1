"""GRPO: clipped-ratio policy objective on group-relative advantages, plus a KL term.

Also holds the registry of RL loss terms, shared with PPO. Each term is a short function of
per-token arrays and the completion mask that returns (loss, metrics).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from trait_rl.model.config import ModelConfig
from trait_rl.training import kl as kl_lib
from trait_rl.training import rollout
from trait_rl.training.masked import masked_mean
from trait_rl.training.train_state import TrainState

LossTerm = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
RL_LOSSES: dict[str, LossTerm] = {}


def register_loss(name: str) -> Callable[[LossTerm], LossTerm]:
    """Add an RL loss term to `RL_LOSSES` under `name`."""

    def register(fn: LossTerm) -> LossTerm:
        if name in RL_LOSSES:
            raise ValueError(f"RL loss {name!r} is already registered")
        RL_LOSSES[name] = fn
        return fn

    return register


@register_loss("clipped_surrogate")
def clipped_surrogate_loss(
    logps_BxN: jax.Array,
    old_logps_BxN: jax.Array,
    advantages_BxN: jax.Array,
    completion_mask_BxN: jax.Array,
    clip_eps: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """-mean_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t), rho_t = exp(logp_t - old_logp_t).

    The PPO clipped surrogate (Schulman et al. 2017), averaged over all completion tokens of the
    batch (a token-level mean, as in DAPO, Yu et al. 2025), so long completions are not
    down-weighted per token.
    """
    ratio_BxN = jnp.exp(logps_BxN - old_logps_BxN)
    clipped_BxN = jnp.clip(ratio_BxN, 1.0 - clip_eps, 1.0 + clip_eps)
    objective_BxN = jnp.minimum(ratio_BxN * advantages_BxN, clipped_BxN * advantages_BxN)
    clipped_fraction = masked_mean((jnp.abs(ratio_BxN - 1.0) > clip_eps), completion_mask_BxN)
    metrics = {
        "ratio_mean": masked_mean(ratio_BxN, completion_mask_BxN),
        "ratio_max_abs_dev": jnp.max(jnp.abs(ratio_BxN - 1.0) * completion_mask_BxN),
        "clip_fraction": clipped_fraction,
    }
    return -masked_mean(objective_BxN, completion_mask_BxN), metrics


@register_loss("kl_penalty")
def kl_penalty_loss(
    logps_BxN: jax.Array,
    ref_logps_BxN: jax.Array,
    completion_mask_BxN: jax.Array,
    estimator: str,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """mean_t k(logp_t, ref_logp_t) over completion tokens, with k the k1 or k3 estimator.

    Differentiated through the policy log-probs, as the KL loss term of GRPO (Shao et al. 2024).
    """
    kl_BxN = kl_lib.get_kl_estimator(estimator)(logps_BxN, ref_logps_BxN)
    kl = masked_mean(kl_BxN, completion_mask_BxN)
    return kl, {"kl": kl}


@dataclasses.dataclass(frozen=True)
class PolicyLossConfig:
    """Static settings of the policy loss (a hashable jit argument).

    kl_mode: `loss` adds kl_coef * KL to the objective; `reward` only logs KL here, because the
      penalty already sits in the rewards.
    """

    clip_eps: float
    kl_estimator: str
    kl_mode: str
    temperature: float

    def __post_init__(self):
        kl_lib.get_kl_estimator(self.kl_estimator)
        kl_lib.check_kl_mode(self.kl_mode)
        if self.clip_eps <= 0:
            raise ValueError(f"invalid rl.clip_eps {self.clip_eps}; expected > 0")


def policy_loss_config_from(rl_config) -> PolicyLossConfig:
    return PolicyLossConfig(
        clip_eps=float(rl_config.clip_eps),
        kl_estimator=rl_config.kl_estimator,
        kl_mode=rl_config.kl_mode,
        temperature=float(rl_config.temperature) if rl_config.temperature > 0 else 1.0,
    )


def policy_terms(
    logps_BxN: jax.Array, batch: rollout.PolicyBatch, kl_coef: jax.Array, loss_config
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Clipped surrogate plus (in `loss` mode) kl_coef * KL; KL is always in the metrics."""
    mask_BxN = batch.completion_mask_BxN
    policy_loss, metrics = clipped_surrogate_loss(
        logps_BxN, batch.old_logps_BxN, batch.advantages_BxN, mask_BxN, loss_config.clip_eps
    )
    kl, kl_metrics = kl_penalty_loss(
        logps_BxN, batch.ref_logps_BxN, mask_BxN, loss_config.kl_estimator
    )
    loss = policy_loss
    if loss_config.kl_mode == "loss":
        loss = loss + kl_coef * kl
    metrics = {**metrics, **kl_metrics, "policy_loss": policy_loss, "loss": loss}
    return loss, metrics


def grpo_loss(
    params,
    model_cfg: ModelConfig,
    batch: rollout.PolicyBatch,
    kl_coef: jax.Array,
    loss_config: PolicyLossConfig,
    prompt_repeats: int = 1,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GRPO objective on one rollout batch; returns (loss, metrics).

    `prompt_repeats` = group size runs each group's prompt through the model once
    (`rollout.completion_hidden_BxNxD`); the batch must hold whole groups in adjacent rows.
    """
    logps_BxN = rollout.completion_logps_BxN(
        params,
        model_cfg,
        batch.prompt_tokens_BxP,
        batch.prompt_mask_BxP,
        batch.completion_tokens_BxN,
        batch.completion_mask_BxN,
        loss_config.temperature,
        prompt_repeats,
    )
    return policy_terms(logps_BxN, batch, kl_coef, loss_config)


def make_grpo_step(
    model_cfg: ModelConfig,
    optimizer: optax.GradientTransformation,
    loss_config: PolicyLossConfig,
    prompt_repeats: int = 1,
):
    """Jit `step(state, batch, kl_coef) -> (state, metrics)`: one optimizer update per rollout.

    The state's buffers are donated, so callers use only the returned state. `prompt_repeats`
    is as in `grpo_loss`.
    """

    def step(state: TrainState, batch: rollout.PolicyBatch, kl_coef: jax.Array):
        grad_fn = jax.value_and_grad(grpo_loss, has_aux=True)
        (_, metrics), grads = grad_fn(
            state.params, model_cfg, batch, kl_coef, loss_config, prompt_repeats
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "grad_norm": optax.global_norm(grads)}
        new_state = TrainState(
            step=state.step + 1, params=params, opt_state=opt_state, rng=state.rng
        )
        return new_state, metrics

    return jax.jit(step, donate_argnums=(0,))
