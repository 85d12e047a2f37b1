"""Optional constraint that one trait's mean score stays at or above a threshold.

Constrained RLHF (Moskovitz et al. 2023, "Confronting Reward Model Overoptimization with
Constrained RLHF") solves max_pi min_{lambda >= 0} E[r] + lambda * (E[s_k] - threshold). The
policy sees the reward r + lambda * s_k, and lambda follows projected gradient ascent on the
constraint violation: it grows while the trait score is below the threshold and decays to 0 once
the constraint holds.
"""

import dataclasses

import jax
import jax.numpy as jnp

import trait_rl


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LagrangeState:
    """Lagrange multiplier of the trait constraint (a float32 scalar array, >= 0)."""

    multiplier: jax.Array


@dataclasses.dataclass(frozen=True)
class TraitConstraint:
    """Constraint E[score of `trait`] >= `threshold`, with dual step size `learning_rate`."""

    trait: str
    threshold: float
    learning_rate: float

    @property
    def trait_index(self) -> int:
        return trait_rl.TRAITS.index(self.trait)


def constraint_from_config(rl_config) -> TraitConstraint | None:
    """Read `rl.lagrangian_*`; None when `rl.lagrangian_trait` is empty."""
    trait = rl_config.lagrangian_trait
    if not trait:
        return None
    if trait not in trait_rl.TRAITS:
        raise ValueError(
            f"invalid rl.lagrangian_trait {trait!r}; expected '' or one of {trait_rl.TRAITS}"
        )
    if rl_config.lagrangian_lr <= 0:
        raise ValueError(f"invalid rl.lagrangian_lr {rl_config.lagrangian_lr}; expected > 0")
    return TraitConstraint(trait, float(rl_config.lagrangian_threshold), rl_config.lagrangian_lr)


def init_lagrange_state() -> LagrangeState:
    return LagrangeState(multiplier=jnp.zeros((), jnp.float32))


def constrained_reward_B(
    reward_B: jax.Array,
    trait_scores_Bx3: jax.Array,
    constraint: TraitConstraint,
    state: LagrangeState,
) -> jax.Array:
    """Reward the policy maximises: r + lambda * s_k."""
    return reward_B + state.multiplier * trait_scores_Bx3[:, constraint.trait_index]


def update_multiplier(
    state: LagrangeState, mean_trait_score: jax.Array, constraint: TraitConstraint
) -> LagrangeState:
    """Projected gradient ascent: lambda <- max(0, lambda + lr * (threshold - mean score))."""
    step = constraint.learning_rate * (constraint.threshold - mean_trait_score)
    return LagrangeState(multiplier=jnp.maximum(0.0, state.multiplier + step))
