"""A grid over the trait weights of the combined RL reward, each trait alone included.

  python scripts/sweep.py --config=configs/default.py --sweep=configs/sweeps/trait_weights.py \
      --workdir=runs/trait_weights

Every run trains the `trait_rl` arm with its own `rl.trait_weights`, so the table compares
rewarding the traits together, alone, and with one trait weighted up.
"""

from trait_rl import TRAITS
from trait_rl.sweep import grid

SEEDS = (0, 1, 2)


def _weights(values: tuple[float, float, float]) -> dict[str, float]:
    return {f"rl.trait_weights.{trait}": value for trait, value in zip(TRAITS, values, strict=True)}


def _weight_grid() -> dict[str, tuple[float, float, float]]:
    settings = {"all_equal": (1.0, 1.0, 1.0)}
    for index, trait in enumerate(TRAITS):
        alone = [0.0, 0.0, 0.0]
        alone[index] = 1.0
        settings[f"only_{trait}"] = tuple(alone)
    for index, trait in enumerate(TRAITS):
        up = [1.0, 1.0, 1.0]
        up[index] = 2.0
        settings[f"double_{trait}"] = tuple(up)
    return settings


def get_sweep() -> list[dict]:
    """Return one run per (weight setting, seed), trait_rl arm only, ablation arms off."""
    groups = {
        name: {"arms": ("trait_rl", "conventional"), "eval.ablation": False, **_weights(values)}
        for name, values in _weight_grid().items()
    }
    return grid(groups, SEEDS)
