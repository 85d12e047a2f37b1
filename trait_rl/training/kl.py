"""KL divergence to the frozen reference: per-token estimators and the coefficient controller.

The estimators take per-token log-probabilities of the sampled tokens under the policy (`logps`)
and under the reference (`ref_logps`); their mean over tokens sampled from the policy estimates
KL(policy || reference). Estimator names follow Schulman, "Approximating KL Divergence" (2020).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

KLEstimator = Callable[[jax.Array, jax.Array], jax.Array]
KL_ESTIMATORS: dict[str, KLEstimator] = {}
KL_MODES = ("loss", "reward")


def register_kl_estimator(name: str) -> Callable[[KLEstimator], KLEstimator]:
    """Add a per-token KL estimator to `KL_ESTIMATORS` under `name`."""

    def register(fn: KLEstimator) -> KLEstimator:
        if name in KL_ESTIMATORS:
            raise ValueError(f"KL estimator {name!r} is already registered")
        KL_ESTIMATORS[name] = fn
        return fn

    return register


@register_kl_estimator("k1")
def kl_k1(logps: jax.Array, ref_logps: jax.Array) -> jax.Array:
    """k1 = log p(x) - log q(x): unbiased, high variance, negative on some tokens."""
    return logps.astype(jnp.float32) - ref_logps.astype(jnp.float32)


@register_kl_estimator("k3")
def kl_k3(logps: jax.Array, ref_logps: jax.Array) -> jax.Array:
    """k3 = exp(log q - log p) - (log q - log p) - 1: unbiased, low variance, never negative."""
    log_ratio = ref_logps.astype(jnp.float32) - logps.astype(jnp.float32)
    return jnp.exp(log_ratio) - log_ratio - 1.0


def get_kl_estimator(name: str) -> KLEstimator:
    """Look up a registered KL estimator; the error lists the valid names."""
    if name not in KL_ESTIMATORS:
        raise ValueError(
            f"invalid rl.kl_estimator {name!r}; expected one of {sorted(KL_ESTIMATORS)}"
        )
    return KL_ESTIMATORS[name]


def check_kl_mode(mode: str) -> str:
    """Return `mode` if it is a valid `rl.kl_mode`, else raise naming the field."""
    if mode not in KL_MODES:
        raise ValueError(f"invalid rl.kl_mode {mode!r}; expected one of {KL_MODES}")
    return mode


def kl_reward_penalty_BxN(
    kl_BxN: jax.Array, completion_mask_BxN: jax.Array, kl_coef: jax.Array
) -> jax.Array:
    """Per-token reward -kl_coef * kl_t on completion tokens (the `reward` mode of Ziegler et al.).

    The KL enters the rewards, so it carries no gradient of its own.
    """
    return -kl_coef * jax.lax.stop_gradient(kl_BxN) * completion_mask_BxN


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KLController:
    """KL coefficient carried across RL steps; fixed unless `target` > 0.

    coef: current coefficient (a float32 scalar array so that it is checkpointed with the state).
    """

    coef: jax.Array


def init_kl_controller(initial_coef: float) -> KLController:
    """Start the controller at `rl.kl_coef`; a negative value is rejected."""
    if initial_coef < 0:
        raise ValueError(f"invalid rl.kl_coef {initial_coef}; expected >= 0")
    return KLController(coef=jnp.asarray(initial_coef, jnp.float32))


def update_kl_controller(
    controller: KLController, observed_kl: jax.Array, target: float, horizon: int
) -> KLController:
    """Adaptive KL coefficient of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human
    Preferences"): e = clip(KL / target - 1, -0.2, 0.2), coef <- coef * (1 + e / horizon).

    One call is one RL step, so `horizon` is in steps. With `target` <= 0 the coefficient is fixed.
    """
    if target <= 0:
        return controller
    if horizon <= 0:
        raise ValueError(f"invalid rl.kl_horizon {horizon}; expected > 0 with rl.kl_target > 0")
    error = jnp.clip(observed_kl / target - 1.0, -0.2, 0.2)
    return KLController(coef=controller.coef * (1.0 + error / horizon))
