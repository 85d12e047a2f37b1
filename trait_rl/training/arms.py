"""Experiment arms: which reward an RL run optimises, and whether the arm trains with RL at all.

All arms start from the same base SFT checkpoint and see the same prompts:
- `trait_rl`: all three trait heads, weighted by `rl.trait_weights`, reward from `rl.reward_source`.
- `single_trait:<trait>`: one trait head alone (the ablation of rewarding the traits together).
- `conventional`: rule SFT on the baseline demonstrations plus a keyword output filter; no RL.
- `oracle_reward`: the programmatic judges instead of the learned reward model.
"""

import dataclasses

import trait_rl

SINGLE_TRAIT_PREFIX = "single_trait:"
REWARD_SOURCES = ("model", "oracle")
ARM_FORMS = ("trait_rl", "single_trait:<trait>", "conventional", "oracle_reward")


@dataclasses.dataclass(frozen=True)
class Arm:
    """A parsed `config.arm`.

    trait_weights: weight of each trait in TRAITS order.
    reward_source: `model` (learned reward heads) or `oracle` (programmatic judges).
    runs_rl: False for the conventional baseline, which stops after rule SFT.
    output_filter: whether responses pass through the keyword output filter at generation time.
    """

    name: str
    trait_weights: tuple[float, float, float]
    reward_source: str
    runs_rl: bool
    output_filter: bool


def trait_weights_from_config(weights_config) -> tuple[float, float, float]:
    """Read `rl.trait_weights` (a mapping trait -> weight) into TRAITS order.

    Unknown trait names and negative weights are rejected; a trait left out gets weight 0.
    """
    weights = dict(weights_config)
    unknown = sorted(set(weights) - set(trait_rl.TRAITS))
    if unknown:
        raise ValueError(
            f"invalid rl.trait_weights keys {unknown}; expected names from {trait_rl.TRAITS}"
        )
    for trait, weight in weights.items():
        if weight < 0:
            raise ValueError(f"invalid rl.trait_weights.{trait} = {weight}; expected >= 0")
    return tuple(float(weights.get(trait, 0.0)) for trait in trait_rl.TRAITS)


def parse_arm(arm: str, rl_config) -> Arm:
    """Parse `config.arm` against the RL config; raises naming `arm` and its value."""
    if not isinstance(arm, str):
        raise ValueError(f"invalid arm {arm!r}; expected a string, one of {ARM_FORMS}")
    if rl_config.reward_source not in REWARD_SOURCES:
        raise ValueError(
            f"invalid rl.reward_source {rl_config.reward_source!r}; "
            f"expected one of {REWARD_SOURCES}"
        )
    config_weights = trait_weights_from_config(rl_config.trait_weights)
    if arm == "trait_rl":
        return Arm(arm, config_weights, rl_config.reward_source, runs_rl=True, output_filter=False)
    if arm == "oracle_reward":
        return Arm(arm, config_weights, "oracle", runs_rl=True, output_filter=False)
    if arm == "conventional":
        return Arm(arm, config_weights, rl_config.reward_source, runs_rl=False, output_filter=True)
    if arm.startswith(SINGLE_TRAIT_PREFIX):
        trait = arm[len(SINGLE_TRAIT_PREFIX) :]
        if trait not in trait_rl.TRAITS:
            raise ValueError(
                f"invalid arm {arm!r}: unknown trait {trait!r}; expected "
                f"single_trait:<one of {', '.join(trait_rl.TRAITS)}>"
            )
        weights = tuple(1.0 if name == trait else 0.0 for name in trait_rl.TRAITS)
        return Arm(arm, weights, rl_config.reward_source, runs_rl=True, output_filter=False)
    raise ValueError(f"invalid arm {arm!r}; expected one of {ARM_FORMS}")
