"""Every RL arm against the conventional baseline, over three seeds.

  python scripts/sweep.py --config=configs/default.py --sweep=configs/sweeps/seeds_x_arms.py \
      --workdir=runs/seeds_x_arms

Each run trains one RL arm next to the conventional baseline (which every run trains), so a
cluster can run the arms in parallel. The single-trait arms appear as their own groups, so the
ablation pipeline option is off in every run.
"""

from trait_rl import TRAITS
from trait_rl.sweep import grid

SEEDS = (0, 1, 2)
RL_ARMS = ("trait_rl", "oracle_reward", *(f"single_trait:{trait}" for trait in TRAITS))


def get_sweep() -> list[dict]:
    """Return one run per (arm, seed); the group is the arm name with ':' replaced by '_'."""
    groups = {
        arm.replace(":", "_"): {"arms": (arm, "conventional"), "eval.ablation": False}
        for arm in RL_ARMS
    }
    return grid(groups, SEEDS)
