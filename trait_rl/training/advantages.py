"""Advantage estimators: group-relative (GRPO, RLOO) for sequence rewards, GAE for PPO.

Group estimators take `rewards_B` laid out as `num_prompts` groups of `group_size` consecutive
completions (the rollout repeats each prompt `group_size` times) and return one advantage per
completion. They are registered by name so the config selects one with `rl.advantage_estimator`.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

GroupEstimator = Callable[[jax.Array, int, float], jax.Array]
ADVANTAGE_ESTIMATORS: dict[str, GroupEstimator] = {}


def register_advantage_estimator(name: str) -> Callable[[GroupEstimator], GroupEstimator]:
    """Add a group advantage estimator to `ADVANTAGE_ESTIMATORS` under `name`."""

    def register(fn: GroupEstimator) -> GroupEstimator:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return register


def get_advantage_estimator(name: str) -> GroupEstimator:
    """Look up a registered group estimator; the error lists the valid names."""
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(
            f"invalid rl.advantage_estimator {name!r}; "
            f"expected one of {sorted(ADVANTAGE_ESTIMATORS)}"
        )
    return ADVANTAGE_ESTIMATORS[name]


def _grouped(rewards_B: jax.Array, group_size: int) -> jax.Array:
    if rewards_B.ndim != 1 or rewards_B.shape[0] % group_size:
        raise ValueError(
            f"rewards of shape {rewards_B.shape} do not split into groups of "
            f"rl.group_size={group_size}; expected a 1-D batch of num_prompts * group_size"
        )
    return rewards_B.astype(jnp.float32).reshape(-1, group_size)


@register_advantage_estimator("grpo")
def grpo_advantages(rewards_B: jax.Array, group_size: int, std_floor: float) -> jax.Array:
    """A_i = (r_i - mean_g r) / std_g r, or r_i - mean_g r when std_g r < std_floor.

    Group-relative advantages of GRPO (Shao et al. 2024, DeepSeekMath). The std is the population
    std, so |A_i| <= sqrt(group_size - 1). A group whose spread is below the floor is only centred:
    dividing a near-tie by its tiny std would turn rounding noise into advantages of order 1e3, and
    an exact tie gives advantages of exactly 0.
    """
    rewards_PxG = _grouped(rewards_B, group_size)
    centred_PxG = rewards_PxG - jnp.mean(rewards_PxG, axis=1, keepdims=True)
    std_Px1 = jnp.sqrt(jnp.mean(jnp.square(centred_PxG), axis=1, keepdims=True))
    spread_ok_Px1 = std_Px1 >= std_floor
    safe_std_Px1 = jnp.where(spread_ok_Px1, std_Px1, 1.0)
    return jnp.where(spread_ok_Px1, centred_PxG / safe_std_Px1, centred_PxG).reshape(-1)


@register_advantage_estimator("rloo")
def rloo_advantages(rewards_B: jax.Array, group_size: int, std_floor: float) -> jax.Array:
    """A_i = r_i - mean_{j != i} r_j, the REINFORCE leave-one-out baseline.

    Source: Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
    Learning from Human Feedback". No division, so `std_floor` is unused.
    """
    del std_floor
    if group_size < 2:
        raise ValueError(f"rl.group_size={group_size} is too small for rloo; use 2 or more")
    rewards_PxG = _grouped(rewards_B, group_size)
    others_mean_PxG = (jnp.sum(rewards_PxG, axis=1, keepdims=True) - rewards_PxG) / (group_size - 1)
    return (rewards_PxG - others_mean_PxG).reshape(-1)


def gae(
    rewards_BxT: jax.Array,
    values_BxT: jax.Array,
    completion_mask_BxT: jax.Array,
    gamma: float,
    lam: float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation; returns (advantages_BxT, returns_BxT).

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}
    (Schulman et al. 2016), computed by a reverse `lax.scan` over time. The completion mask is 1 on
    a prefix of each row. Past the last completion token V and A count as 0 (the episode ended),
    and masked-out positions get advantage and return 0.
    """
    mask_TxB = completion_mask_BxT.astype(jnp.float32).T
    rewards_TxB = rewards_BxT.astype(jnp.float32).T * mask_TxB
    values_TxB = values_BxT.astype(jnp.float32).T * mask_TxB

    def step(carry, inputs):
        next_value_B, next_advantage_B = carry
        reward_B, value_B, mask_B = inputs
        delta_B = reward_B + gamma * next_value_B - value_B
        advantage_B = (delta_B + gamma * lam * next_advantage_B) * mask_B
        return (value_B, advantage_B), advantage_B

    zeros_B = jnp.zeros_like(values_TxB[0])
    _, advantages_TxB = jax.lax.scan(
        step, (zeros_B, zeros_B), (rewards_TxB, values_TxB, mask_TxB), reverse=True
    )
    advantages_BxT = advantages_TxB.T
    returns_BxT = (advantages_BxT + values_TxB.T) * completion_mask_BxT
    return advantages_BxT, returns_BxT
