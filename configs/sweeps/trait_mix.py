"""A grid over the share of trait prompts in the SFT data and in the RL batches.

  python scripts/sweep.py --config=configs/default.py --sweep=configs/sweeps/trait_mix.py \
      --workdir=runs/trait_mix

`data.trait_mix` changes what the SFT policy and the reward model see; `rl.trait_mix` changes
only the RL prompts, so the grid separates the two effects.
"""

from trait_rl.sweep import grid

SEEDS = (0, 1, 2)
DATA_MIXES = (0.25, 0.5, 0.75)
RL_MIXES = (0.25, 0.5, 0.75)


def get_sweep() -> list[dict]:
    """Return one run per (data mix, RL mix, seed), ablation arms off."""
    groups = {
        f"data{data_mix}_rl{rl_mix}": {
            "data.trait_mix": data_mix,
            "rl.trait_mix": rl_mix,
            "eval.ablation": False,
        }
        for data_mix in DATA_MIXES
        for rl_mix in RL_MIXES
    }
    return grid(groups, SEEDS)
